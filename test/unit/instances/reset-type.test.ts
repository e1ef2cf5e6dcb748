/** ResetInstancesType's pure logic: admission of the difference, the live check, candidate sizes, the headroom in the XML. */
import { describe, expect, it } from "vitest";
import { computeHostResource, type HostResource } from "../../../agent/capacity.js";
import { candidateSizes, liveProblem, retypeGrowth, retypeShortfall, typeName } from "../../../agent/instances/reset-type.js";
import { hotplugOf } from "../../../agent/instances/domain-spec.js";
import { buildDimmXml, buildDomainXml, parseDomainXml } from "../../../drivers/libvirt/domain-xml.js";
import type { DomainSpec } from "../../../drivers/libvirt/types.js";
import { parseDescribeInstancesModification, parseResetInstancesType } from "../../../agent/api/schemas-retype.js";

const GiB = 1024 ** 3;
/** 8 vCPUs and 16 GiB sellable, 1 vCPU and 1 GiB kept; instances hold 4 vCPUs and 10 GiB: 3 vCPUs and 5 GiB left. */
const host: HostResource = computeHostResource(
  { cpus: 8, memoryBytes: 16 * GiB, disk: { totalGiB: 100, availableGiB: 50, diskType: "LOCAL_BASIC" } },
  { reservedCpu: 1, reservedMemoryGiB: 1, cpuAllocationRatio: 1, memoryAllocationRatio: 1 },
  [{ cpu: 2, memoryGiB: 4 }, { cpu: 2, memoryGiB: 6 }],
);

describe("admission of the difference", () => {
  it("counts growth only", () => {
    expect(retypeGrowth({ cpu: 2, memoryGiB: 4 }, { cpu: 4, memoryGiB: 2 })).toEqual({ cpu: 2, memoryGiB: 0 });
    expect(retypeGrowth({ cpu: 2, memoryGiB: 4 }, { cpu: 1, memoryGiB: 1 })).toEqual({ cpu: 0, memoryGiB: 0 });
  });

  it("admits exactly what is left beyond the instance's own size, and not one more", () => {
    expect(host.CpuAvailable).toBe(3);
    expect(host.MemAvailable).toBe(5);
    const own = { cpu: 2, memoryGiB: 4 };
    expect(retypeShortfall(host, own, { cpu: 5, memoryGiB: 9 })).toBeNull();
    expect(retypeShortfall(host, own, { cpu: 6, memoryGiB: 4 })).toMatch(/4 vCPU requested, 3 available/);
    expect(retypeShortfall(host, own, { cpu: 2, memoryGiB: 10 })).toMatch(/6 GiB memory requested, 5 GiB available/);
    // A shrink always fits, even on a full host.
    const full = { ...host, CpuAvailable: 0, MemAvailable: 0 };
    expect(retypeShortfall(full, own, { cpu: 1, memoryGiB: 1 })).toBeNull();
    expect(retypeShortfall(full, own, { cpu: 3, memoryGiB: 1 })).not.toBeNull();
  });
});

describe("what applies live", () => {
  const live = { vcpus: 2, memoryMiB: 2048, maxVcpus: 4, maxMemoryMiB: 4096, freeSlots: 1 };
  it("growth within the headroom only", () => {
    expect(liveProblem(live, { cpu: 4, memoryGiB: 4 })).toBeNull();
    expect(liveProblem(live, { cpu: 2, memoryGiB: 2 })).toBeNull();
    expect(liveProblem(live, { cpu: 1, memoryGiB: 2 })).toMatch(/never removed/);
    expect(liveProblem(live, { cpu: 2, memoryGiB: 1 })).toMatch(/never removed/);
    expect(liveProblem(live, { cpu: 5, memoryGiB: 2 })).toMatch(/headroom of 4/);
    expect(liveProblem(live, { cpu: 2, memoryGiB: 5 })).toMatch(/headroom of 4 GiB/);
    expect(liveProblem({ ...live, freeSlots: 0 }, { cpu: 2, memoryGiB: 3 })).toMatch(/DIMM slot/);
    expect(liveProblem({ ...live, freeSlots: 0 }, { cpu: 3, memoryGiB: 2 })).toBeNull();
    expect(liveProblem(null, { cpu: 3, memoryGiB: 2 })).toMatch(/not running/);
  });
});

describe("candidate sizes", () => {
  it("powers of two vCPUs with 1, 2, 4, 8 GiB each, within the host's totals, without the instance's own size", () => {
    const sizes = candidateSizes({ cpuTotal: 4, memTotalGiB: 8 }, { cpu: 3, memoryGiB: 5 }).map(typeName);
    expect(sizes).toEqual([
      "CDH_1C1G", "CDH_1C2G", "CDH_1C4G", "CDH_1C8G",
      "CDH_2C2G", "CDH_2C4G", "CDH_2C8G",
      "CDH_3C3G", "CDH_3C6G",
      "CDH_4C4G", "CDH_4C8G",
    ]);
    expect(candidateSizes({ cpuTotal: 2, memTotalGiB: 2 }, { cpu: 1, memoryGiB: 1 }).map(typeName)).toEqual(["CDH_1C2G", "CDH_2C2G"]);
  });
});

describe("hot-plug headroom in the definition", () => {
  const spec = (hotplug?: DomainSpec["hotplug"]): DomainSpec => ({
    name: "ins-abcd1234", uuid: "00000000-0000-4000-8000-000000000001", virtType: "qemu", vcpus: 1, memoryMiB: 1024,
    ...(hotplug ? { hotplug } : {}), firmware: "bios", disks: [], nics: [], consoleLogPath: "/tmp/c.log", guestAgent: false, vnc: false,
    smbios: { manufacturer: "m", product: "p", version: "v", serial: "s", family: "f" }, metadata: "{}",
  });

  it("none when the host keeps none: the XML as before", () => {
    expect(hotplugOf({ cpu: 1, memoryGiB: 1 }, undefined)).toBeUndefined();
    expect(hotplugOf({ cpu: 1, memoryGiB: 1 }, { maxVcpus: 0, maxMemoryGiB: 0, memorySlots: 8 })).toBeUndefined();
    const xml = buildDomainXml(spec());
    expect(xml).not.toMatch(/maxMemory|numa|current=/);
  });

  it("vcpu current, maxMemory with slots and one NUMA cell; read back the same", () => {
    const hp = hotplugOf({ cpu: 1, memoryGiB: 1 }, { maxVcpus: 4, maxMemoryGiB: 3, memorySlots: 8 })!;
    expect(hp).toEqual({ maxVcpus: 4, maxMemoryMiB: 3072, memorySlots: 8 });
    const xml = buildDomainXml(spec(hp));
    expect(xml).toMatch(/<vcpu placement="static" current="1">4<\/vcpu>/);
    expect(xml).toMatch(/<maxMemory slots="8" unit="MiB">3072<\/maxMemory>/);
    expect(xml).toMatch(/<cell id="0" cpus="0-3" memory="1024" unit="MiB"/);
    const back = parseDomainXml(xml);
    expect({ vcpus: back.vcpus, memoryMiB: back.memoryMiB, hotplug: back.hotplug }).toEqual({ vcpus: 1, memoryMiB: 1024, hotplug: hp });
  });

  it("an instance as large as the headroom gets no memory slots; its own size is never cut", () => {
    expect(hotplugOf({ cpu: 8, memoryGiB: 4 }, { maxVcpus: 4, maxMemoryGiB: 4, memorySlots: 8 })).toEqual({ maxVcpus: 8, maxMemoryMiB: 4096, memorySlots: 0 });
    const xml = buildDomainXml({ ...spec({ maxVcpus: 8, maxMemoryMiB: 4096, memorySlots: 0 }), vcpus: 8, memoryMiB: 4096 });
    expect(xml).not.toMatch(/maxMemory|numa|current=/);
  });

  it("a DIMM for attach-device", () => {
    expect(buildDimmXml(1024)).toMatch(/<memory model="dimm">\s*<target>\s*<size unit="MiB">1024<\/size>\s*<node>0<\/node>/);
  });
});

describe("request schemas", () => {
  it("ResetInstancesType: exactly one instance, a CDH type", () => {
    expect(parseResetInstancesType({ InstanceIds: ["ins-abcd1234"], InstanceType: "CDH_2C4G", ForceStop: true })).toEqual({
      instanceId: "ins-abcd1234", instanceType: "CDH_2C4G", cpu: 2, memoryGiB: 4, forceStop: true,
    });
    expect(() => parseResetInstancesType({ InstanceIds: ["ins-abcd1234", "ins-abcd1235"], InstanceType: "CDH_2C4G" })).toThrow(/at most 1/);
    expect(() => parseResetInstancesType({ InstanceIds: ["ins-abcd1234"], InstanceType: "S5.LARGE8" })).toThrow(/CDH_/);
  });

  it("DescribeInstancesModification: status filters are ANDed", () => {
    expect(parseDescribeInstancesModification({ InstanceIds: ["ins-abcd1234"] })).toEqual({ instanceIds: ["ins-abcd1234"] });
    expect(parseDescribeInstancesModification({ InstanceIds: ["ins-abcd1234"], Filters: [{ Name: "status", Values: ["SELL"] }] }).statuses).toEqual(["SELL"]);
    expect(() => parseDescribeInstancesModification({ InstanceIds: ["ins-abcd1234"], Filters: [{ Name: "status", Values: ["SOLD"] }] })).toThrow(/SELL or UNAVAILABLE/);
    expect(() => parseDescribeInstancesModification({ InstanceIds: ["ins-abcd1234"], Filters: [{ Name: "zone", Values: ["x"] }] })).toThrow(/not a supported filter/);
  });
});
