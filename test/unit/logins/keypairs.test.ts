import { execFileSync } from "node:child_process";
import { createPrivateKey, sign, verify } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ApiError } from "../../../agent/errors.js";
import { DomainError } from "../../../agent/core/errors.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { KeyPairStore, keyPairsFile } from "../../../agent/logins/keypairs.js";
import { parseSshPublicKey } from "../../../agent/logins/openssh.js";
import { DataPaths } from "../../../agent/paths.js";

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "keypairs-"));
  file = keyPairsFile(new DataPaths(dir));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (error) {
    // The code the API answers with (the edge's error map).
    if (error instanceof DomainError || error instanceof ApiError) return cvmCodeOf(error);
    throw error;
  }
  return "(no error)";
}

/** A fresh key made by ssh-keygen: its public line and its `ssh-keygen -l` fingerprint. */
async function sshKeygen(type: string, bits?: number): Promise<{ publicLine: string; fingerprint: string; privatePath: string }> {
  const path = join(dir, `id_${type}_${bits ?? 0}_${Math.random().toString(36).slice(2)}`);
  execFileSync("ssh-keygen", ["-q", "-t", type, ...(bits ? ["-b", String(bits)] : []), "-N", "", "-C", "user@laptop", "-f", path]);
  const publicLine = (await readFile(`${path}.pub`, "utf8")).trim();
  return { publicLine, fingerprint: keygenFingerprint(`${path}.pub`), privatePath: path };
}

function keygenFingerprint(path: string): string {
  const out = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", path], { encoding: "utf8" });
  const fp = out.split(" ")[1];
  if (!fp?.startsWith("SHA256:")) throw new Error(`unexpected ssh-keygen output: ${out}`);
  return fp;
}

describe("KeyPairStore.createKeyPair", () => {
  it("returns an RSA private key in PEM whose public half is the returned OpenSSH key", async () => {
    const store = new KeyPairStore({ file });
    const created = await store.createKeyPair({ keyName: "web_key" });

    expect(created.KeyId).toMatch(/^skey-[a-z0-9]{8}$/);
    expect(created.PrivateKey.startsWith("-----BEGIN RSA PRIVATE KEY-----\n")).toBe(true);
    expect(created.PublicKey).toMatch(new RegExp(`^ssh-rsa AAAA[A-Za-z0-9+/=]+ ${created.KeyId}$`));

    // ssh-keygen derives the same public key from the private one.
    const privPath = join(dir, "created");
    await writeFile(privPath, created.PrivateKey, { mode: 0o600 });
    const derived = execFileSync("ssh-keygen", ["-y", "-f", privPath], { encoding: "utf8" }).trim().split(" ");
    expect(derived[1]).toBe(created.PublicKey.split(" ")[1]);

    // And a signature made with the private key verifies with the public line.
    const message = Buffer.from("prove the halves match");
    const signature = sign("sha256", message, createPrivateKey(created.PrivateKey));
    expect(verify("sha256", message, parseSshPublicKey(created.PublicKey).key, signature)).toBe(true);
    expect(verify("sha256", Buffer.from("another message"), parseSshPublicKey(created.PublicKey).key, signature)).toBe(false);
  });

  it("makes a 2048-bit key that ssh-keygen -l reads, with the same fingerprint the store records", async () => {
    const store = new KeyPairStore({ file });
    const created = await store.createKeyPair({ keyName: "k1" });
    const pubPath = join(dir, "k1.pub");
    await writeFile(pubPath, `${created.PublicKey}\n`);
    const listed = execFileSync("ssh-keygen", ["-l", "-f", pubPath], { encoding: "utf8" });
    expect(listed).toMatch(/^2048 SHA256:\S+ skey-[a-z0-9]{8} \(RSA\)/);
    expect((await store.get(created.KeyId))?.fingerprint).toBe(keygenFingerprint(pubPath));
  });

  it("makes a 4096-bit key when asked", async () => {
    const store = new KeyPairStore({ file });
    const created = await store.createKeyPair({ keyName: "big", bits: 4096 });
    expect(parseSshPublicKey(created.PublicKey).bits).toBe(4096);
  });

  it("never writes the private key to the store file", async () => {
    const store = new KeyPairStore({ file });
    const created = await store.createKeyPair({ keyName: "secret" });
    const onDisk = await readFile(file, "utf8");
    expect(onDisk).not.toContain("PRIVATE");
    const body = created.PrivateKey.split("\n").slice(1, 3).join("");
    expect(onDisk).not.toContain(body.slice(0, 40));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const [described] = (await store.describeKeyPairs({ keyIds: [created.KeyId] })).keyPairSet;
    expect(JSON.stringify(described)).not.toContain("PRIVATE");
  });

  it("refuses a project other than 0 with InvalidProjectId.NotFound", async () => {
    const store = new KeyPairStore({ file });
    expect(await codeOf(store.createKeyPair({ keyName: "p", projectId: 7 }))).toBe("InvalidProjectId.NotFound");
  });
});

describe("KeyPairStore.importKeyPair", () => {
  for (const [type, bits] of [
    ["rsa", 2048],
    ["rsa", 3072],
    ["ed25519", undefined],
    ["ecdsa", 256],
    ["ecdsa", 384],
    ["ecdsa", 521],
  ] as const) {
    it(`imports an ssh-keygen ${type}${bits ? `-${bits}` : ""} key with ssh-keygen's fingerprint and the key ID as comment`, async () => {
      const store = new KeyPairStore({ file });
      const key = await sshKeygen(type, bits);
      const imported = await store.importKeyPair({ keyName: "laptop", publicKey: `${key.publicLine}\n` });
      const [typeField, blob] = key.publicLine.split(" ");
      expect(imported.PublicKey).toBe(`${typeField} ${blob} ${imported.KeyId}`);
      expect((await store.get(imported.KeyId))?.fingerprint).toBe(key.fingerprint);
      expect(imported.ProjectId).toBe(0);
      expect(imported.AssociatedInstanceIds).toEqual([]);
    });
  }

  it("refuses a private key, garbage, PEM and unsupported or weak keys with InvalidPublicKey.Malformed", async () => {
    const store = new KeyPairStore({ file });
    const rsa = await sshKeygen("rsa", 2048);
    const weak = await sshKeygen("rsa", 1024);
    const ecdsa = await sshKeygen("ecdsa", 256);
    const [, rsaBlob] = rsa.publicLine.split(" ");
    const ecBlob = Buffer.from(ecdsa.publicLine.split(" ")[1]!, "base64");
    const offCurve = Buffer.from(ecBlob);
    offCurve[offCurve.length - 1] = offCurve.at(-1)! ^ 0x01; // move the point off P-256
    const pemPublic = execFileSync("ssh-keygen", ["-e", "-m", "PKCS8", "-f", `${rsa.privatePath}.pub`], { encoding: "utf8" });

    const bad: Array<[string, string]> = [
      ["the private key file", await readFile(rsa.privatePath, "utf8")],
      ["a PEM public key", pemPublic],
      ["garbage", "hello world"],
      ["an empty string", "   "],
      ["a 1024-bit RSA key", weak.publicLine],
      ["a DSA type", `ssh-dss ${rsaBlob}`],
      ["authorized_keys options", `no-pty ${rsa.publicLine}`],
      ["a type that does not match the blob", `ssh-ed25519 ${rsaBlob}`],
      ["truncated base64", `ssh-rsa ${rsaBlob!.slice(0, 200)}`],
      ["a blob with trailing bytes", `ssh-rsa ${Buffer.concat([Buffer.from(rsaBlob!, "base64"), Buffer.from([1, 2, 3])]).toString("base64")}`],
      ["an EC point off its curve", `ecdsa-sha2-nistp256 ${offCurve.toString("base64")}`],
      ["two keys on two lines", `${rsa.publicLine}\n${ecdsa.publicLine}`],
    ];
    for (const [what, publicKey] of bad) {
      expect(`${what}: ${await codeOf(store.importKeyPair({ keyName: "k", publicKey }))}`).toBe(`${what}: InvalidPublicKey.Malformed`);
    }
    expect((await store.describeKeyPairs({})).totalCount).toBe(0);
  });

  it("refuses the same public key under a second name with InvalidPublicKey.Duplicate", async () => {
    const store = new KeyPairStore({ file });
    const key = await sshKeygen("ed25519");
    await store.importKeyPair({ keyName: "first", publicKey: key.publicLine });
    const sameKeyOtherComment = key.publicLine.replace("user@laptop", "someone@else");
    expect(await codeOf(store.importKeyPair({ keyName: "second", publicKey: sameKeyOtherComment }))).toBe("InvalidPublicKey.Duplicate");
  });

  it("applies the key name rules with the seed's codes", async () => {
    const store = new KeyPairStore({ file });
    const a = await sshKeygen("ed25519");
    const b = await sshKeygen("ed25519");
    expect(await codeOf(store.importKeyPair({ keyName: "", publicKey: a.publicLine }))).toBe("InvalidKeyPairNameEmpty");
    expect(await codeOf(store.importKeyPair({ keyName: "k".repeat(26), publicKey: a.publicLine }))).toBe("InvalidKeyPairNameTooLong");
    expect(await codeOf(store.importKeyPair({ keyName: "my-key", publicKey: a.publicLine }))).toBe("InvalidKeyPairNameIncludeIllegalChar");
    expect(await codeOf(store.importKeyPair({ keyName: "clé", publicKey: a.publicLine }))).toBe("InvalidKeyPairNameIncludeIllegalChar");
    await store.importKeyPair({ keyName: `Key_${"9".repeat(21)}`, publicKey: a.publicLine }); // 25 characters
    expect(await codeOf(store.importKeyPair({ keyName: `Key_${"9".repeat(21)}`, publicKey: b.publicLine }))).toBe("InvalidKeyPairName.Duplicate");
    expect(await codeOf(store.createKeyPair({ keyName: `Key_${"9".repeat(21)}` }))).toBe("InvalidKeyPairName.Duplicate");
  });

  it("refuses a key beyond the host's limit with InvalidKeyPair.LimitExceeded", async () => {
    const store = new KeyPairStore({ file, maxKeyPairs: 2 });
    for (const name of ["a", "b"]) await store.importKeyPair({ keyName: name, publicKey: (await sshKeygen("ed25519")).publicLine });
    expect(await codeOf(store.importKeyPair({ keyName: "c", publicKey: (await sshKeygen("ed25519")).publicLine }))).toBe(
      "InvalidKeyPair.LimitExceeded",
    );
  });
});

describe("KeyPairStore.describeKeyPairs", () => {
  async function threeKeys(store: KeyPairStore): Promise<string[]> {
    const ids: string[] = [];
    for (const name of ["alpha", "beta", "gamma"]) {
      ids.push((await store.importKeyPair({ keyName: name, publicKey: (await sshKeygen("ed25519")).publicLine })).KeyId);
    }
    return ids;
  }

  it("lists newest first with the CVM KeyPair fields and an ISO CreatedTime", async () => {
    let t = Date.parse("2025-03-01T08:00:00.123Z");
    const store = new KeyPairStore({ file, now: () => new Date((t += 1000)) });
    const ids = await threeKeys(store);
    const out = await store.describeKeyPairs({});
    expect(out.totalCount).toBe(3);
    expect(out.keyPairSet.map((k) => k.KeyId)).toEqual([...ids].reverse());
    expect(out.keyPairSet[2]).toEqual({
      KeyId: ids[0],
      KeyName: "alpha",
      ProjectId: 0,
      Description: "",
      PublicKey: expect.stringMatching(/^ssh-ed25519 AAAA\S+ skey-/),
      AssociatedInstanceIds: [],
      AssociatedInstanceCount: 0,
      AssociatedImageCount: 0,
      Tags: [],
      CreatedTime: "2025-03-01T08:00:01Z",
    });
  });

  it("pages with offset and limit while counting every match", async () => {
    const store = new KeyPairStore({ file });
    const ids = await threeKeys(store);
    const page = await store.describeKeyPairs({ offset: 1, limit: 1 });
    expect(page.totalCount).toBe(3);
    expect(page.keyPairSet.map((k) => k.KeyId)).toEqual([ids[1]]);
  });

  it("filters by key-id, key-name and project-id, ORing values and ANDing filters", async () => {
    const store = new KeyPairStore({ file });
    const [a, b, c] = await threeKeys(store);
    const names = async (filters: Array<{ name: string; values: string[] }>) =>
      (await store.describeKeyPairs({ filters })).keyPairSet.map((k) => k.KeyName).sort();
    expect(await names([{ name: "key-name", values: ["alpha", "gamma"] }])).toEqual(["alpha", "gamma"]);
    expect(await names([{ name: "key-id", values: [b!] }])).toEqual(["beta"]);
    expect(await names([{ name: "project-id", values: ["0"] }])).toEqual(["alpha", "beta", "gamma"]);
    expect(await names([{ name: "project-id", values: ["1"] }])).toEqual([]);
    expect(await names([{ name: "key-id", values: [a!, c!] }, { name: "key-name", values: ["gamma"] }])).toEqual(["gamma"]);
    expect(await names([{ name: "tag-key", values: ["env"] }])).toEqual([]);
  });

  it("selects by KeyIds, leaving out unknown ones, and refuses KeyIds with Filters or a bad filter", async () => {
    const store = new KeyPairStore({ file });
    const [a] = await threeKeys(store);
    const out = await store.describeKeyPairs({ keyIds: [a!, "skey-zzzzzzzz"] });
    expect(out.keyPairSet.map((k) => k.KeyName)).toEqual(["alpha"]);
    expect(await codeOf(store.describeKeyPairs({ keyIds: [a!], filters: [{ name: "key-name", values: ["x"] }] }))).toBe(
      "InvalidParameterCombination",
    );
    expect(await codeOf(store.describeKeyPairs({ filters: [{ name: "fingerprint", values: ["x"] }] }))).toBe("InvalidFilter");
    expect(await codeOf(store.describeKeyPairs({ keyIds: ["skey-1122"] }))).toBe("InvalidKeyPairId.Malformed");
  });
});

describe("KeyPairStore bindings", () => {
  async function keys(store: KeyPairStore, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      ids.push((await store.importKeyPair({ keyName: `k${i}`, publicKey: (await sshKeygen("ed25519")).publicLine })).KeyId);
    }
    return ids;
  }

  it("replaces an instance's earlier keys when new ones are associated", async () => {
    const store = new KeyPairStore({ file });
    const [k0, k1, k2] = await keys(store, 3);
    await store.associate(["ins-aaaaaaaa"], [k0!]);
    const changes = await store.associate(["ins-aaaaaaaa", "ins-bbbbbbbb"], [k1!, k2!]);
    expect(changes).toEqual([
      { instanceId: "ins-aaaaaaaa", before: [k0], after: [k1, k2] },
      { instanceId: "ins-bbbbbbbb", before: [], after: [k1, k2] },
    ]);
    expect((await store.keysOfInstance("ins-aaaaaaaa")).map((k) => k.keyId)).toEqual([k1, k2]);
    const byId = new Map((await store.describeKeyPairs({})).keyPairSet.map((k) => [k.KeyId, k]));
    expect(byId.get(k0!)?.AssociatedInstanceIds).toEqual([]);
    expect(byId.get(k1!)?.AssociatedInstanceIds).toEqual(["ins-aaaaaaaa", "ins-bbbbbbbb"]);
    expect(byId.get(k1!)?.AssociatedInstanceCount).toBe(2);
  });

  it("changes nothing when one of the keys to associate does not exist", async () => {
    const store = new KeyPairStore({ file });
    const [k0] = await keys(store, 1);
    await store.associate(["ins-aaaaaaaa"], [k0!]);
    expect(await codeOf(store.associate(["ins-aaaaaaaa"], ["skey-00000000"]))).toBe("InvalidKeyPairId.NotFound");
    expect(await codeOf(store.associate(["ins-1122"], [k0!]))).toBe("InvalidInstanceId.Malformed");
    expect(await codeOf(store.associate(["ins-aaaaaaaa"], []))).toBe("MissingParameter");
    expect((await store.keysOfInstance("ins-aaaaaaaa")).map((k) => k.keyId)).toEqual([k0]);
  });

  it("disassociates only the given keys and ignores keys that were not bound", async () => {
    const store = new KeyPairStore({ file });
    const [k0, k1, k2] = await keys(store, 3);
    await store.associate(["ins-aaaaaaaa"], [k0!, k1!]);
    const [change] = await store.disassociate(["ins-aaaaaaaa"], [k0!, k2!]);
    expect(change).toEqual({ instanceId: "ins-aaaaaaaa", before: [k0, k1], after: [k1] });
    const [last] = await store.disassociate(["ins-aaaaaaaa"], [k1!]);
    expect(last?.after).toEqual([]);
    expect(await store.keysOfInstance("ins-aaaaaaaa")).toEqual([]);
  });

  it("refuses to delete a key while it is bound, deleting none of the batch, and deletes it once unbound", async () => {
    const store = new KeyPairStore({ file });
    const [bound, free] = await keys(store, 2);
    await store.associate(["ins-aaaaaaaa"], [bound!]);
    expect(await codeOf(store.deleteKeyPairs([free!, bound!]))).toBe("InvalidParameterValue.KeyPairNotSupported");
    expect((await store.describeKeyPairs({})).totalCount).toBe(2);

    await store.disassociate(["ins-aaaaaaaa"], [bound!]);
    await store.deleteKeyPairs([free!, bound!]);
    expect((await store.describeKeyPairs({})).totalCount).toBe(0);
    expect(await codeOf(store.deleteKeyPairs([free!]))).toBe("InvalidKeyPairId.NotFound");
  });

  it("lets a key be deleted after its instance is forgotten", async () => {
    const store = new KeyPairStore({ file });
    const [k0] = await keys(store, 1);
    await store.associate(["ins-aaaaaaaa"], [k0!]);
    await store.forgetInstances(["ins-aaaaaaaa"]);
    await store.deleteKeyPairs([k0!]);
    expect(await store.get(k0!)).toBeUndefined();
  });
});

describe("KeyPairStore persistence and concurrency", () => {
  it("keeps key pairs, names, descriptions and bindings across a new store instance", async () => {
    const first = new KeyPairStore({ file });
    const created = await first.createKeyPair({ keyName: "persisted" });
    await first.modifyKeyPairAttribute({ keyId: created.KeyId, keyName: "renamed", description: "for CI" });
    await first.associate(["ins-aaaaaaaa"], [created.KeyId]);

    const second = new KeyPairStore({ file });
    const [kp] = (await second.describeKeyPairs({ keyIds: [created.KeyId] })).keyPairSet;
    expect(kp).toMatchObject({ KeyName: "renamed", Description: "for CI", PublicKey: created.PublicKey, AssociatedInstanceIds: ["ins-aaaaaaaa"] });
    expect(await codeOf(second.deleteKeyPairs([created.KeyId]))).toBe("InvalidParameterValue.KeyPairNotSupported");
  });

  it("keeps every one of many concurrent imports and lets only one of two same-name imports win", async () => {
    const store = new KeyPairStore({ file });
    const lines = await Promise.all(Array.from({ length: 12 }, () => sshKeygen("ed25519")));
    await Promise.all(lines.map((k, i) => store.importKeyPair({ keyName: `c${i}`, publicKey: k.publicLine })));
    const race = await Promise.allSettled([
      store.importKeyPair({ keyName: "same", publicKey: (await sshKeygen("ed25519")).publicLine }),
      store.importKeyPair({ keyName: "same", publicKey: (await sshKeygen("ed25519")).publicLine }),
    ]);
    expect(race.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const reloaded = new KeyPairStore({ file });
    expect((await reloaded.describeKeyPairs({ limit: 100 })).totalCount).toBe(13);
  });

  it("sets a store that fails its check aside, with a warning, and goes on with no key pairs (the file is never overwritten)", async () => {
    const corrupt = '{"version":1,"keyPairs":"oops","bindings":{}}';
    await writeFile(file, corrupt);
    const warnings: Array<{ file: string; aside: string; reason: string }> = [];
    const store = new KeyPairStore({ file, logger: { warn: (o: object) => void warnings.push(o as (typeof warnings)[number]) } });
    expect((await store.describeKeyPairs({})).totalCount).toBe(0);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ file, reason: expect.stringMatching(/keyPairs/) });
    expect(await readFile(warnings[0]!.aside, "utf8")).toBe(corrupt);
    // A new store is written beside it, never over it.
    await store.importKeyPair({ keyName: "fresh", publicKey: (await sshKeygen("ed25519")).publicLine });
    expect(await readFile(warnings[0]!.aside, "utf8")).toBe(corrupt);
    expect((await new KeyPairStore({ file }).describeKeyPairs({})).totalCount).toBe(1);
  });

  it("refuses a description longer than 60 characters and a rename onto a taken name", async () => {
    const store = new KeyPairStore({ file });
    const a = await store.importKeyPair({ keyName: "a", publicKey: (await sshKeygen("ed25519")).publicLine });
    await store.importKeyPair({ keyName: "b", publicKey: (await sshKeygen("ed25519")).publicLine });
    expect(await codeOf(store.modifyKeyPairAttribute({ keyId: a.KeyId, description: "d".repeat(61) }))).toBe(
      "InvalidParameterValue.TooLong",
    );
    expect(await codeOf(store.modifyKeyPairAttribute({ keyId: a.KeyId, keyName: "b" }))).toBe("InvalidKeyPairName.Duplicate");
  });
});
