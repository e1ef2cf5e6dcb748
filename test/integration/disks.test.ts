/**
 * Local disks through the official SDK against the real agent, libvirtd, QEMU and
 * qemu-img: data disks made with an instance (targets, serials, IO limits, sizes),
 * CBS CreateDisks/AttachDisks/DetachDisks/DescribeDisks/TerminateDisks with hot-plug
 * into a running guest, ResizeInstanceDisks online and offline, snapshots rolled back
 * with their bytes, refusals that change nothing, and nothing left behind.
 */
import { execa } from "execa";
import { existsSync } from "node:fs";
import { link, mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { refused, waitUntil } from "../support/wait.js";
import { commonClient, importImage, makeDataDir, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages, readDiskMarker, writeDiskMarker } from "../support/tiny-image.js";
import { parseTinyReady, serialLogSize, TINY_READY_PATTERN, waitForDisks, waitForSerial, waitForTinyData } from "../support/serial.js";

const GiB = 1024 ** 3;
const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

async function virtualSize(path: string): Promise<number> {
  const r = await execa("qemu-img", ["info", "--output=json", "-U", path]);
  return (JSON.parse(r.stdout) as { "virtual-size": number })["virtual-size"];
}



describe("local disks through the official SDK", () => {
  let agent: AgentProcess;
  let imageId: string;
  let cbs: ReturnType<typeof commonClient>;
  let hddDir: string;
  let ssdDir: string;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    const dataDir = await makeDataDir();
    hddDir = `${dataDir}/pools/hdd`;
    ssdDir = `${dataDir}/pools/ssd`;
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      dataDir,
      env: {
        CDH_AGENT_STORAGE_POOLS: JSON.stringify([
          { name: "hdd", path: hddDir, disk_type: "LOCAL_BASIC", size_gib: 200 },
          { name: "ssd", path: ssdDir, disk_type: "LOCAL_SSD", size_gib: 60, iops: 500, throughput_mbps: 50 },
        ]),
      },
    });
    cbs = commonClient(agent.port);
    imageId = await importImage(agent.client, images.raw.normal, "tiny-normal");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("reports the pools' capacity and makes data disks with their instance: targets, serials, IO limits, sizes", async () => {
    const client = agent.client;
    const before = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(before.DiskTotal).toBe(260);
    expect(before.DiskType).toBe("LOCAL_BASIC");

    const run = await client.RunInstances({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "zone-1", HostId: agent.hostId },
      InstanceType: "CDH_1C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 10 },
      DataDisks: [{ DiskSize: 10 }, { DiskSize: 20, DiskType: "LOCAL_SSD", DeleteWithInstance: true }],
      InstanceName: "disks",
    });
    const id = run.InstanceIdSet![0]!;
    // Reserved at once, before anything is made: the system disk, both data disks and the
    // instance's 2 GiB of configuration files (instance_overhead_gib).
    const during = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(during.DiskAvailable).toBe(before.DiskAvailable! - 42);
    await waitForState(client, id, "RUNNING");

    const inst = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(inst.SystemDisk).toMatchObject({ DiskType: "LOCAL_BASIC", DiskSize: 10 });
    expect(inst.SystemDisk!.DiskId).toMatch(/^disk-[a-z0-9]{8}$/);
    expect(inst.DataDisks).toHaveLength(2);
    const [d1, d2] = inst.DataDisks!;
    expect(d1).toMatchObject({ DiskType: "LOCAL_BASIC", DiskSize: 10, DeleteWithInstance: true });
    expect(d2).toMatchObject({ DiskType: "LOCAL_SSD", DiskSize: 20, DeleteWithInstance: true });

    // The files are in their pools, with the promised virtual sizes.
    expect(await virtualSize(`${hddDir}/${inst.SystemDisk!.DiskId}.qcow2`)).toBe(10 * GiB);
    expect(await virtualSize(`${hddDir}/${d1!.DiskId}.qcow2`)).toBe(10 * GiB);
    expect(await virtualSize(`${ssdDir}/${d2!.DiskId}.qcow2`)).toBe(20 * GiB);

    // libvirt has them at vdb and vdc, serial = disk ID; the SSD pool's limits on vdc.
    const xml = (await virsh("dumpxml", "--domain", id)).stdout;
    const disk = (target: string) => xml.split("<disk ").find((d) => new RegExp(`dev=['"]${target}['"]`).test(d)) ?? "";
    expect(disk("vdb")).toContain(`<serial>${d1!.DiskId}</serial>`);
    expect(disk("vdc")).toContain(`<serial>${d2!.DiskId}</serial>`);
    expect(disk("vdc")).toContain("<total_iops_sec>500</total_iops_sec>");
    expect(disk("vdc")).toContain(`<total_bytes_sec>${50 * 1024 * 1024}</total_bytes_sec>`);
    expect(disk("vdb")).toContain("<total_iops_sec>2000</total_iops_sec>");

    // The guest sees them at the promised sizes, under their IDs (/dev/disk/by-id/virtio-<id>).
    const ready = parseTinyReady((await waitForSerial(consoleLog(id), TINY_READY_PATTERN, { timeoutMs: 90_000 }))[0]);
    expect(ready.disks).toMatchObject({ vdb: (10 * GiB) / 512, vdc: (20 * GiB) / 512 });
    expect(ready.serials).toMatchObject({ vda: inst.SystemDisk!.DiskId, vdb: d1!.DiskId, vdc: d2!.DiskId });

    // DescribeDisks (CBS) shows all three, attached.
    const described = (await cbs.request("DescribeDisks", { Filters: [{ Name: "instance-id", Values: [id] }] })) as { TotalCount: number; DiskSet: Array<Record<string, unknown>> };
    expect(described.TotalCount).toBe(3);
    expect(described.DiskSet.map((d) => [d.DiskUsage, d.DiskState, d.DiskSize]).sort()).toEqual(
      [["DATA_DISK", "ATTACHED", 10], ["DATA_DISK", "ATTACHED", 20], ["SYSTEM_DISK", "ATTACHED", 10]].sort(),
    );
  });

  it("hot-attaches a new disk to the running guest and detaches it again", async () => {
    const id = await instanceNamed("disks");
    const made = (await cbs.request("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, DiskName: "spare", Placement: { Zone: "zone-1" } })) as { DiskIdSet: string[] };
    const diskId = made.DiskIdSet[0]!;
    expect(diskId).toMatch(/^disk-[a-z0-9]{8}$/);
    expect(await virtualSize(`${hddDir}/${diskId}.qcow2`)).toBe(10 * GiB);
    let d = ((await cbs.request("DescribeDisks", { DiskIds: [diskId] })) as { DiskSet: Array<Record<string, unknown>> }).DiskSet[0]!;
    expect(d).toMatchObject({ DiskState: "UNATTACHED", Attached: false, DiskName: "spare", DiskUsage: "DATA_DISK" });

    const log = consoleLog(id);
    let offset = await serialLogSize(log);
    await cbs.request("AttachDisks", { DiskIds: [diskId], InstanceId: id });
    // Hot-plugged: the running guest sees it at vdd, under its ID, without a reboot.
    const seen = await waitForDisks(log, (g) => g.serials.vdd === diskId, { fromOffset: offset, timeoutMs: 60_000 });
    expect(seen.disks.vdd).toBe((10 * GiB) / 512);
    const live = (await virsh("dumpxml", "--domain", id)).stdout;
    expect(live).toContain(`<serial>${diskId}</serial>`);
    const inactive = (await virsh("dumpxml", "--domain", id, "--inactive")).stdout;
    expect(inactive).toContain(`<serial>${diskId}</serial>`);
    d = ((await cbs.request("DescribeDisks", { DiskIds: [diskId] })) as { DiskSet: Array<Record<string, unknown>> }).DiskSet[0]!;
    expect(d).toMatchObject({ DiskState: "ATTACHED", InstanceId: id });

    // The same disk cannot be attached twice, nor deleted while attached.
    expect((await refused(cbs.request("AttachDisks", { DiskIds: [diskId], InstanceId: id }))).code).toBe("ResourceUnavailable.Attached");
    expect((await refused(cbs.request("TerminateDisks", { DiskIds: [diskId] }))).code).toBe("ResourceUnavailable.Attached");
    // Another instance's disk, the system disk, a disk that does not exist: refused, nothing changes.
    expect((await refused(cbs.request("DetachDisks", { DiskIds: [diskId], InstanceId: "ins-zzzzzzzz" }))).code).toBe("ResourceUnavailable.NotAttached");
    const systemDisk = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.SystemDisk!.DiskId!;
    expect((await refused(cbs.request("DetachDisks", { DiskIds: [systemDisk] }))).code).toBe("InvalidDisk.NotSupported");
    expect((await refused(cbs.request("AttachDisks", { DiskIds: ["disk-zzzzzzzz"], InstanceId: id }))).code).toBe("InvalidDiskId.NotFound");
    expect((await refused(cbs.request("AttachDisks", { DiskIds: [diskId], InstanceId: "ins-zzzzzzzz" }))).code).toBe("InvalidInstanceId.NotFound");

    offset = await serialLogSize(log);
    await cbs.request("DetachDisks", { DiskIds: [diskId], InstanceId: id });
    await waitForDisks(log, (g) => !("vdd" in g.disks) && "vdc" in g.disks, { fromOffset: offset, timeoutMs: 60_000 });
    expect((await virsh("dumpxml", "--domain", id)).stdout).not.toContain(diskId);
    expect((await virsh("dumpxml", "--domain", id, "--inactive")).stdout).not.toContain(diskId);
    d = ((await cbs.request("DescribeDisks", { DiskIds: [diskId] })) as { DiskSet: Array<Record<string, unknown>> }).DiskSet[0]!;
    expect(d).toMatchObject({ DiskState: "UNATTACHED", InstanceId: "" });

    await cbs.request("TerminateDisks", { DiskIds: [diskId] });
    expect(existsSync(`${hddDir}/${diskId}.qcow2`)).toBe(false);
    expect(((await cbs.request("DescribeDisks", { DiskIds: [diskId] })) as { TotalCount: number }).TotalCount).toBe(0);
  });

  it("grows a data disk of the running guest online, and refuses shrinking, odd steps and foreign disks without changing anything", async () => {
    const client = agent.client;
    const id = await instanceNamed("disks");
    const inst = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    const vdb = inst.DataDisks![0]!.DiskId!;
    const path = `${hddDir}/${vdb}.qcow2`;

    const refusals: Array<[Record<string, unknown>, string]> = [
      [{ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 5 }], ResizeOnline: true }, "InvalidParameterValue.DiskShrink"],
      [{ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 15 }], ResizeOnline: true }, "InvalidParameterValue.DiskSizeNotMultipleOfStep"],
      [{ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 20 }] }, "UnsupportedOperation.InstanceStateRunning"],
      [{ InstanceId: id, DataDisks: [{ DiskId: "disk-zzzzzzzz", DiskSize: 20 }], ResizeOnline: true }, "InvalidDiskId.NotFound"],
      [{ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 40000 }], ResizeOnline: true }, "InvalidParameterValue.Range"],
      [{ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 1010 }], ResizeOnline: true }, "ResourceInsufficient"],
    ];
    for (const [body, code] of refusals) {
      expect((await refused(client.ResizeInstanceDisks(body as never))).code, JSON.stringify(body)).toBe(code);
    }
    expect(await virtualSize(path)).toBe(10 * GiB);

    const offset = await serialLogSize(consoleLog(id));
    await client.ResizeInstanceDisks({ InstanceId: id, DataDisks: [{ DiskId: vdb, DiskSize: 30 }], ResizeOnline: true });
    await waitForOperation(agent, id, "ResizeInstanceDisks");
    // The running guest sees the new size without a reboot.
    await waitForDisks(consoleLog(id), (g) => g.disks.vdb === (30 * GiB) / 512, { fromOffset: offset, timeoutMs: 60_000 });
    expect(await virtualSize(path)).toBe(30 * GiB);
    const after = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(after.DataDisks![0]).toMatchObject({ DiskId: vdb, DiskSize: 30 });
    expect((await client.DescribeInstancesStatus({ InstanceIds: [id] })).InstanceStatusSet![0]!.InstanceState).toBe("RUNNING");
    // The guest's view of the block device grew too (QEMU reports the new capacity).
    const blk = await virsh("domblkinfo", "--domain", id, "vdb");
    expect(blk.stdout).toMatch(new RegExp(`Capacity:\\s+${30 * GiB}`));
  });

  it("rolls a data disk back to a snapshot, with its bytes, only while the instance is stopped", async () => {
    const client = agent.client;
    const id = await instanceNamed("disks");
    const vdb = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.DataDisks![0]!.DiskId!;
    const path = `${hddDir}/${vdb}.qcow2`;
    await client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(client, id, "STOPPED");
    await writeDiskMarker(path, "MARK-BEFORE-SNAPSHOT");

    const snap = (await cbs.request("CreateSnapshot", { DiskId: vdb, SnapshotName: "before" })) as { SnapshotId: string };
    const snapshotId = snap.SnapshotId;
    await waitUntil(async () => {
      const s = (await cbs.request("DescribeSnapshots", { SnapshotIds: [snapshotId] })) as { SnapshotSet: Array<Record<string, unknown>> };
      return s.SnapshotSet[0]?.SnapshotState === "NORMAL";
    });
    expect(existsSync(`${hddDir}/snapshots/${snapshotId}.qcow2`)).toBe(true);

    await writeDiskMarker(path, "MARK-AFTER-SNAPSHOT");
    expect(await readDiskMarker(path)).toBe("MARK-AFTER-SNAPSHOT");
    // Another disk's snapshot is refused, and changes nothing.
    const other = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.DataDisks![1]!.DiskId!;
    expect((await refused(cbs.request("ApplySnapshot", { SnapshotId: snapshotId, DiskId: other }))).code).toBe("InvalidSnapshot.NotSupported");

    await cbs.request("ApplySnapshot", { SnapshotId: snapshotId, DiskId: vdb });
    expect(await readDiskMarker(path)).toBe("MARK-BEFORE-SNAPSHOT");
    expect(await virtualSize(path)).toBe(30 * GiB);

    const offset = await serialLogSize(consoleLog(id));
    await client.StartInstances({ InstanceIds: [id] });
    await waitForState(client, id, "RUNNING");
    // The guest reads the rolled-back bytes.
    const data = await waitForTinyData(consoleLog(id), (d) => d.vdb !== undefined, { fromOffset: offset, timeoutMs: 90_000 });
    expect(data.vdb).toBe("MARK-BEFORE-SNAPSHOT");
    expect((await refused(cbs.request("ApplySnapshot", { SnapshotId: snapshotId, DiskId: vdb }))).code).toBe("UnsupportedOperation.InstanceNotStopped");
  });

  it("terminating the instance removes its disks, their snapshots and their data, and gives back exactly what it took", async () => {
    const client = agent.client;
    const id = await instanceNamed("disks");
    const inst = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    const vdb = inst.DataDisks![0]!.DiskId!;
    const files = [`${hddDir}/${inst.SystemDisk!.DiskId}.qcow2`, `${hddDir}/${vdb}.qcow2`, `${ssdDir}/${inst.DataDisks![1]!.DiskId}.qcow2`];
    // A second name for the data disk's inode, outside the pools: it shows what happens to the bytes.
    const witnessDir = join(agent.dataDir, "..", "witness");
    await mkdir(witnessDir, { recursive: true });
    const witness = join(witnessDir, "vdb.qcow2");
    await link(files[1]!, witness);
    const marker = await readFile(witness);
    expect(marker.subarray(0, 4).toString("latin1")).toBe("QFI\xfb");

    await client.TerminateInstances({ InstanceIds: [id] });
    await waitUntil(async () => ((await client.DescribeInstances({ InstanceIds: [id] })).TotalCount ?? 0) === 0);
    for (const f of files) expect(existsSync(f), f).toBe(false);
    const snaps = (await cbs.request("DescribeSnapshots", { Filters: [{ Name: "disk-id", Values: [vdb] }] })) as { TotalCount: number };
    expect(snaps.TotalCount).toBe(0);
    // The data was discarded before the file was deleted: what remains of the inode is zeros.
    const left = await readFile(witness);
    expect(left.some((b) => b !== 0)).toBe(false);
    await rm(witnessDir, { recursive: true, force: true });

    const host = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(host.DiskTotal).toBe(260);
    const disks = (await cbs.request("DescribeDisks", {})) as { TotalCount: number };
    expect(disks.TotalCount).toBe(0);
  });

  function consoleLog(id: string): string {
    return `${agent.dataDir}/instances/${id}/console.log`;
  }

  async function instanceNamed(name: string): Promise<string> {
    const r = await agent.client.DescribeInstances({ Filters: [{ Name: "instance-name", Values: [name] }] });
    const id = r.InstanceSet?.[0]?.InstanceId;
    if (!id) throw new Error(`no instance named ${name}`);
    return id;
  }
});


async function waitForOperation(agent: AgentProcess, id: string, action: string): Promise<void> {
  await waitUntil(async () => {
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    if (i.LatestOperation === action && i.LatestOperationState === "FAILED") throw new Error(`${action} failed: ${JSON.stringify(i)}`);
    return i.LatestOperation === action && i.LatestOperationState === "SUCCESS";
  });
}
