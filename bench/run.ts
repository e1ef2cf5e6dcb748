/**
 * `npm run bench`: the agent's speed and memory, each figure beside a baseline
 * measured in the same run on the same host. A script, not a test: it prints a table
 * and `bench: N of M targets met`; it fails only when it cannot measure.
 *
 *   bash scripts/in-testns.sh npm run bench [-- --only a,b,c,d,e,f,g] [--instances 1000]
 *
 * (a) RunInstances → RUNNING        vs qemu-img create + virsh define + virsh start
 * (b) DescribeInstances, 1,000 defined domains vs virsh list --all;
 *     start-up recovery until the API lists them vs virsh reading every domain's state and XML
 * (c) agent VmRSS with them         vs an idle agent's
 * (d) metadata req/s and p99        vs nginx on the same documents
 * (e) config drive build            vs xorriso alone
 * (f) ImportImage 1 GiB raw → NORMAL vs qemu-img convert -f raw -O qcow2 alone
 * (g) RunInstances 50 GB + 2×100 GB disks → RUNNING vs qemu-img create ×3 + virsh define + virsh start
 * (h) a change to a 100-rule security group bound to 50 NICs (one nft transaction) vs the same nft commands one process each
 * (i) TCP throughput between two tiny guests, a 100-rule group on each NIC vs no agent table at all
 * (j) AttachNetworkInterface → the NIC shows in a running tiny guest vs virsh attach-device --live --config of the same interface XML
 * (k) ResetInstancesType of a stopped instance → STOPPED with the new size vs virsh setvcpus + setmaxmem + setmem --config
 * (l) power restore of 50 tiny guests after a simulated power loss (agent spawn → all RUNNING) vs virsh start of them by a shell loop
 * (m) the monitor's collection of 200 paused instances: agent CPU per interval and VmRSS vs one virsh domstats --nowait
 * (n) GetMonitorData of 10 instances × 1,440 points: p99 latency
 * (o) DescribeInstanceVncUrl → first framebuffer update over the console WebSocket vs RFB straight to the VNC socket
 * (p) live migration of a tiny guest (1 GiB memory, 2 GiB disk) between the two namespaced hosts
 *     (scripts/two-hosts.sh) through the agents vs `virsh migrate --live --p2p --copy-storage-all` by hand
 *
 * (a) and (f) also print where the agent's time went, step by step beside the baseline's
 * steps, from the agent's debug log (every command with its duration; see timeline.ts).
 *
 * Everything made lives under /var/tmp/cdh-bench-*: removed at the end, also after a
 * failure or Ctrl-C, together with every domain the run made.
 */
import { access, chmod, mkdir, mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BENCH_FIREWALL_TABLE, BENCH_NETWORK, importImage, rssBytes, startAgent, type AgentOptions } from "./agent.js";
import { benchConfigDrive } from "./config-drive.js";
import { benchFirewall } from "./firewall.js";
import { benchGuestThroughput } from "./guest-throughput.js";
import { benchBigDisks } from "./big-disks.js";
import { benchImport } from "./import.js";
import { LIBVIRT_URI, run, virsh } from "./host.js";
import { benchLaunch } from "./launch.js";
import { benchMany, memoryLine } from "./many.js";
import { benchMonitor } from "./monitor.js";
import { benchMetadata } from "./metadata.js";
import { benchPowerRestore } from "./power-restore.js";
import { benchResetType } from "./reset-type.js";
import { benchEni } from "./eni.js";
import { benchVnc } from "./vnc.js";
import { benchMigration } from "./migration.js";
import { renderTable, sleep, type Row } from "./stats.js";
import { Tracker } from "./tracker.js";

const PARTS = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"] as const;
type Part = (typeof PARTS)[number];
const NETNS = "cdhtest";
const REPO = fileURLToPath(new URL("../..", import.meta.url));

const log = (line: string) => process.stderr.write(`${line}\n`);

function usage(): string {
  return `usage: bash scripts/in-testns.sh npm run bench [-- --only a,b,c,d,e,f,g] [--instances N] [--restore-concurrency 1,2,4] [--runs N] [--agent-log-level L] [--keep]
  a  RunInstances → RUNNING vs qemu-img + virsh define + virsh start; where the agent's extra time goes
  b  DescribeInstances with N defined domains (default 1000) vs virsh list --all; start-up recovery
     until DescribeInstances lists them all vs virsh reading every domain's state and persistent XML
  c  agent VmRSS with those instances vs an idle agent
  d  metadata req/s and p99 vs nginx (wrk, 64 keep-alive connections)
  e  config drive build vs xorriso alone
  f  ImportImage of a 1 GiB raw image (start → NORMAL) vs qemu-img convert -f raw -O qcow2 alone; where the agent's extra time goes
  g  RunInstances with a 50 GB system disk and two 100 GB data disks → RUNNING vs qemu-img create ×3 + virsh define + virsh start
     (its own agent on a sparse 400 GiB ext4 loop filesystem: the host's / has too little free for 250 GB of promises)
  h  a change to a 100-rule security group bound to 50 NICs applied by the agent's firewall (one nft transaction) vs the same
     nft commands one process each (the per-rule way), in a table of the run's own
  i  TCP throughput between two tiny guests with a 100-rule group (100 inbound, 100 outbound) on each NIC vs the same
     guests with the agent's firewall tables deleted (rebuilt by the agent after each baseline run)
  j  AttachNetworkInterface to a running tiny guest until the NIC shows in the guest (and the answer) vs virsh attach-device
     --live --config of the same interface XML until it shows, alternating on one guest
  k  ResetInstancesType of a stopped instance until DescribeInstances shows it STOPPED with the new size vs virsh setvcpus
     + setmaxmem + setmem --config on an equivalent stopped domain
  l  power restore after a simulated power loss: 50 instances (one tiny guest, 49 copies of its domain with 64 MiB and an
     empty disk) found shut off though they ran, from the agent's spawn until all are RUNNING vs virsh start of the same
     50 domains by a shell loop
  m  monitor collection of 200 paused instances: the agent's CPU per 10 s interval (with its virsh) and VmRSS vs the CPU
     of one virsh domstats --nowait of the same domains; the store's bytes on disk for a day of data
  n  GetMonitorData, 10 instances × 1,440 points (store filled synthetically), Monitor SDK kept alive: p99 latency
  o  DescribeInstanceVncUrl until the first framebuffer update over the console WebSocket vs RFB straight to the domain's
     VNC socket until its first update (one tiny guest, the same RFB client)
  --restore-concurrency 1,2,4  (l): restore_power_concurrency values to sweep, one row each (default: the agent's default)
  --runs N           (l): rounds per value (default 3, or 1 when sweeping)
  --agent-log-level  the agent's log level (default debug: every command with its duration, which (a) and (f) need
                     for their time lines; at info they print the figures without the time lines)
  --keep             keep the work directory (agent log, configs) after the run; domains are removed anyway`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      instances: { type: "string", default: "1000" },
      "restore-concurrency": { type: "string" },
      runs: { type: "string" },
      "agent-log-level": { type: "string", default: "debug" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(usage());
    return 0;
  }
  const only = new Set<Part>();
  for (const p of (values.only ?? PARTS.join(",")).split(",").map((s) => s.trim().toLowerCase()).filter(Boolean)) {
    if (!(PARTS as readonly string[]).includes(p)) throw new UsageError(`unknown part ${JSON.stringify(p)}\n${usage()}`);
    only.add(p as Part);
  }
  const restoreConcurrencies = (values["restore-concurrency"] ?? "").split(",").filter((x) => x.trim() !== "").map(Number);
  if (restoreConcurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new UsageError(`--restore-concurrency takes positive integers, comma-separated`);
  const runsOverride = values.runs === undefined ? undefined : Number(values.runs);
  if (runsOverride !== undefined && (!Number.isInteger(runsOverride) || runsOverride < 1)) throw new UsageError(`--runs must be a positive integer`);
  const instances = Number(values.instances);
  if (!Number.isInteger(instances) || instances < 1) throw new UsageError(`--instances must be a positive integer`);

  const needLibvirt = only.has("m") || only.has("n") || only.has("l") || only.has("a") || only.has("b") || only.has("c") || only.has("f") || only.has("g") || only.has("i") || only.has("j") || only.has("k") || only.has("o");
  const tinyImage = join(process.env.CDH_TEST_CACHE ?? "/var/cache/cdh-agent-test", "images", "tiny-normal.raw");
  const agentJs = join(REPO, "dist", "agent", "cli.js");
  await preflight({ only, needLibvirt, tinyImage, agentJs });

  const base = "/var/tmp";
  const root = await mkdtemp(join(base, "cdh-bench-"));
  await chmod(root, 0o755); // libvirt's QEMU user must reach the disks below
  const tracker = new Tracker();
  if (!values.keep) tracker.dirs.add(root);
  const dataDir = join(root, "data");
  const workDir = join(root, "work");
  await mkdir(dataDir, { mode: 0o711 });
  await mkdir(workDir, { mode: 0o755 });

  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    log(`bench: ${signal}; cleaning up`);
    void tracker.cleanup(log).finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const rows: Row[] = [];
  const started = performance.now();
  log(`bench: parts ${[...only].join(",")}; working in ${root}`);
  try {
    // The CPU-only parts first, while no guest runs.
    if (only.has("h")) {
      log("bench: (h) security group change: one nft transaction vs one nft process per rule");
      rows.push(...(await benchFirewall({ runs: 5, log })));
    }
    if (only.has("e")) {
      log("bench: (e) config drive");
      rows.push(...(await benchConfigDrive({ workDir: join(workDir, "e"), runs: 10, log })));
    }
    if (only.has("d")) {
      log("bench: (d) metadata endpoint vs nginx");
      rows.push(...(await benchMetadata({ workDir: join(workDir, "d"), rounds: 3, seconds: 5, connections: 64, tracker, log })));
    }
    if (only.has("p")) {
      // Its own two agents (one per test host), before the shared agent starts.
      log("bench: (p) live migration between the two test hosts: MigrateInstances vs virsh migrate --live --p2p --copy-storage-all");
      rows.push(...(await benchMigration({ repo: REPO, agentJs, tinyImage, workDir: join(workDir, "p"), runs: runsOverride ?? 3, log })));
    }
    if (needLibvirt) {
      const agentOptions: AgentOptions = {
        agentJs,
        dataDir,
        logFile: join(root, "agent.log"),
        env: { CDH_AGENT_LOG_LEVEL: values["agent-log-level"] ?? "debug" },
      };
      tracker.networks.add(BENCH_NETWORK);
      let agent = await startAgent(agentOptions);
      tracker.agent = agent;
      tracker.stoppers.set("agent", () => agent.stop());
      log(`bench: agent ${agent.pid} listening on 127.0.0.1:${agent.port} (log ${agentOptions.logFile})`);
      const foreign = (await agent.client.DescribeInstances({ Limit: 1 })).TotalCount ?? 0;
      if (foreign) log(`bench: note: the agent adopted ${foreign} instance(s) it found in libvirt that this run did not make; they are counted but never touched`);

      let idleRss: number | undefined;
      if (only.has("c")) {
        for (let i = 0; i < 5; i++) await agent.client.DescribeInstances({ Limit: 100 });
        await sleep(500);
        idleRss = await rssBytes(agent.pid);
        log(`  (c) idle agent: ${await memoryLine(agent.pid)}`);
      }
      if (only.has("f")) {
        log("bench: (f) ImportImage 1 GiB raw → NORMAL vs qemu-img convert alone");
        rows.push(...(await benchImport({ agent, dataDir, tinyImage, workDir: join(workDir, "f"), runs: 7, agentLog: agentOptions.logFile, log })));
      }
      if (only.has("g")) {
        log("bench: (g) RunInstances 50 GB + 2×100 GB disks → RUNNING vs qemu-img ×3 + virsh define + virsh start");
        rows.push(...(await benchBigDisks({ agentOptions, tinyImage, workDir: join(workDir, "g"), runs: 5, tracker, log })));
      }
      const imageId = await importImage(agent.client, tinyImage, `bench-tiny-${process.pid}`);
      if (only.has("a")) {
        log("bench: (a) RunInstances → RUNNING vs qemu-img + virsh define + virsh start");
        rows.push(...(await benchLaunch({ agent, dataDir, imageId, workDir: join(workDir, "a"), runs: 5, agentLog: agentOptions.logFile, tracker, log })));
      }
      if (only.has("i")) {
        log("bench: (i) TCP throughput between two tiny guests: 100-rule groups on both NICs vs no agent table");
        rows.push(...(await benchGuestThroughput({ agent, dataDir, imageId, table: BENCH_FIREWALL_TABLE, runs: 3, tracker, log })));
      }
      if (only.has("j")) {
        log("bench: (j) AttachNetworkInterface → the NIC in a running guest vs virsh attach-device of the same interface XML");
        rows.push(...(await benchEni({ agent, dataDir, imageId, workDir: join(workDir, "j"), runs: 5, tracker, log })));
      }
      if (only.has("k")) {
        log("bench: (k) ResetInstancesType of a stopped instance vs virsh setvcpus + setmaxmem + setmem --config");
        rows.push(...(await benchResetType({ agent, imageId, workDir: join(workDir, "k"), runs: 9, tracker, log })));
      }
      if (only.has("o")) {
        log("bench: (o) DescribeInstanceVncUrl → first framebuffer update over the WebSocket vs RFB straight to the VNC socket");
        rows.push(...(await benchVnc({ agent, dataDir, imageId, runs: 15, tracker, log })));
      }
      if (only.has("l")) {
        log("bench: (l) power restore of 50 instances after a simulated power loss vs a virsh start loop");
        const r = await benchPowerRestore({
          agent,
          agentOptions,
          dataDir,
          imageId,
          total: 50,
          runs: runsOverride ?? (restoreConcurrencies.length > 1 ? 1 : 3),
          concurrencies: restoreConcurrencies,
          workDir: join(workDir, "l"),
          tracker,
          log,
        });
        agent = r.agent;
        rows.push(...r.rows);
      }
      if (only.has("m") || only.has("n")) {
        log("bench: (m, n) the monitor: collection of 200 paused instances vs one virsh domstats; GetMonitorData of 10 × 1,440 points");
        const r = await benchMonitor({ agent, agentOptions, dataDir, imageId, want: { m: only.has("m"), n: only.has("n") }, total: 200, intervals: 6, workDir: join(workDir, "m"), tracker, log });
        agent = r.agent;
        rows.push(...r.rows);
        if (only.has("m") && (only.has("b") || only.has("c"))) {
          agent = await startAgent(agentOptions);
          tracker.agent = agent;
          tracker.stoppers.set("agent", () => agent.stop());
        }
      }
      if (only.has("b") || only.has("c")) {
        log(`bench: (b, c) ${instances} instances: DescribeInstances vs virsh list --all; start-up recovery vs virsh reading them; agent memory`);
        const r = await benchMany({
          agent,
          agentOptions,
          dataDir,
          imageId,
          total: instances,
          calls: 20,
          idleRss,
          want: { b: only.has("b"), c: only.has("c") },
          workDir: join(workDir, "b"),
          tracker,
          log,
        });
        agent = r.agent;
        rows.push(...r.rows);
      }
    }
  } catch (error) {
    log(`bench: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    if (rows.length) console.log(renderTable(rows));
    log("bench: cleaning up");
    await tracker.cleanup(log);
    return 1;
  }
  log("bench: cleaning up");
  const c0 = performance.now();
  await tracker.cleanup(log);
  log(`bench: cleaned up in ${((performance.now() - c0) / 1000).toFixed(1)} s; total ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (values.keep) log(`bench: kept ${root} (remove it yourself)`);

  console.log(renderTable(rows));
  const targets = rows.filter((r) => r.met !== undefined);
  console.log(`bench: ${targets.filter((r) => r.met).length} of ${targets.length} targets met`);
  return 0;
}

class UsageError extends Error {}

async function preflight(o: { only: Set<Part>; needLibvirt: boolean; tinyImage: string; agentJs: string }): Promise<void> {
  const problems: string[] = [];
  const have = async (cmd: string, pkg: string) => {
    const r = await run(["sh", "-c", `command -v ${cmd}`], { check: false });
    if (r.exitCode !== 0) problems.push(`${cmd} is not installed (Debian package ${pkg}; bash scripts/install-deps.sh --test installs it)`);
  };
  if (o.only.has("e")) await have("xorriso", "xorriso");
  if (o.only.has("d")) {
    await have("nginx", "nginx-light");
    await have("wrk", "wrk");
  }
  if (o.needLibvirt) {
    if (process.getuid?.() !== 0) problems.push("run as root: the agent drives qemu:///system");
    await have("virsh", "libvirt-clients");
    await have("qemu-img", "qemu-utils");
    const ns = (await run(["ip", "netns", "identify", String(process.pid)], { check: false })).stdout.trim();
    const up = (await virsh(["uri"], { check: false, timeoutMs: 15_000 })).exitCode === 0;
    if (ns !== NETNS || !up) {
      problems.push(
        (up ? `this process runs in network namespace "${ns || "(the host's)"}", not "${NETNS}"` : `libvirt does not answer on ${LIBVIRT_URI}`) +
          `; run the bench inside the test host (scripts/in-testns.sh brings it up):\n` +
          `    bash scripts/in-testns.sh npm run bench`,
      );
    }
    await access(o.tinyImage).catch(() => problems.push(`${o.tinyImage} is missing: run bash scripts/build-tiny-image.sh (outside the namespace: it downloads from Debian)`));
    await access(o.agentJs).catch(() => problems.push(`${o.agentJs} is missing: npm run build`));
  }
  if (problems.length) throw new UsageError(`bench cannot run:\n  - ${problems.join("\n  - ")}`);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(error instanceof UsageError ? error.message : `bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
