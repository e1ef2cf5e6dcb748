import { describe, expect, it } from "vitest";
import { buildDomainSpec } from "../../../../agent/instances/domain-spec.js";
import type { InstanceRecord } from "../../../../agent/model.js";
import { tapName } from "../../../../agent/network/firewall-types.js";
import { DataPaths } from "../../../../agent/paths.js";
import { buildDomainXml } from "../../../../drivers/libvirt/domain-xml.js";

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
  nics: [
    { mac: "52:54:00:00:00:01", network: "n", ipv4: "10.201.0.5", subnetId: "subnet-a", vpcId: "vpc-a" },
    { mac: "52:54:00:00:00:02", network: "n2", ipv4: "10.202.0.5", subnetId: "subnet-b", vpcId: "vpc-a" },
  ],
  createdTime: "2026-01-01T00:00:00Z",
  launchIndex: 0,
};

describe("a domain's NICs and the firewall", () => {
  it("names every NIC's tap with tapName(), so the firewall's chains exist before the guest starts", () => {
    const spec = buildDomainSpec({ record, virtType: "qemu", paths: new DataPaths("/d"), agentVersion: "t" });
    expect(spec.nics.map((n) => n.targetDev)).toEqual(["cdhabcd12340", "cdhabcd12341"]);
    expect(spec.nics.map((n) => n.targetDev)).toEqual([tapName(record.instanceId, 0), tapName(record.instanceId, 1)]);
    const xml = buildDomainXml(spec);
    expect(xml).toContain('<target dev="cdhabcd12340"/>');
    expect(xml).not.toContain("filterref");
  });

  it("refuses to write an nwfilter reference (clean-traffic is replaced by the agent's nftables tables)", () => {
    const spec = buildDomainSpec({ record, virtType: "qemu", paths: new DataPaths("/d"), agentVersion: "t" });
    const old = { ...spec, nics: [{ ...spec.nics[0]!, filter: { name: "clean-traffic", parameters: { IP: "10.201.0.5" } } }] };
    expect(() => buildDomainXml(old)).toThrow(/nwfilter/);
  });

  it("tap names fit IFNAMSIZ and refuse IDs that would not", () => {
    expect(tapName("ins-zzzzzzzz", 12)).toBe("cdhzzzzzzzz12");
    expect(() => tapName("ins-Bad!", 0)).toThrow();
  });
});
