/**
 * (b) DescribeInstances with 200 shut-off instances against `virsh list --all`, and
 * (c) the agent's resident memory with them against an idle agent's.
 *
 * How the 200 instances come to be. The agent admits vCPUs up to host cores ×
 * cpu_allocation_ratio (at most 16), so a 2-core host takes at most 32 CDH_1C1G
 * instances through RunInstances. The bench therefore:
 *   1. creates as many as the host admits through RunInstances (batches of 16, each
 *      batch waited RUNNING, then StopInstances HARD and waited STOPPED);
 *   2. makes the rest (up to 200) as copies of one of those: its overlay made anew with
 *      qemu-img and its domain XML (record included) defined with a new instance ID,
 *      UUID and MAC;
 *   3. restarts the agent on the same data directory: its start-up recovery adopts
 *      every domain that carries its record, exactly as after a crash or an upgrade,
 *      so all 200 are its instances from then on (listed, described, terminated
 *      through the API at the end).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { imagePath, rssBytes, startAgent, waitForStates, type Agent, type AgentOptions } from "./agent.js";
import { run, virsh } from "./host.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

export interface ManyOptions {
  /** The running agent; it is restarted (and the new one returned in the result). */
  agent: Agent;
  agentOptions: AgentOptions;
  dataDir: string;
  imageId: string;
  total: number;
  calls: number;
  /** RSS of the idle agent, measured before it held anything (for (c)). */
  idleRss: number | undefined;
  want: { b: boolean; c: boolean };
  tracker: Tracker;
  log: (line: string) => void;
}

const BATCH = 16;
const MiB = 1024 * 1024;

export async function benchMany(o: ManyOptions): Promise<{ rows: Row[]; agent: Agent }> {
  const { tracker, log } = o;
  let agent = o.agent;
  const rows: Row[] = [];

  // 1. Through the API, as many as the host admits.
  const host = (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!;
  const viaApi = Math.min(o.total, host.CpuAvailable ?? 0, Math.floor(host.MemAvailable ?? 0));
  if (viaApi < 1) throw new Error(`the host admits no CDH_1C1G instance (${JSON.stringify(host)})`);
  const apiIds: string[] = [];
  const t0 = performance.now();
  for (let made = 0; made < viaApi; made += BATCH) {
    const count = Math.min(BATCH, viaApi - made);
    const r = await agent.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: o.imageId,
      SystemDisk: { DiskSize: 1 },
      InstanceCount: count,
      InstanceName: `bench-b-{R:${made}}`,
    });
    const ids = r.InstanceIdSet!;
    for (const id of ids) tracker.instances.add(id);
    apiIds.push(...ids);
    await waitForStates(agent.client, ids, "RUNNING", { timeoutMs: 180_000 });
    await agent.client.StopInstances({ InstanceIds: ids, StopType: "HARD" });
    await waitForStates(agent.client, ids, "STOPPED", { timeoutMs: 120_000 });
  }
  log(`  (b) ${viaApi} instances made through RunInstances and stopped HARD in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // 2. Copies of one of them, up to the total.
  const copies = o.total - viaApi;
  if (copies > 0) {
    const t1 = performance.now();
    const template = apiIds[0]!;
    const xml = (await virsh(["dumpxml", "--inactive", template])).stdout;
    const next = copyIds(copies);
    for (let i = 0; i < copies; i += 8) {
      await Promise.all(next.slice(i, i + 8).map((id, j) => defineCopy({ xml, template, id, index: viaApi + i + j, dataDir: o.dataDir, imageId: o.imageId, tracker })));
    }
    log(`  (b) ${copies} copies defined in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  }

  // 3. A fresh agent adopts them all.
  await agent.stop();
  tracker.stoppers.delete("agent");
  agent = await startAgent(o.agentOptions);
  tracker.agent = agent;
  tracker.stoppers.set("agent", () => agent.stop());
  for (const id of tracker.domains) tracker.instances.add(id);
  tracker.domains.clear();
  log(`  (b) agent restarted with ${o.total} instances: API port open after ${agent.startMs.toFixed(0)} ms`);
  await waitForStates(agent.client, [...tracker.instances], "STOPPED", { timeoutMs: 60_000 });

  const listAll = async () => {
    const first = await agent.client.DescribeInstances({ Offset: 0, Limit: 100 });
    let seen = first.InstanceSet?.length ?? 0;
    for (let offset = 100; offset < (first.TotalCount ?? 0); offset += 100) {
      seen += (await agent.client.DescribeInstances({ Offset: offset, Limit: 100 })).InstanceSet?.length ?? 0;
    }
    return { total: first.TotalCount ?? 0, seen };
  };
  const check = await listAll();
  if (check.seen < o.total) throw new Error(`DescribeInstances lists ${check.seen} instances, expected at least ${o.total}`);
  const pages = Math.ceil(check.total / 100);

  // Warm both sides up, then alternate: agent listing, virsh listing.
  for (let i = 0; i < 3; i++) {
    await listAll();
    await virsh(["list", "--all"]);
  }
  const ours: number[] = [];
  const onePage: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < o.calls; i++) {
    let t = performance.now();
    await listAll();
    ours.push(performance.now() - t);
    t = performance.now();
    await agent.client.DescribeInstances({ Offset: 0, Limit: 100 });
    onePage.push(performance.now() - t);
    t = performance.now();
    const v = await virsh(["list", "--all"]);
    base.push(performance.now() - t);
    if (i === 0) {
      const lines = v.stdout.split("\n").filter((l) => /^\s*(\d+|-)\s+\S+/.test(l)).length;
      if (lines < o.total) throw new Error(`virsh list --all shows ${lines} domains, expected at least ${o.total}`);
    }
  }
  if (o.want.b) {
    rows.push(
      ratioRow({
        part: "(b)",
        what: `DescribeInstances, ${check.total} instances (${pages} pages of ≤100, SDK; median of ${o.calls})`,
        ours: median(ours),
        baseline: median(base),
        unit: "ms",
        max: 2,
      }),
      { part: "(b)", what: "  one DescribeInstances page (Limit 100), for reference", ours: median(onePage), baseline: undefined, unit: "ms", target: "—", met: undefined },
      { part: "(b)", what: `  agent start-up adopting ${o.total} domains (API port open)`, ours: agent.startMs, baseline: undefined, unit: "ms", target: "—", met: undefined },
    );
  }
  if (o.want.c) {
    const rss = await rssBytes(agent.pid);
    log(`  (c) agent memory after the listings: ${await memoryLine(agent.pid)}`);
    // The same process a little later: does the figure settle (start-up garbage) or stay?
    await sleep(15_000);
    for (let i = 0; i < 3; i++) await agent.client.DescribeInstances({ Limit: 100 });
    const later = await rssBytes(agent.pid);
    log(`  (c) agent memory 15 s later: ${await memoryLine(agent.pid)}`);
    rows.push({
      part: "(c)",
      what: `agent VmRSS with ${check.total} instances (baseline: idle, none)`,
      ours: rss / MiB,
      baseline: o.idleRss !== undefined ? o.idleRss / MiB : undefined,
      unit: "MiB",
      target: "< 100 MB",
      met: rss < 100 * 1000 * 1000,
    });
    rows.push({
      part: "(c)",
      what: "  the same agent 15 s later, for reference",
      ours: later / MiB,
      baseline: o.idleRss !== undefined ? o.idleRss / MiB : undefined,
      unit: "MiB",
      target: "—",
      met: undefined,
    });
  }
  return { rows, agent };
}

/** VmRSS split into anonymous memory (heap and the like) and file-backed pages (node's own code). */
export async function memoryLine(pid: number): Promise<string> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? NaN) / 1024;
  return `VmRSS ${((await rssBytes(pid)) / MiB).toFixed(1)} MiB (anonymous ${kib("Anonymous").toFixed(1)} MiB, file-backed ${(kib("Rss") - kib("Anonymous")).toFixed(1)} MiB)`;
}

/** Instance IDs the agent would accept (`ins-` + 8 of [a-z0-9]), unused so far. */
function copyIds(n: number): string[] {
  const out = new Set<string>();
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  while (out.size < n) out.add(`ins-${[...randomBytes(8)].map((b) => alphabet[b % 36]).join("")}`);
  return [...out];
}

async function defineCopy(o: { xml: string; template: string; id: string; index: number; dataDir: string; imageId: string; tracker: Tracker }): Promise<void> {
  const uuid = randomUUID();
  const mac = `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  const dir = join(o.dataDir, "instances", o.id);
  const disk = join(dir, "system.qcow2");
  const oldMac = /<mac address='([^']+)'\/>/.exec(o.xml)?.[1];
  const oldUuid = /<uuid>([^<]+)<\/uuid>/.exec(o.xml)?.[1];
  if (!oldMac || !oldUuid) throw new Error(`the domain XML of ${o.template} has no MAC or UUID`);
  const xml = o.xml
    .replaceAll(o.template, o.id)
    .replaceAll(oldUuid, uuid)
    .replaceAll(oldMac, mac)
    .replace(/"instanceName":"[^"]*"/, `"instanceName":"bench-b-${o.index}"`)
    .replace(/"launchIndex":\d+/, `"launchIndex":0`);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", imagePath(o.dataDir, o.imageId), disk, "1G"]);
  const file = join(dir, "domain.xml");
  await writeFile(file, xml);
  o.tracker.domains.add(o.id);
  await virsh(["define", file]);
  await rm(file);
}
