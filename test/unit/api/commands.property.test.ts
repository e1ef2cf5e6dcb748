/**
 * Property tests of the API's parse layer (agent/api/commands.ts and the schemas behind
 * it): for every action, random request bodies, some close to valid and some not, are
 * either parsed into a command or refused with an ApiError that is never InternalError
 * and that names the offending field, by a path that exists in the body (or, for a
 * missing field, whose parent does).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ACTIONS, parseCommand } from "../../../agent/api/commands.js";
import { ApiError } from "../../../agent/errors.js";

const RUNS = 150;

const hex8 = fc.stringMatching(/^[a-z0-9]{8}$/);
const id = (prefix: string) => hex8.map((s) => `${prefix}-${s}`);
const anyId = fc.oneof(id("ins"), id("img"), id("disk"), id("snap"), id("skey"), id("host"), id("subnet"), id("vpc"), fc.constantFrom("ins-1", "img-", "", "x"));
const smallInt = fc.oneof(fc.integer({ min: -2, max: 200 }), fc.constantFrom(0, 1, 10, 50, 100, 101, 16384, 2 ** 31, 1.5, Number.MAX_SAFE_INTEGER));
const text = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("CDH_1C1G", "CDH_2C4G", "LOCAL_BASIC", "CLOUD_PREMIUM", "SOFT", "HARD", "x86_64", "Linux", "Debian", "12", "file:///dev/null", "http://127.0.0.1/x.raw", "Passw0rd!x", "instance-name", "zone-1", "CDHPAID"));
/**
 * Any JSON value, small, without a backtick: messages quote field names in backticks
 * (unescaped), so a name holding one could not be read back out of a message here.
 */
const json = fc.jsonValue({ maxDepth: 2 }).filter((v) => !JSON.stringify(v).includes("`"));

/** Values a field of this API might take, right or wrong. */
const fieldValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: anyId },
  { weight: 3, arbitrary: fc.array(anyId, { maxLength: 3 }) },
  { weight: 2, arbitrary: smallInt },
  { weight: 2, arbitrary: text },
  { weight: 1, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 2, arbitrary: json },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        Zone: text,
        HostId: id("host"),
        DiskSize: smallInt,
        DiskType: text,
        DiskId: anyId,
        Password: text,
        KeyIds: fc.array(id("skey"), { maxLength: 2 }),
        KeepImageLogin: fc.constantFrom("TRUE", "FALSE", true, "x"),
        VpcId: id("vpc"),
        SubnetId: id("subnet"),
        Name: text,
        Values: fc.array(text, { maxLength: 3 }),
        Key: text,
        Value: text,
      },
      { requiredKeys: [] },
    ),
  },
  { weight: 1, arbitrary: fc.array(fc.record({ Name: text, Values: fc.array(text, { maxLength: 3 }), DiskSize: smallInt, DiskType: text }, { requiredKeys: [] }), { maxLength: 3 }) },
);

/** The request fields of all actions, and a few no action has. */
const FIELDS = [
  "Architecture", "BootMode", "ClientToken", "DataDiskIds", "DataDisks", "DeleteWithInstance", "DiskChargeType", "DiskCount", "DiskId", "DiskIds",
  "DiskName", "DiskSize", "DiskType", "DryRun", "EnhancedService", "Filters", "Force", "ForcePoweroff", "ForceStop", "HostIds", "HostName",
  "ImageDescription", "ImageId", "ImageIds", "ImageName", "ImageUrl", "InstanceChargeType", "InstanceCount", "InstanceId", "InstanceIds",
  "InstanceName", "InstanceType", "InternetAccessible", "KeepImageLogin", "KeyIds", "KeyName", "Limit", "LoginSettings", "Offset", "OsType",
  "OsVersion", "Password", "Placement", "PrivateIpAddresses", "ProjectId", "PublicKey", "ResizeOnline", "SecurityGroupIds", "SnapshotId",
  "SnapshotIds", "SnapshotName", "StopType", "StoppedMode", "Sysprep", "SystemDisk", "TagSpecification", "UserData", "UserName",
  "VirtualPrivateCloud", "Zone", "Bogus", "imageid", "",
  // Security groups (VPC) and their bindings (CVM)
  "SecurityGroupId", "GroupName", "GroupDescription", "SecurityGroupPolicySet", "SortPolicys", "SecurityGroups", "OrderField", "OrderDirection",
  "Tags", "OriginalSecurityGroupPolicySet",
  // ENIs (VPC)
  "VpcId", "SubnetId", "NetworkInterfaceName", "NetworkInterfaceDescription", "NetworkInterfaceId", "NetworkInterfaceIds", "SecondaryPrivateIpAddressCount",
  "SourceNetworkInterfaceId", "DestinationNetworkInterfaceId", "PrivateIpAddress", "TaskId",
  // Monitor 2018-07-24
  "Namespace", "MetricName", "Instances", "Period", "StartTime", "EndTime", "SpecifyStatistics", "Dimensions",
];

/** Right values for the fields actions require, to build a valid body per action. */
const GOOD: Readonly<Record<string, unknown>> = {
  VpcId: "vpc-abcd1234",
  SubnetId: "subnet-abcd1234",
  NetworkInterfaceName: "eni-1",
  NetworkInterfaceId: "eni-abcd1234",
  SourceNetworkInterfaceId: "eni-abcd1234",
  DestinationNetworkInterfaceId: "eni-bcde2345",
  PrivateIpAddress: "10.0.0.5",
  PrivateIpAddresses: [{ PrivateIpAddress: "10.0.0.5" }],
  TaskId: "0c1d2e3f-0000-4000-8000-000000000000",
  DestinationHostId: "host-bcde2345",
  Step: "status",
  MigrationId: "0c1d2e3f-0000-4000-8000-000000000000",
  SourceHostId: "host-abcd1234",
  Namespace: "QCE/CVM",
  MetricName: "CPUUsage",
  Instances: [{ Dimensions: [{ Name: "InstanceId", Value: "ins-abcd1234" }] }],
  InstanceId: "ins-abcd1234",
  HostIds: ["host-abcd1234"],
  HostName: "rack-7",
  InstanceIds: ["ins-abcd1234"],
  ImageId: "img-abcd1234",
  ImageIds: ["img-abcd1234"],
  InstanceType: "CDH_1C1G",
  Placement: { Zone: "zone-1", HostId: "host-abcd1234" },
  ImageUrl: "file:///var/tmp/image.raw",
  ImageName: "image",
  OsType: "Debian",
  OsVersion: "12",
  Architecture: "x86_64",
  KeyName: "key_1",
  ProjectId: 0,
  PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJAbGFwdG9wIGtleSBmb3IgdGVzdHMhIQ== user@laptop",
  KeyIds: ["skey-abcd1234"],
  Password: "Passw0rd!x",
  DiskId: "disk-abcd1234",
  DiskIds: ["disk-abcd1234"],
  DiskSize: 10,
  DiskType: "LOCAL_BASIC",
  SnapshotId: "snap-abcd1234",
  SnapshotIds: ["snap-abcd1234"],
  SystemDisk: { DiskSize: 60 },
  InstanceName: "web-1",
  SecurityGroupId: "sg-abcd1234",
  SecurityGroupIds: ["sg-abcd1234"],
  GroupName: "web",
  GroupDescription: "web servers",
  SecurityGroupPolicySet: { Ingress: [{ Protocol: "TCP", Port: "22", CidrBlock: "10.0.0.0/8", Action: "ACCEPT" }] },
  Policies: [{ MetricName: "CPUUsage", Operator: "GT", Threshold: 90, ContinuePeriod: 3 }],
  InternetAccessible: { InternetMaxBandwidthOut: 10 },
  VirtualPrivateCloud: { VpcId: "vpc-default", SubnetId: "subnet-default" },
};

/** A body the action takes: its required fields, found by asking the parser what is missing. */
function validBody(action: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < 12; i++) {
    try {
      parseCommand(action, out);
      return out;
    } catch (e) {
      const missing = e instanceof ApiError && e.code === "MissingParameter" ? /`([^`.]*)`/.exec(e.message)?.[1] : undefined;
      if (missing === undefined || !(missing in GOOD)) return out;
      out[missing] = GOOD[missing];
    }
  }
  return out;
}

const randomBody = fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 6 });

/** A valid body with some fields dropped, replaced or added; or a random one. */
function bodies(action: string): fc.Arbitrary<Record<string, unknown>> {
  const valid = validBody(action);
  const keys = Object.keys(valid);
  const nearValid = fc
    .record({ drop: fc.subarray(keys, { maxLength: Math.min(1, keys.length) }), add: fc.dictionary(fc.constantFrom(...FIELDS), fieldValue, { maxKeys: 2 }) })
    .map(({ drop, add }) => {
      const b: Record<string, unknown> = { ...valid, ...add };
      for (const k of drop) delete b[k];
      return b;
    });
  return fc.oneof(fc.constant(valid), nearValid, randomBody);
}

/** The value at a dotted path (array indexes are numbers in the path). */
function at(root: unknown, path: string[]): unknown {
  let v: unknown = root;
  for (const step of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[step];
  }
  return v;
}

/** What a refusal must look like: a CVM code other than InternalError, naming a field of the body. */
function checkRefusal(action: string, input: Record<string, unknown>, error: unknown): void {
  expect(error, `${action} ${JSON.stringify(input)}`).toBeInstanceOf(ApiError);
  const e = error as ApiError;
  const where = `${action} ${JSON.stringify(input)} → ${e.code}: ${e.message}`;
  expect(e.code, where).not.toBe("InternalError");
  const named = /`([^`]*)`/.exec(e.message);
  expect(named, `${where} (names no field)`).not.toBeNull();
  const path = named![1]!.split(".");
  if (e.code === "MissingParameter") {
    const parent = at(input, path.slice(0, -1));
    expect(parent !== null && typeof parent === "object", `${where} (the missing field's parent is not in the body)`).toBe(true);
    expect(at(input, path), `${where} (the "missing" field is there)`).toBeUndefined();
  } else {
    expect(at(input, path), `${where} (the named field is not in the body)`).not.toBeUndefined();
  }
}

describe("every action's parser, on random bodies", () => {
  it.each(ACTIONS.map((a) => [a]))("%s answers a command or a refusal naming a field, never InternalError", (action) => {
    fc.assert(
      fc.property(bodies(action), (input) => {
        let error: unknown;
        try {
          const command = parseCommand(action, input);
          expect(command.action).toBe(action);
          return;
        } catch (e) {
          error = e;
        }
        checkRefusal(action, input, error);
      }),
      { numRuns: RUNS, seed: Number(process.env.CDH_PROPERTY_SEED ?? 0x0cd4) ^ action.length },
    );
  });

  it("takes, for every action, the body made of its required fields", () => {
    for (const action of ACTIONS) expect(() => parseCommand(action, validBody(action)), action).not.toThrow();
  });

  it("refuses a field no action has, naming it, for every action", () => {
    for (const action of ACTIONS) {
      expect(() => parseCommand(action, { Bogus: 1 })).toThrow(/`Bogus`/);
    }
  });
});
