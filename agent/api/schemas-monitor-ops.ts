/**
 * This agent's extensions for alarms and the instance self-check (issue 13 parts 5, 6), in
 * the CVM style (version 2017-03-12, same endpoint and signature):
 *   ModifyAlarmPolicies   { Policies: [{ MetricName, Operator: GT|GE|LT|LE, Threshold, ContinuePeriod? }] }
 *                         replaces the host's whole rule set ([] = no alarms)
 *   DescribeAlarmPolicies {}
 *   CreateInstanceDiagnosticReports   { InstanceIds: [1..10] }
 *   DescribeInstanceDiagnosticReports { InstanceIds?, ReportIds? }
 * Refusals: an unknown metric or operator, a threshold that is not a finite number, a
 * ContinuePeriod outside 1..60, more than 32 policies → InvalidParameterValue; more than 10
 * instances → InvalidParameterValue.LimitExceeded (agent/api/schemas.ts conventions).
 */
import { z } from "zod";
import { ALARM_OPERATORS, MAX_ALARM_RULES, MAX_CONTINUE_PERIOD, type AlarmRule } from "../metrics/alarms.js";
import { MAX_DIAGNOSTIC_INSTANCES } from "../metrics/diagnostics.js";
import { STORED_METRICS } from "../monitor/metrics.js";
import { idList, parseWith } from "./schemas.js";

export interface ModifyAlarmPoliciesParams {
  rules: AlarmRule[];
}

const policySchema = z
  .object({
    MetricName: z.enum(STORED_METRICS),
    Operator: z.enum(ALARM_OPERATORS as unknown as ["GT", "GE", "LT", "LE"]),
    Threshold: z.number().finite(),
    ContinuePeriod: z.number().int().min(1).max(MAX_CONTINUE_PERIOD).optional(),
  })
  .strict();

const modifySchema = z.object({ Policies: z.array(policySchema).max(MAX_ALARM_RULES) }).strict();

export function parseModifyAlarmPolicies(body: unknown): ModifyAlarmPoliciesParams {
  const p = parseWith(modifySchema, body);
  return {
    rules: p.Policies.map((x) => ({ metric: x.MetricName, operator: x.Operator, threshold: x.Threshold, continuePeriod: x.ContinuePeriod ?? 1 })),
  };
}

const describeAlarmSchema = z.object({}).strict();

export function parseDescribeAlarmPolicies(body: unknown): Record<string, never> {
  parseWith(describeAlarmSchema, body);
  return {};
}

export interface CreateDiagnosticReportsParams {
  instanceIds: string[];
}

const createReportsSchema = z.object({ InstanceIds: idList("instance", MAX_DIAGNOSTIC_INSTANCES) }).strict();

export function parseCreateInstanceDiagnosticReports(body: unknown): CreateDiagnosticReportsParams {
  const p = parseWith(createReportsSchema, body);
  return { instanceIds: p.InstanceIds };
}

export interface DescribeDiagnosticReportsParams {
  instanceIds?: string[];
  reportIds?: string[];
}

const describeReportsSchema = z
  .object({ InstanceIds: idList("instance").optional(), ReportIds: z.array(z.string().regex(/^dr-[0-9a-f]{8}$/)).max(100).optional() })
  .strict();

export function parseDescribeInstanceDiagnosticReports(body: unknown): DescribeDiagnosticReportsParams {
  const p = parseWith(describeReportsSchema, body);
  return { ...(p.InstanceIds ? { instanceIds: p.InstanceIds } : {}), ...(p.ReportIds ? { reportIds: p.ReportIds } : {}) };
}

export const MONITOR_OPS_REQUEST_SCHEMAS = {
  ModifyAlarmPolicies: modifySchema,
  DescribeAlarmPolicies: describeAlarmSchema,
  CreateInstanceDiagnosticReports: createReportsSchema,
  DescribeInstanceDiagnosticReports: describeReportsSchema,
} as const;
