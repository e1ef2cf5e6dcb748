import { describe, expect, it } from "vitest";
import { parseCommand } from "../../../../agent/api/commands.js";
import { ApiError } from "../../../../agent/errors.js";

function refusal(action: string, body: unknown): { code: string; message: string } {
  try {
    parseCommand(action, body);
  } catch (error) {
    if (error instanceof ApiError) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error("accepted");
}

describe("the VPC security-group schemas", () => {
  it("DescribeSecurityGroups takes Offset and Limit as strings or numbers, with defaults", () => {
    expect(parseCommand("DescribeSecurityGroups", { Offset: "5", Limit: "7" }).params).toMatchObject({ offset: 5, limit: 7, orderDirection: "ASC" });
    expect(parseCommand("DescribeSecurityGroups", { Offset: 5, Limit: 7 }).params).toMatchObject({ offset: 5, limit: 7 });
    expect(parseCommand("DescribeSecurityGroups", {}).params).toMatchObject({ offset: 0, limit: 20, filters: [] });
    expect(refusal("DescribeSecurityGroups", { Limit: "ten" })).toMatchObject({ code: "InvalidParameterValue.Malformed", message: expect.stringContaining("`Limit`") });
    expect(refusal("DescribeSecurityGroups", { Limit: "0" })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refusal("DescribeSecurityGroups", { Limit: 101 })).toMatchObject({ code: "InvalidParameterValue.LimitExceeded" });
    expect(refusal("DescribeSecurityGroups", { SecurityGroupIds: ["sg-abcd1234"], Filters: [{ Name: "tag-key", Values: ["a"] }] }).code).toBe("InvalidParameter.Coexist");
    expect(refusal("DescribeSecurityGroups", { OrderField: "Name" }).message).toContain("`OrderField`");
  });

  it("IDs: VPC actions say InvalidParameterValue.Malformed, CVM binding actions InvalidSgId.Malformed", () => {
    expect(refusal("DeleteSecurityGroup", { SecurityGroupId: "sg-ABCD1234" })).toMatchObject({ code: "InvalidParameterValue.Malformed", message: expect.stringContaining("`SecurityGroupId`") });
    expect(refusal("AssociateSecurityGroups", { SecurityGroupIds: ["sg-1"], InstanceIds: ["ins-abcd1234"] })).toMatchObject({ code: "InvalidSgId.Malformed" });
    expect(refusal("RunInstances", { InstanceType: "CDH_1C1G", ImageId: "img-abcd1234", SecurityGroupIds: ["default"] })).toMatchObject({
      code: "InvalidSgId.Malformed",
      message: expect.stringContaining("`SecurityGroupIds.0`"),
    });
    expect(refusal("ModifyInstancesAttribute", { InstanceIds: ["ins-abcd1234"], SecurityGroups: [] }).message).toContain("`SecurityGroups`");
    expect(refusal("ModifyInstancesAttribute", { InstanceIds: ["ins-abcd1234"], SecurityGroups: ["sg-abcd1234", "sg-abcd1234"] }).message).toContain("twice");
  });

  it("the binding actions take exactly one group and at most 100 instances", () => {
    expect(parseCommand("AssociateSecurityGroups", { SecurityGroupIds: ["sg-abcd1234"], InstanceIds: ["ins-abcd1234", "ins-abcd1234"] }).params).toEqual({
      securityGroupId: "sg-abcd1234",
      instanceIds: ["ins-abcd1234"],
    });
    expect(refusal("DisassociateSecurityGroups", { SecurityGroupIds: ["sg-abcd1234", "sg-efgh5678"], InstanceIds: ["ins-abcd1234"] }).code).toBe("InvalidParameterValue");
    const many = Array.from({ length: 101 }, (_v, i) => `ins-${String(i).padStart(8, "0")}`);
    expect(refusal("AssociateSecurityGroups", { SecurityGroupIds: ["sg-abcd1234"], InstanceIds: many }).code).toBe("InvalidParameterValue.LimitExceeded");
  });

  it("a policy set keeps Version as a string, takes Port as a number, reads echoed output fields, refuses unknown ones", () => {
    const p = parseCommand("CreateSecurityGroupPolicies", {
      SecurityGroupId: "sg-abcd1234",
      SecurityGroupPolicySet: { Version: 3, Ingress: [{ Protocol: "tcp", Port: 22, CidrBlock: "0.0.0.0/0", Action: "accept", ModifyTime: "x" }], PolicyStatistics: { IngressIPv4TotalCount: 1 } },
    }).params as { policySet: { Version?: string; Ingress?: Array<{ Port?: string }> } };
    expect(p.policySet.Version).toBe("3");
    expect(p.policySet.Ingress![0]!.Port).toBe("22");
    expect(refusal("CreateSecurityGroupPolicies", { SecurityGroupId: "sg-abcd1234", SecurityGroupPolicySet: { Ingress: [{ Protocol: "TCP", Bogus: 1 }] } })).toMatchObject({
      code: "InvalidParameter",
      message: "unknown parameter `SecurityGroupPolicySet.Ingress.0.Bogus`",
    });
  });

  it("CreateSecurityGroup: name and description lengths, project 0 only (string or number), tags", () => {
    expect(parseCommand("CreateSecurityGroup", { GroupName: "web", GroupDescription: "", ProjectId: "0", Tags: [{ Key: "env" }] }).params).toEqual({
      groupName: "web",
      groupDescription: "",
      tags: [{ key: "env", value: "" }],
    });
    expect(refusal("CreateSecurityGroup", { GroupName: "x".repeat(61), GroupDescription: "" }).code).toBe("InvalidParameterValue.TooLong");
    expect(refusal("CreateSecurityGroup", { GroupName: "x", GroupDescription: "d".repeat(101) }).code).toBe("InvalidParameterValue.TooLong");
    expect(refusal("CreateSecurityGroup", { GroupName: "x", GroupDescription: "", ProjectId: 5 }).message).toContain("`ProjectId`");
    expect(refusal("CreateSecurityGroup", { GroupName: "x", GroupDescription: "", Tags: [{ Key: "a" }, { Key: "a" }] }).code).toBe("InvalidParameterValue.Duplicate");
    expect(refusal("CreateSecurityGroup", { GroupDescription: "" })).toMatchObject({ code: "MissingParameter", message: "missing parameter `GroupName`" });
  });
});
