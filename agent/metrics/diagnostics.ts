/**
 * The instance self-check (issue 13 part 6; this agent's extension: the public APIs have no
 * action for the console's feature). CreateInstanceDiagnosticReports runs every check of
 * each instance named, from what the host already holds (the monitor's samples and series,
 * libvirt's events as the agent saw them, the serial console log file) plus, for the
 * filesystems, one guest agent call with a deadline; DescribeInstanceDiagnosticReports
 * reads the reports back.
 *
 * Each check has a stable code and a status: OK, WARNING, FAULT, or UNKNOWN when the host
 * cannot observe it (the Reason says why). The rules are pure functions of their inputs
 * (exported for the unit tests); DiagnosticsService gathers the inputs.
 */
import { open } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import type { DomainEvent } from "../../drivers/libvirt/types.js";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { DomainError } from "../core/errors.js";
import { METRIC_INDEX } from "../monitor/metrics.js";
import type { LatestSample, MonitorReader } from "../monitor/monitor.js";
import type { InstanceState } from "../model.js";

export type CheckStatus = "OK" | "WARNING" | "FAULT" | "UNKNOWN";

export const CHECK_CODES = [
  "IO_HANG",
  "FS_READONLY",
  "FS_FULL",
  "FS_INODES_EXHAUSTED",
  "KERNEL_PANIC",
  "HUNG_TASK",
  "SOFT_LOCKUP",
  "RECENT_REBOOT",
  "INSTANCE_SHUTDOWN",
  "HIGH_CPU",
  "HIGH_MEMORY",
  "NIC_ERRORS",
] as const;
export type CheckCode = (typeof CHECK_CODES)[number];

export interface CheckResult {
  Code: CheckCode;
  Status: CheckStatus;
  Reason: string;
}

/** One sample of an instance, as the I/O hang and NIC rules need it. */
export interface ProgressPoint {
  at: number;
  /** Sum of the vCPUs' time, ns; undefined when libvirt did not report it. */
  vcpuTimeNs: number | undefined;
  /** Completed disk requests (reads, writes, flushes) over all disks; undefined without block statistics. */
  diskReqs: number | undefined;
  nicErrs: number;
  nicDrops: number;
  nicPkts: number;
}

/** How long nothing may move before a running guest counts as hung. */
export const HANG_AFTER_MS = 30_000;
/** The window of the sustained CPU / memory rules and their thresholds (%). */
export const SUSTAINED_WINDOW_S = 300;
export const HIGH_CPU_PERCENT = 90;
export const HIGH_MEMORY_PERCENT = 95;
export const REBOOT_WINDOW_MS = 12 * 3600_000;

const ok = (Code: CheckCode, Reason: string): CheckResult => ({ Code, Status: "OK", Reason });
const warn = (Code: CheckCode, Reason: string): CheckResult => ({ Code, Status: "WARNING", Reason });
const fault = (Code: CheckCode, Reason: string): CheckResult => ({ Code, Status: "FAULT", Reason });
const unknown = (Code: CheckCode, Reason: string): CheckResult => ({ Code, Status: "UNKNOWN", Reason });

/**
 * I/O hang. The host sees completed requests only (libvirt's block statistics have no
 * in-flight count), so: a running guest whose vCPUs and disks have not moved at all for
 * HANG_AFTER_MS is hung (its I/O with it: FAULT); a running guest whose block statistics
 * libvirt does not return (QEMU's monitor does not answer, e.g. a stopped QEMU) is UNKNOWN.
 */
export function checkIoHang(running: boolean, points: readonly ProgressPoint[], now: number, intervalMs: number): CheckResult {
  const C = "IO_HANG";
  if (!running) return ok(C, "the instance is not running");
  const recent = points.filter((p) => now - p.at <= Math.max(HANG_AFTER_MS * 2 + intervalMs, intervalMs * 6));
  const last = recent.at(-1);
  if (!last || now - last.at > intervalMs * 3) return unknown(C, "the monitor has no recent sample of this instance (its statistics call failed or skipped it)");
  // The newest point at least HANG_AFTER_MS before the last (counters only grow: equal ends mean nothing moved between).
  const first = [...recent].reverse().find((p) => last.at - p.at >= HANG_AFTER_MS);
  const frozenCpu = first !== undefined && first.vcpuTimeNs !== undefined && last.vcpuTimeNs !== undefined && last.vcpuTimeNs === first.vcpuTimeNs;
  if (frozenCpu && first!.diskReqs === last.diskReqs) {
    return fault(C, `no vCPU time and no disk request completed for ${Math.round((last.at - first!.at) / 1000)} s while libvirt says running: the guest (its QEMU) makes no progress`);
  }
  if (last.diskReqs === undefined) return unknown(C, "libvirt returned no block statistics for this instance (QEMU's monitor does not answer: the process may be stopped or hung)");
  if (first === undefined) return unknown(C, `fewer than ${HANG_AFTER_MS / 1000} s of samples so far`);
  return ok(C, "the guest's vCPUs and disks make progress");
}

/** Kernel panic: libvirt's crash event (pvpanic) in the last 12 hours, the domain's crashed state, or the panic line on this boot's console. */
export function checkKernelPanic(crashes: readonly DomainEvent[], stateCrashed: boolean, consolePanic: string | undefined): CheckResult {
  const C = "KERNEL_PANIC";
  if (stateCrashed) return fault(C, "libvirt shows the domain as crashed (the guest signalled a panic)");
  const last = crashes.at(-1);
  if (last) return fault(C, `libvirt reported a guest crash at ${last.at.toISOString()} (${`${last.event} ${last.detail}`.trim()})`);
  if (consolePanic !== undefined) return fault(C, `the serial console shows: ${consolePanic}`);
  return ok(C, "no crash event in the last 12 hours and no panic on this boot's console");
}

/** What the console log of the current boot shows (the text after the kernel's last boot banner). */
export interface ConsoleFindings {
  panic: string | undefined;
  hungTask: string | undefined;
  softLockup: string | undefined;
}

const BOOT_BANNER = /Linux version \d/g;
const PANIC_RE = /Kernel panic - not syncing[^\r\n]*/;
const HUNG_RE = /INFO: task [^\r\n]* blocked for more than \d+ seconds[^\r\n]*/;
const LOCKUP_RE = /(?:BUG: soft lockup|watchdog: BUG: soft lockup|NMI watchdog: BUG: soft lockup)[^\r\n]*/;

export function scanConsole(text: string): ConsoleFindings {
  let start = 0;
  for (const m of text.matchAll(BOOT_BANNER)) start = m.index ?? start;
  const boot = text.slice(start);
  const first = (re: RegExp) => re.exec(boot)?.[0].trim().slice(0, 200);
  return { panic: first(PANIC_RE), hungTask: first(HUNG_RE), softLockup: first(LOCKUP_RE) };
}

export function checkConsole(console: ConsoleFindings | string): CheckResult[] {
  if (typeof console === "string") return [unknown("HUNG_TASK", console), unknown("SOFT_LOCKUP", console)];
  return [
    console.hungTask ? warn("HUNG_TASK", `the serial console shows: ${console.hungTask}`) : ok("HUNG_TASK", "no hung task on this boot's console"),
    console.softLockup ? fault("SOFT_LOCKUP", `the serial console shows: ${console.softLockup}`) : ok("SOFT_LOCKUP", "no soft lockup on this boot's console"),
  ];
}

/** Reboots and restarts in the last 12 hours, from the events the agent saw (since `since`). */
export function checkReboots(reboots: readonly Date[], now: number, since: number): CheckResult {
  const C = "RECENT_REBOOT";
  const recent = reboots.filter((d) => now - d.getTime() <= REBOOT_WINDOW_MS);
  const seen = since > now - REBOOT_WINDOW_MS ? ` (the agent has watched since ${new Date(since).toISOString()})` : "";
  if (recent.length) return warn(C, `${recent.length} reboot(s) in the last 12 hours, last at ${recent.at(-1)!.toISOString()}${seen}`);
  return ok(C, `no reboot in the last 12 hours${seen}`);
}

export function checkShutdown(state: InstanceState): CheckResult {
  const C = "INSTANCE_SHUTDOWN";
  if (state === "STOPPED" || state === "SHUTDOWN") return warn(C, `the instance is ${state}`);
  if (state === "UNKNOWN") return unknown(C, "libvirt is not reachable: the state is unknown");
  return ok(C, `the instance is ${state}`);
}

/** Sustained high usage: every point of the last SUSTAINED_WINDOW_S at 10 s at or over the threshold. */
export function checkSustained(code: "HIGH_CPU" | "HIGH_MEMORY", points: readonly number[], threshold: number, running: boolean): CheckResult {
  const what = code === "HIGH_CPU" ? "CPU" : "memory";
  if (!running) return ok(code, "the instance is not running");
  const finite = points.filter((v) => Number.isFinite(v));
  if (finite.length < 3) return unknown(code, code === "HIGH_MEMORY" ? "too few memory points (the guest's balloon driver may not report statistics)" : "too few points in the last 5 minutes");
  const low = Math.min(...finite);
  const avg = finite.reduce((a, b) => a + b, 0) / finite.length;
  if (low >= threshold) return warn(code, `${what} usage at or over ${threshold} % for the last ${SUSTAINED_WINDOW_S / 60} minutes (average ${avg.toFixed(1)} %)`);
  return ok(code, `${what} usage averaged ${avg.toFixed(1)} % over the last ${SUSTAINED_WINDOW_S / 60} minutes`);
}

/** NIC errors and drops that grew across the samples held (FAULT past 1 % of the packets). */
export function checkNicErrors(points: readonly ProgressPoint[], running: boolean): CheckResult {
  const C = "NIC_ERRORS";
  if (!running) return ok(C, "the instance is not running");
  if (points.length < 2) return unknown(C, "fewer than two samples of the NIC counters");
  const a = points[0]!;
  const b = points.at(-1)!;
  const errs = b.nicErrs - a.nicErrs;
  const drops = b.nicDrops - a.nicDrops;
  const pkts = b.nicPkts - a.nicPkts;
  const span = Math.round((b.at - a.at) / 1000);
  if (errs + drops <= 0) return ok(C, `no NIC error or drop in the last ${span} s`);
  const text = `${errs} error(s) and ${drops} drop(s) over ${pkts} packet(s) in the last ${span} s`;
  return errs + drops > Math.max(1, pkts * 0.01) ? fault(C, text) : warn(C, text);
}

export interface GuestFilesystem {
  mountpoint: string;
  totalBytes: number | undefined;
  usedBytes: number | undefined;
}

/**
 * Filesystems through the guest agent (`virsh guestinfo --filesystem`: guest-get-fsinfo).
 * Its answer carries sizes but neither mount options nor inode counts, so read-only and
 * inodes stay UNKNOWN, saying so.
 */
export function checkFilesystems(fs: readonly GuestFilesystem[] | string): CheckResult[] {
  if (typeof fs === "string") return [unknown("FS_READONLY", fs), unknown("FS_FULL", fs), unknown("FS_INODES_EXHAUSTED", fs)];
  const noOptions = "the guest agent's guest-get-fsinfo reports no mount options";
  const noInodes = "the guest agent's guest-get-fsinfo reports no inode counts";
  const sized = fs.filter((f) => f.totalBytes !== undefined && f.totalBytes > 0 && f.usedBytes !== undefined);
  let full: CheckResult;
  if (!sized.length) full = unknown("FS_FULL", "the guest agent reported no filesystem sizes");
  else {
    const worst = sized.map((f) => ({ f, pct: (f.usedBytes! / f.totalBytes!) * 100 })).sort((x, y) => y.pct - x.pct)[0]!;
    const text = `${worst.f.mountpoint} is ${worst.pct.toFixed(1)} % full`;
    full = worst.pct >= 98 ? fault("FS_FULL", text) : worst.pct >= 90 ? warn("FS_FULL", text) : ok("FS_FULL", `fullest: ${text}`);
  }
  return [unknown("FS_READONLY", noOptions), full, unknown("FS_INODES_EXHAUSTED", noInodes)];
}

/** Parses `virsh guestinfo --filesystem` (fs.N.mountpoint, fs.N.total-bytes, fs.N.used-bytes). */
export function parseGuestFilesystems(text: string): GuestFilesystem[] {
  const byIndex = new Map<string, GuestFilesystem>();
  for (const line of text.split("\n")) {
    const m = /^\s*fs\.(\d+)\.(mountpoint|total-bytes|used-bytes)\s*:\s*(.*?)\s*$/.exec(line);
    if (!m) continue;
    const fs = byIndex.get(m[1]!) ?? { mountpoint: "", totalBytes: undefined, usedBytes: undefined };
    byIndex.set(m[1]!, fs);
    if (m[2] === "mountpoint") fs.mountpoint = m[3]!;
    else if (m[2] === "total-bytes") fs.totalBytes = Number(m[3]);
    else fs.usedBytes = Number(m[3]);
  }
  return [...byIndex.values()];
}

export interface DiagnosticReport {
  ReportId: string;
  InstanceId: string;
  /** FINISHED once every check ran. */
  Status: "FINISHED";
  /** The worst status among the checks. */
  Result: CheckStatus;
  Checks: CheckResult[];
  CreatedTime: string;
}

const RANK: Record<CheckStatus, number> = { OK: 0, UNKNOWN: 1, WARNING: 2, FAULT: 3 };
export function worstOf(checks: readonly CheckResult[]): CheckStatus {
  return checks.reduce<CheckStatus>((w, c) => (RANK[c.Status] > RANK[w] ? c.Status : w), "OK");
}

/** Instances per CreateInstanceDiagnosticReports; reports kept per instance. */
export const MAX_DIAGNOSTIC_INSTANCES = 10;
export const REPORTS_KEPT_PER_INSTANCE = 5;
const EVENTS_KEPT = 32;
/** Samples kept per instance: those of the last POINTS_WINDOW_MS (at least three), at most POINTS_KEPT. */
const POINTS_KEPT = 128;
const POINTS_WINDOW_MS = HANG_AFTER_MS * 2;
const CONSOLE_TAIL_BYTES = 256 * 1024;

export interface DiagnosticsOptions {
  monitor: MonitorReader;
  intervalMs: number;
  /** The instance's CVM state, or undefined when there is no such instance. */
  stateOf: (instanceId: string) => InstanceState | undefined;
  consoleLogPath: (instanceId: string) => string;
  runner: CommandRunner;
  uri: string;
  /** Deadline of the guest agent call, ms. */
  guestAgentTimeoutMs?: number;
  now?: () => number;
}

/** Gathers the inputs (events, points) as they pass and runs the checks on request. */
export class DiagnosticsService {
  private readonly o: DiagnosticsOptions;
  private readonly now: () => number;
  private readonly since: number;
  private readonly events = new Map<string, DomainEvent[]>();
  private readonly points = new Map<string, ProgressPoint[]>();
  private readonly reports = new Map<string, DiagnosticReport[]>();
  private readonly unsubscribe: () => void;

  constructor(o: DiagnosticsOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
    this.since = this.now();
    this.unsubscribe = o.monitor.subscribe((s) => this.onSample(s));
  }

  stop(): void {
    this.unsubscribe();
  }

  /** Every libvirt event the agent saw (InstanceSync's hook); crashes and reboots are kept. */
  onEvent(event: DomainEvent): void {
    const keep = event.kind === "reboot" || (event.kind === "lifecycle" && event.event === "Crashed");
    if (!keep) return;
    const list = this.events.get(event.domain) ?? [];
    list.push(event);
    if (list.length > EVENTS_KEPT) list.shift();
    this.events.set(event.domain, list);
  }

  /** An instance gone (terminated): its history goes too. */
  forget(instanceId: string): void {
    this.events.delete(instanceId);
    this.points.delete(instanceId);
    this.reports.delete(instanceId);
  }

  onSample(sample: LatestSample): void {
    for (const [id, s] of sample.instances) {
      const c = s.counters;
      const blocks = c.blocks.length ? c.blocks.reduce((a, b) => a + b.rdReqs + b.wrReqs + b.flReqs, 0) : undefined;
      const point: ProgressPoint = {
        at: sample.at,
        vcpuTimeNs: c.vcpuTimeNs,
        diskReqs: blocks,
        nicErrs: c.nics.reduce((a, n) => a + n.rxErrs + n.txErrs, 0),
        nicDrops: c.nics.reduce((a, n) => a + n.rxDrop + n.txDrop, 0),
        nicPkts: c.nics.reduce((a, n) => a + n.rxPkts + n.txPkts, 0),
      };
      const list = this.points.get(id) ?? [];
      list.push(point);
      while (list.length > POINTS_KEPT || (list.length > 3 && sample.at - list[0]!.at > POINTS_WINDOW_MS + this.o.intervalMs)) list.shift();
      this.points.set(id, list);
    }
    for (const id of this.points.keys()) if (!sample.instances.has(id)) this.points.delete(id);
  }

  /** Runs every check of each instance; the reports, in the order asked. */
  async create(instanceIds: readonly string[]): Promise<DiagnosticReport[]> {
    const missing = instanceIds.filter((id) => this.o.stateOf(id) === undefined);
    if (missing.length) throw new DomainError("InstanceNotFound", `no such instance on this host: ${missing.join(", ")}`);
    const unique = [...new Set(instanceIds)];
    // The instances at once: each may wait up to the guest agent's deadline.
    const results = await Promise.all(unique.map((id) => this.run(id)));
    const out: DiagnosticReport[] = [];
    for (const [i, id] of unique.entries()) {
      const checks = results[i]!;
      const report: DiagnosticReport = {
        ReportId: `dr-${randomBytes(4).toString("hex")}`,
        InstanceId: id,
        Status: "FINISHED",
        Result: worstOf(checks),
        Checks: checks,
        CreatedTime: new Date(this.now()).toISOString(),
      };
      const kept = this.reports.get(id) ?? [];
      kept.push(report);
      if (kept.length > REPORTS_KEPT_PER_INSTANCE) kept.shift();
      this.reports.set(id, kept);
      out.push(report);
    }
    return out;
  }

  /** Reports kept, newest first, filtered by instance and/or report ID. */
  describe(filter: { instanceIds?: readonly string[]; reportIds?: readonly string[] }): DiagnosticReport[] {
    const all = [...this.reports.values()].flat();
    return all
      .filter((r) => !filter.instanceIds?.length || filter.instanceIds.includes(r.InstanceId))
      .filter((r) => !filter.reportIds?.length || filter.reportIds.includes(r.ReportId))
      .sort((a, b) => b.CreatedTime.localeCompare(a.CreatedTime));
  }

  private async run(id: string): Promise<CheckResult[]> {
    const now = this.now();
    const state = this.o.stateOf(id) ?? "UNKNOWN";
    const latest = this.o.monitor.latest()?.instances.get(id);
    const running = state === "RUNNING";
    const points = this.points.get(id) ?? [];
    const events = (this.events.get(id) ?? []).filter((e) => now - e.at.getTime() <= REBOOT_WINDOW_MS);
    const crashes = events.filter((e) => e.kind === "lifecycle" && e.event === "Crashed");
    const reboots = events.filter((e) => e.kind === "reboot").map((e) => e.at);
    const console = await this.readConsole(id);
    const end = Math.floor(now / 1000);
    const series = (metric: "CPUUsage" | "MemUsage") =>
      this.o.monitor.query({ instanceId: id, metric: METRIC_INDEX[metric], period: 10, start: end - SUSTAINED_WINDOW_S, end }).avg;
    const fs = running ? await this.guestFilesystems(id) : "the instance is not running: the guest agent cannot answer";
    return [
      checkIoHang(running, points, now, this.o.intervalMs),
      ...checkFilesystems(fs),
      checkKernelPanic(crashes, latest?.state === 6, typeof console === "string" ? undefined : console.panic),
      ...checkConsole(console),
      checkReboots(reboots, now, this.since),
      checkShutdown(state),
      checkSustained("HIGH_CPU", series("CPUUsage"), HIGH_CPU_PERCENT, running),
      checkSustained("HIGH_MEMORY", series("MemUsage"), HIGH_MEMORY_PERCENT, running),
      checkNicErrors(points, running),
    ];
  }

  private async readConsole(id: string): Promise<ConsoleFindings | string> {
    const path = this.o.consoleLogPath(id);
    let handle;
    try {
      handle = await open(path, "r");
    } catch (error) {
      return `the serial console log cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"})`;
    }
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, CONSOLE_TAIL_BYTES);
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, size - length);
      return scanConsole(buf.toString("latin1"));
    } finally {
      await handle.close();
    }
  }

  private async guestFilesystems(id: string): Promise<GuestFilesystem[] | string> {
    try {
      const r = await this.o.runner.run(["virsh", "-c", this.o.uri, "guestinfo", "--filesystem", "--", id], {
        timeoutMs: this.o.guestAgentTimeoutMs ?? 5_000,
        allowFailure: true,
      });
      if (r.exitCode !== 0) return `the guest agent did not answer (${(r.stderr.trim().split("\n")[0] ?? "").slice(0, 160)})`;
      return parseGuestFilesystems(r.stdout);
    } catch (error) {
      return `the guest agent did not answer within the deadline (${error instanceof Error ? error.message.slice(0, 120) : "error"})`;
    }
  }
}
