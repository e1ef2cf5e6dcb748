import { describe, expect, it } from "vitest";
import { parseModifyInstancesVpcAttribute } from "../../../agent/api/schemas-vpc-attribute.js";
import { moveProblem, readdressed } from "../../../agent/instances/vpc-attribute.js";
import type { InstanceRecord } from "../../../agent/model.js";
import type { Subnet } from "../../../agent/network/subnets.js";
import { refusal } from "../../support/parse.js";

const A: Subnet = { subnetId: "subnet-a", vpcId: "vpc-a", network: "net-a", bridge: "br-a", address: "10.1.0.0", prefixLength: 24, gateway: "10.1.0.1", dns: [] };
const B: Subnet = { ...A, subnetId: "subnet-b", network: "net-b", bridge: "br-b", address: "10.2.0.0", gateway: "10.2.0.1" };

function record(nics: InstanceRecord["nics"], configGeneration?: number): InstanceRecord {
  return { instanceId: "ins-abcd1234", nics, ...(configGeneration ? { configGeneration } : {}) } as unknown as InstanceRecord;
}
const PRIMARY = { mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.1.0.5", subnetId: "subnet-a", vpcId: "vpc-a", eniId: "eni-aaaa0001", slot: 0 };

describe("ModifyInstancesVpcAttribute's rules", () => {
  it("readdressed() changes only the primary NIC's address and subnet, keeps MAC, ENI and slot, and bumps the generation", () => {
    const r = readdressed(record([PRIMARY, { mac: "52:54:00:00:00:02", network: "net-a", ipv4: "10.1.0.9", subnetId: "subnet-a" }], 4), A, "10.1.0.7");
    expect(r.nics[0]).toEqual({ ...PRIMARY, ipv4: "10.1.0.7" });
    expect(r.nics[1]!.ipv4).toBe("10.1.0.9");
    expect(r.configGeneration).toBe(5);
  });

  it("readdressed() onto another subnet takes its network and VPC", () => {
    const r = readdressed(record([PRIMARY]), B, "10.2.0.7");
    expect(r.nics[0]).toMatchObject({ ipv4: "10.2.0.7", subnetId: "subnet-b", network: "net-b", mac: PRIMARY.mac, eniId: PRIMARY.eniId });
    expect(r.configGeneration).toBe(2);
  });

  it("moveProblem() allows the same subnet always, and another one only without ENIs or secondary addresses", () => {
    expect(moveProblem(record([PRIMARY, { ...PRIMARY, mac: "52:54:00:00:00:02" }]), A)).toBeNull();
    expect(moveProblem(record([PRIMARY]), B)).toBeNull();
    expect(moveProblem(record([PRIMARY, { ...PRIMARY, mac: "52:54:00:00:00:02" }]), B)).toMatch(/elastic network interface/);
    expect(moveProblem(record([{ ...PRIMARY, secondaryIpv4s: ["10.1.0.6"] }]), B)).toMatch(/secondary addresses/);
  });

  it("parses the request with ForceStop true by default, and refuses malformed IDs and addresses with the API's codes", () => {
    expect(parseModifyInstancesVpcAttribute({ InstanceIds: ["ins-abcd1234"], VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "subnet-a" } })).toEqual({
      instanceIds: ["ins-abcd1234"],
      vpcId: "vpc-a",
      subnetId: "subnet-a",
      forceStop: true,
    });
    const base = { InstanceIds: ["ins-abcd1234"], VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "subnet-a" } };
    expect(refusal("ModifyInstancesVpcAttribute", { ...base, VirtualPrivateCloud: { VpcId: "vpc_a", SubnetId: "subnet-a" } }).code).toBe("InvalidParameterValue.VpcIdMalformed");
    expect(refusal("ModifyInstancesVpcAttribute", { ...base, VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "sub-a" } }).code).toBe("InvalidParameterValue.SubnetIdMalformed");
    expect(refusal("ModifyInstancesVpcAttribute", { ...base, VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "subnet-a", PrivateIpAddresses: ["10.1.0.256"] } }).code).toBe(
      "InvalidParameterValue.IPAddressMalformed",
    );
    expect(refusal("ModifyInstancesVpcAttribute", { ...base, VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "subnet-a", PrivateIpAddresses: ["10.1.0.6", "10.1.0.7"] } }).code).toBe(
      "InvalidParameterValue",
    );
    expect(refusal("ModifyInstancesVpcAttribute", { ...base, VirtualPrivateCloud: { VpcId: "vpc-a", SubnetId: "subnet-a", Ipv6AddressCount: 1 } }).code).toBe(
      "UnsupportedOperation.IPv6NotSupportVpcMigrate",
    );
  });
});
