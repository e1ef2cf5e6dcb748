import { describe, expect, it } from "vitest";
import { parse, refusal } from "../../support/parse.js";

describe("disk, snapshot and instance-disk actions: parsing", () => {
  it("CreateDisks takes local disk types only, sizes 10..32000 GB, and names the field it refuses", () => {
    expect(parse("CreateDisks", { DiskType: "LOCAL_SSD", DiskSize: 100, DiskCount: 2, DiskName: "d" })).toEqual({ diskType: "LOCAL_SSD", diskSizeGiB: 100, diskCount: 2, diskName: "d" });
    const cloud = refusal("CreateDisks", { DiskType: "CLOUD_SSD", DiskSize: 100 });
    expect(cloud.code).toBe("InvalidParameterValue");
    expect(cloud.message).toContain("DiskType");
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 5 })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 40000 })).toMatchObject({ code: "InvalidParameterValue.Range" });
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10.5 }).code).toMatch(/^InvalidParameter/);
    expect(refusal("CreateDisks", { DiskSize: 10 }).code).toBe("MissingParameter");
    expect(refusal("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10, SnapshotId: "snap-abcd1234" }).message).toContain("SnapshotId");
  });

  it("disk and snapshot IDs must be well formed", () => {
    expect(refusal("AttachDisks", { DiskIds: ["disk-ABC"], InstanceId: "ins-abcd1234" }).code).toBe("InvalidDiskId.Malformed");
    expect(refusal("AttachDisks", { DiskIds: ["disk-abcd1234"], InstanceId: "i-1" }).code).toBe("InvalidInstanceId.Malformed");
    expect(refusal("AttachDisks", { DiskIds: [], InstanceId: "ins-abcd1234" }).code).toBe("InvalidParameterValue");
    expect(refusal("DeleteSnapshots", { SnapshotIds: ["snapshot-1"] }).code).toBe("InvalidSnapshotId.Malformed");
    expect(refusal("ApplySnapshot", { SnapshotId: "snap-abcd1234", DiskId: "../../etc" }).code).toBe("InvalidDiskId.Malformed");
    expect(parse("DetachDisks", { DiskIds: ["disk-abcd1234", "disk-abcd1234"] })).toEqual({ diskIds: ["disk-abcd1234"] });
  });

  it("ResizeInstanceDisks needs something to grow, refuses ResizeOnline with ForceStop and a disk named twice", () => {
    expect(parse("ResizeInstanceDisks", { InstanceId: "ins-abcd1234", SystemDisk: { DiskSize: 60 }, ResizeOnline: true })).toEqual({
      instanceId: "ins-abcd1234",
      systemDiskGiB: 60,
      dataDisks: [],
      resizeOnline: true,
      forceStop: false,
      dryRun: false,
    });
    expect(parse("ResizeInstanceDisks", { InstanceId: "ins-abcd1234", SystemDisk: { DiskSize: 60 }, DryRun: true })).toMatchObject({ dryRun: true });
    expect(refusal("ResizeInstanceDisks", { InstanceId: "ins-abcd1234" }).code).toBe("MissingParameter");
    expect(refusal("ResizeInstanceDisks", { InstanceId: "ins-abcd1234", SystemDisk: { DiskSize: 60 }, ResizeOnline: true, ForceStop: true }).code).toBe("InvalidParameterCombination");
    const twice = refusal("ResizeInstanceDisks", { InstanceId: "ins-abcd1234", DataDisks: [{ DiskId: "disk-abcd1234", DiskSize: 20 }, { DiskId: "disk-abcd1234", DiskSize: 30 }] });
    expect(twice.code).toBe("InvalidParameterValue");
    expect(twice.message).toContain("DataDisks.1.DiskId");
    expect(refusal("ResizeInstanceDisks", { InstanceId: "ins-abcd1234", DataDisks: [{ DiskId: "disk-abcd1234", DiskSize: 2 ** 53 }] }).code).toMatch(/^InvalidParameter/);
  });

  it("ResetInstance, CreateImage, CloneInstance, rescue mode and ISO parse what they take and refuse the rest", () => {
    expect(parse("ResetInstance", { InstanceId: "ins-abcd1234", ImageId: "img-abcd1234", SystemDisk: { DiskSize: 60 }, LoginSettings: { KeyIds: ["skey-abcd1234"] } })).toMatchObject({
      instanceId: "ins-abcd1234",
      imageId: "img-abcd1234",
      systemDiskGiB: 60,
      loginSettings: { keyIds: ["skey-abcd1234"], keepImageLogin: false },
    });
    expect(refusal("ResetInstance", { InstanceId: "ins-abcd1234", LoginSettings: { Password: "Abc-12345", KeyIds: ["skey-abcd1234"] } }).code).toBe("InvalidParameterCombination");
    expect(refusal("ResetInstance", { InstanceId: "ins-abcd1234", UserData: "not base64!" }).code).toBe("InvalidParameterValue");
    expect(refusal("CreateImage", { InstanceId: "ins-abcd1234", ImageName: "" }).code).toBe("InvalidParameterValue");
    expect(refusal("CreateImage", { InstanceId: "ins-abcd1234", ImageName: "x", DataDiskIds: ["disk-abcd1234"] }).message).toContain("DataDiskIds");
    expect(parse("CloneInstance", { InstanceId: "ins-abcd1234", InstanceCount: 2, InstanceType: "CDH_2C4G" })).toMatchObject({ instanceId: "ins-abcd1234", instanceCount: 2, type: { name: "CDH_2C4G", cpu: 2, memoryGiB: 4 } });
    expect(refusal("CloneInstance", { InstanceId: "ins-abcd1234", InstanceType: "S5.LARGE8" }).code).toBe("InvalidInstanceType.Malformed");
    expect(parse("EnterRescueMode", { InstanceId: "ins-abcd1234", Password: "Rescue-Pass1", ForceStop: true })).toEqual({ instanceId: "ins-abcd1234", password: "Rescue-Pass1", stopType: "SOFT_FIRST" });
    expect(refusal("EnterRescueMode", { InstanceId: "ins-abcd1234", Password: "x", ForceStop: true, StopType: "HARD" }).code).toBe("InvalidParameterCombination");
    expect(refusal("EnterRescueMode", { InstanceId: "ins-abcd1234", Password: "Rescue-Pass1", Username: "admin" }).message).toContain("Username");
    expect(refusal("InstanceAttachISO", { InstanceId: "ins-abcd1234", ImageUrl: "file:///x.iso", Architecture: "sparc", OsType: "L", OsVersion: "1" }).code).toMatch(/^InvalidParameter/);
  });
});
