/**
 * The operator command line, the real built binary (`node dist/agent/cli.js …`) against a
 * running agent, configured the way an operator's host is: a config file (`--config`) naming
 * the data directory and the API's address, and the credentials the agent keeps in
 * <data_dir>/api-credentials.json (nothing secret on the command line). Every command once,
 * `--json` parsed, a stop/start round trip, the API's error code and message as they came
 * with exit 1, and the other exit codes (2 usage, 3 unreachable, 4 no credentials).
 */
import { execa } from "execa";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort, SECRET_ID, SECRET_KEY, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { TINY_READY_PATTERN, waitForSerial } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";

const repoRoot = inject("repoRoot");
let agent: AgentProcess;
let configFile = "";
let tinyImage = "";
let instanceId = "";
let imageId = "";

/** Runs the CLI with only PATH and HOME in its environment (no CDH_AGENT_*): the config file says everything. */
async function cli(args: string[], config = configFile): Promise<{ code: number; out: string; err: string }> {
  const r = await execa("node", [resolve(repoRoot, "dist/agent/cli.js"), ...args, "--config", config], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
    extendEnv: false,
    reject: false,
    timeout: 90_000,
  });
  return { code: r.exitCode ?? -1, out: r.stdout, err: r.stderr };
}

async function json<T = Record<string, unknown>>(args: string[]): Promise<T> {
  const r = await cli([...args, "--json"]);
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as T;
}

beforeAll(async () => {
  tinyImage = (await ensureTinyImages()).raw.normal;
  agent = await startAgentProcess({ repoRoot, env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600" } });
  // The pair the agent serves, where an agent without configured credentials keeps its own.
  await writeFile(join(agent.dataDir, "api-credentials.json"), JSON.stringify({ secret_id: SECRET_ID, secret_key: SECRET_KEY }), { mode: 0o600 });
  configFile = join(agent.dataDir, "..", "cli-config.json");
  await writeFile(configFile, JSON.stringify({ data_dir: agent.dataDir, api_listen: `127.0.0.1:${agent.port}`, host_id: agent.hostId }));
});

afterAll(async () => {
  await agent?.shutdown();
});

describe("cdh-agent operator commands", () => {
  it("import FILE shows SyncPercent progress until NORMAL; images lists it", async () => {
    const r = await cli(["import", tinyImage, "--name", "cli-tiny", "--os-version", "tiny", "--timeout", "120"]);
    expect(r.code).toBe(0);
    imageId = /^ImportImage: (img-[a-z0-9]{8})$/m.exec(r.out)![1]!;
    expect(r.out).toMatch(new RegExp(`^${imageId} NORMAL$`, "m"));
    // Not a terminal: one progress line per change, ending at 100% NORMAL.
    expect(r.err).toMatch(new RegExp(`^${imageId} \\[#{30}\\] 100% NORMAL$`, "m"));
    const listed = await json<{ ImageSet: Array<{ ImageId: string; ImageName: string; ImageState: string; SyncPercent: number }> }>(["images"]);
    expect(listed.ImageSet).toContainEqual(expect.objectContaining({ ImageId: imageId, ImageName: "cli-tiny", ImageState: "NORMAL", SyncPercent: 100 }));
    const table = await cli(["images"]);
    expect(table.code).toBe(0);
    expect(table.out).toMatch(new RegExp(`^${imageId}\\s+cli-tiny\\s+NORMAL\\s`, "m"));
  });

  it("instances, instance, logs and host show a launched instance", async () => {
    instanceId = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, InstanceName: "cli-one" })).InstanceIdSet![0]!;
    await waitForState(agent.client, instanceId, "RUNNING");
    await waitForSerial(join(agent.dataDir, "instances", instanceId, "console.log"), TINY_READY_PATTERN, { timeoutMs: 60_000 });

    const all = await json<{ TotalCount: number; InstanceSet: Array<{ InstanceId: string; InstanceState: string }> }>(["instances"]);
    expect(all.TotalCount).toBe(1);
    expect(all.InstanceSet[0]).toMatchObject({ InstanceId: instanceId, InstanceState: "RUNNING" });
    const table = await cli(["instances"]);
    expect(table.out).toMatch(new RegExp(`^${instanceId}\\s+cli-one\\s+RUNNING\\s+CDH_1C1G\\s+1\\s+1G\\s+10\\.201\\.0\\.\\d+\\s+${imageId}\\s`, "m"));

    const one = await json<{ InstanceSet: Array<{ InstanceId: string; InstanceName: string }> }>(["instance", instanceId]);
    expect(one.InstanceSet[0]).toMatchObject({ InstanceId: instanceId, InstanceName: "cli-one" });
    expect((await cli(["instance", instanceId])).out).toMatch(/^InstanceName:\s+cli-one$/m);

    const logs = await cli(["logs", instanceId]);
    expect(logs.code).toBe(0);
    expect(logs.out).toBe(await readFile(join(agent.dataDir, "instances", instanceId, "console.log"), "utf8").then((t) => t.slice(0, logs.out.length)));
    expect(logs.out).toMatch(TINY_READY_PATTERN);
    expect((await cli(["logs", instanceId, "--tail", "1"])).out.split("\n").filter(Boolean)).toHaveLength(1);

    const host = await json<{ HostSet: Array<{ HostId: string; InstanceIds: string[]; HostResource: { CpuTotal: number; CpuAvailable: number } }> }>(["host"]);
    expect(host.HostSet[0]).toMatchObject({ HostId: agent.hostId, InstanceIds: [instanceId] });
    const sdkHost = (await agent.client.DescribeHosts({})).HostSet![0]!;
    expect(host.HostSet[0]!.HostResource.CpuAvailable).toBe(sdkHost.HostResource!.CpuAvailable);
    const human = await cli(["host"]);
    expect(human.out).toMatch(new RegExp(`^HostId:\\s+${agent.hostId}$`, "m"));
    expect(human.out).toMatch(new RegExp(`^CPU\\s+${sdkHost.HostResource!.CpuTotal}\\s+${sdkHost.HostResource!.CpuAvailable}\\s+vCPU$`, "m"));
  });

  it("top shows the running instance's monitor rates (GetMonitorData's latest points)", async () => {
    const deadline = Date.now() + 45_000;
    let last = "";
    // The first 10-second point comes after two collections.
    while (Date.now() < deadline) {
      const r = await cli(["top", "--count", "1"]);
      expect(r.code).toBe(0);
      last = r.out;
      if (new RegExp(`^${instanceId}\\s+cli-one\\s+\\d+\\.\\d\\s+`, "m").test(last)) break;
      await new Promise((res) => setTimeout(res, 2000));
    }
    // CPU has a point; the others a number, or `-` where the guest gives none (memory needs its balloon statistics).
    expect(last).toMatch(new RegExp(`^${instanceId}\\s+cli-one\\s+\\d+\\.\\d(\\s+(\\d+\\.\\d+|-)){5}$`, "m"));
    const parsed = await json<{ DescribeInstances: { InstanceSet: unknown[] }; GetMonitorData: Array<{ MetricName: string; DataPoints: unknown[] }> }>(["top"]);
    expect(parsed.DescribeInstances.InstanceSet).toHaveLength(1);
    expect(parsed.GetMonitorData.map((m) => m.MetricName)).toEqual(["CPUUsage", "MemUsage", "DiskReadTraffic", "DiskWriteTraffic", "LanIntraffic", "LanOuttraffic"]);
  });

  it("stop --hard --wait, start --wait and reboot --wait round-trip the instance", async () => {
    const stop = await cli(["stop", instanceId, "--hard", "--wait", "--timeout", "60"]);
    expect(stop.code).toBe(0);
    expect(stop.out).toMatch(new RegExp(`StopInstances: accepted for ${instanceId}`));
    expect(stop.err).toBe(`${instanceId}: STOPPED`); // execa strips the final newline
    expect((await agent.client.DescribeInstances({ InstanceIds: [instanceId] })).InstanceSet![0]!.InstanceState).toBe("STOPPED");
    const start = await json<{ RequestId: string }>(["start", instanceId]);
    expect(start.RequestId).toMatch(/./);
    await waitForState(agent.client, instanceId, "RUNNING");
    const reboot = await cli(["reboot", instanceId, "--wait", "--hard", "--timeout", "60"]);
    expect(reboot.code).toBe(0);
    expect(reboot.err).toBe(`${instanceId}: RUNNING`);
  });

  it("prints the API's error code and message as they came and exits 1", async () => {
    const missing = "ins-00000000";
    const sdkError = await agent.client.StartInstances({ InstanceIds: [missing] }).then(
      () => undefined,
      (e: { code: string; message: string }) => e,
    );
    expect(sdkError?.code).toBe("InvalidInstanceId.NotFound");
    const r = await cli(["start", missing]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`^cdh-agent: StartInstances: InvalidInstanceId\\.NotFound: ${sdkError!.message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\(RequestId [^)]+\\)$`, "m"));
    const notHere = await cli(["instance", missing]);
    expect(notHere.code).toBe(1);
  });

  it("exits 2 on usage, 3 when the agent is unreachable, 4 without credentials", async () => {
    expect((await cli(["stop", "not-an-id"])).code).toBe(2);
    const elsewhere = join(agent.dataDir, "..", "cli-unreachable.json");
    await writeFile(elsewhere, JSON.stringify({ data_dir: agent.dataDir, api_listen: `127.0.0.1:${await freePort()}`, host_id: agent.hostId }));
    const unreachable = await cli(["instances"], elsewhere);
    expect(unreachable.code).toBe(3);
    expect(unreachable.err).toMatch(/cannot reach the agent .*ECONNREFUSED/);
    const empty = join(agent.dataDir, "..", "cli-empty-data");
    await mkdir(empty, { recursive: true });
    const noCredentials = join(agent.dataDir, "..", "cli-nocred.json");
    await writeFile(noCredentials, JSON.stringify({ data_dir: empty, api_listen: `127.0.0.1:${agent.port}`, host_id: agent.hostId }));
    const r = await cli(["instances"], noCredentials);
    expect(r.code).toBe(4);
    expect(r.err).toMatch(/no API credentials/);
  });

  it("terminate --wait removes the instance", async () => {
    const r = await cli(["terminate", instanceId, "--wait", "--timeout", "60"]);
    expect(r.code).toBe(0);
    expect((await json<{ TotalCount: number }>(["instances"])).TotalCount).toBe(0);
  });
});
