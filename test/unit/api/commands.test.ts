import { describe, expect, it } from "vitest";
import { parse, refusal } from "../../support/parse.js";
import { ACTIONS } from "../../../agent/api/commands.js";
import { ERROR_CODES, isKnownCode } from "../../../agent/errors.js";


const IDS = ["ins-abcd1234", "ins-efgh5678"];
const many = (n: number) => Array.from({ length: n }, (_, i) => `ins-${String(i).padStart(8, "0")}`);

describe("parseCommand", () => {
  it("refuses an unknown action with InvalidAction", () => {
    expect(refusal("DescribeRegions", {}).code).toBe("InvalidAction");
    expect(refusal("toString", {}).code).toBe("InvalidAction");
  });

  it("knows exactly the actions of the host agent", () => {
    expect([...ACTIONS].sort()).toEqual(
      [
        "DeleteImages",
        "DescribeHosts",
        "ModifyHostsAttribute",
        "DescribeImages",
        "DescribeInstances",
        "DescribeInstancesStatus",
        "ImportImage",
        "RebootInstances",
        "RunInstances",
        "StartInstances",
        "StopInstances",
        "TerminateInstances",
        "ImportKeyPair",
        "CreateKeyPair",
        "DescribeKeyPairs",
        "DeleteKeyPairs",
        "AssociateInstancesKeyPairs",
        "DisassociateInstancesKeyPairs",
        "ResetInstancesPassword",
        "CreateDisks",
        "AttachDisks",
        "DetachDisks",
        "DescribeDisks",
        "TerminateDisks",
        "ResizeInstanceDisks",
        "CreateSnapshot",
        "DescribeSnapshots",
        "DeleteSnapshots",
        "ApplySnapshot",
        "ResetInstance",
        "CreateImage",
        "CloneInstance",
        "EnterRescueMode",
        "ExitRescueMode",
        "InstanceAttachISO",
        "InstanceDetachISO",
        "ModifyInstancesAttribute",
        "ResetInstancesType",
        "ModifyInstancesVpcAttribute",
        "ResetInstancesInternetMaxBandwidth",
        "DescribeInstancesModification",
        "CreateSecurityGroup",
        "CreateSecurityGroupWithPolicies",
        "DescribeSecurityGroups",
        "DeleteSecurityGroup",
        "CreateSecurityGroupPolicies",
        "DescribeSecurityGroupPolicies",
        "ModifySecurityGroupPolicies",
        "ReplaceSecurityGroupPolicy",
        "DeleteSecurityGroupPolicies",
        "DescribeSecurityGroupAssociationStatistics",
        "DescribeSecurityGroupLimits",
        "AssociateSecurityGroups",
        "DisassociateSecurityGroups",
        // VPC 2017-03-12: elastic network interfaces (agent/api/schemas-eni.ts)
        "CreateNetworkInterface",
        "DescribeNetworkInterfaces",
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "MigratePrivateIpAddress",
        "ModifyNetworkInterfaceAttribute",
        "DescribeVpcTaskResult",
        // This agent's extensions: alarms and the self-check (agent/api/schemas-monitor-ops.ts)
        "ModifyAlarmPolicies",
        "DescribeAlarmPolicies",
        "CreateInstanceDiagnosticReports",
        "DescribeInstanceDiagnosticReports",
        // The console (agent/api/schemas-console.ts)
        "DescribeInstanceVncUrl",
        // This agent's extensions: the serial console (agent/api/schemas-serial.ts)
        "DescribeInstanceSerialConsoleUrl",
        "DescribeInstanceSerialLog",
        // This agent's extensions: migration between hosts (agent/api/schemas-migration.ts)
        "MigrateInstances",
        "CancelMigrateInstances",
        "MigrationPeerStep",
        // Monitor 2018-07-24 (agent/api/schemas-monitor.ts)
        "GetMonitorData",
        "DescribeBaseMetrics",
      ].sort(),
    );
  });

  it("refuses a body that is not an object", () => {
    expect(refusal("DescribeInstances", [])).toMatchObject({ code: "InvalidParameter" });
  });
});

describe("DescribeInstances", () => {
  it("defaults Offset 0 and Limit 20", () => {
    expect(parse("DescribeInstances", {})).toEqual({ offset: 0, limit: 20, filters: [] });
  });

  it("dedupes InstanceIds and checks their format", () => {
    expect(parse("DescribeInstances", { InstanceIds: [IDS[0], IDS[0], IDS[1]] })).toMatchObject({ instanceIds: IDS });
    const r = refusal("DescribeInstances", { InstanceIds: ["ins-1122"] });
    expect(r.code).toBe("InvalidInstanceId.Malformed");
    expect(r.message).toContain("`InstanceIds.0`");
  });

  it("refuses more than 100 InstanceIds with InvalidParameterValue.LimitExceeded", () => {
    expect(parse("DescribeInstances", { InstanceIds: many(100) })).toMatchObject({ limit: 20 });
    expect(refusal("DescribeInstances", { InstanceIds: many(101) })).toMatchObject({ code: "InvalidParameterValue.LimitExceeded" });
  });

  it("types filters and refuses unknown filter names with InvalidFilter", () => {
    expect(parse("DescribeInstances", { Filters: [{ Name: "instance-state", Values: ["RUNNING", "STOPPED"] }] })).toMatchObject({
      filters: [{ name: "instance-state", values: ["RUNNING", "STOPPED"] }],
    });
    const r = refusal("DescribeInstances", { Filters: [{ Name: "dedicated-cluster-id", Values: ["x"] }] });
    expect(r.code).toBe("InvalidFilter");
    expect(r.message).toContain("`Filters.0.Name`");
    expect(refusal("DescribeInstances", { Filters: [{ Name: "image-id", Values: [] }] }).code).toBe("InvalidParameterValue");
    expect(refusal("DescribeInstances", { Filters: [{ Name: "image-id", Values: [""] }] }).message).toContain("`Filters.0.Values.0`");
    expect(refusal("DescribeInstances", { Filters: [{ Name: "image-id" }] }).code).toBe("MissingParameter");
  });

  it("refuses InstanceIds together with Filters", () => {
    expect(refusal("DescribeInstances", { InstanceIds: IDS, Filters: [{ Name: "instance-id", Values: IDS }] }).code).toBe(
      "InvalidParameterCombination",
    );
  });

  it("checks Offset and Limit ranges", () => {
    expect(parse("DescribeInstances", { Offset: 5, Limit: 100 })).toMatchObject({ offset: 5, limit: 100 });
    expect(refusal("DescribeInstances", { Limit: 0 })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refusal("DescribeInstances", { Limit: 101 }).message).toContain("`Limit`");
    expect(refusal("DescribeInstances", { Offset: -1 }).message).toContain("`Offset`");
  });
});

describe("lifecycle actions", () => {
  it("DescribeInstancesStatus takes InstanceIds and paging", () => {
    expect(parse("DescribeInstancesStatus", { InstanceIds: IDS, Limit: 5 })).toEqual({ instanceIds: IDS, offset: 0, limit: 5 });
    expect(refusal("DescribeInstancesStatus", { Filters: [] }).code).toBe("InvalidParameter");
  });

  it("StartInstances requires 1..100 InstanceIds", () => {
    expect(parse("StartInstances", { InstanceIds: IDS })).toEqual({ instanceIds: IDS });
    expect(refusal("StartInstances", {})).toEqual({ code: "MissingParameter", message: "missing parameter `InstanceIds`" });
    expect(refusal("StartInstances", { InstanceIds: [] }).code).toBe("InvalidParameterValue");
    expect(refusal("StartInstances", { InstanceIds: many(101) }).code).toBe("InvalidParameterValue.LimitExceeded");
  });

  it("StopInstances normalises to a stop type", () => {
    const stop = (body: Record<string, unknown>) => parse("StopInstances", { InstanceIds: IDS, ...body });
    expect(stop({})).toMatchObject({ stopType: "SOFT", dryRun: false });
    expect(stop({ ForceStop: true })).toMatchObject({ stopType: "SOFT_FIRST" });
    expect(stop({ StopType: "HARD" })).toMatchObject({ stopType: "HARD" });
    expect(stop({ StopType: "HARD", ForceStop: true })).toMatchObject({ stopType: "HARD" });
    expect(stop({ StopType: "SOFT", ForceStop: false })).toMatchObject({ stopType: "SOFT" });
    expect(stop({ StoppedMode: "KEEP_CHARGING" })).toMatchObject({ stopType: "SOFT", stoppedMode: "KEEP_CHARGING" });
    expect(stop({ StoppedMode: "HARD" })).toMatchObject({ stopType: "HARD" });
    expect(stop({ DryRun: true })).toMatchObject({ dryRun: true });
  });

  it("StopInstances refuses contradictions and unknown stop types", () => {
    const stop = (body: Record<string, unknown>) => refusal("StopInstances", { InstanceIds: IDS, ...body });
    expect(stop({ StopType: "SOFT", ForceStop: true }).code).toBe("InvalidParameterCombination");
    expect(stop({ StopType: "HARD", ForceStop: false }).code).toBe("InvalidParameterCombination");
    expect(stop({ StopType: "SOFT", StoppedMode: "HARD" }).code).toBe("InvalidParameterCombination");
    const r = stop({ StopType: "GENTLE" });
    expect(r.code).toBe("InvalidParameterValue");
    expect(r.message).toContain("`StopType`");
  });

  it("RebootInstances normalises to a mode and refuses ForceReboot with StopType", () => {
    expect(parse("RebootInstances", { InstanceIds: IDS })).toEqual({ instanceIds: IDS, mode: "SOFT" });
    expect(parse("RebootInstances", { InstanceIds: IDS, ForceReboot: true })).toEqual({ instanceIds: IDS, mode: "SOFT_FIRST" });
    expect(parse("RebootInstances", { InstanceIds: IDS, StopType: "HARD" })).toEqual({ instanceIds: IDS, mode: "HARD" });
    expect(refusal("RebootInstances", { InstanceIds: IDS, ForceReboot: false, StopType: "HARD" }).code).toBe(
      "InvalidParameterCombination",
    );
  });

  it("TerminateInstances takes DryRun and ReleaseAddress", () => {
    expect(parse("TerminateInstances", { InstanceIds: IDS, DryRun: true })).toEqual({ instanceIds: IDS, dryRun: true, releaseAddress: false });
    expect(refusal("TerminateInstances", { InstanceIds: IDS, RemainTime: 0 })).toEqual({
      code: "InvalidParameter",
      message: "unknown parameter `RemainTime`",
    });
  });
});

describe("image and host actions", () => {
  const importBody = {
    Architecture: "x86_64",
    OsType: "Debian",
    OsVersion: "12",
    ImageUrl: "file:///var/lib/images/debian.qcow2",
    ImageName: "debian-12",
  };

  it("ImportImage types a file:// import with defaults", () => {
    expect(parse("ImportImage", importBody)).toEqual({
      architecture: "x86_64",
      osType: "Debian",
      osVersion: "12",
      imageUrl: "file:///var/lib/images/debian.qcow2",
      source: { kind: "file", path: "/var/lib/images/debian.qcow2" },
      imageName: "debian-12",
      imageDescription: "",
      dryRun: false,
      force: false,
      bootMode: "Legacy BIOS",
      tags: [],
    });
    expect(parse("ImportImage", { ...importBody, ImageUrl: "https://mirror.example/d.qcow2", BootMode: "UEFI" })).toMatchObject({
      source: { kind: "http", href: "https://mirror.example/d.qcow2" },
      bootMode: "UEFI",
    });
  });

  it("ImportImage takes image tags; cdh:config-drive must name a drive the agent makes", () => {
    const spec = (tags: unknown[], resourceType = "image") => ({ ...importBody, TagSpecification: [{ ResourceType: resourceType, Tags: tags }] });
    expect(parse("ImportImage", spec([{ Key: "cdh:config-drive", Value: "nocloud" }, { Key: "team", Value: "" }]))).toMatchObject({
      tags: [
        { key: "cdh:config-drive", value: "nocloud" },
        { key: "team", value: "" },
      ],
    });
    const bad = refusal("ImportImage", spec([{ Key: "cdh:config-drive", Value: "iso" }]));
    expect(bad.code).toBe("InvalidParameterValue");
    expect(bad.message).toContain("`TagSpecification.0.Tags.0.Value`");
    expect(bad.message).toContain("config-2, nocloud");
    expect(refusal("ImportImage", spec([], "instance")).message).toContain("`TagSpecification.0.ResourceType`");
    expect(refusal("ImportImage", spec([{ Key: "a", Value: "1" }, { Key: "a", Value: "2" }])).message).toContain("`TagSpecification.0.Tags.1.Key`");
    expect(refusal("ImportImage", spec([{ Key: "", Value: "1" }])).message).toContain("`TagSpecification.0.Tags.0.Key`");
    expect(refusal("ImportImage", spec([{ Key: "k", Value: "v".repeat(256) }])).message).toContain("`TagSpecification.0.Tags.0.Value`");
  });

  it("ImportImage refuses other URLs with InvalidParameter.InvalidParameterUrlError", () => {
    for (const url of ["ftp://x/y", "file://host/path", "file:relative", "not a url", "/abs/path", "http://"]) {
      const r = refusal("ImportImage", { ...importBody, ImageUrl: url });
      expect(r.code).toBe("InvalidParameter.InvalidParameterUrlError");
      expect(r.message).toContain("`ImageUrl`");
    }
  });

  it("ImportImage checks architecture, name length and required fields", () => {
    expect(refusal("ImportImage", { ...importBody, Architecture: "riscv64" }).message).toContain("`Architecture`");
    expect(refusal("ImportImage", { ...importBody, ImageName: "n".repeat(61) }).code).toBe("InvalidParameterValue.TooLong");
    expect(refusal("ImportImage", { ...importBody, ImageName: "" }).code).toBe("InvalidParameterValue");
    const { OsVersion: _omitted, ...noVersion } = importBody;
    expect(refusal("ImportImage", noVersion)).toEqual({ code: "MissingParameter", message: "missing parameter `OsVersion`" });
    expect(refusal("ImportImage", { ...importBody, PublicImage: true }).code).toBe("InvalidParameterValue");
  });

  it("DescribeImages takes ImageIds or Filters, not both", () => {
    expect(parse("DescribeImages", { ImageIds: ["img-abcd1234"] })).toEqual({ imageIds: ["img-abcd1234"], filters: [], offset: 0, limit: 20 });
    expect(parse("DescribeImages", { Filters: [{ Name: "image-type", Values: ["PRIVATE_IMAGE"] }] })).toMatchObject({
      filters: [{ name: "image-type", values: ["PRIVATE_IMAGE"] }],
    });
    expect(refusal("DescribeImages", { ImageIds: ["img-1"] }).code).toBe("InvalidImageId.Malformed");
    expect(refusal("DescribeImages", { Filters: [{ Name: "platform", Values: ["x"] }] }).code).toBe("InvalidFilter");
    expect(
      refusal("DescribeImages", { ImageIds: ["img-abcd1234"], Filters: [{ Name: "image-id", Values: ["img-abcd1234"] }] }).code,
    ).toBe("InvalidParameterCombination");
  });

  it("DeleteImages requires ImageIds", () => {
    expect(parse("DeleteImages", { ImageIds: ["img-abcd1234"] })).toEqual({ imageIds: ["img-abcd1234"], dryRun: false });
    expect(refusal("DeleteImages", {}).code).toBe("MissingParameter");
  });

  it("DescribeHosts takes host filters and paging", () => {
    expect(parse("DescribeHosts", { Filters: [{ Name: "host-id", Values: ["host-abcd1234"] }], Limit: 1 })).toEqual({
      filters: [{ name: "host-id", values: ["host-abcd1234"] }],
      offset: 0,
      limit: 1,
    });
    expect(refusal("DescribeHosts", { Filters: [{ Name: "instance-id", Values: ["x"] }] }).code).toBe("InvalidFilter");
  });
});

describe("error catalogue", () => {
  it("describes every code with one line of text", () => {
    for (const [code, text] of Object.entries(ERROR_CODES)) {
      expect(isKnownCode(code)).toBe(true);
      expect(text.length).toBeGreaterThan(10);
      expect(text).not.toContain("\n");
    }
    expect(isKnownCode("NoSuchCode")).toBe(false);
    expect(Object.isFrozen(ERROR_CODES)).toBe(true);
  });
});
