/**
 * Keeps every NIC's caps on the host (plan.ts has what they are made of): the packet-rate
 * table for all NICs, and each existing tap's tc tree. One pass compares what each tap should
 * have with what this agent last put there (keyed by the tap's ifindex, so a tap made anew by a
 * domain start or a hot-plug is seen as new) and changes only what differs. Passes run one at a
 * time; asking while one runs gets one more pass after it.
 *
 * When a pass runs: at start-up, on every registry change (a domain started, an instance came
 * or went, a record changed: the caps follow record.cpu and record.internetMaxBandwidthOut), on
 * every NIC change (nic-events.ts), every reconcile interval, and after libvirtd came back (then
 * every tap is done again).
 */
import type { Logger } from "pino";
import type { CommandRunner } from "../../../drivers/exec/runner.js";
import { DomainError } from "../../core/errors.js";
import type { InstanceRecord } from "../../model.js";
import { nicTapName } from "../firewall-types.js";
import type { Subnet } from "../subnets.js";
import { isAgentIfb, planKey, ppsRuleset, tcPlan, type NicCaps, type TcPlan } from "./plan.js";
import { internetIngressMbps, intranetCap, type IntranetCap, type IntranetRule } from "./rule.js";

export interface InstanceCaps {
  readonly intranet: IntranetCap;
  /** The internet cap (Mbit/s) of the NICs on a subnet with a route out of the VPC; absent: none. */
  readonly internet?: { readonly outMbps: number; readonly inMbps: number };
}

/** The caps of an instance (pure): its size through the rule, its InternetMaxBandwidthOut through the seeds' ingress rule. */
export function capsOf(record: Pick<InstanceRecord, "cpu" | "internetMaxBandwidthOut">, rule: IntranetRule): InstanceCaps {
  const out = record.internetMaxBandwidthOut ?? 0;
  return { intranet: intranetCap(record.cpu, rule), ...(out > 0 ? { internet: { outMbps: out, inMbps: internetIngressMbps(out) } } : {}) };
}

/** The subnet a NIC is on (by subnetId, or by network for records older than subnets). */
function subnetOf(subnets: readonly Subnet[], nic: InstanceRecord["nics"][number]): Subnet | undefined {
  return subnets.find((s) => s.subnetId === nic.subnetId) ?? subnets.find((s) => s.network === nic.network);
}

/** Whether an instance may have an internet cap: one of its NICs is on a subnet with a route out of the VPC. */
export function hasInternetRoute(subnets: readonly Subnet[], record: Pick<InstanceRecord, "nics">): boolean {
  return record.nics.some((n) => subnetOf(subnets, n)?.internetRoute === true);
}

/** Every NIC of an instance with its caps (pure). The internet cap applies only on NICs whose subnet has a route out. */
export function nicCapsOf(record: InstanceRecord, subnets: readonly Subnet[], rule: IntranetRule): NicCaps[] {
  const caps = capsOf(record, rule);
  return record.nics.map((nic, index) => {
    const subnet = subnetOf(subnets, nic);
    const vpcCidrs = subnet ? subnets.filter((s) => s.vpcId === subnet.vpcId).map((s) => `${s.address}/${s.prefixLength}`) : [];
    return {
      tap: nicTapName(record.instanceId, nic, index),
      intranetMbps: caps.intranet.mbps,
      intranetPps: caps.intranet.pps,
      ...(caps.internet && subnet?.internetRoute ? { internet: caps.internet } : {}),
      vpcCidrs,
    };
  });
}

export class BandwidthCaps {
  /** tap → "<ifindex>\n<plan>" last installed there. */
  private readonly applied = new Map<string, string>();
  private lastRuleset: string | undefined;
  private requested = 0;
  private completed = 0;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: {
      runner: CommandRunner;
      /** The instances whose NICs get caps (launch-failed tombstones excluded by the caller). */
      records: () => Iterable<InstanceRecord>;
      subnets: readonly Subnet[];
      rule: IntranetRule;
      /** The agent's nftables bridge table for packet rates. */
      table: string;
      /** bandwidth_caps: false = nothing is put on the host (the records and views still carry the caps). */
      enabled: boolean;
      logger: Logger;
    },
  ) {}

  capsOf(record: Pick<InstanceRecord, "cpu" | "internetMaxBandwidthOut">): InstanceCaps {
    return capsOf(record, this.o.rule);
  }

  /** Refuses an internet cap for an instance none of whose NICs is on a subnet with a route out of the VPC. */
  checkInternet(record: Pick<InstanceRecord, "instanceId" | "nics">, field: string): void {
    if (hasInternetRoute(this.o.subnets, record)) return;
    throw new DomainError(
      "BadValue",
      `${field}: instance ${record.instanceId} has no NIC on a subnet with a route out of the VPC (subnets[].internet_route), so there is no traffic leaving the VPC to cap`,
    );
  }

  /** Runs one pass after every change seen so far; resolves when it is done (failures are logged, never thrown). */
  async sync(): Promise<void> {
    const target = ++this.requested;
    while (this.completed < target) {
      if (!this.running) {
        const upTo = this.requested;
        this.running = this.pass()
          .catch((error: unknown) => this.o.logger.warn({ err: error }, "bandwidth caps: a pass failed; the next one tries again"))
          .finally(() => {
            this.completed = Math.max(this.completed, upTo);
            this.running = undefined;
          });
      }
      await this.running;
    }
  }

  /** Asks for a pass without waiting for it. */
  request(): void {
    void this.sync();
  }

  /** Every tap gets its caps again (after libvirtd came back: what it did to the taps is unknown). */
  forget(): void {
    this.applied.clear();
    this.lastRuleset = undefined;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => this.request(), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private async pass(): Promise<void> {
    if (!this.o.enabled) return;
    const wanted = new Map<string, NicCaps>();
    for (const record of this.o.records()) for (const nic of nicCapsOf(record, this.o.subnets, this.o.rule)) wanted.set(nic.tap, nic);

    const ruleset = ppsRuleset(this.o.table, [...wanted.values()]);
    if (ruleset !== this.lastRuleset) {
      await this.o.runner.run(["nft", "-f", "-"], { input: ruleset, timeoutMs: 30_000 });
      this.lastRuleset = ruleset;
    }

    const links = await this.links();
    for (const tap of [...this.applied.keys()]) if (!links.has(tap)) this.applied.delete(tap);
    for (const [tap, nic] of wanted) {
      const ifindex = links.get(tap);
      if (ifindex === undefined) continue;
      const plan = tcPlan(nic);
      const key = `${ifindex}\n${planKey(plan)}`;
      if (this.applied.get(tap) === key) continue;
      try {
        await this.install(plan, links.has(plan.ifb));
        this.applied.set(tap, key);
        this.o.logger.info({ tap, intranetMbps: nic.intranetMbps, intranetPps: nic.intranetPps, internet: nic.internet }, "bandwidth caps applied");
      } catch (error) {
        this.applied.delete(tap);
        this.o.logger.warn({ err: error, tap }, "bandwidth caps: could not apply a NIC's caps; the next pass tries again");
      }
    }
    // IFB devices whose tap is gone (or no longer anyone's).
    for (const name of links.keys()) {
      if (!isAgentIfb(name)) continue;
      const tap = `cdh${name.slice(3)}`;
      if (links.has(tap) && wanted.has(tap)) continue;
      if (links.has(tap)) await this.o.runner.run(["tc", "-force", "-batch", "-"], { input: tcPlan({ tap, intranetMbps: 1, intranetPps: 1, vpcCidrs: [] }).clear.join("\n") + "\n", allowFailure: true });
      await this.o.runner.run(["ip", "link", "del", name], { allowFailure: true });
      this.applied.delete(tap);
    }
  }

  private async install(plan: TcPlan, ifbExists: boolean): Promise<void> {
    if (!ifbExists) await this.o.runner.run(["ip", "link", "add", plan.ifb, "type", "ifb"]);
    await this.o.runner.run(["ip", "link", "set", plan.ifb, "up"]);
    await this.o.runner.run(["tc", "-force", "-batch", "-"], { input: `${plan.clear.join("\n")}\n`, allowFailure: true });
    await this.o.runner.run(["tc", "-batch", "-"], { input: `${plan.install.join("\n")}\n` });
  }

  /** Network devices by name → ifindex (`ip -o link show`). */
  private async links(): Promise<Map<string, number>> {
    const { stdout } = await this.o.runner.run(["ip", "-o", "link", "show"], { timeoutMs: 30_000 });
    const links = new Map<string, number>();
    for (const line of stdout.split("\n")) {
      const m = /^(\d+):\s+([^:@\s]+)[@:]/.exec(line);
      if (m) links.set(m[2]!, Number(m[1]));
    }
    return links;
  }
}

