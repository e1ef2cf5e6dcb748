/**
 * Crash safety: the agent is killed with SIGKILL at named points inside RunInstances
 * and TerminateInstances (its fail_point setting), restarted, and must leave no
 * orphaned domain, disk or reservation, with every instance in a true state.
 */
import { execa } from "execa";
import { existsSync, readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, waitForState, type AgentProcess, type CvmClient } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

async function domainsOf(ids: string[]): Promise<string[]> {
  const out = (await virsh("list", "--all", "--name")).stdout.split("\n").map((s) => s.trim());
  return out.filter((n) => ids.includes(n));
}

async function waitGone(client: CvmClient, id: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if ((await client.DescribeInstances({ InstanceIds: [id] })).TotalCount === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${id} was not removed`);
}

describe("SIGKILL in the middle of an operation, then restart", () => {
  let agent: AgentProcess;
  let imageId: string;
  let baseline: Record<string, unknown>;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    imageId = await importImage(agent.client, images.raw.normal, "crash-normal");
    baseline = (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource! as Record<string, unknown>;
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  async function crashAt(point: string): Promise<void> {
    await agent.kill("SIGTERM");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: point });
  }

  async function recover(point: string): Promise<void> {
    const dead = await Promise.race([
      agent.exited(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the agent never reached ${point}`)), 60_000)),
    ]);
    expect(dead.signal).toBe("SIGKILL");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "" });
  }

  // create:journaled is reached before the agent answers, so the call fails and the
  // ClientToken finds the instance after the restart; the other points come after the
  // answer, in the background, and the retry must answer the same ID.
  it.each([
    { point: "create:journaled", answered: false },
    { point: "create:overlay-created", answered: true },
    { point: "create:domain-defined", answered: true },
    { point: "create:started", answered: true },
  ])(
    "finishes a launch killed at $point: one running instance, one domain, one disk",
    async ({ point, answered }) => {
      await crashAt(point);
      const first = await agent.client
        .RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, ClientToken: `crash-${point}` })
        .then((r) => r.InstanceIdSet, (error: unknown) => error);
      expect(Array.isArray(first)).toBe(answered);
      await recover(point);
      const again = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, ClientToken: `crash-${point}` });
      expect(again.InstanceIdSet).toHaveLength(1);
      expect(again.InstanceIdSet).toEqual(answered ? first : [expect.stringMatching(/^ins-[a-z0-9]{8}$/)]);
      const id = again.InstanceIdSet![0]!;
      await waitForState(agent.client, id, "RUNNING");
      expect(await domainsOf([id])).toEqual([id]);
      expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
      expect(readdirSync(`${agent.dataDir}/journal`)).toEqual([]);
      const res = (await agent.client.DescribeHosts({})).HostSet![0]!.HostResource!;
      expect(res.CpuAvailable).toBe((baseline.CpuAvailable as number) - 1);
      // clean up for the next case
      await agent.client.TerminateInstances({ InstanceIds: [id] });
      await waitGone(agent.client, id);
    },
  );

  it.each(["terminate:journaled", "terminate:destroyed", "terminate:undefined"])(
    "finishes a termination killed at %s: no domain, no files, capacity whole",
    async (point) => {
      const r = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } });
      const id = r.InstanceIdSet![0]!;
      await waitForState(agent.client, id, "RUNNING");
      await crashAt(point);
      // terminate:journaled is reached before the answer; the other points after it.
      const answer = await agent.client.TerminateInstances({ InstanceIds: [id] }).then(() => "answered", () => "killed first");
      expect(answer).toBe(point === "terminate:journaled" ? "killed first" : "answered");
      await recover(point);
      await waitGone(agent.client, id);
      expect(await domainsOf([id])).toEqual([]);
      expect(existsSync(`${agent.dataDir}/instances/${id}`)).toBe(false);
      expect(readdirSync(`${agent.dataDir}/journal`)).toEqual([]);
      expect((await agent.client.DescribeHosts({})).HostSet![0]!.HostResource).toEqual(baseline);
    },
  );
});
