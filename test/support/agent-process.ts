/**
 * Runs the compiled agent as a real process (as systemd would), with a private data
 * directory, and talks to it with the official Tencent Cloud SDK.
 */
import { execa } from "execa";
import { createHash } from "node:crypto";
import { createServer, connect } from "node:net";
import { mkdtemp, mkdir, chmod } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as tencentcloud from "tencentcloud-sdk-nodejs-cvm";
import { CommonClient } from "tencentcloud-sdk-nodejs-common";
import { AGENT_NODE_OPTIONS } from "../../agent/node-flags.js";
import { createRequire } from "node:module";
import type * as TencentCloudAll from "tencentcloud-sdk-nodejs";

export const SECRET_ID = "AKIDcdhagenttest0000000000000001";
export const SECRET_KEY = "cdh-agent-test-secret-key-0001";
/**
 * The test agents' one subnet: its own libvirt network and bridge (the agent's defaults are
 * cdh-default on cdhbr0), in the test host's libvirtd. The addresses stay the defaults'
 * (10.201.0.0/24, gateway 10.201.0.1): the test host is its own network namespace.
 */
export const TEST_NETWORK = "cdhtest-net";
export const TEST_BRIDGE = "cdhtbr0";
export const TEST_GATEWAY = "10.201.0.1";
const TEST_SUBNETS = [{ subnet_id: "subnet-default", vpc_id: "vpc-default", network: TEST_NETWORK, bridge: TEST_BRIDGE, cidr: "10.201.0.0/24" }];
export type CvmClient = InstanceType<typeof tencentcloud.cvm.v20170312.Client>;

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolvePort(port));
    });
  });
}

export function sdkClient(port: number, secretKey = SECRET_KEY, secretId = SECRET_ID): CvmClient {
  return new tencentcloud.cvm.v20170312.Client({
    credential: { secretId, secretKey },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 30 } },
  });
}

export type VpcClient = InstanceType<typeof TencentCloudAll.vpc.v20170312.Client>;

/**
 * The official VPC client (the all-in-one `tencentcloud-sdk-nodejs`: there is no per-service VPC
 * package), pointed at the agent: security groups share the CVM endpoint.
 */
export function vpcClient(port: number): VpcClient {
  const all = createRequire(import.meta.url)("tencentcloud-sdk-nodejs") as typeof TencentCloudAll;
  return new all.vpc.v20170312.Client({
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 30 } },
  });
}

/**
 * The official SDK's common client (version 2017-03-12), for the CBS disk and snapshot
 * actions and the CVM actions the CVM SDK lacks. The agent serves both on one endpoint.
 */
export function commonClient(port: number): CommonClient {
  return new CommonClient(`127.0.0.1:${port}`, "2017-03-12", {
    credential: { secretId: SECRET_ID, secretKey: SECRET_KEY },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 60 } },
  });
}

export interface AgentProcess {
  readonly port: number;
  readonly dataDir: string;
  readonly hostId: string;
  readonly logFile: string;
  client: CvmClient;
  /** Kills the agent with a signal and waits for it to be gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Waits for the agent to exit by itself (e.g. at a fail point). */
  exited(): Promise<{ signal?: string; exitCode?: number }>;
  /** Starts a fresh agent process on the same data directory and port. */
  restart(extraEnv?: Record<string, string>): Promise<AgentProcess>;
  /**
   * Terminates every instance this agent holds, waits until they are gone, then stops
   * the agent: the next test file starts on a host with no instances of this one.
   */
  shutdown(): Promise<void>;
}

export interface StartOptions {
  repoRoot: string;
  dataDir?: string;
  port?: number;
  env?: Record<string, string>;
  /** A command the agent runs under, e.g. nsenter into another test host (test/support/two-hosts.ts). */
  wrap?: string[];
  /** The address the agent's API listens on (default 127.0.0.1; another needs TLS). */
  host?: string;
  /** The client the handle carries (default: the SDK over plain HTTP to 127.0.0.1). */
  client?: (port: number) => CvmClient;
}

export async function startAgentProcess(options: StartOptions): Promise<AgentProcess> {
  const dataDir = options.dataDir ?? (await makeDataDir());
  const port = options.port ?? (await freePort());
  const logFile = join(dataDir, "..", `agent-${port}.log`);
  const env: Record<string, string> = {
    CDH_AGENT_DATA_DIR: dataDir,
    CDH_AGENT_API_LISTEN: `${options.host ?? "127.0.0.1"}:${port}`,
    CDH_AGENT_SECRET_ID: SECRET_ID,
    CDH_AGENT_SECRET_KEY: SECRET_KEY,
    CDH_AGENT_VIRT_TYPE: "qemu",
    // One host ID per data directory: agents of concurrent runs on the shared libvirtd
    // adopt only their own domains.
    CDH_AGENT_HOST_ID: hostIdFor(dataDir),
    CDH_AGENT_LIBVIRT_URI: "qemu:///system",
    CDH_AGENT_CPU_ALLOCATION_RATIO: "8",
    CDH_AGENT_RESERVED_MEMORY_GIB: "2",
    CDH_AGENT_SOFT_STOP_TIMEOUT_S: "12",
    CDH_AGENT_SOFT_STOP_RETRY_S: "4",
    CDH_AGENT_DEFAULT_NETWORK: TEST_NETWORK,
    CDH_AGENT_SUBNETS: JSON.stringify(TEST_SUBNETS),
    // Not the agent's default table (cdh_metadata).
    CDH_AGENT_METADATA_NFT_TABLE: "cdhtest_metadata",
    CDH_AGENT_FIREWALL_NFT_TABLE: "cdhtest_filter",
    CDH_AGENT_LOG_LEVEL: "debug",
    CDH_AGENT_CONTROLLER_URL: "",
    ...options.env,
  };
  // The agent reads only CDH_AGENT_* and the basics a process needs.
  const baseEnv = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root" };
  const argv = [...(options.wrap ?? []), "node", ...AGENT_NODE_OPTIONS, resolve(options.repoRoot, "dist/agent/cli.js"), "run"];
  const child = execa(argv[0]!, argv.slice(1), {
    env: { ...baseEnv, ...env },
    extendEnv: false,
    stdout: { file: logFile, append: true },
    stderr: { file: logFile, append: true },
    reject: false,
    cleanup: true,
  });
  const exitedPromise = child.then((r) => ({ signal: r.signal, exitCode: r.exitCode }));

  await waitForPort(port, exitedPromise, logFile, options.host);
  const handle: AgentProcess = {
    port,
    dataDir,
    hostId: env.CDH_AGENT_HOST_ID!,
    logFile,
    client: options.client ? options.client(port) : sdkClient(port),
    async kill(signal = "SIGKILL") {
      child.kill(signal);
      await exitedPromise;
    },
    exited: () => exitedPromise,
    restart: (extraEnv) => startAgentProcess({ ...options, dataDir, port, env: { ...options.env, ...extraEnv } }),
    async shutdown() {
      const client = handle.client;
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        const alive = await client.DescribeInstances({ Limit: 100 }).catch(() => undefined);
        if (!alive) break;
        const ids = (alive.InstanceSet ?? []).filter((i) => i.InstanceState !== "TERMINATING").map((i) => i.InstanceId!);
        if ((alive.TotalCount ?? 0) === 0) break;
        if (ids.length) {
          // An instance mid-operation refuses; it is asked again on the next round.
          for (const id of ids) await client.TerminateInstances({ InstanceIds: [id] }).catch(() => undefined);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      child.kill("SIGTERM");
      await exitedPromise;
    },
  };
  return handle;
}

/** A stable host ID for a data directory (host- and 8 base-36 characters). */
export function hostIdFor(dataDir: string): string {
  const n = BigInt(`0x${createHash("sha256").update(dataDir).digest("hex").slice(0, 16)}`);
  return `host-${n.toString(36).padStart(8, "0").slice(-8)}`;
}

/** Where the test agents' data directories go; global-setup empties it when no other run is alive. */
export const TEST_DATA_ROOT = "/var/tmp/cdh-agent-tests";

export async function makeDataDir(): Promise<string> {
  const base = TEST_DATA_ROOT;
  await mkdir(base, { recursive: true });
  await chmod(base, 0o755);
  const dir = await mkdtemp(join(base, "run-"));
  await chmod(dir, 0o755);
  const data = join(dir, "data");
  await mkdir(data, { mode: 0o711 });
  return data;
}

async function waitForPort(port: number, exited: Promise<unknown>, logFile: string, host = "127.0.0.1"): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (gone) throw new Error(`the agent exited before it listened; see ${logFile}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, host);
      s.once("connect", () => (s.destroy(), res(true)));
      s.once("error", () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the agent did not listen on ${port} within 60 s; see ${logFile}`);
}

/** Polls DescribeInstancesStatus until the instance is in `state` (or one of them). */
export async function waitForState(client: CvmClient, instanceId: string, state: string | string[], timeoutMs = 120_000): Promise<string> {
  const wanted = Array.isArray(state) ? state : [state];
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const r = await client.DescribeInstancesStatus({ InstanceIds: [instanceId] });
    last = r.InstanceStatusSet?.[0]?.InstanceState ?? "(absent)";
    if (wanted.includes(last)) return last;
    if (last === "LAUNCH_FAILED") {
      // Terminal: say why at once (the agent's own message), instead of waiting out the deadline.
      const i = (await client.DescribeInstances({ InstanceIds: [instanceId] })).InstanceSet?.[0];
      throw new Error(`instance ${instanceId} is LAUNCH_FAILED: ${i?.LatestOperationErrorMsg ?? "(no message)"}`);
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`instance ${instanceId} did not reach ${wanted.join("|")} within ${timeoutMs} ms (last: ${last})`);
}

/** Imports an image through the API and waits until it is NORMAL. */
export async function importImage(client: CvmClient, path: string, name: string): Promise<string> {
  const r = await client.ImportImage({
    ImageUrl: `file://${path}`,
    ImageName: name,
    OsType: "Linux",
    OsVersion: "tiny",
    Architecture: "x86_64",
  });
  const imageId = r.ImageId!;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const d = await client.DescribeImages({ ImageIds: [imageId] });
    const state = d.ImageSet?.[0]?.ImageState;
    if (state === "NORMAL") return imageId;
    if (state !== "IMPORTING") throw new Error(`import of ${path} ended in ${state}`);
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`import of ${path} did not finish`);
}
