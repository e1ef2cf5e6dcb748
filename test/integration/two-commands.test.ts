/**
 * The README's two commands on one machine, in either order: the agent on its defaults
 * in the machine's own namespaces (what `bash scripts/agent.sh` runs: libvirt network
 * cdh-default on bridge cdhbr0, the nftables table cdh_metadata, the machine's libvirtd)
 * and the test agents in the test host (scripts/in-testns.sh) work side by side; neither
 * sees the other's networks; bringing the test host up again leaves the machine's libvirtd
 * alone; and an agent whose network shares a bridge with one libvirt has stops at start
 * with one line naming both, defining nothing.
 *
 * The machine's namespaces are reached through CDH_MACHINE_NS_PID, which
 * scripts/in-testns.sh sets. What the test adds there (a libvirtd it had to start, the
 * cdh-default network, the cdh_metadata table, the cdh_filter firewall tables) it removes
 * again; what was there before it leaves as it was.
 */
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AGENT_NODE_OPTIONS } from "../../agent/node-flags.js";
import { SECRET_ID, SECRET_KEY, TEST_BRIDGE, TEST_NETWORK, freePort, startAgentProcess, type AgentProcess } from "../support/agent-process.js";

const machinePid = process.env.CDH_MACHINE_NS_PID ?? "";

/** A command in the machine's own mount and network namespaces. */
function inMachine(argv: string[], options: { cwd?: string; env?: Record<string, string>; timeout?: number } = {}) {
  return execa("nsenter", ["-t", machinePid, "-m", "-n", `--wd=${options.cwd ?? "/"}`, "--", ...argv], {
    reject: false,
    timeout: options.timeout ?? 60_000,
    ...(options.env ? { env: options.env, extendEnv: false } : {}),
  });
}
const machineVirsh = (...args: string[]) => inMachine(["virsh", "-c", "qemu:///system", ...args]);
const hostVirsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
const names = (stdout: string) => stdout.split("\n").map((s) => s.trim()).filter(Boolean);

const BASE_ENV = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root" };

/** A signed DescribeInstances with the official SDK from the machine's network namespace. */
async function describeFromMachine(root: string, port: number): Promise<{ ok: boolean; out: string }> {
  const script = `
    const cvm = require("tencentcloud-sdk-nodejs-cvm");
    const c = new cvm.cvm.v20170312.Client({
      credential: { secretId: process.env.SID, secretKey: process.env.SKEY }, region: "ap-guangzhou",
      profile: { httpProfile: { endpoint: "127.0.0.1:" + process.env.PORT, protocol: "http://", reqTimeout: 10 } },
    });
    c.DescribeInstances({}).then((r) => console.log("TotalCount=" + r.TotalCount), (e) => { console.error(String(e.code || e.message)); process.exit(1); });`;
  const r = await inMachine(["node", "-e", script], {
    cwd: root,
    env: { ...BASE_ENV, SID: SECRET_ID, SKEY: SECRET_KEY, PORT: String(port) },
    timeout: 20_000,
  });
  return { ok: r.exitCode === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

interface MachineAgent {
  port: number;
  logFile: string;
  stop(): Promise<void>;
}

/** `scripts/agent.sh`'s agent: the defaults, but a data directory and port of its own. */
async function startMachineAgent(root: string, dataDir: string): Promise<MachineAgent> {
  const port = Number(
    (await inMachine(["node", "-e", "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"], { env: BASE_ENV }))
      .stdout.trim(),
  );
  expect(port).toBeGreaterThan(0);
  const logFile = join(dataDir, "..", `machine-agent-${port}.log`);
  const child = execa(
    "nsenter",
    ["-t", machinePid, "-m", "-n", `--wd=${root}`, "--", "node", ...AGENT_NODE_OPTIONS, "dist/agent/cli.js", "run"],
    {
      env: {
        ...BASE_ENV,
        CDH_AGENT_DATA_DIR: dataDir,
        CDH_AGENT_API_LISTEN: `127.0.0.1:${port}`,
        CDH_AGENT_SECRET_ID: SECRET_ID,
        CDH_AGENT_SECRET_KEY: SECRET_KEY,
        CDH_AGENT_VIRT_TYPE: "qemu",
        CDH_AGENT_CONTROLLER_URL: "",
      },
      extendEnv: false,
      stdout: { file: logFile, append: true },
      stderr: { file: logFile, append: true },
      reject: false,
    },
  );
  let exited = false;
  void child.then(() => (exited = true));
  const deadline = Date.now() + 60_000;
  let last = { ok: false, out: "" };
  while (Date.now() < deadline && !exited) {
    last = await describeFromMachine(root, port);
    if (last.ok) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!last.ok) {
    child.kill("SIGKILL");
    await child;
    throw new Error(`the agent on its defaults did not answer (${last.out}); its log:\n${await readFile(logFile, "utf8").catch(() => "")}`);
  }
  return {
    port,
    logFile,
    async stop() {
      child.kill("SIGTERM");
      const r = await Promise.race([child, new Promise((res) => setTimeout(res, 15_000, undefined))]);
      if (r === undefined) {
        child.kill("SIGKILL");
        await child;
      }
    },
  };
}

describe("the agent on its defaults and the test host, on one machine", () => {
  const root = inject("repoRoot");
  let work = "";
  let startedLibvirtd = false;
  let startedVirtlogd = false;
  let hadDefaultNetwork = true;
  let hadMetadataTable = true;
  let hadFirewallTables = true;
  let machineLibvirtdPid = "";
  let machineAgent: MachineAgent | undefined;
  let testAgent: AgentProcess | undefined;

  beforeAll(async () => {
    // Fail closed: without the machine's namespaces this test proves nothing.
    expect(machinePid, "CDH_MACHINE_NS_PID (run through scripts/in-testns.sh)").toMatch(/^\d+$/);
    const mine = (await execa("readlink", ["/proc/self/ns/net"])).stdout;
    const theirs = (await execa("readlink", [`/proc/${machinePid}/ns/net`])).stdout;
    expect(theirs, "the machine's network namespace is not the test host's").not.toBe(mine);

    work = await mkdtemp(join(tmpdir(), "cdh-two-commands-"));
    // The machine's libvirtd: used if it runs, else started here (and stopped afterwards).
    startedVirtlogd = (await inMachine(["sh", "-c", "kill -0 $(cat /run/virtlogd.pid)"])).exitCode !== 0;
    if ((await machineVirsh("version")).exitCode !== 0) {
      startedLibvirtd = true;
      const up = await inMachine(["bash", "scripts/libvirtd-up.sh"], { cwd: root, timeout: 120_000 });
      expect(up.exitCode, up.stderr).toBe(0);
    }
    machineLibvirtdPid = (await inMachine(["cat", "/run/libvirtd.pid"])).stdout.trim();
    expect(machineLibvirtdPid).toMatch(/^\d+$/);
    hadDefaultNetwork = names((await machineVirsh("net-list", "--all", "--name")).stdout).includes("cdh-default");
    hadMetadataTable = (await inMachine(["nft", "list", "table", "ip", "cdh_metadata"])).exitCode === 0;
    hadFirewallTables = (await inMachine(["nft", "list", "table", "inet", "cdh_filter"])).exitCode === 0;
  }, 180_000);

  afterAll(async () => {
    await testAgent?.shutdown();
    await machineAgent?.stop();
    if (machinePid) {
      if (!hadDefaultNetwork) {
        await machineVirsh("net-destroy", "cdh-default");
        await machineVirsh("net-undefine", "cdh-default");
      }
      if (!hadMetadataTable) await inMachine(["nft", "delete", "table", "ip", "cdh_metadata"]);
      if (!hadFirewallTables) {
        await inMachine(["nft", "delete", "table", "inet", "cdh_filter"]);
        await inMachine(["nft", "delete", "table", "bridge", "cdh_filter"]);
      }
      if (startedLibvirtd && machineLibvirtdPid) await inMachine(["kill", machineLibvirtdPid]);
      if (startedVirtlogd) await inMachine(["sh", "-c", "kill $(cat /run/virtlogd.pid)"]);
    }
    if (work) await rm(work, { recursive: true, force: true });
  }, 120_000);

  it("runs both agents side by side, in either order, each on its own libvirt network", async () => {
    // Command 1, then command 2: the agent on its defaults, then a test agent.
    machineAgent = await startMachineAgent(root, join(work, "machine-data"));
    testAgent = await startAgentProcess({ repoRoot: root });
    expect((await testAgent.client.DescribeInstances({})).TotalCount).toBeGreaterThanOrEqual(0);

    const machineNet = await machineVirsh("net-info", "cdh-default");
    expect(machineNet.stdout).toMatch(/^Active:\s+yes$/m);
    expect(machineNet.stdout).toMatch(/^Bridge:\s+cdhbr0$/m);
    const hostNet = await hostVirsh("net-info", TEST_NETWORK);
    expect(hostNet.stdout).toMatch(/^Active:\s+yes$/m);
    expect(hostNet.stdout).toMatch(new RegExp(`^Bridge:\\s+${TEST_BRIDGE}$`, "m"));
    // Neither libvirtd has the other's network; each bridge lives in its own namespace.
    expect(names((await machineVirsh("net-list", "--all", "--name")).stdout)).not.toContain(TEST_NETWORK);
    expect(names((await hostVirsh("net-list", "--all", "--name")).stdout)).not.toContain("cdh-default");
    expect((await inMachine(["ip", "-br", "-4", "addr", "show", "cdhbr0"])).stdout).toContain("10.201.0.1/24");
    expect((await inMachine(["ip", "link", "show", TEST_BRIDGE])).exitCode).not.toBe(0);
    expect((await execa("ip", ["link", "show", "cdhbr0"], { reject: false })).exitCode).not.toBe(0);

    // The test host brought up again (as every test run does) leaves the machine's libvirtd alone.
    const again = await execa("bash", [resolve(root, "scripts/libvirtd-up.sh"), "--host", process.env.CDH_TEST_HOST ?? "cdhtest"], { reject: false });
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await inMachine(["cat", "/run/libvirtd.pid"])).stdout.trim()).toBe(machineLibvirtdPid);
    expect((await inMachine(["kill", "-0", machineLibvirtdPid])).exitCode).toBe(0);
    expect((await describeFromMachine(root, machineAgent.port)).ok).toBe(true);

    // Command 2, then command 1: the agent on its defaults starts again while the test agent runs.
    await machineAgent.stop();
    machineAgent = await startMachineAgent(root, join(work, "machine-data"));
    expect((await testAgent.client.DescribeInstances({})).TotalCount).toBeGreaterThanOrEqual(0);
    expect((await hostVirsh("net-info", TEST_NETWORK)).stdout).toMatch(/^Active:\s+yes$/m);
  }, 240_000);

  it("stops an agent whose network shares a bridge with another, in one line naming both, defining nothing", async () => {
    const dataDir = join(work, "clash-data");
    const r = await execa("node", [...AGENT_NODE_OPTIONS, resolve(root, "dist/agent/cli.js"), "run"], {
      env: {
        ...BASE_ENV,
        CDH_AGENT_DATA_DIR: dataDir,
        CDH_AGENT_API_LISTEN: `127.0.0.1:${await freePort()}`,
        CDH_AGENT_SECRET_ID: SECRET_ID,
        CDH_AGENT_SECRET_KEY: SECRET_KEY,
        CDH_AGENT_HOST_ID: "host-clash000",
        CDH_AGENT_VIRT_TYPE: "qemu",
        CDH_AGENT_CONTROLLER_URL: "",
        CDH_AGENT_LOG_LEVEL: "warn",
        CDH_AGENT_SUBNETS: JSON.stringify([
          { subnet_id: "subnet-clash", vpc_id: "vpc-clash", network: "cdhtest-clash", bridge: TEST_BRIDGE, cidr: "10.209.0.0/24" },
        ]),
      },
      extendEnv: false,
      reject: false,
      timeout: 60_000,
    });
    expect(r.exitCode).toBe(1);
    const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('libvirt network "cdhtest-clash"');
    expect(lines[0]).toContain(`libvirt network "${TEST_NETWORK}"`);
    expect(lines[0]).toContain(`the same bridge ${TEST_BRIDGE}`);
    expect((await hostVirsh("net-info", "cdhtest-clash")).exitCode).not.toBe(0);
  }, 90_000);
});
