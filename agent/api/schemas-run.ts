/**
 * RunInstances: the strict request schema, its typed parameters, and the pure
 * naming helpers (InstanceName templates, HostName rules).
 * Rules come from reference/seeds-cvm-api.md §1.10 (RunInstances) and §2.
 */
import { z } from "zod";
import { boundGroupList } from "./schemas-vpc.js";
import type { InstanceTag } from "../model.js";
import { instanceTagSpecification, toInstanceTags } from "./schemas-tags.js";
import { MAX_INTERNET_MBPS } from "../network/bandwidth/rule.js";
import {
  boundedString,
  defaultProjectOnly,
  fail,
  idList,
  idString,
  intInRange,
  parseWith,
  unique,
  unsupportedFields,
  type Ctx,
} from "./schemas.js";

export type LocalDiskType = "LOCAL_BASIC" | "LOCAL_SSD";

export interface DataDiskParams {
  diskType: LocalDiskType;
  diskSizeGiB: number;
  deleteWithInstance: boolean;
  diskId?: string;
  snapshotId?: string;
}

export interface RunInstancesParams {
  instanceChargeType: "CDHPAID";
  /** projectId is 0 when given (the schema refuses any other); zone is checked against the host's by the dispatcher. */
  placement: { zone?: string; projectId?: number; hostId?: string; hostIds?: string[] };
  /** As sent, e.g. `CDH_2C4G`. */
  instanceType: string;
  cpu: number;
  memoryGiB: number;
  imageId: string;
  systemDisk: { diskType: LocalDiskType; diskSizeGiB: number; diskSizeGiven: boolean };
  /** [] when absent. */
  dataDisks: DataDiskParams[];
  virtualPrivateCloud?: {
    vpcId: string;
    subnetId: string;
    privateIpAddresses?: string[];
    asVpcGateway: boolean;
    ipv6AddressCount?: number;
  };
  instanceCount: number;
  /** As sent; use expandInstanceNames(instanceName, instanceCount) for the names. */
  instanceName?: string;
  hostName?: string;
  loginSettings?: { password?: string; keyIds?: string[]; keepImageLogin: boolean };
  /** Base64 text as sent (validated). */
  userData?: string;
  /** The decoded user data. */
  userDataBytes?: Buffer;
  clientToken?: string;
  dryRun: boolean;
  disableApiTermination: boolean;
  /** Top-level ProjectId: 0 when given (the schema refuses any other). */
  projectId?: number;
  /** TagSpecification's tags (ResourceType instance); [] when absent. */
  tags: InstanceTag[];
  /** SecurityGroupIds in priority order; absent: the host's default group. */
  securityGroupIds?: string[];
  /** InternetAccessible.InternetMaxBandwidthOut, Mbit/s, when above 0 (the launch checks the subnet). */
  internetMaxBandwidthOut?: number;
}

export const MAX_USER_DATA_BYTES = 16384;
export const DEFAULT_SYSTEM_DISK_GIB = 50;

const OTHER_CVM_CHARGE_TYPES = ["PREPAID", "POSTPAID_BY_HOUR", "SPOTPAID"];
const CLOUD_DISK_TYPES = ["CLOUD_BASIC", "CLOUD_SSD", "CLOUD_PREMIUM", "CLOUD_HSSD"];

function localDiskType() {
  return z.string().superRefine((v, ctx) => {
    if (v === "LOCAL_BASIC" || v === "LOCAL_SSD") return;
    const why = CLOUD_DISK_TYPES.includes(v) ? "cloud disks do not exist on a dedicated host" : `'${v}' is not a disk type`;
    fail(ctx, "InvalidParameterValue", `must be LOCAL_BASIC or LOCAL_SSD: ${why}`);
  });
}

const INSTANCE_TYPE_RE = /^CDH_([1-9][0-9]{0,5})C([1-9][0-9]{0,7})G$/;

/** `CDH_<cores>C<GiB>G` → cpu and memory, or undefined. */
export function parseInstanceType(value: string): { cpu: number; memoryGiB: number } | undefined {
  const m = INSTANCE_TYPE_RE.exec(value);
  if (!m) return undefined;
  return { cpu: Number(m[1]), memoryGiB: Number(m[2]) };
}

/**
 * The Linux HostName rule of RunInstances (seed ~19925): 2–31 characters; dots
 * split it into segments of letters, digits and `-`; not all digits; `.` and `-`
 * neither first nor last nor repeated; no `.-` or `-.`. Returns the broken rule.
 */
export function hostNameProblem(name: string): string | undefined {
  if (name.length < 2 || name.length > 31) return `must be 2 to 31 characters long, got ${name.length}`;
  if (!/^[A-Za-z0-9.-]+$/.test(name)) return "may contain only letters, digits, '-' and '.'";
  if (/^[.-]|[.-]$/.test(name)) return "must not start or end with '.' or '-'";
  if (/\.\.|--/.test(name)) return "must not contain '..' or '--'";
  if (/\.-|-\./.test(name)) return "must not contain '.-' or '-.'";
  if (/^[0-9.]+$/.test(name)) return "must not be all digits";
  return undefined;
}

const TEMPLATE_RE = /\{R:(\d+)\}/g;

/**
 * The display names of `count` instances created with `name`.
 * The seed (RunInstances, ~19964) says only: at most 60 characters, "the part
 * after a dot is filtered out", example `server_{R:3}`. The expansion follows
 * CVM's public documentation of the same parameter:
 * - every `{R:x}` becomes x, x+1, …, x+count-1 (server_{R:3} → server_3, server_4);
 * - without a template and count > 1, the suffixes 1..count are appended
 *   directly (server_ → server_1, server_2); count = 1 keeps the name.
 * The dot rule is applied first: `web.example` names the instance `web`.
 */
export function expandInstanceNames(name: string, count: number): string[] {
  const dot = name.indexOf(".");
  const base = dot >= 0 ? name.slice(0, dot) : name;
  const names: string[] = [];
  const hasTemplate = new RegExp(TEMPLATE_RE.source).test(base);
  for (let i = 0; i < count; i++) {
    if (hasTemplate) names.push(base.replace(TEMPLATE_RE, (_m, start: string) => String(Number(start) + i)));
    else names.push(count > 1 ? `${base}${i + 1}` : base);
  }
  return names;
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function checkUserData(value: string, ctx: Ctx): void {
  if (value === "" || !STRICT_BASE64.test(value)) {
    fail(ctx, "InvalidParameterValue", "must be base64 text (alphabet A-Z a-z 0-9 + /, padded with '=')");
    return;
  }
  const size = Buffer.byteLength(value, "base64");
  if (size > MAX_USER_DATA_BYTES) {
    fail(ctx, "InvalidParameterValue", `decodes to ${size} bytes; at most ${MAX_USER_DATA_BYTES} are allowed`);
  }
}

const placementSchema = z
  .object({
    Zone: z.string().optional(),
    ProjectId: defaultProjectOnly().optional(),
    HostId: idString("host").optional(),
    HostIds: idList("host").optional(),
  })
  .strict();

/** A new instance's system disk: DiskId cannot be chosen (a local disk gets its ID when it is made). */
const systemDiskSchema = z
  .object({
    DiskType: localDiskType().optional(),
    DiskSize: intInRange(1, 16384).optional(),
    DiskId: z
      .unknown()
      .superRefine((v, ctx) => {
        if (v !== undefined) fail(ctx, "InvalidParameterValue", "cannot be chosen: a new instance's local system disk gets its ID when it is made");
      })
      .optional(),
  })
  .strict();

const dataDiskSchema = z
  .object({
    DiskType: localDiskType().optional(),
    DiskSize: intInRange(1, 16384),
    DeleteWithInstance: z.boolean().optional(),
    DiskId: z.string().optional(),
    SnapshotId: z.string().optional(),
  })
  .strict();

const vpcSchema = z
  .object({
    VpcId: z.string(),
    SubnetId: z.string(),
    PrivateIpAddresses: z.array(z.string()).optional(),
    AsVpcGateway: z.boolean().optional(),
    Ipv6AddressCount: intInRange(0, 100).optional(),
  })
  .strict();

/** LoginSettings as the service takes them. */
export interface LoginSettingsParams {
  password?: string;
  keyIds?: string[];
  keepImageLogin: boolean;
}

function toLoginSettings(l: { Password?: string | undefined; KeyIds?: string[] | undefined; KeepImageLogin?: "TRUE" | "FALSE" | undefined }): LoginSettingsParams {
  return {
    keepImageLogin: l.KeepImageLogin === "TRUE",
    ...(l.Password !== undefined ? { password: l.Password } : {}),
    ...(l.KeyIds !== undefined ? { keyIds: unique(l.KeyIds) } : {}),
  };
}

const hostNameSchema = z.string().superRefine((v, ctx) => {
  const problem = hostNameProblem(v);
  if (problem) fail(ctx, "InvalidParameterValue", problem);
});

const loginSettingsSchema = z
  .object({
    Password: z.string().optional(),
    KeyIds: z.array(idString("keyPair")).optional(),
    KeepImageLogin: z.enum(["TRUE", "FALSE"]).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.Password !== undefined && v.KeyIds !== undefined) {
      fail(ctx, "InvalidParameterCombination", "Password and KeyIds cannot both be set in LoginSettings");
    } else if (v.KeepImageLogin === "TRUE" && (v.Password !== undefined || v.KeyIds !== undefined)) {
      fail(ctx, "InvalidParameterCombination", "KeepImageLogin TRUE cannot be combined with Password or KeyIds");
    }
  });

/**
 * InternetMaxBandwidthOut (Mbit/s, 0 to 1000) caps the traffic that leaves the VPC; the launch
 * refuses a non-zero cap unless the instance's subnet has a route out of the VPC
 * (subnets[].internet_route, README "Bandwidth and packet caps"). No public IP exists on a host:
 * PublicIpAssigned true is refused. InternetChargeType is information only; any other field of
 * CVM's InternetAccessible (BandwidthPackageId, …) is an unknown parameter.
 */
const internetAccessibleSchema = z
  .object({ InternetMaxBandwidthOut: intInRange(0, MAX_INTERNET_MBPS).optional(), PublicIpAssigned: z.boolean().optional(), InternetChargeType: z.string().optional() })
  .strict()
  .superRefine((v, ctx) => {
    if (v.PublicIpAssigned === true) fail(ctx, "InvalidParameterValue", "asks for a public IP: there is no public network on this host", ["PublicIpAssigned"]);
  });

/**
 * EnhancedService: the cloud security, monitoring and automation agents CVM installs in a guest.
 * None exists on this host: `Enabled: false` (what the guest gets anyway) is accepted, `true` refused
 * naming the service.
 */
const serviceSwitch = z
  .object({ Enabled: z.boolean().optional() })
  .strict()
  .superRefine((v, ctx) => {
    if (v.Enabled === true) fail(ctx, "InvalidParameterValue", "cannot be true: this host installs no cloud security, monitoring or automation agent in guests", ["Enabled"]);
  });
const enhancedServiceSchema = z
  .object({ SecurityService: serviceSwitch.optional(), MonitorService: serviceSwitch.optional(), AutomationService: serviceSwitch.optional() })
  .strict();

const RUN_UNSUPPORTED = [
  "InstanceChargePrepaid",
  "MinCount",
  "SpotPrice",
  "ActionTimer",
  "DisasterRecoverGroupIds",
  "ProjectSpecification",
  "InstanceMarketOptions",
  "Metadata",
  "CpuTopology",
  "CamRoleName",
  "HpcClusterId",
  "LaunchTemplate",
  "DedicatedClusterId",
  "ChcIds",
  "PartitionNumber",
  "EnableJumboFrame",
  "NetworkInterfaces",
] as const;

/** InstanceChargeType: CDHPAID, the only kind on a dedicated host (information only: nothing is billed here). */
const chargeTypeSchema = z.string().superRefine((v, ctx) => {
  if (v === "CDHPAID") return;
  const what = OTHER_CVM_CHARGE_TYPES.includes(v) ? `'${v}' is a CVM charge type` : `'${v}' is not a charge type`;
  fail(ctx, "InvalidParameterValue", `must be CDHPAID: ${what}; only CDHPAID on a dedicated host`);
});

export const runInstancesSchema = z
  .object({
    InstanceChargeType: chargeTypeSchema.optional(),
    Placement: placementSchema.optional(),
    InstanceType: z.string().superRefine((v, ctx) => {
      if (!parseInstanceType(v)) {
        fail(ctx, "InvalidInstanceType.Malformed", `'${v}' is not CDH_<cores>C<GiB>G with whole numbers of at least 1, e.g. CDH_2C4G`);
      }
    }),
    ImageId: idString("image"),
    SystemDisk: systemDiskSchema.optional(),
    DataDisks: z.array(dataDiskSchema).optional(),
    VirtualPrivateCloud: vpcSchema.optional(),
    InstanceCount: intInRange(1, 100).optional(),
    InstanceName: boundedString(60, "InvalidInstanceName.TooLong").optional(),
    HostName: hostNameSchema.optional(),
    LoginSettings: loginSettingsSchema.optional(),
    UserData: z.string().superRefine(checkUserData).optional(),
    ClientToken: z
      .string()
      .superRefine((v, ctx) => {
        if (!/^[\x20-\x7e]*$/.test(v)) fail(ctx, "InvalidParameterValue", "must be printable ASCII");
        else if (v.length === 0) fail(ctx, "InvalidParameterValue", "must not be empty");
        else if (v.length > 64) fail(ctx, "InvalidClientToken.TooLong", `is ${v.length} characters long; at most 64 are allowed`);
      })
      .optional(),
    DryRun: z.boolean().optional(),
    EnhancedService: enhancedServiceSchema.optional(),
    // Information only (README, "Accepted as information only"): where the order came from.
    PurchaseSource: z.string().optional(),
    // In priority order (agent/network/security-groups); absent: the host's default group.
    SecurityGroupIds: boundGroupList.optional(),
    InternetAccessible: internetAccessibleSchema.optional(),
    TagSpecification: instanceTagSpecification.optional(),
    DisableApiTermination: z.boolean().optional(),
    ProjectId: defaultProjectOnly().optional(),
    ...unsupportedFields(RUN_UNSUPPORTED),
  })
  .strict();

type RunInstancesRequest = z.output<typeof runInstancesSchema>;

export function parseRunInstances(body: unknown): RunInstancesParams {
  const r: RunInstancesRequest = parseWith(runInstancesSchema, body);
  const type = parseInstanceType(r.InstanceType)!;
  const params: RunInstancesParams = {
    instanceChargeType: "CDHPAID",
    placement: {},
    instanceType: r.InstanceType,
    cpu: type.cpu,
    memoryGiB: type.memoryGiB,
    imageId: r.ImageId,
    systemDisk: {
      diskType: (r.SystemDisk?.DiskType ?? "LOCAL_BASIC") as LocalDiskType,
      diskSizeGiB: r.SystemDisk?.DiskSize ?? DEFAULT_SYSTEM_DISK_GIB,
      diskSizeGiven: r.SystemDisk?.DiskSize !== undefined,
    },
    dataDisks: (r.DataDisks ?? []).map((d) => {
      const disk: DataDiskParams = {
        diskType: (d.DiskType ?? "LOCAL_BASIC") as LocalDiskType,
        diskSizeGiB: d.DiskSize,
        deleteWithInstance: d.DeleteWithInstance ?? true,
      };
      if (d.DiskId !== undefined) disk.diskId = d.DiskId;
      if (d.SnapshotId !== undefined) disk.snapshotId = d.SnapshotId;
      return disk;
    }),
    instanceCount: r.InstanceCount ?? 1,
    dryRun: r.DryRun ?? false,
    disableApiTermination: r.DisableApiTermination ?? false,
    tags: toInstanceTags(r.TagSpecification),
  };
  const p = r.Placement;
  if (p?.Zone !== undefined) params.placement.zone = p.Zone;
  if (p?.ProjectId !== undefined) params.placement.projectId = p.ProjectId;
  if (p?.HostId !== undefined) params.placement.hostId = p.HostId;
  if (p?.HostIds !== undefined) params.placement.hostIds = unique(p.HostIds);
  const v = r.VirtualPrivateCloud;
  if (v) {
    params.virtualPrivateCloud = { vpcId: v.VpcId, subnetId: v.SubnetId, asVpcGateway: v.AsVpcGateway ?? false };
    if (v.PrivateIpAddresses !== undefined) params.virtualPrivateCloud.privateIpAddresses = [...v.PrivateIpAddresses];
    if (v.Ipv6AddressCount !== undefined) params.virtualPrivateCloud.ipv6AddressCount = v.Ipv6AddressCount;
  }
  if (r.InstanceName !== undefined) params.instanceName = r.InstanceName;
  if (r.HostName !== undefined) params.hostName = r.HostName;
  if (r.LoginSettings) params.loginSettings = toLoginSettings(r.LoginSettings);
  if (r.UserData !== undefined) {
    params.userData = r.UserData;
    params.userDataBytes = Buffer.from(r.UserData, "base64");
  }
  if (r.ClientToken !== undefined) params.clientToken = r.ClientToken;
  if (r.SecurityGroupIds !== undefined) params.securityGroupIds = [...r.SecurityGroupIds];
  if ((r.InternetAccessible?.InternetMaxBandwidthOut ?? 0) > 0) params.internetMaxBandwidthOut = r.InternetAccessible!.InternetMaxBandwidthOut!;
  const projectId = r.ProjectId ?? p?.ProjectId;
  if (projectId !== undefined) params.projectId = projectId;
  return params;
}

// ------------------------------------------------------------------ ResetInstance

export interface ResetInstanceParams {
  instanceId: string;
  /** Absent: reinstall with the instance's current image. */
  imageId?: string;
  /** A new (larger or equal) system disk size, GiB. */
  systemDiskGiB?: number;
  /** SystemDisk.DiskType and DiskId as sent: they must name the instance's own system disk (the dispatcher checks). */
  systemDiskType?: LocalDiskType;
  systemDiskId?: string;
  loginSettings?: { password?: string; keyIds?: string[]; keepImageLogin: boolean };
  hostName?: string;
  userData?: string;
  dryRun: boolean;
}

const resetInstanceSchema = z
  .object({
    InstanceId: idString("instance"),
    ImageId: idString("image").optional(),
    SystemDisk: z.object({ DiskSize: intInRange(1, 16384).optional(), DiskType: localDiskType().optional(), DiskId: z.string().optional() }).strict().optional(),
    LoginSettings: loginSettingsSchema.optional(),
    EnhancedService: enhancedServiceSchema.optional(),
    HostName: hostNameSchema.optional(),
    UserData: z.string().superRefine(checkUserData).optional(),
    DryRun: z.boolean().optional(),
  })
  .strict();

export function parseResetInstance(body: unknown): ResetInstanceParams {
  const r = parseWith(resetInstanceSchema, body);
  const params: ResetInstanceParams = { instanceId: r.InstanceId, dryRun: r.DryRun ?? false };
  if (r.ImageId !== undefined) params.imageId = r.ImageId;
  if (r.SystemDisk?.DiskSize !== undefined) params.systemDiskGiB = r.SystemDisk.DiskSize;
  if (r.SystemDisk?.DiskType !== undefined) params.systemDiskType = r.SystemDisk.DiskType as LocalDiskType;
  if (r.SystemDisk?.DiskId !== undefined) params.systemDiskId = r.SystemDisk.DiskId;
  if (r.LoginSettings) params.loginSettings = toLoginSettings(r.LoginSettings);
  if (r.HostName !== undefined) params.hostName = r.HostName;
  if (r.UserData !== undefined) params.userData = r.UserData;
  return params;
}

// ------------------------------------------------------------------ CreateImage, CloneInstance

export interface CreateImageParams {
  instanceId: string;
  imageName: string;
  imageDescription?: string;
  /** Sysprep TRUE: the seed's clean-up of logs and shell histories, in the running guest. */
  cleanGuest: boolean;
  dryRun: boolean;
}

const createImageSchema = z
  .object({
    InstanceId: idString("instance"),
    ImageName: boundedString(60),
    ImageDescription: boundedString(256).optional(),
    // Information only (README): it permits a forced power-off; the agent never powers an instance off to image it.
    ForcePoweroff: z.enum(["TRUE", "FALSE"]).optional(),
    Sysprep: z.enum(["TRUE", "FALSE"]).optional(),
    DataDiskIds: z.array(z.string()).optional(),
    SnapshotIds: z.array(z.string()).optional(),
    DryRun: z.boolean().optional(),
    ...unsupportedFields(["ImageFamily"]),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.DataDiskIds?.length) fail(ctx, "InvalidParameterValue", "is not supported: images hold the system disk only", ["DataDiskIds"]);
    if (v.SnapshotIds?.length) fail(ctx, "InvalidParameterValue", "is not supported: images are made from the instance's disk", ["SnapshotIds"]);
  });

export function parseCreateImage(body: unknown): CreateImageParams {
  const r = parseWith(createImageSchema, body);
  return {
    instanceId: r.InstanceId,
    imageName: r.ImageName,
    ...(r.ImageDescription !== undefined ? { imageDescription: r.ImageDescription } : {}),
    cleanGuest: r.Sysprep === "TRUE",
    dryRun: r.DryRun ?? false,
  };
}

export interface CloneInstanceParams {
  instanceId: string;
  dataDiskIds: string[];
  instanceCount: number;
  instanceName?: string;
  /** Another size than the source's (CDH_<n>C<m>G). */
  type?: { name: string; cpu: number; memoryGiB: number };
  systemDiskGiB?: number;
  /** Another system disk type than the source's. */
  systemDiskType?: LocalDiskType;
  hostId?: string;
  hostIds?: string[];
  /** Placement.Zone as sent; the dispatcher checks it is the host's. */
  zone?: string;
  virtualPrivateCloud?: { vpcId: string; subnetId: string; privateIpAddresses?: string[]; asVpcGateway: boolean; ipv6AddressCount?: number };
  loginSettings?: { password?: string; keyIds?: string[]; keepImageLogin: boolean };
  hostName?: string;
  userData?: string;
  clientToken?: string;
  disableApiTermination: boolean;
  /** SecurityGroupIds in priority order; absent: the source instance's groups. */
  securityGroupIds?: string[];
}

const cloneInstanceSchema = z
  .object({
    InstanceId: idString("instance"),
    DataDiskIds: z.array(z.string()).optional(),
    InstanceChargeType: chargeTypeSchema.optional(),
    Placement: placementSchema.optional(),
    InstanceType: z
      .string()
      .superRefine((v, ctx) => {
        if (!parseInstanceType(v)) fail(ctx, "InvalidInstanceType.Malformed", `${JSON.stringify(v)} is not of the form CDH_<cores>C<GiB>G`);
      })
      .optional(),
    SystemDisk: systemDiskSchema.optional(),
    VirtualPrivateCloud: vpcSchema.optional(),
    InstanceCount: intInRange(1, 100).optional(),
    InstanceName: boundedString(60, "InvalidInstanceName.TooLong").optional(),
    LoginSettings: loginSettingsSchema.optional(),
    HostName: hostNameSchema.optional(),
    UserData: z.string().superRefine(checkUserData).optional(),
    ClientToken: boundedString(64, "InvalidClientToken.TooLong").optional(),
    EnhancedService: enhancedServiceSchema.optional(),
    // In priority order (agent/network/security-groups); absent: the host's default group.
    SecurityGroupIds: boundGroupList.optional(),
    DisableApiTermination: z.boolean().optional(),
    // Information only (README): where the order came from.
    PurchaseSource: z.string().optional(),
  })
  .strict();

export function parseCloneInstance(body: unknown): CloneInstanceParams {
  const r = parseWith(cloneInstanceSchema, body);
  const params: CloneInstanceParams = {
    instanceId: r.InstanceId,
    dataDiskIds: r.DataDiskIds ?? [],
    instanceCount: r.InstanceCount ?? 1,
    disableApiTermination: r.DisableApiTermination ?? false,
  };
  if (r.InstanceName !== undefined) params.instanceName = r.InstanceName;
  if (r.InstanceType !== undefined) params.type = { name: r.InstanceType, ...parseInstanceType(r.InstanceType)! };
  if (r.SystemDisk?.DiskSize !== undefined) params.systemDiskGiB = r.SystemDisk.DiskSize;
  if (r.SystemDisk?.DiskType !== undefined) params.systemDiskType = r.SystemDisk.DiskType as LocalDiskType;
  if (r.Placement?.HostId !== undefined) params.hostId = r.Placement.HostId;
  if (r.Placement?.HostIds !== undefined) params.hostIds = unique(r.Placement.HostIds);
  if (r.Placement?.Zone !== undefined) params.zone = r.Placement.Zone;
  const v = r.VirtualPrivateCloud;
  if (v) {
    params.virtualPrivateCloud = {
      vpcId: v.VpcId,
      subnetId: v.SubnetId,
      asVpcGateway: v.AsVpcGateway ?? false,
      ...(v.PrivateIpAddresses ? { privateIpAddresses: v.PrivateIpAddresses } : {}),
      ...(v.Ipv6AddressCount !== undefined ? { ipv6AddressCount: v.Ipv6AddressCount } : {}),
    };
  }
  if (r.LoginSettings) params.loginSettings = toLoginSettings(r.LoginSettings);
  if (r.HostName !== undefined) params.hostName = r.HostName;
  if (r.UserData !== undefined) params.userData = r.UserData;
  if (r.ClientToken !== undefined) params.clientToken = r.ClientToken;
  if (r.SecurityGroupIds !== undefined) params.securityGroupIds = [...r.SecurityGroupIds];
  return params;
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const RUN_REQUEST_SCHEMAS = { RunInstances: runInstancesSchema, ResetInstance: resetInstanceSchema, CreateImage: createImageSchema, CloneInstance: cloneInstanceSchema } as const;
