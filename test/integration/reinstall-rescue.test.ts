/**
 * Reinstall, images made from instances, clone, rescue mode and ISO mount through the
 * official SDK against the real agent, libvirtd, QEMU and the project's tiny guest and
 * rescue system: the guest's own console says what it sees.
 */
import { execa } from "execa";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { refused, waitUntil } from "../support/wait.js";
import { commonClient, importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { sshExec, waitForSsh } from "../support/guest-ssh.js";
import { ensureRescueImage } from "../support/rescue-image.js";
import { parseRescueReady, parseTinyReady, RESCUE_READY_PATTERN, serialLogSize, TINY_READY_PATTERN, waitForRescueData, waitForSerial, waitForTinyData } from "../support/serial.js";
import { ensureTinyImages, writeDiskMarker } from "../support/tiny-image.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
const PASSWORD = "Rescue-Pass1";



/** The file the domain's system disk (vda) is, in its persistent definition. */
async function systemDiskOf(id: string): Promise<string> {
  const xml = (await virsh("dumpxml", "--domain", id, "--inactive")).stdout;
  const vda = xml.split("<disk ").find((d) => /dev=['"]vda['"]/.test(d)) ?? "";
  return /<source file=['"]([^'"]+)['"]/.exec(vda)?.[1] ?? "";
}

describe("reinstall, images from instances, clone, rescue and ISO", () => {
  let agent: AgentProcess;
  let imageId: string;
  let id: string;
  let dataDisk: string;

  const log = (instanceId: string) => `${agent.dataDir}/instances/${instanceId}/console.log`;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    const rescue = await ensureRescueImage();
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: { CDH_AGENT_RESCUE_KERNEL: rescue.kernel, CDH_AGENT_RESCUE_INITRD: rescue.initrd },
    });
    imageId = await importImage(agent.client, images.raw.normal, "tiny-normal");
    const run = await agent.client.RunInstances({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "zone-1", HostId: agent.hostId },
      InstanceType: "CDH_1C1G",
      ImageId: imageId,
      SystemDisk: { DiskSize: 10 },
      DataDisks: [{ DiskSize: 10 }],
      InstanceName: "reinstall",
    });
    id = run.InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
    const inst = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    dataDisk = inst.DataDisks![0]!.DiskId!;
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("reinstalls onto a new system disk, keeping the ID, UUID, address, MAC and the data disk's bytes", async () => {
    const client = agent.client;
    const before = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    // MacAddresses is this agent's addition to the CVM Instance (not in the SDK's type).
    const macsBefore = (before as { MacAddresses?: string[] }).MacAddresses;
    expect(macsBefore).toHaveLength(1);
    await client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(client, id, "STOPPED");
    await writeDiskMarker(`${agent.dataDir}/pools/local/${dataDisk}.qcow2`, "KEEP-ME-ACROSS-REINSTALL");
    const oldDisk = await systemDiskOf(id);
    expect(existsSync(oldDisk)).toBe(true);

    // Refusals change nothing.
    expect((await refused(client.ResetInstance({ InstanceId: id, SystemDisk: { DiskSize: 5 } }))).code).toBe("InvalidParameterValue.DiskShrink");
    expect((await refused(client.ResetInstance({ InstanceId: id, ImageId: "img-zzzzzzzz" }))).code).toBe("InvalidImageId.NotFound");
    expect((await refused(client.ResetInstance({ InstanceId: id, LoginSettings: { Password: "short" } }))).code).toBe("InvalidPassword");
    expect(await systemDiskOf(id)).toBe(oldDisk);

    const offset = await serialLogSize(log(id));
    await client.ResetInstance({ InstanceId: id, LoginSettings: { Password: "Reinstall-1x" } });
    const states = new Set<string>();
    await waitUntil(async () => {
      const i = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
      states.add(i.InstanceState!);
      if (i.LatestOperation === "ResetInstance" && i.LatestOperationState === "FAILED") throw new Error(JSON.stringify(i));
      return i.LatestOperation === "ResetInstance" && i.LatestOperationState === "SUCCESS";
    });
    expect(states.has("RESETTING") || states.has("RUNNING")).toBe(true);
    const after = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(after).toMatchObject({ InstanceId: id, Uuid: before.Uuid, PrivateIpAddresses: before.PrivateIpAddresses, MacAddresses: macsBefore, InstanceState: "RUNNING" });
    expect(after.SystemDisk!.DiskId).toBe(before.SystemDisk!.DiskId);

    const newDisk = await systemDiskOf(id);
    expect(newDisk).not.toBe(oldDisk);
    expect(existsSync(oldDisk)).toBe(false);
    const chain = JSON.parse((await execa("qemu-img", ["info", "-U", "--output=json", newDisk])).stdout) as { "backing-filename"?: string };
    expect(chain["backing-filename"]).toBeTruthy();

    // The guest booted the new disk and reads the data disk's bytes as they were.
    const ready = parseTinyReady((await waitForSerial(log(id), TINY_READY_PATTERN, { fromOffset: offset, timeoutMs: 90_000 }))[0]);
    expect(ready.uuid).toBe(before.Uuid);
    const data = await waitForTinyData(log(id), (d) => d.vdb !== undefined, { fromOffset: offset, timeoutMs: 60_000 });
    expect(data.vdb).toBe("KEEP-ME-ACROSS-REINSTALL");
  });

  it("boots the rescue system with the instance's disks, refuses everything but exit, and restores the boot on exit", async () => {
    const client = agent.client;
    const offset = await serialLogSize(log(id));
    expect((await refused(client.ExitRescueMode({ InstanceId: id }))).code).toBe("UnsupportedOperation.NotInRescueMode");
    await client.EnterRescueMode({ InstanceId: id, Password: PASSWORD, StopType: "HARD" } as never);
    await waitForState(client, id, "RESCUE_MODE");

    const ready = parseRescueReady((await waitForSerial(log(id), RESCUE_READY_PATTERN, { fromOffset: offset, timeoutMs: 90_000 }))[0]);
    expect(ready.rootPassword).toBe("set");
    expect(ready.serials.vdb).toBe(dataDisk);
    expect(await waitForRescueData(log(id), "vdb", { fromOffset: offset, timeoutMs: 30_000 })).toBe("KEEP-ME-ACROSS-REINSTALL");
    expect((await virsh("dumpxml", "--domain", id, "--inactive")).stdout).toContain("<kernel>");

    // SSH into the rescue system as root with the rescue password, on the instance's own address.
    const ip = (await client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.PrivateIpAddresses![0]!;
    const login = await waitForSsh({ host: ip, port: 22, password: PASSWORD, command: "cat /proc/cmdline; cat /sys/block/vdb/serial", timeoutMs: 90_000 });
    expect(login.stdout).toContain("cdh.rescue_hash=$6$");
    expect(login.stdout).not.toContain(PASSWORD);
    expect(login.stdout).toContain(dataDisk.slice(0, 20));
    await expect(sshExec({ host: ip, port: 22, password: "Wrong-Password-1", command: "true", timeoutMs: 20_000 })).rejects.toThrow(/authentication/i);

    for (const call of [
      () => client.StopInstances({ InstanceIds: [id] }),
      () => client.RebootInstances({ InstanceIds: [id] }),
      () => client.ResetInstancesPassword({ InstanceIds: [id], Password: "Another-1x", ForceStop: true }),
      () => client.TerminateInstances({ InstanceIds: [id] }),
    ]) {
      expect((await refused(call())).code).toBe("UnsupportedOperation.InstanceStateRescueMode");
    }

    const exitOffset = await serialLogSize(log(id));
    await client.ExitRescueMode({ InstanceId: id });
    await waitForState(client, id, "RUNNING");
    await waitForSerial(log(id), TINY_READY_PATTERN, { fromOffset: exitOffset, timeoutMs: 90_000 });
    const xml = (await virsh("dumpxml", "--domain", id, "--inactive")).stdout;
    expect(xml).not.toContain("<kernel>");
    expect(xml).not.toContain("rescue");
  });

  it("mounts an ISO in the running guest's tray and unmounts it only when stopped", async () => {
    const client = agent.client;
    const cvm = commonClient(agent.port);
    const dir = join(agent.dataDir, "..", "iso-src");
    await mkdir(join(dir, "content"), { recursive: true });
    await writeFile(join(dir, "content", "hello.txt"), "hello\n");
    const iso = join(dir, "tools.iso");
    await execa("xorriso", ["-as", "mkisofs", "-quiet", "-V", "TOOLS", "-o", iso, join(dir, "content")]);
    const notIso = join(dir, "not.iso");
    await writeFile(notIso, Buffer.alloc(64 * 1024));
    const body = { InstanceId: id, Architecture: "x86_64", OsType: "Linux", OsVersion: "tools" };

    expect((await refused(cvm.request("InstanceAttachISO", { ...body, ImageUrl: `file://${notIso}` }))).code).toBe("InvalidParameterValue");
    expect((await refused(cvm.request("InstanceAttachISO", { ...body, ImageUrl: "ftp://example/x.iso" }))).code).toBe("InvalidParameter.InvalidParameterUrlError");

    await cvm.request("InstanceAttachISO", { ...body, ImageUrl: `file://${iso}` });
    const attached = `${agent.dataDir}/instances/${id}/attached.iso`;
    expect((await virsh("domblklist", "--domain", id)).stdout).toContain(attached);
    expect((await virsh("dumpxml", "--domain", id, "--inactive")).stdout).toContain(attached);

    expect((await refused(cvm.request("InstanceDetachISO", { InstanceId: id }))).code).toBe("UnsupportedOperation.InstanceStateRunning");
    await client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(client, id, "STOPPED");
    await cvm.request("InstanceDetachISO", { InstanceId: id });
    expect((await virsh("dumpxml", "--domain", id, "--inactive")).stdout).not.toContain(attached);
    expect(existsSync(attached)).toBe(false);
    await client.StartInstances({ InstanceIds: [id] });
    await waitForState(client, id, "RUNNING");
  });

  it("makes an image of the instance that boots a new instance, and clones only instances without data disks", async () => {
    const client = agent.client;
    const cvm = commonClient(agent.port);
    const made = await client.CreateImage({ InstanceId: id, ImageName: "from-reinstall" });
    const newImage = made.ImageId!;
    await waitUntil(async () => {
      const img = (await client.DescribeImages({ ImageIds: [newImage] })).ImageSet![0]!;
      if (img.ImageState === "CREATEFAILED") throw new Error(JSON.stringify(img));
      return img.ImageState === "NORMAL";
    });
    expect((await client.DescribeImages({ ImageIds: [newImage] })).ImageSet![0]).toMatchObject({ ImageSource: "CREATE_IMAGE", ImageName: "from-reinstall" });
    // The source kept running meanwhile (no guest agent: paused for the copy, then resumed).
    expect((await client.DescribeInstancesStatus({ InstanceIds: [id] })).InstanceStatusSet![0]!.InstanceState).toBe("RUNNING");

    const run = await client.RunInstances({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "zone-1", HostId: agent.hostId },
      InstanceType: "CDH_1C1G",
      ImageId: newImage,
      SystemDisk: { DiskSize: 10 },
      InstanceName: "from-image",
    });
    const second = run.InstanceIdSet![0]!;
    await waitForState(client, second, "RUNNING");
    const ready = parseTinyReady((await waitForSerial(log(second), TINY_READY_PATTERN, { timeoutMs: 90_000 }))[0]);
    expect(ready.serials.vda).toMatch(/^disk-/);

    expect((await refused(cvm.request("CloneInstance", { InstanceId: id, DataDiskIds: [] }))).code).toBe("UnsupportedOperation.InvalidDataDisk");
    const cloneBody = { InstanceId: second, InstanceName: "clone", Placement: { Zone: "zone-1", HostId: agent.hostId }, ClientToken: "clone-once" };
    const clone = (await cvm.request("CloneInstance", cloneBody)) as { InstanceIdSet: string[] };
    const cloneId = clone.InstanceIdSet[0]!;
    // ClientToken: the same request again answers with the same instance and makes no second image.
    const imagesBefore = (await client.DescribeImages({})).TotalCount;
    expect(((await cvm.request("CloneInstance", cloneBody)) as { InstanceIdSet: string[] }).InstanceIdSet).toEqual([cloneId]);
    expect((await client.DescribeImages({})).TotalCount).toBe(imagesBefore);
    await waitForState(client, cloneId, "RUNNING");
    await waitForSerial(log(cloneId), TINY_READY_PATTERN, { timeoutMs: 90_000 });
    const c = (await client.DescribeInstances({ InstanceIds: [cloneId] })).InstanceSet![0]!;
    expect(c).toMatchObject({ CPU: 1, Memory: 1, InstanceName: "clone" });
    expect(c.ImageId).not.toBe(newImage);
  });
});
