/**
 * The Monitor API 2018-07-24 actions this host serves (reference/tencent-api-next.md §D):
 * GetMonitorData and DescribeBaseMetrics, Namespace QCE/CVM, dimension InstanceId. Same
 * endpoint and TC3 signature as CVM; the edge accepts X-TC-Version 2018-07-24 for these
 * actions only (server.ts).
 *
 * Refusals, each naming the field: a Namespace other than QCE/CVM, a metric the host does
 * not compute, a Period that is not 10/60/300/3600/86400, a time that is not ISO 8601 with
 * an offset, EndTime before StartTime, a window of more than 1,440 points, a dimension
 * other than InstanceId, a malformed instance ID → InvalidParameterValue; more than 10
 * instances → LimitExceeded.LimitedAccess (the Monitor API's codes). DescribeBaseMetrics
 * of another namespace → UnsupportedOperation.
 */
import { z } from "zod";
import { ApiError } from "../errors.js";
import { findMetric, PERIODS, type MetricInfo, type Period } from "../monitor/metrics.js";
import { MAX_POINTS } from "../monitor/store.js";
import { fail, ID_PATTERNS, parseWith } from "./schemas.js";

export const MONITOR_API_VERSION = "2018-07-24";
export const CVM_NAMESPACE = "QCE/CVM";
/** Instances per GetMonitorData (the API's limit). */
export const MAX_MONITOR_INSTANCES = 10;
/** Period when the request names none (the API's default). */
export const DEFAULT_PERIOD: Period = 300;

/** `2018-09-22T19:51:23+08:00` (fraction allowed; `Z` is +00:00). */
const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export interface MonitorTime {
  /** Unix seconds (fraction dropped). */
  seconds: number;
  /** The offset as written, `+08:00` (answers are written in the caller's offset). */
  offset: string;
}

export function parseMonitorTime(text: string): MonitorTime | undefined {
  const m = ISO_RE.exec(text);
  if (!m) return undefined;
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) return undefined;
  return { seconds: Math.floor(ms / 1000), offset: m[8] === "Z" ? "+00:00" : m[8]! };
}

/** Unix seconds written as ISO 8601 in an offset (`+08:00`), as the API answers StartTime/EndTime. */
export function formatMonitorTime(seconds: number, offset: string): string {
  const sign = offset.startsWith("-") ? -1 : 1;
  const minutes = sign * (Number(offset.slice(1, 3)) * 60 + Number(offset.slice(4, 6)));
  const local = new Date((seconds + minutes * 60) * 1000).toISOString().slice(0, 19);
  return `${local}${offset}`;
}

const namespace = z.string().superRefine((v, ctx) => {
  if (v.toUpperCase() !== CVM_NAMESPACE) fail(ctx, "InvalidParameterValue", `'${v}' is not served by this host; use ${CVM_NAMESPACE}`);
});

const metricName = z.string().superRefine((v, ctx) => {
  if (!findMetric(v)) {
    fail(ctx, "InvalidParameterValue", `'${v.slice(0, 64)}' is not a metric this host computes in ${CVM_NAMESPACE} (DescribeBaseMetrics lists them)`);
  }
});

const isoTime = z.string().superRefine((v, ctx) => {
  if (!parseMonitorTime(v)) fail(ctx, "InvalidParameterValue", `'${v.slice(0, 40)}' is not an ISO 8601 time with an offset, such as 2018-09-22T19:51:23+08:00`);
});

const dimension = z
  .object({
    Name: z.string().superRefine((v, ctx) => {
      if (v.toLowerCase() !== "instanceid") fail(ctx, "InvalidParameterValue", `'${v.slice(0, 40)}' is not a dimension of ${CVM_NAMESPACE}; use InstanceId`);
    }),
    Value: z.string().superRefine((v, ctx) => {
      if (!ID_PATTERNS.instance.test(v)) fail(ctx, "InvalidParameterValue", `'${v.slice(0, 40)}' is not an instance ID (ins- followed by 8 lowercase letters or digits)`);
    }),
  })
  .strict();

const instance = z
  .object({
    Dimensions: z.array(dimension).superRefine((v, ctx) => {
      if (v.length !== 1) fail(ctx, "InvalidParameterValue", `must hold exactly one dimension (InstanceId), got ${v.length}`);
    }),
  })
  .strict();

const getMonitorDataSchema = z
  .object({
    Namespace: namespace,
    MetricName: metricName,
    Instances: z.array(instance).superRefine((v, ctx) => {
      if (v.length === 0) fail(ctx, "InvalidParameterValue", "must name at least one instance");
      else if (v.length > MAX_MONITOR_INSTANCES) fail(ctx, "LimitExceeded.LimitedAccess", `names ${v.length} instances; at most ${MAX_MONITOR_INSTANCES} per request`);
    }),
    Period: z
      .number()
      .int()
      .superRefine((v, ctx) => {
        if (!(PERIODS as readonly number[]).includes(v)) fail(ctx, "InvalidParameterValue", `${v} is not a period of ${CVM_NAMESPACE} metrics; use one of ${PERIODS.join(", ")}`);
      })
      .optional(),
    StartTime: isoTime.optional(),
    EndTime: isoTime.optional(),
    SpecifyStatistics: z
      .number()
      .int()
      .superRefine((v, ctx) => {
        if (v < 1 || v > 7) fail(ctx, "InvalidParameterValue", `${v} is not a statistics mask: 1 avg, 2 max, 4 min, or their sum (1 to 7)`);
      })
      .optional(),
  })
  .strict();

export interface GetMonitorDataParams {
  /** The name as the caller spelled it (echoed in the answer). */
  metricName: string;
  metric: MetricInfo;
  instanceIds: string[];
  period: Period;
  startTime?: MonitorTime;
  endTime?: MonitorTime;
  /** Bitmask: 1 avg, 2 max, 4 min. */
  specifyStatistics?: number;
}

export function parseGetMonitorData(body: unknown): GetMonitorDataParams {
  const p = parseWith(getMonitorDataSchema, body);
  return {
    metricName: p.MetricName,
    metric: findMetric(p.MetricName)!,
    instanceIds: p.Instances.map((i) => i.Dimensions[0]!.Value),
    period: (p.Period ?? DEFAULT_PERIOD) as Period,
    ...(p.StartTime !== undefined ? { startTime: parseMonitorTime(p.StartTime)! } : {}),
    ...(p.EndTime !== undefined ? { endTime: parseMonitorTime(p.EndTime)! } : {}),
    ...(p.SpecifyStatistics !== undefined ? { specifyStatistics: p.SpecifyStatistics } : {}),
  };
}

export interface MonitorWindow {
  /** Aligned down to the period, Unix seconds. */
  start: number;
  end: number;
  /** Offset the answer's times are written in. */
  offset: string;
}

/**
 * The window of a GetMonitorData request: EndTime defaults to now, StartTime to EndTime
 * minus an hour (at least one period); both are aligned down to the period. EndTime before
 * StartTime, or more than 1,440 points, is refused naming the field.
 */
export function resolveWindow(p: Pick<GetMonitorDataParams, "period" | "startTime" | "endTime">, nowS: number): MonitorWindow {
  const period = p.period;
  const endRaw = p.endTime?.seconds ?? nowS;
  const startRaw = p.startTime?.seconds ?? endRaw - Math.max(3600, period);
  if (endRaw < startRaw) throw new ApiError("InvalidParameterValue", "`EndTime` is before `StartTime`");
  const start = Math.floor(startRaw / period) * period;
  const end = Math.floor(endRaw / period) * period;
  const points = (end - start) / period + 1;
  if (points > MAX_POINTS) {
    throw new ApiError(
      "InvalidParameterValue",
      `\`StartTime\` to \`EndTime\` spans ${points} points at Period ${period}; at most ${MAX_POINTS} per request`,
    );
  }
  return { start, end, offset: p.startTime?.offset ?? p.endTime?.offset ?? "+08:00" };
}

const describeBaseMetricsSchema = z
  .object({
    Namespace: z.string(),
    MetricName: z.string().optional(),
    Dimensions: z.array(z.string()).optional(),
  })
  .strict();

export interface DescribeBaseMetricsParams {
  metricName?: string;
  dimensions?: string[];
}

export function parseDescribeBaseMetrics(body: unknown): DescribeBaseMetricsParams {
  const p = parseWith(describeBaseMetricsSchema, body);
  if (p.Namespace.toUpperCase() !== CVM_NAMESPACE) {
    throw new ApiError("UnsupportedOperation", `\`Namespace\` '${p.Namespace.slice(0, 40)}' is not served by this host; use ${CVM_NAMESPACE}`);
  }
  return {
    ...(p.MetricName !== undefined ? { metricName: p.MetricName } : {}),
    ...(p.Dimensions !== undefined ? { dimensions: p.Dimensions } : {}),
  };
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const MONITOR_REQUEST_SCHEMAS = { GetMonitorData: getMonitorDataSchema, DescribeBaseMetrics: describeBaseMetricsSchema } as const;
