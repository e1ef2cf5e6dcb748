import { describe, expect, it } from "vitest";
import { buildDomainSpec, rescueBoot } from "../../../agent/instances/domain-spec.js";
import type { InstanceRecord } from "../../../agent/model.js";
import { DataPaths } from "../../../agent/paths.js";
import { buildDomainXml, parseDomainXml } from "../../../drivers/libvirt/domain-xml.js";
import { tapName } from "../../../agent/network/firewall-types.js";

const record: InstanceRecord = {
  version: 1,
  instanceId: "ins-abcd1234",
  uuid: "0c6b6a2e-2b1c-4a55-9d7a-3c1f0b2a9e11",
  instanceName: "t",
  instanceType: "CDH_1C1G",
  cpu: 1,
  memoryGiB: 1,
  imageId: "img-abcd1234",
  systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 50, path: "/p/local/disk-sys00001.qcow2", diskId: "disk-sys00001", pool: "local" },
  nics: [{ mac: "52:54:00:00:00:01", network: "n", ipv4: "10.201.0.5", subnetId: "subnet-a", vpcId: "vpc-a" }],
  createdTime: "2026-01-01T00:00:00Z",
  launchIndex: 0,
};
const base = { virtType: "qemu" as const, paths: new DataPaths("/d"), agentVersion: "t" };
const limits = (pool: string | undefined) => (pool === "ssd" ? { iops: 500, throughputMBps: 50 } : { iops: 0, throughputMBps: 0 });

describe("the domain spec of an instance", () => {
  it("puts data disks at their targets with serial = disk ID and their pool's IO limits, and survives the XML round trip", () => {
    const spec = buildDomainSpec({ ...base, record, dataDisks: [{ diskId: "disk-data0001", target: "vdb", path: "/p/ssd/disk-data0001.qcow2", pool: "ssd" }], ioLimits: limits });
    const vdb = spec.disks.find((d) => d.target === "vdb")!;
    expect(vdb).toMatchObject({ bus: "virtio", serial: "disk-data0001", iotune: { totalIopsSec: 500, totalBytesSec: 50 * 1024 * 1024 } });
    expect(spec.disks.find((d) => d.target === "vda")).toMatchObject({ serial: "disk-sys00001", bootOrder: 1 });
    expect(spec.disks.find((d) => d.target === "vda")!.iotune).toBeUndefined();
    const back = parseDomainXml(buildDomainXml(spec));
    expect(back.disks).toEqual(spec.disks);
  });

  it("has an empty ISO tray that takes the attached ISO, booting after the system disk", () => {
    const empty = buildDomainSpec({ ...base, record });
    expect(empty.disks.find((d) => d.target === "hdd")).toEqual({ device: "cdrom", target: "hdd", bus: "ide", format: "raw", readonly: true });
    const withIso = buildDomainSpec({ ...base, record: { ...record, iso: { path: "/d/instances/ins-abcd1234/attached.iso", url: "file:///x.iso" } } });
    expect(withIso.disks.find((d) => d.target === "hdd")).toMatchObject({ path: "/d/instances/ins-abcd1234/attached.iso", bootOrder: 2 });
  });

  it("boots the rescue system with the hash and the instance's address while in rescue mode, and only then", () => {
    const rescue = { kernel: "/r/vmlinuz", initrd: "/r/initrd", network: { ip: "10.201.0.5", prefixLength: 24, gateway: "10.201.0.1", dns: ["10.201.0.1"] } };
    expect(buildDomainSpec({ ...base, record, rescue }).directBoot).toBeUndefined();
    const hash = "$6$salt$abc";
    const spec = buildDomainSpec({ ...base, record: { ...record, rescue: { passwordHash: hash, since: "" } }, rescue });
    expect(spec.directBoot).toEqual(rescueBoot(hash, rescue));
    expect(spec.directBoot!.cmdline).toBe("console=tty1 console=ttyS0 cdh.rescue_hash=$6$salt$abc cdh.ip=10.201.0.5/24 cdh.gw=10.201.0.1 cdh.dns=10.201.0.1");
    expect(parseDomainXml(buildDomainXml(spec)).directBoot).toEqual(spec.directBoot);
  });

  it("names every NIC's tap with tapName(), so the firewall's chains exist before the guest starts, and writes no nwfilter", () => {
    const two = { ...record, nics: [...record.nics, { mac: "52:54:00:00:00:02", network: "n2", ipv4: "10.202.0.5", subnetId: "subnet-b", vpcId: "vpc-a" }] };
    const spec = buildDomainSpec({ ...base, record: two });
    expect(spec.nics.map((n) => n.targetDev)).toEqual(["cdhabcd12340", "cdhabcd12341"]);
    expect(spec.nics.map((n) => n.targetDev)).toEqual([tapName(record.instanceId, 0), tapName(record.instanceId, 1)]);
    const xml = buildDomainXml(spec);
    expect(xml).toContain('<target dev="cdhabcd12340"/>');
    expect(xml).not.toContain("filterref");
    // libvirt's clean-traffic is replaced by the agent's nftables tables: the codec refuses to write one.
    const old = { ...spec, nics: [{ ...spec.nics[0]!, filter: { name: "clean-traffic", parameters: { IP: "10.201.0.5" } } }] };
    expect(() => buildDomainXml(old)).toThrow(/nwfilter/);
  });

  it("tap names fit IFNAMSIZ and refuse IDs that would not", () => {
    expect(tapName("ins-zzzzzzzz", 12)).toBe("cdhzzzzzzzz12");
    expect(() => tapName("ins-Bad!", 0)).toThrow();
  });
});
