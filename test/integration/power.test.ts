/**
 * Power semantics against real guests: a guest that powers itself off is seen through
 * libvirt's events (the reconcile is set to an hour, so no poll can be what saw it),
 * SOFT against a guest that ignores ACPI, SOFT_FIRST escalating, HARD pre-empting a soft
 * stop, and concurrent requests on one instance and on several.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { waitForSerial, TINY_READY_PATTERN } from "../support/serial.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

describe("power operations on real guests", () => {
  let agent: AgentProcess;
  const img: Record<string, string> = {};

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600", CDH_AGENT_SOFT_STOP_TIMEOUT_S: "8", CDH_AGENT_SOFT_STOP_RETRY_S: "3" },
    });
    img.normal = await importImage(agent.client, images.raw.normal, "normal");
    img.noacpi = await importImage(agent.client, images.raw.noacpi, "noacpi");
    img.selfoff = await importImage(agent.client, images.raw.selfoff, "selfoff");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  async function runOne(imageId: string, name: string): Promise<string> {
    const r = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, InstanceName: name });
    const id = r.InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
    await waitForSerial(`${agent.dataDir}/instances/${id}/console.log`, TINY_READY_PATTERN, { timeoutMs: 60_000 });
    return id;
  }

  it("shows a guest that powers itself off as STOPPED from libvirt's event", async () => {
    const id = await runOne(img.selfoff!, "selfoff");
    await waitForSerial(`${agent.dataDir}/instances/${id}/console.log`, /CDH-TINY-POWEROFF/, { timeoutMs: 60_000 });
    // Only the event stream can tell the agent: the reconcile runs once an hour here.
    await waitForState(agent.client, id, "STOPPED", 15_000);
    expect((await virsh("domstate", id)).stdout.trim()).toBe("shut off");
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(i.LatestOperation).toBe("RunInstances");
  });

  it("fails a SOFT stop of a guest that ignores ACPI and leaves it RUNNING", async () => {
    const id = await runOne(img.noacpi!, "noacpi-soft");
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "SOFT" });
    expect(await waitForState(agent.client, id, ["STOPPING"], 5_000)).toBe("STOPPING");
    await waitForState(agent.client, id, "RUNNING", 30_000);
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(i).toMatchObject({ LatestOperation: "StopInstances", LatestOperationState: "FAILED" });
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");

    // SOFT_FIRST then pulls the plug after the timeout.
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "SOFT_FIRST" });
    await waitForState(agent.client, id, "STOPPED", 30_000);
    const j = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(j).toMatchObject({ LatestOperation: "StopInstances", LatestOperationState: "SUCCESS" });
  });

  it("accepts a HARD stop while a soft stop is under way, and refuses a second soft stop", async () => {
    const id = await runOne(img.noacpi!, "noacpi-hard");
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "SOFT" });
    await expect(agent.client.StopInstances({ InstanceIds: [id], StopType: "SOFT" })).rejects.toMatchObject({
      code: "UnsupportedOperation.InstanceStateStopping",
    });
    const t0 = Date.now();
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED", 10_000);
    // Well before the 8 s soft timeout: the hard stop did not wait for the soft one.
    expect(Date.now() - t0).toBeLessThan(6_000);
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(i).toMatchObject({ LatestOperation: "StopInstances", LatestOperationState: "SUCCESS" });
    await expect(agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" })).rejects.toMatchObject({
      code: "UnsupportedOperation.InstanceStateStopped",
    });
  });

  it("lets exactly one of two concurrent starts of one instance through, and changes nothing for the other", async () => {
    const id = await runOne(img.normal!, "concurrent");
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED");
    const results = await Promise.allSettled([
      agent.client.StartInstances({ InstanceIds: [id] }),
      agent.client.StartInstances({ InstanceIds: [id] }),
      agent.client.StartInstances({ InstanceIds: [id] }),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results.filter((r): r is PromiseRejectedResult => r.status === "rejected")) {
      expect(r.reason.code).toMatch(/^UnsupportedOperation\.InstanceState(Starting|Running)$/);
    }
    await waitForState(agent.client, id, "RUNNING");
  });

  it("runs operations on several instances in parallel", async () => {
    const r = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: img.normal!, SystemDisk: { DiskSize: 1 }, InstanceCount: 3, InstanceName: "par-{R:1}" });
    const ids = r.InstanceIdSet!;
    expect(ids).toHaveLength(3);
    await Promise.all(ids.map((id) => waitForState(agent.client, id, "RUNNING")));
    const names = (await agent.client.DescribeInstances({ InstanceIds: ids })).InstanceSet!.map((i) => i.InstanceName).sort();
    expect(names).toEqual(["par-1", "par-2", "par-3"]);
    await agent.client.StopInstances({ InstanceIds: ids, StopType: "HARD" });
    await Promise.all(ids.map((id) => waitForState(agent.client, id, "STOPPED", 20_000)));
    await agent.client.TerminateInstances({ InstanceIds: ids });
  });
});
