/**
 * (l) Power restore after a simulated power loss: N instances (default 50) that ran are found
 * shut off when the agent starts; from the agent's spawn until DescribeInstancesStatus shows
 * all of them RUNNING, against `virsh start` of the same domains by a shell loop, in the same
 * run, rounds alternating.
 *
 * The instances: one made through RunInstances (left running: its record wants it on), the
 * rest copies of its domain (many.ts's copies, adopted by the agent's start-up recovery) with
 * 64 MiB of memory and an empty system disk: they stop in the firmware (no bootable disk)
 * instead of booting, since 50 tiny guests booting under TCG take the 2 cores for minutes
 * and every later start on either side would be measuring that. A power loss is simulated with the
 * agent stopped: every domain destroyed, so no event tells the agent (nor would one after a
 * real power loss). Between rounds the agent is stopped and every domain destroyed again.
 */
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { startAgent, waitForStates, type Agent, type AgentOptions } from "./agent.js";
import { removeDomains, run, virsh, virshScript } from "./host.js";
import { copyIds, freeAddresses, writeCopy } from "./many.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

export interface PowerRestoreBenchOptions {
  agent: Agent;
  agentOptions: AgentOptions;
  dataDir: string;
  imageId: string;
  total: number;
  runs: number;
  /**
   * restore_power_concurrency values to sweep (--restore-concurrency 1,2,4): the rounds go
   * through them in turn, `runs` rounds each, each beside a baseline round; empty: the
   * agent's default only.
   */
  concurrencies?: readonly number[];
  workDir: string;
  tracker: Tracker;
  log: (line: string) => void;
}

const COPY_MEMORY_KIB = 64 * 1024;

export async function benchPowerRestore(o: PowerRestoreBenchOptions): Promise<{ rows: Row[]; agent: Agent }> {
  const { tracker, log } = o;
  let agent = o.agent;

  // The template: through the API, running.
  const [template] = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: "bench-l-0" })).InstanceIdSet!;
  tracker.instances.add(template!);
  await waitForStates(agent.client, [template!], "RUNNING", { timeoutMs: 180_000 });
  // Its record in libvirt says the launch succeeded (saved after RUNNING): the copies carry it,
  // and a copy of an OPERATING record would be settled at start-up, 49 more metadata writes.
  for (;;) {
    const i = (await agent.client.DescribeInstances({ InstanceIds: [template!] })).InstanceSet![0]!;
    if (i.LatestOperationState === "SUCCESS" && (await virsh(["dumpxml", "--inactive", template!])).stdout.includes('"state":"SUCCESS"')) break;
    await sleep(200);
  }

  // The copies, defined with virsh (shut off), adopted at the agent's next start.
  const copies = o.total - 1;
  await mkdir(o.workDir, { recursive: true });
  const xml = (await virsh(["dumpxml", "--inactive", template!])).stdout
    .replace(/<memory unit='KiB'>\d+<\/memory>/, `<memory unit='KiB'>${COPY_MEMORY_KIB}</memory>`)
    .replace(/<currentMemory unit='KiB'>\d+<\/currentMemory>/, `<currentMemory unit='KiB'>${COPY_MEMORY_KIB}</currentMemory>`);
  const fresh = join(o.workDir, "fresh-overlay.qcow2");
  // Empty: nothing to boot (see the module comment).
  await run(["qemu-img", "create", "-q", "-f", "qcow2", fresh, "1G"]);
  const ids = copyIds(copies);
  const taken = new Set((await agent.client.DescribeInstances({ InstanceIds: [template!] })).InstanceSet!.flatMap((i) => i.PrivateIpAddresses ?? []));
  const ips = freeAddresses(copies, taken);
  const templateDir = join(o.dataDir, "instances", template!);
  const extras = (await readdir(templateDir)).filter((n) => n !== "console.log");
  const files: string[] = [];
  for (let i = 0; i < copies; i++) {
    files.push(await writeCopy({ xml, template: template!, id: ids[i]!, ip: ips[i]!, index: i + 1, workDir: o.workDir, overlay: fresh, templateDir, extras, dataDir: o.dataDir }));
  }
  for (const id of ids) tracker.domains.add(id);
  await virshScript(files.map((f) => `define --file ${f}`));
  const all = [template!, ...ids];

  const stopAgent = async () => {
    await agent.stop();
    tracker.stoppers.delete("agent");
  };
  const powerLoss = async () => {
    const running = (await virsh(["list", "--name", "--state-running"])).stdout.split("\n").map((l) => l.trim());
    const mine = new Set(all);
    const on = running.filter((n) => mine.has(n));
    if (on.length) await virshScript(on.map((n) => `destroy --domain ${n}`), { timeoutMs: 300_000 });
  };
  const startLoop = async () => {
    const t = performance.now();
    await run(["bash", "-c", 'for d in "$@"; do virsh -q -c qemu:///system start "$d" >/dev/null || exit 1; done', "start-loop", ...all], { timeoutMs: 600_000 });
    return performance.now() - t;
  };

  await stopAgent();
  await powerLoss();
  const sweep: Array<number | undefined> = o.concurrencies?.length ? [...o.concurrencies] : [undefined];
  const ours = new Map<number | undefined, number[]>(sweep.map((c) => [c, []]));
  const base: number[] = [];
  for (let round = 0; round < o.runs * sweep.length; round++) {
    const concurrency = sweep[round % sweep.length];
    // Baseline: the agent down, the same domains started by a shell loop.
    base.push(await startLoop());
    await powerLoss();
    // Ours: the agent starts, finds them off though they ran, and starts them.
    const options = concurrency === undefined ? o.agentOptions : { ...o.agentOptions, env: { ...o.agentOptions.env, CDH_AGENT_RESTORE_POWER_CONCURRENCY: String(concurrency) } };
    agent = await startAgent(options);
    tracker.agent = agent;
    tracker.stoppers.set("agent", () => agent.stop());
    await waitForStates(agent.client, all, "RUNNING", { timeoutMs: 600_000, pollMs: 100 });
    ours.get(concurrency)!.push(performance.now() - agent.spawnedAt);
    log(
      `  (l) round ${round + 1}${concurrency === undefined ? "" : ` (restore_power_concurrency ${concurrency})`}: agent spawn → ${all.length} RUNNING ${ours.get(concurrency)!.at(-1)!.toFixed(0)} ms (API open after ${agent.startMs.toFixed(0)} ms); virsh start loop ${base.at(-1)!.toFixed(0)} ms`,
    );
    await stopAgent();
    await powerLoss();
  }

  // The agent is stopped: the domains go with virsh (its next start drops their directories).
  await removeDomains(all);
  for (const id of all) tracker.domains.delete(id);
  tracker.instances.delete(template!);
  agent = await startAgent(o.agentOptions);
  tracker.agent = agent;
  tracker.stoppers.set("agent", () => agent.stop());
  return {
    agent,
    rows: sweep.map((concurrency) =>
      ratioRow({
        part: "(l)",
        what: `power restore of ${all.length} tiny guests after a simulated power loss: agent spawn → all RUNNING (${concurrency === undefined ? "" : `restore_power_concurrency ${concurrency}, `}median of ${o.runs})`,
        ours: median(ours.get(concurrency)!),
        baseline: median(base),
        unit: "ms",
        max: 1.1,
        note: `vs a shell loop of virsh start over the same domains (median of ${base.length})`,
      }),
    ),
  };
}
