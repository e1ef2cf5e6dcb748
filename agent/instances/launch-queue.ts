/**
 * The per-host launch queue: at most `concurrency` launches make disks, define and
 * start domains at once; the others wait their turn in arrival order (their instances
 * stay PENDING). On a busy host libvirt starts domains one after another, so a batch of
 * 100 launched at once would have its tail wait minutes inside libvirt; here it waits in
 * the agent instead, where a wait costs nothing and a terminate can take it out.
 */

/**
 * Launches at once when `launch_concurrency` is 0 (auto): four per host core, at least 4, at
 * most 32. A start is mostly waiting (libvirt and QEMU setting up, slower when running
 * guests take the CPU): on the 2-core test host, 2 at once brought one domain up every
 * 12 s, 16 at once one every 7 s; the queue bounds how far libvirt falls behind.
 */
export function launchConcurrency(setting: number, hostCores: number): number {
  if (setting > 0) return setting;
  return Math.min(32, Math.max(4, 4 * Math.floor(hostCores)));
}

interface Waiter {
  start: () => void;
}

/** The part of a pino logger the queue uses. */
export interface QueueLogger {
  debug(obj: object, msg: string): void;
}

export class LaunchQueue {
  readonly concurrency: number;
  private active = 0;
  private readonly waiters: Waiter[] = [];
  private readonly logger: QueueLogger | undefined;

  constructor(options: { concurrency: number; logger?: QueueLogger }) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new RangeError(`launch concurrency must be a positive integer, not ${options.concurrency}`);
    }
    this.concurrency = options.concurrency;
    this.logger = options.logger;
  }

  /** Launches under way now. */
  get running(): number {
    return this.active;
  }

  /** Launches waiting for a turn. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Runs `work` once a turn is free (first come, first served) and frees the turn when it
   * settles. When `signal` is aborted while waiting, the launch leaves the queue and the
   * promise rejects with the signal's reason; `work` never runs. `label` names the launch
   * in the debug line logged when its turn comes.
   */
  async run<T>(work: () => Promise<T>, options: { signal?: AbortSignal; label?: string } = {}): Promise<T> {
    const { signal } = options;
    signal?.throwIfAborted();
    const queuedAt = performance.now();
    if (this.active < this.concurrency) {
      this.active += 1;
    } else {
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          start: () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          },
        };
        const onAbort = () => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(signal?.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        this.waiters.push(waiter);
      });
      // The turn was handed over by release(): `active` already counts it.
    }
    this.logger?.debug(
      { launch: options.label, running: this.active, waiting: this.waiters.length, waitedMs: Math.round(performance.now() - queuedAt) },
      "launch turn",
    );
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  private release(): void {
    const next = this.waiters.shift();
    if (next) next.start(); // the turn passes on: active stays the same
    else this.active -= 1;
  }
}
