import { describe, expect, it } from "vitest";
import { SgError } from "../../../../agent/network/security-groups/errors.js";
import type { StoredGroup } from "../../../../agent/network/security-groups/model.js";
import { buildFirewallState, namedGroupsOf } from "../../../../agent/network/security-groups/state.js";
import { selectGroups, toPolicySet, type DescribeGroupsQuery } from "../../../../agent/network/security-groups/views.js";

function group(n: number, extra: Partial<StoredGroup> = {}): StoredGroup {
  return {
    securityGroupId: `sg-0000000${n}`,
    name: `g${n}`,
    description: "",
    projectId: "0",
    isDefault: false,
    createdTime: `2026-12-07 10:00:0${n}`,
    updateTime: `2026-12-07 11:00:0${9 - n}`,
    seq: n,
    tags: [],
    version: 0,
    ingress: [],
    egress: [],
    ...extra,
  };
}

const q = (over: Partial<DescribeGroupsQuery> = {}): DescribeGroupsQuery => ({ filters: [], offset: 0, limit: 20, orderDirection: "ASC", ...over });
const ids = (r: { page: StoredGroup[] }) => r.page.map((g) => g.securityGroupId);

describe("selectGroups (DescribeSecurityGroups)", () => {
  const groups = [group(3), group(1, { tags: [{ key: "env", value: "prod" }] }), group(2, { name: "web", tags: [{ key: "env", value: "test" }] })];

  it("orders by creation, pages with Offset and Limit and counts them all", () => {
    const r = selectGroups(groups, q({ offset: 1, limit: 1 }));
    expect(r.total).toBe(3);
    expect(ids(r)).toEqual(["sg-00000002"]);
    expect(ids(selectGroups(groups, q({ orderDirection: "DESC" })))).toEqual(["sg-00000003", "sg-00000002", "sg-00000001"]);
    expect(ids(selectGroups(groups, q({ orderField: "UpdateTime" })))).toEqual(["sg-00000003", "sg-00000002", "sg-00000001"]);
  });

  it("filters: AND across filters, OR across values; tag-key and tag:<key>", () => {
    expect(ids(selectGroups(groups, q({ filters: [{ name: "tag-key", values: ["env"] }] })))).toEqual(["sg-00000001", "sg-00000002"]);
    expect(ids(selectGroups(groups, q({ filters: [{ name: "tag:env", values: ["test", "x"] }] })))).toEqual(["sg-00000002"]);
    expect(ids(selectGroups(groups, q({ filters: [{ name: "security-group-name", values: ["web", "g3"] }, { name: "project-id", values: ["0"] }] })))).toEqual([
      "sg-00000002",
      "sg-00000003",
    ]);
    expect(selectGroups(groups, q({ filters: [{ name: "security-group-id", values: ["sg-00000001"] }, { name: "security-group-name", values: ["web"] }] })).total).toBe(0);
  });

  it("refuses an unknown filter, IDs with Filters, and an unknown ID", () => {
    const kind = (work: () => unknown) => {
      try {
        work();
      } catch (e) {
        return (e as SgError).kind;
      }
      return "accepted";
    };
    expect(kind(() => selectGroups(groups, q({ filters: [{ name: "vpc-id", values: ["x"] }] })))).toBe("FilterInvalidKey");
    expect(kind(() => selectGroups(groups, q({ securityGroupIds: ["sg-00000001"], filters: [{ name: "tag-key", values: ["env"] }] })))).toBe("Coexist");
    expect(kind(() => selectGroups(groups, q({ securityGroupIds: ["sg-99999999"] })))).toBe("GroupNotFound");
    expect(ids(selectGroups(groups, q({ securityGroupIds: ["sg-00000003", "sg-00000001"] })))).toEqual(["sg-00000003", "sg-00000001"]);
  });
});

describe("toPolicySet (DescribeSecurityGroupPolicies)", () => {
  it("shows Version as a string, each rule's PolicyIndex in its whole direction, and filters", () => {
    const g = group(1, {
      version: 7,
      ingress: [
        { protocol: "TCP", port: "22", cidrBlock: "0.0.0.0/0", action: "ACCEPT", description: "ssh", modifyTime: "t" },
        { protocol: "UDP", port: "53", securityGroupId: "sg-00000002", action: "DROP", description: "", modifyTime: "t" },
      ],
      egress: [{ protocol: "ALL", port: "ALL", cidrBlock: "0.0.0.0/0", action: "ACCEPT", description: "", modifyTime: "t" }],
    });
    const all = toPolicySet(g) as { Version: string; Ingress: Array<Record<string, unknown>>; Egress: unknown[]; PolicyStatistics: Record<string, number> };
    expect(all.Version).toBe("7");
    expect(all.Ingress[1]).toMatchObject({ PolicyIndex: 1, Protocol: "UDP", SecurityGroupId: "sg-00000002", CidrBlock: "", Ipv6CidrBlock: "", Action: "DROP" });
    expect(all.PolicyStatistics).toEqual({ IngressIPv4TotalCount: 2, IngressIPv6TotalCount: 0, EgressIPv4TotalCount: 1, EgressIPv6TotalCount: 0 });
    const drops = toPolicySet(g, [{ name: "poly", values: ["DROP"] }]) as { Ingress: Array<{ PolicyIndex: number }>; Egress: unknown[] };
    expect(drops.Ingress.map((p) => p.PolicyIndex)).toEqual([1]);
    expect(drops.Egress).toEqual([]);
    const inbound = toPolicySet(g, [{ name: "direction", values: ["INBOUND"] }]) as { Ingress: unknown[]; Egress: unknown[] };
    expect([inbound.Ingress.length, inbound.Egress.length]).toEqual([2, 0]);
  });
});

describe("buildFirewallState", () => {
  const subnets = [{ subnetId: "subnet-aaaaaaaa", network: "cdh-a", bridge: "cdhbr-a", gateway: "10.9.0.1" }];
  it("lists every group and every NIC with its tap, bridge, MAC, address, gateway and groups in order", () => {
    const groups = [
      group(1, { ingress: [{ protocol: "TCP", port: "80,443", cidrBlock: "10.9.0.5", action: "ACCEPT", description: "", modifyTime: "t" }] }),
      group(2),
    ];
    const state = buildFirewallState({
      groups,
      defaultGroupId: "sg-00000001",
      subnets,
      instances: [
        { instanceId: "ins-bbbbbbbb", nics: [{ mac: "52:54:00:AA:BB:CC", network: "cdh-a", ipv4: "10.9.0.7", subnetId: "subnet-aaaaaaaa" }], securityGroupIds: ["sg-00000002", "sg-00000001"] },
        { instanceId: "ins-aaaaaaaa", nics: [{ mac: "52:54:00:00:00:01", network: "cdh-a", ipv4: "10.9.0.5" }] },
        { instanceId: "ins-cccccccc", nics: [{ mac: "52:54:00:00:00:02", network: "elsewhere" }], securityGroupIds: ["sg-00000002"] },
      ],
    });
    expect(state.groups).toEqual([
      { securityGroupId: "sg-00000001", ingress: [{ action: "ACCEPT", protocol: "TCP", ports: [80, 443], peer: { cidr: "10.9.0.5/32" } }], egress: [] },
      { securityGroupId: "sg-00000002", ingress: [], egress: [] },
    ]);
    expect(state.nics).toEqual([
      { tap: "cdhaaaaaaaa0", bridge: "cdhbr-a", mac: "52:54:00:00:00:01", addresses: ["10.9.0.5"], gateway: "10.9.0.1", securityGroupIds: ["sg-00000001"], instanceId: "ins-aaaaaaaa" },
      { tap: "cdhbbbbbbbb0", bridge: "cdhbr-a", mac: "52:54:00:aa:bb:cc", addresses: ["10.9.0.7"], gateway: "10.9.0.1", securityGroupIds: ["sg-00000002", "sg-00000001"], instanceId: "ins-bbbbbbbb" },
    ]);
  });

  it("namedGroupsOf gives an instance's groups with their names in priority order; a record without groups has the default one", () => {
    const state = { groups: [group(1), group(2, { name: "web" })], defaultGroupId: "sg-00000001" };
    expect(namedGroupsOf(state, { securityGroupIds: ["sg-00000002", "sg-00000001", "sg-gone0000"] })).toEqual([
      { id: "sg-00000002", name: "web" },
      { id: "sg-00000001", name: "g1" },
    ]);
    expect(namedGroupsOf(state, {})).toEqual([{ id: "sg-00000001", name: "g1" }]);
  });

  it("a bound group that no longer exists is left out (fail closed: nothing it allowed stays open)", () => {
    const state = buildFirewallState({
      groups: [group(1)],
      defaultGroupId: "sg-00000001",
      subnets,
      instances: [{ instanceId: "ins-aaaaaaaa", nics: [{ mac: "52:54:00:00:00:01", network: "cdh-a", ipv4: "10.9.0.5" }], securityGroupIds: ["sg-gone0000"] }],
    });
    expect(state.nics[0]!.securityGroupIds).toEqual([]);
  });
});
