/**
 * Security groups through the official SDKs against a real agent: the VPC client
 * (tencentcloud-sdk-nodejs, vpc.v20170312) for groups and rules, the CVM client for binding
 * them to tiny guests. What the groups do to traffic is sg-traffic.test.ts's; this file is the
 * API: semantics of the rule set, refusals and their codes, bindings, persistence.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { importImage, startAgentProcess, vpcClient, waitForState, type AgentProcess, type VpcClient } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { codeOf } from "../support/sdk-code.js";

async function messageOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("the call was answered, not refused");
}

/**
 * The members of a group's address set in the agent's nftables table (the test agents' table
 * is cdhtest_filter; the firewall names a group's set <sg_id with _>_members), or undefined
 * when the set does not exist. Read right after an answer: the change must be in the kernel.
 */
async function members(securityGroupId: string): Promise<string[] | undefined> {
  const r = await execa("nft", ["-j", "list", "set", "inet", "cdhtest_filter", `${securityGroupId.replace(/-/g, "_")}_members`], { reject: false });
  if (r.exitCode !== 0) return undefined;
  const set = (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> }).nftables.find((x) => x.set)?.set;
  return (set?.elem ?? []).map((e) => String(e)).sort();
}

const tcp = (port: string, extra: Record<string, unknown> = {}) => ({ Protocol: "TCP", Port: port, CidrBlock: "10.0.0.0/8", Action: "ACCEPT", ...extra });

describe("security groups through the official VPC and CVM SDKs", () => {
  let agent: AgentProcess;
  let vpc: VpcClient;
  let imageId: string;
  let defaultId: string;
  const g: string[] = [];

  async function rules(id: string) {
    return (await vpc.DescribeSecurityGroupPolicies({ SecurityGroupId: id })).SecurityGroupPolicySet!;
  }
  async function groupsOf(instanceId: string) {
    return (await agent.client.DescribeInstances({ InstanceIds: [instanceId] })).InstanceSet![0]!;
  }

  beforeAll(async () => {
    const images = await ensureTinyImages();
    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), env: { CDH_AGENT_SECURITY_GROUP_LIMIT: "12" } });
    vpc = vpcClient(agent.port);
    imageId = await importImage(agent.client, images.raw.normal, "sg-api");
  });

  afterAll(async () => {
    await agent?.shutdown();
  });

  it("has one default group from the seeds' first template, which cannot be deleted", async () => {
    const d = await vpc.DescribeSecurityGroups({});
    expect(d.TotalCount).toBe(1);
    const def = d.SecurityGroupSet![0]!;
    expect(def).toMatchObject({ IsDefault: true, ProjectId: "0" });
    expect(def.CreatedTime).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    defaultId = def.SecurityGroupId;
    const set = await rules(defaultId);
    expect(set.Ingress!.map((r) => `${r.Protocol}:${r.Port}:${r.CidrBlock}:${r.Action}`)).toEqual([
      "TCP:22:0.0.0.0/0:ACCEPT",
      "TCP:80:0.0.0.0/0:ACCEPT",
      "TCP:443:0.0.0.0/0:ACCEPT",
      "TCP:3389:0.0.0.0/0:ACCEPT",
      "ICMP:ALL:0.0.0.0/0:ACCEPT",
    ]);
    expect(set.Egress!.map((r) => `${r.Protocol}:${r.Port}:${r.Action}`)).toEqual(["ALL:ALL:ACCEPT"]);
    expect(await codeOf(vpc.DeleteSecurityGroup({ SecurityGroupId: defaultId }))).toBe("UnsupportedOperation");
  });

  it("creates groups and describes them with filters, order and paging (Offset and Limit as strings or numbers)", async () => {
    for (const [i, name] of ["web", "db", "ops"].entries()) {
      const r = await vpc.CreateSecurityGroup({ GroupName: name, GroupDescription: `${name} servers`, ...(i === 0 ? { Tags: [{ Key: "env", Value: "prod" }] } : {}) });
      expect(r.SecurityGroup).toMatchObject({ SecurityGroupName: name, SecurityGroupDesc: `${name} servers`, IsDefault: false, ProjectId: "0" });
      expect(r.SecurityGroup!.SecurityGroupId).toMatch(/^sg-[a-z0-9]{8}$/);
      g.push(r.SecurityGroup!.SecurityGroupId);
    }
    const page = await vpc.DescribeSecurityGroups({ Offset: "1", Limit: "2" });
    expect(page.TotalCount).toBe(4);
    expect(page.SecurityGroupSet!.map((x) => x.SecurityGroupId)).toEqual([g[0], g[1]]);
    const numeric = await vpc.DescribeSecurityGroups({ Offset: 3 as unknown as string, Limit: 10 as unknown as string });
    expect(numeric.SecurityGroupSet!.map((x) => x.SecurityGroupId)).toEqual([g[2]]);
    const desc = await vpc.DescribeSecurityGroups({ OrderField: "CreatedTime", OrderDirection: "DESC", Limit: "1" });
    expect(desc.SecurityGroupSet![0]!.SecurityGroupId).toBe(g[2]);
    const byName = await vpc.DescribeSecurityGroups({ Filters: [{ Name: "security-group-name", Values: ["db", "ops"] }] });
    expect(byName.SecurityGroupSet!.map((x) => x.SecurityGroupId)).toEqual([g[1], g[2]]);
    const byTag = await vpc.DescribeSecurityGroups({ Filters: [{ Name: "tag:env", Values: ["prod"] }] });
    expect(byTag.SecurityGroupSet!.map((x) => x.SecurityGroupId)).toEqual([g[0]]);
    expect(byTag.SecurityGroupSet![0]!.TagSet).toEqual([{ Key: "env", Value: "prod" }]);
    expect(await codeOf(vpc.DescribeSecurityGroups({ SecurityGroupIds: [g[0]!], Filters: [{ Name: "tag-key", Values: ["env"] }] }))).toBe("InvalidParameter.Coexist");
    expect(await codeOf(vpc.DescribeSecurityGroups({ Filters: [{ Name: "vpc-id", Values: ["x"] }] }))).toBe("InvalidParameter.FilterInvalidKey");
    expect(await codeOf(vpc.DescribeSecurityGroups({ SecurityGroupIds: ["sg-1"] }))).toBe("InvalidParameterValue.Malformed");
    expect(await codeOf(vpc.DescribeSecurityGroups({ SecurityGroupIds: ["sg-zzzzzzzz"] }))).toBe("ResourceNotFound");
    expect(await codeOf(vpc.DescribeSecurityGroups({ Limit: "101" }))).toBe("InvalidParameterValue.LimitExceeded");
    const limits = await vpc.DescribeSecurityGroupLimits();
    expect(limits.SecurityGroupLimitSet).toMatchObject({ SecurityGroupLimit: 12, SecurityGroupPolicyLimit: 100, InstanceSecurityGroupLimit: 5 });
  });

  it("appends rules, inserts at PolicyIndex, checks Version, refuses duplicates", async () => {
    const id = g[0]!;
    expect((await rules(id)).Version).toBe("0");
    await vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("80"), tcp("443")] } });
    await vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("22", { PolicyIndex: 0, Action: "drop" }), tcp("23", { PolicyIndex: 0 })] } });
    await vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("8000-8010", { PolicyIndex: 3, Protocol: "udp" })] } });
    const set = await rules(id);
    expect(set.Version).toBe("3");
    expect(set.Ingress!.map((r) => `${r.PolicyIndex}:${r.Protocol}:${r.Port}:${r.Action}`)).toEqual(["0:TCP:22:DROP", "1:TCP:23:ACCEPT", "2:TCP:80:ACCEPT", "3:UDP:8000-8010:ACCEPT", "4:TCP:443:ACCEPT"]);
    expect(set.Egress).toEqual([]);
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Version: "2", Ingress: [tcp("9")] } }))).toBe(
      "UnsupportedOperation.VersionMismatch",
    );
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Version: "3", Ingress: [tcp("80", { Protocol: "tcp" })] } }))).toBe(
      "UnsupportedOperation.DuplicatePolicy",
    );
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("9", { PolicyIndex: 6 })] } }))).toBe("InvalidParameterValue.Range");
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("9")], Egress: [tcp("9")] } }))).toBe("InvalidParameter.Coexist");
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: "sg-zzzzzzzz", SecurityGroupPolicySet: { Ingress: [tcp("9")] } }))).toBe("ResourceNotFound");
    expect((await rules(id)).Version).toBe("3");
  });

  it("refuses what the host cannot enforce, naming the field", async () => {
    const id = g[0]!;
    const ask = (rule: Record<string, unknown>) => vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Egress: [rule] } });
    expect(await codeOf(ask({ Protocol: "TCP", Port: "22", Ipv6CidrBlock: "::/0", Action: "ACCEPT" }))).toBe("InvalidParameterValue");
    expect(await messageOf(ask({ Protocol: "TCP", Port: "22", Ipv6CidrBlock: "::/0", Action: "ACCEPT" }))).toContain("SecurityGroupPolicySet.Egress.0.Ipv6CidrBlock");
    expect(await messageOf(ask({ Protocol: "TCP", CidrBlock: "MY_PUBLIC_IP", Action: "ACCEPT" }))).toContain("Egress.0.CidrBlock");
    expect(await messageOf(ask({ Protocol: "ICMP", Port: "80", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }))).toContain("Egress.0.Port");
    expect(await codeOf(ask({ Protocol: "TCP", Port: "22", CidrBlock: "10.0.0.0/8", SecurityGroupId: g[1], Action: "ACCEPT" }))).toBe("InvalidParameter.Coexist");
    expect(await codeOf(ask({ Protocol: "TCP", Port: "22", AddressTemplate: { AddressId: "ipm-12345678" }, Action: "ACCEPT" }))).toBe("InvalidParameterValue");
    expect((await rules(id)).Egress).toEqual([]);
  });

  it("replaces one rule, deletes by index and by content, filters the rules it describes", async () => {
    const id = g[0]!;
    await vpc.ReplaceSecurityGroupPolicy({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("2222", { PolicyIndex: 1, Action: "DROP" })] } });
    expect(await codeOf(vpc.ReplaceSecurityGroupPolicy({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("2223")] } }))).toBe("InvalidParameterValue.Empty");
    let set = await rules(id);
    expect(set.Ingress!.map((r) => `${r.Port}:${r.Action}`)).toEqual(["22:DROP", "2222:DROP", "80:ACCEPT", "8000-8010:ACCEPT", "443:ACCEPT"]);
    const drops = (await vpc.DescribeSecurityGroupPolicies({ SecurityGroupId: id, Filters: [{ Name: "poly", Values: ["DROP"] }] })).SecurityGroupPolicySet!;
    expect(drops.Ingress!.map((r) => r.PolicyIndex)).toEqual([0, 1]);
    await vpc.DeleteSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [{ PolicyIndex: 0 }, { PolicyIndex: 2 }] } });
    await vpc.DeleteSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [{ Protocol: "udp", Port: "8000-8010", CidrBlock: "10.0.0.0/8", Action: "accept" }] } });
    expect(await codeOf(vpc.DeleteSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [{ PolicyIndex: 0 }, tcp("443")] } }))).toBe("InvalidParameter.Coexist");
    set = await rules(id);
    expect(set.Ingress!.map((r) => `${r.PolicyIndex}:${r.Port}`)).toEqual(["0:2222", "1:443"]);
    expect(set.Version).toBe("6");
  });

  it("ModifySecurityGroupPolicies replaces the whole set; Version 0 clears it; a rule set read back can be sent again", async () => {
    const id = g[1]!;
    await vpc.ModifySecurityGroupPolicies({
      SecurityGroupId: id,
      SortPolicys: true,
      SecurityGroupPolicySet: { Ingress: [tcp("5432"), { Protocol: "ALL", SecurityGroupId: g[0], Action: "ACCEPT" }], Egress: [{ Protocol: "ALL", CidrBlock: "0.0.0.0/16", Action: "ACCEPT" }] },
    });
    const set = await rules(id);
    expect(set.Ingress!.map((r) => r.SecurityGroupId || r.CidrBlock)).toEqual(["10.0.0.0/8", g[0]]);
    expect(set.Egress![0]!.CidrBlock).toBe("0.0.0.0/0");
    // Send back what Describe showed (empty members, templates, ModifyTime, without PolicyIndex).
    const echo = set.Ingress!.map(({ PolicyIndex: _i, ...rest }) => rest);
    await vpc.ModifySecurityGroupPolicies({ SecurityGroupId: id, SortPolicys: true, SecurityGroupPolicySet: { Ingress: [...echo].reverse(), Egress: [] } });
    expect((await rules(id)).Ingress!.map((r) => r.SecurityGroupId || r.CidrBlock)).toEqual([g[0], "10.0.0.0/8"]);
    // g[0] is named by a rule of g[1]: it cannot go.
    expect(await codeOf(vpc.DeleteSecurityGroup({ SecurityGroupId: g[0]! }))).toBe("ResourceInUse");
    await vpc.ModifySecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Version: "0" } });
    const cleared = await rules(id);
    expect([cleared.Ingress, cleared.Egress]).toEqual([[], []]);
  });

  it("takes 100 inbound rules and refuses the 101st with LimitExceeded.SecurityGroupPolicySet", async () => {
    const id = g[2]!;
    const hundred = Array.from({ length: 100 }, (_v, i) => tcp(String(1000 + i)));
    await vpc.ModifySecurityGroupPolicies({ SecurityGroupId: id, SortPolicys: true, SecurityGroupPolicySet: { Ingress: hundred, Egress: [] } });
    expect((await rules(id)).Ingress).toHaveLength(100);
    expect(await codeOf(vpc.CreateSecurityGroupPolicies({ SecurityGroupId: id, SecurityGroupPolicySet: { Ingress: [tcp("9999")] } }))).toBe("LimitExceeded.SecurityGroupPolicySet");
    expect((await rules(id)).Ingress).toHaveLength(100);
    const made = await vpc.CreateSecurityGroupWithPolicies({
      GroupName: "with-rules",
      GroupDescription: "",
      SecurityGroupPolicySet: { Ingress: [tcp("22")], Egress: [{ Protocol: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] },
    });
    const w = made.SecurityGroup!.SecurityGroupId;
    expect((await rules(w)).Ingress!.map((r) => r.Port)).toEqual(["22"]);
    expect(await members(w)).toEqual([]);
    await vpc.DeleteSecurityGroup({ SecurityGroupId: w });
    expect(await members(w)).toBeUndefined();
    expect(await codeOf(vpc.DescribeSecurityGroups({ SecurityGroupIds: [w] }))).toBe("ResourceNotFound");
  });

  let bound: string;
  let plain: string;

  it("RunInstances binds SecurityGroupIds in order (none: the default group); DescribeInstances shows and filters them", async () => {
    expect(await codeOf(agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, SecurityGroupIds: ["sg-1"] }))).toBe("InvalidSgId.Malformed");
    expect(await codeOf(agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, SecurityGroupIds: ["sg-zzzzzzzz"] }))).toBe(
      "InvalidSecurityGroupId.NotFound",
    );
    bound = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, SecurityGroupIds: [g[1]!, g[0]!] })).InstanceIdSet![0]!;
    plain = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
    await waitForState(agent.client, bound, "RUNNING");
    await waitForState(agent.client, plain, "RUNNING");
    expect((await groupsOf(bound)).SecurityGroupIds).toEqual([g[1], g[0]]);
    expect((await groupsOf(plain)).SecurityGroupIds).toEqual([defaultId]);
    const f = await agent.client.DescribeInstances({ Filters: [{ Name: "security-group-id", Values: [g[0]!] }] });
    expect(f.InstanceSet!.map((i) => i.InstanceId)).toEqual([bound]);
    const stats = (await vpc.DescribeSecurityGroupAssociationStatistics({ SecurityGroupIds: [g[0]!, defaultId] })).SecurityGroupAssociationStatisticsSet!;
    expect(stats.map((s) => [s.SecurityGroupId, s.CVM])).toEqual([
      [g[0], 1],
      [defaultId, 1],
    ]);
    expect(await codeOf(vpc.DeleteSecurityGroup({ SecurityGroupId: g[0]! }))).toBe("ResourceInUse");
  });

  it("AssociateSecurityGroups appends, DisassociateSecurityGroups removes, ModifyInstancesAttribute replaces; LatestOperation shows each", async () => {
    const boundIp = (await groupsOf(bound)).PrivateIpAddresses![0]!;
    const ips = [boundIp, (await groupsOf(plain)).PrivateIpAddresses![0]!].sort();
    expect(await members(g[2]!)).toEqual([]);
    await agent.client.AssociateSecurityGroups({ SecurityGroupIds: [g[2]!], InstanceIds: [bound, plain] });
    // In the kernel when the call answers.
    expect(await members(g[2]!)).toEqual(ips);
    expect((await groupsOf(bound)).SecurityGroupIds).toEqual([g[1], g[0], g[2]]);
    expect(await groupsOf(plain)).toMatchObject({ SecurityGroupIds: [defaultId, g[2]], LatestOperation: "AssociateSecurityGroups", LatestOperationState: "SUCCESS" });
    expect(await members(g[1]!)).toEqual([boundIp]);
    await agent.client.DisassociateSecurityGroups({ SecurityGroupIds: [g[1]!], InstanceIds: [bound] });
    expect(await members(g[1]!)).toEqual([]);
    expect(await groupsOf(bound)).toMatchObject({ SecurityGroupIds: [g[0], g[2]], LatestOperation: "DisassociateSecurityGroups", LatestOperationState: "SUCCESS" });
    await agent.client.ModifyInstancesAttribute({ InstanceIds: [bound], SecurityGroups: [g[2]!, g[1]!] });
    expect(await groupsOf(bound)).toMatchObject({ SecurityGroupIds: [g[2], g[1]], LatestOperation: "ModifyInstancesAttribute", LatestOperationState: "SUCCESS" });
    expect(await codeOf(agent.client.AssociateSecurityGroups({ SecurityGroupIds: ["sg-zzzzzzzz"], InstanceIds: [bound] }))).toBe("InvalidSecurityGroupId.NotFound");
    expect(await codeOf(agent.client.AssociateSecurityGroups({ SecurityGroupIds: [g[0]!, g[1]!], InstanceIds: [bound] }))).toBe("InvalidParameterValue");
    expect(await codeOf(agent.client.AssociateSecurityGroups({ SecurityGroupIds: [g[0]!], InstanceIds: ["ins-zzzzzzzz"] }))).toBe("InvalidInstanceId.NotFound");
    const six: string[] = [];
    for (let i = 0; i < 3; i++) six.push((await vpc.CreateSecurityGroup({ GroupName: `extra${i}`, GroupDescription: "" })).SecurityGroup!.SecurityGroupId);
    expect(await codeOf(agent.client.ModifyInstancesAttribute({ InstanceIds: [bound], SecurityGroups: [...g, defaultId, ...six].slice(0, 6) }))).toBe(
      "LimitExceeded.AssociateUSGLimitExceeded",
    );
    expect((await groupsOf(bound)).SecurityGroupIds).toEqual([g[2], g[1]]);
    for (const id of six) await vpc.DeleteSecurityGroup({ SecurityGroupId: id });
  });

  it("keeps groups, rules and bindings across a SIGKILL and restart of the agent", async () => {
    const before = await rules(g[0]!);
    await agent.kill("SIGKILL");
    agent = await agent.restart();
    vpc = vpcClient(agent.port);
    expect((await vpc.DescribeSecurityGroups({})).TotalCount).toBe(4);
    expect(await rules(g[0]!)).toEqual(before);
    expect((await groupsOf(bound)).SecurityGroupIds).toEqual([g[2], g[1]]);
    expect((await groupsOf(plain)).SecurityGroupIds).toEqual([defaultId, g[2]]);
    expect((await vpc.DescribeSecurityGroups({ Filters: [{ Name: "security-group-id", Values: [defaultId] }] })).SecurityGroupSet![0]!.IsDefault).toBe(true);
  });

  it("a group is deletable once the instances using it are terminated", async () => {
    expect(await codeOf(vpc.DeleteSecurityGroup({ SecurityGroupId: g[2]! }))).toBe("ResourceInUse");
    await agent.client.TerminateInstances({ InstanceIds: [bound, plain] });
    for (const id of [bound, plain]) {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline && (await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount) await new Promise((r) => setTimeout(r, 250));
      expect((await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount).toBe(0);
    }
    await vpc.DeleteSecurityGroup({ SecurityGroupId: g[2]! });
    await vpc.DeleteSecurityGroup({ SecurityGroupId: g[1]! });
    await vpc.DeleteSecurityGroup({ SecurityGroupId: g[0]! });
    expect((await vpc.DescribeSecurityGroups({})).SecurityGroupSet!.map((x) => x.SecurityGroupId)).toEqual([defaultId]);
  });
});
