import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { takeFileLock } from "../../support/file-lock.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "file-lock-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("takeFileLock", () => {
  it("refuses a second holder while the first has the lock, naming the first", () => {
    const path = join(dir, "lock");
    const first = takeFileLock(path, "power.test.ts");
    expect(() => takeFileLock(path, "images.test.ts")).toThrow(/images\.test\.ts started while power\.test\.ts \(pid \d+\) still runs/);
    first.release();
    expect(existsSync(path)).toBe(false);
    takeFileLock(path, "images.test.ts").release();
  });

  it("takes over a lock whose holder is gone", async () => {
    const path = join(dir, "lock");
    const child = spawn(process.execPath, ["-e", ""]);
    const pid = child.pid!;
    await new Promise((resolve) => child.on("exit", resolve));
    writeFileSync(path, `${pid} crashed.test.ts`);
    const lock = takeFileLock(path, "next.test.ts");
    expect(readFileSync(path, "utf8")).toBe(`${process.pid} next.test.ts`);
    lock.release();
  });

  it("does not remove a lock another holder took after a release", () => {
    const path = join(dir, "lock");
    const first = takeFileLock(path, "a.test.ts");
    first.release();
    const second = takeFileLock(path, "b.test.ts");
    first.release();
    expect(readFileSync(path, "utf8")).toBe(`${process.pid} b.test.ts`);
    second.release();
  });
});
