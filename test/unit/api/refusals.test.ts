/**
 * Issue 10 part 4 at the API edge: instance tags, termination protection, placement, and the
 * fields that used to be accepted and dropped, each refused with the CVM code naming it.
 */
import { describe, expect, it } from "vitest";
import { checkPlacement } from "../../../agent/api/placement.js";
import { ApiError } from "../../../agent/errors.js";
import { parse, refusal } from "../../support/parse.js";

const RUN = { InstanceType: "CDH_1C1G", ImageId: "img-abcd1234" };
const tags = (list: Array<{ Key: string; Value: string }>, ResourceType = "instance") => ({ ...RUN, TagSpecification: [{ ResourceType, Tags: list }] });

describe("RunInstances TagSpecification", () => {
  it("gives the instance its tags, in order, across entries", () => {
    const p = parse("RunInstances", {
      ...RUN,
      TagSpecification: [
        { ResourceType: "instance", Tags: [{ Key: "team", Value: "web" }] },
        { ResourceType: "instance", Tags: [{ Key: "env", Value: "" }] },
      ],
    });
    expect(p).toMatchObject({ tags: [{ key: "team", value: "web" }, { key: "env", value: "" }] });
  });

  it("refuses another ResourceType naming it", () => {
    expect(refusal("RunInstances", tags([], "host"))).toMatchObject({ code: "InvalidParameterValue", message: expect.stringContaining("`TagSpecification.0.ResourceType`") });
  });

  it("refuses an empty key, a key over 127 characters or with a control character", () => {
    expect(refusal("RunInstances", tags([{ Key: "", Value: "v" }])).code).toBe("FailedOperation.IllegalTagKey");
    expect(refusal("RunInstances", tags([{ Key: "k".repeat(128), Value: "v" }])).code).toBe("FailedOperation.IllegalTagKey");
    expect(refusal("RunInstances", tags([{ Key: "a\nb", Value: "v" }])).message).toContain("`TagSpecification.0.Tags.0.Key`");
    expect(parse("RunInstances", tags([{ Key: "k".repeat(127), Value: "v" }]))).toMatchObject({ tags: [{ key: "k".repeat(127) }] });
  });

  it("refuses a value over 255 characters", () => {
    expect(refusal("RunInstances", tags([{ Key: "k", Value: "v".repeat(256) }])).code).toBe("FailedOperation.IllegalTagValue");
    expect(parse("RunInstances", tags([{ Key: "k", Value: "v".repeat(255) }]))).toMatchObject({ tags: [{ key: "k" }] });
  });

  it("refuses the platform's reserved key prefixes", () => {
    for (const key of ["qcloud:x", "tencent:x", "project", "Project-x"]) {
      expect(refusal("RunInstances", tags([{ Key: key, Value: "v" }])).code).toBe("FailedOperation.TagKeyReserved");
    }
  });

  it("refuses a key given twice, also across entries, naming the second", () => {
    const r = refusal("RunInstances", {
      ...RUN,
      TagSpecification: [
        { ResourceType: "instance", Tags: [{ Key: "a", Value: "1" }] },
        { ResourceType: "instance", Tags: [{ Key: "a", Value: "2" }] },
      ],
    });
    expect(r).toMatchObject({ code: "InvalidParameterValue.DuplicateTags", message: expect.stringContaining("`TagSpecification.1.Tags.0.Key`") });
  });

  it("takes 50 tags and refuses 51", () => {
    const n = (count: number) => Array.from({ length: count }, (_, i) => ({ Key: `k${i}`, Value: "v" }));
    expect(parse("RunInstances", tags(n(50)))).toMatchObject({ tags: expect.arrayContaining([{ key: "k49", value: "v" }]) });
    expect(refusal("RunInstances", tags(n(51))).code).toBe("InvalidParameterValue.TagQuotaLimitExceeded");
  });
});

describe("projects and placement", () => {
  it("refuses a ProjectId other than 0, top-level or in Placement, naming it", () => {
    expect(refusal("RunInstances", { ...RUN, ProjectId: 1 })).toMatchObject({ code: "InvalidProjectId.NotFound", message: expect.stringContaining("`ProjectId`") });
    expect(refusal("RunInstances", { ...RUN, Placement: { ProjectId: 7 } })).toMatchObject({ code: "InvalidProjectId.NotFound", message: expect.stringContaining("`Placement.ProjectId`") });
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, Placement: { ProjectId: 7 } }).code).toBe("InvalidProjectId.NotFound");
    expect(parse("RunInstances", { ...RUN, ProjectId: 0, Placement: { ProjectId: 0 } })).toMatchObject({ projectId: 0 });
  });

  it("checkPlacement refuses another zone with InvalidZone.MismatchRegion naming Placement.Zone, and another host", () => {
    const host = { hostId: "host-abcd1234", zone: "zone-1" };
    const codeOf = (p: Parameters<typeof checkPlacement>[0]) => {
      try {
        checkPlacement(p, host);
        return "accepted";
      } catch (e) {
        if (e instanceof ApiError) return `${e.code} ${e.message}`;
        throw e;
      }
    };
    expect(codeOf({ zone: "zone-1", hostId: "host-abcd1234", hostIds: ["host-abcd1234"] })).toBe("accepted");
    expect(codeOf({})).toBe("accepted");
    expect(codeOf({ zone: "ap-guangzhou-3" })).toMatch(/^InvalidZone\.MismatchRegion `Placement\.Zone`/);
    expect(codeOf({ hostId: "host-zzzzzzzz" })).toMatch(/^InvalidHostId\.NotFound/);
    expect(codeOf({ hostIds: ["host-zzzzzzzz"] })).toMatch(/^InvalidHostId\.NotFound/);
  });

  it("refuses a chosen system disk ID for a new instance", () => {
    expect(refusal("RunInstances", { ...RUN, SystemDisk: { DiskId: "disk-abcd1234" } })).toMatchObject({
      code: "InvalidParameterValue",
      message: expect.stringContaining("`SystemDisk.DiskId`"),
    });
  });
});

describe("ModifyInstancesAttribute", () => {
  const ids = { InstanceIds: ["ins-abcd1234"] };

  it("takes DisableApiTermination or InstanceName", () => {
    expect(parse("ModifyInstancesAttribute", { ...ids, DisableApiTermination: true })).toEqual({ instanceIds: ["ins-abcd1234"], disableApiTermination: true });
    expect(parse("ModifyInstancesAttribute", { ...ids, DisableApiTermination: false })).toEqual({ instanceIds: ["ins-abcd1234"], disableApiTermination: false });
    expect(parse("ModifyInstancesAttribute", { ...ids, InstanceName: "web" })).toEqual({ instanceIds: ["ins-abcd1234"], instanceName: "web" });
  });

  it("changes one kind of attribute per call", () => {
    expect(refusal("ModifyInstancesAttribute", { ...ids, InstanceName: "web", DisableApiTermination: true }).code).toBe("InvalidParameterCombination");
    expect(refusal("ModifyInstancesAttribute", ids).code).toBe("MissingParameter");
  });

  it("refuses the attributes this host does not change, by name", () => {
    for (const [field, value] of [["HostName", "web-1"], ["UserData", "aGk="], ["CamRoleName", "r"], ["AutoReboot", false], ["EnableJumboFrame", false]] as const) {
      expect(refusal("ModifyInstancesAttribute", { ...ids, DisableApiTermination: true, [field]: value }).message).toContain(`\`${field}\``);
    }
  });

  it("limits InstanceName to 60 characters", () => {
    expect(refusal("ModifyInstancesAttribute", { ...ids, InstanceName: "n".repeat(61) }).code).toBe("InvalidInstanceName.TooLong");
  });
});

describe("DescribeInstances tag filters", () => {
  it("takes tag-key, tag-value and tag:<key>; refuses tag: without a key and unknown names", () => {
    expect(parse("DescribeInstances", { Filters: [{ Name: "tag-key", Values: ["team"] }, { Name: "tag:team", Values: ["web"] }, { Name: "tag-value", Values: ["web"] }] })).toMatchObject({
      filters: [{ name: "tag-key" }, { name: "tag:team" }, { name: "tag-value" }],
    });
    expect(refusal("DescribeInstances", { Filters: [{ Name: "tag:", Values: ["x"] }] }).code).toBe("InvalidFilter");
    expect(refusal("DescribeInstances", { Filters: [{ Name: "tags:team", Values: ["x"] }] }).code).toBe("InvalidFilter");
  });
});

describe("fields that were accepted and dropped", () => {
  it("EnhancedService: false is what a guest gets; true is refused naming the service", () => {
    expect(parse("RunInstances", { ...RUN, EnhancedService: { SecurityService: { Enabled: false }, MonitorService: { Enabled: false } } })).toMatchObject({ imageId: "img-abcd1234" });
    expect(refusal("RunInstances", { ...RUN, EnhancedService: { MonitorService: { Enabled: true } } }).message).toContain("`EnhancedService.MonitorService.Enabled`");
    expect(refusal("RunInstances", { ...RUN, EnhancedService: { Bogus: {} } }).code).toBe("InvalidParameter");
  });

  it("InternetAccessible takes only its known fields", () => {
    expect(refusal("RunInstances", { ...RUN, InternetAccessible: { BandwidthPackageId: "bwp-1" } })).toMatchObject({ code: "InvalidParameter", message: expect.stringContaining("`InternetAccessible.BandwidthPackageId`") });
  });

  it("CloneInstance: only CDHPAID; the zone, host list, protection and disk type reach the command", () => {
    expect(refusal("CloneInstance", { InstanceId: "ins-abcd1234", InstanceChargeType: "POSTPAID_BY_HOUR" }).code).toBe("InvalidParameterValue");
    expect(
      parse("CloneInstance", {
        InstanceId: "ins-abcd1234",
        Placement: { Zone: "z", HostIds: ["host-abcd1234"] },
        DisableApiTermination: true,
        SystemDisk: { DiskType: "LOCAL_SSD" },
        VirtualPrivateCloud: { VpcId: "vpc-1", SubnetId: "subnet-1", AsVpcGateway: true, Ipv6AddressCount: 1 },
      }),
    ).toMatchObject({ zone: "z", hostIds: ["host-abcd1234"], disableApiTermination: true, systemDiskType: "LOCAL_SSD", virtualPrivateCloud: { asVpcGateway: true, ipv6AddressCount: 1 } });
  });

  it("StopInstances refuses STOP_CHARGING; KEEP_CHARGING is taken", () => {
    expect(refusal("StopInstances", { InstanceIds: ["ins-abcd1234"], StoppedMode: "STOP_CHARGING" }).message).toContain("`StoppedMode`");
    expect(parse("StopInstances", { InstanceIds: ["ins-abcd1234"], StoppedMode: "KEEP_CHARGING" })).toMatchObject({ stoppedMode: "KEEP_CHARGING" });
  });

  it("ImportImage and InstanceAttachISO refuse arm_64; ImportImage refuses Force true", () => {
    const image = { OsType: "Debian", OsVersion: "12", ImageUrl: "file:///var/tmp/i.raw", ImageName: "i" };
    expect(refusal("ImportImage", { ...image, Architecture: "arm_64" }).message).toContain("`Architecture`");
    expect(refusal("ImportImage", { ...image, Architecture: "x86_64", Force: true }).message).toContain("`Force`");
    expect(refusal("InstanceAttachISO", { InstanceId: "ins-abcd1234", ImageUrl: "file:///var/tmp/x.iso", Architecture: "arm_64", OsType: "Debian", OsVersion: "12" }).message).toContain("`Architecture`");
  });

  it("disk actions: order by creation time, both ways; other order fields, DeleteSnapshot 0 and automatic power are refused", () => {
    expect(parse("DescribeDisks", { Order: "DESC", OrderField: "CREATE_TIME" })).toMatchObject({ descending: true });
    expect(parse("DescribeSnapshots", {})).toMatchObject({ descending: false });
    expect(refusal("DescribeDisks", { OrderField: "DEADLINE" }).message).toContain("`OrderField`");
    expect(refusal("TerminateDisks", { DiskIds: ["disk-abcd1234"], DeleteSnapshot: 0 }).message).toContain("`DeleteSnapshot`");
    expect(refusal("ApplySnapshot", { SnapshotId: "snap-abcd1234", DiskId: "disk-abcd1234", AutoStopInstance: true }).message).toContain("`AutoStopInstance`");
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, DiskChargeType: "PREPAID" }).message).toContain("`DiskChargeType`");
    expect(parse("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, DiskChargeType: "CDHPAID", Placement: { Zone: "zone-1" }, ClientToken: "t" })).toMatchObject({ zone: "zone-1", clientToken: "t" });
  });

  it("key pairs carry no tags: a TagSpecification with tags is refused, an empty one taken", () => {
    const key = { KeyName: "k1", ProjectId: 0 };
    expect(parse("CreateKeyPair", { ...key, TagSpecification: [{ ResourceType: "keypair", Tags: [] }] })).toEqual({ keyName: "k1", projectId: 0 });
    expect(refusal("CreateKeyPair", { ...key, TagSpecification: [{ ResourceType: "keypair", Tags: [{ Key: "a", Value: "b" }] }] }).message).toContain("`TagSpecification.0.Tags`");
  });
});
