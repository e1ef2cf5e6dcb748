/**
 * Power across a host restart: with instances running and one stopped by its owner, the
 * agent and libvirtd stop and the running guests' QEMU processes are killed, as a power loss
 * would; then libvirtd and the agent start again: exactly the instances that ran run again,
 * the stopped one stays STOPPED, and the report to the controller says which and why.
 */
import { execa } from "execa";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ControllerStub } from "../support/controller-stub.js";
import { alive } from "../support/file-lock.js";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { serialLogSize, waitForSerial, TINY_READY_PATTERN } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";

interface Report {
  Epoch: string;
  Reason: string;
  PowerRestore?: { Enabled: boolean; Restarted: Array<{ InstanceId: string; Reason: string; Result: string }>; KeptStopped: string[]; StillRunning: number };
}

describe("power across a host restart", () => {
  const controller = new ControllerStub<Report>();
  let agent: AgentProcess;
  let ids: string[] = [];

  beforeAll(async () => {
    await controller.start();
    const images = await ensureTinyImages();
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600", CDH_AGENT_CONTROLLER_URL: `http://127.0.0.1:${controller.port}/report`, CDH_AGENT_RESTORE_POWER_CONCURRENCY: "2" },
    });
    const img = await importImage(agent.client, images.raw.normal, "power-restore");
    ids = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: img, SystemDisk: { DiskSize: 1 }, InstanceCount: 3 })).InstanceIdSet!;
    for (const id of ids) await waitForState(agent.client, id, "RUNNING");
  });

  afterAll(async () => {
    await agent?.shutdown();
    await controller.close();
  });

  it("after a power loss, starts again exactly the instances that ran, and the report says so", async () => {
    const [a, b, stopped] = ids as [string, string, string];
    await agent.client.StopInstances({ InstanceIds: [stopped], StopType: "HARD" });
    await waitForState(agent.client, stopped, "STOPPED", 30_000);
    // The owner's stop is saved before the agent goes: let its record reach libvirt.
    await new Promise((r) => setTimeout(r, 500));

    const consoles = [a, b].map((id) => `${agent.dataDir}/instances/${id}/console.log`);
    const offsets = await Promise.all(consoles.map(serialLogSize));
    // The power goes: the agent first (it hears nothing), then libvirtd, then the guests.
    await agent.kill("SIGKILL");
    const qemuPids = await Promise.all([a, b].map(async (id) => Number((await readFile(`/run/libvirt/qemu/${id}.pid`, "utf8")).trim())));
    const libvirtdPid = Number((await readFile("/run/libvirt/libvirtd.pid", "utf8")).trim());
    await execa("kill", ["-KILL", String(libvirtdPid)]);
    for (const pid of qemuPids) process.kill(pid, "SIGKILL");
    const deadline = Date.now() + 15_000;
    while ([libvirtdPid, ...qemuPids].some(alive)) {
      if (Date.now() > deadline) throw new Error("libvirtd or QEMU still alive 15 s after SIGKILL");
      await new Promise((r) => setTimeout(r, 100));
    }

    // The host comes back: libvirtd, which finds the guests gone, then the agent.
    await execa("bash", [resolve(inject("repoRoot"), "scripts/libvirtd-up.sh"), "--host", "cdhtest"]);
    for (const id of ids) {
      const { stdout } = await execa("virsh", ["-c", "qemu:///system", "domstate", id]);
      expect(stdout.trim()).toBe("shut off");
    }
    const before = controller.reports.length;
    agent = await agent.restart();

    for (const id of [a, b]) await waitForState(agent.client, id, "RUNNING", 60_000);
    // The guests boot again (their consoles, appended to, say so once more).
    for (const [i, path] of consoles.entries()) await waitForSerial(path, TINY_READY_PATTERN, { timeoutMs: 60_000, fromOffset: offsets[i]! });
    const states = (await agent.client.DescribeInstances({ InstanceIds: ids })).InstanceSet!.map((i) => [i.InstanceId, i.InstanceState]);
    expect(Object.fromEntries(states)).toEqual({ [a]: "RUNNING", [b]: "RUNNING", [stopped]: "STOPPED" });
    const { stdout } = await execa("virsh", ["-c", "qemu:///system", "domstate", stopped]);
    expect(stdout.trim()).toBe("shut off");

    // The report of the new agent run: which were started again, why, and the one kept stopped.
    const waitUntil = Date.now() + 30_000;
    let done: Report | undefined;
    while (!done && Date.now() < waitUntil) {
      done = controller.reports.slice(before).find((r) => r.Reason.startsWith("power restore:"));
      if (!done) await new Promise((r) => setTimeout(r, 200));
    }
    expect(done?.Reason).toBe("power restore: 2 of 2 instances started again");
    expect(done!.PowerRestore!.Restarted.map((r) => [r.InstanceId, r.Result]).sort()).toEqual([
      [a, "SUCCESS"],
      [b, "SUCCESS"],
    ].sort());
    expect(done!.PowerRestore!.Restarted[0]!.Reason).toMatch(/RUNNING before/);
    expect(done!.PowerRestore!.KeptStopped).toContain(stopped);
  });

  it("after a restart of the agent alone, the running instances are left as they are", async () => {
    const [a] = ids as [string];
    const pid = Number((await readFile(`/run/libvirt/qemu/${a}.pid`, "utf8")).trim());
    const before = controller.reports.length;
    await agent.kill("SIGKILL");
    agent = await agent.restart();
    await waitForState(agent.client, a, "RUNNING", 30_000);
    // The same QEMU process: nothing was started again.
    expect(Number((await readFile(`/run/libvirt/qemu/${a}.pid`, "utf8")).trim())).toBe(pid);
    const waitUntil = Date.now() + 30_000;
    let first: Report | undefined;
    while (!first?.PowerRestore && Date.now() < waitUntil) {
      first = controller.reports.slice(before).find((r) => r.PowerRestore);
      if (!first) await new Promise((r) => setTimeout(r, 200));
    }
    expect(first?.PowerRestore).toMatchObject({ Enabled: true, Restarted: [], StillRunning: 2 });
  });
});
