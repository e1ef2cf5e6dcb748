import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseCommand } from "../../../agent/api/commands.js";
import { formatMonitorTime, parseMonitorTime, resolveWindow, type GetMonitorDataParams } from "../../../agent/api/schemas-monitor.js";
import { apiVersionOf } from "../../../agent/api/server.js";
import { METRIC_COUNT, METRIC_INDEX } from "../../../agent/monitor/metrics.js";
import { SeriesStore } from "../../../agent/monitor/store.js";
import { describeBaseMetrics, getMonitorData } from "../../../agent/api/monitor-views.js";
import { refusal } from "../../support/parse.js";

const ID = "ins-aaaaaaaa";
const inst = (id = ID) => ({ Dimensions: [{ Name: "InstanceId", Value: id }] });
const body = (over: Record<string, unknown> = {}) => ({ Namespace: "QCE/CVM", MetricName: "CPUUsage", Instances: [inst()], ...over });

function gmd(b: unknown): GetMonitorDataParams {
  const c = parseCommand("GetMonitorData", b);
  if (c.action !== "GetMonitorData") throw new Error(c.action);
  return c.params;
}

describe("GetMonitorData's request", () => {
  it("takes the API's fields, the seeds' snake_case metric names, and defaults Period to 300", () => {
    const p = gmd(body({ MetricName: "lan_outtraffic", StartTime: "2026-12-07T10:00:00+08:00", SpecifyStatistics: 7 }));
    expect(p.metric.name).toBe("LanOuttraffic");
    expect(p.metricName).toBe("lan_outtraffic");
    expect(p.period).toBe(300);
    expect(p.instanceIds).toEqual([ID]);
    expect(p.startTime).toEqual({ seconds: Date.parse("2026-12-07T02:00:00Z") / 1000, offset: "+08:00" });
  });

  it.each([
    [{ Namespace: "QCE/CDB" }, "InvalidParameterValue", "Namespace"],
    [{ MetricName: "CpuLoadavg" }, "InvalidParameterValue", "MetricName"],
    [{ Period: 30 }, "InvalidParameterValue", "Period"],
    [{ Period: "60" }, "InvalidParameter", "Period"],
    [{ StartTime: "2026-12-07 10:00:00" }, "InvalidParameterValue", "StartTime"],
    [{ EndTime: "yesterday" }, "InvalidParameterValue", "EndTime"],
    [{ Instances: [] }, "InvalidParameterValue", "Instances"],
    [{ Instances: Array.from({ length: 11 }, () => inst()) }, "LimitExceeded.LimitedAccess", "Instances"],
    [{ Instances: [{ Dimensions: [{ Name: "unInstanceId", Value: ID }] }] }, "InvalidParameterValue", "Instances.0.Dimensions.0.Name"],
    [{ Instances: [inst("ins-BAD")] }, "InvalidParameterValue", "Instances.0.Dimensions.0.Value"],
    [{ SpecifyStatistics: 8 }, "InvalidParameterValue", "SpecifyStatistics"],
    [{ Foo: 1 }, "InvalidParameter", "Foo"],
  ])("refuses %j with %s naming %s", (over, code, field) => {
    const r = refusal("GetMonitorData", body(over));
    expect(r.code).toBe(code);
    expect(r.message).toContain(`\`${field}\``);
  });

  it("refuses a missing Namespace, MetricName or Instances as MissingParameter", () => {
    for (const key of ["Namespace", "MetricName", "Instances"]) {
      const b: Record<string, unknown> = body();
      delete b[key];
      expect(refusal("GetMonitorData", b)).toMatchObject({ code: "MissingParameter" });
    }
  });
});

describe("the window", () => {
  it("aligns StartTime and EndTime down to the period and answers in the caller's offset", () => {
    const w = resolveWindow({ period: 60, startTime: parseMonitorTime("2019-03-24T10:51:23+08:00")!, endTime: parseMonitorTime("2019-03-24T11:00:59+08:00")! }, 0);
    expect(formatMonitorTime(w.start, w.offset)).toBe("2019-03-24T10:51:00+08:00");
    expect(formatMonitorTime(w.end, w.offset)).toBe("2019-03-24T11:00:00+08:00");
  });

  it("defaults EndTime to now and StartTime to an hour before", () => {
    const w = resolveWindow({ period: 10 }, 1_000_005);
    expect(w).toEqual({ start: 996_400, end: 1_000_000, offset: "+08:00" });
  });

  it("refuses EndTime before StartTime, and more than 1,440 points", () => {
    expect(() => resolveWindow({ period: 10, startTime: { seconds: 100, offset: "Z" }, endTime: { seconds: 50, offset: "Z" } }, 0)).toThrow(/`EndTime`/);
    expect(() => resolveWindow({ period: 10, startTime: { seconds: 0, offset: "Z" }, endTime: { seconds: 14_400, offset: "Z" } }, 0)).toThrow(/1441 points/);
    expect(resolveWindow({ period: 10, startTime: { seconds: 0, offset: "+00:00" }, endTime: { seconds: 14_390, offset: "+00:00" } }, 0).end).toBe(14_390);
  });
});

describe("GetMonitorData's answer", () => {
  let dir: string;
  let store: SeriesStore;
  const T0 = 1_765_065_600;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "cdh-monitor-api-"));
    store = new SeriesStore({ dir });
    for (let i = 0; i < 31; i++) {
      const v = new Float64Array(METRIC_COUNT).fill(Number.NaN);
      v[METRIC_INDEX.CPUUsage] = i % 2 ? 80 : 20;
      v[METRIC_INDEX.LanOuttraffic] = 1.5;
      store.record(ID, T0 + i * 10, v);
    }
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("gives one DataPoint per instance in request order, period-aligned, with the statistics asked for", () => {
    const p = gmd(body({ Period: 60, SpecifyStatistics: 6, Instances: [inst(), inst("ins-bbbbbbbb")] }));
    const a = getMonitorData(store, p, { start: T0, end: T0 + 299, offset: "+00:00" }) as { DataPoints: Array<Record<string, unknown>>; StartTime: string; Period: number };
    expect(a.Period).toBe(60);
    expect(a.StartTime).toBe("2025-12-07T00:00:00+00:00");
    expect(a.DataPoints[0]).toEqual({
      Dimensions: [{ Name: "InstanceId", Value: ID }],
      Timestamps: [0, 1, 2, 3, 4].map((k) => T0 + k * 60),
      Values: [50, 50, 50, 50, 50],
      MaxValues: [80, 80, 80, 80, 80],
      MinValues: [20, 20, 20, 20, 20],
    });
    expect(a.DataPoints[1]).toEqual({ Dimensions: [{ Name: "InstanceId", Value: "ins-bbbbbbbb" }], Timestamps: [], Values: [], MaxValues: [], MinValues: [] });
  });

  it("answers CPU at 300 s with its maximum, as the public service does", () => {
    const p = gmd(body({ Period: 300 }));
    const a = getMonitorData(store, p, { start: T0, end: T0, offset: "+00:00" }) as { DataPoints: Array<{ Values: number[] }> };
    expect(a.DataPoints[0]!.Values).toEqual([80]);
  });

  it("answers Wan traffic as 0 where Lan traffic has a point (all traffic is intranet)", () => {
    const p = gmd(body({ MetricName: "wan_outtraffic", Period: 10 }));
    const a = getMonitorData(store, p, { start: T0, end: T0 + 20, offset: "+00:00" }) as { MetricName: string; DataPoints: Array<{ Values: number[]; Timestamps: number[] }> };
    expect(a.MetricName).toBe("wan_outtraffic");
    expect(a.DataPoints[0]).toMatchObject({ Timestamps: [T0, T0 + 10, T0 + 20], Values: [0, 0, 0] });
  });
});

describe("DescribeBaseMetrics", () => {
  it("lists the metrics the host computes with their periods, units and the InstanceId dimension", () => {
    const c = parseCommand("DescribeBaseMetrics", { Namespace: "QCE/CVM" });
    if (c.action !== "DescribeBaseMetrics") throw new Error(c.action);
    const set = (describeBaseMetrics(c.params) as { MetricSet: Array<Record<string, unknown>> }).MetricSet;
    const cpu = set.find((m) => m.MetricName === "CPUUsage")!;
    expect(cpu).toMatchObject({ Namespace: "QCE/CVM", Unit: "%", Period: [10, 60, 300, 3600, 86400], Dimensions: [{ Dimensions: ["InstanceId"] }] });
    expect(cpu.Periods).toEqual([
      { Period: "10", StatType: ["avg"] },
      { Period: "60", StatType: ["avg"] },
      { Period: "300", StatType: ["max"] },
      { Period: "3600", StatType: ["max"] },
      { Period: "86400", StatType: ["max"] },
    ]);
    for (const name of ["MemUsage", "MemUsed", "LanOuttraffic", "LanIntraffic", "LanOutpkg", "LanInpkg", "WanOuttraffic", "WanIntraffic", "BaseCpuUsage", "DiskIoAwait"]) {
      expect(set.map((m) => m.MetricName)).toContain(name);
    }
  });

  it("filters by MetricName (any spelling) and answers another namespace with UnsupportedOperation", () => {
    const c = parseCommand("DescribeBaseMetrics", { Namespace: "QCE/CVM", MetricName: "mem_usage" });
    if (c.action !== "DescribeBaseMetrics") throw new Error(c.action);
    expect((describeBaseMetrics(c.params) as { MetricSet: Array<{ MetricName: string }> }).MetricSet.map((m) => m.MetricName)).toEqual(["MemUsage"]);
    expect(refusal("DescribeBaseMetrics", { Namespace: "QCE/REDIS" })).toMatchObject({ code: "UnsupportedOperation" });
  });
});

describe("the API version of an action", () => {
  it("is 2018-07-24 for the Monitor actions and 2017-03-12 for all others", () => {
    expect(apiVersionOf("GetMonitorData")).toBe("2018-07-24");
    expect(apiVersionOf("DescribeBaseMetrics")).toBe("2018-07-24");
    expect(apiVersionOf("DescribeInstances")).toBe("2017-03-12");
    expect(apiVersionOf("DescribeSecurityGroups")).toBe("2017-03-12");
  });
});
