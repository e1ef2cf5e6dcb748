import { describe, expect, it } from "vitest";
import { launchConcurrency, LaunchQueue } from "../../../agent/instances/launch-queue.js";

/** A launch the test finishes by hand. */
function gate() {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { promise, open, fail };
}
const flush = () => new Promise((r) => setImmediate(r));

describe("LaunchQueue", () => {
  it("runs at most `concurrency` launches at once and starts the others in arrival order", async () => {
    const q = new LaunchQueue({ concurrency: 2 });
    const gates = Array.from({ length: 5 }, gate);
    const started: number[] = [];
    let peak = 0;
    const all = gates.map((g, i) =>
      q.run(async () => {
        started.push(i);
        peak = Math.max(peak, q.running);
        await g.promise;
        return i;
      }),
    );
    await flush();
    expect(started).toEqual([0, 1]);
    expect(q.waiting).toBe(3);
    gates[1]!.open();
    await flush();
    expect(started).toEqual([0, 1, 2]);
    gates[0]!.open();
    gates[2]!.open();
    await flush();
    expect(started).toEqual([0, 1, 2, 3, 4]);
    gates[3]!.open();
    gates[4]!.open();
    expect(await Promise.all(all)).toEqual([0, 1, 2, 3, 4]);
    expect(peak).toBe(2);
    expect(q.running).toBe(0);
    expect(q.waiting).toBe(0);
  });

  it("frees the turn of a launch that failed, and passes its error on", async () => {
    const q = new LaunchQueue({ concurrency: 1 });
    const first = gate();
    const a = q.run(() => first.promise);
    const b = q.run(async () => "second");
    first.fail(new Error("define failed"));
    await expect(a).rejects.toThrow("define failed");
    await expect(b).resolves.toBe("second");
    expect(q.running).toBe(0);
  });

  it("lets a waiting launch leave when its signal is aborted: its work never runs and the queue goes on", async () => {
    const q = new LaunchQueue({ concurrency: 1 });
    const first = gate();
    const a = q.run(() => first.promise);
    const abort = new AbortController();
    let ran = false;
    const b = q.run(async () => {
      ran = true;
    }, { signal: abort.signal });
    const c = q.run(async () => "third");
    await flush();
    expect(q.waiting).toBe(2);
    abort.abort(new Error("pre-empted by TerminateInstances"));
    await expect(b).rejects.toThrow("pre-empted by TerminateInstances");
    expect(q.waiting).toBe(1);
    first.open();
    await a;
    await expect(c).resolves.toBe("third");
    expect(ran).toBe(false);
    expect(q.running).toBe(0);
  });

  it("refuses at once a launch whose signal is already aborted", async () => {
    const q = new LaunchQueue({ concurrency: 3 });
    const abort = new AbortController();
    abort.abort(new Error("gone"));
    await expect(q.run(async () => "never", { signal: abort.signal })).rejects.toThrow("gone");
    expect(q.running).toBe(0);
  });

  it("logs each launch's turn with what runs and waits then", async () => {
    const lines: Array<{ obj: object; msg: string }> = [];
    const q = new LaunchQueue({ concurrency: 1, logger: { debug: (obj, msg) => lines.push({ obj, msg }) } });
    const first = gate();
    const a = q.run(() => first.promise, { label: "ins-aaaa1111" });
    const b = q.run(async () => undefined, { label: "ins-bbbb2222" });
    first.open();
    await Promise.all([a, b]);
    expect(lines.map((l) => l.msg)).toEqual(["launch turn", "launch turn"]);
    expect(lines[0]?.obj).toMatchObject({ launch: "ins-aaaa1111", running: 1, waiting: 0 });
    expect(lines[1]?.obj).toMatchObject({ launch: "ins-bbbb2222", running: 1, waiting: 0 });
  });

  it("refuses a concurrency that is not a positive integer", () => {
    expect(() => new LaunchQueue({ concurrency: 0 })).toThrow(RangeError);
    expect(() => new LaunchQueue({ concurrency: 1.5 })).toThrow(RangeError);
  });
});

describe("launchConcurrency", () => {
  it("takes the setting when it is set, and four per core (4 to 32) when it is 0", () => {
    expect(launchConcurrency(5, 2)).toBe(5);
    expect(launchConcurrency(0, 1)).toBe(4);
    expect(launchConcurrency(0, 2)).toBe(8);
    expect(launchConcurrency(0, 8)).toBe(32);
    expect(launchConcurrency(0, 64)).toBe(32);
  });
});
