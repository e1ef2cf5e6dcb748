/**
 * The host monitor: one bulk statistics call for all active domains every interval, the
 * values of each instance computed from its previous and current counters (metrics.ts),
 * folded into the series store (store.ts).
 *
 * THE INTERFACE FOR READERS (Prometheus, alarms, the self-check — none of which may call
 * libvirt; they read what the last sample left):
 *
 *   interface MonitorReader {
 *     latest(): LatestSample | undefined      // the last bulk sample, all instances; undefined before the first
 *     query(q: SeriesQuery): Series           // one metric of one instance over a window at a period
 *     status(): CollectorStatus               // samples taken, missed (call failed or timed out), overruns, last call's ms
 *     subscribe(fn: (s: LatestSample) => void): () => void   // called after each sample is stored (alarms)
 *   }
 *
 *   LatestSample = { at: ms since the epoch, durationMs, instances: Map<instanceId, InstanceSample> }
 *   InstanceSample = { instanceId, at, state (virDomainState number), values: Float64Array
 *                      (STORED_METRICS order; NaN = not computable this interval, e.g. the
 *                      first sample after a start), counters: DomainCounters (raw, cumulative) }
 *   SeriesQuery = { instanceId, metric: index in STORED_METRICS (METRIC_INDEX.CPUUsage …),
 *                   period: 10|60|300|3600|86400, start, end: Unix seconds inclusive }
 *   Series = { timestamps (Unix s, aligned), avg, max, min: number[] }
 *
 * Safety: one `virsh domstats --nowait` per interval (in the long-lived shell when one is
 * given: its deadline kills the shell, the next sample starts another) with a deadline (timeoutMs); a call
 * still under way when the next is due is not doubled (the tick is counted as an overrun);
 * a failed or killed call is a missed sample, logged once per streak.
 */
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { collectDomainStats, type DomainCounters } from "../../drivers/libvirt/domstats.js";
import type { VirshSession } from "../../drivers/libvirt/virsh-session.js";
import { computeValues, type Reading } from "./metrics.js";
import type { Series, SeriesQuery, SeriesStore } from "./store.js";

export interface InstanceSample {
  instanceId: string;
  at: number;
  state: number | undefined;
  values: Float64Array;
  counters: DomainCounters;
}

export interface LatestSample {
  at: number;
  durationMs: number;
  instances: ReadonlyMap<string, InstanceSample>;
}

export interface CollectorStatus {
  samples: number;
  missed: number;
  overruns: number;
  lastDurationMs: number | undefined;
  lastError: string | undefined;
}

export interface MonitorReader {
  latest(): LatestSample | undefined;
  query(q: SeriesQuery): Series;
  status(): CollectorStatus;
  subscribe(fn: (s: LatestSample) => void): () => void;
}

export interface MonitorLogger {
  warn(obj: Record<string, unknown>, msg?: string): void;
  info(obj: Record<string, unknown>, msg?: string): void;
}

export interface HostMonitorOptions {
  runner: CommandRunner;
  uri: string;
  store: SeriesStore;
  /** Interval between samples, ms (config monitor_interval_s). */
  intervalMs: number;
  /** Deadline of one bulk call, ms. Default: 80 % of the interval, at most 8 s. */
  timeoutMs?: number;
  /** This agent's instances (domains are named by instance ID); other domains are skipped. */
  instanceIds: () => ReadonlySet<string>;
  /**
   * A long-lived virsh shell for the bulk call (drivers/libvirt/virsh-session.ts: no process and
   * connection per interval); closed by stop(). Without it, one `virsh` process per sample.
   */
  session?: VirshSession;
  /** Adds what slower collectors read (guest-fs.ts: the guest's filesystems) to an instance's values before they are stored. */
  fill?: (instanceId: string, values: Float64Array) => void;
  logger: MonitorLogger;
  /** Clock, ms since the epoch. */
  now?: () => number;
}

export class HostMonitor implements MonitorReader {
  private readonly o: HostMonitorOptions;
  private readonly now: () => number;
  private readonly timeoutMs: number;
  private readonly readings = new Map<string, Reading>();
  private last: LatestSample | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private readonly abort = new AbortController();
  private readonly listeners = new Set<(s: LatestSample) => void>();
  private readonly counts: CollectorStatus = { samples: 0, missed: 0, overruns: 0, lastDurationMs: undefined, lastError: undefined };
  private stopped = false;
  private storeFailing = false;

  constructor(o: HostMonitorOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
    this.timeoutMs = o.timeoutMs ?? Math.min(8_000, Math.floor(o.intervalMs * 0.8));
  }

  latest(): LatestSample | undefined {
    return this.last;
  }

  query(q: SeriesQuery): Series {
    return this.o.store.query(q);
  }

  status(): CollectorStatus {
    return { ...this.counts };
  }

  subscribe(fn: (s: LatestSample) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Starts sampling, at whole multiples of the interval (so samples fall in distinct 10 s buckets). */
  start(): void {
    if (this.timer || this.stopped) return;
    const schedule = () => {
      if (this.stopped) return;
      const now = this.now();
      const wait = this.o.intervalMs - (now % this.o.intervalMs) + 50;
      this.timer = setTimeout(() => {
        this.tick();
        schedule();
      }, wait);
      this.timer.unref();
    };
    schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.running?.catch(() => undefined);
    this.o.session?.close();
  }

  private tick(): void {
    if (this.running) {
      this.counts.overruns++;
      return;
    }
    this.running = this.sampleOnce()
      .catch((error: unknown) => {
        // The store could not be written (a full disk, …): this sample is lost, the next is tried.
        this.counts.missed++;
        if (!this.storeFailing) this.o.logger.warn({ err: error }, "monitor: a sample could not be stored (logged once until one is)");
        this.storeFailing = true;
      })
      .finally(() => {
        this.running = undefined;
      });
  }

  /** One bulk call and its values stored (exported for tests and the benchmark). */
  async sampleOnce(): Promise<LatestSample | undefined> {
    const started = this.now();
    let domains: DomainCounters[];
    try {
      domains = await collectDomainStats({ runner: this.o.runner, uri: this.o.uri, ...(this.o.session ? { session: this.o.session } : {}) }, this.timeoutMs, this.abort.signal);
    } catch (error) {
      if (this.stopped) return undefined;
      const message = error instanceof Error ? error.message : String(error);
      if (this.counts.lastError === undefined) this.o.logger.warn({ err: error }, "monitor: the bulk statistics call failed; this sample is missed");
      this.counts.missed++;
      this.counts.lastError = message;
      return undefined;
    }
    const at = this.now();
    if (this.counts.lastError !== undefined) {
      this.o.logger.info({ missed: this.counts.missed }, "monitor: the bulk statistics call answers again");
      this.counts.lastError = undefined;
    }
    const ids = this.o.instanceIds();
    const instances = new Map<string, InstanceSample>();
    const atS = Math.floor(at / 1000);
    for (const counters of domains) {
      const id = counters.name;
      if (!ids.has(id)) continue;
      const cur: Reading = { at, counters };
      const prev = this.readings.get(id);
      const values = prev ? computeValues(prev, cur) : computeValues(cur, cur);
      this.o.fill?.(id, values);
      if (prev) this.o.store.record(id, atS, values);
      this.readings.set(id, cur);
      instances.set(id, { instanceId: id, at, state: counters.state, values, counters });
    }
    // A domain no longer active (stopped, terminated) starts afresh next time.
    for (const id of this.readings.keys()) if (!instances.has(id)) this.readings.delete(id);
    this.storeFailing = false;
    this.counts.samples++;
    this.counts.lastDurationMs = at - started;
    const sample: LatestSample = { at, durationMs: at - started, instances };
    this.last = sample;
    for (const fn of this.listeners) {
      try {
        fn(sample);
      } catch (error) {
        this.o.logger.warn({ err: error }, "monitor: a sample listener failed");
      }
    }
    return sample;
  }
}
