import { describe, expect, it } from "vitest";
import { cvmCodeOf } from "../../../agent/api/error-map.js";
import { DomainError } from "../../../agent/core/errors.js";
import { allocateAddress, resolveSubnet, type Subnet } from "../../../agent/network/subnets.js";

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

/** The domain error `run` raises, and the CVM code the API edge answers it with. */
function refusal(run: () => unknown): { kind: string; code: string } {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(DomainError);
    return { kind: (error as DomainError).kind, code: cvmCodeOf(error) };
  }
  throw new Error("no refusal");
}

describe("subnets raise domain errors, answered with the CVM network codes", () => {
  it("refuses requested addresses that are malformed, outside the subnet, the gateway or taken", () => {
    expect(refusal(() => allocateAddress(subnet, new Set(), "10.9.0.x"))).toEqual({ kind: "AddressMalformed", code: "InvalidParameter.InvalidIpFormat" });
    expect(refusal(() => allocateAddress(subnet, new Set(), "10.9.1.2"))).toEqual({ kind: "AddressNotInSubnet", code: "VpcAddrNotInSubNet" });
    expect(refusal(() => allocateAddress(subnet, new Set(), "10.9.0.1"))).toEqual({ kind: "AddressNotInSubnet", code: "VpcAddrNotInSubNet" });
    expect(refusal(() => allocateAddress(subnet, new Set(["10.9.0.3"]), "10.9.0.3"))).toEqual({ kind: "AddressInUse", code: "VpcIpIsUsed" });
    expect(allocateAddress(subnet, new Set(["10.9.0.2"]), "10.9.0.3")).toBe("10.9.0.3");
  });

  it("says when the subnet is full", () => {
    const all = new Set(["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
    expect(allocateAddress(subnet, new Set([...all].slice(1)))).toBe("10.9.0.2");
    expect(refusal(() => allocateAddress(subnet, all))).toEqual({ kind: "NoRoom", code: "ResourceInsufficient.SpecifiedInstanceType" });
  });

  it("refuses an unknown subnet and a subnet of another VPC", () => {
    expect(refusal(() => resolveSubnet([subnet], { vpcId: "vpc-a", subnetId: "subnet-b" }))).toEqual({ kind: "SubnetNotFound", code: "InvalidParameterValue.SubnetNotExist" });
    expect(refusal(() => resolveSubnet([subnet], { vpcId: "vpc-b", subnetId: "subnet-a" }))).toEqual({ kind: "SubnetNotInVpc", code: "InvalidParameterValue.VpcIdSubnetIdNotMatch" });
    expect(resolveSubnet([subnet], { vpcId: "vpc-a", subnetId: "subnet-a" })).toBe(subnet);
  });
});
