/**
 * ModifyInstancesVpcAttribute on tiny guests through the official CVM SDK: a new primary address
 * reboots the guest onto it (the guest says so from its config drive, over its serial console,
 * and another guest reaches it there), the old address is free for another instance, and a
 * SIGKILL of the agent during the change leaves the guest, the definition, the drive and the
 * address books in agreement (finished once libvirt has the new record, FAILED on the old one
 * before that).
 */
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { NetGuest } from "../support/guest-net.js";
import { serialLogSize } from "../support/serial.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

const VPC = { VpcId: "vpc-default", SubnetId: "subnet-default" };
const ACTION = "ModifyInstancesVpcAttribute";

describe("ModifyInstancesVpcAttribute (tiny guests, official CVM SDK)", () => {
  let agent: AgentProcess;
  let ids: string[] = [];
  let work: string;
  const open: NetGuest[] = [];
  const root = inject("repoRoot");

  const consoleLog = (id: string) => `${agent.dataDir}/instances/${id}/console.log`;

  async function guest(id: string, fromOffset = 0): Promise<NetGuest> {
    const g = await NetGuest.open({ instanceId: id, consoleLog: consoleLog(id), fromOffset, timeoutMs: 120_000 });
    open.push(g);
    return g;
  }

  async function describe1(id: string) {
    return (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
  }

  /** Waits until the change has ended (LatestOperationState no longer OPERATING) and returns the instance. */
  async function settled(id: string, timeoutMs = 120_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = await describe1(id);
      if (i.LatestOperation === ACTION && i.LatestOperationState !== "OPERATING" && (i.InstanceState === "RUNNING" || i.InstanceState === "STOPPED")) return i;
      if (Date.now() > deadline) throw new Error(`${id}: ${ACTION} did not end within ${timeoutMs} ms (${i.InstanceState}, ${i.LatestOperation} ${i.LatestOperationState})`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** The primary address the instance's config drive gives it (network_data.json, read with xorriso). */
  async function driveAddress(id: string): Promise<string[]> {
    const dir = await mkdtemp(join(work, "drive-"));
    await execa("xorriso", ["-osirrox", "on", "-indev", `${agent.dataDir}/instances/${id}/config.iso`, "-extract", "/openstack/latest/network_data.json", join(dir, "nd.json")], { timeout: 60_000 });
    const nd = JSON.parse(await readFile(join(dir, "nd.json"), "utf8")) as { networks: Array<{ ip_address: string }> };
    return nd.networks.map((n) => n.ip_address);
  }

  async function refusal(body: Record<string, unknown>): Promise<string> {
    try {
      await agent.client.ModifyInstancesVpcAttribute(body as never);
    } catch (e) {
      return (e as { code?: string }).code ?? String(e);
    }
    throw new Error(`${JSON.stringify(body)} was not refused`);
  }

  beforeAll(async () => {
    const started = await agentWithTinyGuests({ repoRoot: root, imageName: "vpc-attribute", count: 2 });
    agent = started.agent;
    ids = started.ids;
    work = await mkdtemp(join(tmpdir(), "vpc-attribute-"));
    await chmod(work, 0o755);
  });

  afterAll(async () => {
    for (const g of open) g.close();
    await agent?.shutdown();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("refuses what it cannot do with the API's codes, and changes nothing", async () => {
    const [a, b] = ids as [string, string];
    const bIp = (await describe1(b)).PrivateIpAddresses![0]!;
    const aIp = (await describe1(a)).PrivateIpAddresses![0]!;
    expect(await refusal({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [bIp] } })).toBe("VpcIpIsUsed");
    expect(await refusal({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: ["10.99.0.5"] } })).toBe("VpcAddrNotInSubNet");
    expect(await refusal({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: ["10.201.0.1"] } })).toBe("VpcAddrNotInSubNet");
    expect(await refusal({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: ["10.201.0.300"] } })).toBe("InvalidParameterValue.IPAddressMalformed");
    expect(await refusal({ InstanceIds: [a], VirtualPrivateCloud: { VpcId: "vpc-default", SubnetId: "subnet-nothere" } })).toBe("InvalidParameterValue.SubnetNotExist");
    expect(await refusal({ InstanceIds: [a, b], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: ["10.201.0.201"] } })).toBe("InvalidParameterValue");
    expect((await describe1(a)).PrivateIpAddresses).toEqual([aIp]);
    expect((await describe1(a)).InstanceState).toBe("RUNNING");
  });

  it("a new primary address reboots the guest onto it; another guest reaches it there, and the old address is free", async () => {
    const [a, b] = ids as [string, string];
    const before = await describe1(a);
    const oldIp = before.PrivateIpAddresses![0]!;
    const newIp = "10.201.0.200";
    const offset = await serialLogSize(consoleLog(a));
    const t0 = Date.now();
    await agent.client.ModifyInstancesVpcAttribute({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [newIp] } });
    const after = await settled(a);
    expect([after.InstanceState, after.LatestOperationState]).toEqual(["RUNNING", "SUCCESS"]);
    expect(after.PrivateIpAddresses).toEqual([newIp]);
    expect(await driveAddress(a)).toEqual([newIp]);
    const ga = await guest(a, offset);
    console.log(`vpc-attribute: ${a} answered on ${newIp} ${Date.now() - t0} ms after the request`);
    expect(ga.ip).toBe(newIp);
    expect((await ga.nics()).nics.map((n) => n.addresses)).toEqual([[`${newIp}/24`]]);
    // The firewall follows: the default group lets ICMP in, from B to A's new address (and not its old one).
    const gb = await guest(b);
    await expect(gb.probe({ proto: "icmp", to: newIp, timeoutMs: 3000 })).resolves.toMatchObject({ ok: true });
    await expect(gb.probe({ proto: "icmp", to: oldIp, timeoutMs: 2000 })).resolves.toMatchObject({ ok: false });
    // The old address is free: B takes it (and is stopped-changed-started like A).
    gb.close();
    const offsetB = await serialLogSize(consoleLog(b));
    await agent.client.ModifyInstancesVpcAttribute({ InstanceIds: [b], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [oldIp] } });
    const bAfter = await settled(b);
    expect([bAfter.LatestOperationState, bAfter.PrivateIpAddresses]).toEqual(["SUCCESS", [oldIp]]);
    expect((await guest(b, offsetB)).ip).toBe(oldIp);
  });

  it.each([
    { point: "vpc-attribute:stopped", finished: false },
    { point: "vpc-attribute:defined", finished: true },
  ])("a SIGKILL at $point leaves guest, definition, drive and address books in agreement", async ({ point, finished }) => {
    const [a, b] = ids as [string, string];
    const oldIp = (await describe1(a)).PrivateIpAddresses![0]!;
    const newIp = finished ? "10.201.0.210" : "10.201.0.211";
    await agent.kill("SIGTERM");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: point });
    const offset = await serialLogSize(consoleLog(a));
    await agent.client.ModifyInstancesVpcAttribute({ InstanceIds: [a], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [newIp] } });
    const dead = await Promise.race([
      agent.exited(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the agent never reached ${point}`)), 90_000)),
    ]);
    expect(dead.signal).toBe("SIGKILL");
    agent = await agent.restart({ CDH_AGENT_FAIL_POINT: "" });
    const after = await settled(a);
    const want = finished ? newIp : oldIp;
    expect([after.InstanceState, after.LatestOperationState, after.PrivateIpAddresses]).toEqual(["RUNNING", finished ? "SUCCESS" : "FAILED", [want]]);
    // The definition libvirt has, the drive and the guest say the same address.
    const { stdout } = await execa("virsh", ["-c", "qemu:///system", "dumpxml", a, "--inactive"], { timeout: 30_000 });
    const other = finished ? oldIp : newIp;
    expect([stdout.includes(`"${want}"`), stdout.includes(`"${other}"`)]).toEqual([true, false]);
    expect(await driveAddress(a)).toEqual([want]);
    expect((await guest(a, offset)).ip).toBe(want);
    // Address books: the address A has is taken, the other one is free again.
    expect(await refusal({ InstanceIds: [b], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [want] } })).toBe("VpcIpIsUsed");
    await agent.client.ModifyInstancesVpcAttribute({ InstanceIds: [b], VirtualPrivateCloud: { ...VPC, PrivateIpAddresses: [other] } });
    expect((await settled(b)).PrivateIpAddresses).toEqual([other]);
  });
});
