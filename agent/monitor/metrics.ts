/**
 * The metric catalogue (Monitor API 2018-07-24, Namespace QCE/CVM, dimension InstanceId)
 * and how each value is computed from two bulk counter readings of one domain (pure).
 *
 * Stored metrics are the columns of the series store (store.ts), in this order; the order
 * is part of the on-disk format (a new metric goes at the end, and bumps nothing: older
 * files are re-created, see store.ts FORMAT).
 *
 * What the host can honestly compute, and from what:
 * - CPUUsage: the guest's vCPU time over wall time × vCPUs (libvirt vcpu.N.time), %.
 *   The public service reads it from an agent in the guest; the host's figure is the same
 *   quantity seen from outside (a guest's idle loop is not counted: an idle vCPU halts).
 * - BaseCpuUsage: the QEMU process's host CPU time (cpu.time: vCPUs + emulator + I/O
 *   threads) over wall time × vCPUs, %, what the public service computes host-side.
 * - CpuDelay (this agent's extension): time the vCPUs were runnable but waited for a host
 *   CPU (vcpu.N.delay, schedstat) over wall time × vCPUs, %: the noisy-neighbour signal.
 * - MemUsed / MemUsage: from the balloon driver's guest statistics, available − usable
 *   (usable is the guest's MemAvailable: free plus reclaimable cache), so buffers and cache
 *   are excluded as the API defines; absent when the guest does not report them.
 * - Lan*: NIC bytes and packets per second, from the guest's side. All traffic is intranet
 *   until the ENI issue splits it by subnet: Wan* are 0 wherever Lan* has a point.
 * - LanInerrpkg / LanOuterrpkg (extension): errors plus drops per second.
 * - DiskRead/WriteTraffic (KB/s), DiskRead/WriteIops (requests/s), DiskIoAwait (ms per
 *   completed request, reads, writes and flushes), over all of the instance's disks.
 * - CvmDiskUsage (the seeds' disk_usage, older docs' DiskUsage): used over total of the guest's
 *   filesystems, and CvmDiskUsageMax (extension): the fullest one's, %, both from the guest
 *   agent's guest-get-fsinfo where it answers (guest-fs.ts; not computeValues: NaN here).
 * Not computed (refused with InvalidParameterValue naming the metric): metrics that need an
 * agent inside the guest (CpuLoadavg, TcpCurrEstab, TimeOffset).
 */
import type { DomainCounters } from "../../drivers/libvirt/domstats.js";

export const PERIODS = [10, 60, 300, 3600, 86400] as const;
export type Period = (typeof PERIODS)[number];

export const STORED_METRICS = [
  "CPUUsage",
  "BaseCpuUsage",
  "CpuDelay",
  "MemUsed",
  "MemUsage",
  "LanOuttraffic",
  "LanIntraffic",
  "LanOutpkg",
  "LanInpkg",
  "LanOuterrpkg",
  "LanInerrpkg",
  "DiskReadTraffic",
  "DiskWriteTraffic",
  "DiskReadIops",
  "DiskWriteIops",
  "DiskIoAwait",
  "CvmDiskUsage",
  "CvmDiskUsageMax",
] as const;
export type StoredMetric = (typeof STORED_METRICS)[number];

/** Metrics answered from another stored metric's timestamps (all traffic is intranet today). */
export const ZERO_METRICS = { WanOuttraffic: "LanOuttraffic", WanIntraffic: "LanIntraffic", WanOutpkg: "LanOutpkg", WanInpkg: "LanInpkg" } as const;
export type ZeroMetric = keyof typeof ZERO_METRICS;

export type MetricName = StoredMetric | ZeroMetric;

export interface MetricInfo {
  name: MetricName;
  unit: string;
  unitCname: string;
  /** Statistic of the rolled-up periods (300 s and longer), as DescribeBaseMetrics shows it. */
  rollStat: "avg" | "max";
  en: string;
  zh: string;
  cname: string;
}

const M = (name: MetricName, unit: string, unitCname: string, rollStat: "avg" | "max", en: string, zh: string, cname: string): MetricInfo =>
  Object.freeze({ name, unit, unitCname, rollStat, en, zh, cname });

export const METRICS: readonly MetricInfo[] = Object.freeze([
  M("CPUUsage", "%", "%", "max", "CPU utilization of the guest's vCPUs (host-side)", "CPU利用率", "CPU利用率"),
  M("BaseCpuUsage", "%", "%", "max", "Host CPU used by the instance's QEMU process per vCPU", "基础CPU使用率", "基础CPU使用率"),
  M("CpuDelay", "%", "%", "max", "Time the vCPUs waited for a host CPU (extension of this agent)", "vCPU等待宿主机CPU时间占比", "vCPU调度等待"),
  M("MemUsed", "MB", "MB", "max", "Used memory excluding buffers and cache (balloon statistics)", "内存使用量", "内存使用量"),
  M("MemUsage", "%", "%", "max", "Used memory over total, excluding buffers and cache", "内存利用率", "内存利用率"),
  M("LanOuttraffic", "Mbps", "Mbps", "avg", "Private network outbound bandwidth", "内网出带宽", "内网出带宽"),
  M("LanIntraffic", "Mbps", "Mbps", "avg", "Private network inbound bandwidth", "内网入带宽", "内网入带宽"),
  M("LanOutpkg", "packets/s", "个/秒", "avg", "Private network outbound packets", "内网出包量", "内网出包量"),
  M("LanInpkg", "packets/s", "个/秒", "avg", "Private network inbound packets", "内网入包量", "内网入包量"),
  M("LanOuterrpkg", "packets/s", "个/秒", "avg", "Outbound packets in error or dropped (extension of this agent)", "内网出错误包量", "内网出错误包量"),
  M("LanInerrpkg", "packets/s", "个/秒", "avg", "Inbound packets in error or dropped (extension of this agent)", "内网入错误包量", "内网入错误包量"),
  M("DiskReadTraffic", "KB/s", "KB/s", "avg", "Disk read throughput, all disks", "磁盘读流量", "磁盘读流量"),
  M("DiskWriteTraffic", "KB/s", "KB/s", "avg", "Disk write throughput, all disks", "磁盘写流量", "磁盘写流量"),
  M("DiskReadIops", "count/s", "次/秒", "avg", "Disk read requests per second, all disks", "磁盘读IOPS", "磁盘读IOPS"),
  M("DiskWriteIops", "count/s", "次/秒", "avg", "Disk write requests per second, all disks", "磁盘写IOPS", "磁盘写IOPS"),
  M("DiskIoAwait", "ms", "ms", "max", "Average time of a completed disk request", "磁盘IO等待时间", "磁盘IO等待时间"),
  M("CvmDiskUsage", "%", "%", "max", "Used over total capacity of the guest's filesystems (guest agent)", "磁盘利用率", "磁盘利用率"),
  M("CvmDiskUsageMax", "%", "%", "max", "Used over total capacity of the guest's fullest filesystem (guest agent; extension of this agent)", "最满文件系统利用率", "最满文件系统利用率"),
  M("WanOuttraffic", "Mbps", "Mbps", "avg", "Public network outbound bandwidth (0: no public network yet)", "外网出带宽", "外网出带宽"),
  M("WanIntraffic", "Mbps", "Mbps", "avg", "Public network inbound bandwidth (0: no public network yet)", "外网入带宽", "外网入带宽"),
  M("WanOutpkg", "packets/s", "个/秒", "avg", "Public network outbound packets (0: no public network yet)", "外网出包量", "外网出包量"),
  M("WanInpkg", "packets/s", "个/秒", "avg", "Public network inbound packets (0: no public network yet)", "外网入包量", "外网入包量"),
]);

const BY_KEY = new Map(METRICS.map((m) => [m.name.toLowerCase(), m]));
/** Names the public docs spell otherwise, and the seeds' snake_case names that do not fold. */
const ALIASES: Readonly<Record<string, MetricName>> = { cpuusage: "CPUUsage", diskioawait: "DiskIoAwait", diskusage: "CvmDiskUsage" };

/**
 * The catalogue entry for a name as a caller spells it: case-insensitive, with the seeds'
 * snake_case accepted (`cpu_usage`, `lan_outtraffic`, `disk_io_await`): underscores are
 * dropped before comparing. Undefined when the host does not compute it.
 */
export function findMetric(spelled: string): MetricInfo | undefined {
  const key = spelled.replace(/_/g, "").toLowerCase();
  const alias = ALIASES[key];
  return alias ? BY_KEY.get(alias.toLowerCase()) : BY_KEY.get(key);
}

export const METRIC_COUNT = STORED_METRICS.length;
export const METRIC_INDEX: Readonly<Record<StoredMetric, number>> = Object.freeze(
  Object.fromEntries(STORED_METRICS.map((m, i) => [m, i])) as Record<StoredMetric, number>,
);

/** A domain's counters and when they were read (ms since the epoch). */
export interface Reading {
  at: number;
  counters: DomainCounters;
}

const sum = <T>(items: readonly T[], f: (x: T) => number) => items.reduce((a, x) => a + f(x), 0);

/** Non-negative rate per second, or NaN when a counter went backwards (QEMU restarted). */
function rate(now: number, before: number, seconds: number): number {
  const d = now - before;
  return d < 0 ? Number.NaN : d / seconds;
}

/**
 * The stored metrics of one interval, from the previous and the current reading of one
 * domain (NaN where a value cannot be computed). Pure.
 */
export function computeValues(prev: Reading, cur: Reading): Float64Array {
  const v = new Float64Array(METRIC_COUNT).fill(Number.NaN);
  const dt = (cur.at - prev.at) / 1000;
  if (!(dt > 0)) return v;
  const a = prev.counters;
  const b = cur.counters;
  const vcpus = b.vcpus ?? a.vcpus;
  const pct = (x: number | undefined, y: number | undefined) =>
    x !== undefined && y !== undefined && vcpus ? Math.min(100, Math.max(0, (rate(y, x, dt) / 1e9 / vcpus) * 100)) : Number.NaN;
  v[METRIC_INDEX.CPUUsage] = pct(a.vcpuTimeNs, b.vcpuTimeNs);
  v[METRIC_INDEX.BaseCpuUsage] = pct(a.cpuTimeNs, b.cpuTimeNs);
  v[METRIC_INDEX.CpuDelay] = pct(a.vcpuDelayNs, b.vcpuDelayNs);
  const mem = memoryValues(b);
  v[METRIC_INDEX.MemUsed] = mem.usedMB;
  v[METRIC_INDEX.MemUsage] = mem.usage;
  // NICs and disks are matched by name: one hot-plugged or removed meanwhile is left out.
  const nicPairs = b.nics.flatMap((n) => {
    const p = a.nics.find((x) => x.name === n.name);
    return p ? [[p, n] as const] : [];
  });
  if (nicPairs.length > 0 || (a.nics.length === 0 && b.nics.length === 0)) {
    const r = (f: (n: (typeof b.nics)[number]) => number) => sum(nicPairs, ([p, n]) => rate(f(n), f(p), dt));
    v[METRIC_INDEX.LanOuttraffic] = (r((n) => n.txBytes) * 8) / 1e6;
    v[METRIC_INDEX.LanIntraffic] = (r((n) => n.rxBytes) * 8) / 1e6;
    v[METRIC_INDEX.LanOutpkg] = r((n) => n.txPkts);
    v[METRIC_INDEX.LanInpkg] = r((n) => n.rxPkts);
    v[METRIC_INDEX.LanOuterrpkg] = r((n) => n.txErrs + n.txDrop);
    v[METRIC_INDEX.LanInerrpkg] = r((n) => n.rxErrs + n.rxDrop);
  }
  const blockPairs = b.blocks.flatMap((n) => {
    const p = a.blocks.find((x) => x.name === n.name);
    return p ? [[p, n] as const] : [];
  });
  if (blockPairs.length > 0) {
    const d = (f: (n: (typeof b.blocks)[number]) => number) => sum(blockPairs, ([p, n]) => f(n) - f(p));
    const rdBytes = d((n) => n.rdBytes);
    const wrBytes = d((n) => n.wrBytes);
    const rdReqs = d((n) => n.rdReqs);
    const wrReqs = d((n) => n.wrReqs);
    const flReqs = d((n) => n.flReqs);
    const timesNs = d((n) => n.rdTimesNs + n.wrTimesNs + n.flTimesNs);
    const ok = rdBytes >= 0 && wrBytes >= 0 && rdReqs >= 0 && wrReqs >= 0 && flReqs >= 0 && timesNs >= 0;
    if (ok) {
      v[METRIC_INDEX.DiskReadTraffic] = rdBytes / 1024 / dt;
      v[METRIC_INDEX.DiskWriteTraffic] = wrBytes / 1024 / dt;
      v[METRIC_INDEX.DiskReadIops] = rdReqs / dt;
      v[METRIC_INDEX.DiskWriteIops] = wrReqs / dt;
      const reqs = rdReqs + wrReqs + flReqs;
      v[METRIC_INDEX.DiskIoAwait] = reqs > 0 ? timesNs / reqs / 1e6 : 0;
    }
  }
  return v;
}

/** MemUsed (MB) and MemUsage (%) from one reading's balloon statistics; NaN when the guest reports none. */
export function memoryValues(c: DomainCounters): { usedMB: number; usage: number } {
  const total = c.balloonAvailableKiB;
  const usable = c.balloonUsableKiB ?? c.balloonUnusedKiB;
  if (total === undefined || usable === undefined || total <= 0) return { usedMB: Number.NaN, usage: Number.NaN };
  const used = Math.max(0, total - usable);
  return { usedMB: used / 1024, usage: (used / total) * 100 };
}
