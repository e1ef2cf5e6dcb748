/**
 * Elastic network interfaces through the official VPC SDK against a real agent and two tiny
 * guests, seen from inside the guests (their serial consoles, test/support/guest-net.ts):
 * an ENI attached to a running guest shows up there with its MAC and address and is reached
 * from the other guest; security groups apply per ENI; a secondary address is brought up and
 * reached, and gone once unassigned; an address a guest gives itself reaches nobody; a detached
 * ENI is gone; an attached one cannot be deleted; a SIGKILL of the agent in the middle of an
 * attach leaves the guest, the definition, the record and the ENI file in line.
 * (The guest side, bringing hot-plugged NICs and addresses up, is scripts/lib/tiny-net.sh.)
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { vpcClient, type AgentProcess, type VpcClient } from "../support/agent-process.js";
import { openNetGuests, type NetGuest, type TinyNics } from "../support/guest-net.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";
import { codeOf } from "../support/sdk-code.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });

const hasMac = (mac: string) => (n: TinyNics) => n.nics.some((x) => x.mac === mac.toLowerCase());
const hasAddress = (mac: string, ip: string) => (n: TinyNics) => n.nics.some((x) => x.mac === mac.toLowerCase() && x.addresses.some((a) => a.startsWith(`${ip}/`)));
const addressAnywhere = (ip: string) => (n: TinyNics) => n.nics.some((x) => x.addresses.some((a) => a.startsWith(`${ip}/`)));

/** MACs of the domain's NICs: the persistent definition, and the live one. */
async function domainMacs(id: string): Promise<{ defined: string[]; live: string[] }> {
  const macs = (xml: string) => [...xml.matchAll(/<mac address=['"]([0-9a-f:]+)['"]/g)].map((m) => m[1]!);
  return { defined: macs((await virsh("dumpxml", "--domain", id, "--inactive")).stdout), live: macs((await virsh("dumpxml", "--domain", id)).stdout) };
}

describe("ENIs on running tiny guests (official VPC SDK)", () => {
  let agent: AgentProcess;
  let vpc: VpcClient;
  let a: NetGuest;
  let b: NetGuest;
  let ids: string[] = [];
  let subnet: { VpcId: string; SubnetId: string };
  let open: string;
  let defaultGroup: string;
  const root = inject("repoRoot");

  async function eni(id: string) {
    return (await vpc.DescribeNetworkInterfaces({ NetworkInterfaceIds: [id] })).NetworkInterfaceSet![0]!;
  }

  async function create(name: string, groups: string[]): Promise<{ id: string; mac: string; ip: string }> {
    const r = await vpc.CreateNetworkInterface({ ...subnet, NetworkInterfaceName: name, SecurityGroupIds: groups });
    const n = r.NetworkInterface!;
    expect(n).toMatchObject({ Primary: false, Attachment: null, GroupSet: groups });
    return { id: n.NetworkInterfaceId!, mac: n.MacAddress!.toLowerCase(), ip: n.PrivateIpAddressSet![0]!.PrivateIpAddress! };
  }

  async function reach(from: NetGuest, to: string, expectOk: boolean, o: { from?: string } = {}): Promise<void> {
    const r = await from.probe({ proto: "tcp", to, timeoutMs: 2_000, ...(o.from ? { from: o.from } : {}) });
    expect({ to, from: o.from, ok: r.ok, why: r.why }).toMatchObject({ ok: expectOk });
  }

  beforeAll(async () => {
    ({ agent, ids } = await agentWithTinyGuests({ repoRoot: root, imageName: "eni", count: 2 }));
    vpc = vpcClient(agent.port);
    const guests = await openNetGuests(ids.map((id) => ({ instanceId: id, consoleLog: join(agent.dataDir, "instances", id, "console.log") })));
    a = guests[0]!;
    b = guests[1]!;
    const d = (await agent.client.DescribeInstances({ InstanceIds: [ids[0]!] })).InstanceSet![0]!;
    subnet = { VpcId: d.VirtualPrivateCloud!.VpcId!, SubnetId: d.VirtualPrivateCloud!.SubnetId! };
    defaultGroup = d.SecurityGroupIds![0]!;
    const g = await vpc.CreateSecurityGroup({ GroupName: "eni-open", GroupDescription: "everything in" });
    open = g.SecurityGroup!.SecurityGroupId!;
    await vpc.CreateSecurityGroupPolicies({ SecurityGroupId: open, SecurityGroupPolicySet: { Ingress: [{ Protocol: "ALL", Port: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] } });
    await vpc.CreateSecurityGroupPolicies({ SecurityGroupId: open, SecurityGroupPolicySet: { Egress: [{ Protocol: "ALL", Port: "ALL", CidrBlock: "0.0.0.0/0", Action: "ACCEPT" }] } });
    await agent.client.ModifyInstancesAttribute({ InstanceIds: ids, SecurityGroups: [open] });
  });

  afterAll(async () => {
    a?.close();
    b?.close();
    await agent?.shutdown();
  });

  it("lists each instance's primary NIC as its primary ENI, attached, with the guest's MAC", async () => {
    const d = await vpc.DescribeNetworkInterfaces({ Filters: [{ Name: "attachment.instance-id", Values: [a.instanceId] }] });
    expect(d.TotalCount).toBe(1);
    expect(d.NetworkInterfaceSet![0]).toMatchObject({
      Primary: true,
      EniType: 1,
      MacAddress: a.mac.toUpperCase(),
      Attachment: { InstanceId: a.instanceId, DeviceIndex: 0 },
      PrivateIpAddressSet: [{ PrivateIpAddress: a.ip, Primary: true }],
      GroupSet: [open],
    });
    expect(await codeOf(vpc.DetachNetworkInterface({ NetworkInterfaceId: d.NetworkInterfaceSet![0]!.NetworkInterfaceId!, InstanceId: a.instanceId }))).toBe("UnsupportedOperation");
  });

  it("attaches an ENI to a running guest: the guest has its MAC and address, the other guest reaches it; per-ENI groups; refused delete; detach", async () => {
    const e = await create("eni-a", [open]);
    expect(await codeOf(vpc.CreateNetworkInterface({ ...subnet, NetworkInterfaceName: "dup", PrivateIpAddresses: [{ PrivateIpAddress: e.ip }] }))).toBe("ResourceInUse");
    await vpc.AttachNetworkInterface({ NetworkInterfaceId: e.id, InstanceId: a.instanceId });
    expect(await eni(e.id)).toMatchObject({ Attachment: { InstanceId: a.instanceId, DeviceIndex: 1 }, NetworkInterfaceState: "INUSE" });
    expect((await domainMacs(a.instanceId)).live).toContain(e.mac);
    await a.waitNics(hasMac(e.mac), { what: "the hot-plugged NIC", timeoutMs: 30_000 });
    await a.waitNics(hasAddress(e.mac, e.ip), { what: "the ENI's address up", timeoutMs: 30_000 });
    await reach(b, e.ip, true);

    expect(await codeOf(vpc.DeleteNetworkInterface({ NetworkInterfaceId: e.id }))).toBe("ResourceInUse");
    expect(await codeOf(vpc.AttachNetworkInterface({ NetworkInterfaceId: e.id, InstanceId: b.instanceId }))).toBe("UnsupportedOperation.AttachmentAlreadyExists");

    // Groups per ENI: an empty group on the ENI drops what reaches it; the primary NIC keeps the instance's.
    const closed = (await vpc.CreateSecurityGroup({ GroupName: "eni-closed", GroupDescription: "nothing in" })).SecurityGroup!.SecurityGroupId!;
    await vpc.ModifyNetworkInterfaceAttribute({ NetworkInterfaceId: e.id, SecurityGroupIds: [closed], NetworkInterfaceName: "eni-a2" });
    expect(await eni(e.id)).toMatchObject({ GroupSet: [closed], NetworkInterfaceName: "eni-a2" });
    await reach(b, e.ip, false);
    await reach(b, a.ip, true);
    expect(await codeOf(vpc.DeleteSecurityGroup({ SecurityGroupId: closed }))).toBe("ResourceInUse");
    await vpc.ModifyNetworkInterfaceAttribute({ NetworkInterfaceId: e.id, SecurityGroupIds: [open] });
    await reach(b, e.ip, true);

    await vpc.DetachNetworkInterface({ NetworkInterfaceId: e.id, InstanceId: a.instanceId });
    expect(await eni(e.id)).toMatchObject({ Attachment: null, NetworkInterfaceState: "AVAILABLE" });
    const macs = await domainMacs(a.instanceId);
    expect(macs.defined).not.toContain(e.mac);
    expect(macs.live).not.toContain(e.mac);
    await a.waitNics((n) => !hasMac(e.mac)(n), { what: "the NIC gone", timeoutMs: 30_000 });
    await reach(b, e.ip, false);
    await vpc.DeleteNetworkInterface({ NetworkInterfaceId: e.id });
    expect(await codeOf(vpc.DescribeNetworkInterfaces({ NetworkInterfaceIds: [e.id] }))).toBe("ResourceNotFound");
    await vpc.DeleteSecurityGroup({ SecurityGroupId: closed });
  });

  it("assigns a secondary address to a guest's primary NIC: brought up and reached; unassigned: gone; an address a guest gives itself reaches nobody", async () => {
    const primary = (await vpc.DescribeNetworkInterfaces({ Filters: [{ Name: "attachment.instance-id", Values: [b.instanceId] }] })).NetworkInterfaceSet![0]!;
    const added = await vpc.AssignPrivateIpAddresses({ NetworkInterfaceId: primary.NetworkInterfaceId!, SecondaryPrivateIpAddressCount: 1 });
    const ip = added.PrivateIpAddressSet![0]!.PrivateIpAddress!;
    expect((await eni(primary.NetworkInterfaceId!)).PrivateIpAddressSet!.map((p) => p.PrivateIpAddress)).toEqual([b.ip, ip]);
    // A CDH_1C1G NIC holds 2 addresses (the seeds' table).
    expect(await codeOf(vpc.AssignPrivateIpAddresses({ NetworkInterfaceId: primary.NetworkInterfaceId!, SecondaryPrivateIpAddressCount: 1 }))).toBe("LimitExceeded");
    await b.waitNics(hasAddress(b.mac, ip), { what: "the secondary address up", timeoutMs: 30_000 });
    await reach(a, ip, true);
    await reach(a, b.ip, true, {});

    expect(await codeOf(vpc.UnassignPrivateIpAddresses({ NetworkInterfaceId: primary.NetworkInterfaceId!, PrivateIpAddresses: [{ PrivateIpAddress: b.ip }] }))).toBe("UnsupportedOperation.PrimaryIp");
    await vpc.UnassignPrivateIpAddresses({ NetworkInterfaceId: primary.NetworkInterfaceId!, PrivateIpAddresses: [{ PrivateIpAddress: ip }] });
    await b.waitNics((n) => !addressAnywhere(ip)(n), { what: "the secondary address gone", timeoutMs: 30_000 });
    await reach(a, ip, false);

    // The guest adds the released address itself: it reaches nobody from it (anti-spoofing), and still does from its own.
    await b.addAddress(`${ip}/${b.net.nics[0]!.prefixLength}`);
    try {
      await reach(b, a.ip, false, { from: ip });
      await reach(b, a.ip, true);
    } finally {
      await b.delAddress(`${ip}/${b.net.nics[0]!.prefixLength}`);
    }
  });

  it("finishes an attach the agent was SIGKILLed in the middle of: guest, definition, record and ENI file agree", async () => {
    const e = await create("eni-crash", [open]);
    await agent.kill("SIGTERM");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "eni-attach:plugged" });
    vpc = vpcClient(agent.port);
    const answer = vpc.AttachNetworkInterface({ NetworkInterfaceId: e.id, InstanceId: b.instanceId }).then(
      () => "answered",
      () => "no answer",
    );
    const dead = await Promise.race([agent.exited(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the agent never reached eni-attach:plugged")), 60_000))]);
    expect(dead.signal).toBe("SIGKILL");
    expect(await answer).toBe("no answer");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "" });
    vpc = vpcClient(agent.port);

    const n = await eni(e.id);
    expect(n).toMatchObject({ Attachment: { InstanceId: b.instanceId }, MacAddress: e.mac.toUpperCase() });
    const macs = await domainMacs(b.instanceId);
    expect(macs.defined.filter((m) => m === e.mac)).toHaveLength(1);
    expect(macs.live.filter((m) => m === e.mac)).toHaveLength(1);
    expect(readdirSync(join(agent.dataDir, "eni-journal"))).toEqual([]);
    // The address is held once: a new ENI asking for it is refused.
    expect(await codeOf(vpc.CreateNetworkInterface({ ...subnet, NetworkInterfaceName: "dup", PrivateIpAddresses: [{ PrivateIpAddress: e.ip }] }))).toBe("ResourceInUse");
    await b.waitNics(hasAddress(e.mac, e.ip), { what: "the ENI's address up after the restart", timeoutMs: 30_000 });
    await reach(a, e.ip, true);

    await vpc.DetachNetworkInterface({ NetworkInterfaceId: e.id, InstanceId: b.instanceId });
    await vpc.DeleteNetworkInterface({ NetworkInterfaceId: e.id });
    expect((await vpc.DescribeNetworkInterfaces({})).TotalCount).toBe(2); // the two primary ENIs
    expect(defaultGroup).toMatch(/^sg-/);
  });
});
