/**
 * The whole lifecycle through the official SDK against the real agent process, a real
 * libvirtd and a real (tiny) guest: import, run with exact size, stop (HARD and
 * SOFT_FIRST), start, reboot, terminate, with capacity moving by exactly the size.
 */
import { execa } from "execa";
import { existsSync, readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { parseTinyReady, serialLogSize, waitForSerial, TINY_READY_PATTERN } from "../support/serial.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

describe("instance lifecycle through the official SDK", () => {
  let agent: AgentProcess;
  let imageId: string;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    imageId = await importImage(agent.client, images.raw.normal, "tiny-normal");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("imports a raw image into a qcow2 in the cache, with its format read from the content", async () => {
    const d = await agent.client.DescribeImages({ ImageIds: [imageId] });
    expect(d.TotalCount).toBe(1);
    expect(d.ImageSet?.[0]).toMatchObject({ ImageId: imageId, ImageName: "tiny-normal", ImageState: "NORMAL", ImageFormat: "qcow2" });
    // Base files are named by the content's SHA-256 (agent/images.ts).
    const record = JSON.parse(readFileSync(`${agent.dataDir}/images/${imageId}.json`, "utf8")) as { baseFile: string };
    const info = await execa("qemu-img", ["info", "--output=json", "-U", `${agent.dataDir}/images/${record.baseFile}`]);
    expect(JSON.parse(info.stdout).format).toBe("qcow2");
  });

  it("runs, stops, starts, reboots and terminates an instance, each state true in the API and in libvirt", async () => {
    const client = agent.client;
    const before = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;

    const run = await client.RunInstances({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "zone-1", HostId: agent.hostId },
      InstanceType: "CDH_2C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 2 },
      InstanceName: "lifecycle",
    });
    const id = run.InstanceIdSet![0]!;
    expect(id).toMatch(/^ins-[a-z0-9]{8}$/);

    // Capacity moves by exactly the instance's size, at once (it is reserved before anything is made).
    const during = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(during.CpuAvailable).toBe(before.CpuAvailable! - 2);
    expect(during.MemAvailable).toBeCloseTo(before.MemAvailable! - 1, 5);
    // The 2 GiB system disk and the instance's 2 GiB of configuration files (instance_overhead_gib).
    expect(during.DiskAvailable).toBe(before.DiskAvailable! - 4);

    await waitForState(client, id, "RUNNING");
    const log = `${agent.dataDir}/instances/${id}/console.log`;
    const ready = parseTinyReady((await waitForSerial(log, TINY_READY_PATTERN, { timeoutMs: 60_000 }))[0]);
    const describe = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(describe).toMatchObject({ InstanceId: id, CPU: 2, Memory: 1, InstanceType: "CDH_2C1G", InstanceName: "lifecycle", LatestOperation: "RunInstances", LatestOperationState: "SUCCESS" });
    expect(describe.Placement?.HostId).toBe(agent.hostId);
    // The guest sees exactly what was asked, and its SMBIOS serial is the instance UUID.
    expect(ready.vcpus).toBe(2);
    expect(ready.memtotalKb).toBeGreaterThan(900 * 1024);
    expect(ready.memtotalKb).toBeLessThanOrEqual(1024 * 1024);
    expect(ready.serial).toBe(describe.Uuid);
    const dominfo = (await virsh("dominfo", id)).stdout;
    expect(dominfo).toMatch(/CPU\(s\):\s+2\n/);
    expect(dominfo).toMatch(/Max memory:\s+1048576 KiB/);
    expect(dominfo).toMatch(/State:\s+running/);

    await client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(client, id, "STOPPED", 30_000);
    expect((await virsh("domstate", id)).stdout.trim()).toBe("shut off");

    await client.StartInstances({ InstanceIds: [id] });
    await waitForState(client, id, "RUNNING", 30_000);
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
    await waitForSerial(log, TINY_READY_PATTERN, { timeoutMs: 60_000, fromOffset: 0 });

    // SOFT_FIRST on a guest that obeys ACPI: it shuts itself down.
    let offset = await serialLogSize(log);
    await client.StopInstances({ InstanceIds: [id], StopType: "SOFT_FIRST" });
    await waitForSerial(log, /CDH-TINY-POWEROFF/, { timeoutMs: 30_000, fromOffset: offset });
    await waitForState(client, id, "STOPPED", 30_000);

    offset = await serialLogSize(log);
    await client.StartInstances({ InstanceIds: [id] });
    await waitForState(client, id, "RUNNING", 30_000);
    await waitForSerial(log, TINY_READY_PATTERN, { timeoutMs: 60_000, fromOffset: offset });

    // A soft reboot: the guest goes down and comes up again, and stays RUNNING in libvirt.
    offset = await serialLogSize(log);
    await client.RebootInstances({ InstanceIds: [id] });
    await waitForSerial(log, TINY_READY_PATTERN, { timeoutMs: 60_000, fromOffset: offset });
    await waitForState(client, id, "RUNNING", 30_000);
    const afterReboot = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(afterReboot).toMatchObject({ LatestOperation: "RebootInstances", LatestOperationState: "SUCCESS" });

    // A forced reboot resets the machine.
    offset = await serialLogSize(log);
    await client.RebootInstances({ InstanceIds: [id], ForceReboot: true });
    await waitForSerial(log, TINY_READY_PATTERN, { timeoutMs: 60_000, fromOffset: offset });
    await waitForState(client, id, "RUNNING", 30_000);

    await client.TerminateInstances({ InstanceIds: [id] });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await client.DescribeInstances({ InstanceIds: [id] })).TotalCount).toBe(0);
    expect((await virsh("dominfo", id)).exitCode).not.toBe(0);
    expect(existsSync(`${agent.dataDir}/instances/${id}`)).toBe(false);
    const after = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(after).toEqual(before);
  });

  it("refuses a second image with the same name, and DeleteImages of an image an instance uses", async () => {
    const client = agent.client;
    await expect(
      client.ImportImage({ ImageUrl: "file:///nonexistent.raw", ImageName: "tiny-normal", OsType: "Linux", OsVersion: "x", Architecture: "x86_64" }),
    ).rejects.toMatchObject({ code: "InvalidImageName.Duplicate" });
    const run = await client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } });
    const id = run.InstanceIdSet![0]!;
    // The API's "in use (USING)" rule (images.test.ts covers the base file and the delete after).
    await expect(client.DeleteImages({ ImageIds: [imageId], DryRun: true })).rejects.toMatchObject({ code: "InvalidImageId.IncorrectState" });
    await expect(client.DeleteImages({ ImageIds: [imageId] })).rejects.toMatchObject({ code: "InvalidImageId.IncorrectState" });
    await waitForState(client, id, "RUNNING");
    await client.TerminateInstances({ InstanceIds: [id] });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await client.DescribeImages({ ImageIds: [imageId] })).ImageSet?.[0]?.ImageState).toBe("NORMAL");
  });
});
