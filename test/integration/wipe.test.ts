/**
 * Degaussing: a deleted disk file's data is destroyed before the file goes, with the real
 * tools (fallocate, shred). A second hard link keeps the inode readable after the delete,
 * so the test reads what is left of the very blocks the disk had.
 */
import { link, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../drivers/exec/local.js";
import { Storage, type WipeMode } from "../../agent/storage/storage.js";

describe("destroying a disk file's data", () => {
  let dir: string;
  const runner = new LocalRunner({ defaultTimeoutMs: 60_000 });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "cdh-wipe-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    await runner.close();
  });

  function storage(wipe: WipeMode): Storage {
    return new Storage({ wipe, runner, logger: pino({ level: "silent" }) } as unknown as ConstructorParameters<typeof Storage>[0]);
  }

  for (const mode of ["zero", "discard", "none"] as const) {
    it(`${mode}: the file is gone${mode === "none" ? " and its bytes stay readable through another link" : " and its bytes are zeros"}`, async () => {
      const file = join(dir, `${mode}.qcow2`);
      const witness = join(dir, `${mode}.witness`);
      const secret = Buffer.alloc(3 * 1024 * 1024, "tenant-secret-");
      await writeFile(file, secret);
      await link(file, witness);
      await storage(mode).destroyFile(file);
      expect(existsSync(file)).toBe(false);
      const left = await readFile(witness);
      expect(left.length).toBe(secret.length);
      expect(left.equals(mode === "none" ? secret : Buffer.alloc(secret.length))).toBe(true);
    });
  }

  it("a missing file is not an error", async () => {
    await expect(storage("zero").destroyFile(join(dir, "never-was.qcow2"))).resolves.toBeUndefined();
  });
});
