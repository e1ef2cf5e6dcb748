/**
 * Filesystem usage from inside the guest, where its guest agent answers (qemu-guest-agent's
 * `guest-get-fsinfo`: used and total bytes of every mounted filesystem), for the monitor's
 * CvmDiskUsage and CvmDiskUsageMax (metrics.ts).
 *
 * Cost and safety, apart from the bulk statistics call (monitor.ts):
 * - not every sample: a round every `intervalMs` (config monitor_guest_fs_interval_s, 60 s
 *   by default; 0 turns it off), since filesystems fill slowly and each instance costs one
 *   `virsh qemu-agent-command`, where the bulk call serves all instances at once;
 * - only RUNNING instances, at most `concurrency` calls at a time, each with a deadline
 *   (`timeoutS`, passed to libvirt as the agent's timeout, and the same again here, after
 *   which the call is given up on: a hung guest agent or libvirt delays nobody's sample);
 * - an instance whose agent did not answer is asked again only after `retryMs` (5 min), or
 *   at once when libvirt says its agent connected (agent-lifecycle event): a guest without an
 *   agent (the tiny test guest, an image without qemu-guest-agent) costs one failed call
 *   every 5 minutes, which libvirt answers at once ("not connected").
 * The monitor's sample takes the last reading (fill()) while it is at most two rounds plus a
 * deadline old: the value is held between readings, and a guest whose agent stopped
 * answering has no point (NaN) rather than a stale one.
 */
import { METRIC_INDEX } from "./metrics.js";

/** One filesystem as guest-get-fsinfo reports it (only those with sizes are kept). */
export interface GuestFs {
  /** The guest's device name (`vda1`), or the mount point when there is none. */
  name: string;
  mountpoint: string;
  type: string;
  usedBytes: number;
  totalBytes: number;
}

/** What one reading gives the monitor. */
export interface GuestFsUsage {
  /** Used over total of all filesystems, each device once, %. */
  usage: number;
  /** The fullest filesystem's used over total, %. */
  fullest: number;
  fullestMountpoint: string;
  usedBytes: number;
  totalBytes: number;
  filesystems: number;
}

const isSize = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x) && x >= 0;

/**
 * guest-get-fsinfo's `return` (an array of {name, mountpoint, type, used-bytes, total-bytes,
 * disk}) → the filesystems with sizes. A filesystem without them (an older agent, a
 * filesystem statvfs failed on) is left out; anything else than an array is an error.
 */
export function parseGuestFsInfo(ret: unknown): GuestFs[] {
  if (!Array.isArray(ret)) throw new Error(`guest-get-fsinfo answered ${ret === null ? "null" : typeof ret}, not a list`);
  const out: GuestFs[] = [];
  for (const item of ret as unknown[]) {
    if (typeof item !== "object" || item === null) continue;
    const f = item as Record<string, unknown>;
    const used = f["used-bytes"];
    const total = f["total-bytes"];
    if (!isSize(used) || !isSize(total) || total === 0) continue;
    const mountpoint = typeof f.mountpoint === "string" ? f.mountpoint : "";
    const name = typeof f.name === "string" && f.name !== "" ? f.name : mountpoint;
    out.push({ name, mountpoint, type: typeof f.type === "string" ? f.type : "", usedBytes: used, totalBytes: total });
  }
  return out;
}

/**
 * The usage over the filesystems; a device mounted at several places (bind mounts) counts
 * once, at its shortest mount point. Undefined when there is no filesystem with sizes.
 */
export function guestFsUsage(list: readonly GuestFs[]): GuestFsUsage | undefined {
  const byDevice = new Map<string, GuestFs>();
  for (const f of list) {
    const seen = byDevice.get(f.name);
    if (!seen || f.mountpoint.length < seen.mountpoint.length) byDevice.set(f.name, f);
  }
  if (byDevice.size === 0) return undefined;
  let used = 0;
  let total = 0;
  let fullest: GuestFs | undefined;
  for (const f of byDevice.values()) {
    used += f.usedBytes;
    total += f.totalBytes;
    if (!fullest || f.usedBytes / f.totalBytes > fullest.usedBytes / fullest.totalBytes) fullest = f;
  }
  return {
    usage: Math.min(100, (used / total) * 100),
    fullest: Math.min(100, (fullest!.usedBytes / fullest!.totalBytes) * 100),
    fullestMountpoint: fullest!.mountpoint,
    usedBytes: used,
    totalBytes: total,
    filesystems: byDevice.size,
  };
}

export interface GuestFsLogger {
  info(obj: Record<string, unknown>, msg?: string): void;
  debug?(obj: Record<string, unknown>, msg?: string): void;
}

export interface GuestFsCollectorOptions {
  /** guest-get-fsinfo through the instance's guest agent (its `return`), libvirt's agent timeout `timeoutS`. */
  query: (instanceId: string, timeoutS: number) => Promise<unknown>;
  /** The RUNNING instances now. */
  running: () => Iterable<string>;
  /** Between rounds, ms (config monitor_guest_fs_interval_s × 1000). */
  intervalMs: number;
  /** Deadline of one call, seconds. Default 5. */
  timeoutS?: number;
  /** Calls at a time. Default 4. */
  concurrency?: number;
  /** After a failed call, the instance is asked again after this long, ms (or when its agent connects). Default 300 000. */
  retryMs?: number;
  logger: GuestFsLogger;
  /** Clock, ms since the epoch. */
  now?: () => number;
}

interface InstanceFs {
  reading?: { at: number; usage: GuestFsUsage };
  /** No call before this time (ms since the epoch). */
  notBefore: number;
  inFlight: boolean;
  /** The last call failed (logged once per streak). */
  failing: boolean;
}

export class GuestFsCollector {
  private readonly o: GuestFsCollectorOptions;
  private readonly now: () => number;
  private readonly timeoutS: number;
  private readonly state = new Map<string, InstanceFs>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  /** Calls made, answered, failed (tests, the README's cost figure). */
  readonly counts = { calls: 0, answered: 0, failed: 0 };

  constructor(o: GuestFsCollectorOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
    this.timeoutS = o.timeoutS ?? 5;
  }

  /** The first round soon after the start (the instances are running by then), then every interval. */
  start(firstDelayMs = 5_000): void {
    if (this.timer || this.stopped) return;
    const next = (ms: number) => {
      this.timer = setTimeout(() => {
        if (this.stopped) return;
        if (!this.round) this.round = this.runRound().finally(() => (this.round = undefined));
        next(this.o.intervalMs);
      }, ms);
      this.timer.unref();
    };
    next(Math.min(firstDelayMs, this.o.intervalMs));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.round?.catch(() => undefined);
  }

  /** libvirt events (agent/instances/sync.ts onEvent): an agent that connected is asked at the next round. */
  onEvent(event: { domain: string; kind: string; event: string }): void {
    if (event.kind !== "agent-lifecycle") return;
    const s = this.state.get(event.domain);
    if (!s) return;
    if (event.event === "connected") s.notBefore = 0;
    else if (event.event === "disconnected") delete s.reading;
  }

  /** The last reading of an instance while it is fresh, else undefined. */
  latest(instanceId: string): (GuestFsUsage & { at: number }) | undefined {
    const r = this.state.get(instanceId)?.reading;
    if (!r || this.now() - r.at > this.freshForMs()) return undefined;
    return { ...r.usage, at: r.at };
  }

  /** The monitor's hook: puts the last fresh reading into a sample's values (left NaN without one). */
  fill(instanceId: string, values: Float64Array): void {
    const r = this.latest(instanceId);
    if (!r) return;
    values[METRIC_INDEX.CvmDiskUsage] = r.usage;
    values[METRIC_INDEX.CvmDiskUsageMax] = r.fullest;
  }

  /** One round: every RUNNING instance that is due, `concurrency` at a time (exported for tests). */
  async runRound(): Promise<void> {
    const running = new Set(this.o.running());
    for (const id of this.state.keys()) if (!running.has(id)) this.state.delete(id);
    const due: string[] = [];
    const now = this.now();
    for (const id of running) {
      let s = this.state.get(id);
      if (!s) this.state.set(id, (s = { notBefore: 0, inFlight: false, failing: false }));
      if (!s.inFlight && s.notBefore <= now) due.push(id);
    }
    const workers = Array.from({ length: Math.min(this.o.concurrency ?? 4, due.length) }, async () => {
      for (let id = due.shift(); id !== undefined && !this.stopped; id = due.shift()) await this.ask(id);
    });
    await Promise.all(workers);
  }

  private freshForMs(): number {
    return 2 * this.o.intervalMs + this.timeoutS * 1000;
  }

  private async ask(id: string): Promise<void> {
    const s = this.state.get(id);
    if (!s) return;
    s.inFlight = true;
    this.counts.calls++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutS} s`)), (this.timeoutS + 1) * 1000);
      });
      const usage = guestFsUsage(parseGuestFsInfo(await Promise.race([this.o.query(id, this.timeoutS), deadline])));
      if (!usage) throw new Error("the guest agent reported no filesystem with sizes");
      s.reading = { at: this.now(), usage };
      s.notBefore = 0;
      this.counts.answered++;
      if (s.failing) this.o.logger.info({ instanceId: id }, "guest filesystems: the guest agent answers again");
      s.failing = false;
    } catch (error) {
      this.counts.failed++;
      delete s.reading;
      s.notBefore = this.now() + (this.o.retryMs ?? 300_000);
      // Most guests without an agent fail here every few minutes: debug, and once per streak.
      if (!s.failing) this.o.logger.debug?.({ instanceId: id, err: error instanceof Error ? error.message.slice(0, 200) : String(error) }, "guest filesystems: no answer from the guest agent");
      s.failing = true;
    } finally {
      clearTimeout(timer);
      s.inFlight = false;
    }
  }
}
