import { describe, expect, it } from "vitest";
import { addressesInUse, allocate, checkAddress, nicAddresses } from "../../../../agent/network/enis/addresses.js";
import { EniError } from "../../../../agent/network/enis/errors.js";
import { nicLimitsOf, pciSlotsFree } from "../../../../agent/network/enis/model.js";
import { selectEnis, toNetworkInterface, type EniRow } from "../../../../agent/network/enis/views.js";
import { buildFirewallState } from "../../../../agent/network/security-groups/state.js";
import type { Subnet } from "../../../../agent/network/subnets.js";

const subnet: Subnet = {
  subnetId: "subnet-a",
  vpcId: "vpc-a",
  network: "net-a",
  bridge: "br-a",
  address: "10.9.0.0",
  prefixLength: 29,
  gateway: "10.9.0.1",
  dns: [],
};

function kindOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof EniError) return e.kind;
    throw e;
  }
  throw new Error("did not throw");
}

describe("NIC limits follow the seeds' ENI quota table", () => {
  it.each([
    [1, 1, 2, 2],
    [1, 2, 2, 6],
    [2, 4, 2, 10],
    [3, 8, 2, 10],
    [4, 8, 4, 10],
    [4, 16, 4, 10],
    [4, 32, 4, 20],
    [6, 32, 4, 20],
    [8, 16, 6, 20],
    [12, 48, 6, 20],
    [16, 64, 8, 30],
  ])("%i vCPU %i GiB: %i NICs, %i addresses per NIC", (cpu, memoryGiB, nics, addresses) => {
    expect(nicLimitsOf({ cpu, memoryGiB })).toEqual({ nicsPerInstance: nics, addressesPerNic: addresses });
  });

  it("counts the PCI slots a pc definition has left: 32 less 6 fixed, the disks and the NICs", () => {
    expect(pciSlotsFree({ virtioDisks: 1, nics: 1 })).toBe(24);
    expect(pciSlotsFree({ virtioDisks: 22, nics: 4 })).toBe(0);
  });
});

describe("the address books", () => {
  const records = [{ nics: [{ mac: "52:54:00:00:00:01", network: "net-a", subnetId: "subnet-a", ipv4: "10.9.0.2", secondaryIpv4s: ["10.9.0.3"] }] }];
  const enis = [
    { eniId: "eni-aaaaaaaa", name: "", description: "", createdTime: "", tags: [], net: { mac: "52:54:00:00:00:02", subnetId: "subnet-a", vpcId: "vpc-a", network: "net-a", primaryIp: "10.9.0.4", secondaryIps: ["10.9.0.5"], securityGroupIds: [] } },
    { eniId: "eni-bbbbbbbb", name: "", description: "", createdTime: "", tags: [], net: { mac: "52:54:00:00:00:03", subnetId: "subnet-b", vpcId: "vpc-a", network: "net-b", primaryIp: "10.9.0.6", secondaryIps: [], securityGroupIds: [] } },
  ];

  it("hold every NIC's addresses, secondary ones too, and every unattached ENI's of the subnet", () => {
    expect([...addressesInUse({ records, enis, subnetId: "subnet-a" })].sort()).toEqual(["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"]);
    expect(nicAddresses(records[0]!.nics[0]!)).toEqual(["10.9.0.2", "10.9.0.3"]);
  });

  it("allocate the lowest free host address, never the gateway, and say when none is left", () => {
    const used = addressesInUse({ records, enis, subnetId: "subnet-a" });
    expect(allocate(subnet, used)).toBe("10.9.0.6");
    expect(used.has("10.9.0.6")).toBe(true);
    // 10.9.0.7 is the broadcast address of the /29: nothing is left.
    expect(kindOf(() => allocate(subnet, used))).toBe("SubnetFull");
  });

  it("refuse a requested address outside the subnet, reserved, in use, or malformed, each by its kind", () => {
    const used = new Set(["10.9.0.2"]);
    expect(checkAddress(subnet, used, "10.9.0.3", "f")).toBe("10.9.0.3");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.1.3", "f"))).toBe("BadValue");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.0.1", "f"))).toBe("Reserved");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.0.0", "f"))).toBe("Reserved");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.0.7", "f"))).toBe("Reserved");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.0.2", "f"))).toBe("AddressInUse");
    expect(kindOf(() => checkAddress(subnet, used, "10.9.0", "f"))).toBe("BadValue");
  });
});

describe("DescribeNetworkInterfaces' selection", () => {
  const row = (id: string, extra: Partial<EniRow> = {}): EniRow => ({
    eniId: id,
    name: id,
    description: "",
    createdTime: "2026-12-07 10:00:00",
    tags: [],
    mac: "52:54:00:aa:bb:cc",
    subnetId: "subnet-a",
    vpcId: "vpc-a",
    primaryIp: "10.9.0.2",
    secondaryIps: [],
    securityGroupIds: ["sg-aaaaaaaa"],
    primary: false,
    ...extra,
  });
  const rows = [
    row("eni-00000001", { primary: true, attachment: { instanceId: "ins-aaaaaaaa", deviceIndex: 0, attachTime: "t" } }),
    row("eni-00000002", { primaryIp: "10.9.0.12", secondaryIps: ["10.9.0.22"], tags: [{ key: "team", value: "web" }] }),
    row("eni-00000003", { subnetId: "subnet-b", primaryIp: "10.9.0.3", securityGroupIds: ["sg-bbbbbbbb"] }),
  ];
  const ids = (q: Parameters<typeof selectEnis>[1]) => selectEnis(rows, q).page.map((r) => r.eniId);
  const all = { filters: [], offset: 0, limit: 20 };

  it("ANDs filters, ORs one filter's values, and pages", () => {
    expect(ids({ ...all, filters: [{ name: "subnet-id", values: ["subnet-a"] }] })).toEqual(["eni-00000001", "eni-00000002"]);
    expect(ids({ ...all, filters: [{ name: "subnet-id", values: ["subnet-a", "subnet-b"] }, { name: "is-primary", values: ["FALSE"] }] })).toEqual(["eni-00000002", "eni-00000003"]);
    expect(ids({ ...all, filters: [{ name: "attachment.instance-id", values: ["ins-aaaaaaaa"] }] })).toEqual(["eni-00000001"]);
    expect(ids({ ...all, filters: [{ name: "groups.security-group-id", values: ["sg-bbbbbbbb"] }] })).toEqual(["eni-00000003"]);
    expect(ids({ ...all, filters: [{ name: "tag:team", values: ["web"] }] })).toEqual(["eni-00000002"]);
    expect(selectEnis(rows, { ...all, offset: 1, limit: 1 })).toMatchObject({ total: 3, page: [{ eniId: "eni-00000002" }] });
  });

  it("matches one address by suffix, several (or ip-exact-match) exactly, secondary ones too", () => {
    expect(ids({ ...all, filters: [{ name: "address-ip", values: ["2"] }] })).toEqual(["eni-00000001", "eni-00000002"]);
    expect(ids({ ...all, filters: [{ name: "address-ip", values: ["10.9.0.22"] }] })).toEqual(["eni-00000002"]);
    expect(ids({ ...all, filters: [{ name: "address-ip", values: ["2"] }, { name: "ip-exact-match", values: ["TRUE"] }] })).toEqual([]);
  });

  it("refuses an unknown filter name and an unknown ID", () => {
    expect(kindOf(() => selectEnis(rows, { ...all, filters: [{ name: "instance-id", values: ["x"] }] }))).toBe("FilterInvalidKey");
    expect(kindOf(() => selectEnis(rows, { ...all, ids: ["eni-99999999"] }))).toBe("NotFound");
  });

  it("shows an attached ENI with its Attachment and an unattached one with null", () => {
    expect(toNetworkInterface(rows[0]!, "zone-1")).toMatchObject({ Primary: true, EniType: 1, Attachment: { InstanceId: "ins-aaaaaaaa", DeviceIndex: 0 }, MacAddress: "52:54:00:AA:BB:CC" });
    expect(toNetworkInterface(rows[1]!, "zone-1")).toMatchObject({
      Primary: false,
      Attachment: null,
      PrivateIpAddressSet: [
        { PrivateIpAddress: "10.9.0.12", Primary: true },
        { PrivateIpAddress: "10.9.0.22", Primary: false },
      ],
    });
  });
});

describe("the firewall state of NICs with ENIs", () => {
  it("lets each NIC send from exactly its addresses and binds a secondary NIC's own groups (the primary follows the instance)", () => {
    const state = buildFirewallState({
      groups: [
        { securityGroupId: "sg-aaaaaaaa", name: "a", description: "", projectId: "0", isDefault: true, createdTime: "", updateTime: "", seq: 0, tags: [], version: 0, ingress: [], egress: [] },
        { securityGroupId: "sg-bbbbbbbb", name: "b", description: "", projectId: "0", isDefault: false, createdTime: "", updateTime: "", seq: 1, tags: [], version: 0, ingress: [], egress: [] },
      ],
      defaultGroupId: "sg-aaaaaaaa",
      instances: [
        {
          instanceId: "ins-abcd1234",
          securityGroupIds: ["sg-aaaaaaaa"],
          nics: [
            { mac: "52:54:00:00:00:01", network: "net-a", subnetId: "subnet-a", ipv4: "10.9.0.2", secondaryIpv4s: ["10.9.0.5"], securityGroupIds: ["sg-bbbbbbbb"] },
            { mac: "52:54:00:00:00:02", network: "net-a", subnetId: "subnet-a", ipv4: "10.9.0.3", slot: 3, securityGroupIds: ["sg-bbbbbbbb"] },
            { mac: "52:54:00:00:00:03", network: "net-a", subnetId: "subnet-a", ipv4: "10.9.0.4", slot: 1 },
          ],
        },
      ],
      subnets: [subnet],
    });
    expect(state.nics.map((n) => ({ tap: n.tap, addresses: n.addresses, groups: n.securityGroupIds }))).toEqual([
      { tap: "cdhabcd12340", addresses: ["10.9.0.2", "10.9.0.5"], groups: ["sg-aaaaaaaa"] },
      { tap: "cdhabcd12343", addresses: ["10.9.0.3"], groups: ["sg-bbbbbbbb"] },
      { tap: "cdhabcd12341", addresses: ["10.9.0.4"], groups: ["sg-aaaaaaaa"] },
    ]);
  });
});
