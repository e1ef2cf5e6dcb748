/**
 * The agent as a real process (the compiled `dist/agent/cli.js run`) on a private data
 * directory, and the official CVM SDK to talk to it. Same environment as the
 * integration tests use (test/support/agent-process.ts), with the bench's own ratios.
 */
import { execa } from "execa";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { connect } from "node:net";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { join } from "node:path";
import { AGENT_NODE_OPTIONS } from "../agent/node-flags.js";
import { freePort, sdkClient as testSdkClient, type CvmClient } from "../test/support/agent-process.js";
import { sleep } from "./stats.js";

export { freePort, type CvmClient };

export const SECRET_ID = "AKIDcdhagentbench000000000000001";
export const SECRET_KEY = "cdh-agent-bench-secret-key-0001";
/**
 * The bench's own network and bridge in the test host (neither the agent's defaults,
 * cdh-default on cdhbr0, nor the test agents' cdhtest-net on cdhtbr0), removed at the end
 * of the run (tracker.ts). A /21: (b) gives each of its 1,000 instances an address of its
 * own, as the agent's allocation would (two NICs on one address are refused at start).
 */
export const BENCH_NETWORK = "cdhbench-net";
export const BENCH_BRIDGE = "cdhbbr0";
export const BENCH_CIDR = { base: "10.210.0.0", prefixLength: 21 };
const BENCH_SUBNETS = [{ subnet_id: "subnet-default", vpc_id: "vpc-default", network: BENCH_NETWORK, bridge: BENCH_BRIDGE, cidr: `${BENCH_CIDR.base}/${BENCH_CIDR.prefixLength}` }];
export const HOST_ID = "host-cdhbench";
/** The bench agent's firewall tables (inet and bridge), config firewall_nft_table. */
export const BENCH_FIREWALL_TABLE = "cdhbench_filter";

/** The SDK client of the integration tests, with the bench's credentials (the SDK's defaults: a new connection per call). */
export function sdkClient(port: number): CvmClient {
  return testSdkClient(port, SECRET_KEY, SECRET_ID);
}

/**
 * The same SDK client on one kept-alive connection, as a controller listing a host would
 * hold it: the SDK's own `httpProfile.agent` option. Without an agent the SDK's fetch
 * (node-fetch 2) sends `Connection: close`, and every call opens a new connection.
 */
export function keepAliveClient(port: number): CvmClient {
  return new tencentcloud.cvm.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 30, agent: new HttpAgent({ keepAlive: true, maxSockets: 1 }) } },
  });
}

export interface Agent {
  readonly pid: number;
  readonly port: number;
  readonly client: CvmClient;
  /** Milliseconds from spawn to the API port accepting connections. */
  readonly startMs: number;
  /** performance.now() just before the spawn. */
  readonly spawnedAt: number;
  /** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone. */
  stop(): Promise<void>;
  alive(): boolean;
}

export interface AgentOptions {
  agentJs: string;
  dataDir: string;
  logFile: string;
  env?: Record<string, string>;
}

export async function startAgent(options: AgentOptions): Promise<Agent> {
  const port = await freePort();
  const env: Record<string, string> = {
    CDH_AGENT_DATA_DIR: options.dataDir,
    CDH_AGENT_API_LISTEN: `127.0.0.1:${port}`,
    CDH_AGENT_SECRET_ID: SECRET_ID,
    CDH_AGENT_SECRET_KEY: SECRET_KEY,
    CDH_AGENT_VIRT_TYPE: "qemu",
    CDH_AGENT_HOST_ID: HOST_ID,
    CDH_AGENT_LIBVIRT_URI: "qemu:///system",
    // Room for the (b) instances: 16 vCPUs per core is the largest ratio the config takes.
    CDH_AGENT_CPU_ALLOCATION_RATIO: "16",
    CDH_AGENT_MEMORY_ALLOCATION_RATIO: "16",
    CDH_AGENT_RESERVED_MEMORY_GIB: "2",
    CDH_AGENT_SOFT_STOP_TIMEOUT_S: "12",
    CDH_AGENT_SOFT_STOP_RETRY_S: "4",
    CDH_AGENT_DEFAULT_NETWORK: BENCH_NETWORK,
    CDH_AGENT_SUBNETS: JSON.stringify(BENCH_SUBNETS),
    // Not the agent's default tables (cdh_metadata, cdh_filter), as for the test agents.
    CDH_AGENT_METADATA_NFT_TABLE: "cdhtest_metadata",
    CDH_AGENT_FIREWALL_NFT_TABLE: BENCH_FIREWALL_TABLE,
    CDH_AGENT_LOG_LEVEL: "info",
    CDH_AGENT_CONTROLLER_URL: "",
    ...options.env,
  };
  const baseEnv = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root" };
  const t0 = performance.now();
  // Extra node options for a diagnosis run (say `--trace-gc`), never needed for the figures.
  const extra = (process.env.CDH_BENCH_AGENT_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
  const child = execa(process.execPath, [...AGENT_NODE_OPTIONS, ...extra, options.agentJs, "run"], {
    env: { ...baseEnv, ...env },
    extendEnv: false,
    stdout: { file: options.logFile, append: true },
    stderr: { file: options.logFile, append: true },
    reject: false,
    cleanup: true,
  });
  let gone = false;
  const exited = child.then(() => {
    gone = true;
  });

  const deadline = Date.now() + 120_000;
  for (;;) {
    if (gone) throw new Error(`the agent exited before it listened; see ${options.logFile}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the agent did not listen within 120 s; see ${options.logFile}`);
    }
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), res(true)));
      s.once("error", () => res(false));
    });
    if (ok) break;
    await sleep(25);
  }
  const startMs = performance.now() - t0;
  return {
    pid: child.pid!,
    port,
    client: sdkClient(port),
    startMs,
    spawnedAt: t0,
    alive: () => !gone,
    async stop() {
      if (gone) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** VmRSS of a process, in bytes. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Polls DescribeInstancesStatus every `pollMs` until every instance is in `state`. */
export async function waitForStates(client: CvmClient, ids: readonly string[], state: string, o: { timeoutMs?: number; pollMs?: number } = {}): Promise<void> {
  const deadline = Date.now() + (o.timeoutMs ?? 180_000);
  let last: string[] = [];
  for (;;) {
    const states = new Map<string, string>();
    for (let i = 0; i < ids.length; i += 100) {
      const r = await client.DescribeInstancesStatus({ InstanceIds: ids.slice(i, i + 100), Limit: 100 });
      for (const s of r.InstanceStatusSet ?? []) states.set(s.InstanceId!, s.InstanceState!);
    }
    last = ids.map((id) => states.get(id) ?? "(absent)");
    if (last.every((s) => s === state)) return;
    const failed = last.find((s) => s === "LAUNCH_FAILED");
    if (failed && state !== "LAUNCH_FAILED") throw new Error(`an instance ended in LAUNCH_FAILED while waiting for ${state}`);
    if (Date.now() > deadline) {
      const counts = [...new Set(last)].map((s) => `${s}: ${last.filter((x) => x === s).length}`).join(", ");
      throw new Error(`instances did not all reach ${state} within ${o.timeoutMs ?? 180_000} ms (${counts})`);
    }
    await sleep(o.pollMs ?? 200);
  }
}

/** Terminates the given instances (those the agent still knows) and waits until they are gone. */
export async function terminateAll(client: CvmClient, ids: readonly string[], timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = [...ids];
  while (pending.length) {
    const known: Array<{ id: string; state: string }> = [];
    for (let i = 0; i < pending.length; i += 100) {
      const r = await client.DescribeInstancesStatus({ InstanceIds: pending.slice(i, i + 100), Limit: 100 });
      for (const s of r.InstanceStatusSet ?? []) known.push({ id: s.InstanceId!, state: s.InstanceState! });
    }
    pending = known.map((k) => k.id);
    if (!pending.length) return;
    const ready = known.filter((k) => k.state !== "TERMINATING").map((k) => k.id);
    for (let i = 0; i < ready.length; i += 100) {
      // All or nothing: one instance mid-operation refuses the whole call, so fall back to one by one.
      await client.TerminateInstances({ InstanceIds: ready.slice(i, i + 100) }).catch(async () => {
        for (const id of ready.slice(i, i + 100)) await client.TerminateInstances({ InstanceIds: [id] }).catch(() => undefined);
      });
    }
    if (Date.now() > deadline) throw new Error(`${pending.length} instances were still there after ${timeoutMs} ms`);
    await sleep(300);
  }
}

/** Imports an image file through the API and waits until it is NORMAL; returns its ID. */
export async function importImage(client: CvmClient, path: string, name: string): Promise<string> {
  const r = await client.ImportImage({ ImageUrl: `file://${path}`, ImageName: name, OsType: "Linux", OsVersion: "tiny", Architecture: "x86_64" });
  const imageId = r.ImageId!;
  const deadline = Date.now() + 120_000;
  for (;;) {
    const d = await client.DescribeImages({ ImageIds: [imageId] });
    const state = d.ImageSet?.[0]?.ImageState;
    if (state === "NORMAL") return imageId;
    if (state !== "IMPORTING") throw new Error(`import of ${path} ended in ${state}`);
    if (Date.now() > deadline) throw new Error(`import of ${path} did not finish`);
    await sleep(100);
  }
}

/** The base file an image's overlays back onto (named in its record: base/<sha256>.qcow2). */
export const imagePath = (dataDir: string, imageId: string) => {
  const record = JSON.parse(readFileSync(join(dataDir, "images", `${imageId}.json`), "utf8")) as { baseFile?: string };
  return join(dataDir, "images", record.baseFile ?? `${imageId}.qcow2`);
};
