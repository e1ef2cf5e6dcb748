import type { SecurityGroupService } from "../../agent/network/security-groups/service.js";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseCommand } from "../../agent/api/commands.js";
import type { Dispatch } from "../../agent/api/server.js";
import type { MonitorReader } from "../../agent/monitor/monitor.js";
import { createDispatcher } from "../../agent/dispatch.js";
import type { DiskService } from "../../agent/disks/service.js";
import type { SnapshotService } from "../../agent/disks/snapshots.js";
import type { DiskStore } from "../../agent/disks/store.js";
import { ApiError } from "../../agent/errors.js";
import type { ImageCatalog } from "../../agent/images/catalog.js";
import type { ImageRecord } from "../../agent/images/model.js";
import type { InstanceRegistry } from "../../agent/instances/registry.js";
import type { RequestContext } from "../../agent/core/operations.js";
import type { InstanceOperations } from "../../agent/instances/index.js";
import type { RunRequest } from "../../agent/instances/launch.js";
import type { KeyBindingRequest, ResetPasswordRequest } from "../../agent/instances/logins.js";
import { KeyPairStore, keyPairsFile } from "../../agent/logins/keypairs.js";
import { rsaPublicKeyLine } from "../../agent/logins/openssh.js";
import { DataPaths } from "../../agent/paths.js";

/**
 * A stateful stand-in for the instance operations' login entry points (and RunInstances): it records every call and
 * keeps the key bindings in the real store, as the service does; `run` answers new IDs.
 */
class FakeService {
  readonly runs: RunRequest[] = [];
  readonly calls: Array<{ entry: string; req: KeyBindingRequest | ResetPasswordRequest; ctx: RequestContext }> = [];

  constructor(private readonly keyPairs: KeyPairStore) {}

  async run(req: RunRequest, _ctx: RequestContext): Promise<string[]> {
    this.runs.push(structuredClone(req));
    return req.names.map((_, i) => `ins-0000000${i}`);
  }

  async associateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    this.calls.push({ entry: "associateKeyPairs", req: structuredClone(req), ctx });
    await this.keyPairs.associate(req.instanceIds, req.keyIds);
  }

  async disassociateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    this.calls.push({ entry: "disassociateKeyPairs", req: structuredClone(req), ctx });
    await this.keyPairs.disassociate(req.instanceIds, req.keyIds);
  }

  async resetPassword(req: ResetPasswordRequest, ctx: RequestContext): Promise<void> {
    this.calls.push({ entry: "resetPassword", req: structuredClone(req), ctx });
  }
}

function image(imageId: string, osType: string): ImageRecord {
  return {
    version: 1,
    imageId,
    imageName: imageId,
    imageDescription: "",
    osType,
    osVersion: "",
    architecture: "x86_64",
    bootMode: "Legacy BIOS",
    state: "NORMAL",
    createdTime: "2026-01-01T00:00:00Z",
    sourceUrl: "file:///dev/null",
    virtualSizeBytes: 1024 ** 3,
  };
}

const LINUX_IMAGE = "img-linux001";
const WINDOWS_IMAGE = "img-windows1";
const IMAGES = new Map([
  [LINUX_IMAGE, image(LINUX_IMAGE, "Debian")],
  [WINDOWS_IMAGE, image(WINDOWS_IMAGE, "Windows Server 2022")],
]);

/** A dependency these tests must not reach: any use of it throws. */
function failClosed<T extends object>(name: string): T {
  return new Proxy({} as T, {
    get: (_target, key) => {
      throw new Error(`${name}.${String(key)} is not expected in these tests`);
    },
  });
}

let dir: string;
let keyPairs: KeyPairStore;
let service: FakeService;
let dispatcher: Dispatch;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "dispatch-logins-"));
  keyPairs = new KeyPairStore({ file: keyPairsFile(new DataPaths(dir)) });
  service = new FakeService(keyPairs);
  dispatcher = createDispatcher({
    instances: { launch: service, logins: service } as unknown as InstanceOperations,
    images: { get: (id: string) => IMAGES.get(id) } as unknown as ImageCatalog,
    registry: {} as InstanceRegistry,
    identity: { hostId: "host-abcd1234", hostName: "h", hostIp: "10.0.0.1", zone: "zone-1", createdTime: "", hostType: "" },
    hostResource: () => {
      throw new Error("not used");
    },
    libvirtConnected: () => true,
    keyPairs,
    disks: { attachedTo: () => [] } as unknown as DiskStore,
    diskService: failClosed<DiskService>("diskService"),
    snapshots: failClosed<SnapshotService>("snapshots"),
    monitor: failClosed<MonitorReader>("monitor"),
    // RunInstances asks for the groups of its instances (none given here: the default group).
    securityGroups: { launchGroups: (ids?: readonly string[]) => [...(ids ?? ["sg-default1"])] } as unknown as SecurityGroupService,
    paths: new DataPaths(dir),
    maxIsoBytes: 1024 ** 3,
    downloadTimeoutMs: 60_000,
  });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function call(action: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  return dispatcher(parseCommand(action, body), { requestId: "req-1", secretId: "AKID" });
}

async function refusal(action: string, body: Record<string, unknown>): Promise<{ code: string; message: string }> {
  try {
    await call(action, body);
  } catch (e) {
    if (e instanceof ApiError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error("the request was accepted");
}

function rsaLine(comment = "user@laptop"): string {
  const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return rsaPublicKeyLine(publicKey, comment);
}

async function createKey(name: string): Promise<string> {
  const answer = (await call("CreateKeyPair", { KeyName: name, ProjectId: 0 })) as { KeyPair: { KeyId: string } };
  return answer.KeyPair.KeyId;
}

describe("the key pair actions", () => {
  it("CreateKeyPair answers the KeyPair with its private key once; DescribeKeyPairs never shows it", async () => {
    const answer = (await call("CreateKeyPair", { KeyName: "web", ProjectId: 0 })) as { KeyPair: Record<string, unknown> };
    expect(answer.KeyPair).toMatchObject({ KeyName: "web", ProjectId: 0, AssociatedInstanceCount: 0, AssociatedImageCount: 0 });
    expect(String(answer.KeyPair.PrivateKey)).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
    const keyId = String(answer.KeyPair.KeyId);

    const described = await call("DescribeKeyPairs", { KeyIds: [keyId] });
    expect(described.TotalCount).toBe(1);
    const [pair] = described.KeyPairSet as Array<Record<string, unknown>>;
    expect(pair).toMatchObject({ KeyId: keyId, KeyName: "web", PublicKey: answer.KeyPair.PublicKey, AssociatedInstanceIds: [] });
    expect(pair).not.toHaveProperty("PrivateKey");
    expect(JSON.stringify(described)).not.toContain("PRIVATE KEY");
  });

  it("ImportKeyPair answers the new KeyId and shows the key with its ID as comment", async () => {
    const answer = await call("ImportKeyPair", { KeyName: "laptop", ProjectId: 0, PublicKey: rsaLine() });
    expect(Object.keys(answer)).toEqual(["KeyId"]);
    expect(answer.KeyId).toMatch(/^skey-[a-z0-9]{8}$/);
    const described = await call("DescribeKeyPairs", { Filters: [{ Name: "key-name", Values: ["laptop"] }] });
    expect(described.TotalCount).toBe(1);
    expect((described.KeyPairSet as Array<{ PublicKey: string }>)[0]?.PublicKey).toMatch(new RegExp(` ${String(answer.KeyId)}$`));
  });

  it("ImportKeyPair passes on the store's refusals: malformed key, duplicate name, other project", async () => {
    expect((await refusal("ImportKeyPair", { KeyName: "k1", ProjectId: 0, PublicKey: "ssh-rsa notbase64!" })).code).toBe("InvalidPublicKey.Malformed");
    const line = rsaLine();
    await call("ImportKeyPair", { KeyName: "k1", ProjectId: 0, PublicKey: line });
    expect((await refusal("ImportKeyPair", { KeyName: "k1", ProjectId: 0, PublicKey: rsaLine() })).code).toBe("InvalidKeyPairName.Duplicate");
    expect((await refusal("ImportKeyPair", { KeyName: "k2", ProjectId: 0, PublicKey: line })).code).toBe("InvalidPublicKey.Duplicate");
    expect((await refusal("CreateKeyPair", { KeyName: "k3", ProjectId: 7 })).code).toBe("InvalidProjectId.NotFound");
  });

  it("DescribeKeyPairs pages newest first and counts all matches", async () => {
    const a = await createKey("a");
    const b = await createKey("b");
    const page = await call("DescribeKeyPairs", { Offset: 0, Limit: 1 });
    expect(page.TotalCount).toBe(2);
    expect((page.KeyPairSet as Array<{ KeyId: string }>).map((k) => k.KeyId)).toEqual([b]);
    const next = await call("DescribeKeyPairs", { Offset: 1, Limit: 1 });
    expect((next.KeyPairSet as Array<{ KeyId: string }>).map((k) => k.KeyId)).toEqual([a]);
  });

  it("DeleteKeyPairs answers {} and removes the keys; an unknown key is InvalidKeyPairId.NotFound", async () => {
    const a = await createKey("a");
    expect(await refusal("DeleteKeyPairs", { KeyIds: [a, "skey-zzzzzzzz"] })).toMatchObject({ code: "InvalidKeyPairId.NotFound" });
    expect(await call("DeleteKeyPairs", { KeyIds: [a] })).toEqual({});
    expect((await call("DescribeKeyPairs", {})).TotalCount).toBe(0);
  });
});

describe("AssociateInstancesKeyPairs and DisassociateInstancesKeyPairs", () => {
  it("call the service with the parsed request and answer {}", async () => {
    const key = await createKey("web");
    expect(await call("AssociateInstancesKeyPairs", { InstanceIds: ["ins-abcd1234"], KeyIds: [key], ForceStop: true })).toEqual({});
    expect(service.calls).toEqual([
      { entry: "associateKeyPairs", req: { instanceIds: ["ins-abcd1234"], keyIds: [key], forceStop: true }, ctx: { requestId: "req-1" } },
    ]);
    const bound = await call("DescribeKeyPairs", { KeyIds: [key] });
    expect((bound.KeyPairSet as Array<{ AssociatedInstanceIds: string[] }>)[0]?.AssociatedInstanceIds).toEqual(["ins-abcd1234"]);

    // A bound key cannot be deleted until it is unbound.
    expect((await refusal("DeleteKeyPairs", { KeyIds: [key] })).code).toBe("InvalidParameterValue.KeyPairNotSupported");
    expect(await call("DisassociateInstancesKeyPairs", { InstanceIds: ["ins-abcd1234"], KeyIds: [key] })).toEqual({});
    expect(service.calls[1]).toMatchObject({ entry: "disassociateKeyPairs", req: { instanceIds: ["ins-abcd1234"], keyIds: [key], forceStop: false } });
    expect(await call("DeleteKeyPairs", { KeyIds: [key] })).toEqual({});
  });

  it("refuse a key ID that does not exist with InvalidKeyPairId.NotFound before calling the service", async () => {
    const key = await createKey("web");
    for (const action of ["AssociateInstancesKeyPairs", "DisassociateInstancesKeyPairs"]) {
      const r = await refusal(action, { InstanceIds: ["ins-abcd1234"], KeyIds: [key, "skey-zzzzzzzz"] });
      expect(r.code).toBe("InvalidKeyPairId.NotFound");
      expect(r.message).toContain("`KeyIds.1`");
    }
    expect(service.calls).toEqual([]);
  });
});

describe("ResetInstancesPassword", () => {
  it("checks the password with the Linux rule, naming Password, before calling the service", async () => {
    const r = await refusal("ResetInstancesPassword", { InstanceIds: ["ins-abcd1234"], Password: "short1" });
    expect(r.code).toBe("InvalidPassword");
    expect(r.message).toContain("`Password`");
    expect((await refusal("ResetInstancesPassword", { InstanceIds: ["ins-abcd1234"], Password: "alllowercase" })).code).toBe("InvalidPassword");
    expect(service.calls).toEqual([]);
  });

  it("passes a good password, UserName and ForceStop to the service and answers {}", async () => {
    expect(await call("ResetInstancesPassword", { InstanceIds: ["ins-abcd1234"], Password: "Passw0rd", UserName: "root", ForceStop: true })).toEqual({});
    expect(service.calls).toEqual([
      {
        entry: "resetPassword",
        req: { instanceIds: ["ins-abcd1234"], password: "Passw0rd", userName: "root", forceStop: true },
        ctx: { requestId: "req-1" },
      },
    ]);
  });
});

describe("RunInstances logins and VPC", () => {
  const BASE = { InstanceType: "CDH_1C1G", ImageId: LINUX_IMAGE };

  it("passes a password that fits the image's OS as login", async () => {
    expect(await call("RunInstances", { ...BASE, LoginSettings: { Password: "Passw0rd" } })).toEqual({ InstanceIdSet: ["ins-00000000"] });
    expect(service.runs[0]?.login).toEqual({ password: "Passw0rd", keepImageLogin: false });
    expect(service.runs[0]).not.toHaveProperty("vpc");
  });

  it("judges the password by the image's OS: Windows wants 12 characters and 3 classes", async () => {
    const r = await refusal("RunInstances", { ...BASE, ImageId: WINDOWS_IMAGE, LoginSettings: { Password: "Passw0rd" } });
    expect(r.code).toBe("InvalidPassword");
    expect(r.message).toContain("`LoginSettings.Password`");
    expect(r.message).toContain("Windows");
    await call("RunInstances", { ...BASE, ImageId: WINDOWS_IMAGE, LoginSettings: { Password: "Passw0rd!Long" } });
    expect(service.runs[0]?.login?.password).toBe("Passw0rd!Long");
  });

  it("refuses a bad Linux password with InvalidPassword naming LoginSettings.Password", async () => {
    const r = await refusal("RunInstances", { ...BASE, LoginSettings: { Password: "abc" } });
    expect(r).toMatchObject({ code: "InvalidPassword" });
    expect(r.message).toContain("`LoginSettings.Password`");
    expect(service.runs).toEqual([]);
  });

  it("passes KeyIds that exist and refuses one that does not", async () => {
    const key = await createKey("web");
    await call("RunInstances", { ...BASE, LoginSettings: { KeyIds: [key] } });
    expect(service.runs[0]?.login).toEqual({ keyIds: [key], keepImageLogin: false });
    const r = await refusal("RunInstances", { ...BASE, LoginSettings: { KeyIds: ["skey-zzzzzzzz"] } });
    expect(r.code).toBe("InvalidKeyPairId.NotFound");
    expect(r.message).toContain("`LoginSettings.KeyIds.0`");
    expect(service.runs).toHaveLength(1);
  });

  it("refuses key pairs for a Windows image", async () => {
    const key = await createKey("web");
    expect((await refusal("RunInstances", { ...BASE, ImageId: WINDOWS_IMAGE, LoginSettings: { KeyIds: [key] } })).code).toBe(
      "InvalidParameterValue.KeyPairNotSupported",
    );
  });

  it("passes KeepImageLogin", async () => {
    await call("RunInstances", { ...BASE, LoginSettings: { KeepImageLogin: "TRUE" } });
    expect(service.runs[0]?.login).toEqual({ keepImageLogin: true });
  });

  it("leaves the password of an unknown image to the service, which answers InvalidImageId.NotFound", async () => {
    await call("RunInstances", { ...BASE, ImageId: "img-zzzzzzzz", LoginSettings: { Password: "x" } });
    expect(service.runs[0]?.login).toEqual({ password: "x", keepImageLogin: false });
  });

  it("passes the VPC subnet and the one primary address", async () => {
    await call("RunInstances", { ...BASE, VirtualPrivateCloud: { VpcId: "vpc-1", SubnetId: "subnet-1", PrivateIpAddresses: ["10.201.0.9"] } });
    expect(service.runs[0]?.vpc).toEqual({ vpcId: "vpc-1", subnetId: "subnet-1", privateIpAddress: "10.201.0.9" });
    await call("RunInstances", { ...BASE, VirtualPrivateCloud: { VpcId: "vpc-1", SubnetId: "subnet-1" } });
    expect(service.runs[1]?.vpc).toEqual({ vpcId: "vpc-1", subnetId: "subnet-1" });
  });

  it("refuses more than one private address, a VPC gateway and IPv6", async () => {
    const vpc = { VpcId: "vpc-1", SubnetId: "subnet-1" };
    const two = await refusal("RunInstances", { ...BASE, InstanceCount: 2, VirtualPrivateCloud: { ...vpc, PrivateIpAddresses: ["10.201.0.9", "10.201.0.10"] } });
    expect(two.code).toBe("InvalidParameterValue");
    expect(two.message).toContain("`VirtualPrivateCloud.PrivateIpAddresses`");
    expect((await refusal("RunInstances", { ...BASE, VirtualPrivateCloud: { ...vpc, AsVpcGateway: true } })).code).toBe("InvalidParameterValue");
    expect((await refusal("RunInstances", { ...BASE, VirtualPrivateCloud: { ...vpc, Ipv6AddressCount: 1 } })).code).toBe("InvalidParameterValue");
    expect(service.runs).toEqual([]);
  });

  it("passes DataDisks on in order, and refuses a chosen DiskId or SnapshotId naming the field", async () => {
    await call("RunInstances", { ...BASE, DataDisks: [{ DiskSize: 10 }, { DiskSize: 20, DiskType: "LOCAL_SSD", DeleteWithInstance: false }] });
    expect(service.runs.at(-1)?.dataDisks).toEqual([
      { diskType: "LOCAL_BASIC", sizeGiB: 10, deleteWithInstance: true },
      { diskType: "LOCAL_SSD", sizeGiB: 20, deleteWithInstance: false },
    ]);
    const chosen = await refusal("RunInstances", { ...BASE, DataDisks: [{ DiskSize: 10, DiskId: "disk-abcdefgh" }] });
    expect(chosen).toMatchObject({ code: "InvalidParameterValue" });
    expect(chosen.message).toContain("`DataDisks.0.DiskId`");
    expect((await refusal("RunInstances", { ...BASE, DataDisks: [{ DiskSize: 10 }, { DiskSize: 10, SnapshotId: "snap-abcdefgh" }] })).message).toContain("`DataDisks.1.SnapshotId`");
  });
});
