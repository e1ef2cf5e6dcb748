/**
 * (p) Live migration of a tiny guest (1 GiB of memory, a 2 GiB system disk) between the two
 * namespaced test hosts (scripts/two-hosts.sh), through the agents (MigrateInstances, from the
 * call until the instance runs on B and is gone from A), against `virsh migrate --live --p2p
 * --persistent --copy-storage-all` of a domain by hand, in the same run: the agent's own
 * definition of another instance, moved the same way to B's libvirtd (its disk pre-created
 * there at the same size, as the agents do), and back. Runs alternate agent, hand, agent, … so
 * that drift hits both. Targets: total time ≤ 1.1× the hand-run's, and the downtime libvirt
 * reports (`domjobinfo --completed`) no larger than the hand-run's (median of the runs).
 */
import { execa } from "execa";
import { randomUUID } from "node:crypto";
import { chown, copyFile, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { Agent as HttpsAgent } from "node:https";
import { connect } from "node:net";
import { join } from "node:path";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { CommonClient } from "tencentcloud-sdk-nodejs-common";
import { AGENT_NODE_OPTIONS } from "../agent/node-flags.js";
import { parseJobInfo } from "../agent/migration/libvirt-job.js";
import { importImage, waitForStates, type CvmClient } from "./agent.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import { certificates } from "../test/support/two-hosts.js";

const A = { name: "cdhtest", address: "10.250.0.1", secretId: "AKIDcdhagentbenchmig0000000000001", secretKey: "cdh-agent-bench-migration-key-1", hostId: "host-cdhbmiga" };
const B = { name: "cdhtest2", address: "10.250.0.2", secretId: "AKIDcdhagentbenchmig0000000000002", secretKey: "cdh-agent-bench-migration-key-2", hostId: "host-cdhbmigb" };
const SUBNETS = [{ subnet_id: "subnet-default", vpc_id: "vpc-default", network: "cdhbmig-net", bridge: "cdhbmbr0", cidr: "10.211.0.0/24" }];

interface Side {
  client: CvmClient;
  common: CommonClient;
  stop(): Promise<void>;
}

function inB(argv: string[]): string[] {
  const m = process.env.CDH_MACHINE_NS_PID;
  if (!m) throw new Error("(p) runs inside the test host: bash scripts/in-testns.sh npm run bench -- --only p");
  return ["nsenter", "-t", m, "-m", "-n", "--", "nsenter", `--net=/run/netns/${B.name}`, `--mount=/run/cdh-hosts/${B.name}.mnt`, "--", ...argv];
}

async function startSide(o: { side: typeof A; peer: typeof B; port: number; peerPort: number; dataDir: string; peerDataDir: string; certDir: string; agentJs: string; logFile: string }): Promise<Side> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: process.env.HOME ?? "/root",
    CDH_AGENT_DATA_DIR: o.dataDir,
    CDH_AGENT_API_LISTEN: `${o.side.address}:${o.port}`,
    CDH_AGENT_API_TLS_CERT: join(o.certDir, `${o.side.name}.crt`),
    CDH_AGENT_API_TLS_KEY: join(o.certDir, `${o.side.name}.key`),
    CDH_AGENT_SECRET_ID: o.side.secretId,
    CDH_AGENT_SECRET_KEY: o.side.secretKey,
    CDH_AGENT_HOST_ID: o.side.hostId,
    CDH_AGENT_VIRT_TYPE: "qemu",
    CDH_AGENT_LIBVIRT_URI: "qemu:///system",
    CDH_AGENT_CPU_ALLOCATION_RATIO: "8",
    CDH_AGENT_RESERVED_MEMORY_GIB: "2",
    CDH_AGENT_DEFAULT_NETWORK: SUBNETS[0]!.network,
    CDH_AGENT_SUBNETS: JSON.stringify(SUBNETS),
    CDH_AGENT_METADATA_NFT_TABLE: "cdhbmig_metadata",
    CDH_AGENT_FIREWALL_NFT_TABLE: "cdhbmig_filter",
    CDH_AGENT_METRICS_LISTEN: "",
    CDH_AGENT_CONTROLLER_URL: "",
    CDH_AGENT_LOG_LEVEL: "info",
    CDH_AGENT_MIGRATION_ADDRESS: o.side.address,
    CDH_AGENT_MIGRATION_PEERS: JSON.stringify([
      {
        host_id: o.peer.hostId,
        endpoint: `https://${o.peer.address}:${o.peerPort}`,
        secret_id: o.peer.secretId,
        secret_key: o.peer.secretKey,
        ca_file: join(o.certDir, "ca.crt"),
        migration_address: o.peer.address,
      },
    ]),
  };
  const argv = [process.execPath, ...AGENT_NODE_OPTIONS, o.agentJs, "run"];
  const child = execa(...split(o.side === B ? inB(argv) : argv), {
    env,
    extendEnv: false,
    stdout: { file: o.logFile, append: true },
    stderr: { file: o.logFile, append: true },
    reject: false,
    cleanup: true,
  });
  let gone = false;
  const exited = child.then(() => (gone = true));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (gone) throw new Error(`the agent of ${o.side.name} exited before it listened; see ${o.logFile}`);
    if (Date.now() > deadline) throw new Error(`the agent of ${o.side.name} did not listen; see ${o.logFile}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect(o.port, o.side.address);
      s.once("connect", () => (s.destroy(), res(true)));
      s.once("error", () => res(false));
    });
    if (ok) break;
    await sleep(50);
  }
  const ca = await readFile(join(o.certDir, "ca.crt"));
  const httpProfile = { endpoint: `${o.side.address}:${o.port}`, protocol: "https://", reqTimeout: 60, agent: new HttpsAgent({ ca }) };
  const credential = { secretId: o.side.secretId, secretKey: o.side.secretKey };
  return {
    client: new tencentcloud.cvm.v20170312.Client({ credential, region: "ap-guangzhou", profile: { httpProfile } }),
    common: new CommonClient(`${o.side.address}:${o.port}`, "2017-03-12", { credential, region: "ap-guangzhou", profile: { httpProfile } }),
    async stop() {
      if (gone) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

function split(argv: string[]): [string, string[]] {
  return [argv[0]!, argv.slice(1)];
}

const virshA = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args]);
const virshB = (...args: string[]) => {
  const [cmd, rest] = split(inB(["virsh", "-c", "qemu:///system", ...args]));
  return execa(cmd, rest);
};

async function instanceOn(client: CvmClient, id: string): Promise<{ InstanceState?: string; LatestOperationState?: string; LatestOperationErrorMsg?: string } | undefined> {
  const r = await client.DescribeInstances({ Limit: 100 });
  return (r.InstanceSet ?? []).find((i) => i.InstanceId === id) as never;
}

/** Moves `id` from `from` to `to` through the agents; resolves with the wall time and libvirt's downtime. */
async function agentMove(from: Side, to: Side, toHostId: string, id: string, toVirsh: typeof virshA): Promise<{ ms: number; downtimeMs: number }> {
  const t0 = performance.now();
  await from.common.request("MigrateInstances", { InstanceIds: [id], DestinationHostId: toHostId, Live: true });
  let progressDowntime = Number.NaN;
  for (;;) {
    const there = await instanceOn(from.client, id);
    if (there?.LatestOperationState === "FAILED") throw new Error(`the agents' migration failed: ${there.LatestOperationErrorMsg ?? ""}`);
    const p = (there as { MigrationProgress?: { DowntimeMs?: number | null } } | undefined)?.MigrationProgress;
    if (p?.DowntimeMs !== undefined && p.DowntimeMs !== null) progressDowntime = p.DowntimeMs;
    if (!there) {
      const here = await instanceOn(to.client, id);
      if (here?.InstanceState === "RUNNING" && here.LatestOperationState === "SUCCESS") break;
    }
    await sleep(50);
  }
  const ms = performance.now() - t0;
  return { ms, downtimeMs: (await completedDowntime(toVirsh, id)) ?? progressDowntime };
}

/** The downtime libvirt recorded for the domain's last (incoming) migration job, on the destination. */
async function completedDowntime(virsh: typeof virshA, name: string): Promise<number | undefined> {
  const r = await virsh("domjobinfo", "--domain", name, "--completed", "--rawstats").catch(() => undefined);
  return r ? parseJobInfo(r.stdout).downtimeMs : undefined;
}

/** `virsh migrate` by hand of domain `name` (its disk pre-created on the other side at the same size). */
async function handMove(name: string, disk: { pathFrom: string; pathTo: string; bytes: number }, toward: "b" | "a", xmlFile: string): Promise<{ ms: number; downtimeMs: number }> {
  const dest = toward === "b" ? B : A;
  const createOn = (argv: string[]) => (toward === "b" ? execa(...split(inB(argv))) : execa(...split(argv)));
  await createOn(["qemu-img", "create", "-q", "-f", "qcow2", disk.pathTo, String(disk.bytes)]);
  const virsh = toward === "b" ? virshA : virshB;
  const t0 = performance.now();
  await virsh("migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-all", "--migrate-disks", "vda", "--xml", xmlFile, "--listen-address", dest.address, "--domain", name, "--desturi", `qemu+tcp://${dest.address}/system`, "--migrateuri", `tcp://${dest.address}`);
  const ms = performance.now() - t0;
  // The source's definition is gone (--undefinesource): the destination's record of the job.
  return { ms, downtimeMs: (await completedDowntime(toward === "b" ? virshB : virshA, name)) ?? Number.NaN };
}

export async function benchMigration(o: { repo: string; agentJs: string; tinyImage: string; workDir: string; runs: number; log: (line: string) => void }): Promise<Row[]> {
  await mkdir(o.workDir, { recursive: true, mode: 0o755 });
  await execa("bash", [join(o.repo, "scripts/two-hosts.sh"), "up"], { stdio: "inherit" });
  const certDir = join(o.workDir, "tls");
  await mkdir(certDir, { recursive: true });
  await certificates(certDir);
  const dataA = join(o.workDir, "a");
  const dataB = join(o.workDir, "b");
  await mkdir(dataA, { mode: 0o711 });
  await mkdir(dataB, { mode: 0o711 });
  const portA = 30000 + Math.floor(Math.random() * 5000);
  const portB = portA + 1;
  const a = await startSide({ side: A, peer: B, port: portA, peerPort: portB, dataDir: dataA, peerDataDir: dataB, certDir, agentJs: o.agentJs, logFile: join(o.workDir, "agent-a.log") });
  const b = await startSide({ side: B, peer: A, port: portB, peerPort: portA, dataDir: dataB, peerDataDir: dataA, certDir, agentJs: o.agentJs, logFile: join(o.workDir, "agent-b.log") }).catch(async (e: unknown) => {
    await a.stop();
    throw e;
  });
  const hand = `cdhbench-p-${process.pid}`;
  try {
    const imageId = await importImage(a.client, o.tinyImage, "bench-p");
    const run = async () => (await a.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 2 } })).InstanceIdSet![0]!;
    const id = await run();
    const handSource = await run();
    await waitForStates(a.client, [id, handSource], "RUNNING", { timeoutMs: 180_000 });
    // The hand-run's domain: the agent's definition of the second instance, renamed, without the record.
    const xml = (await virshA("dumpxml", "--inactive", handSource)).stdout
      .replace(/<name>[^<]*<\/name>/, `<name>${hand}</name>`)
      .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${randomUUID()}</uuid>`)
      .replace(/<entry name='uuid'>[^<]*<\/entry>/, "")
      .replace(/<metadata>[\s\S]*?<\/metadata>/, "")
      .replace(/<interface[\s\S]*?<\/interface>/g, "");
    const diskA = /<source file='([^']+\.qcow2)'/.exec(xml)![1]!;
    const diskBytes = Number(JSON.parse((await execa("qemu-img", ["info", "-U", "--output=json", diskA])).stdout)["virtual-size"]);
    // The same file name in B's data directory (the hand's own disk there).
    const diskB = join(dataB, "hand-p.qcow2");
    await virshA("destroy", handSource);
    // Its other files (config drive, serial socket, console log) in a folder of its own on each side.
    const instDir = join(dataA, "instances", handSource);
    const handA = join(o.workDir, "hand-a");
    const handB = join(o.workDir, "hand-b");
    // QEMU binds the VNC socket there itself: the folders are its user's, as the agent's vnc folder is.
    const qemuOwner = await stat(join(dataA, "vnc"));
    for (const d of [handA, handB]) {
      await mkdir(d, { recursive: true, mode: 0o755 });
      await copyFile(join(instDir, "config.iso"), join(d, "config.iso"));
      await chown(d, qemuOwner.uid, qemuOwner.gid);
    }
    const xmlFile = join(o.workDir, "p.xml");
    const xmlBFile = join(o.workDir, "p-b.xml");
    // The VNC socket outside the instance's folder (<data_dir>/vnc): one of its own on each side.
    const vncSock = join(dataA, "vnc", `${handSource}.sock`);
    await writeFile(xmlFile, xml.replaceAll(instDir, handA).replaceAll(vncSock, join(handA, "vnc.sock")));
    await writeFile(xmlBFile, xml.replaceAll(diskA, diskB).replaceAll(instDir, handB).replaceAll(vncSock, join(handB, "vnc.sock")));
    await virshA("define", xmlFile);
    await virshA("start", hand);
    await sleep(5000);
    const ours: Array<{ ms: number; downtimeMs: number }> = [];
    const base: Array<{ ms: number; downtimeMs: number }> = [];
    let ourSide: "a" | "b" = "a";
    let handSide: "a" | "b" = "a";
    for (let i = 0; i < o.runs; i++) {
      const r = ourSide === "a" ? await agentMove(a, b, B.hostId, id, virshB) : await agentMove(b, a, A.hostId, id, virshA);
      ours.push(r);
      ourSide = ourSide === "a" ? "b" : "a";
      o.log(`bench p: agent move ${i + 1}: ${r.ms.toFixed(0)} ms, downtime ${r.downtimeMs} ms`);
      const toward: "a" | "b" = handSide === "a" ? "b" : "a";
      const h: { ms: number; downtimeMs: number } = await handMove(hand, toward === "b" ? { pathFrom: diskA, pathTo: diskB, bytes: diskBytes } : { pathFrom: diskB, pathTo: diskA, bytes: diskBytes }, toward, toward === "b" ? xmlBFile : xmlFile);
      base.push(h);
      handSide = toward;
      o.log(`bench p: virsh migrate ${i + 1}: ${h.ms.toFixed(0)} ms, downtime ${h.downtimeMs} ms`);
    }
    await (ourSide === "a" ? a : b).client.TerminateInstances({ InstanceIds: [id] });
    await a.client.TerminateInstances({ InstanceIds: [handSource] });
    return [
      ratioRow({ part: "p", what: "live migration, 1 GiB memory + 2 GiB disk: agents vs virsh migrate --p2p --copy-storage-all (median)", ours: median(ours.map((r) => r.ms)), baseline: median(base.map((r) => r.ms)), unit: "ms", max: 1.1 }),
      ratioRow({ part: "p", what: "live migration downtime as libvirt reports it (median)", ours: median(ours.map((r) => r.downtimeMs)), baseline: median(base.map((r) => r.downtimeMs)), unit: "ms", max: 1 }),
    ];
  } finally {
    for (const v of [virshA, virshB]) {
      await v("destroy", hand).catch(() => undefined);
      await v("undefine", hand).catch(() => undefined);
    }
    await Promise.allSettled([a.stop(), b.stop()]);
    // The bench's subnet, made by each agent in its host's libvirtd.
    for (const v of [virshA, virshB]) {
      await v("net-destroy", SUBNETS[0]!.network).catch(() => undefined);
      await v("net-undefine", SUBNETS[0]!.network).catch(() => undefined);
    }
  }
}
