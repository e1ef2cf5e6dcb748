/**
 * Migration under faults, between the two namespaced hosts (test/support/two-hosts.ts): a cancel
 * mid-transfer, a SIGKILL of either agent at a journal step of the move (the agents' fail_point,
 * as in crash.test.ts) or of the source in the middle of a live job, and a cut migration link
 * (scripts/two-hosts.sh cut), each followed by the one-copy check: the instance's definition on
 * exactly one host, in its state, no journal entry, disk, drive or reservation left on the other,
 * and each host's capacity whole (the owner's less exactly the instance's size, the other's as
 * before the launch). Tiny guests (CDH_1C1G, 1 GiB disk); the steps are representative, not all
 * (README "Migration" lists which).
 */
import { execa } from "execa";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, waitForState, type CvmClient } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { domainsOn, HOST_B, instanceOn, startTwoHosts, type TwoHosts } from "../support/two-hosts.js";

const repoRoot = inject("repoRoot");
let h: TwoHosts;
let imageId: string;

async function capacity(client: CvmClient): Promise<{ cpu: number; mem: number }> {
  const r = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
  return { cpu: r.CpuAvailable!, mem: r.MemAvailable! };
}

async function journalEntries(dataDir: string): Promise<string[]> {
  return (await readdir(`${dataDir}/migrations`).catch(() => [] as string[])).filter((n) => n.endsWith(".json"));
}

/**
 * The one-copy check, once both agents settled: the instance is on `owner` only (its API, its
 * libvirtd, its files), in `state`; the other host has no definition, files or journal entry.
 */
type Caps = { a: { cpu: number; mem: number }; b: { cpu: number; mem: number } };

async function capsNow(): Promise<Caps> {
  return { a: await capacity(h.a.client), b: await capacity(h.b.client) };
}

/** Every file under `dir` whose path names `needle`. */
async function filesNaming(dir: string, needle: string): Promise<string[]> {
  const all = (await readdir(dir, { recursive: true }).catch(() => [] as string[])) as string[];
  return all.filter((p) => p.includes(needle));
}

async function oneCopy(id: string, owner: "a" | "b", state: string, base: Caps, timeoutMs = 120_000): Promise<void> {
  const other = owner === "a" ? "b" : "a";
  const deadline = Date.now() + timeoutMs;
  let last = "";
  let here: Record<string, unknown> | undefined;
  for (;;) {
    here = await instanceOn(h[owner].client, id);
    const there = await instanceOn(h[other].client, id);
    last = `${owner}: ${String(here?.InstanceState)} ${String(here?.LatestOperationState)}; ${other}: ${String(there?.InstanceState ?? "absent")}`;
    const settled = here?.InstanceState === state && !there && (await journalEntries(h.a.dataDir)).length === 0 && (await journalEntries(h.b.dataDir)).length === 0;
    if (settled) break;
    if (Date.now() > deadline) throw new Error(`instance ${id} did not settle on ${owner} in ${state}: ${last}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  expect((await domainsOn(owner)).filter((d) => d === id)).toEqual([id]);
  expect(await domainsOn(other)).not.toContain(id);
  expect(existsSync(`${h[other].dataDir}/instances/${id}`)).toBe(false);
  expect(existsSync(`${h[owner].dataDir}/instances/${id}`)).toBe(true);
  // No disk of the instance on the other host (its pools are under its data directory).
  const diskIds = [String((here!.SystemDisk as { DiskId: string }).DiskId), ...((here!.DataDisks as Array<{ DiskId: string }> | undefined) ?? []).map((d) => d.DiskId)];
  expect(diskIds[0]).toMatch(/^disk-/);
  for (const d of diskIds) expect(await filesNaming(h[other].dataDir, d)).toEqual([]);
  // Capacity: the owner holds exactly the instance's size, the other its whole room.
  const now = await capsNow();
  expect(now[owner]).toEqual({ cpu: base[owner].cpu - 1, mem: base[owner].mem - 1 });
  expect(now[other]).toEqual(base[other]);
}

async function launch(): Promise<string> {
  const id = (await h.a.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
  await waitForState(h.a.client, id, "RUNNING");
  return id;
}

function migrate(body: Record<string, unknown>): Promise<unknown> {
  return h.common.a.request("MigrateInstances", { DestinationHostId: h.b.hostId, ...body });
}

/** Restarts one agent with a fail point (or none: ""), keeping its data directory and port. */
async function withFailPoint(which: "a" | "b", point: string): Promise<void> {
  await h[which].kill("SIGTERM");
  h[which] = await h[which].restart({ CDH_AGENT_FAIL_POINT: point });
}

/** Waits until the agent killed itself at its fail point, then starts it again without one. */
async function diedAt(which: "a" | "b", point: string): Promise<void> {
  const dead = await Promise.race([
    h[which].exited(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`agent ${which} never reached ${point}`)), 120_000)),
  ]);
  expect(dead.signal).toBe("SIGKILL");
  h[which] = await h[which].restart({ CDH_AGENT_FAIL_POINT: "" });
}

/** Waits until A's live job is copying (libvirt reports its figures). */
async function waitTransferring(id: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const p = (await instanceOn(h.a.client, id))?.MigrationProgress as Record<string, unknown> | undefined;
    if (p?.Phase === "TRANSFERRING" && (p.DataRemainingBytes ?? p.DiskRemainingBytes ?? null) !== null) return;
    if (Date.now() > deadline) throw new Error(`the transfer did not begin: ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function twoHosts(cmd: "cut" | "mend"): Promise<unknown> {
  return execa("bash", [resolve(repoRoot, "scripts/two-hosts.sh"), cmd], { stdio: "inherit" });
}

beforeAll(async () => {
  const images = await ensureTinyImages();
  h = await startTwoHosts({ repoRoot });
  imageId = await importImage(h.a.client, images.raw.normal, "tiny-migration-faults");
}, 300_000);

// Each test ends with no instance on either host: a failed one must not leave an address or MAC
// taken on B that A's next launch (which allocates on its own) would reuse.
afterEach(async () => {
  await twoHosts("mend").catch(() => undefined);
  for (const client of [h.a.client, h.b.client]) {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const left = ((await client.DescribeInstances({ Limit: 100 })).InstanceSet ?? []).map((i) => i.InstanceId!);
      if (!left.length) break;
      if (Date.now() > deadline) throw new Error(`instances left after the test: ${left.join(", ")}`);
      await client.TerminateInstances({ InstanceIds: left }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}, 300_000);

afterAll(async () => {
  await twoHosts("mend").catch(() => undefined);
  await h?.shutdown();
});

describe("migration under faults", () => {
  it("a cancel mid-transfer leaves the instance running on A and nothing on B", async () => {
    const base = await capsNow();
    const id = await launch();
    // 1 MiB/s: the job is still copying when the cancel comes.
    await migrate({ InstanceIds: [id], Live: true, Bandwidth: 1 });
    await waitTransferring(id);
    // B holds the room while the move is under way.
    expect((await capacity(h.b.client)).cpu).toBe(base.b.cpu - 1);
    await h.common.a.request("CancelMigrateInstances", { InstanceIds: [id] });
    await oneCopy(id, "a", "RUNNING", base);
    const onA = (await instanceOn(h.a.client, id))!;
    expect(onA.LatestOperation).toBe("MigrateInstances");
    expect(onA.LatestOperationState).toBe("FAILED");
  });

  it("SIGKILL of the source after the destination prepared (cold): the restarted source aborts B and keeps the instance running", async () => {
    const base = await capsNow();
    const id = await launch();
    await withFailPoint("a", "migrate:prepared");
    await migrate({ InstanceIds: [id], Live: false, StopType: "HARD" });
    await diedAt("a", "migrate:prepared");
    await oneCopy(id, "a", "RUNNING", base);
  });

  it("SIGKILL of the source in the middle of a live job: the restarted source ends the job, aborts B and keeps the instance running", async () => {
    const base = await capsNow();
    const id = await launch();
    await migrate({ InstanceIds: [id], Live: true, Bandwidth: 1 });
    await waitTransferring(id);
    await h.a.kill("SIGKILL");
    h.a = await h.a.restart({ CDH_AGENT_FAIL_POINT: "" });
    await oneCopy(id, "a", "RUNNING", base);
  });

  it("SIGKILL of the source once the guest moved live: the restarted source commits on B and removes its own copy", async () => {
    const base = await capsNow();
    const id = await launch();
    await withFailPoint("a", "migrate:transferred");
    await migrate({ InstanceIds: [id], Live: true });
    await diedAt("a", "migrate:transferred");
    await oneCopy(id, "b", "RUNNING", base);
  });

  it("SIGKILL of the destination while it prepares (cold): the move fails, and B's restart removes what it made", async () => {
    const base = await capsNow();
    const id = await launch();
    await withFailPoint("b", "migrate:dest-prepared");
    await migrate({ InstanceIds: [id], Live: false, StopType: "HARD" });
    await diedAt("b", "migrate:dest-prepared");
    await oneCopy(id, "a", "RUNNING", base);
    expect((await instanceOn(h.a.client, id))!.LatestOperationState).toBe("FAILED");
  });

  it("SIGKILL of the destination as it commits a live move: B's restart finishes it and A removes its copy", async () => {
    const base = await capsNow();
    const id = await launch();
    await withFailPoint("b", "migrate:dest-committed");
    await migrate({ InstanceIds: [id], Live: true });
    await diedAt("b", "migrate:dest-committed");
    await oneCopy(id, "b", "RUNNING", base);
  });

  it("a libvirtd restart on B mid-transfer: the job fails, B removes what it made, the guest keeps running on A", async () => {
    const base = await capsNow();
    const id = await launch();
    await migrate({ InstanceIds: [id], Live: true, Bandwidth: 1 });
    await waitTransferring(id);
    // B's libvirtd goes and comes back (guests keep running; an incoming migration does not survive it).
    await execa("bash", [resolve(repoRoot, "scripts/libvirtd-up.sh"), "--host", HOST_B.name, "--restart"], { stdio: "inherit" });
    await oneCopy(id, "a", "RUNNING", base);
    expect((await instanceOn(h.a.client, id))!.LatestOperationState).toBe("FAILED");
  });

  it("a cut migration link mid-transfer: the job fails, the guest keeps running on A, and B's room, disks and drive go once the link is back", async () => {
    const base = await capsNow();
    const id = await launch();
    await migrate({ InstanceIds: [id], Live: true, Bandwidth: 1 });
    await waitTransferring(id);
    await twoHosts("cut");
    try {
      // libvirt gives up on the lost peer (its keepalive; ~2 min here); the agent cannot reach B to abort.
      const deadline = Date.now() + 240_000;
      let onA = await instanceOn(h.a.client, id);
      while (onA?.LatestOperationState === "OPERATING" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1000));
        onA = await instanceOn(h.a.client, id);
      }
      expect(onA?.LatestOperationState).toBe("FAILED");
      expect(onA?.InstanceState).toBe("RUNNING");
      // A new move is refused until B confirmed the abort.
      await expect(migrate({ InstanceIds: [id], Live: true })).rejects.toThrow(/not settled/);
    } finally {
      await twoHosts("mend");
    }
    await oneCopy(id, "a", "RUNNING", base);
  });
});
