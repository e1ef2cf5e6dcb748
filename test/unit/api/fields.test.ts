/**
 * Nothing accepted and ignored (issue 10 part 4): every field of every request schema (the
 * CVM and CBS actions; the VPC schemas are the security groups') has a fate written down here,
 * and the table is checked against the schemas both ways: a field the schemas know and the
 * table does not fails, and so does a table entry no schema has.
 *
 * Fates:
 * - used     the value takes effect (the comment says where when it is not obvious);
 * - checked  used, and checked against the host's state by the dispatcher (zone, own disks, …);
 * - info     accepted as information only: listed, with why, in the README's "Accepted as
 *            information only" (checked here);
 * - refuse   the sample value (merged into a valid body) is refused with a CVM code other
 *            than InternalError whose message names the field (checked here); a field may be
 *            info for one value and refused for others;
 * - sg       the security groups' (issue 10 parts 1–2): implemented there.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ACTIONS } from "../../../agent/api/commands.js";
import { DISK_REQUEST_SCHEMAS } from "../../../agent/api/schemas-disks.js";
import { IMAGE_REQUEST_SCHEMAS } from "../../../agent/api/schemas-images.js";
import { INSTANCE_REQUEST_SCHEMAS } from "../../../agent/api/schemas-instances.js";
import { LOGIN_REQUEST_SCHEMAS } from "../../../agent/api/schemas-logins.js";
import { MONITOR_REQUEST_SCHEMAS } from "../../../agent/api/schemas-monitor.js";
import { MONITOR_OPS_REQUEST_SCHEMAS } from "../../../agent/api/schemas-monitor-ops.js";
import { RETYPE_REQUEST_SCHEMAS } from "../../../agent/api/schemas-retype.js";
import { VPC_ATTRIBUTE_REQUEST_SCHEMAS } from "../../../agent/api/schemas-vpc-attribute.js";
import { BANDWIDTH_REQUEST_SCHEMAS } from "../../../agent/api/schemas-bandwidth.js";
import { RUN_REQUEST_SCHEMAS } from "../../../agent/api/schemas-run.js";
import { ENI_REQUEST_SCHEMAS } from "../../../agent/api/schemas-eni.js";
import { CONSOLE_REQUEST_SCHEMAS } from "../../../agent/api/schemas-console.js";
import { SERIAL_REQUEST_SCHEMAS } from "../../../agent/api/schemas-serial.js";
import { MIGRATION_REQUEST_SCHEMAS } from "../../../agent/api/schemas-migration.js";
import { refusal } from "../../support/parse.js";

type Fate = "used" | "checked" | "info" | "sg" | { refuse: Record<string, unknown>; info?: true };

const SCHEMAS: Record<string, z.ZodTypeAny> = {
  ...MIGRATION_REQUEST_SCHEMAS,
  ...RUN_REQUEST_SCHEMAS,
  ...INSTANCE_REQUEST_SCHEMAS,
  ...IMAGE_REQUEST_SCHEMAS,
  ...LOGIN_REQUEST_SCHEMAS,
  ...DISK_REQUEST_SCHEMAS,
  ...RETYPE_REQUEST_SCHEMAS,
  ...VPC_ATTRIBUTE_REQUEST_SCHEMAS,
  ...BANDWIDTH_REQUEST_SCHEMAS,
  ...MONITOR_REQUEST_SCHEMAS,
  ...MONITOR_OPS_REQUEST_SCHEMAS,
  ...ENI_REQUEST_SCHEMAS,
  ...CONSOLE_REQUEST_SCHEMAS,
  ...SERIAL_REQUEST_SCHEMAS,
};

/** The actions whose schemas are the security groups' (agent/api/schemas-vpc.ts, issue 10 parts 1–2), walked there. */
const SECURITY_GROUP_ACTIONS = [
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
];

const ENHANCED: Record<string, Fate> = {
  "EnhancedService.SecurityService.Enabled": { refuse: { EnhancedService: { SecurityService: { Enabled: true } } } },
  "EnhancedService.MonitorService.Enabled": { refuse: { EnhancedService: { MonitorService: { Enabled: true } } } },
  "EnhancedService.AutomationService.Enabled": { refuse: { EnhancedService: { AutomationService: { Enabled: true } } } },
};
const LOGIN: Record<string, Fate> = { "LoginSettings.Password": "used", "LoginSettings.KeyIds": "used", "LoginSettings.KeepImageLogin": "used" };
const FILTERS: Record<string, Fate> = { "Filters[].Name": "used", "Filters[].Values": "used", Offset: "used", Limit: "used" };
const VPC: Record<string, Fate> = {
  "VirtualPrivateCloud.VpcId": "checked",
  "VirtualPrivateCloud.SubnetId": "checked",
  "VirtualPrivateCloud.PrivateIpAddresses": "checked",
  // Refused by the dispatcher when true (no public gateway) or above 0 (no IPv6).
  "VirtualPrivateCloud.AsVpcGateway": "checked",
  "VirtualPrivateCloud.Ipv6AddressCount": "checked",
};

export const FIELD_FATES: Record<string, Record<string, Fate>> = {
  RunInstances: {
    InstanceChargeType: { info: true, refuse: { InstanceChargeType: "POSTPAID_BY_HOUR" } },
    "Placement.Zone": "checked",
    "Placement.ProjectId": { refuse: { Placement: { ProjectId: 1 } } },
    "Placement.HostId": "checked",
    "Placement.HostIds": "checked",
    InstanceType: "used",
    ImageId: "used",
    "SystemDisk.DiskType": "used",
    "SystemDisk.DiskSize": "used",
    "SystemDisk.DiskId": { refuse: { SystemDisk: { DiskId: "disk-abcd1234" } } },
    // DiskId and SnapshotId are refused by the dispatcher (dispatch.ts RunInstances).
    "DataDisks[].DiskType": "used",
    "DataDisks[].DiskSize": "used",
    "DataDisks[].DeleteWithInstance": "used",
    "DataDisks[].DiskId": "checked",
    "DataDisks[].SnapshotId": "checked",
    ...VPC,
    InstanceCount: "used",
    InstanceName: "used",
    HostName: "used",
    ...LOGIN,
    UserData: "used",
    ClientToken: "used",
    DryRun: "used",
    ...ENHANCED,
    PurchaseSource: "info",
    SecurityGroupIds: "sg",
    // Checked by the launch: accepted only on a subnet with a route out of the VPC (agent/network/bandwidth).
    "InternetAccessible.InternetMaxBandwidthOut": "checked",
    "InternetAccessible.PublicIpAssigned": { refuse: { InternetAccessible: { PublicIpAssigned: true } } },
    "InternetAccessible.InternetChargeType": "info",
    "TagSpecification[].ResourceType": { refuse: { TagSpecification: [{ ResourceType: "image", Tags: [] }] } },
    "TagSpecification[].Tags[].Key": { refuse: { TagSpecification: [{ ResourceType: "instance", Tags: [{ Key: "", Value: "v" }] }] } },
    "TagSpecification[].Tags[].Value": { refuse: { TagSpecification: [{ ResourceType: "instance", Tags: [{ Key: "k", Value: "v".repeat(256) }] }] } },
    DisableApiTermination: "used",
    ProjectId: { refuse: { ProjectId: 2 } },
    InstanceChargePrepaid: { refuse: { InstanceChargePrepaid: { Period: 1 } } },
    MinCount: { refuse: { MinCount: 1 } },
    SpotPrice: { refuse: { SpotPrice: "1" } },
    ActionTimer: { refuse: { ActionTimer: {} } },
    DisasterRecoverGroupIds: { refuse: { DisasterRecoverGroupIds: ["ps-1"] } },
    ProjectSpecification: { refuse: { ProjectSpecification: [] } },
    InstanceMarketOptions: { refuse: { InstanceMarketOptions: {} } },
    Metadata: { refuse: { Metadata: {} } },
    CpuTopology: { refuse: { CpuTopology: {} } },
    CamRoleName: { refuse: { CamRoleName: "r" } },
    HpcClusterId: { refuse: { HpcClusterId: "h" } },
    LaunchTemplate: { refuse: { LaunchTemplate: {} } },
    DedicatedClusterId: { refuse: { DedicatedClusterId: "c" } },
    ChcIds: { refuse: { ChcIds: [] } },
    PartitionNumber: { refuse: { PartitionNumber: 1 } },
    EnableJumboFrame: { refuse: { EnableJumboFrame: false } },
    NetworkInterfaces: { refuse: { NetworkInterfaces: [] } },
  },
  ResetInstance: {
    InstanceId: "used",
    ImageId: "used",
    "SystemDisk.DiskSize": "used",
    // Must restate the instance's own system disk (dispatch.ts ResetInstance).
    "SystemDisk.DiskType": "checked",
    "SystemDisk.DiskId": "checked",
    ...LOGIN,
    ...ENHANCED,
    HostName: "used",
    UserData: "used",
    DryRun: "used",
  },
  CreateImage: {
    InstanceId: "used",
    ImageName: "used",
    ImageDescription: "used",
    ForcePoweroff: "info",
    Sysprep: "used",
    DataDiskIds: { refuse: { DataDiskIds: ["disk-abcd1234"] } },
    SnapshotIds: { refuse: { SnapshotIds: ["snap-abcd1234"] } },
    DryRun: "used",
    ImageFamily: { refuse: { ImageFamily: "f" } },
  },
  CloneInstance: {
    InstanceId: "used",
    // Refused by the dispatcher when not empty (a clone is made of instances without data disks).
    DataDiskIds: "checked",
    InstanceChargeType: { info: true, refuse: { InstanceChargeType: "PREPAID" } },
    "Placement.Zone": "checked",
    "Placement.ProjectId": { refuse: { Placement: { ProjectId: 3 } } },
    "Placement.HostId": "checked",
    "Placement.HostIds": "checked",
    InstanceType: "used",
    "SystemDisk.DiskType": "used",
    "SystemDisk.DiskSize": "used",
    "SystemDisk.DiskId": { refuse: { SystemDisk: { DiskId: "disk-abcd1234" } } },
    ...VPC,
    InstanceCount: "used",
    InstanceName: "used",
    ...LOGIN,
    HostName: "used",
    UserData: "used",
    ClientToken: "used",
    ...ENHANCED,
    SecurityGroupIds: "sg",
    DisableApiTermination: "used",
    PurchaseSource: "info",
  },
  DescribeInstances: { InstanceIds: "used", ...FILTERS },
  DescribeInstancesStatus: { InstanceIds: "used", Offset: "used", Limit: "used" },
  StartInstances: { InstanceIds: "used" },
  StopInstances: { InstanceIds: "used", StopType: "used", ForceStop: "used", StoppedMode: { info: true, refuse: { StoppedMode: "STOP_CHARGING" } }, DryRun: "used" },
  RebootInstances: { InstanceIds: "used", ForceReboot: "used", StopType: "used" },
  TerminateInstances: { InstanceIds: "used", DryRun: "used", ReleaseAddress: "info" },
  ModifyInstancesAttribute: {
    InstanceIds: "used",
    SecurityGroups: "sg",
    InstanceName: "used",
    DisableApiTermination: "used",
    UserData: { refuse: { UserData: "aGk=" } },
    HostName: { refuse: { HostName: "web-1" } },
    AutoReboot: { refuse: { AutoReboot: true } },
    CamRoleName: { refuse: { CamRoleName: "r" } },
    CamRoleType: { refuse: { CamRoleType: "user" } },
    EnableJumboFrame: { refuse: { EnableJumboFrame: true } },
    ResetNewCreationIdentify: { refuse: { ResetNewCreationIdentify: true } },
  },
  EnterRescueMode: { InstanceId: "used", Password: "used", Username: { info: true, refuse: { Username: "admin" } }, ForceStop: "used", StopType: "used" },
  ExitRescueMode: { InstanceId: "used" },
  InstanceAttachISO: {
    InstanceId: "used",
    ImageUrl: "used",
    Architecture: { info: true, refuse: { Architecture: "arm_64" } },
    OsType: "info",
    OsVersion: "info",
    DryRun: "used",
  },
  InstanceDetachISO: { InstanceId: "used" },
  ImportImage: {
    Architecture: { refuse: { Architecture: "arm_64" } },
    OsType: "used",
    OsVersion: "used",
    ImageUrl: "used",
    ImageName: "used",
    ImageDescription: "used",
    DryRun: "used",
    Force: { refuse: { Force: true } },
    BootMode: "used",
    "TagSpecification[].ResourceType": { refuse: { TagSpecification: [{ ResourceType: "instance", Tags: [] }] } },
    "TagSpecification[].Tags[].Key": "used",
    "TagSpecification[].Tags[].Value": "used",
    PublicImage: { refuse: { PublicImage: true } },
    LicenseType: { refuse: { LicenseType: "BYOL" } },
    ImageFamily: { refuse: { ImageFamily: "f" } },
    ImportImageDataDisk: { refuse: { ImportImageDataDisk: [] } },
  },
  DescribeImages: { ImageIds: "used", ...FILTERS },
  DeleteImages: { ImageIds: "used", DryRun: "used" },
  DescribeHosts: { ...FILTERS },
  ModifyHostsAttribute: { HostIds: "checked", HostName: "used", ProjectId: "used", RenewFlag: { refuse: { RenewFlag: "NOTIFY_AND_AUTO_RENEW" } } },
  ImportKeyPair: {
    KeyName: "used",
    ProjectId: "used",
    PublicKey: "used",
    "TagSpecification[].ResourceType": { refuse: { TagSpecification: [{ ResourceType: "instance" }] } },
    "TagSpecification[].Tags": { refuse: { TagSpecification: [{ ResourceType: "keypair", Tags: [{ Key: "k", Value: "v" }] }] } },
  },
  CreateKeyPair: {
    KeyName: "used",
    ProjectId: "used",
    "TagSpecification[].ResourceType": { refuse: { TagSpecification: [{ ResourceType: "image" }] } },
    "TagSpecification[].Tags": { refuse: { TagSpecification: [{ ResourceType: "keypair", Tags: [{ Key: "k", Value: "v" }] }] } },
  },
  DescribeKeyPairs: { KeyIds: "used", ...FILTERS },
  DeleteKeyPairs: { KeyIds: "used" },
  AssociateInstancesKeyPairs: { InstanceIds: "used", KeyIds: "used", ForceStop: "used" },
  DisassociateInstancesKeyPairs: { InstanceIds: "used", KeyIds: "used", ForceStop: "used" },
  ResetInstancesPassword: { InstanceIds: "used", Password: "used", UserName: "used", ForceStop: "used" },
  CreateDisks: {
    DiskType: "used",
    DiskSize: "used",
    DiskCount: "used",
    DiskName: "used",
    DiskChargeType: { info: true, refuse: { DiskChargeType: "PREPAID" } },
    "Placement.Zone": "checked",
    "Placement.ProjectId": { refuse: { Placement: { ProjectId: 4 } } },
    "Placement.HostId": "checked",
    ClientToken: "used",
    SnapshotId: { refuse: { SnapshotId: "snap-abcd1234" } },
  },
  AttachDisks: { DiskIds: "used", InstanceId: "used", DeleteWithInstance: "used", AttachMode: { refuse: { AttachMode: "PF" } } },
  DetachDisks: { DiskIds: "used", InstanceId: "used" },
  DescribeDisks: {
    DiskIds: "used",
    ...FILTERS,
    ReturnBindAutoSnapshotPolicy: "used",
    Order: "used",
    OrderField: { refuse: { OrderField: "DEADLINE" } },
  },
  TerminateDisks: { DiskIds: "used", DeleteSnapshot: { info: true, refuse: { DeleteSnapshot: 0 } } },
  ResizeInstanceDisks: {
    InstanceId: "used",
    "SystemDisk.DiskSize": "used",
    // DiskType and DiskId must restate the disks' own (dispatch.ts ResizeInstanceDisks).
    "SystemDisk.DiskType": "checked",
    "SystemDisk.DiskId": "checked",
    "DataDisks[].DiskId": "used",
    "DataDisks[].DiskSize": "used",
    "DataDisks[].DiskType": "checked",
    "DataDisks[].DeleteWithInstance": { refuse: { DataDisks: [{ DiskId: "disk-abcd1234", DiskSize: 20, DeleteWithInstance: true }] } },
    ResizeOnline: "used",
    ForceStop: "used",
    DryRun: "used",
  },
  CreateSnapshot: { DiskId: "used", SnapshotName: "used", Deadline: { refuse: { Deadline: "2030-01-01T00:00:00Z" } }, DiskBackupId: { refuse: { DiskBackupId: "dbp-1" } } },
  DescribeSnapshots: { SnapshotIds: "used", ...FILTERS, Order: "used", OrderField: { refuse: { OrderField: "DISK_SIZE" } } },
  DeleteSnapshots: { SnapshotIds: "used", DeleteBindImages: "info" },
  ApplySnapshot: { SnapshotId: "used", DiskId: "used", AutoStopInstance: { refuse: { AutoStopInstance: true } }, AutoStartInstance: { refuse: { AutoStartInstance: true } } },
  // agent/instances/reset-type.ts: ForceStop lets a running instance be stopped for the change.
  ResetInstancesType: { InstanceIds: "used", InstanceType: "used", ForceStop: "used" },
  // agent/instances/vpc-attribute.ts: a new primary address; the host name is never changed by it.
  ModifyInstancesVpcAttribute: {
    InstanceIds: "used",
    "VirtualPrivateCloud.VpcId": "checked",
    "VirtualPrivateCloud.SubnetId": "checked",
    "VirtualPrivateCloud.PrivateIpAddresses": "checked",
    "VirtualPrivateCloud.AsVpcGateway": { refuse: { VirtualPrivateCloud: { AsVpcGateway: true } } },
    "VirtualPrivateCloud.Ipv6AddressCount": { refuse: { VirtualPrivateCloud: { Ipv6AddressCount: 1 } } },
    ForceStop: "used",
    ReserveHostName: "info",
  },
  // agent/network/bandwidth/reset.ts: the cap on traffic leaving the VPC; the dates are prepaid bandwidth's only.
  ResetInstancesInternetMaxBandwidth: {
    InstanceIds: "used",
    "InternetAccessible.InternetMaxBandwidthOut": "used",
    "InternetAccessible.InternetChargeType": "info",
    "InternetAccessible.PublicIpAssigned": "info",
    StartTime: { refuse: { StartTime: "2030-01-01" } },
    EndTime: { refuse: { EndTime: "2030-01-01" } },
  },
  DescribeInstancesModification: { InstanceIds: "used", "Filters[].Name": "used", "Filters[].Values": "used" },
  // The Monitor API (agent/monitor): Namespace is checked (QCE/CVM only, the one this host serves).
  GetMonitorData: {
    Namespace: "checked",
    MetricName: "used",
    "Instances[].Dimensions[].Name": "checked",
    "Instances[].Dimensions[].Value": "used",
    Period: "used",
    StartTime: "used",
    EndTime: "used",
    SpecifyStatistics: "used",
  },
  DescribeBaseMetrics: { Namespace: "checked", MetricName: "used", Dimensions: "used" },
  // This agent's extensions (agent/metrics): alarms and the instance self-check.
  ModifyAlarmPolicies: { "Policies[].MetricName": "used", "Policies[].Operator": "used", "Policies[].Threshold": "used", "Policies[].ContinuePeriod": "used" },
  DescribeAlarmPolicies: {},
  CreateInstanceDiagnosticReports: { InstanceIds: "used" },
  DescribeInstanceDiagnosticReports: { InstanceIds: "used", ReportIds: "used" },
  // ENIs (VPC 2017-03-12; agent/network/enis): fields the host has no use for are not in the schemas (unknown parameters).
  CreateNetworkInterface: {
    VpcId: "checked",
    SubnetId: "checked",
    NetworkInterfaceName: "used",
    NetworkInterfaceDescription: "used",
    SecondaryPrivateIpAddressCount: "used",
    SecurityGroupIds: "checked",
    "PrivateIpAddresses[].PrivateIpAddress": "checked",
    "PrivateIpAddresses[].Primary": "used",
    "Tags[].Key": "used",
    "Tags[].Value": "used",
    ClientToken: "used",
  },
  DescribeNetworkInterfaces: { NetworkInterfaceIds: "used", ...FILTERS },
  AttachNetworkInterface: { NetworkInterfaceId: "checked", InstanceId: "checked" },
  DetachNetworkInterface: { NetworkInterfaceId: "checked", InstanceId: "checked" },
  DeleteNetworkInterface: { NetworkInterfaceId: "checked" },
  AssignPrivateIpAddresses: {
    NetworkInterfaceId: "checked",
    "PrivateIpAddresses[].PrivateIpAddress": "checked",
    "PrivateIpAddresses[].Primary": { refuse: { PrivateIpAddresses: [{ PrivateIpAddress: "10.0.0.5", Primary: true }] } },
    SecondaryPrivateIpAddressCount: "used",
  },
  UnassignPrivateIpAddresses: { NetworkInterfaceId: "checked", "PrivateIpAddresses[].PrivateIpAddress": "checked" },
  MigratePrivateIpAddress: { SourceNetworkInterfaceId: "checked", DestinationNetworkInterfaceId: "checked", PrivateIpAddress: "checked" },
  ModifyNetworkInterfaceAttribute: { NetworkInterfaceId: "checked", NetworkInterfaceName: "used", NetworkInterfaceDescription: "used", SecurityGroupIds: "checked" },
  DescribeVpcTaskResult: { TaskId: "used" },
  // The console (agent/console/access.ts).
  DescribeInstanceVncUrl: { InstanceId: "used" },
  DescribeInstanceSerialConsoleUrl: { InstanceId: "used" },
  DescribeInstanceSerialLog: { InstanceId: "used", Offset: "used", Limit: "used" },
  // Migration (agent/migration; README "Migration").
  MigrateInstances: {
    InstanceIds: "checked",
    DestinationHostId: "checked",
    DestinationEndpoint: "used",
    Live: "used",
    StopType: "used",
    MaxDowntime: "used",
    Bandwidth: "used",
    Deadline: "used",
    AllowPostCopy: "used",
    DryRun: "used",
  },
  CancelMigrateInstances: { InstanceIds: "checked" },
  MigrationPeerStep: {
    Step: "used",
    MigrationId: "used",
    InstanceId: "used",
    SourceHostId: "used",
    Live: "used",
    WasRunning: "used",
    Instance: "checked",
    // Records (objects of any fields): checked by the destination (agent/migration/service.ts).
    DataDisks: "checked",
    DiskBytes: "used",
    SourceDefaultGroupId: "used",
    RequestId: "used",
  },
};

/** A body each action takes, into which a refused sample is merged. */
const BASE: Record<string, Record<string, unknown>> = {
  AssignPrivateIpAddresses: { NetworkInterfaceId: "eni-abcd1234" },
  RunInstances: { InstanceType: "CDH_1C1G", ImageId: "img-abcd1234" },
  ResetInstance: { InstanceId: "ins-abcd1234" },
  CreateImage: { InstanceId: "ins-abcd1234", ImageName: "image" },
  CloneInstance: { InstanceId: "ins-abcd1234" },
  StopInstances: { InstanceIds: ["ins-abcd1234"] },
  ModifyInstancesAttribute: { InstanceIds: ["ins-abcd1234"] },
  EnterRescueMode: { InstanceId: "ins-abcd1234", Password: "Passw0rd!x" },
  InstanceAttachISO: { InstanceId: "ins-abcd1234", ImageUrl: "file:///var/tmp/x.iso", Architecture: "x86_64", OsType: "Debian", OsVersion: "12" },
  ImportImage: { Architecture: "x86_64", OsType: "Debian", OsVersion: "12", ImageUrl: "file:///var/tmp/image.raw", ImageName: "image" },
  ImportKeyPair: { KeyName: "key_1", ProjectId: 0, PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJAbGFwdG9wIGtleSBmb3IgdGVzdHMhIQ== user@laptop" },
  CreateKeyPair: { KeyName: "key_1", ProjectId: 0 },
  ModifyHostsAttribute: { HostIds: ["host-abcd1234"], HostName: "rack-7" },
  CreateDisks: { DiskType: "LOCAL_BASIC", DiskSize: 10 },
  AttachDisks: { DiskIds: ["disk-abcd1234"], InstanceId: "ins-abcd1234" },
  DescribeDisks: {},
  TerminateDisks: { DiskIds: ["disk-abcd1234"] },
  ResizeInstanceDisks: { InstanceId: "ins-abcd1234" },
  CreateSnapshot: { DiskId: "disk-abcd1234" },
  DescribeSnapshots: {},
  ApplySnapshot: { SnapshotId: "snap-abcd1234", DiskId: "disk-abcd1234" },
  ResetInstancesInternetMaxBandwidth: { InstanceIds: ["ins-abcd1234"], InternetAccessible: { InternetMaxBandwidthOut: 10 } },
  ModifyInstancesVpcAttribute: { InstanceIds: ["ins-abcd1234"], VirtualPrivateCloud: { VpcId: "vpc-default", SubnetId: "subnet-default" } },
};

/** Every field path of a schema: nested objects by `.`, arrays of objects by `[]`. */
function leaves(s: z.ZodTypeAny, path = ""): string[] {
  if (s instanceof z.ZodOptional || s instanceof z.ZodNullable || s instanceof z.ZodDefault) return leaves(s.unwrap() as z.ZodTypeAny, path);
  if (s instanceof z.ZodObject) return Object.entries(s.shape).flatMap(([k, v]) => leaves(v as z.ZodTypeAny, path ? `${path}.${k}` : k));
  if (s instanceof z.ZodArray && s.element instanceof z.ZodObject) return leaves(s.element as z.ZodTypeAny, `${path}[]`);
  return [path];
}

function merge(base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    const b = out[k];
    out[k] = v && typeof v === "object" && !Array.isArray(v) && b && typeof b === "object" && !Array.isArray(b) ? merge(b as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

const readme = readFileSync(resolve(import.meta.dirname, "../../../README.md"), "utf8");
const infoSection = readme.slice(readme.indexOf("### Accepted as information only"), readme.indexOf("\n### ", readme.indexOf("### Accepted as information only") + 5));

describe("every request field takes effect, is refused, or is documented as information only", () => {
  it("walks every action the agent serves but the security groups' (a new action needs its schema here and its fields' fates)", () => {
    expect(ACTIONS.filter((a) => !SECURITY_GROUP_ACTIONS.includes(a)).sort()).toEqual(Object.keys(SCHEMAS).sort());
  });

  it("the table names exactly the fields of every schema, for every CVM and CBS action", () => {
    expect(Object.keys(FIELD_FATES).sort()).toEqual(Object.keys(SCHEMAS).sort());
    for (const [action, schema] of Object.entries(SCHEMAS)) {
      const fields = leaves(schema).sort();
      expect({ action, fields }).toEqual({ action, fields: Object.keys(FIELD_FATES[action] ?? {}).sort() });
    }
  });

  const refusals = Object.entries(FIELD_FATES).flatMap(([action, fates]) =>
    Object.entries(fates).flatMap(([field, fate]) => (typeof fate === "object" ? [[action, field, fate.refuse] as const] : [])),
  );
  it.each(refusals)("%s %s: the refused value is refused naming the field", (action, field, patch) => {
    const r = refusal(action, merge(BASE[action] ?? {}, patch));
    expect(r.code).not.toBe("InternalError");
    expect(r.message).toContain(`\`${field.replaceAll("[]", ".0")}`);
  });

  const info = Object.entries(FIELD_FATES).flatMap(([action, fates]) =>
    Object.entries(fates).flatMap(([field, fate]) => (fate === "info" || (typeof fate === "object" && fate.info) ? [`${action}.${field}`] : [])),
  );
  it("lists every information-only field in the README, and nothing else there", () => {
    expect(infoSection.length).toBeGreaterThan(100);
    expect(info.filter((f) => !infoSection.includes(`\`${f}\``))).toEqual([]);
    const listed = [...infoSection.matchAll(/^\| `([A-Za-z]+\.[A-Za-z.[\]]+)` \|/gm)].map((m) => m[1]!);
    expect(listed.filter((f) => !info.includes(f))).toEqual([]);
  });
});
