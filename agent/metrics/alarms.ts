/**
 * Alarms (issue 13 part 5): threshold rules per metric, evaluated on every monitor sample
 * (MonitorReader.subscribe), with FIRING and RESOLVED events kept until a report carrying
 * them reaches the controller (reporter.ts `Alarms`), and counted in Prometheus.
 *
 * A rule: metric (a stored metric, STORED_METRICS), operator (GT, GE, LT, LE), threshold,
 * and ContinuePeriod: how many consecutive samples must meet the condition before the alarm
 * fires, and how many must fail it before it resolves (the hysteresis: one sample across the
 * line changes nothing). A sample whose value is NaN (not computable, e.g. no balloon
 * statistics) counts neither way. An instance gone from the samples (stopped, terminated)
 * resolves its firing alarms at once.
 *
 * Host settings: config `alarm_rules`, compact `CPUUsage>90:3,MemUsage>=95:2` (metric,
 * operator > >= < <=, threshold, optional `:ContinuePeriod`, default 1); the controller
 * replaces the set with ModifyAlarmPolicies (kept in <data_dir>/alarm-policies.json, which
 * then wins over the config at start-up).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { METRIC_INDEX, STORED_METRICS, type StoredMetric } from "../monitor/metrics.js";
import type { LatestSample } from "../monitor/monitor.js";

export type AlarmOperator = "GT" | "GE" | "LT" | "LE";
export const ALARM_OPERATORS: readonly AlarmOperator[] = ["GT", "GE", "LT", "LE"];
const SYMBOL: Record<AlarmOperator, string> = { GT: ">", GE: ">=", LT: "<", LE: "<=" };

export interface AlarmRule {
  metric: StoredMetric;
  operator: AlarmOperator;
  threshold: number;
  /** Consecutive samples to fire, and to resolve (1 to 60). */
  continuePeriod: number;
}

/** Largest number of rules in a set; largest ContinuePeriod. */
export const MAX_ALARM_RULES = 32;
export const MAX_CONTINUE_PERIOD = 60;
/** Events kept while no report gets through; older ones are dropped and counted. */
export const MAX_PENDING_EVENTS = 1000;

export interface AlarmEvent {
  Sequence: number;
  InstanceId: string;
  MetricName: StoredMetric;
  Operator: AlarmOperator;
  Threshold: number;
  /** The value of the sample that fired or resolved it (null: the instance left the samples). */
  Value: number | null;
  State: "FIRING" | "RESOLVED";
  /** ISO 8601 time of that sample. */
  Time: string;
}

export function ruleKey(r: AlarmRule): string {
  return `${r.metric}${SYMBOL[r.operator]}${r.threshold}:${r.continuePeriod}`;
}

/** The compact form of a rule set (config `alarm_rules`); parseAlarmRules reads it back. */
export function formatAlarmRules(rules: readonly AlarmRule[]): string {
  return rules.map(ruleKey).join(",");
}

/** Validates one rule; the problem in words, or undefined. */
export function ruleProblem(r: { metric: string; operator: string; threshold: number; continuePeriod: number }): string | undefined {
  if (!(STORED_METRICS as readonly string[]).includes(r.metric)) return `unknown metric ${JSON.stringify(r.metric.slice(0, 40))} (one of ${STORED_METRICS.join(", ")})`;
  if (!(ALARM_OPERATORS as readonly string[]).includes(r.operator)) return `unknown operator ${JSON.stringify(r.operator.slice(0, 8))} (GT, GE, LT or LE)`;
  if (!Number.isFinite(r.threshold)) return "the threshold must be a finite number";
  if (!Number.isInteger(r.continuePeriod) || r.continuePeriod < 1 || r.continuePeriod > MAX_CONTINUE_PERIOD) return `ContinuePeriod must be an integer from 1 to ${MAX_CONTINUE_PERIOD}`;
  return undefined;
}

const COMPACT = /^([A-Za-z]+)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)(?::(\d+))?$/;
const OP_OF: Record<string, AlarmOperator> = { ">": "GT", ">=": "GE", "<": "LT", "<=": "LE" };

/** Parses config `alarm_rules`; a string is the problem. "" = no rules. */
export function parseAlarmRules(text: string): AlarmRule[] | string {
  const rules: AlarmRule[] = [];
  const seen = new Set<string>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const m = COMPACT.exec(part);
    if (!m) return `rule ${JSON.stringify(part.slice(0, 60))} is not METRIC>THRESHOLD[:SAMPLES] (operators > >= < <=)`;
    const rule = { metric: m[1]!, operator: OP_OF[m[2]!]!, threshold: Number(m[3]), continuePeriod: m[4] === undefined ? 1 : Number(m[4]) };
    const problem = ruleProblem(rule);
    if (problem) return `rule ${JSON.stringify(part.slice(0, 60))}: ${problem}`;
    const key = `${rule.metric}|${rule.operator}|${rule.threshold}`;
    if (seen.has(key)) return `rule ${JSON.stringify(part.slice(0, 60))} is given twice`;
    seen.add(key);
    rules.push(rule as AlarmRule);
  }
  if (rules.length > MAX_ALARM_RULES) return `at most ${MAX_ALARM_RULES} rules`;
  return rules;
}

function meets(op: AlarmOperator, value: number, threshold: number): boolean {
  switch (op) {
    case "GT":
      return value > threshold;
    case "GE":
      return value >= threshold;
    case "LT":
      return value < threshold;
    case "LE":
      return value <= threshold;
  }
}

interface AlarmTrack {
  firing: boolean;
  /** Consecutive samples against the current state (toward firing, or toward resolving). */
  streak: number;
}

export interface AlarmEngineOptions {
  rules: readonly AlarmRule[];
  /** Called for each event as it happens (Prometheus counters, the log). */
  onEvent?: (e: AlarmEvent) => void;
}

/** The pure state machine: rules × instances, and the events not yet delivered. */
export class AlarmEngine {
  private rules: AlarmRule[];
  private readonly tracks = new Map<string, Map<string, AlarmTrack>>();
  private readonly pending: AlarmEvent[] = [];
  private sequence = 0;
  private droppedCount = 0;
  private readonly onEvent: ((e: AlarmEvent) => void) | undefined;

  constructor(o: AlarmEngineOptions) {
    this.rules = [...o.rules];
    this.onEvent = o.onEvent;
  }

  get ruleSet(): readonly AlarmRule[] {
    return this.rules;
  }

  /** Replaces the rules; alarms of removed rules resolve (an event each), kept rules keep their state. */
  setRules(rules: readonly AlarmRule[], at: number): void {
    const keep = new Set(rules.map(ruleKey));
    for (const [instanceId, byRule] of this.tracks) {
      for (const [key, track] of byRule) {
        if (keep.has(key)) continue;
        const rule = this.rules.find((r) => ruleKey(r) === key);
        if (track.firing && rule) this.emit(rule, instanceId, null, "RESOLVED", at);
        byRule.delete(key);
      }
    }
    this.rules = [...rules];
  }

  /** Evaluates every rule for every instance of one sample. */
  evaluate(sample: Pick<LatestSample, "at" | "instances">): void {
    for (const [instanceId, s] of sample.instances) {
      let byRule = this.tracks.get(instanceId);
      if (!byRule) this.tracks.set(instanceId, (byRule = new Map()));
      for (const rule of this.rules) {
        const value = s.values[METRIC_INDEX[rule.metric]];
        if (value === undefined || Number.isNaN(value)) continue;
        const key = ruleKey(rule);
        let track = byRule.get(key);
        if (!track) byRule.set(key, (track = { firing: false, streak: 0 }));
        const met = meets(rule.operator, value, rule.threshold);
        // Toward the other state when the sample says so; back to 0 when it agrees with the current one.
        if (met !== track.firing) track.streak++;
        else track.streak = 0;
        if (track.streak >= rule.continuePeriod) {
          track.firing = met;
          track.streak = 0;
          this.emit(rule, instanceId, value, met ? "FIRING" : "RESOLVED", sample.at);
        }
      }
    }
    // Instances no longer sampled: their alarms resolve.
    for (const [instanceId, byRule] of this.tracks) {
      if (sample.instances.has(instanceId)) continue;
      for (const [key, track] of byRule) {
        const rule = this.rules.find((r) => ruleKey(r) === key);
        if (track.firing && rule) this.emit(rule, instanceId, null, "RESOLVED", sample.at);
      }
      this.tracks.delete(instanceId);
    }
  }

  /** The alarms firing now. */
  firing(): Array<{ instanceId: string; rule: AlarmRule }> {
    const out: Array<{ instanceId: string; rule: AlarmRule }> = [];
    for (const [instanceId, byRule] of this.tracks)
      for (const [key, track] of byRule) {
        const rule = this.rules.find((r) => ruleKey(r) === key);
        if (track.firing && rule) out.push({ instanceId, rule });
      }
    return out;
  }

  /** Events not yet acknowledged (a report carries them all). */
  pendingEvents(): AlarmEvent[] {
    return [...this.pending];
  }

  /** Drops the events up to `sequence` (a report that carried them was delivered). */
  acknowledge(sequence: number): void {
    while (this.pending.length && this.pending[0]!.Sequence <= sequence) this.pending.shift();
  }

  /** Events dropped unsent because more than MAX_PENDING_EVENTS waited. */
  get dropped(): number {
    return this.droppedCount;
  }

  private emit(rule: AlarmRule, instanceId: string, value: number | null, state: AlarmEvent["State"], at: number): void {
    const event: AlarmEvent = {
      Sequence: ++this.sequence,
      InstanceId: instanceId,
      MetricName: rule.metric,
      Operator: rule.operator,
      Threshold: rule.threshold,
      Value: value === null ? null : Math.round(value * 100) / 100,
      State: state,
      Time: new Date(at).toISOString(),
    };
    this.pending.push(event);
    if (this.pending.length > MAX_PENDING_EVENTS) {
      this.pending.shift();
      this.droppedCount++;
    }
    this.onEvent?.(event);
  }
}

/** The wire form of a rule (ModifyAlarmPolicies / DescribeAlarmPolicies). */
export interface AlarmPolicyView {
  MetricName: StoredMetric;
  Operator: AlarmOperator;
  Threshold: number;
  ContinuePeriod: number;
}

export function policyView(r: AlarmRule): AlarmPolicyView {
  return { MetricName: r.metric, Operator: r.operator, Threshold: r.threshold, ContinuePeriod: r.continuePeriod };
}

/** The rules the controller set, kept across restarts; undefined when it never set any. */
export function loadAlarmPolicies(file: string): AlarmRule[] | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  const views = (JSON.parse(text) as { Policies?: unknown }).Policies;
  if (!Array.isArray(views)) throw new Error(`${file}: no Policies list`);
  return views.map((v: AlarmPolicyView) => {
    const rule = { metric: v.MetricName, operator: v.Operator, threshold: v.Threshold, continuePeriod: v.ContinuePeriod };
    const problem = ruleProblem(rule);
    if (problem) throw new Error(`${file}: ${problem}`);
    return rule;
  });
}

export function saveAlarmPolicies(file: string, rules: readonly AlarmRule[]): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify({ Policies: rules.map(policyView) }) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
}
