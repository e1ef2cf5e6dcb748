/**
 * The alarms of this host: the engine (alarms.ts) fed by every monitor sample, its rules
 * from <data_dir>/alarm-policies.json when the controller set them (ModifyAlarmPolicies),
 * else from config alarm_rules; its events carried by the reports until one is delivered.
 */
import type { MonitorReader } from "../monitor/monitor.js";
import { AlarmEngine, loadAlarmPolicies, policyView, saveAlarmPolicies, type AlarmEvent, type AlarmRule } from "./alarms.js";

export interface AlarmServiceOptions {
  monitor: Pick<MonitorReader, "subscribe">;
  configRules: readonly AlarmRule[];
  /** Where the controller's rules are kept. */
  file: string;
  onEvent?: (e: AlarmEvent) => void;
  /** A report is wanted (an alarm fired or resolved). */
  wantReport?: () => void;
  logger: { warn(obj: Record<string, unknown>, msg?: string): void; info(obj: Record<string, unknown>, msg?: string): void };
  now?: () => number;
}

export class AlarmService {
  readonly engine: AlarmEngine;
  private readonly o: AlarmServiceOptions;
  private readonly unsubscribe: () => void;

  constructor(o: AlarmServiceOptions) {
    this.o = o;
    let rules: readonly AlarmRule[] = o.configRules;
    let source = "config alarm_rules";
    try {
      const kept = loadAlarmPolicies(o.file);
      if (kept) {
        rules = kept;
        source = o.file;
      }
    } catch (error) {
      o.logger.warn({ err: error, file: o.file }, "alarm policies file unreadable; the config's alarm_rules apply");
    }
    this.engine = new AlarmEngine({
      rules,
      onEvent: (e) => {
        o.logger.info({ alarm: e }, `alarm ${e.State.toLowerCase()}`);
        o.onEvent?.(e);
      },
    });
    if (rules.length) o.logger.info({ rules: rules.length, source }, "alarm rules loaded");
    this.unsubscribe = o.monitor.subscribe((s) => {
      const before = this.engine.pendingEvents().at(-1)?.Sequence ?? 0;
      this.engine.evaluate(s);
      if ((this.engine.pendingEvents().at(-1)?.Sequence ?? 0) !== before) o.wantReport?.();
    });
  }

  stop(): void {
    this.unsubscribe();
  }

  /** ModifyAlarmPolicies: replaces the rule set and keeps it across restarts. */
  setPolicies(rules: readonly AlarmRule[]): void {
    saveAlarmPolicies(this.o.file, rules);
    const before = this.engine.pendingEvents().at(-1)?.Sequence ?? 0;
    this.engine.setRules(rules, (this.o.now ?? Date.now)());
    if ((this.engine.pendingEvents().at(-1)?.Sequence ?? 0) !== before) this.o.wantReport?.();
  }

  describe(): { AlarmPolicySet: ReturnType<typeof policyView>[]; FiringAlarmSet: Array<ReturnType<typeof policyView> & { InstanceId: string }> } {
    return {
      AlarmPolicySet: this.engine.ruleSet.map(policyView),
      FiringAlarmSet: this.engine.firing().map((f) => ({ InstanceId: f.instanceId, ...policyView(f.rule) })),
    };
  }

  /** The events a report carries (all not yet delivered). */
  forReport(): AlarmEvent[] {
    return this.engine.pendingEvents();
  }

  /** A report was delivered: the events it carried are done. */
  delivered(events: readonly AlarmEvent[] | undefined): void {
    const last = events?.at(-1);
    if (last) this.engine.acknowledge(last.Sequence);
  }
}
