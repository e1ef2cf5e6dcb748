import { describe, expect, it } from "vitest";
import { KeyedLock } from "../../../agent/util/keyed-lock.js";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("KeyedLock", () => {
  it("runs work on one key one after another, in arrival order", async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    await Promise.all(
      ["a", "b", "c"].map((name, i) =>
        lock.run("k", async () => {
          log.push(`start ${name}`);
          await tick(20 - i * 5);
          log.push(`end ${name}`);
        }),
      ),
    );
    expect(log).toEqual(["start a", "end a", "start b", "end b", "start c", "end c"]);
    expect(lock.isBusy("k")).toBe(false);
  });

  it("runs work on different keys in parallel", async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    await Promise.all(
      ["x", "y"].map((key) =>
        lock.run(key, async () => {
          log.push(`start ${key}`);
          await tick(10);
          log.push(`end ${key}`);
        }),
      ),
    );
    expect(log.slice(0, 2).sort()).toEqual(["start x", "start y"]);
  });

  it("keeps going after a failure", async () => {
    const lock = new KeyedLock();
    await expect(lock.run("k", async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(lock.run("k", async () => 7)).resolves.toBe(7);
  });
});
