/**
 * The ENI service's order of steps and its bookkeeping, with a recording hypervisor that fails
 * closed (anything unscripted throws) and the real store, journal and registry. What libvirt
 * and the guest do is test/integration/eni.test.ts's.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DomainNicSpec } from "../../../../drivers/libvirt/types.js";
import { InstanceRegistry } from "../../../../agent/instances/registry.js";
import type { InstanceRecord, NicRecord } from "../../../../agent/model.js";
import { EniError } from "../../../../agent/network/enis/errors.js";
import { EniJournal } from "../../../../agent/network/enis/journal.js";
import { EniService, type EniServiceOptions } from "../../../../agent/network/enis/service.js";
import { EniStore } from "../../../../agent/network/enis/store.js";
import type { Subnet } from "../../../../agent/network/subnets.js";

const subnet: Subnet = { subnetId: "subnet-a", vpcId: "vpc-a", network: "net-a", bridge: "br-a", address: "10.9.0.0", prefixLength: 24, gateway: "10.9.0.1", dns: [] };
const ID = "ins-abcd1234";

function record(): InstanceRecord {
  return {
    version: 1,
    instanceId: ID,
    uuid: "00000000-0000-4000-8000-000000000000",
    instanceName: "a",
    instanceType: "CDH_2C4G",
    cpu: 2,
    memoryGiB: 4,
    imageId: "img-abcd1234",
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 1, path: "/x" },
    nics: [{ mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.9.0.2", subnetId: "subnet-a", vpcId: "vpc-a", eniId: "eni-prim0001" }],
    createdTime: "2026-12-07T10:00:00Z",
    launchIndex: 0,
    securityGroupIds: ["sg-aaaaaaaa"],
    configGeneration: 1,
  };
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof EniError) return e.kind;
    throw e;
  }
  throw new Error("not refused");
}

describe("EniService", () => {
  let dir: string;
  let registry: InstanceRegistry;
  let steps: string[];
  let defined: DomainNicSpec[];
  let live: DomainNicSpec[];
  let failAttach: boolean;
  let svc: EniService;
  let store: EniStore;
  let journalDir: string;
  const ctx = { requestId: "req-1" };

  const nicsNow = () => registry.get(ID)!.record.nics.map((n) => n.mac).join(",");

  function service(extra: Partial<EniServiceOptions> = {}): EniService {
    return new EniService({
      store,
      journal: new EniJournal(journalDir),
      registry,
      subnets: [subnet],
      hypervisor: {
        async attachNic(name, nic, isLive) {
          steps.push(`attachNic ${nic.mac} ${nic.targetDev} live=${isLive}`);
          if (failAttach) throw new Error("no");
          defined.push(nic);
          if (isLive) live.push(nic);
        },
        async detachNic(name, mac, isLive) {
          steps.push(`detachNic ${mac} live=${isLive}`);
          defined = defined.filter((n) => n.mac !== mac);
          live = live.filter((n) => n.mac !== mac);
        },
        async liveNics() {
          return [...live];
        },
        async getDomain() {
          return { state: "running", spec: { nics: [...defined] } } as never;
        },
      },
      ops: {
        async saveRecord() {
          steps.push(`save ${nicsNow()}`);
        },
        exclusive: (_id, work) => work(),
      },
      firewall: {
        async syncNow() {
          steps.push(`firewall ${nicsNow()}`);
        },
      },
      drives: {
        async refresh(r) {
          steps.push(`drive gen=${r.configGeneration}`);
        },
      },
      nicEvents: {
        async emit(id) {
          steps.push(`emit ${id}`);
        },
      },
      groups: {
        exists: (id) => id === "sg-aaaaaaaa" || id === "sg-bbbbbbbb",
        defaultGroupId: "sg-aaaaaaaa",
        async replaceInstanceGroups() {
          steps.push("replaceInstanceGroups");
        },
      },
      dataDiskCount: () => 0,
      zone: "zone-1",
      detachTimeoutMs: 1000,
      logger: pino({ level: "silent" }),
      ...extra,
    });
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "eni-unit-"));
    journalDir = join(dir, "eni-journal");
    registry = new InstanceRegistry();
    registry.add({ record: record(), power: "running", launchFailed: false, reboots: 0 });
    steps = [];
    defined = [{ mac: "52:54:00:00:00:01", source: { network: "net-a" } }];
    live = [...defined];
    failAttach = false;
    store = new EniStore({ file: join(dir, "enis.json") });
    await store.load();
    svc = service();
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates an ENI on the lowest free address (the instances' held), with the default group, and lists it beside the primary one", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 1, tags: [] }, ctx);
    expect(n).toMatchObject({ Primary: false, Attachment: null, GroupSet: ["sg-aaaaaaaa"] });
    expect((n.PrivateIpAddressSet as Array<{ PrivateIpAddress: string }>).map((p) => p.PrivateIpAddress)).toEqual(["10.9.0.3", "10.9.0.4"]);
    const d = svc.describe({ filters: [], offset: 0, limit: 20 });
    expect(d.TotalCount).toBe(2);
    expect(d.NetworkInterfaceSet.find((x) => x.Primary)).toMatchObject({ NetworkInterfaceId: "eni-prim0001", Attachment: { InstanceId: ID, DeviceIndex: 0 } });
    expect(await kindOf(svc.create({ vpcId: "vpc-b", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx))).toBe("Mismatch");
    expect(await kindOf(svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [{ ip: "10.9.0.2", primary: true }], secondaryCount: 0, tags: [] }, ctx))).toBe("AddressInUse");
    // A restart reads the unattached ENI back.
    const again = new EniStore({ file: join(dir, "enis.json") });
    await again.load();
    expect(again.state.enis.map((e) => e.net?.primaryIp)).toEqual(["10.9.0.3"]);
  });

  it("attaches: journal, the firewall with the NIC before the hot-plug, then record, drive, events; the journal is empty after", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    const mac = String(n.MacAddress).toLowerCase();
    await svc.attach({ eniId: String(n.NetworkInterfaceId), instanceId: ID }, ctx);
    expect(steps).toEqual([
      `firewall 52:54:00:00:00:01,${mac}`,
      `attachNic ${mac} cdhabcd12341 live=true`,
      `save 52:54:00:00:00:01,${mac}`,
      "drive gen=2",
      `emit ${ID}`,
    ]);
    const nic = registry.get(ID)!.record.nics[1]!;
    expect(nic).toMatchObject({ eniId: n.NetworkInterfaceId, slot: 1, ipv4: "10.9.0.3", securityGroupIds: ["sg-aaaaaaaa"] });
    expect(store.state.enis.find((e) => e.eniId === n.NetworkInterfaceId)?.net).toBeUndefined();
    expect(await readdir(journalDir)).toEqual([]);
    expect(await kindOf(svc.delete(String(n.NetworkInterfaceId), ctx))).toBe("InUse");
    // CDH_2C4G: 2 NICs at most (the seeds' table).
    const m = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "y", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    expect(await kindOf(svc.attach({ eniId: String(m.NetworkInterfaceId), instanceId: ID }, ctx))).toBe("Limit");
  });

  it("puts everything back when the hot-plug fails", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    failAttach = true;
    expect(await kindOf(svc.attach({ eniId: String(n.NetworkInterfaceId), instanceId: ID }, ctx))).toBe("HostFailure");
    expect(nicsNow()).toBe("52:54:00:00:00:01");
    expect(steps.at(-1)).toBe("firewall 52:54:00:00:00:01");
    expect(store.state.enis.find((e) => e.eniId === n.NetworkInterfaceId)?.net?.primaryIp).toBe("10.9.0.3");
    expect(await readdir(journalDir)).toEqual([]);
  });

  it("detaches: unplugged first, its rules after the record is saved; back in the store with its addresses; never the primary", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 1, tags: [] }, ctx);
    const eniId = String(n.NetworkInterfaceId);
    const mac = String(n.MacAddress).toLowerCase();
    await svc.attach({ eniId, instanceId: ID }, ctx);
    steps = [];
    await svc.detach({ eniId, instanceId: ID }, ctx);
    expect(steps).toEqual([`detachNic ${mac} live=true`, "save 52:54:00:00:00:01", "firewall 52:54:00:00:00:01", "drive gen=3", `emit ${ID}`]);
    expect(store.state.enis.find((e) => e.eniId === eniId)?.net).toMatchObject({ primaryIp: "10.9.0.3", secondaryIps: ["10.9.0.4"], mac });
    expect(await kindOf(svc.detach({ eniId: "eni-prim0001", instanceId: ID }, ctx))).toBe("PrimaryNic");
    expect(await kindOf(svc.detach({ eniId, instanceId: ID }, ctx))).toBe("NotAttached");
  });

  it("assigns secondary addresses to the primary NIC (firewall before the drive), refuses past the limit, never releases the primary address", async () => {
    const added = await svc.assign({ eniId: "eni-prim0001", addresses: ["10.9.0.9"], count: 1 }, ctx);
    expect(added.map((a) => a.PrivateIpAddress)).toEqual(["10.9.0.9", "10.9.0.3"]);
    expect(registry.get(ID)!.record.nics[0]!.secondaryIpv4s).toEqual(["10.9.0.9", "10.9.0.3"]);
    expect(steps.indexOf("firewall 52:54:00:00:00:01")).toBeLessThan(steps.indexOf("drive gen=2"));
    expect(await kindOf(svc.assign({ eniId: "eni-prim0001", addresses: [], count: 8 }, ctx))).toBe("Limit");
    expect(await kindOf(svc.unassign({ eniId: "eni-prim0001", addresses: ["10.9.0.2"] }, ctx))).toBe("PrimaryIp");
    await svc.unassign({ eniId: "eni-prim0001", addresses: ["10.9.0.9"] }, ctx);
    expect(registry.get(ID)!.record.nics[0]!.secondaryIpv4s).toEqual(["10.9.0.3"]);
    expect(svc.addressesInUse("subnet-a").has("10.9.0.9")).toBe(false);
  });

  it("moves a secondary address from an instance's NIC to an unattached ENI of the subnet", async () => {
    await svc.assign({ eniId: "eni-prim0001", addresses: ["10.9.0.9"], count: 0 }, ctx);
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    await svc.migrate({ sourceEniId: "eni-prim0001", destinationEniId: String(n.NetworkInterfaceId), ip: "10.9.0.9" }, ctx);
    expect(registry.get(ID)!.record.nics[0]!.secondaryIpv4s).toBeUndefined();
    expect(store.state.enis.find((e) => e.eniId === n.NetworkInterfaceId)?.net?.secondaryIps).toEqual(["10.9.0.9"]);
    expect(await kindOf(svc.migrate({ sourceEniId: "eni-prim0001", destinationEniId: String(n.NetworkInterfaceId), ip: "10.9.0.2" }, ctx))).toBe("PrimaryIp");
  });

  it("finishes an attach a crash cut short: the NIC plugged where missing, the record and the store as after, the journal emptied", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    const eniId = String(n.NetworkInterfaceId);
    const stored = store.state.enis.find((e) => e.eniId === eniId)!;
    const nic: NicRecord = { mac: stored.net!.mac, network: "net-a", ipv4: "10.9.0.3", subnetId: "subnet-a", vpcId: "vpc-a", eniId, securityGroupIds: ["sg-aaaaaaaa"], slot: 1 };
    const before = registry.get(ID)!.record.nics;
    await new EniJournal(journalDir).write({
      id: "0c1d2e3f-0000-4000-8000-000000000001",
      op: "attach",
      eniId,
      instances: [{ instanceId: ID, before, after: [...before, nic] }],
      store: [{ eniId, before: stored, after: { eniId, name: "x", description: "", createdTime: stored.createdTime, tags: [], attachTime: "t" } }],
      requestId: "req-0",
      startedAt: new Date().toISOString(),
    });
    steps = [];
    const touched = await service().recover();
    expect(touched).toEqual([ID]);
    expect(steps).toContain(`attachNic ${nic.mac} cdhabcd12341 live=true`);
    expect(registry.get(ID)!.record.nics.map((x) => x.eniId)).toEqual(["eni-prim0001", eniId]);
    expect(store.state.enis.find((e) => e.eniId === eniId)?.net).toBeUndefined();
    expect(await readdir(journalDir)).toEqual([]);
  });

  it("gives a terminated instance's secondary ENI back to the store and drops its primary ENI", async () => {
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 0, tags: [] }, ctx);
    await svc.attach({ eniId: String(n.NetworkInterfaceId), instanceId: ID }, ctx);
    await svc.modify({ eniId: "eni-prim0001", name: "renamed" }, ctx);
    await svc.instanceGone(registry.get(ID)!.record);
    registry.remove(ID);
    expect(store.state.enis.map((e) => e.eniId)).toEqual([n.NetworkInterfaceId]);
    expect(store.state.enis[0]!.net).toMatchObject({ primaryIp: "10.9.0.3", securityGroupIds: ["sg-aaaaaaaa"] });
  });

  it("never gives an ENI or a secondary address what a primary address change holds (reservedAddresses), and says so when one is asked for", async () => {
    const held = new Set(["10.9.0.3", "10.9.0.5"]);
    svc = service({ reservedAddresses: (subnetId) => (subnetId === "subnet-a" ? held : []) });
    const n = await svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "x", addresses: [], secondaryCount: 1, tags: [] }, ctx);
    expect((n.PrivateIpAddressSet as Array<{ PrivateIpAddress: string }>).map((p) => p.PrivateIpAddress)).toEqual(["10.9.0.4", "10.9.0.6"]);
    const asked = svc.create({ vpcId: "vpc-a", subnetId: "subnet-a", name: "y", addresses: [{ ip: "10.9.0.5", primary: true }], secondaryCount: 0, tags: [] }, ctx);
    await expect(asked).rejects.toThrow(/10\.9\.0\.5 is held by an address change under way/);
    const added = await svc.assign({ eniId: "eni-prim0001", addresses: [], count: 1 }, ctx);
    expect(added.map((a) => a.PrivateIpAddress)).toEqual(["10.9.0.7"]);
    expect(await kindOf(svc.assign({ eniId: "eni-prim0001", addresses: ["10.9.0.3"], count: 0 }, ctx))).toBe("AddressInUse");
    // Once the change lets an address go, it is anyone's again.
    held.delete("10.9.0.3");
    expect((await svc.assign({ eniId: "eni-prim0001", addresses: [], count: 1 }, ctx)).map((a) => a.PrivateIpAddress)).toEqual(["10.9.0.3"]);
    expect(store.state.enis.find((e) => e.eniId === n.NetworkInterfaceId)?.net).toMatchObject({ primaryIp: "10.9.0.4", secondaryIps: ["10.9.0.6"] });
  });

  it("counts the addresses an assign has chosen as in use while it waits for its instance, and frees them when it fails", async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let waiting = false;
    let failSync = false;
    svc = service({
      ops: {
        async saveRecord() {},
        async exclusive(_id, work) {
          waiting = true;
          await gate;
          return work();
        },
      },
      firewall: {
        async syncNow() {
          if (failSync) throw new Error("nft said no");
        },
      },
    });
    const pending = svc.assign({ eniId: "eni-prim0001", addresses: [], count: 1 }, ctx);
    for (let i = 0; i < 50 && !waiting; i++) await new Promise((r) => setTimeout(r, 1));
    expect(waiting).toBe(true);
    expect(registry.get(ID)!.record.nics[0]!.secondaryIpv4s).toBeUndefined();
    // What a launch or an address change would allocate from now.
    expect(svc.addressesInUse("subnet-a").has("10.9.0.3")).toBe(true);
    open();
    expect((await pending).map((a) => a.PrivateIpAddress)).toEqual(["10.9.0.3"]);
    expect(registry.get(ID)!.record.nics[0]!.secondaryIpv4s).toEqual(["10.9.0.3"]);
    failSync = true;
    expect(await kindOf(svc.assign({ eniId: "eni-prim0001", addresses: ["10.9.0.8"], count: 0 }, ctx))).toBe("HostFailure");
    expect(svc.addressesInUse("subnet-a").has("10.9.0.8")).toBe(false);
    expect(await readdir(journalDir)).toEqual([]); // the entry removed after its write, not before
    expect([...svc.addressesInUse("subnet-a")].sort()).toEqual(["10.9.0.2", "10.9.0.3"]);
  });
});
