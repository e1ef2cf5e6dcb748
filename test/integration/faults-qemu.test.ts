/**
 * Fault battery: QEMU killed with SIGKILL under a running instance. The instance shows
 * STOPPED within a second (from libvirt's lifecycle event; the reconcile is set to an
 * hour, so no poll can be what saw it), with the crash as its StateReason; the reason
 * goes away when the instance is started again, and a second instance is untouched.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { waitForState, type AgentProcess } from "../support/agent-process.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

/** The PID of the QEMU process running a domain (its argv carries `-name guest=<name>,`). */
async function qemuPid(domain: string): Promise<number> {
  const r = await execa("pgrep", ["-f", `guest=${domain},`], { reject: false });
  const pids = r.stdout.split("\n").filter(Boolean).map(Number);
  expect(pids, `one QEMU process for ${domain}`).toHaveLength(1);
  return pids[0]!;
}

describe("QEMU killed with SIGKILL", () => {
  let agent: AgentProcess;
  let ids: string[] = [];

  beforeAll(async () => {
    ({ agent, ids } = await agentWithTinyGuests({ repoRoot: inject("repoRoot"), imageName: "faults-qemu", count: 2 }));
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("shows STOPPED with the crash as its reason within a second, and clears the reason on start", async () => {
    const [victim, bystander] = [ids[0]!, ids[1]!];
    const before = (await agent.client.DescribeInstances({ InstanceIds: [victim] })).InstanceSet![0]! as Record<string, unknown>;
    expect(before.StateReason).toBeNull();

    const pid = await qemuPid(victim);
    process.kill(pid, "SIGKILL");
    const killedAt = Date.now();
    let seen: Record<string, unknown> | undefined;
    while (Date.now() - killedAt < 5_000) {
      const i = (await agent.client.DescribeInstances({ InstanceIds: [victim] })).InstanceSet![0]! as Record<string, unknown>;
      if (i.InstanceState !== "RUNNING") {
        seen = i;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const elapsed = Date.now() - killedAt;
    expect(seen?.InstanceState).toBe("STOPPED");
    expect(elapsed).toBeLessThan(1_000);
    expect(seen?.StateReason).toMatchObject({ Code: "InstanceCrashed" });
    expect(String((seen?.StateReason as { Message?: string }).Message)).toMatch(/QEMU|hypervisor/i);
    // The last operation the controller asked for is not rewritten by the crash.
    expect(seen?.LatestOperation).toBe(before.LatestOperation);
    // libvirt agrees once it has torn the domain down (seconds later on a busy host), and keeps the reason.
    const libvirtDeadline = Date.now() + 20_000;
    let libvirtState = "";
    while (Date.now() < libvirtDeadline) {
      libvirtState = (await execa("virsh", ["-c", "qemu:///system", "domstate", "--reason", victim])).stdout.trim();
      if (libvirtState.startsWith("shut off")) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(libvirtState).toBe("shut off (crashed)");
    await new Promise((r) => setTimeout(r, 500)); // libvirt's own event has reached the agent by now
    const settled = (await agent.client.DescribeInstances({ InstanceIds: [victim] })).InstanceSet![0]! as Record<string, unknown>;
    expect(settled.InstanceState).toBe("STOPPED");
    expect(settled.StateReason).toMatchObject({ Code: "InstanceCrashed" });
    // The other instance is untouched.
    expect(await waitForState(agent.client, bystander, "RUNNING", 1_000)).toBe("RUNNING");
    const other = (await agent.client.DescribeInstances({ InstanceIds: [bystander] })).InstanceSet![0]! as Record<string, unknown>;
    expect(other.StateReason).toBeNull();

    // Started again: running, and the crash is no longer its state's reason.
    await agent.client.StartInstances({ InstanceIds: [victim] });
    await waitForState(agent.client, victim, "RUNNING", 60_000);
    const after = (await agent.client.DescribeInstances({ InstanceIds: [victim] })).InstanceSet![0]! as Record<string, unknown>;
    expect(after.StateReason).toBeNull();
    expect(after.LatestOperation).toBe("StartInstances");
  });

  it("a stop the agent asked for is not called a crash", async () => {
    const id = ids[1]!;
    await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
    await waitForState(agent.client, id, "STOPPED", 30_000);
    const i = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]! as Record<string, unknown>;
    expect(i.StateReason).toBeNull();
  });
});
