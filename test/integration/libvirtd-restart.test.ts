/**
 * libvirtd restarts while instances run: QEMU keeps running, the agent's event stream
 * breaks and comes back, states read UNKNOWN while libvirt is away (never STOPPED) and
 * are true again afterwards; a guest that powers off after the restart is still seen.
 */
import { execa } from "execa";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { waitForState, type AgentProcess } from "../support/agent-process.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

describe("a restart of libvirtd while instances run", () => {
  let agent: AgentProcess;
  let ids: string[] = [];

  beforeAll(async () => {
    ({ agent, ids } = await agentWithTinyGuests({ repoRoot: inject("repoRoot"), imageName: "restart-normal", count: 2 }));
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("reports UNKNOWN while libvirtd is down, then the true states, and keeps following events", async () => {
    const root = inject("repoRoot");
    // The test host's libvirtd (a libvirtd of the machine itself may run beside it).
    const pid = (await readFile("/run/libvirt/libvirtd.pid", "utf8")).trim();
    await execa("kill", [pid]);
    // While it is down, nothing is called STOPPED.
    const deadline = Date.now() + 15_000;
    let sawUnknown = false;
    while (Date.now() < deadline && !sawUnknown) {
      const s = await agent.client.DescribeInstancesStatus({ InstanceIds: ids });
      const states = s.InstanceStatusSet!.map((x) => x.InstanceState);
      expect(states).not.toContain("STOPPED");
      sawUnknown = states.every((x) => x === "UNKNOWN");
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(sawUnknown).toBe(true);
    await execa("bash", [resolve(root, "scripts/libvirtd-up.sh"), "--netns", "cdhtest"]);
    for (const id of ids) await waitForState(agent.client, id, "RUNNING", 60_000);

    // The event stream is back: a guest-side power-off (sysrq o) shows as STOPPED without a reconcile.
    await execa("virsh", ["-c", "qemu:///system", "send-key", ids[0]!, "KEY_LEFTALT", "KEY_SYSRQ", "KEY_O"]);
    await waitForState(agent.client, ids[0]!, "STOPPED", 20_000);
    expect(await waitForState(agent.client, ids[1]!, "RUNNING", 1_000)).toBe("RUNNING");
  });
});
