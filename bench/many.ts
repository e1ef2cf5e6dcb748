/**
 * The scale figures with N defined domains (default 1,000), each beside `virsh` doing
 * the same in the same run:
 * (b) DescribeInstances of all of them (pages of 100 through the SDK) against `virsh list --all`;
 *     start-up recovery (spawn until DescribeInstances answers, listing all of them) against
 *     one `virsh` process reading every domain's state and persistent XML;
 * (c) the agent's VmRSS with them (against an idle agent's).
 *
 * How the N instances come to be. The agent admits vCPUs up to host cores ×
 * cpu_allocation_ratio, and booting many TCG guests on a 2-core host takes minutes, so:
 *   1. a few (at most 4) are made through RunInstances, waited RUNNING, stopped HARD;
 *   2. the rest are copies of one of those: its domain XML (record included) with a new
 *      instance ID, UUID, MAC and system disk ID, the disk a copy of one fresh overlay,
 *      defined by one `virsh` script per 50 domains;
 *   3. the agent restarts on the same data directory: its start-up recovery adopts every
 *      domain that carries its record, exactly as after a crash or an upgrade.
 * At the end the agent is stopped and the domains go with one `virsh` script per 50
 * (terminating 1,000 instances one API call at a time would hold the test host for minutes).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { copyFile, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { BENCH_CIDR, imagePath, keepAliveClient, rssBytes, sdkClient, startAgent, waitForStates, type Agent, type AgentOptions, type CvmClient } from "./agent.js";
import { run, virsh, virshScript } from "./host.js";
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
  /** Where the copies' XML files go. */
  workDir: string;
  tracker: Tracker;
  log: (line: string) => void;
}

/** Instances made through RunInstances (the rest are copies of the first). */
const VIA_API = 4;
const MiB = 1024 * 1024;

export async function benchMany(o: ManyOptions): Promise<{ rows: Row[]; agent: Agent }> {
  const { tracker, log } = o;
  let agent = o.agent;
  const rows: Row[] = [];

  // 1. Through the API, as many as the host admits.
  const host = (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!;
  const viaApi = Math.min(o.total, VIA_API, host.CpuAvailable ?? 0, Math.floor(host.MemAvailable ?? 0));
  if (viaApi < 1) throw new Error(`the host admits no CDH_1C1G instance (${JSON.stringify(host)})`);
  const apiIds: string[] = [];
  const t0 = performance.now();
  for (let made = 0; made < viaApi; made += viaApi) {
    const count = viaApi;
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
    // The stop's outcome reaches libvirt's copy of the record just after the state does: a copy
    // taken before would carry an operation in progress into every copy (and recovery would
    // settle 996 interrupted operations).
    let xml = "";
    for (const deadline = Date.now() + 30_000; ; await sleep(200)) {
      xml = (await virsh(["dumpxml", "--inactive", template])).stdout;
      if (!xml.includes('"state":"OPERATING"')) break;
      if (Date.now() > deadline) throw new Error(`the record of ${template} still shows an operation in progress`);
    }
    await mkdir(o.workDir, { recursive: true });
    const fresh = join(o.workDir, "fresh-overlay.qcow2");
    await run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", imagePath(o.dataDir, o.imageId), fresh, "1G"]);
    const next = copyIds(copies);
    // Each copy its own address, as the agent's allocation would give (not the template's).
    const taken = new Set((await agent.client.DescribeInstances({ InstanceIds: apiIds })).InstanceSet!.flatMap((i) => i.PrivateIpAddresses ?? []));
    const ips = freeAddresses(copies, taken);
    // The template's other files (the config drive) go into each copy's instance directory.
    const templateDir = join(o.dataDir, "instances", template);
    const extras = (await readdir(templateDir)).filter((n) => n !== "console.log");
    const files: string[] = [];
    for (let i = 0; i < copies; i += 16) {
      files.push(...(await Promise.all(next.slice(i, i + 16).map((id, j) => writeCopy({ xml, template, id, ip: ips[i + j]!, index: viaApi + i + j, workDir: o.workDir, overlay: fresh, templateDir, extras, dataDir: o.dataDir })))));
    }
    for (const id of next) tracker.domains.add(id);
    for (let i = 0; i < files.length; i += 50) {
      await virshScript(files.slice(i, i + 50).map((f) => `define --file ${f}`));
    }
    const defined = new Set((await virsh(["list", "--all", "--name"])).stdout.split("\n").map((l) => l.trim()));
    const missing = next.filter((id) => !defined.has(id));
    if (missing.length) throw new Error(`${missing.length} copies were not defined (first: ${missing[0]})`);
    log(`  (b) ${copies} copies defined in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  }

  // The baseline of recovery: virsh reading what the agent reads at start-up, every
  // domain's state and persistent XML (one process, one script), after listing them.
  const names = (await virsh(["list", "--all", "--name"])).stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  const readAll = async () => {
    const t = performance.now();
    const listed = (await virsh(["list", "--all", "--name"])).stdout.split("\n").filter((l) => l.trim()).length;
    const out = await virshScript(names.flatMap((n) => [`domstate --domain ${n}`, `dumpxml --domain ${n} --inactive`]), { timeoutMs: 300_000 });
    if (listed < o.total || out.stdout.split("</domain>").length - 1 < o.total) throw new Error(`virsh read ${listed} domains, expected at least ${o.total}`);
    return performance.now() - t;
  };

  // 3. A fresh agent adopts them all: from the spawn until DescribeInstances lists them all.
  // Twice, each beside virsh reading the same (alternating), the median kept.
  const recovery: number[] = [];
  const virshRead: number[] = [];
  for (let round = 0; round < 2; round++) {
    await agent.stop();
    tracker.stoppers.delete("agent");
    virshRead.push(await readAll());
    const logFrom = (await stat(o.agentOptions.logFile).catch(() => undefined))?.size ?? 0;
    const spawnedAtMs = Date.now();
    agent = await startAgent(o.agentOptions);
    tracker.agent = agent;
    tracker.stoppers.set("agent", () => agent.stop());
    for (;;) {
      const r = await agent.client.DescribeInstances({ Limit: 1 });
      if ((r.TotalCount ?? 0) >= o.total) break;
      if (performance.now() - agent.spawnedAt > 120_000) throw new Error(`the restarted agent lists ${r.TotalCount} instances, expected ${o.total}`);
      await sleep(10);
    }
    recovery.push(performance.now() - agent.spawnedAt);
    log(`  (b) agent restarted with ${o.total} instances: API port open after ${agent.startMs.toFixed(0)} ms, all listed after ${recovery.at(-1)!.toFixed(0)} ms; virsh read them in ${virshRead.at(-1)!.toFixed(0)} ms`);
    log(`      where the start-up went (its debug log): ${await startupSteps(o.agentOptions.logFile, logFrom, spawnedAtMs)}`);
  }
  for (const id of tracker.domains) tracker.instances.add(id);
  tracker.domains.clear();
  await waitForStates(agent.client, [...tracker.instances], "STOPPED", { timeoutMs: 60_000 });

  // The official SDK with its defaults (a new connection per call); the same SDK on one
  // kept-alive connection (its own httpProfile.agent option), for reference.
  const keptAlive = keepAliveClient(agent.port);
  const listAll = async (client: CvmClient = agent.client) => {
    const first = await client.DescribeInstances({ Offset: 0, Limit: 100 });
    let seen = first.InstanceSet?.length ?? 0;
    for (let offset = 100; offset < (first.TotalCount ?? 0); offset += 100) {
      seen += (await client.DescribeInstances({ Offset: offset, Limit: 100 })).InstanceSet?.length ?? 0;
    }
    return { total: first.TotalCount ?? 0, seen };
  };
  const check = await listAll();
  if (check.seen < o.total) throw new Error(`DescribeInstances lists ${check.seen} instances, expected at least ${o.total}`);
  const pages = Math.ceil(check.total / 100);

  // Warm both sides up, then alternate: agent listing, virsh listing.
  for (let i = 0; i < 3; i++) {
    await listAll();
    await listAll(keptAlive);
    await virsh(["list", "--all"]);
  }
  const ours: number[] = [];
  const oursKeptAlive: number[] = [];
  const onePage: number[] = [];
  const base: number[] = [];
  const measuredFrom = Date.now();
  for (let i = 0; i < o.calls; i++) {
    let t = performance.now();
    await listAll();
    ours.push(performance.now() - t);
    t = performance.now();
    await listAll(keptAlive);
    oursKeptAlive.push(performance.now() - t);
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
  // The agent's own share of a page: its log times each request from its head to the answer
  // (auth, parse, the handler), without the body's serialisation and the client's side.
  const handled = await requestTimes(o.agentOptions.logFile, "DescribeInstances", measuredFrom);
  const floor = await sdkFloor(agent.client, check.total, o.calls, listAll);
  log(`  (b) the SDK client alone, listing the same ${pages} pages from a stub that answers the agent's bytes at once: median ${floor.toFixed(1)} ms (${(floor / median(base)).toFixed(2)}× virsh list --all): the floor of this client on this host`);
  if (handled.length) log(`  (b) the agent's own time per DescribeInstances page (its log, ${handled.length} requests): median ${median(handled).toFixed(1)} ms; the rest of a page's ${median(onePage).toFixed(1)} ms is the SDK client (signing, fetch, JSON of ~170 KB) and the body's serialisation`);
  if (o.want.b) {
    rows.push(
      ratioRow({
        part: "(b)",
        what: `DescribeInstances, ${check.total} instances (${pages} pages of ≤100, SDK; median of ${o.calls})`,
        ours: median(ours),
        baseline: median(base),
        unit: "ms",
        max: 0.2,
        note: "vs virsh list --all",
      }),
      {
        part: "(b)",
        what: "  the same on one kept-alive connection (the SDK's httpProfile.agent), for reference",
        ours: median(oursKeptAlive),
        baseline: median(base),
        unit: "ms",
        target: "—",
        met: undefined,
      },
      { part: "(b)", what: "  one DescribeInstances page (Limit 100), for reference", ours: median(onePage), baseline: undefined, unit: "ms", target: "—", met: undefined },
      {
        part: "(b)",
        what: `start-up recovery of ${o.total} domains until DescribeInstances lists them (median of ${recovery.length})`,
        ours: median(recovery),
        baseline: median(virshRead),
        unit: "ms",
        target: "< 3 s",
        met: median(recovery) < 3000,
        note: "baseline: virsh list --all + one virsh reading every domain's state and persistent XML",
      },
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
    // A diagnosis run: CDH_BENCH_AGENT_NODE_ARGS="--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=DIR" and CDH_BENCH_HEAP_SNAPSHOT=1.
    if (process.env.CDH_BENCH_HEAP_SNAPSHOT === "1") {
      process.kill(agent.pid, "SIGUSR2");
      await sleep(20_000);
      log("  (c) heap snapshot asked for (SIGUSR2; written to the agent's --diagnostic-dir)");
    }
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
  // The agent goes first; then the domains, one virsh script per 50 (see the tracker).
  await agent.stop();
  tracker.stoppers.delete("agent");
  for (const id of tracker.instances) tracker.domains.add(id);
  tracker.instances.clear();
  return { rows, agent };
}

/**
 * The restarted agent's start-up from its debug log (the lines it wrote from `from` on):
 * when its first command ended (node, its modules, the configuration), how long the
 * commands of each kind ran (the wall time they covered, overlaps counted once), and when
 * it said it serves. Empty at a log level above debug.
 */
export async function startupSteps(logFile: string, from: number, spawnedAtMs: number): Promise<string> {
  const text = (await readFile(logFile, "utf8").catch(() => "")).slice(from);
  const lines = text.split("\n").flatMap((l) => {
    try {
      return l.startsWith("{") ? [JSON.parse(l) as { time: string; msg: string; command?: string; durationMs?: number; step?: string }] : [];
    } catch {
      return [];
    }
  });
  const serving = lines.find((l) => l.msg === "cdh-agent is serving");
  if (!serving) return "(no start-up in the log)";
  const until = Date.parse(serving.time);
  const kinds = new Map<string, Array<[number, number]>>();
  let firstCommand: number | undefined;
  for (const l of lines) {
    const end = Date.parse(l.time);
    if (end > until || l.msg !== "command finished" || !l.command) continue;
    const start = end - (l.durationMs ?? 0);
    firstCommand ??= start;
    const kind = l.command.includes("@@cdh-agent-domain@@") ? "virsh reading domains" : l.command.startsWith("nft") ? "nft" : l.command.startsWith("virsh") ? "other virsh" : "other commands";
    kinds.set(kind, [...(kinds.get(kind) ?? []), [start, end]]);
  }
  const covered = (spans: Array<[number, number]>) => {
    let total = 0;
    let reach = -Infinity;
    for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
      if (b > reach) total += b - Math.max(a, reach);
      reach = Math.max(reach, b);
    }
    return total;
  };
  const parts = [...kinds].map(([k, spans]) => `${k} ${covered(spans).toFixed(0)} ms (${spans.length})`);
  // The agent's own marks (main.ts startupStep): when each start-up stage ended.
  const steps = lines.filter((l) => l.msg === "start-up step" && Date.parse(l.time) <= until).map((l) => `${l.step} ${Date.parse(l.time) - spawnedAtMs}`);
  return [
    `first command at ${firstCommand === undefined ? "?" : (firstCommand - spawnedAtMs).toFixed(0)} ms`,
    ...parts,
    `serving at ${(until - spawnedAtMs).toFixed(0)} ms`,
    ...(steps.length ? [`stages ended (ms): ${steps.join(", ")}`] : []),
  ].join("; ");
}

/**
 * The official SDK client's own cost of listing `total` instances: the agent's pages are
 * taken once and served again, as they are, by a stub HTTP server in this process that
 * answers at once; the same listing through the SDK is then timed (median of `calls`).
 */
async function sdkFloor(client: CvmClient, total: number, calls: number, listAll: (c: CvmClient) => Promise<{ total: number; seen: number }>): Promise<number> {
  const bodies = new Map<number, Buffer>();
  for (let offset = 0; offset < total; offset += 100) {
    const r = await client.DescribeInstances({ Offset: offset, Limit: 100 });
    bodies.set(offset, Buffer.from(JSON.stringify({ Response: r })));
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const offset = (JSON.parse(Buffer.concat(chunks).toString() || "{}") as { Offset?: number }).Offset ?? 0;
      const body = bodies.get(offset) ?? bodies.get(0)!;
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const stub = sdkClient((server.address() as AddressInfo).port);
    for (let i = 0; i < 3; i++) await listAll(stub);
    const times: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      await listAll(stub);
      times.push(performance.now() - t);
    }
    return median(times);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** durationMs of the agent's "api request" log lines for `action` written since `sinceMs` (epoch ms). */
async function requestTimes(logFile: string, action: string, sinceMs: number): Promise<number[]> {
  const text = await readFile(logFile, "utf8").catch(() => "");
  const out: number[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes('"msg":"api request"') || !line.includes(`"action":"${action}"`)) continue;
    try {
      const j = JSON.parse(line) as { time: string; durationMs?: number };
      if (Date.parse(j.time) >= sinceMs && typeof j.durationMs === "number") out.push(j.durationMs);
    } catch {
      // a torn line
    }
  }
  return out;
}

/** VmRSS split into anonymous memory (heap and the like) and file-backed pages (node's own code). */
export async function memoryLine(pid: number): Promise<string> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? NaN) / 1024;
  return `VmRSS ${((await rssBytes(pid)) / MiB).toFixed(1)} MiB (anonymous ${kib("Anonymous").toFixed(1)} MiB, file-backed ${(kib("Rss") - kib("Anonymous")).toFixed(1)} MiB)`;
}

/** Instance IDs the agent would accept (`ins-` + 8 of [a-z0-9]), unused so far. */
export function copyIds(n: number): string[] {
  const out = new Set<string>();
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  while (out.size < n) out.add(`ins-${[...randomBytes(8)].map((b) => alphabet[b % 36]).join("")}`);
  return [...out];
}

/** `n` host addresses of the bench's subnet, past its gateway, none of `taken`. */
export function freeAddresses(n: number, taken: ReadonlySet<string>): string[] {
  const base = BENCH_CIDR.base.split(".").reduce((a, b) => a * 256 + Number(b), 0);
  const size = 2 ** (32 - BENCH_CIDR.prefixLength);
  const out: string[] = [];
  for (let h = 2; h < size - 1 && out.length < n; h++) {
    const v = base + h;
    const ip = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
    if (!taken.has(ip)) out.push(ip);
  }
  if (out.length < n) throw new Error(`the bench's subnet ${BENCH_CIDR.base}/${BENCH_CIDR.prefixLength} has room for ${out.length} more instances, not ${n}`);
  return out;
}

/** Writes the XML of one copy (and its disk, a copy of a fresh overlay); returns the XML file. */
export async function writeCopy(o: {
  xml: string;
  template: string;
  id: string;
  ip: string;
  index: number;
  workDir: string;
  overlay: string;
  templateDir: string;
  extras: readonly string[];
  dataDir: string;
}): Promise<string> {
  const uuid = randomUUID();
  const mac = `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  const oldMac = /<mac address='([^']+)'\/>/.exec(o.xml)?.[1];
  const oldUuid = /<uuid>([^<]+)<\/uuid>/.exec(o.xml)?.[1];
  const oldDisk = /"diskId":"(disk-[a-z0-9]+)"/.exec(o.xml)?.[1];
  const oldPath = /"systemDisk":\{[^}]*"path":"([^"]+)"/.exec(o.xml)?.[1];
  const oldIp = /"ipv4":"([^"]+)"/.exec(o.xml)?.[1];
  if (!oldMac || !oldUuid || !oldDisk || !oldPath || !oldIp) throw new Error(`the domain XML of ${o.template} has no MAC, UUID, address or system disk record`);
  const diskId = `disk-${o.id.slice(4)}`;
  const xml = o.xml
    .replaceAll(o.template, o.id)
    // The NICs' tap names (cdh + the ID's 8 characters + the NIC's index, firewall-types.ts).
    .replaceAll(`dev='cdh${o.template.slice(4)}`, `dev='cdh${o.id.slice(4)}`)
    .replaceAll(oldUuid, uuid)
    .replaceAll(oldMac, mac)
    .replaceAll(oldDisk, diskId)
    // The address, whole (quoted: in the record's JSON and in any XML attribute).
    .replaceAll(`"${oldIp}"`, `"${o.ip}"`)
    .replaceAll(`'${oldIp}'`, `'${o.ip}'`)
    .replace(/"instanceName":"[^"]*"/, `"instanceName":"bench-b-${o.index}"`)
    .replace(/"launchIndex":\d+/, `"launchIndex":0`);
  await copyFile(o.overlay, oldPath.replaceAll(oldDisk, diskId));
  const dir = join(o.dataDir, "instances", o.id);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  // Regular files only: a running template's directory also holds sockets (its serial console's).
  for (const name of o.extras) {
    const from = join(o.templateDir, name);
    if ((await stat(from).catch(() => undefined))?.isFile()) await copyFile(from, join(dir, name));
  }
  const file = join(o.workDir, `${o.id}.xml`);
  await writeFile(file, xml);
  return file;
}
