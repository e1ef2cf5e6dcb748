import { describe, expect, it } from "vitest";
import { ConvergenceMonitor, DEFAULT_SCHEDULE, checkSchedule, type ConvergenceSchedule } from "../../../../agent/migration/schedule.js";

const schedule: ConvergenceSchedule = {
  init: { downtimeMs: 300 },
  stalling: [
    { limit: 1, action: { kind: "downtime", ms: 600 } },
    { limit: 2, action: { kind: "downtime", ms: 5000 } },
    { limit: 3, action: { kind: "postcopy" } },
    { limit: 4, action: { kind: "abort" } },
  ],
};

/** Feeds iterations 1..n whose remaining memory never drops: each after the first is stalled. */
function stallingRun(m: ConvergenceMonitor, n: number) {
  const steps = [];
  for (let i = 1; i <= n; i++) {
    // Several looks per iteration: an iteration counts once.
    for (let look = 0; look < 3; look++) {
      const d = m.observe({ iteration: i, memoryRemainingBytes: 100 });
      if (d.step) steps.push(d.step.action);
    }
  }
  return steps;
}

describe("ConvergenceMonitor", () => {
  it("runs each step once, in order, as stalled iterations reach its limit", () => {
    const m = new ConvergenceMonitor(schedule, { maxDowntimeMs: 10_000, allowPostCopy: true });
    expect(stallingRun(m, 5)).toEqual([{ kind: "downtime", ms: 600 }, { kind: "downtime", ms: 5000 }, { kind: "postcopy" }, { kind: "abort" }]);
  });

  it("caps every downtime by the request's MaxDowntime, the initial one too", () => {
    const m = new ConvergenceMonitor(schedule, { maxDowntimeMs: 1000, allowPostCopy: true });
    expect(m.initialDowntimeMs()).toBe(300);
    expect(stallingRun(m, 3)).toEqual([{ kind: "downtime", ms: 600 }, { kind: "downtime", ms: 1000 }]);
    expect(new ConvergenceMonitor(schedule, { maxDowntimeMs: 100, allowPostCopy: false }).initialDowntimeMs()).toBe(100);
  });

  it("aborts where the schedule says post-copy when the request forbids it, and at the deadline", () => {
    const m = new ConvergenceMonitor(schedule, { maxDowntimeMs: 10_000, allowPostCopy: false });
    expect(stallingRun(m, 4)[2]).toEqual({ kind: "abort" });
    expect(m.atDeadline()).toEqual({ kind: "abort" });
    expect(new ConvergenceMonitor(schedule, { maxDowntimeMs: 1, allowPostCopy: true }).atDeadline()).toEqual({ kind: "postcopy" });
  });

  it("does not count iterations that made progress", () => {
    const m = new ConvergenceMonitor(schedule, { maxDowntimeMs: 10_000, allowPostCopy: true });
    let remaining = 1000;
    for (let i = 1; i <= 10; i++) {
      remaining -= 50;
      expect(m.observe({ iteration: i, memoryRemainingBytes: remaining }).step).toBeUndefined();
    }
    expect(m.stalled).toBe(0);
    // Progress, then a stall above the lowest seen: counted.
    expect(m.observe({ iteration: 11, memoryRemainingBytes: 2000 }).stalled).toBe(1);
  });

  it("the default schedule is well formed and ends in post-copy or abort", () => {
    expect(checkSchedule(DEFAULT_SCHEDULE)).toBeUndefined();
    expect(checkSchedule({ init: { downtimeMs: 300 }, stalling: [{ limit: 2, action: { kind: "abort" } }, { limit: 2, action: { kind: "abort" } }] })).toMatch(/greater/);
    const kinds = DEFAULT_SCHEDULE.stalling.map((s) => s.action.kind);
    expect(kinds.slice(-2)).toEqual(["postcopy", "abort"]);
  });
});
