/**
 * ResetInstancesType and DescribeInstancesModification through the official CVM SDK,
 * against real libvirtd with a tiny guest (issue 12 parts 1, 2). The agent keeps hot-plug
 * headroom (2 vCPUs, 2 GiB) in its definitions. One instance goes through: refusals that
 * change nothing, a live growth of vCPUs, a live growth of memory interrupted by SIGKILL
 * (rolled forward), stopped resizes down and up (libvirt, the guest's READY line after
 * start, DescribeHosts by exactly the difference), a ForceStop resize of a running
 * instance, SIGKILL at the other steps, and DescribeInstancesModification against what
 * RunInstances admits.
 *
 * A guest grown live sees the new vCPUs and memory without a reboot: the tiny guest has no
 * udev (its kernel, Debian's cloud kernel, does not online hot-added CPUs or memory blocks by
 * itself), so the test onlines them the way a udev rule would, over the guest's serial
 * console (its init runs a line that is not `cdh-net …` in sh), and reads the counts back.
 */
import { execa } from "execa";
import { readdirSync } from "node:fs";
import { cpus } from "node:os";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { parseTinyReady, serialLogSize, waitForSerial, TINY_READY_PATTERN } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { SerialLink } from "../support/serial-link.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

/** vCPUs and memory (MiB) of the definition (--inactive) or of the running domain. */
async function libvirtSize(id: string, live: boolean): Promise<{ vcpus: number; memoryMiB: number }> {
  const xml = (await virsh("dumpxml", id, ...(live ? [] : ["--inactive"]))).stdout;
  const vcpu = /<vcpu([^>]*)>(\d+)<\/vcpu>/.exec(xml);
  const mem = /<memory unit='KiB'>(\d+)<\/memory>/.exec(xml);
  if (!vcpu || !mem) throw new Error(`no <vcpu>/<memory> in the XML of ${id}`);
  const current = /current='(\d+)'/.exec(vcpu[1]!);
  return { vcpus: Number(current?.[1] ?? vcpu[2]), memoryMiB: Number(mem[1]) / 1024 };
}

type Resource = { CpuAvailable: number; MemAvailable: number };

/**
 * Inside the running guest: onlines every offline CPU and memory block (what a udev rule
 * does on a distribution) and reports the CPUs and memory the kernel then has, over the
 * serial console (held open and read while the guest answers).
 */
async function onlineAndCount(id: string, timeoutMs = 30_000): Promise<{ cpus: number; memKb: number; present: string }> {
  const link = await SerialLink.open(id);
  let seen = "";
  try {
    const m = await new Promise<RegExpExecArray>((resolve, reject) => {
      const pattern = /CDH-HOTPLUG present=(\S+) cpus=(\d+) mem_kb=(\d+)/;
      const timer = setTimeout(() => reject(new Error(`${id}: no CDH-HOTPLUG line within ${timeoutMs} ms; the console said ${JSON.stringify(seen.slice(-800))}`)), timeoutMs);
      link.onData((chunk) => {
        seen += chunk;
        const found = pattern.exec(seen);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        }
      });
      link.onClose(() => reject(new Error(`${id}: the serial port closed`)));
      link.write(
        "for c in /sys/devices/system/cpu/cpu[0-9]*/online; do echo 1 > $c; done; " +
          "for b in /sys/devices/system/memory/memory[0-9]*/state; do grep -q offline $b && echo online > $b; done; " +
          "echo CDH-HOTPLUG present=$(cat /sys/devices/system/cpu/present) cpus=$(grep -c ^processor /proc/cpuinfo) mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)\n",
      );
    });
    return { present: m[1]!, cpus: Number(m[2]), memKb: Number(m[3]) };
  } finally {
    link.close();
  }
}

describe("ResetInstancesType and DescribeInstancesModification", () => {
  let agent: AgentProcess;
  let imageId: string;
  let id: string;
  /** Capacity with no instance. */
  let empty: Resource;
  // 4 vCPUs to sell (2 cores × 2), one kept for the host: room for the sizes tried, and sizes that do not fit.
  const env = {
    CDH_AGENT_RECONCILE_INTERVAL_S: "3600",
    CDH_AGENT_HOTPLUG_MAX_VCPUS: "2",
    CDH_AGENT_HOTPLUG_MAX_MEMORY_GIB: "2",
    CDH_AGENT_CPU_ALLOCATION_RATIO: String(4 / cpus().length),
    CDH_AGENT_RESERVED_CPU: "1",
  };

  const resource = async (): Promise<Resource> => {
    const r = (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!;
    return { CpuAvailable: r.CpuAvailable!, MemAvailable: r.MemAvailable! };
  };
  const instance = async () => (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
  /** Waits until the latest ResetInstancesType is no longer OPERATING; its state. */
  const settled = async (): Promise<string> => {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const i = await instance();
      if (i.LatestOperation === "ResetInstancesType" && i.LatestOperationState !== "OPERATING") return i.LatestOperationState!;
      if (Date.now() > deadline) throw new Error(`ResetInstancesType of ${id} still ${i.LatestOperation}/${i.LatestOperationState}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  /** Everything agrees on one size: the record, libvirt's definition, and capacity (exactly the record's size taken). */
  const consistent = async (expected?: { cpu: number; mem: number }) => {
    const i = await instance();
    if (expected) expect({ cpu: i.CPU, mem: i.Memory }).toEqual(expected);
    expect(i.InstanceType).toBe(`CDH_${i.CPU}C${i.Memory}G`);
    expect(await libvirtSize(id, false)).toEqual({ vcpus: i.CPU, memoryMiB: i.Memory! * 1024 });
    const now = await resource();
    expect(now.CpuAvailable).toBe(empty.CpuAvailable - i.CPU!);
    expect(now.MemAvailable).toBeCloseTo(empty.MemAvailable - i.Memory!, 6);
    expect(readdirSync(`${agent.dataDir}/journal`)).toEqual([]);
    return i;
  };
  const consoleLog = () => `${agent.dataDir}/instances/${id}/console.log`;
  /** Starts the instance and returns what the guest reports once booted. */
  const startAndRead = async () => {
    const from = await serialLogSize(consoleLog());
    await agent.client.StartInstances({ InstanceIds: [id] });
    await waitForState(agent.client, id, "RUNNING");
    return parseTinyReady((await waitForSerial(consoleLog(), TINY_READY_PATTERN, { fromOffset: from, timeoutMs: 60_000 }))[0]);
  };
  const stop = async () => {
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED");
  };
  const crashAt = async (point: string) => {
    await agent.kill("SIGTERM");
    agent = await agent.restart({ ...env, CDH_AGENT_FAIL_POINT: point });
  };
  const recover = async (point: string) => {
    const dead = await Promise.race([
      agent.exited(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the agent never reached ${point}`)), 60_000)),
    ]);
    expect(dead.signal).toBe("SIGKILL");
    agent = await agent.restart({ ...env, CDH_AGENT_FAIL_POINT: "" });
  };

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), env });
    imageId = await importImage(agent.client, images.raw.normal, "retype-normal");
    empty = await resource();
    id = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
    await waitForSerial(consoleLog(), TINY_READY_PATTERN, { timeoutMs: 60_000 });
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("refuses what cannot apply, with the seeds' codes, and changes nothing", async () => {
    const before = await consistent({ cpu: 1, mem: 1 });
    // Beyond the headroom, running, no ForceStop.
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_4C1G" })).rejects.toMatchObject({
      code: "UnsupportedOperation.InstanceStateRunning",
      message: expect.stringContaining("cannot apply live"),
    });
    // Its own size is no change.
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C1G" })).rejects.toMatchObject({ code: "InvalidParameterValue" });
    // Does not fit on the host, even with ForceStop.
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_64C1G", ForceStop: true })).rejects.toMatchObject({
      code: "ResourceInsufficient.SpecifiedInstanceType",
    });
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C64G", ForceStop: true })).rejects.toMatchObject({
      code: "ResourceInsufficient.SpecifiedInstanceType",
    });
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2X" })).rejects.toMatchObject({ code: "InvalidInstanceType.Malformed" });
    const after = await consistent({ cpu: 1, mem: 1 });
    expect(after.LatestOperation).toBe(before.LatestOperation);
    expect(after.InstanceState).toBe("RUNNING");
  });

  it("grows a running guest's vCPUs live, within the headroom", async () => {
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2C1G" });
    expect(await settled()).toBe("SUCCESS");
    const i = await consistent({ cpu: 2, mem: 1 });
    expect(i.InstanceState).toBe("RUNNING");
    expect(await libvirtSize(id, true)).toEqual({ vcpus: 2, memoryMiB: 1024 });
    expect((await virsh("vcpucount", id, "--live", "--active")).stdout.trim()).toBe("2");
    // The guest, not rebooted, has both online.
    const guest = await onlineAndCount(id);
    expect(guest).toMatchObject({ present: "0-1", cpus: 2 });
    expect(guest.memKb).toBeLessThan(1024 * 1024);
  });

  it("a live memory growth killed after its vCPU step is rolled forward: a DIMM, the new record", async () => {
    await crashAt("retype:vcpus-live");
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2C2G" });
    await recover("retype:vcpus-live");
    expect(await settled()).toBe("SUCCESS");
    await consistent({ cpu: 2, mem: 2 });
    expect(await libvirtSize(id, true)).toEqual({ vcpus: 2, memoryMiB: 2048 });
    expect((await virsh("dumpxml", id)).stdout).toMatch(/<memory model='dimm'/);
    expect((await instance()).InstanceState).toBe("RUNNING");
    // The same boot: the DIMM's memory is online in the guest (its memory blocks appear in the
    // guest a moment after the hot-plug, so the onlining is repeated until then, 20 s at most).
    let guest = await onlineAndCount(id);
    for (const deadline = Date.now() + 20_000; guest.memKb <= 1.5 * 1024 * 1024 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 1000));
      guest = await onlineAndCount(id);
    }
    expect(guest.cpus).toBe(2);
    expect(guest.memKb).toBeGreaterThan(1.5 * 1024 * 1024);
  });

  it("resizes a stopped instance down and up: libvirt, the guest after start, capacity by exactly the difference", async () => {
    await stop();
    let before = await resource();
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C1G" });
    expect(await settled()).toBe("SUCCESS");
    expect((await instance()).InstanceState).toBe("STOPPED");
    await consistent({ cpu: 1, mem: 1 });
    expect((await resource()).CpuAvailable).toBe(before.CpuAvailable + 1);
    expect((await resource()).MemAvailable).toBeCloseTo(before.MemAvailable + 1, 6);
    let ready = await startAndRead();
    expect(ready.vcpus).toBe(1);
    expect(ready.memtotalKb).toBeLessThan(1024 * 1024);

    await stop();
    before = await resource();
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2C3G" });
    expect(await settled()).toBe("SUCCESS");
    await consistent({ cpu: 2, mem: 3 });
    expect((await resource()).CpuAvailable).toBe(before.CpuAvailable - 1);
    expect((await resource()).MemAvailable).toBeCloseTo(before.MemAvailable - 2, 6);
    ready = await startAndRead();
    expect(ready.vcpus).toBe(2);
    expect(ready.memtotalKb).toBeGreaterThan(2.5 * 1024 * 1024);
  });

  it("ForceStop resizes a running instance: stopped, resized, started again", async () => {
    const from = await serialLogSize(consoleLog());
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C2G", ForceStop: true });
    expect(await settled()).toBe("SUCCESS");
    await waitForState(agent.client, id, "RUNNING");
    await consistent({ cpu: 1, mem: 2 });
    const ready = parseTinyReady((await waitForSerial(consoleLog(), TINY_READY_PATTERN, { fromOffset: from, timeoutMs: 60_000 }))[0]);
    expect(ready.vcpus).toBe(1);
    expect(ready.memtotalKb).toBeGreaterThan(1.5 * 1024 * 1024);
  });

  it("SIGKILL at each step of a stopped or ForceStop resize leaves the old size or the new one, and capacity whole", async () => {
    // ForceStop (a shrink: it cannot apply live), killed once the guest is off: the old size, and the instance running again.
    await crashAt("retype:stopped");
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C1G", ForceStop: true });
    await recover("retype:stopped");
    expect(await settled()).toBe("FAILED");
    await waitForState(agent.client, id, "RUNNING");
    await consistent({ cpu: 1, mem: 2 });

    await stop();
    // Killed right after the journal entry, before the answer: nothing was defined.
    await crashAt("retype:journaled");
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2C2G" })).rejects.toBeTruthy();
    await recover("retype:journaled");
    expect(await settled()).toBe("FAILED");
    await consistent({ cpu: 1, mem: 2 });
    // Killed after the new definition: the new size, finished.
    await crashAt("retype:defined");
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_2C1G" });
    await recover("retype:defined");
    expect(await settled()).toBe("SUCCESS");
    await consistent({ cpu: 2, mem: 1 });
    expect((await instance()).InstanceState).toBe("STOPPED");
  });

  it("DescribeInstancesModification agrees with what RunInstances admits", async () => {
    await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: "CDH_1C1G" });
    expect(await settled()).toBe("SUCCESS");
    const r = await agent.client.DescribeInstancesModification({ InstanceIds: [id] });
    const set = r.InstanceTypeConfigStatusSet!;
    expect(r.TotalCount).toBe(set.length);
    const statuses = new Set(set.map((s) => s.Status));
    expect(statuses).toEqual(new Set(["SELL", "UNAVAILABLE"]));
    const own = await instance();
    expect(set.map((s) => s.InstanceTypeConfig!.InstanceType)).not.toContain(own.InstanceType);
    let compared = 0;
    for (const s of set) {
      const c = s.InstanceTypeConfig!;
      const dc = c.CPU! - own.CPU!;
      const dm = c.Memory! - own.Memory!;
      if (dc < 1 || dm < 1) continue;
      // The growth alone, as a new instance: DryRun stops after admission when it fits.
      const run = await agent.client
        .RunInstances({ InstanceType: `CDH_${dc}C${dm}G`, ImageId: imageId, SystemDisk: { DiskSize: 1 }, DryRun: true })
        .then(() => "admitted", (e: { code?: string }) => e.code);
      expect([c.InstanceType, run === "DryRunOperation" ? "SELL" : run]).toEqual([c.InstanceType, s.Status === "SELL" ? "SELL" : "ResourceInsufficient.SpecifiedInstanceType"]);
      compared++;
    }
    expect(compared).toBeGreaterThan(3);
    const sellOnly = await agent.client.DescribeInstancesModification({ InstanceIds: [id], Filters: [{ Name: "status", Values: ["SELL"] }] });
    expect(sellOnly.InstanceTypeConfigStatusSet!.every((s) => s.Status === "SELL")).toBe(true);
    expect(sellOnly.TotalCount).toBe(set.filter((s) => s.Status === "SELL").length);
    // One UNAVAILABLE size is refused by ResetInstancesType; nothing changes.
    const no = set.find((s) => s.Status === "UNAVAILABLE" && s.Message!.includes("available"))!;
    await expect(agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: no.InstanceTypeConfig!.InstanceType! })).rejects.toMatchObject({
      code: "ResourceInsufficient.SpecifiedInstanceType",
    });
    await consistent({ cpu: 1, mem: 1 });
  });
});
