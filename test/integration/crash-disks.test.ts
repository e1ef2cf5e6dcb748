/**
 * Crash safety of disks and images: the agent is killed with SIGKILL at named points
 * inside ResetInstance (reset:disk-created, reset:defined), CreateSnapshot
 * (snapshot:copying), ApplySnapshot (snapshot:rollback-copied) and CreateImage
 * (image:copying), restarted without the fail point, and must leave every instance
 * with a state and a disk that agree, no half-made file used or kept, and no file in
 * its pools that it does not know. (ImportImage's own fail points: images.test.ts.)
 */
import { execa } from "execa";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { commonClient, importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages, readDiskMarker, writeDiskMarker } from "../support/tiny-image.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
const GiB = 1024 ** 3;

interface CbsDisk {
  DiskId: string;
  DiskUsage: string;
  InstanceId?: string;
}
interface CbsSnapshot {
  SnapshotId: string;
  SnapshotState: string;
  DiskId: string;
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The file the domain's system disk (vda) is, in its persistent definition. */
async function systemDiskOf(id: string): Promise<string> {
  const xml = (await virsh("dumpxml", "--domain", id, "--inactive")).stdout;
  const vda = xml.split("<disk ").find((d) => /dev=['"]vda['"]/.test(d)) ?? "";
  return /<source file=['"]([^'"]+)['"]/.exec(vda)?.[1] ?? "";
}

/** Every file below `dir` (recursively), as absolute paths. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(full));
    else out.push(full);
  }
  return out;
}

async function qemuImgCheck(path: string): Promise<{ ok: boolean; output: string }> {
  const r = await execa("qemu-img", ["check", "-U", "-f", "qcow2", path], { reject: false });
  return { ok: r.exitCode === 0, output: `${r.stdout}\n${r.stderr}` };
}

async function virtualSize(path: string): Promise<number> {
  const r = await execa("qemu-img", ["info", "--output=json", "-U", path]);
  return (JSON.parse(r.stdout) as { "virtual-size": number })["virtual-size"];
}

describe("SIGKILL in the middle of a reinstall, a snapshot or an image copy, then restart", () => {
  let agent: AgentProcess;
  let cbs: ReturnType<typeof commonClient>;
  let imageId: string;
  let pool: string;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    cbs = commonClient(agent.port);
    pool = join(agent.dataDir, "pools", "local");
    imageId = await importImage(agent.client, images.raw.normal, "crash-disks-normal");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  /** Restarts the agent with the fail point set (a clean stop first, as crash.test.ts does). */
  async function armAt(point: string): Promise<void> {
    await agent.kill("SIGTERM");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: point });
    cbs = commonClient(agent.port);
  }

  /** Waits for the agent to kill itself at the point, then starts it again without one. */
  async function recover(point: string): Promise<void> {
    const dead = await Promise.race([
      agent.exited(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the agent never reached ${point}`)), 120_000)),
    ]);
    expect(dead.signal).toBe("SIGKILL");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "" });
    cbs = commonClient(agent.port);
  }

  async function launch(name: string, dataDisks: Array<{ DiskSize: number }> = []): Promise<string> {
    const r = await agent.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 10 },
      ...(dataDisks.length ? { DataDisks: dataDisks } : {}),
      InstanceName: name,
    });
    const id = r.InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
    return id;
  }

  async function terminate(id: string): Promise<void> {
    await agent.client.TerminateInstances({ InstanceIds: [id] });
    await waitFor(async () => ((await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount ?? 0) === 0, `${id} to be gone`);
    // The instance leaves the list just before its journal entry goes.
    await waitFor(async () => readdirSync(join(agent.dataDir, "journal")).length === 0, `${id}'s terminate journal entry to go`, 10_000);
  }

  async function describe1(id: string) {
    return (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
  }

  /**
   * What must hold after every recovery: no `.part` file anywhere under the data
   * directory, an empty journal and tmp, and every qcow2 in the pools a disk that
   * DescribeDisks lists (at the path its domain uses) or a snapshot DescribeSnapshots lists.
   */
  async function expectNoStrayFiles(): Promise<void> {
    const all = filesUnder(agent.dataDir);
    expect(all.filter((f) => f.endsWith(".part")), ".part files").toEqual([]);
    expect(readdirSync(join(agent.dataDir, "journal")), "journal").toEqual([]);
    expect(filesUnder(join(agent.dataDir, "tmp")), "tmp").toEqual([]);

    const known = new Set<string>();
    const disks = (await cbs.request("DescribeDisks", { Limit: 100 })) as { DiskSet: CbsDisk[] };
    for (const d of disks.DiskSet) {
      if (d.DiskUsage === "DATA_DISK") known.add(join(pool, `${d.DiskId}.qcow2`));
      else {
        const path = await systemDiskOf(d.InstanceId!);
        expect(path.startsWith(join(pool, d.DiskId)), `${d.DiskId} is at ${path}`).toBe(true);
        known.add(path);
      }
    }
    const snaps = (await cbs.request("DescribeSnapshots", { Limit: 100 })) as { SnapshotSet: CbsSnapshot[] };
    for (const s of snaps.SnapshotSet) known.add(join(pool, "snapshots", `${s.SnapshotId}.qcow2`));
    const inPools = filesUnder(join(agent.dataDir, "pools")).filter((f) => f.endsWith(".qcow2"));
    expect(inPools.filter((f) => !known.has(f)), "pool files the agent does not know").toEqual([]);
    for (const f of known) expect(existsSync(f), `${f} the agent lists`).toBe(true);
  }

  it("rolls back a reinstall killed at reset:disk-created: the old disk stays in use, the new file is gone, the instance starts", async () => {
    const id = await launch("crash-reset-created");
    const before = await describe1(id);
    const diskId = before.SystemDisk!.DiskId!;
    const oldPath = await systemDiskOf(id);
    expect(oldPath).toBe(join(pool, `${diskId}.qcow2`));

    await armAt("reset:disk-created");
    await agent.client.ResetInstance({ InstanceId: id });
    await recover("reset:disk-created");

    const after = await describe1(id);
    expect(after).toMatchObject({ LatestOperation: "ResetInstance", LatestOperationState: "FAILED" });
    expect(await systemDiskOf(id)).toBe(oldPath);
    expect(existsSync(oldPath)).toBe(true);
    expect((await qemuImgCheck(oldPath)).ok).toBe(true);
    expect(readdirSync(pool).filter((f) => f.startsWith(`${diskId}-r`)), "the new system disk").toEqual([]);
    // The reinstall had stopped the guest; it is a stopped instance on its old disk now.
    expect(await waitForState(agent.client, id, ["STOPPED", "RUNNING"])).toBe("STOPPED");
    await expectNoStrayFiles();

    await agent.client.StartInstances({ InstanceIds: [id] });
    await waitForState(agent.client, id, "RUNNING");
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
    await terminate(id);
    await expectNoStrayFiles();
  });

  it("finishes a reinstall killed at reset:defined: the new disk is in use, the old file is gone, RUNNING", async () => {
    const id = await launch("crash-reset-defined");
    const diskId = (await describe1(id)).SystemDisk!.DiskId!;
    const oldPath = await systemDiskOf(id);

    await armAt("reset:defined");
    await agent.client.ResetInstance({ InstanceId: id });
    await recover("reset:defined");

    await waitFor(async () => (await describe1(id)).LatestOperationState !== "OPERATING", "the reinstall to settle");
    expect(await describe1(id)).toMatchObject({ LatestOperation: "ResetInstance", LatestOperationState: "SUCCESS", InstanceState: "RUNNING" });
    const newPath = await systemDiskOf(id);
    expect(newPath).toMatch(new RegExp(`^${join(pool, diskId)}-r\\d+\\.qcow2$`));
    expect(existsSync(newPath)).toBe(true);
    expect(existsSync(oldPath), "the old system disk").toBe(false);
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
    await expectNoStrayFiles();
    await terminate(id);
    await expectNoStrayFiles();
  });

  it("removes a snapshot whose copy was killed at snapshot:copying, and the running guest is not left paused", async () => {
    const id = await launch("crash-snapshot", [{ DiskSize: 10 }]);
    const vdb = (await describe1(id)).DataDisks![0]!.DiskId!;

    await armAt("snapshot:copying");
    // The copy runs in the background, after the answer (the guest is frozen first): the
    // call answers, then the agent dies in the copy.
    const snapshotId = ((await cbs.request("CreateSnapshot", { DiskId: vdb, SnapshotName: "crash" })) as { SnapshotId: string }).SnapshotId;
    expect(snapshotId).toMatch(/^snap-[a-z0-9]{8}$/);
    await recover("snapshot:copying");

    const snaps = (await cbs.request("DescribeSnapshots", { Filters: [{ Name: "disk-id", Values: [vdb] }] })) as { TotalCount: number; SnapshotSet: CbsSnapshot[] };
    expect(snaps.SnapshotSet).toEqual([]);
    expect(existsSync(join(pool, "snapshots", `${snapshotId}.qcow2`))).toBe(false);
    expect(filesUnder(join(pool, "snapshots")), "files in snapshots/").toEqual([]);
    expect(readdirSync(join(agent.dataDir, "snapshots")).filter((f) => f.endsWith(".json")), "snapshot records").toEqual([]);
    // The copy of a running disk pauses the guest; the restart must not leave it paused.
    await waitForState(agent.client, id, "RUNNING");
    await waitFor(async () => (await virsh("domstate", id)).stdout.trim() === "running", `${id} to run (not paused)`, 30_000);
    expect((await qemuImgCheck(join(pool, `${vdb}.qcow2`))).ok).toBe(true);
    await expectNoStrayFiles();

    // Snapshots work again after the restart.
    const again = ((await cbs.request("CreateSnapshot", { DiskId: vdb, SnapshotName: "after-crash" })) as { SnapshotId: string }).SnapshotId;
    await waitFor(async () => {
      const s = (await cbs.request("DescribeSnapshots", { SnapshotIds: [again] })) as { SnapshotSet: CbsSnapshot[] };
      return s.SnapshotSet[0]?.SnapshotState === "NORMAL";
    }, "the new snapshot");
    await expectNoStrayFiles();
    await terminate(id);
    await expectNoStrayFiles();
  });

  it("leaves a valid disk with its old or new content when ApplySnapshot is killed at snapshot:rollback-copied", async () => {
    const id = await launch("crash-rollback", [{ DiskSize: 10 }]);
    const vdb = (await describe1(id)).DataDisks![0]!.DiskId!;
    const disk = join(pool, `${vdb}.qcow2`);
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED");
    await writeDiskMarker(disk, "MARK-IN-SNAPSHOT");
    const snapshotId = ((await cbs.request("CreateSnapshot", { DiskId: vdb, SnapshotName: "rollback" })) as { SnapshotId: string }).SnapshotId;
    await waitFor(async () => {
      const s = (await cbs.request("DescribeSnapshots", { SnapshotIds: [snapshotId] })) as { SnapshotSet: CbsSnapshot[] };
      return s.SnapshotSet[0]?.SnapshotState === "NORMAL";
    }, "the snapshot");
    await writeDiskMarker(disk, "MARK-AFTER-SNAPSHOT");

    await armAt("snapshot:rollback-copied");
    // The request waits for the rollback: the kill cuts it off.
    await expect(cbs.request("ApplySnapshot", { SnapshotId: snapshotId, DiskId: vdb })).rejects.toThrow();
    await recover("snapshot:rollback-copied");

    const check = await qemuImgCheck(disk);
    expect(check.ok, check.output).toBe(true);
    expect(["MARK-IN-SNAPSHOT", "MARK-AFTER-SNAPSHOT"]).toContain(await readDiskMarker(disk));
    expect(await virtualSize(disk)).toBe(10 * GiB);
    expect(existsSync(`${disk}.rollback.part`)).toBe(false);
    const s = (await cbs.request("DescribeSnapshots", { SnapshotIds: [snapshotId] })) as { SnapshotSet: CbsSnapshot[] };
    expect(s.SnapshotSet[0]?.SnapshotState).toBe("NORMAL");
    expect((await describe1(id)).InstanceState).toBe("STOPPED");
    await expectNoStrayFiles();

    // The rollback can be done again, whole, after the restart.
    await cbs.request("ApplySnapshot", { SnapshotId: snapshotId, DiskId: vdb });
    expect(await readDiskMarker(disk)).toBe("MARK-IN-SNAPSHOT");
    await agent.client.StartInstances({ InstanceIds: [id] });
    await waitForState(agent.client, id, "RUNNING");
    await expectNoStrayFiles();
    await terminate(id);
    await expectNoStrayFiles();
  });

  it("marks an image whose copy was killed at image:copying CREATEFAILED, keeps no file of it, and resumes the guest", async () => {
    const id = await launch("crash-image");
    const name = `crash-image-${process.pid}`;

    await armAt("image:copying");
    // The copy runs in the background, after the answer: the call answers the new image's ID.
    const answered = await agent.client.CreateImage({ InstanceId: id, ImageName: name });
    await recover("image:copying");

    const images = (await agent.client.DescribeImages({ Filters: [{ Name: "image-name", Values: [name] }] })).ImageSet ?? [];
    expect(images).toHaveLength(1);
    const image = images[0]!;
    expect(image.ImageId).toBe(answered.ImageId);
    expect(image.ImageState).toBe("CREATEFAILED");
    const newImage = image.ImageId!;
    const left = filesUnder(agent.dataDir).filter((f) => f.includes(newImage) && !f.endsWith(`${newImage}.json`));
    expect(left, `files of ${newImage}`).toEqual([]);
    for (const f of filesUnder(join(agent.dataDir, "images", "base"))) expect(f.includes("created-"), f).toBe(false);
    // CreateImage of a running guest without a guest agent pauses it for the copy.
    await waitForState(agent.client, id, "RUNNING");
    await waitFor(async () => (await virsh("domstate", id)).stdout.trim() === "running", `${id} to run (not paused)`, 30_000);
    expect((await describe1(id)).LatestOperationState).not.toBe("OPERATING");
    await expectNoStrayFiles();
    expect(statSync(await systemDiskOf(id)).isFile()).toBe(true);
    await terminate(id);
    await expectNoStrayFiles();
  });
});
