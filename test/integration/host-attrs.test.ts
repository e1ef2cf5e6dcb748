/**
 * Issue 12's attributes and accounting through the official CVM SDK, with tiny guests on a
 * pool promised to within a GiB: the 2 GiB each instance takes for its configuration files
 * counts; a reinstall at the same size still succeeds (only growth is admitted); a rename shows
 * in DescribeInstances and its filters; the host's name set by ModifyHostsAttribute shows in
 * DescribeHosts and holds across an agent restart.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, makeDataDir, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { refused, waitUntil } from "../support/wait.js";

describe("host attributes and the seeds' disk accounting", () => {
  let agent: AgentProcess;
  let imageId: string;
  let ids: string[] = [];

  beforeAll(async () => {
    const images = await ensureTinyImages();
    const dataDir = await makeDataDir();
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      dataDir,
      // 7 GiB: two instances of a 1 GiB system disk and 2 GiB of configuration files each leave less than 1 GiB.
      env: { CDH_AGENT_STORAGE_POOLS: JSON.stringify([{ name: "small", path: `${dataDir}/pools/small`, disk_type: "LOCAL_BASIC", size_gib: 7 }]) },
    });
    imageId = await importImage(agent.client, images.raw.normal, "host-attrs");
    ids = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, InstanceCount: 2, InstanceName: "attrs-{R:1}" })).InstanceIdSet!;
    for (const id of ids) await waitForState(agent.client, id, "RUNNING");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("counts 2 GiB per instance beyond its disks, and reinstalls at the same size on the full pool", async () => {
    const client = agent.client;
    const host = (await client.DescribeHosts({})).HostSet![0]!.HostResource!;
    expect(host.DiskTotal).toBe(7);
    expect(host.DiskAvailable).toBeLessThanOrEqual(1);
    // A third instance does not fit (1 + 2 GiB).
    expect((await refused(client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } }))).code).toBe("ResourceInsufficient.SpecifiedInstanceType");
    // Growth beyond what is left is refused, nothing changed.
    const [a] = ids as [string];
    expect((await refused(client.ResetInstance({ InstanceId: a, SystemDisk: { DiskSize: 3 } }))).code).toMatch(/^ResourceInsufficient/);
    // The same size: the old disk's promise passes to the new one.
    await client.ResetInstance({ InstanceId: a, SystemDisk: { DiskSize: 1 } });
    await waitUntil(async () => {
      const i = (await client.DescribeInstances({ InstanceIds: [a] })).InstanceSet![0]!;
      return i.LatestOperation === "ResetInstance" && i.LatestOperationState !== "OPERATING" && i.InstanceState === "RUNNING";
    }, 120_000);
    const after = (await client.DescribeInstances({ InstanceIds: [a] })).InstanceSet![0]!;
    expect(after).toMatchObject({ LatestOperation: "ResetInstance", LatestOperationState: "SUCCESS", InstanceState: "RUNNING" });
    // Nothing grew and nothing was given back: still less than 1 GiB left (the image cache, charged
    // to the pool once measured, may take the last fraction), and a third instance still does not fit.
    expect((await client.DescribeHosts({})).HostSet![0]!.HostResource!.DiskAvailable).toBeLessThanOrEqual(host.DiskAvailable!);
    expect((await refused(client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } }))).code).toBe("ResourceInsufficient.SpecifiedInstanceType");
  });

  it("a rename shows in DescribeInstances and its filters", async () => {
    const client = agent.client;
    const [, b] = ids as [string, string];
    await client.ModifyInstancesAttribute({ InstanceIds: [b], InstanceName: "renamed-b" });
    expect((await client.DescribeInstances({ InstanceIds: [b] })).InstanceSet![0]!.InstanceName).toBe("renamed-b");
    const found = await client.DescribeInstances({
      Filters: [
        { Name: "instance-name", Values: ["renamed-b", "nobody"] },
        { Name: "zone", Values: ["zone-1"] },
        { Name: "instance-charge-type", Values: ["CDHPAID"] },
        { Name: "instance-state", Values: ["RUNNING"] },
      ],
    });
    expect(found.InstanceSet!.map((i) => i.InstanceId)).toEqual([b]);
    expect((await client.DescribeInstances({ Filters: [{ Name: "zone", Values: ["zone-9"] }] })).TotalCount).toBe(0);
  });

  it("ModifyHostsAttribute names the host, in DescribeHosts and across an agent restart", async () => {
    const hostId = agent.hostId;
    await agent.client.ModifyHostsAttribute({ HostIds: [hostId], HostName: "rack-7 cdh" });
    expect((await agent.client.DescribeHosts({})).HostSet![0]!.HostName).toBe("rack-7 cdh");
    expect((await refused(agent.client.ModifyHostsAttribute({ HostIds: ["host-zzzzzzzz"], HostName: "x" }))).code).toBe("InvalidHostId.NotFound");
    const renew = await refused(agent.client.ModifyHostsAttribute({ HostIds: [hostId], RenewFlag: "NOTIFY_AND_AUTO_RENEW" }));
    expect(renew.code).toBe("InvalidParameterValue");
    expect(renew.message).toContain("RenewFlag");
    await agent.kill("SIGKILL");
    agent = await agent.restart();
    const hosts = await agent.client.DescribeHosts({ Filters: [{ Name: "host-name", Values: ["rack-7 cdh"] }] });
    expect(hosts.HostSet!.map((h) => h.HostName)).toEqual(["rack-7 cdh"]);
  });
});
