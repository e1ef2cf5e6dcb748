/**
 * The firewall: makes the kernel's nftables ruleset match a FirewallState, one atomic
 * transaction per change (firewall-compile.ts says what the ruleset is).
 *
 * It keeps the model it last applied. `sync` compiles the new state, diffs it against
 * that model and hands the difference to one `nft -f -`; the model advances only when
 * nft succeeded, so a refused transaction leaves both the kernel and the model as they
 * were. With nothing applied yet in this process (start-up, or after `forget()`), or when
 * an in-place edit fails (the kernel's table was changed behind the agent's back), the
 * transaction replaces both tables whole: declared, deleted and rebuilt in one batch, so
 * there is never a moment without rules. Calls are serialized.
 */
import { readFile, writeFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { diffTable, listTable, replaceTable, removeTable, runNft, type NftTable } from "../../drivers/network/nft.js";
import { compileFirewall, type CompiledFirewall } from "./firewall-compile.js";
import type { Firewall, FirewallState } from "./firewall-types.js";

export interface NftFirewallOptions {
  runner: CommandRunner;
  /** Name of the agent's tables (inet and bridge): config `firewall_nft_table`. */
  table: string;
  /** The metadata server's port on the gateways (config `metadata_port`). */
  metadataPort: number;
  /** Deadline of one nft process, ms. Default 10 000. */
  timeoutMs?: number;
  logger?: Pick<Logger, "info" | "warn" | "debug">;
}

export class NftFirewall implements Firewall {
  private applied: CompiledFirewall | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: NftFirewallOptions) {}

  /** The next sync replaces the tables whole (after a libvirtd restart, or to heal drift). */
  forget(): void {
    this.applied = undefined;
  }

  sync(state: FirewallState): Promise<void> {
    return this.serialized(() => this.syncNow(state));
  }

  /** Removes both tables (an operator's clean-up; tests). */
  remove(): Promise<void> {
    return this.serialized(async () => {
      await runNft(this.o.runner, [...removeTable("inet", this.o.table), ...removeTable("bridge", this.o.table)], this.runOptions());
      this.applied = undefined;
    });
  }

  /**
   * Chains, sets and elements of the agent's tables that the state does not account for
   * (a sync that failed, a NIC removed behind the agent's back), as "family table kind name".
   */
  strays(state: FirewallState): Promise<string[]> {
    return this.serialized(async () => {
      const wanted = compileFirewall(state, this.compileOptions());
      const out: string[] = [];
      for (const model of [wanted.inet, wanted.bridge]) {
        const kernel = await listTable(this.o.runner, model.family, model.name, this.runOptions());
        if (!kernel) continue;
        const where = `${model.family} ${model.name}`;
        for (const chain of kernel.chains) if (!model.chains.has(chain)) out.push(`${where} chain ${chain}`);
        for (const [set, elements] of kernel.sets) {
          const want = model.sets.get(set);
          if (!want) {
            out.push(`${where} set ${set}`);
            continue;
          }
          for (const e of elements) if (!want.elements.has(e)) out.push(`${where} set ${set} element ${e}`);
        }
      }
      return out;
    });
  }

  /** The transaction `sync(state)` would run now (for tests, golden files and the bench). */
  plan(state: FirewallState): string[] {
    return planTransaction(this.applied, compileFirewall(state, this.compileOptions()));
  }

  private async syncNow(state: FirewallState): Promise<void> {
    const wanted = compileFirewall(state, this.compileOptions());
    const commands = planTransaction(this.applied, wanted);
    if (commands.length === 0) return;
    const full = this.applied === undefined;
    try {
      await runNft(this.o.runner, commands, this.runOptions());
    } catch (error) {
      if (full) throw error;
      // An in-place edit the kernel refused: its table is not what the agent applied. Replace it whole.
      this.o.logger?.warn({ err: error }, "firewall: the incremental change was refused; replacing the agent's tables whole");
      this.applied = undefined;
      await runNft(this.o.runner, planTransaction(undefined, wanted), this.runOptions());
    }
    this.applied = wanted;
    this.o.logger?.debug({ commands: commands.length, full }, "firewall: ruleset applied");
  }

  private compileOptions() {
    return { table: this.o.table, metadataPort: this.o.metadataPort };
  }

  private runOptions() {
    return { timeoutMs: this.o.timeoutMs ?? 10_000 };
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** The one transaction from `applied` (undefined: unknown, replace whole) to `wanted`. Pure. */
export function planTransaction(applied: CompiledFirewall | undefined, wanted: CompiledFirewall): string[] {
  const part = (from: NftTable | undefined, to: NftTable) => (from ? (diffTable(from, to) ?? replaceTable(to)) : replaceTable(to));
  return [...part(applied?.bridge, wanted.bridge), ...part(applied?.inet, wanted.inet)];
}

/**
 * Bridged IPv4 must pass the inet hooks (where conntrack and the security groups are):
 * `net.bridge.bridge-nf-call-iptables` = 1 in the agent's network namespace. Loads
 * br_netfilter when the knob is missing; throws when it cannot be had, since guests would
 * otherwise be unfiltered.
 */
export async function ensureBridgeNetfilter(o: { runner: CommandRunner; procRoot?: string }): Promise<void> {
  const knob = `${o.procRoot ?? "/proc"}/sys/net/bridge/bridge-nf-call-iptables`;
  const read = () => readFile(knob, "utf8").then((v) => v.trim(), () => undefined);
  if ((await read()) === undefined) await o.runner.run(["modprobe", "br_netfilter"], { allowFailure: true, timeoutMs: 10_000 });
  const value = await read();
  if (value === undefined) throw new Error(`${knob} does not exist (br_netfilter is not available): security groups cannot be enforced`);
  if (value !== "1") {
    await writeFile(knob, "1\n").catch((error: unknown) => {
      throw new Error(`could not set ${knob} to 1: security groups cannot be enforced`, { cause: error });
    });
    if ((await read()) !== "1") throw new Error(`${knob} did not take the value 1: security groups cannot be enforced`);
  }
}
