/**
 * Nothing accepted and ignored (issue 10 part 4), through the official CVM SDK against the real
 * agent, libvirtd and one tiny guest: DisableApiTermination blocks TerminateInstances (also
 * across an agent restart) until ModifyInstancesAttribute clears it; tags are kept, shown and
 * filtered; another zone or project is refused with its code and makes nothing.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { commonClient, importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

describe("termination protection and tags through the official SDK", () => {
  let agent: AgentProcess;
  let imageId: string;
  let id: string;

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    imageId = await importImage(agent.client, images.raw.normal, "attributes");
    id = (
      await agent.client.RunInstances({
        InstanceType: "CDH_1C1G",
        ImageId: imageId,
        SystemDisk: { DiskSize: 1 },
        DisableApiTermination: true,
        TagSpecification: [{ ResourceType: "instance", Tags: [{ Key: "team", Value: "web" }, { Key: "tier", Value: "front" }] }],
      })
    ).InstanceIdSet![0]!;
    await waitForState(agent.client, id, "RUNNING");
  });

  afterAll(async () => {
    // Whatever happened above, the instance must be terminable for the clean-up.
    await agent?.client.ModifyInstancesAttribute({ InstanceIds: [id], DisableApiTermination: false }).catch(() => undefined);
    await agent?.shutdown();
  });

  it("shows DisableApiTermination and the tags in DescribeInstances, and filters by tag-key and tag:<key>", async () => {
    const shown = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(shown.DisableApiTermination).toBe(true);
    expect(shown.Tags).toEqual([{ Key: "team", Value: "web" }, { Key: "tier", Value: "front" }]);
    const ids = async (Filters: Array<{ Name: string; Values: string[] }>) => ((await agent.client.DescribeInstances({ Filters })).InstanceSet ?? []).map((i) => i.InstanceId);
    expect(await ids([{ Name: "tag-key", Values: ["team"] }])).toEqual([id]);
    expect(await ids([{ Name: "tag:team", Values: ["web"] }])).toEqual([id]);
    expect(await ids([{ Name: "tag:team", Values: ["db"] }])).toEqual([]);
    expect(await ids([{ Name: "tag-key", Values: ["owner"] }])).toEqual([]);
  });

  it("refuses TerminateInstances (and its DryRun) with UnsupportedOperation.InstancesProtected, also after an agent restart, and terminates nothing", async () => {
    await expect(agent.client.TerminateInstances({ InstanceIds: [id] })).rejects.toMatchObject({ code: "UnsupportedOperation.InstancesProtected", message: expect.stringContaining(id) });
    // The CVM SDK's TerminateInstances has no DryRun: the common client sends it.
    await expect(commonClient(agent.port).request("TerminateInstances", { InstanceIds: [id], DryRun: true })).rejects.toMatchObject({ code: "UnsupportedOperation.InstancesProtected" });
    await agent.kill("SIGKILL");
    agent = await agent.restart();
    await expect(agent.client.TerminateInstances({ InstanceIds: [id] })).rejects.toMatchObject({ code: "UnsupportedOperation.InstancesProtected" });
    expect((await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.InstanceState).toBe("RUNNING");
    expect((await virsh("domstate", id)).stdout.trim()).toBe("running");
  });

  it("refuses another zone and another project with their codes, making nothing", async () => {
    const before = (await agent.client.DescribeInstances({})).TotalCount;
    await expect(agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, Placement: { Zone: "ap-nowhere-9" } })).rejects.toMatchObject({
      code: "InvalidZone.MismatchRegion",
      message: expect.stringContaining("Placement.Zone"),
    });
    await expect(agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, Placement: { Zone: "zone-1", ProjectId: 3 } })).rejects.toMatchObject({
      code: "InvalidProjectId.NotFound",
    });
    expect((await agent.client.DescribeInstances({})).TotalCount).toBe(before);
  });

  it("CreateDisks: ClientToken gives back the same disks, another zone is refused; DescribeDisks orders both ways and shows no automatic snapshot policy", async () => {
    const cbs = commonClient(agent.port);
    const create = async (body: Record<string, unknown>) => ((await cbs.request("CreateDisks", body)) as { DiskIdSet: string[] }).DiskIdSet;
    const first = await create({ DiskType: "LOCAL_BASIC", DiskSize: 10, DiskCount: 2, DiskChargeType: "CDHPAID", ClientToken: "audit-disks-1" });
    expect(first).toHaveLength(2);
    expect(await create({ DiskType: "LOCAL_BASIC", DiskSize: 10, DiskCount: 2, ClientToken: "audit-disks-1" })).toEqual(first);
    await expect(create({ DiskType: "LOCAL_BASIC", DiskSize: 10, Placement: { Zone: "ap-nowhere-9" } })).rejects.toMatchObject({ code: "InvalidZone.MismatchRegion" });
    const order = async (Order: string) =>
      ((await cbs.request("DescribeDisks", { DiskIds: first, Order, OrderField: "CREATE_TIME", ReturnBindAutoSnapshotPolicy: true })) as { DiskSet: Array<{ DiskId: string; AutoSnapshotPolicyIds: string[] }> }).DiskSet;
    const asc = await order("ASC");
    const desc = await order("DESC");
    expect(asc.map((d) => d.DiskId)).toHaveLength(2);
    expect(desc.map((d) => d.DiskId)).toEqual(asc.map((d) => d.DiskId).reverse());
    expect(asc.map((d) => d.AutoSnapshotPolicyIds)).toEqual([[], []]);
    await cbs.request("TerminateDisks", { DiskIds: first, DeleteSnapshot: 1 });
    expect(((await cbs.request("DescribeDisks", { DiskIds: first })) as { TotalCount: number }).TotalCount).toBe(0);
  });

  it("ModifyInstancesAttribute clears the protection, after which TerminateInstances removes the instance", async () => {
    await agent.client.ModifyInstancesAttribute({ InstanceIds: [id], DisableApiTermination: false });
    expect((await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.DisableApiTermination).toBe(false);
    await agent.client.TerminateInstances({ InstanceIds: [id] });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount! > 0) await new Promise((r) => setTimeout(r, 300));
    expect((await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount).toBe(0);
    expect((await virsh("domstate", id)).exitCode).not.toBe(0);
  });
});
