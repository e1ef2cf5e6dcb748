import { describe, expect, it } from "vitest";
import { refusal as parseRefusal } from "../../support/parse.js";
import { expandInstanceNames, parseCommand, type RunInstancesParams } from "../../../agent/api/commands.js";

const BASE = { InstanceType: "CDH_2C4G", ImageId: "img-abcd1234" };

function run(extra: Record<string, unknown> = {}): RunInstancesParams {
  const command = parseCommand("RunInstances", { ...BASE, ...extra });
  if (command.action !== "RunInstances") throw new Error("wrong action");
  return command.params;
}

function refusal(body: Record<string, unknown>, action = "RunInstances"): { code: string; message: string } {
  return parseRefusal(action, body);
}

function refused(extra: Record<string, unknown>) {
  return refusal({ ...BASE, ...extra });
}

describe("RunInstances parsing", () => {
  it("applies the defaults to a minimal request", () => {
    expect(run()).toEqual({
      instanceChargeType: "CDHPAID",
      placement: {},
      instanceType: "CDH_2C4G",
      cpu: 2,
      memoryGiB: 4,
      imageId: "img-abcd1234",
      systemDisk: { diskType: "LOCAL_BASIC", diskSizeGiB: 50, diskSizeGiven: false },
      dataDisks: [],
      instanceCount: 1,
      dryRun: false,
      disableApiTermination: false,
      tags: [],
    });
  });

  it("types a full request", () => {
    const p = run({
      InstanceChargeType: "CDHPAID",
      Placement: { Zone: "ap-guangzhou-3", ProjectId: 0, HostId: "host-abc12345" },
      SystemDisk: { DiskType: "LOCAL_SSD", DiskSize: 20 },
      DataDisks: [{ DiskSize: 10, DeleteWithInstance: false }],
      VirtualPrivateCloud: { VpcId: "vpc-1", SubnetId: "subnet-1", PrivateIpAddresses: ["10.0.0.5"] },
      InstanceCount: 2,
      InstanceName: "web_{R:1}",
      HostName: "web-1.example",
      LoginSettings: { KeyIds: ["skey-abcd1234"] },
      UserData: Buffer.from("#!/bin/sh\necho hi\n").toString("base64"),
      ClientToken: "token-1",
      DryRun: true,
      EnhancedService: { SecurityService: { Enabled: false } },
      SecurityGroupIds: ["sg-abcd1234", "sg-efgh5678"],
      InternetAccessible: { InternetMaxBandwidthOut: 0 },
    });
    expect(p.placement).toEqual({ zone: "ap-guangzhou-3", projectId: 0, hostId: "host-abc12345" });
    expect(p.systemDisk).toEqual({ diskType: "LOCAL_SSD", diskSizeGiB: 20, diskSizeGiven: true });
    expect(p.dataDisks).toEqual([{ diskType: "LOCAL_BASIC", diskSizeGiB: 10, deleteWithInstance: false }]);
    expect(p.virtualPrivateCloud).toEqual({ vpcId: "vpc-1", subnetId: "subnet-1", privateIpAddresses: ["10.0.0.5"], asVpcGateway: false });
    expect(p.loginSettings).toEqual({ keyIds: ["skey-abcd1234"], keepImageLogin: false });
    expect(p.securityGroupIds).toEqual(["sg-abcd1234", "sg-efgh5678"]);
    expect(p.userDataBytes?.toString()).toBe("#!/bin/sh\necho hi\n");
    expect(p).toMatchObject({ instanceCount: 2, instanceName: "web_{R:1}", hostName: "web-1.example", clientToken: "token-1", dryRun: true, projectId: 0 });
  });

  it("parses InstanceType into cores and GiB and refuses other shapes with InvalidInstanceType.Malformed", () => {
    expect(run({ InstanceType: "CDH_16C64G" })).toMatchObject({ cpu: 16, memoryGiB: 64 });
    for (const bad of ["S5.LARGE4", "CDH_0C4G", "CDH_2C0G", "CDH_2C4", "cdh_2c4g", "CDH_1.5C4G"]) {
      expect(refused({ InstanceType: bad })).toMatchObject({ code: "InvalidInstanceType.Malformed" });
    }
    expect(refused({ InstanceType: "S5.LARGE4" }).message).toContain("`InstanceType`");
  });

  it("reports missing required fields with MissingParameter naming them", () => {
    expect(refusal({ ImageId: "img-abcd1234" })).toEqual({ code: "MissingParameter", message: "missing parameter `InstanceType`" });
    expect(refusal({ InstanceType: "CDH_1C1G" })).toEqual({ code: "MissingParameter", message: "missing parameter `ImageId`" });
    expect(refused({ VirtualPrivateCloud: { VpcId: "vpc-1" } })).toEqual({
      code: "MissingParameter",
      message: "missing parameter `VirtualPrivateCloud.SubnetId`",
    });
    expect(refused({ DataDisks: [{ DiskType: "LOCAL_BASIC" }] }).message).toBe("missing parameter `DataDisks.0.DiskSize`");
  });

  it("refuses unknown fields with InvalidParameter naming the path", () => {
    expect(refused({ Placement: { Foo: 1 } })).toEqual({ code: "InvalidParameter", message: "unknown parameter `Placement.Foo`" });
    expect(refused({ Bogus: true })).toEqual({ code: "InvalidParameter", message: "unknown parameter `Bogus`" });
  });

  it("refuses a wrong JSON type with InvalidParameter naming the field and the type", () => {
    expect(refused({ InstanceCount: "2" })).toEqual({ code: "InvalidParameter", message: "`InstanceCount` must be a number, got string" });
    expect(refused({ DryRun: "true" }).message).toBe("`DryRun` must be a boolean, got string");
    expect(refused({ InstanceCount: 1.5 }).message).toContain("`InstanceCount` must be an integer");
  });

  it("accepts only CDHPAID as charge type", () => {
    const r = refused({ InstanceChargeType: "POSTPAID_BY_HOUR" });
    expect(r.code).toBe("InvalidParameterValue");
    expect(r.message).toContain("`InstanceChargeType`");
    expect(r.message).toContain("only CDHPAID on a dedicated host");
  });

  it("checks host and image ID formats", () => {
    expect(refused({ Placement: { HostId: "host-1122" } })).toMatchObject({ code: "InvalidHostId.Malformed" });
    expect(refused({ Placement: { HostId: "host-1122" } }).message).toContain("`Placement.HostId`");
    expect(refused({ ImageId: "img-ABCD1234" })).toMatchObject({ code: "InvalidImageId.Malformed" });
  });

  it("checks disk types and sizes", () => {
    expect(refused({ SystemDisk: { DiskType: "CLOUD_SSD" } })).toMatchObject({ code: "InvalidParameterValue" });
    expect(refused({ SystemDisk: { DiskSize: 0 } })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refused({ SystemDisk: { DiskSize: 16385 } }).message).toContain("`SystemDisk.DiskSize`");
    expect(run({ SystemDisk: { DiskSize: 16384 } }).systemDisk.diskSizeGiB).toBe(16384);
  });

  it("limits InstanceCount to 1..100 with InvalidParameterValue.Range", () => {
    expect(refused({ InstanceCount: 0 })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refused({ InstanceCount: 101 }).message).toContain("`InstanceCount`");
    expect(run({ InstanceCount: 100 }).instanceCount).toBe(100);
  });

  it("limits InstanceName to 60 characters and ClientToken to 64 ASCII characters", () => {
    expect(run({ InstanceName: "x".repeat(60) }).instanceName).toHaveLength(60);
    expect(refused({ InstanceName: "x".repeat(61) })).toMatchObject({ code: "InvalidInstanceName.TooLong" });
    expect(run({ ClientToken: "t".repeat(64) }).clientToken).toHaveLength(64);
    expect(refused({ ClientToken: "t".repeat(65) })).toMatchObject({ code: "InvalidClientToken.TooLong" });
    expect(refused({ ClientToken: "tökén" })).toMatchObject({ code: "InvalidParameterValue" });
  });

  it("applies the Linux HostName rules, naming the rule broken", () => {
    for (const good of ["ab", "web-1", "a.b.c", "Host1.example-2", "x".repeat(31)]) expect(run({ HostName: good }).hostName).toBe(good);
    const cases: Array<[string, string]> = [
      ["a", "2 to 31"],
      ["x".repeat(32), "2 to 31"],
      ["-web", "start or end"],
      ["web.", "start or end"],
      ["we..b", "'..'"],
      ["we--b", "'--'"],
      ["web.-1", "'.-'"],
      ["web-.1", "'-.'"],
      ["12345", "all digits"],
      ["1.2", "all digits"],
      ["web_1", "letters, digits"],
    ];
    for (const [name, rule] of cases) {
      const r = refused({ HostName: name });
      expect(r.code).toBe("InvalidParameterValue");
      expect(r.message).toContain("`HostName`");
      expect(r.message).toContain(rule);
    }
  });

  it("refuses Password with KeyIds, and KeepImageLogin with either", () => {
    expect(refused({ LoginSettings: { Password: "Secret-123", KeyIds: ["skey-abcd1234"] } })).toMatchObject({
      code: "InvalidParameterCombination",
    });
    expect(refused({ LoginSettings: { Password: "Secret-123", KeepImageLogin: "TRUE" } })).toMatchObject({
      code: "InvalidParameterCombination",
    });
    expect(run({ LoginSettings: { KeepImageLogin: "TRUE" } }).loginSettings).toEqual({ keepImageLogin: true });
    expect(refused({ LoginSettings: { KeyIds: ["key-1"] } })).toMatchObject({ code: "InvalidKeyPairId.Malformed" });
  });

  it("checks UserData: strict base64 and at most 16384 decoded bytes", () => {
    expect(run({ UserData: Buffer.alloc(16384, 1).toString("base64") }).userDataBytes).toHaveLength(16384);
    const tooBig = refused({ UserData: Buffer.alloc(16385, 1).toString("base64") });
    expect(tooBig).toMatchObject({ code: "InvalidParameterValue" });
    expect(tooBig.message).toContain("`UserData`");
    for (const bad of ["abc", "ab=c", "a b=", "YWJj*", "YQ", "YQ===", ""]) {
      expect(refused({ UserData: bad }).message).toContain("`UserData` must be base64");
    }
  });

  it("takes InternetAccessible.InternetMaxBandwidthOut from 0 to 1000 Mbit/s (the launch checks the subnet), never a public IP", () => {
    const none = run({ InternetAccessible: { InternetMaxBandwidthOut: 0, InternetChargeType: "TRAFFIC_POSTPAID_BY_HOUR" } });
    expect(none.imageId).toBe("img-abcd1234");
    expect(none.internetMaxBandwidthOut).toBeUndefined();
    expect(run({ InternetAccessible: { InternetMaxBandwidthOut: 10 } }).internetMaxBandwidthOut).toBe(10);
    expect(refused({ InternetAccessible: { InternetMaxBandwidthOut: 1001 } }).code).toBe("InvalidParameterValue.Range");
    const ip = refused({ InternetAccessible: { InternetMaxBandwidthOut: 10, PublicIpAssigned: true } });
    expect(ip.code).toBe("InvalidParameterValue");
    expect(ip.message).toContain("no public network on this host");
  });

  it("refuses CVM fields this agent does not implement with InvalidParameterValue", () => {
    expect(refused({ InstanceChargePrepaid: { Period: 1 } })).toEqual({
      code: "InvalidParameterValue",
      message: "`InstanceChargePrepaid` is not supported by this host agent",
    });
    expect(refused({ LaunchTemplate: { LaunchTemplateId: "lt-1" } }).code).toBe("InvalidParameterValue");
  });
});

describe("expandInstanceNames", () => {
  it("counts up from the {R:n} template", () => {
    expect(expandInstanceNames("server_{R:3}", 3)).toEqual(["server_3", "server_4", "server_5"]);
    expect(expandInstanceNames("server_{R:3}", 1)).toEqual(["server_3"]);
    expect(expandInstanceNames("a{R:1}-b{R:10}", 2)).toEqual(["a1-b10", "a2-b11"]);
  });

  it("appends 1..n without a template when more than one instance is made", () => {
    expect(expandInstanceNames("server_", 2)).toEqual(["server_1", "server_2"]);
    expect(expandInstanceNames("server", 1)).toEqual(["server"]);
  });

  it("drops the part after a dot, as the seed says", () => {
    expect(expandInstanceNames("web.example.com", 1)).toEqual(["web"]);
  });
});
