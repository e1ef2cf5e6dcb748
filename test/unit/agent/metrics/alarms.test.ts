import { describe, expect, it } from "vitest";
import { AlarmEngine, formatAlarmRules, parseAlarmRules, type AlarmEvent, type AlarmRule } from "../../../../agent/metrics/alarms.js";
import { METRIC_COUNT, METRIC_INDEX } from "../../../../agent/monitor/metrics.js";
import type { InstanceSample } from "../../../../agent/monitor/monitor.js";

function sample(at: number, cpu: Record<string, number>) {
  const instances = new Map<string, InstanceSample>();
  for (const [id, value] of Object.entries(cpu)) {
    const values = new Float64Array(METRIC_COUNT).fill(Number.NaN);
    values[METRIC_INDEX.CPUUsage] = value;
    instances.set(id, { instanceId: id, at, state: 1, values, counters: { name: id, nics: [], blocks: [] } });
  }
  return { at, instances };
}

const rule: AlarmRule = { metric: "CPUUsage", operator: "GT", threshold: 90, continuePeriod: 3 };

describe("alarm_rules (compact form)", () => {
  it("reads metric, operator, threshold and samples, and writes them back the same", () => {
    const rules = parseAlarmRules("CPUUsage>90:3, MemUsage>=95 ,DiskIoAwait<=0.5:2");
    expect(rules).toEqual([
      rule,
      { metric: "MemUsage", operator: "GE", threshold: 95, continuePeriod: 1 },
      { metric: "DiskIoAwait", operator: "LE", threshold: 0.5, continuePeriod: 2 },
    ]);
    expect(parseAlarmRules(formatAlarmRules(rules as AlarmRule[]))).toEqual(rules);
    expect(parseAlarmRules("")).toEqual([]);
  });

  it.each([
    ["CpuLoad>1", /unknown metric/],
    ["CPUUsage=>90", /is not METRIC>THRESHOLD/],
    ["CPUUsage>90:0", /ContinuePeriod/],
    ["CPUUsage>90:61", /ContinuePeriod/],
    ["CPUUsage>90,CPUUsage>90:2", /given twice/],
  ])("refuses %s, saying why", (text, why) => {
    expect(parseAlarmRules(text)).toMatch(why);
  });
});

describe("AlarmEngine", () => {
  it("fires after ContinuePeriod samples over the line and resolves after as many under it (one sample across changes nothing)", () => {
    const events: AlarmEvent[] = [];
    const engine = new AlarmEngine({ rules: [rule], onEvent: (e) => events.push(e) });
    const values = [95, 95, 50, 95, 95, 95, 95, 50, 95, 50, 50, 50];
    values.forEach((v, i) => engine.evaluate(sample(1_000_000 + i * 10_000, { "ins-aaaaaaaa": v })));
    expect(events.map((e) => [e.State, e.Value, e.Time])).toEqual([
      ["FIRING", 95, new Date(1_000_000 + 5 * 10_000).toISOString()],
      ["RESOLVED", 50, new Date(1_000_000 + 11 * 10_000).toISOString()],
    ]);
    expect(engine.firing()).toEqual([]);
  });

  it("skips NaN samples (no balloon statistics) in both directions", () => {
    const engine = new AlarmEngine({ rules: [{ ...rule, continuePeriod: 2 }] });
    for (const [i, v] of [95, Number.NaN, 95].entries()) engine.evaluate(sample(i * 10_000, { "ins-aaaaaaaa": v }));
    expect(engine.pendingEvents().map((e) => e.State)).toEqual(["FIRING"]);
  });

  it("resolves the alarms of an instance that leaves the samples, and of a rule that is removed", () => {
    const engine = new AlarmEngine({ rules: [{ ...rule, continuePeriod: 1 }] });
    engine.evaluate(sample(0, { "ins-aaaaaaaa": 99, "ins-bbbbbbbb": 99 }));
    engine.evaluate(sample(10_000, { "ins-aaaaaaaa": 99 }));
    engine.setRules([], 20_000);
    expect(engine.pendingEvents().map((e) => [e.InstanceId, e.State, e.Value])).toEqual([
      ["ins-aaaaaaaa", "FIRING", 99],
      ["ins-bbbbbbbb", "FIRING", 99],
      ["ins-bbbbbbbb", "RESOLVED", null],
      ["ins-aaaaaaaa", "RESOLVED", null],
    ]);
  });

  it("keeps events until a delivered report acknowledges them, in sequence", () => {
    const engine = new AlarmEngine({ rules: [{ ...rule, continuePeriod: 1 }] });
    engine.evaluate(sample(0, { "ins-aaaaaaaa": 99 }));
    const carried = engine.pendingEvents();
    engine.evaluate(sample(10_000, { "ins-aaaaaaaa": 10 }));
    engine.acknowledge(carried.at(-1)!.Sequence);
    expect(engine.pendingEvents().map((e) => [e.Sequence, e.State])).toEqual([[2, "RESOLVED"]]);
  });
});
