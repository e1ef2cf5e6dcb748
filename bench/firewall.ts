/**
 * (h) A change to a 100-rule security group bound to 50 NICs, applied by the agent's
 * firewall (agent/network/firewall.ts: the difference, as one `nft -f -` transaction),
 * against the same commands applied the per-rule way, one `nft` process each (CloudStack's
 * way, peers.md §2.3), in the same run, on the same ruleset. The per-rule baseline is
 * generous to itself: it runs only the commands the agent's transaction holds (flush the
 * group's chain, add its 100 rules); a design with per-NIC copies of the rules would run
 * 50 times as many.
 *
 * It runs in a network namespace of its own (a child process under `ip netns exec`): nft
 * reads the whole ruleset of its namespace on every run, so in the shared test namespace
 * the figures would measure whatever other tests and agents left there (measured: a
 * 29,000-line ruleset made each nft process take ~150 ms). The scenario's own ruleset is
 * what a host with 50 NICs holds. Interface names exist nowhere: no packet is affected.
 */
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { LocalRunner } from "../drivers/exec/local.js";
import { NftFirewall } from "../agent/network/firewall.js";
import type { FirewallNic, FirewallState, SgRule } from "../agent/network/firewall-types.js";
import { median, ratioRow, timeMs, type Row } from "./stats.js";

const NICS = 50;
const RULES = 100;

function state(firstPort: number): FirewallState {
  const ingress: SgRule[] = Array.from({ length: RULES }, (_, i) => ({ action: "ACCEPT", protocol: "TCP", ports: [firstPort + i], peer: { cidr: `10.${i}.0.0/16` } }));
  const nics: FirewallNic[] = Array.from({ length: NICS }, (_, i) => ({
    tap: `cdhbench${String(i).padStart(3, "0")}0`,
    bridge: "cdhbenchbr0",
    mac: `52:54:00:be:00:${i.toString(16).padStart(2, "0")}`,
    addresses: [`10.249.0.${10 + i}`],
    gateway: "10.249.0.1",
    securityGroupIds: ["sg-bench001"],
    instanceId: `ins-bench${String(i).padStart(3, "0")}`,
  }));
  return { groups: [{ securityGroupId: "sg-bench001", ingress, egress: [{ action: "ACCEPT", protocol: "ALL", ports: "ALL", peer: { cidr: "0.0.0.0/0" } }] }], nics };
}

/** The measurement itself, in whatever namespace this process is in. */
async function measure(o: { runs: number; log: (line: string) => void }): Promise<Row[]> {
  const runner = new LocalRunner({ defaultTimeoutMs: 30_000 });
  const table = "cdhbench_filter";
  const firewall = new NftFirewall({ runner, table, metadataPort: 8775, timeoutMs: 30_000 });
  const ours: number[] = [];
  const perRule: number[] = [];
  let commands = 0;
  try {
    await firewall.sync(state(1000)); // the start: the whole ruleset, one transaction
    let port = 1000;
    for (let run = 0; run < o.runs; run++) {
      port = port === 1000 ? 2000 : 1000;
      const next = state(port);
      const plan = firewall.plan(next);
      commands = plan.length;
      ours.push(await timeMs(() => firewall.sync(next)));
      // The same change back and forth the per-rule way: the same commands, one process each.
      port = port === 1000 ? 2000 : 1000;
      const back = firewall.plan(state(port));
      perRule.push(
        await timeMs(async () => {
          for (const command of back) await runner.run(["nft", ...command.split(" ")]);
        }),
      );
      firewall.forget(); // the per-rule run changed the kernel behind its back
      await firewall.sync(state(port));
    }
  } finally {
    await firewall.remove().catch((e: unknown) => o.log(`  (h) could not remove table ${table}: ${String(e)}`));
  }
  const a = median(ours);
  const b = median(perRule);
  o.log(`  (h) load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs; ${commands} commands per change; agent ${ours.map((x) => x.toFixed(1)).join(", ")} ms; per-rule ${perRule.map((x) => x.toFixed(0)).join(", ")} ms`);
  const note = `${RULES}-rule group on ${NICS} NICs; ${commands} nft commands: one transaction vs one process each`;
  return [
    ratioRow({ part: "h", what: "SG change, 100 rules × 50 NICs vs nft per rule", ours: a, baseline: b, unit: "ms", max: 0.1, note }),
    { part: "h", what: "SG change applied (one transaction)", ours: a, baseline: undefined, unit: "ms", target: "< 100 ms", met: a < 100 },
  ];
}

/** (h): the measurement in a child process inside a network namespace made for it. */
export async function benchFirewall(o: { runs: number; log: (line: string) => void }): Promise<Row[]> {
  const runner = new LocalRunner({ defaultTimeoutMs: 600_000 });
  const ns = `cdhbench-h-${randomBytes(3).toString("hex")}`;
  await runner.run(["ip", "netns", "add", ns]);
  try {
    const child = await runner.run(["ip", "netns", "exec", ns, process.execPath, fileURLToPath(import.meta.url), "--child", String(o.runs)]);
    for (const line of child.stderr.trimEnd().split("\n").filter(Boolean)) o.log(line);
    return JSON.parse(child.stdout) as Row[];
  } finally {
    await runner.run(["ip", "netns", "del", ns], { allowFailure: true });
  }
}

if (process.argv[2] === "--child" && import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  measure({ runs: Number(process.argv[3] ?? 5), log: (line) => process.stderr.write(`${line}\n`) }).then(
    (rows) => process.stdout.write(JSON.stringify(rows)),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
