/**
 * Fault battery: the test libvirtd frozen with SIGSTOP for 30 s while instances run.
 * The API and the metadata endpoint keep answering (quickly: they never wait on
 * libvirt), the agent's liveness probe of libvirt times out, every instance shows
 * UNKNOWN (never STOPPED) and DescribeHosts shows the host UNKNOWN; an operation is
 * refused while the states are unknown; after SIGCONT the states are true again and
 * operations work. libvirtd is always resumed (afterAll), whatever happened: other
 * test files share it.
 */
import { execa } from "execa";
import { readFile } from "node:fs/promises";
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { waitForSerial, TINY_READY_PATTERN } from "../support/serial.js";

const FREEZE_MS = 30_000;
/** The test host this run is in (scripts/in-testns.sh). */
const TEST_HOST = process.env.CDH_TEST_HOST ?? "cdhtest";
/** The test agents' default subnet gateway and metadata port (README: subnets, metadata_port). */
const METADATA_URL = "http://10.201.0.1:8775/latest/meta-data/";

/** The PID of the libvirtd in the test host's network namespace (not any other on the machine). */
async function testLibvirtdPid(): Promise<number> {
  const pids = (await execa("pgrep", ["-x", "libvirtd"], { reject: false })).stdout.split("\n").filter(Boolean);
  const ours: number[] = [];
  for (const pid of pids) {
    const ns = (await execa("ip", ["netns", "identify", pid], { reject: false })).stdout.trim();
    if (ns === TEST_HOST) ours.push(Number(pid));
  }
  expect(ours, `exactly one libvirtd in the ${TEST_HOST} namespace`).toHaveLength(1);
  return ours[0]!;
}

/** One GET with a deadline; resolves to the status code. */
function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error(`${url} did not answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - t0 };
}

describe("libvirtd frozen (SIGSTOP) for 30 s", () => {
  let agent: AgentProcess;
  let ids: string[] = [];
  let libvirtdPid = 0;
  let frozen = false;

  const resume = async () => {
    if (libvirtdPid > 0) {
      // Whatever happened: other files' agents share this libvirtd.
      try {
        process.kill(libvirtdPid, "SIGCONT");
      } catch {
        // already gone: nothing to resume
      }
    }
    frozen = false;
  };

  beforeAll(async () => {
    const images = await ensureTinyImages();
    // An hour-long reconcile: only the liveness probe can be what notices the freeze.
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600", CDH_AGENT_LIBVIRT_PROBE_INTERVAL_S: "2", CDH_AGENT_LIBVIRT_PROBE_TIMEOUT_S: "3" },
    });
    const img = await importImage(agent.client, images.raw.normal, "faults-libvirtd");
    ids = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: img, SystemDisk: { DiskSize: 1 }, InstanceCount: 2 })).InstanceIdSet!;
    for (const id of ids) {
      await waitForState(agent.client, id, "RUNNING");
      await waitForSerial(`${agent.dataDir}/instances/${id}/console.log`, TINY_READY_PATTERN, { timeoutMs: 60_000 });
    }
    libvirtdPid = await testLibvirtdPid();
  });

  afterAll(async () => {
    await resume();
    await agent?.shutdown();
  });

  it("answers, shows UNKNOWN (never STOPPED) while frozen, and recovers on SIGCONT", async () => {
    expect(await httpStatus(METADATA_URL, 2_000)).toBeGreaterThanOrEqual(200);
    try {
      process.kill(libvirtdPid, "SIGSTOP");
      frozen = true;
      const frozenAt = Date.now();
      let unknownAt = 0;
      let rounds = 0;
      let sawStopRefused = false;
      while (Date.now() - frozenAt < FREEZE_MS) {
        // The API answers at once from memory.
        const s = await timed(() => agent.client.DescribeInstancesStatus({ InstanceIds: ids }));
        expect(s.ms).toBeLessThan(2_000);
        const states = s.value.InstanceStatusSet!.map((x) => x.InstanceState);
        expect(states).toHaveLength(2);
        expect(states).not.toContain("STOPPED");
        if (states.every((x) => x === "UNKNOWN") && unknownAt === 0) unknownAt = Date.now();
        if (unknownAt > 0) {
          expect(states).toEqual(["UNKNOWN", "UNKNOWN"]);
          const host = await timed(() => agent.client.DescribeHosts({}));
          expect(host.ms).toBeLessThan(2_000);
          expect(host.value.HostSet![0]!.HostState).toBe("UNKNOWN");
          if (!sawStopRefused) {
            // An operation on an instance whose state cannot be seen is refused, not left hanging.
            const stop = await timed(() => agent.client.StopInstances({ InstanceIds: [ids[0]!], StopType: "HARD" }).then(() => "accepted", (e: { code?: string }) => e.code ?? String(e)));
            expect(stop.value).toBe("InvalidInstanceState");
            expect(stop.ms).toBeLessThan(2_000);
            sawStopRefused = true;
          }
        }
        // The metadata endpoint answers too (a 404 for this unknown caller, but an answer).
        const md = await timed(() => httpStatus(METADATA_URL, 2_000));
        expect(md.value).toBe(404);
        expect(md.ms).toBeLessThan(2_000);
        rounds += 1;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(rounds).toBeGreaterThan(20);
      // The probe (every 2 s, 3 s timeout) sees the freeze well within the 30 s.
      expect(unknownAt, "states became UNKNOWN").toBeGreaterThan(0);
      expect(unknownAt - frozenAt).toBeLessThan(10_000);
      expect(sawStopRefused).toBe(true);
      // The agent's virsh call timed out (and said so), rather than waiting on libvirtd.
      const log = await readFile(agent.logFile, "utf8");
      expect(log).toMatch(/libvirt did not answer the liveness probe/);
    } finally {
      await resume();
    }
    expect(frozen).toBe(false);

    // Back: the true states, and operations work again.
    const resumedAt = Date.now();
    for (const id of ids) await waitForState(agent.client, id, "RUNNING", 30_000);
    expect(Date.now() - resumedAt).toBeLessThan(15_000);
    expect((await agent.client.DescribeHosts({})).HostSet![0]!.HostState).toBe("RUNNING");
    await agent.client.StopInstances({ InstanceIds: [ids[0]!], StopType: "HARD" });
    await waitForState(agent.client, ids[0]!, "STOPPED", 30_000);
    expect(await waitForState(agent.client, ids[1]!, "RUNNING", 1_000)).toBe("RUNNING");
  });
});
