/**
 * Reports the host's capacity and its instances to the controller: on a cron
 * schedule and whenever trigger() is called (state changes). The controller only
 * needs the newest report, so bursts coalesce, at most one request is in flight,
 * and a newer report supersedes one that is still being retried.
 *
 * Never throws to its caller and never blocks it: trigger() only records that a
 * report is wanted; the work happens on the event loop. Memory is bounded whatever the
 * controller does: at most one report in flight and one waiting (a queue of one; the
 * older is dropped and counted in `Superseded`).
 */
import { createTask, type ScheduledTask } from "node-cron";
import type { Logger } from "pino";

export interface ReportPayload {
  HostResource: Record<string, unknown>;
  Instances: Array<Record<string, unknown>>;
  /** Per storage pool: capacity, what is left, what was promised, what files really take. */
  StoragePools?: Array<Record<string, unknown>>;
  /** What the inventory sweep found that nothing owns (quarantined, deleted after the grace period). */
  Orphans?: Array<Record<string, unknown>>;
  /** The start-up power restore of this epoch: which instances were started again and why (power-restore.ts). */
  PowerRestore?: Record<string, unknown>;
  /** Alarm events not yet delivered (agent/metrics/alarms.ts AlarmEvent), oldest first. */
  Alarms?: Array<Record<string, unknown>>;
}

export interface Report extends ReportPayload {
  HostId: string;
  Epoch: string;
  Sequence: number;
  Reason: string;
  /**
   * Reports built since the agent started that were dropped unsent (a newer one replaced
   * them while the controller was away or slow). Sequence − 1 = the reports delivered
   * before this one + Superseded: a gap in the sequence is always accounted for.
   */
  Superseded: number;
  /** ISO 8601. */
  Timestamp: string;
}

/** Reason of the reports the cron schedule triggers (logged at debug without a controller). */
export const SCHEDULED_REASON = "scheduled";
/** Reason of the report sent by start(). */
export const STARTUP_REASON = "startup";

export interface BackoffOptions {
  /** First retry delay, ms. Default 1000. */
  initialMs: number;
  /** Largest retry delay, ms. Default 30000. */
  maxMs: number;
}

export interface ReporterOptions {
  /** Controller URL the reports are POSTed to; "" = reports are only logged. */
  controllerUrl: string;
  /** node-cron expression (with seconds) for scheduled reports. */
  schedule: string;
  /** Timeout of one POST, ms. */
  timeoutMs: number;
  hostId: string;
  /** Changes every time the agent starts. */
  epoch: string;
  /** Builds the current HostResource and Instances; called once per report. */
  snapshot: () => ReportPayload;
  logger: Logger;
  fetchImpl?: typeof fetch;
  backoff?: BackoffOptions;
  /** Jitter source in [0, 1); default Math.random. */
  random?: () => number;
  /** Called with each report the controller accepted (or that was logged, without a controller). */
  onDelivered?: (report: Report) => void;
}

export interface ReporterStats {
  /** Reports built (equals the last sequence number). */
  built: number;
  /** Reports the controller accepted (or logged, without a controller). */
  sent: number;
  /** Failed attempts (non-2xx, network error, timeout). */
  failedAttempts: number;
  /** Reports given up because a newer one replaced them before they got through. */
  superseded: number;
  lastSentSequence: number | null;
  lastError: string | null;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({ initialMs: 1000, maxMs: 30_000 });

export class Reporter {
  private readonly opts: ReporterOptions;
  private readonly fetchImpl: typeof fetch;
  private readonly backoff: BackoffOptions;
  private readonly random: () => number;
  private readonly log: Logger;

  private task: ScheduledTask | null = null;
  private stopped = false;
  private sequence = 0;
  /** Newest reason for which a report is wanted but not yet built. */
  private pendingReason: string | null = null;
  /** A built report that failed and waits for its retry (unless superseded). */
  private retryReport: Report | null = null;
  private inFlight: AbortController | null = null;
  private inFlightDone: Promise<void> = Promise.resolve();
  private kickScheduled = false;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Consecutive failed attempts; drives the backoff; reset on success. */
  private failures = 0;
  private readonly counters: ReporterStats = {
    built: 0,
    sent: 0,
    failedAttempts: 0,
    superseded: 0,
    lastSentSequence: null,
    lastError: null,
  };

  constructor(options: ReporterOptions) {
    this.opts = options;
    this.fetchImpl = options.fetchImpl ?? ((input, init) => fetch(input, init));
    this.backoff = options.backoff ?? { ...DEFAULT_BACKOFF };
    this.random = options.random ?? Math.random;
    // main.ts names the component (a second child binding would repeat the key on every line).
    this.log = options.logger;
  }

  /** Starts the schedule and sends a first report (reason "startup"). */
  start(): void {
    if (this.task !== null || this.stopped) return;
    this.task = createTask(this.opts.schedule, () => this.trigger(SCHEDULED_REASON), { name: "cdh-agent-report" });
    void this.task.start();
    this.trigger(STARTUP_REASON);
  }

  /** Asks for a report soon. Returns at once; bursts coalesce into one report. */
  trigger(reason: string): void {
    if (this.stopped) return;
    this.pendingReason = reason;
    if (this.inFlight !== null || this.retryTimer !== null || this.kickScheduled) return;
    this.kickScheduled = true;
    setImmediate(() => {
      this.kickScheduled = false;
      this.pump();
    });
  }

  /** Ends the schedule, pending retries and the request in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.task !== null) {
      const task = this.task;
      this.task = null;
      try {
        await task.destroy();
      } catch (err) {
        this.log.warn({ err }, "stopping the report schedule failed");
      }
    }
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.pendingReason = null;
    this.retryReport = null;
    this.inFlight?.abort();
    await this.inFlightDone;
  }

  stats(): Readonly<ReporterStats> {
    return { ...this.counters };
  }

  /** Sends the newest wanted report, or retries the failed one, if nothing else is under way. */
  private pump(): void {
    if (this.stopped || this.inFlight !== null || this.retryTimer !== null) return;
    let report: Report | null = null;
    if (this.pendingReason !== null) {
      if (this.retryReport !== null) {
        this.counters.superseded += 1;
        this.retryReport = null;
      }
      const reason = this.pendingReason;
      this.pendingReason = null;
      report = this.build(reason);
      if (report === null) return;
    } else if (this.retryReport !== null) {
      report = this.retryReport;
      this.retryReport = null;
    } else {
      return;
    }
    const controller = new AbortController();
    this.inFlight = controller;
    this.inFlightDone = this.send(report, controller).then(
      () => undefined,
      (err: unknown) => this.log.error({ err }, "report loop failed unexpectedly"),
    );
  }

  private build(reason: string): Report | null {
    let payload: ReportPayload;
    try {
      payload = this.opts.snapshot();
    } catch (err) {
      this.log.error({ err, reason }, "building the report snapshot failed; report skipped");
      return null;
    }
    this.sequence += 1;
    this.counters.built = this.sequence;
    return {
      HostId: this.opts.hostId,
      Epoch: this.opts.epoch,
      Sequence: this.sequence,
      Reason: reason,
      Superseded: this.counters.superseded,
      Timestamp: new Date().toISOString(),
      HostResource: payload.HostResource,
      Instances: payload.Instances,
      ...(payload.StoragePools ? { StoragePools: payload.StoragePools } : {}),
      ...(payload.Orphans ? { Orphans: payload.Orphans } : {}),
      ...(payload.PowerRestore ? { PowerRestore: payload.PowerRestore } : {}),
      ...(payload.Alarms ? { Alarms: payload.Alarms } : {}),
    };
  }

  private async send(report: Report, controller: AbortController): Promise<void> {
    let error: string | null = null;
    if (this.opts.controllerUrl === "") {
      // The scheduled report in full at debug; one on a change at info, without the instance
      // list: with 1,000 instances that list is a 1 MB line, on every state change.
      if (report.Reason === SCHEDULED_REASON) this.log.debug({ report }, "report (no controller configured)");
      else {
        const { Instances, ...head } = report;
        this.log.info({ report: { ...head, InstanceCount: Instances.length } }, "report (no controller configured)");
      }
    } else {
      error = await this.post(report, controller);
    }
    this.inFlight = null;
    if (this.stopped) return;

    if (error === null) {
      if (this.failures > 0) this.log.info({ sequence: report.Sequence, failures: this.failures }, "controller reachable again");
      this.failures = 0;
      this.counters.sent += 1;
      this.counters.lastSentSequence = report.Sequence;
      this.counters.lastError = null;
      this.opts.onDelivered?.(report);
      this.pump();
      return;
    }

    this.counters.failedAttempts += 1;
    this.counters.lastError = error;
    this.failures += 1;
    const delay = this.retryDelay();
    // Log a failure streak once at warn, then quietly, so a dead controller does not flood the log.
    const fields = { sequence: report.Sequence, reason: report.Reason, error, retryInMs: delay, failures: this.failures };
    if (this.failures === 1) this.log.warn(fields, "report to the controller failed; retrying");
    else this.log.debug(fields, "report to the controller failed again; retrying");
    this.retryReport = report; // superseded in pump() if a newer report is wanted by then
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.pump();
    }, delay);
  }

  /** Exponential backoff with equal jitter: half the step fixed, half random. */
  private retryDelay(): number {
    const step = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(this.failures - 1, 30));
    return Math.round(step / 2 + (this.random() * step) / 2);
  }

  /** POSTs one report; resolves to null on a 2xx, else to a description of the failure. */
  private async post(report: Report, controller: AbortController): Promise<string | null> {
    const timer = setTimeout(() => controller.abort(new Error(`timed out after ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    try {
      const response = await this.fetchImpl(this.opts.controllerUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(report),
        signal: controller.signal,
      });
      // Drain the body so the connection can be reused.
      await response.arrayBuffer().catch(() => undefined);
      return response.ok ? null : `HTTP ${response.status}`;
    } catch (err) {
      if (controller.signal.aborted) {
        const why = controller.signal.reason;
        return why instanceof Error ? why.message : "aborted";
      }
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      return `${(err as Error).message}${cause?.code ? ` (${cause.code})` : cause?.message ? ` (${cause.message})` : ""}`;
    } finally {
      clearTimeout(timer);
    }
  }
}
