import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { AgentMetrics, INSTANCE_METRIC_NAMES, metadataTreeOf, startMetricsServer } from "../../../../agent/metrics/prom.js";
import { METRIC_COUNT, METRIC_INDEX, STORED_METRICS } from "../../../../agent/monitor/metrics.js";
import type { InstanceSample, LatestSample, MonitorReader } from "../../../../agent/monitor/monitor.js";

interface Family {
  name: string;
  help: string;
  type: string;
  metrics: Array<{ value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }>;
}
const parse = createRequire(import.meta.url)("parse-prometheus-text-format") as (text: string) => Family[];

function instance(id: string, cpu: number): InstanceSample {
  const values = new Float64Array(METRIC_COUNT).fill(Number.NaN);
  values[METRIC_INDEX.CPUUsage] = cpu;
  values[METRIC_INDEX.MemUsed] = 512;
  return {
    instanceId: id,
    at: 1_800_000_000_000,
    state: 1,
    values,
    counters: {
      name: id,
      state: 1,
      vcpus: 2,
      vcpuTimeNs: 7.5e9,
      nics: [{ name: "tap0", rxBytes: 1000, rxPkts: 10, rxErrs: 0, rxDrop: 0, txBytes: 2000, txPkts: 20, txErrs: 0, txDrop: 0 }],
      blocks: [{ name: "vda", rdReqs: 1, rdBytes: 4096, rdTimesNs: 1, wrReqs: 2, wrBytes: 8192, wrTimesNs: 1, flReqs: 0, flTimesNs: 0 }],
    },
  };
}

/** A monitor that holds one sample; query and subscribe are not for a scrape, so they fail. */
function monitorWith(sample: LatestSample | undefined): MonitorReader {
  return {
    latest: () => sample,
    status: () => ({ samples: 7, missed: 1, overruns: 0, lastDurationMs: 42, lastError: undefined }),
    query: () => {
      throw new Error("a scrape must not query the series");
    },
    subscribe: () => {
      throw new Error("a scrape must not subscribe");
    },
  };
}

function metricsFor(sample: LatestSample | undefined): AgentMetrics {
  return new AgentMetrics({
    monitor: monitorWith(sample),
    isAction: (a) => a === "DescribeInstances",
    reporter: () => ({ built: 5, sent: 4, failedAttempts: 3, superseded: 1, lastSentSequence: 4, lastError: null }),
    alarmsFiring: () => 2,
    host: () => ({
      resource: { CpuTotal: 16, CpuAvailable: 10, MemTotal: 64, MemAvailable: 40, DiskTotal: 500, DiskAvailable: 300, DiskType: "LOCAL_BASIC" },
      committed: { cpu: 4, memoryGiB: 8, diskGiB: 120 },
      diskUsedGiB: 12.5,
    }),
  });
}

const value = (families: Family[], name: string, labels: Record<string, string> = {}) => {
  const family = families.find((f) => f.name === name);
  if (!family) throw new Error(`no family ${name}`);
  const m = family.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (!m) throw new Error(`no ${name} ${JSON.stringify(labels)}`);
  return m;
};

describe("the Prometheus exposition", () => {
  it("parses, and carries each instance's values, the host's capacity and the agent's health", async () => {
    const sample: LatestSample = { at: 1_800_000_000_000, durationMs: 42, instances: new Map([["ins-aaaaaaaa", instance("ins-aaaaaaaa", 50)]]) };
    const m = metricsFor(sample);
    m.onApiRequest("DescribeInstances", "Success", 12);
    m.onApiRequest("DescribeInstances", "InvalidParameterValue", 3);
    m.onApiRequest("Made-Up-By-A-Client", "InvalidAction", 1);
    m.onOperation("StartInstances", "SUCCESS");
    m.onOperation("StartInstances", "FAILED");
    m.onMetadataRequest("/latest/meta-data/instance-id", 200);
    m.onMetadataRequest("/openstack/latest/meta_data.json", 404);
    m.onEvent(new Date(1000), 1250);
    m.onAlarm({ Sequence: 1, InstanceId: "ins-aaaaaaaa", MetricName: "CPUUsage", Operator: "GT", Threshold: 90, Value: 95, State: "FIRING", Time: "" });
    const families = parse(await m.text());

    expect(value(families, "cdh_instance_cpu_usage_percent", { instance_id: "ins-aaaaaaaa" }).value).toBe("50");
    expect(value(families, "cdh_instance_memory_used_megabytes", { instance_id: "ins-aaaaaaaa" }).value).toBe("512");
    // NaN values (not computable this interval) are left out, never written as NaN.
    expect(families.find((f) => f.name === "cdh_instance_disk_io_await_milliseconds")!.metrics).toEqual([]);
    expect(value(families, "cdh_instance_vcpu_seconds_total", { instance_id: "ins-aaaaaaaa" })).toMatchObject({ value: "7.5" });
    expect(families.find((f) => f.name === "cdh_instance_vcpu_seconds_total")!.type).toBe("COUNTER");
    expect(value(families, "cdh_instance_disk_written_bytes_total", { instance_id: "ins-aaaaaaaa" }).value).toBe("8192");
    for (const metric of STORED_METRICS) expect(families.some((f) => f.name === `cdh_instance_${INSTANCE_METRIC_NAMES[metric]}`), metric).toBe(true);

    for (const [figure, v] of <Array<[string, string]>>[["CpuTotal", "16"], ["CpuAvailable", "10"], ["MemTotal", "64"], ["MemAvailable", "40"], ["DiskTotal", "500"], ["DiskAvailable", "300"]])
      expect(value(families, "cdh_host_resource", { figure }).value, figure).toBe(v);
    expect(value(families, "cdh_host_committed", { resource: "cpu" }).value).toBe("4");
    expect(value(families, "cdh_host_actual", { resource: "cpu" }).value).toBe("1"); // 50 % of 2 vCPUs
    expect(value(families, "cdh_host_actual", { resource: "memory_gib" }).value).toBe("0.5");
    expect(value(families, "cdh_host_actual", { resource: "disk_gib" }).value).toBe("12.5");

    expect(value(families, "cdh_api_requests_total", { action: "DescribeInstances", code: "InvalidParameterValue" }).value).toBe("1");
    expect(value(families, "cdh_api_requests_total", { action: "other", code: "InvalidAction" }).value).toBe("1");
    expect(families.find((f) => f.name === "cdh_api_request_duration_seconds")?.type).toBe("HISTOGRAM");
    // The parser keeps no labels of a labelled histogram: its values through prom-client's own JSON.
    const latency = (await m.registry.getSingleMetric("cdh_api_request_duration_seconds")!.get()).values as Array<{ value: number; labels: Record<string, string | number>; metricName?: string }>;
    const of = (metricName: string, le?: number) =>
      latency.find((v) => v.metricName === metricName && v.labels.action === "DescribeInstances" && (le === undefined || v.labels.le === le))?.value;
    expect(of("cdh_api_request_duration_seconds_count")).toBe(2);
    expect(of("cdh_api_request_duration_seconds_bucket", 0.005)).toBe(1);
    expect(of("cdh_api_request_duration_seconds_bucket", 0.025)).toBe(2);
    expect(value(families, "cdh_operations_total", { kind: "StartInstances", outcome: "FAILED" }).value).toBe("1");
    expect(value(families, "cdh_metadata_requests_total", { tree: "openstack", status: "404" }).value).toBe("1");
    expect(value(families, "cdh_libvirt_event_lag_seconds").sum).toBe("0.25");
    expect(value(families, "cdh_reports_sent_total").value).toBe("4");
    expect(value(families, "cdh_reports_failed_total").value).toBe("3");
    expect(value(families, "cdh_alarm_events_total", { metric: "CPUUsage", state: "FIRING" }).value).toBe("1");
    expect(value(families, "cdh_alarms_firing").value).toBe("2");
    expect(value(families, "cdh_monitor_collector", { figure: "missed" }).value).toBe("1");
  });

  it("shows the newest sample on every scrape (an instance gone is gone)", async () => {
    let current: LatestSample = { at: 1, durationMs: 1, instances: new Map([["ins-aaaaaaaa", instance("ins-aaaaaaaa", 10)]]) };
    const reader = monitorWith(undefined);
    const m = new AgentMetrics({
      monitor: { ...reader, latest: () => current },
      isAction: () => true,
      host: () => ({ resource: { CpuTotal: 1, CpuAvailable: 1, MemTotal: 1, MemAvailable: 1, DiskTotal: 1, DiskAvailable: 1, DiskType: "LOCAL_BASIC" }, committed: { cpu: 0, memoryGiB: 0, diskGiB: 0 }, diskUsedGiB: 0 }),
    });
    expect(value(parse(await m.text()), "cdh_instance_cpu_usage_percent", { instance_id: "ins-aaaaaaaa" }).value).toBe("10");
    current = { at: 2, durationMs: 1, instances: new Map([["ins-bbbbbbbb", instance("ins-bbbbbbbb", 20)]]) };
    const f = parse(await m.text()).find((x) => x.name === "cdh_instance_cpu_usage_percent")!;
    expect(f.metrics.map((x) => [x.labels?.instance_id, x.value])).toEqual([["ins-bbbbbbbb", "20"]]);
  });

  it("names the metadata trees from a bounded set", () => {
    expect(["/latest/meta-data/", "/2009-04-04/user-data", "/openstack/latest/", "/../../etc", "/?x"].map(metadataTreeOf)).toEqual(["latest", "ec2-dated", "openstack", "other", "other"]);
  });

  it("serves /metrics with Prometheus' content type, and nothing else", async () => {
    const server = await startMetricsServer(metricsFor(undefined), { host: "127.0.0.1", port: 0 });
    try {
      const ok = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(ok.status).toBe(200);
      expect(ok.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(parse(await ok.text()).some((f) => f.name === "cdh_host_resource")).toBe(true);
      expect((await fetch(`http://127.0.0.1:${server.port}/`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
