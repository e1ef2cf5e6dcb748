import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cvmCodeOf } from "../../../../agent/api/error-map.js";
import type { InstanceRecord, LatestOperation } from "../../../../agent/model.js";
import { InstanceRegistry, type InstanceEntry } from "../../../../agent/instances/registry.js";
import type { Firewall, FirewallState } from "../../../../agent/network/firewall-types.js";
import { SgError } from "../../../../agent/network/security-groups/errors.js";
import { SecurityGroupService } from "../../../../agent/network/security-groups/service.js";
import { SecurityGroupStore, securityGroupsFile } from "../../../../agent/network/security-groups/store.js";

/** Records every state it is given; rejects while `refuse` is set (the kernel keeps the last one taken). */
class RecordingFirewall implements Firewall {
  applied: FirewallState | undefined;
  calls = 0;
  refuse = false;
  /** While set, a sync waits for it (a slow nft). */
  gate: Promise<void> | undefined;
  async sync(state: FirewallState): Promise<void> {
    this.calls += 1;
    await new Promise((r) => setTimeout(r, 1));
    await this.gate;
    if (this.refuse) throw new Error("nft: transaction refused");
    this.applied = structuredClone(state);
  }
  async strays(): Promise<string[]> {
    throw new Error("strays is not expected in these tests");
  }
}

const subnets = [{ subnetId: "subnet-aaaaaaaa", vpcId: "vpc-aaaaaaaa", network: "cdh-a", bridge: "cdhbr-a", address: "10.9.0.0", prefixLength: 24, gateway: "10.9.0.1", dns: [] }];

function entry(id: string, ip: string, groups?: string[]): InstanceEntry {
  const record = {
    version: 1,
    instanceId: id,
    uuid: id,
    instanceName: "",
    instanceType: "CDH_1C1G",
    cpu: 1,
    memoryGiB: 1,
    imageId: "img-aaaaaaaa",
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 10, path: "/x" },
    nics: [{ mac: "52:54:00:00:00:01", network: "cdh-a", ipv4: ip, subnetId: "subnet-aaaaaaaa" }],
    createdTime: "2026-12-07T10:00:00Z",
    launchIndex: 0,
    ...(groups ? { securityGroupIds: groups } : {}),
  } as InstanceRecord;
  return { record, power: "running", launchFailed: false, reboots: 0 };
}

let dir: string;
let firewall: RecordingFirewall;
let registry: InstanceRegistry;
let saved: string[];
let service: SecurityGroupService;

function makeService(limit = 50): SecurityGroupService {
  return new SecurityGroupService({
    store: new SecurityGroupStore({ file: securityGroupsFile(dir) }),
    registry,
    subnets,
    firewall,
    ops: {
      saveRecord: async (e: InstanceEntry) => void saved.push(`${e.record.instanceId}:${JSON.stringify(e.record.securityGroupIds)}`),
      failedOperation: (action: string, ctx: { requestId: string }, error: unknown): LatestOperation => ({
        action,
        state: "FAILED",
        requestId: ctx.requestId,
        errorCode: cvmCodeOf(error),
        errorMessage: String(error),
      }),
    },
    groupLimit: limit,
    logger: pino({ level: "silent" }),
  });
}

async function refusal(work: Promise<unknown>): Promise<SgError> {
  try {
    await work;
  } catch (error) {
    if (error instanceof SgError) return error;
    throw error;
  }
  throw new Error("accepted");
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sg-service-"));
  firewall = new RecordingFirewall();
  registry = new InstanceRegistry();
  saved = [];
  service = makeService();
  await service.load();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("SecurityGroupService", () => {
  it("creates the default group once, with the seeds' first template, and reads it back on the next start", async () => {
    const id = service.defaultGroupId;
    const [g] = service.describeGroups({ filters: [], offset: 0, limit: 20, orderDirection: "ASC" }).SecurityGroupSet;
    expect(g).toMatchObject({ SecurityGroupId: id, IsDefault: true, ProjectId: "0" });
    const rules = service.describePolicies(id, []) as { Ingress: Array<{ Protocol: string; Port: string }>; Egress: Array<{ Protocol: string }> };
    expect(rules.Ingress.map((r) => `${r.Protocol}:${r.Port}`)).toEqual(["TCP:22", "TCP:80", "TCP:443", "TCP:3389", "ICMP:ALL"]);
    expect(rules.Egress.map((r) => r.Protocol)).toEqual(["ALL"]);
    const again = makeService();
    await again.load();
    expect(again.defaultGroupId).toBe(id);
    expect(await refusal(service.deleteGroup(id))).toMatchObject({ kind: "DefaultGroup" });
  });

  it("answers a change only after the firewall took it; a refused sync changes nothing, neither store nor file", async () => {
    const created = (await service.createGroup({ groupName: "web", groupDescription: "", tags: [] })) as { SecurityGroupId: string };
    const id = created.SecurityGroupId;
    expect(firewall.applied!.groups.map((g) => g.securityGroupId)).toContain(id);
    await service.createPolicies(id, { Ingress: [{ Protocol: "TCP", Port: "80", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] });
    expect(firewall.applied!.groups.find((g) => g.securityGroupId === id)!.ingress).toHaveLength(1);
    const file = await readFile(securityGroupsFile(dir), "utf8");
    firewall.refuse = true;
    const e = await refusal(service.createPolicies(id, { Ingress: [{ Protocol: "TCP", Port: "81", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] }));
    expect(e.kind).toBe("FirewallFailed");
    expect(cvmCodeOf(e)).toBe("InternalError.ModuleError");
    expect((service.describePolicies(id, []) as { Version: string; Ingress: unknown[] }).Version).toBe("1");
    expect(await readFile(securityGroupsFile(dir), "utf8")).toBe(file);
    expect(await refusal(service.createGroup({ groupName: "x", groupDescription: "", tags: [] }))).toMatchObject({ kind: "FirewallFailed" });
    expect(service.describeGroups({ filters: [], offset: 0, limit: 20, orderDirection: "ASC" }).TotalCount).toBe(2);
  });

  it("refuses to delete a group an instance uses or another group's rule names; once free it goes", async () => {
    const a = ((await service.createGroup({ groupName: "a", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    const b = ((await service.createGroup({ groupName: "b", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    registry.add(entry("ins-aaaaaaaa", "10.9.0.5", [a]));
    expect(await refusal(service.deleteGroup(a))).toMatchObject({ kind: "InUse" });
    await service.createPolicies(b, { Ingress: [{ Protocol: "ALL", SecurityGroupId: a, Action: "ACCEPT" }] });
    registry.remove("ins-aaaaaaaa");
    const e = await refusal(service.deleteGroup(a));
    expect(e.kind).toBe("InUse");
    expect(e.message).toContain(b);
    await service.modifyPolicies(b, { Version: "0" }, false);
    await service.deleteGroup(a);
    expect(firewall.applied!.groups.map((g) => g.securityGroupId)).not.toContain(a);
  });

  it("a group being deleted (its sync under way) cannot be bound by a launch in that window", async () => {
    const a = ((await service.createGroup({ groupName: "a", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    let open!: () => void;
    firewall.gate = new Promise((r) => (open = r));
    const deleting = service.deleteGroup(a);
    await new Promise((r) => setTimeout(r, 20));
    expect(() => service.launchGroups([a])).toThrow(/does not exist/);
    open();
    await deleting;
    expect(() => service.launchGroups([a])).toThrow(/does not exist/);
  });

  it("holds at most security_group_limit groups", async () => {
    service = makeService(2);
    await service.load();
    await service.createGroup({ groupName: "one", groupDescription: "", tags: [] });
    expect(await refusal(service.createGroup({ groupName: "two", groupDescription: "", tags: [] }))).toMatchObject({ kind: "GroupQuota" });
  });

  it("binds groups in order: associate appends, disassociate removes, replace sets; the firewall has it before the answer", async () => {
    const a = ((await service.createGroup({ groupName: "a", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    const b = ((await service.createGroup({ groupName: "b", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    const def = service.defaultGroupId;
    const e1 = entry("ins-aaaaaaaa", "10.9.0.5");
    registry.add(e1);
    const ctx = { requestId: "req-1" };
    await service.associate(a, ["ins-aaaaaaaa"], ctx);
    expect(firewall.applied!.nics[0]!.securityGroupIds).toEqual([def, a]);
    expect(e1.record.latestOperation).toMatchObject({ action: "AssociateSecurityGroups", state: "SUCCESS", requestId: "req-1" });
    await service.replaceGroups([b, a], ["ins-aaaaaaaa"], ctx);
    expect(firewall.applied!.nics[0]!.securityGroupIds).toEqual([b, a]);
    await service.disassociate(b, ["ins-aaaaaaaa"], ctx);
    expect(e1.record.securityGroupIds).toEqual([a]);
    expect(await refusal(service.disassociate(a, ["ins-aaaaaaaa"], ctx))).toMatchObject({ kind: "BadValue" });
    expect(saved.at(-1)).toBe(`ins-aaaaaaaa:${JSON.stringify([a])}`);
  });

  it("a binding the firewall refuses leaves the instance's groups as they were, LatestOperation FAILED with the CVM code", async () => {
    const a = ((await service.createGroup({ groupName: "a", groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId;
    const e1 = entry("ins-aaaaaaaa", "10.9.0.5");
    registry.add(e1);
    firewall.refuse = true;
    const e = await refusal(service.associate(a, ["ins-aaaaaaaa"], { requestId: "req-2" }));
    expect(cvmCodeOf(e)).toBe("FailedOperation.SecurityGroupActionFailed");
    expect(e1.record.securityGroupIds).toBeUndefined();
    expect(e1.record.latestOperation).toMatchObject({ action: "AssociateSecurityGroups", state: "FAILED", errorCode: "FailedOperation.SecurityGroupActionFailed" });
  });

  it("refuses a sixth group, unknown groups and unknown instances with the CVM codes", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(((await service.createGroup({ groupName: `g${i}`, groupDescription: "", tags: [] })) as { SecurityGroupId: string }).SecurityGroupId);
    registry.add(entry("ins-aaaaaaaa", "10.9.0.5", ids.slice(0, 5)));
    expect(cvmCodeOf(await refusal(service.associate(ids[5]!, ["ins-aaaaaaaa"], { requestId: "r" })))).toBe("LimitExceeded.AssociateUSGLimitExceeded");
    expect(cvmCodeOf(await refusal(service.associate("sg-nothere0", ["ins-aaaaaaaa"], { requestId: "r" })))).toBe("InvalidSecurityGroupId.NotFound");
    expect(() => service.launchGroups(ids)).toThrow(SgError);
    expect(service.launchGroups(undefined)).toEqual([service.defaultGroupId]);
    await expect(service.associate(ids[5]!, ["ins-bbbbbbbb"], { requestId: "r" })).rejects.toMatchObject({ kind: "InstanceNotFound" });
  });

  it("syncNow applies the current state, joining a sync that is queued and not yet started", async () => {
    registry.add(entry("ins-aaaaaaaa", "10.9.0.5"));
    const before = firewall.calls;
    await Promise.all([service.syncNow(), service.syncNow(), service.syncNow()]);
    expect(firewall.calls - before).toBeLessThanOrEqual(2);
    expect(firewall.applied!.nics.map((n) => n.tap)).toEqual(["cdhaaaaaaaa0"]);
    registry.remove("ins-aaaaaaaa");
    await service.syncNow();
    expect(firewall.applied!.nics).toEqual([]);
  });

  it("a store file that fails its check is set aside and a new default group made", async () => {
    await writeFile(securityGroupsFile(dir), "{ not json");
    const fresh = makeService();
    await fresh.load();
    expect(fresh.defaultGroupId).toMatch(/^sg-[a-z0-9]{8}$/);
    expect(JSON.parse(await readFile(securityGroupsFile(dir), "utf8")).defaultGroupId).toBe(fresh.defaultGroupId);
  });
});
