/**
 * Prometheus exposition (issue 13 part 4), built with prom-client on its own registry and
 * served on its own listener (config metrics_listen, default 127.0.0.1:9178; "" = off):
 *
 * - cdh_instance_* {instance_id}: the values of the monitor's last sample and a few raw
 *   counters (MonitorReader.latest(): a scrape never calls libvirt);
 * - cdh_host_*: every HostResource figure, and the host's CPU, memory and disk committed
 *   to instances beside what they actually use;
 * - the agent's health: API requests by action and code with a latency histogram,
 *   operations by kind and outcome, libvirt event lag, reports sent and failed, metadata
 *   requests by tree and status, journal entries open, the collector's own counts, alarms.
 *
 * The hooks (onApiRequest, onOperation, onEvent, onMetadataRequest, onAlarm) are plain
 * function calls from the edges; everything else is read when scraped.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import type * as Prom from "prom-client";
import type { HostResource } from "../capacity.js";
import { METRIC_INDEX, STORED_METRICS, type StoredMetric } from "../monitor/metrics.js";
import type { MonitorReader } from "../monitor/monitor.js";
import type { ReporterStats } from "../reporter.js";
import type { AlarmEvent } from "./alarms.js";

/**
 * The four classes the agent uses, each from its own file: prom-client's index also loads its
 * push gateway, its cluster aggregator and its default metrics (with @opentelemetry/api), about
 * 10 MiB of the agent's memory and 90 ms of its start-up for nothing it uses (bench (c)).
 */
const load = createRequire(import.meta.url);
const Counter = load("prom-client/lib/counter") as typeof Prom.Counter;
const Gauge = load("prom-client/lib/gauge") as typeof Prom.Gauge;
const Histogram = load("prom-client/lib/histogram") as typeof Prom.Histogram;
const Registry = load("prom-client/lib/registry") as typeof Prom.Registry;
type Counter<T extends string = string> = Prom.Counter<T>;
type Histogram<T extends string = string> = Prom.Histogram<T>;

/** The Prometheus name of each stored metric (cdh_instance_<name>). */
export const INSTANCE_METRIC_NAMES: Readonly<Record<StoredMetric, string>> = Object.freeze({
  CPUUsage: "cpu_usage_percent",
  BaseCpuUsage: "base_cpu_usage_percent",
  CpuDelay: "cpu_delay_percent",
  MemUsed: "memory_used_megabytes",
  MemUsage: "memory_usage_percent",
  LanOuttraffic: "lan_out_traffic_mbps",
  LanIntraffic: "lan_in_traffic_mbps",
  LanOutpkg: "lan_out_packets_per_second",
  LanInpkg: "lan_in_packets_per_second",
  LanOuterrpkg: "lan_out_error_packets_per_second",
  LanInerrpkg: "lan_in_error_packets_per_second",
  DiskReadTraffic: "disk_read_kilobytes_per_second",
  DiskWriteTraffic: "disk_write_kilobytes_per_second",
  DiskReadIops: "disk_read_iops",
  DiskWriteIops: "disk_write_iops",
  DiskIoAwait: "disk_io_await_milliseconds",
  CvmDiskUsage: "filesystem_usage_percent",
  CvmDiskUsageMax: "filesystem_usage_max_percent",
});

/** The host's figures a scrape reads (computed from the registry and the pools, no libvirt call). */
export interface HostFigures {
  resource: HostResource;
  /** What instances were given: vCPUs, GiB of memory, GiB of disk promised. */
  committed: { cpu: number; memoryGiB: number; diskGiB: number };
  /** GiB the disk files really take. */
  diskUsedGiB: number;
}

export interface AgentMetricsOptions {
  monitor: MonitorReader;
  host: () => HostFigures;
  reporter?: () => Readonly<ReporterStats>;
  /** Directory of the operation journal (entries open = files there). */
  journalDir?: string;
  /** Recognised API actions; anything else is counted as "other" (a client cannot make labels). */
  isAction: (name: string) => boolean;
  alarmsFiring?: () => number;
}

const TREES = new Set(["latest", "openstack", "meta-data", "user-data"]);

/** The metadata tree a request path belongs to (bounded label set). */
export function metadataTreeOf(target: string): string {
  const first = target.split("?")[0]!.split("/").filter((s) => s !== "")[0] ?? "";
  if (TREES.has(first)) return first;
  if (/^\d{4}-\d{2}-\d{2}$/.test(first)) return "ec2-dated";
  return "other";
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly apiRequests: Counter<"action" | "code">;
  private readonly apiLatency: Histogram<"action">;
  private readonly operations: Counter<"kind" | "outcome">;
  private readonly eventLag: Histogram;
  private readonly metadataRequests: Counter<"tree" | "status">;
  private readonly alarmEvents: Counter<"metric" | "state">;
  private readonly o: AgentMetricsOptions;

  constructor(o: AgentMetricsOptions) {
    this.o = o;
    const registers = [this.registry];
    this.apiRequests = new Counter({ name: "cdh_api_requests_total", help: "API requests answered, by action and code (Success for a success)", labelNames: ["action", "code"], registers });
    this.apiLatency = new Histogram({
      name: "cdh_api_request_duration_seconds",
      help: "Time from a request's arrival to its answer, by action",
      labelNames: ["action"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.operations = new Counter({ name: "cdh_operations_total", help: "Instance operations finished, by kind (action) and outcome (SUCCESS, FAILED)", labelNames: ["kind", "outcome"], registers });
    this.eventLag = new Histogram({
      name: "cdh_libvirt_event_lag_seconds",
      help: "Time from libvirt's timestamp of a domain event to the agent handling it",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
    this.metadataRequests = new Counter({ name: "cdh_metadata_requests_total", help: "Metadata requests answered, by tree and HTTP status", labelNames: ["tree", "status"], registers });
    this.alarmEvents = new Counter({ name: "cdh_alarm_events_total", help: "Alarm events, by metric and state (FIRING, RESOLVED)", labelNames: ["metric", "state"], registers });
    const self = this;

    new Gauge({
      name: "cdh_alarms_firing",
      help: "Alarms firing now (instance × rule)",
      registers,
      collect() {
        this.set(self.o.alarmsFiring?.() ?? 0);
      },
    });

    // Per-instance values of the last sample; the first family's collect fills the others
    // (a registry collects in registration order).
    new Gauge({
      name: "cdh_monitor_instances",
      help: "Instances in the monitor's last sample",
      registers,
      collect() {
        const status = self.o.monitor.status();
        collector.reset();
        collector.set({ figure: "samples" }, status.samples);
        collector.set({ figure: "missed" }, status.missed);
        collector.set({ figure: "overruns" }, status.overruns);
        if (status.lastDurationMs !== undefined) collector.set({ figure: "last_duration_ms" }, status.lastDurationMs);
        const sample = self.o.monitor.latest();
        for (const g of instanceGauges) g.gauge.reset();
        up.reset();
        vcpus.reset();
        for (const g of Object.values(raw)) g.reset();
        if (!sample) return void this.set(0);
        latestAt.set(sample.at / 1000);
        this.set(sample.instances.size);
        for (const [id, s] of sample.instances) {
          const labels = { instance_id: id };
          for (const g of instanceGauges) {
            const v = s.values[g.index];
            if (v !== undefined && Number.isFinite(v)) g.gauge.set(labels, v);
          }
          if (s.state !== undefined) up.set(labels, s.state);
          const c = s.counters;
          if (c.vcpus !== undefined) vcpus.set(labels, c.vcpus);
          if (c.vcpuTimeNs !== undefined) raw.cpu.inc(labels, c.vcpuTimeNs / 1e9);
          raw.rx.inc(labels, c.nics.reduce((a, n) => a + n.rxBytes, 0));
          raw.tx.inc(labels, c.nics.reduce((a, n) => a + n.txBytes, 0));
          raw.rd.inc(labels, c.blocks.reduce((a, b) => a + b.rdBytes, 0));
          raw.wr.inc(labels, c.blocks.reduce((a, b) => a + b.wrBytes, 0));
        }
      },
    });

    const latestAt = new Gauge({ name: "cdh_monitor_last_sample_timestamp_seconds", help: "When the monitor's last bulk sample was taken", registers });
    const collector = new Gauge({ name: "cdh_monitor_collector", help: "The monitor's own counts: samples, missed, overruns, last_duration_ms", labelNames: ["figure"], registers });
    const instanceGauges = STORED_METRICS.map((m) => ({
      index: METRIC_INDEX[m],
      gauge: new Gauge({ name: `cdh_instance_${INSTANCE_METRIC_NAMES[m]}`, help: `${m} of the instance in the last sample (Monitor API metric ${m})`, labelNames: ["instance_id"], registers }),
    }));
    const up = new Gauge({ name: "cdh_instance_state", help: "libvirt state number of the instance in the last sample (1 running, 3 paused, …)", labelNames: ["instance_id"], registers });
    const vcpus = new Gauge({ name: "cdh_instance_vcpus", help: "vCPUs of the instance in the last sample", labelNames: ["instance_id"], registers });
    const raw = {
      cpu: new Counter({ name: "cdh_instance_vcpu_seconds_total", help: "Guest vCPU time, all vCPUs (libvirt counter; resets when QEMU restarts)", labelNames: ["instance_id"], registers }),
      rx: new Counter({ name: "cdh_instance_network_receive_bytes_total", help: "Bytes received by the guest, all NICs", labelNames: ["instance_id"], registers }),
      tx: new Counter({ name: "cdh_instance_network_transmit_bytes_total", help: "Bytes sent by the guest, all NICs", labelNames: ["instance_id"], registers }),
      rd: new Counter({ name: "cdh_instance_disk_read_bytes_total", help: "Bytes read from the instance's disks", labelNames: ["instance_id"], registers }),
      wr: new Counter({ name: "cdh_instance_disk_written_bytes_total", help: "Bytes written to the instance's disks", labelNames: ["instance_id"], registers }),
    };
    // The host's capacity: HostResource as DescribeHosts shows it, committed beside actual.
    new Gauge({
      name: "cdh_host_actual",
      help: "What the instances actually use: cpu (vCPUs busy, last sample), memory_gib (balloon statistics, last sample), disk_gib (file sizes)",
      labelNames: ["resource"],
      registers,
      collect() {
        const h = self.o.host();
        resource.reset();
        for (const [k, v] of Object.entries(h.resource)) if (typeof v === "number") resource.set({ figure: k }, v);
        committed.set({ resource: "cpu" }, h.committed.cpu);
        committed.set({ resource: "memory_gib" }, h.committed.memoryGiB);
        committed.set({ resource: "disk_gib" }, h.committed.diskGiB);
        let cpu = 0;
        let memMB = 0;
        for (const s of self.o.monitor.latest()?.instances.values() ?? []) {
          const usage = s.values[METRIC_INDEX.CPUUsage]!;
          if (Number.isFinite(usage)) cpu += (usage / 100) * (s.counters.vcpus ?? 0);
          const mem = s.values[METRIC_INDEX.MemUsed]!;
          if (Number.isFinite(mem)) memMB += mem;
        }
        this.set({ resource: "cpu" }, Math.round(cpu * 100) / 100);
        this.set({ resource: "memory_gib" }, Math.round((memMB / 1024) * 100) / 100);
        this.set({ resource: "disk_gib" }, Math.round(h.diskUsedGiB * 100) / 100);
      },
    });

    const resource = new Gauge({ name: "cdh_host_resource", help: "HostResource figures as DescribeHosts shows them (CpuTotal, CpuAvailable, MemTotal GiB, …)", labelNames: ["figure"], registers });
    const committed = new Gauge({ name: "cdh_host_committed", help: "What the instances were given: cpu (vCPUs), memory_gib, disk_gib (promised)", labelNames: ["resource"], registers });
    if (o.reporter) {
      const reporter = o.reporter;
      const failed = new Counter({ name: "cdh_reports_failed_total", help: "Failed report attempts (non-2xx, network error, timeout) since start", registers: [] });
      const superseded = new Counter({ name: "cdh_reports_superseded_total", help: "Reports dropped unsent because a newer one replaced them", registers: [] });
      new Counter({
        name: "cdh_reports_sent_total",
        help: "Reports the controller accepted (or logged, without a controller) since start",
        registers,
        collect() {
          const s = reporter();
          this.reset();
          this.inc(s.sent);
          failed.reset();
          failed.inc(s.failedAttempts);
          superseded.reset();
          superseded.inc(s.superseded);
        },
      });
      this.registry.registerMetric(failed);
      this.registry.registerMetric(superseded);
    }
    if (o.journalDir !== undefined) {
      const dir = o.journalDir;
      new Gauge({
        name: "cdh_journal_entries_open",
        help: "Operation journal entries open (operations begun and not yet finished or recovered)",
        registers,
        async collect() {
          const names = await readdir(dir).catch(() => [] as string[]);
          this.set(names.filter((n) => n.endsWith(".json")).length);
        },
      });
    }
  }

  onApiRequest(action: string | undefined, code: string, durationMs: number): void {
    const label = action !== undefined && this.o.isAction(action) ? action : "other";
    this.apiRequests.inc({ action: label, code });
    this.apiLatency.observe({ action: label }, durationMs / 1000);
  }

  onOperation(kind: string, outcome: string): void {
    this.operations.inc({ kind, outcome });
  }

  /** A libvirt event handled now; `at` is libvirt's timestamp of it. */
  onEvent(at: Date, now = Date.now()): void {
    this.eventLag.observe(Math.max(0, (now - at.getTime()) / 1000));
  }

  onMetadataRequest(target: string, status: number): void {
    this.metadataRequests.inc({ tree: metadataTreeOf(target), status: String(status) });
  }

  onAlarm(e: AlarmEvent): void {
    this.alarmEvents.inc({ metric: e.MetricName, state: e.State });
  }

  /** The exposition text (what /metrics answers). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** The /metrics listener; other paths answer 404. */
export function startMetricsServer(metrics: AgentMetrics, listen: { host: string; port: number }): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("Not Found\n");
      return;
    }
    metrics
      .text()
      .then((body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(req.method === "HEAD" ? undefined : body))
      .catch(() => res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n"));
  });
  server.keepAliveTimeout = 5_000;
  server.requestTimeout = 10_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
