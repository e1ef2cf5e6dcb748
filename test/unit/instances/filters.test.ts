/**
 * DescribeInstances' filters over a set of instances built to tell every filter apart: each
 * filter, given the value of one instance, selects exactly the instances that have it.
 */
import { describe, expect, it } from "vitest";
import { parseCommand } from "../../../agent/api/commands.js";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { InstanceRegistry } from "../../../agent/instances/registry.js";
import { selectInstances, toCvmInstance } from "../../../agent/instances/views.js";
import type { InstanceRecord, PowerView } from "../../../agent/model.js";

const HOST = { hostId: "host-test0001", zone: "zone-1", defaultSecurityGroupId: "sg-default1" };

function record(o: { id: string; name: string; ip: string; subnet: string; vpc: string; image: string; created: string; groups?: string[]; tags?: Array<[string, string]> }): InstanceRecord {
  return {
    version: 1,
    instanceId: o.id,
    uuid: `uuid-${o.id}`,
    hostId: HOST.hostId,
    instanceName: o.name,
    instanceType: "CDH_1C1G",
    cpu: 1,
    memoryGiB: 1,
    imageId: o.image,
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 10, path: `/pool/${o.id}.qcow2` },
    nics: [{ mac: "52:54:00:00:00:01", network: "net", ipv4: o.ip, subnetId: o.subnet, vpcId: o.vpc }],
    createdTime: o.created,
    launchIndex: 0,
    ...(o.groups ? { securityGroupIds: o.groups } : {}),
    ...(o.tags ? { tags: o.tags.map(([key, value]) => ({ key, value })) } : {}),
  };
}

/** Four instances: every filter value below belongs to a different subset of them. */
function fourInstances(): InstanceRegistry {
  const registry = new InstanceRegistry();
  const add = (r: InstanceRecord, power: PowerView) => registry.add({ record: r, power, launchFailed: false, reboots: 0 });
  add(record({ id: "ins-aaaaaaaa", name: "web-1", ip: "10.0.0.2", subnet: "subnet-aaaaaaaa", vpc: "vpc-aaaaaaaa", image: "img-aaaaaaaa", created: "2026-12-01T10:00:00Z", groups: ["sg-web00001"], tags: [["team", "web"]] }), "running");
  add(record({ id: "ins-bbbbbbbb", name: "web-2", ip: "10.0.0.3", subnet: "subnet-aaaaaaaa", vpc: "vpc-aaaaaaaa", image: "img-bbbbbbbb", created: "2026-12-02T10:00:00Z", groups: ["sg-web00001", "sg-db000001"], tags: [["team", "db"], ["backup", "daily"]] }), "shut off");
  add(record({ id: "ins-cccccccc", name: "db-1", ip: "10.1.0.2", subnet: "subnet-bbbbbbbb", vpc: "vpc-aaaaaaaa", image: "img-aaaaaaaa", created: "2026-12-03T10:00:00Z" }), "running");
  add(record({ id: "ins-dddddddd", name: "db-2", ip: "10.2.0.2", subnet: "subnet-cccccccc", vpc: "vpc-bbbbbbbb", image: "img-bbbbbbbb", created: "2026-12-04T10:00:00Z", tags: [["env", "web"]] }), "shut off");
  return registry;
}

const ids = (registry: InstanceRegistry, filters: Array<{ Name: string; Values: string[] }>) =>
  selectInstances({ registry, host: HOST, filters, offset: 0, limit: 100 })
    .page.map((r) => r.entry.record.instanceId.slice(4, 5))
    .join("");

describe("DescribeInstances filters, each against instances built to tell them apart", () => {
  const registry = fourInstances();
  const cases: Array<[string, string[], string]> = [
    ["instance-id", ["ins-bbbbbbbb", "ins-dddddddd"], "bd"],
    ["uuid", ["uuid-ins-cccccccc"], "c"],
    ["instance-name", ["web-1", "db-2"], "ad"],
    ["instance-state", ["STOPPED"], "bd"],
    ["instance-state", ["RUNNING"], "ac"],
    ["image-id", ["img-bbbbbbbb"], "bd"],
    ["private-ip-address", ["10.1.0.2", "10.0.0.3"], "bc"],
    ["vpc-id", ["vpc-aaaaaaaa"], "abc"],
    ["subnet-id", ["subnet-aaaaaaaa", "subnet-cccccccc"], "abd"],
    ["security-group-id", ["sg-db000001"], "b"],
    // Records without groups are in the host's default group.
    ["security-group-id", ["sg-default1"], "cd"],
    ["tag-key", ["team"], "ab"],
    ["tag-value", ["web"], "ad"],
    ["tag:team", ["db"], "b"],
    ["creation-start-time", ["2026-12-02 10:00:00"], "bcd"],
    ["creation-end-time", ["2026-12-02 09:59:59"], "a"],
    ["zone", ["zone-1"], "abcd"],
    ["zone", ["zone-2"], ""],
    ["host-id", ["host-test0001"], "abcd"],
    ["project-id", ["0"], "abcd"],
    ["project-id", ["1"], ""],
    ["instance-charge-type", ["CDHPAID"], "abcd"],
    ["instance-charge-type", ["PREPAID", "POSTPAID_BY_HOUR"], ""],
  ];
  for (const [name, values, expected] of cases) {
    it(`${name} ${values.join(",")} selects ${expected || "none"}`, () => {
      expect(ids(registry, [{ Name: name, Values: values }])).toBe(expected);
    });
  }

  it("every filter name the API takes is one of these (none is accepted and ignored)", () => {
    const names = new Set(cases.map((c) => c[0].replace(/^tag:.*/, "tag:")));
    for (const name of names) expect(() => parseCommand("DescribeInstances", { Filters: [{ Name: name === "tag:" ? "tag:x" : name, Values: ["v"] }] })).not.toThrow();
    expect(() => parseCommand("DescribeInstances", { Filters: [{ Name: "dedicated-cluster-id", Values: ["v"] }] })).toThrow(/Filters/);
  });

  it("filters are ANDed, values ORed", () => {
    expect(ids(registry, [{ Name: "vpc-id", Values: ["vpc-aaaaaaaa"] }, { Name: "instance-state", Values: ["RUNNING"] }])).toBe("ac");
  });

  it("a creation time not of the form YYYY-MM-DD hh:mm:ss is refused naming the filter", () => {
    let error: unknown;
    try {
      ids(registry, [{ Name: "creation-start-time", Values: ["yesterday"] }]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DomainError);
    expect(cvmCodeOf(error)).toBe("InvalidParameterValue");
    expect((error as Error).message).toContain("creation-start-time");
  });
});

describe("the Instance structure", () => {
  it("shows the fields that are true on one host, and null for the ones that cannot be", () => {
    const entry = fourInstances().get("ins-aaaaaaaa")!;
    const shown = toCvmInstance(entry, "RUNNING", HOST);
    expect(shown).toMatchObject({
      InstanceChargeType: "CDHPAID",
      CpuTopology: { CoreCount: 1, ThreadPerCore: 1 },
      InternetAccessible: { InternetMaxBandwidthOut: 0, PublicIpAssigned: false },
      StopChargingMode: "NOT_APPLICABLE",
      IsolatedSource: "NOTISOLATED",
      EnableJumboFrame: false,
      RenewFlag: null,
      ExpiredTime: null,
      GPUInfo: null,
      Metadata: null,
    });
  });
});
