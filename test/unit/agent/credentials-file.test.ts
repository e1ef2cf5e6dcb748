/**
 * The generated API credentials file: made when missing, read when valid, and when it
 * exists but cannot be read or parsed the agent stops with a message naming the file,
 * without quoting it, and the file is left exactly as it was.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CredentialsFileError, loadOrCreateCredentials, readCredentialsFile } from "../../../agent/credentials-file.js";
import { readMachineId } from "../../../agent/machine-id.js";

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "cdh-cred-"));
  file = join(dir, "api-credentials.json");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function refusal(promise: Promise<unknown>): Promise<CredentialsFileError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CredentialsFileError);
  return error as CredentialsFileError;
}

describe("loadOrCreateCredentials", () => {
  it("makes a pair (0600) when the file is missing, then reads the same pair back", async () => {
    const first = await loadOrCreateCredentials(file);
    expect(first.created).toBe(true);
    expect(first.credential.secretId).toMatch(/^AKID[0-9a-f]{32}$/);
    expect(first.credential.secretKey.length).toBeGreaterThanOrEqual(32);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual({ secret_id: first.credential.secretId, secret_key: first.credential.secretKey });
    const second = await loadOrCreateCredentials(file);
    expect(second).toEqual({ credential: first.credential, created: false });
  });

  const broken: Array<[string, string, string]> = [
    ["not JSON", '{"secret_id": "AKIDkeepme", "secret_key": "s3cr3t-value"', "is not valid JSON"],
    ["an array", '["AKIDkeepme", "s3cr3t-value"]', "does not hold a JSON object"],
    ["a pair without secret_key", '{"secret_id": "AKIDkeepme", "secret": "s3cr3t-value"}', 'has no non-empty string "secret_key"'],
    ["an empty secret_id", '{"secret_id": "", "secret_key": "s3cr3t-value"}', 'has no non-empty string "secret_id"'],
    ["an empty file", "", "is not valid JSON"],
  ];
  for (const [what, content, problem] of broken) {
    it(`stops on a file holding ${what}, never overwriting or quoting it`, async () => {
      await writeFile(file, content, { mode: 0o600 });
      const error = await refusal(loadOrCreateCredentials(file));
      expect(error.message).toContain(file);
      expect(error.message).toContain(problem);
      expect(error.message.split("\n")).toHaveLength(1);
      expect(error.message).not.toContain("s3cr3t-value");
      expect(await readFile(file, "utf8")).toBe(content);
    });
  }

  it("stops on a file it cannot read (a directory in its place), leaving it there", async () => {
    await mkdir(file);
    await writeFile(join(file, "inside"), "x");
    const error = await refusal(loadOrCreateCredentials(file));
    expect(error.message).toContain(`${file} cannot be read (EISDIR)`);
    expect((await stat(file)).isDirectory()).toBe(true);
    expect(await readFile(join(file, "inside"), "utf8")).toBe("x");
  });

  it("reads a valid pair without writing anything", async () => {
    const content = '{"secret_id": "AKIDgiven", "secret_key": "given-key"}\n';
    await writeFile(file, content, { mode: 0o600 });
    expect(await readCredentialsFile(file)).toEqual({ secretId: "AKIDgiven", secretKey: "given-key" });
    expect(await loadOrCreateCredentials(file)).toEqual({ credential: { secretId: "AKIDgiven", secretKey: "given-key" }, created: false });
    expect(await readFile(file, "utf8")).toBe(content);
  });
});

describe("readMachineId", () => {
  it("takes the first non-empty file, trimmed, and makes nothing up when there is none", async () => {
    const empty = join(dir, "empty");
    const real = join(dir, "real");
    await writeFile(empty, " \n");
    await writeFile(real, "0123456789abcdef0123456789abcdef\n");
    expect(readMachineId([join(dir, "missing"), empty, real])).toBe("0123456789abcdef0123456789abcdef");
    expect(readMachineId([join(dir, "missing"), empty])).toBeUndefined();
    expect(readMachineId([])).toBeUndefined();
  });
});
