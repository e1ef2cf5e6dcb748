/**
 * The Monitor API's answers (GetMonitorData, DescribeBaseMetrics) from the series store,
 * through the MonitorReader interface (agent/monitor/monitor.ts): pure given the reader.
 *
 * Values: at 10 s and 60 s the average of the period; at 300 s and longer the metric's
 * statistic of the public service (reference §D.3: max for CPU and memory, avg for traffic).
 * SpecifyStatistics (1 avg, 2 max, 4 min) fills AvgValues / MaxValues / MinValues as well.
 * Wan* metrics are 0 wherever the matching Lan* metric has a point (all traffic is intranet
 * until the ENI issue splits it).
 */
import { METRIC_INDEX, METRICS, PERIODS, ZERO_METRICS, findMetric, type StoredMetric, type ZeroMetric } from "../monitor/metrics.js";
import type { MonitorReader } from "../monitor/monitor.js";
import type { DescribeBaseMetricsParams, GetMonitorDataParams, MonitorWindow } from "./schemas-monitor.js";
import { CVM_NAMESPACE, formatMonitorTime } from "./schemas-monitor.js";

/** Six decimals at most: the API answers numbers like 1.25, not 1.2500000476837158. */
const round = (x: number) => Math.round(x * 1e6) / 1e6;

export function getMonitorData(reader: Pick<MonitorReader, "query">, p: GetMonitorDataParams, w: MonitorWindow): Record<string, unknown> {
  const zero = p.metric.name in ZERO_METRICS;
  const stored = (zero ? ZERO_METRICS[p.metric.name as ZeroMetric] : p.metric.name) as StoredMetric;
  const rolled = p.period >= 300;
  const mask = p.specifyStatistics ?? 0;
  const dataPoints = p.instanceIds.map((instanceId) => {
    const s = reader.query({ instanceId, metric: METRIC_INDEX[stored], period: p.period, start: w.start, end: w.end });
    const pick = (xs: number[]) => (zero ? xs.map(() => 0) : xs.map(round));
    const values = rolled && p.metric.rollStat === "max" ? s.max : s.avg;
    return {
      Dimensions: [{ Name: "InstanceId", Value: instanceId }],
      Timestamps: s.timestamps,
      Values: pick(values),
      ...(mask & 1 ? { AvgValues: pick(s.avg) } : {}),
      ...(mask & 2 ? { MaxValues: pick(s.max) } : {}),
      ...(mask & 4 ? { MinValues: pick(s.min) } : {}),
    };
  });
  return {
    Period: p.period,
    MetricName: p.metricName,
    DataPoints: dataPoints,
    StartTime: formatMonitorTime(w.start, w.offset),
    EndTime: formatMonitorTime(w.end, w.offset),
    Msg: "",
  };
}

export function describeBaseMetrics(p: DescribeBaseMetricsParams): Record<string, unknown> {
  const wanted = p.metricName !== undefined ? findMetric(p.metricName) : undefined;
  if (p.metricName !== undefined && !wanted) return { MetricSet: [] };
  if (p.dimensions && p.dimensions.some((d) => d.toLowerCase() !== "instanceid")) return { MetricSet: [] };
  const metrics = wanted ? [wanted] : METRICS;
  return {
    MetricSet: metrics.map((m) => ({
      Namespace: CVM_NAMESPACE,
      MetricName: m.name,
      Unit: m.unit,
      UnitCname: m.unitCname,
      Period: [...PERIODS],
      Periods: PERIODS.map((period) => ({ Period: String(period), StatType: [period >= 300 ? m.rollStat : "avg"] })),
      Meaning: { En: m.en, Zh: m.zh },
      Dimensions: [{ Dimensions: ["InstanceId"] }],
      MetricCName: m.cname,
      MetricEName: m.en,
    })),
  };
}
