/**
 * The convergence schedule of a live migration, written as data (after oVirt VDSM's
 * `{init, stalling: [{limit, action}]}`, lib/vdsm/virt/migration.py): it advances by stalled
 * iterations of QEMU's pre-copy, never by wall time alone. An iteration is stalled when the
 * memory left to send is not below the lowest seen so far. Each step runs once, in order,
 * when the count of stalled iterations reaches its limit; the deadline of the request ends
 * the job as the last step would.
 */

export type ConvergenceAction =
  /** Allow this much downtime (ms); capped by the request's MaxDowntime. */
  | { kind: "downtime"; ms: number }
  /** Switch to post-copy (only when the request allows it; else this step aborts). */
  | { kind: "postcopy" }
  | { kind: "abort" };

export interface ConvergenceSchedule {
  /** The downtime the job starts with (ms), capped by the request's MaxDowntime. */
  init: { downtimeMs: number };
  /** Steps in order; `limit` = stalled iterations at which the step runs (increasing). */
  stalling: ReadonlyArray<{ limit: number; action: ConvergenceAction }>;
}

/**
 * The default: 300 ms of downtime, raised three times as pre-copy stalls, then post-copy
 * (or abort when the request forbids it). QEMU's auto-converge (CPU throttling of a guest that
 * dirties memory faster than the link) is switched on when the job starts: libvirt and QEMU
 * accept it only then (README "Migration").
 */
export const DEFAULT_SCHEDULE: ConvergenceSchedule = Object.freeze({
  init: { downtimeMs: 300 },
  stalling: Object.freeze([
    { limit: 2, action: { kind: "downtime", ms: 600 } },
    { limit: 4, action: { kind: "downtime", ms: 1200 } },
    { limit: 6, action: { kind: "downtime", ms: 2500 } },
    { limit: 8, action: { kind: "postcopy" } },
    { limit: 12, action: { kind: "abort" } },
  ]) as ConvergenceSchedule["stalling"],
}) as ConvergenceSchedule;

/** One look at the job (virsh domjobinfo). */
export interface JobSample {
  /** Pre-copy pass over memory (1 = the first). */
  iteration: number;
  /** Memory still to send, bytes. */
  memoryRemainingBytes: number;
}

/** What the monitor decided for a sample: a step to run now (with its index), or nothing. */
export interface ConvergenceDecision {
  step?: { index: number; action: ConvergenceAction };
  stalled: number;
}

/** Runs a schedule over job samples; pure (no clock, no I/O). */
export class ConvergenceMonitor {
  private lowest = Number.POSITIVE_INFINITY;
  private lastIteration = 0;
  private stalledCount = 0;
  private next = 0;

  constructor(
    private readonly schedule: ConvergenceSchedule,
    private readonly limits: { maxDowntimeMs: number; allowPostCopy: boolean },
  ) {}

  /** The downtime to begin with. */
  initialDowntimeMs(): number {
    return Math.min(this.schedule.init.downtimeMs, this.limits.maxDowntimeMs);
  }

  get stalled(): number {
    return this.stalledCount;
  }

  /** Feeds one sample; counts an iteration once, when a new one has begun. */
  observe(sample: JobSample): ConvergenceDecision {
    if (sample.iteration > this.lastIteration) {
      // A finished iteration is judged by what was left when the next one began.
      if (this.lastIteration > 0) {
        if (sample.memoryRemainingBytes < this.lowest) this.lowest = sample.memoryRemainingBytes;
        else this.stalledCount += 1;
      } else {
        this.lowest = sample.memoryRemainingBytes;
      }
      this.lastIteration = sample.iteration;
    }
    const step = this.schedule.stalling[this.next];
    if (step && this.stalledCount >= step.limit) {
      const index = this.next;
      this.next += 1;
      return { step: { index, action: this.effective(step.action) }, stalled: this.stalledCount };
    }
    return { stalled: this.stalledCount };
  }

  /** The step the deadline runs: post-copy when allowed, else abort. */
  atDeadline(): ConvergenceAction {
    return this.limits.allowPostCopy ? { kind: "postcopy" } : { kind: "abort" };
  }

  private effective(action: ConvergenceAction): ConvergenceAction {
    if (action.kind === "downtime") return { kind: "downtime", ms: Math.min(action.ms, this.limits.maxDowntimeMs) };
    if (action.kind === "postcopy" && !this.limits.allowPostCopy) return { kind: "abort" };
    return action;
  }
}

/** A schedule read from JSON (config or tests), checked. */
export function checkSchedule(s: ConvergenceSchedule): string | undefined {
  if (!(s.init.downtimeMs > 0)) return "init.downtimeMs must be positive";
  let last = 0;
  for (const [i, step] of s.stalling.entries()) {
    if (!(step.limit > last)) return `stalling[${i}].limit must be greater than the previous step's`;
    last = step.limit;
  }
  return undefined;
}
