/**
 * Migration between two namespaced hosts (scripts/two-hosts.sh, test/support/two-hosts.ts):
 * agent A in cdhtest, agent B in cdhtest2, driven through the official SDK over TLS. Tiny guests
 * (CDH_1C1G, 1 GiB disks). Every move ends with the one-copy check: the instance's definition on
 * exactly one host, no files left on the other, capacity moved by exactly its size.
 */
import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, waitForState, type CvmClient } from "../support/agent-process.js";
import { GuestConsole } from "../support/guest-console.js";
import { waitForSerial, TINY_READY_PATTERN, waitForTinyData } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { domainsOn, instanceOn, startTwoHosts, type TwoHosts } from "../support/two-hosts.js";

const repoRoot = inject("repoRoot");
let h: TwoHosts;
let imageId: string;

async function hostResource(client: CvmClient): Promise<{ CpuAvailable: number; MemAvailable: number }> {
  const r = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
  return { CpuAvailable: r.CpuAvailable!, MemAvailable: r.MemAvailable! };
}

/** Waits until the move settled: on B in `state`, gone from A (its API, its libvirtd, its files). */
async function waitMoved(id: string, state: string, dataDirA: string, timeoutMs = 240_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const onA = await instanceOn(h.a.client, id);
    const onB = await instanceOn(h.b.client, id);
    last = `A: ${String(onA?.InstanceState ?? "absent")} ${String(onA?.LatestOperationState ?? "")} ${JSON.stringify(onA?.MigrationProgress ?? {})}; B: ${String(onB?.InstanceState ?? "absent")}`;
    if (onA?.LatestOperationState === "FAILED") throw new Error(`the migration failed on A: ${String(onA.LatestOperationErrorMsg)}`);
    if (!onA && onB?.InstanceState === state) {
      expect(await domainsOn("a")).not.toContain(id);
      expect(await domainsOn("b")).toContain(id);
      expect(existsSync(`${dataDirA}/instances/${id}`)).toBe(false);
      expect(onB.LatestOperation).toBe("MigrateInstances");
      expect(onB.LatestOperationState).toBe("SUCCESS");
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`instance ${id} did not move within ${timeoutMs} ms (${last})`);
}

function migrate(body: Record<string, unknown>): Promise<unknown> {
  return h.common.a.request("MigrateInstances", { DestinationHostId: h.b.hostId, ...body });
}

beforeAll(async () => {
  const images = await ensureTinyImages();
  // B has room for one vCPU: 16 (2 cores x 8) less 15 reserved; a CDH_2C1G does not fit.
  h = await startTwoHosts({ repoRoot, envB: { CDH_AGENT_RESERVED_CPU: "15" } });
  imageId = await importImage(h.a.client, images.raw.normal, "tiny-migration");
}, 300_000);

afterAll(async () => {
  await h?.shutdown();
});

describe("migration between two hosts", () => {
  it("moves a stopped instance with a data disk cold: its disk contents, ID, UUID and MAC arrive, A keeps nothing, capacity moves by its size", async () => {
    const run = await h.a.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 1 },
      DataDisks: [{ DiskSize: 1, DiskType: "LOCAL_BASIC" }],
    });
    const id = run.InstanceIdSet![0]!;
    await waitForState(h.a.client, id, "RUNNING");
    await waitForSerial(`${h.a.dataDir}/instances/${id}/console.log`, TINY_READY_PATTERN, { timeoutMs: 90_000 });
    const con = await GuestConsole.open(id);
    try {
      await con.run("printf 'cdh-cold-marker\\n' > /dev/vdb; sync");
    } finally {
      con.close();
    }
    await h.a.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(h.a.client, id, "STOPPED");
    const before = (await instanceOn(h.a.client, id))!;
    const capA = await hostResource(h.a.client);
    const capB = await hostResource(h.b.client);

    await migrate({ InstanceIds: [id], Live: false });
    await waitMoved(id, "STOPPED", h.a.dataDir);

    const after = (await instanceOn(h.b.client, id))!;
    expect(after.Uuid).toBe(before.Uuid);
    expect(after.MacAddresses).toEqual(before.MacAddresses);
    expect(after.PrivateIpAddresses).toEqual(before.PrivateIpAddresses);
    expect((after.Placement as { HostId: string }).HostId).toBe(h.b.hostId);
    expect(await hostResource(h.a.client)).toEqual({ CpuAvailable: capA.CpuAvailable + 1, MemAvailable: capA.MemAvailable + 1 });
    expect(await hostResource(h.b.client)).toEqual({ CpuAvailable: capB.CpuAvailable - 1, MemAvailable: capB.MemAvailable - 1 });
    // No journal entry is left on either side.
    expect(await readdir(`${h.a.dataDir}/migrations`).catch(() => [])).toEqual([]);
    expect(await readdir(`${h.b.dataDir}/migrations`).catch(() => [])).toEqual([]);

    await h.b.client.StartInstances({ InstanceIds: [id] });
    await waitForState(h.b.client, id, "RUNNING");
    const data = await waitForTinyData(`${h.b.dataDir}/instances/${id}/console.log`, () => true, { timeoutMs: 90_000 });
    expect(data.vdb).toBe("cdh-cold-marker");
    await h.b.client.TerminateInstances({ InstanceIds: [id] });
    await waitGone(h.b.client, id);
  });

  it("refuses a move the destination has no room for, and nothing moves", async () => {
    const run = await h.a.client.RunInstances({ InstanceType: "CDH_2C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } });
    const id = run.InstanceIdSet![0]!;
    await waitForState(h.a.client, id, "RUNNING");
    const capA = await hostResource(h.a.client);
    const capB = await hostResource(h.b.client);
    await migrate({ InstanceIds: [id], Live: true });
    const deadline = Date.now() + 60_000;
    let onA = await instanceOn(h.a.client, id);
    while (onA?.LatestOperationState === "OPERATING" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      onA = await instanceOn(h.a.client, id);
    }
    expect(onA?.InstanceState).toBe("RUNNING");
    expect(onA?.LatestOperation).toBe("MigrateInstances");
    expect(onA?.LatestOperationState).toBe("FAILED");
    expect(onA?.LatestOperationCode).toBe("ResourceInsufficient.SpecifiedInstanceType");
    expect(await instanceOn(h.b.client, id)).toBeUndefined();
    expect(await domainsOn("b")).not.toContain(id);
    expect(await hostResource(h.a.client)).toEqual(capA);
    expect(await hostResource(h.b.client)).toEqual(capB);
    expect(await readdir(`${h.b.dataDir}/migrations`).catch(() => [])).toEqual([]);
    await h.a.client.TerminateInstances({ InstanceIds: [id] });
  });

  it("moves a running tiny guest live: its serial counter keeps counting on B (no reboot), with the job's figures shown while it moves", async () => {
    const run = await h.a.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } });
    const id = run.InstanceIdSet![0]!;
    await waitForState(h.a.client, id, "RUNNING");
    const logA = `${h.a.dataDir}/instances/${id}/console.log`;
    const logB = `${h.b.dataDir}/instances/${id}/console.log`;
    await waitForSerial(logA, TINY_READY_PATTERN, { timeoutMs: 90_000 });
    const con = await GuestConsole.open(id);
    try {
      await con.run("(i=0; while :; do echo CDH-COUNT $i > /dev/ttyS0; i=$((i+1)); sleep 0.2; done) &");
    } finally {
      con.close();
    }
    await waitForSerial(logA, /CDH-COUNT 5\b/, { timeoutMs: 30_000 });
    const capA = await hostResource(h.a.client);
    const capB = await hostResource(h.b.client);

    await migrate({ InstanceIds: [id], Live: true, MaxDowntime: 2000 });
    // Watch A: the state, the figures, and the counter's lines before A's log goes.
    let seenA = "";
    const progress: Array<Record<string, unknown>> = [];
    const states = new Set<string>();
    const deadline = Date.now() + 240_000;
    for (;;) {
      seenA = await readFile(logA, "utf8").catch(() => seenA);
      const onA = await instanceOn(h.a.client, id);
      if (!onA) break;
      if (onA.LatestOperationState === "FAILED") throw new Error(`live migration failed: ${String(onA.LatestOperationErrorMsg)}`);
      states.add(String(onA.InstanceState));
      if (onA.MigrationProgress) progress.push(onA.MigrationProgress as Record<string, unknown>);
      if (Date.now() > deadline) throw new Error("the live migration did not end within 240 s");
      await new Promise((r) => setTimeout(r, 250));
    }
    await waitMoved(id, "RUNNING", h.a.dataDir);
    expect([...states]).toContain("MIGRATING");
    expect(progress.some((p) => p.Phase === "TRANSFERRING")).toBe(true);
    expect(progress.every((p) => p.DestinationHostId === h.b.hostId && p.Live === true)).toBe(true);

    const countsA = [...seenA.matchAll(/CDH-COUNT (\d+)/g)].map((m) => Number(m[1]));
    const lastA = Math.max(...countsA);
    await waitForSerial(logB, new RegExp(`CDH-COUNT ${lastA + 10}\\b`), { timeoutMs: 60_000 });
    const textB = await readFile(logB, "utf8");
    const countsB = [...textB.matchAll(/CDH-COUNT (\d+)/g)].map((m) => Number(m[1]));
    // The destination continues the source's sequence: no restart from 0, no READY line (no reboot).
    expect(Math.min(...countsB)).toBeGreaterThan(5);
    expect(Math.min(...countsB)).toBeLessThanOrEqual(lastA + 1);
    expect(textB).not.toMatch(TINY_READY_PATTERN);
    expect(await hostResource(h.a.client)).toEqual({ CpuAvailable: capA.CpuAvailable + 1, MemAvailable: capA.MemAvailable + 1 });
    expect(await hostResource(h.b.client)).toEqual({ CpuAvailable: capB.CpuAvailable - 1, MemAvailable: capB.MemAvailable - 1 });
    await h.b.client.TerminateInstances({ InstanceIds: [id] });
    await waitGone(h.b.client, id);
  });
});

async function waitGone(client: CvmClient, id: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (!(await instanceOn(client, id))) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${id} was not terminated`);
}
