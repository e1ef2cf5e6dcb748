/**
 * Instance lifecycle actions other than RunInstances: strict schemas and the
 * typed parameters they produce (reference/seeds-cvm-api.md §1.10).
 */
import { z } from "zod";
import { osTypeField, osVersionField } from "./schemas-os.js";
import { boundedString, fail, filterList, idList, idString, paging, parseWith, toFilters, toPaging, unique, unsupportedFields, type Filter, type Paging } from "./schemas.js";
import { URL_CREDENTIALS_MESSAGE, urlHasCredentials } from "./schemas-images.js";
import { boundGroupList } from "./schemas-vpc.js";

export type StopType = "SOFT" | "HARD" | "SOFT_FIRST";
const STOP_TYPES = ["SOFT", "HARD", "SOFT_FIRST"] as const;

/** The CVM filters that mean something on one host (agent/instances/views.ts; README "DescribeInstances filters"). */
export const INSTANCE_FILTER_NAMES = [
  "instance-id",
  "instance-name",
  "instance-state",
  "image-id",
  "host-id",
  "tag-key",
  "tag-value",
  "security-group-id",
  "zone",
  "project-id",
  "vpc-id",
  "subnet-id",
  "uuid",
  "instance-charge-type",
  "private-ip-address",
  "creation-start-time",
  "creation-end-time",
] as const;
/** `tag:<key>`: the instances whose tag <key> has one of the values. */
export const INSTANCE_FILTER_PREFIXES = ["tag:"] as const;
export type InstanceFilterName = (typeof INSTANCE_FILTER_NAMES)[number] | `tag:${string}`;

export interface DescribeInstancesParams extends Paging {
  /** Deduplicated; absent when not given. */
  instanceIds?: string[];
  /** [] when absent. AND across filters, OR across one filter's values. */
  filters: Filter<InstanceFilterName>[];
}

export interface DescribeInstancesStatusParams extends Paging {
  instanceIds?: string[];
}

export interface StartInstancesParams {
  instanceIds: string[];
}

export interface StopInstancesParams {
  instanceIds: string[];
  stopType: StopType;
  /** KEEP_CHARGING: what a stop is here (the instance keeps its CPU, memory and disks); information only. */
  stoppedMode?: "KEEP_CHARGING";
  dryRun: boolean;
}

export interface RebootInstancesParams {
  instanceIds: string[];
  mode: StopType;
}

export interface TerminateInstancesParams {
  instanceIds: string[];
  dryRun: boolean;
  /** Information only (README): there are no elastic IPs here; the private address is always released with the instance. */
  releaseAddress: boolean;
}

const describeInstancesSchema = z
  .object({ InstanceIds: idList("instance").optional(), Filters: filterList(INSTANCE_FILTER_NAMES, INSTANCE_FILTER_PREFIXES).optional(), ...paging })
  .strict()
  .superRefine((v, ctx) => {
    if (v.InstanceIds !== undefined && v.Filters !== undefined) {
      fail(ctx, "InvalidParameterCombination", "InstanceIds and Filters cannot be given together");
    }
  });

export function parseDescribeInstances(body: unknown): DescribeInstancesParams {
  const r = parseWith(describeInstancesSchema, body);
  const params: DescribeInstancesParams = { ...toPaging(r), filters: toFilters<InstanceFilterName>(r.Filters) };
  if (r.InstanceIds) params.instanceIds = unique(r.InstanceIds);
  return params;
}

const describeStatusSchema = z.object({ InstanceIds: idList("instance").optional(), ...paging }).strict();

export function parseDescribeInstancesStatus(body: unknown): DescribeInstancesStatusParams {
  const r = parseWith(describeStatusSchema, body);
  const params: DescribeInstancesStatusParams = toPaging(r);
  if (r.InstanceIds) params.instanceIds = unique(r.InstanceIds);
  return params;
}

const startSchema = z.object({ InstanceIds: idList("instance") }).strict();

export function parseStartInstances(body: unknown): StartInstancesParams {
  return { instanceIds: unique(parseWith(startSchema, body).InstanceIds) };
}

/**
 * StoppedMode: the seed documents it with the StopType values (SOFT, HARD,
 * SOFT_FIRST) but gives KEEP_CHARGING as its example, which is the public CVM
 * meaning. Both are accepted: a StopType value there is read as StopType (when
 * StopType is absent; when both are given they must agree).
 */
const stopSchema = z
  .object({
    InstanceIds: idList("instance"),
    StopType: z.enum(STOP_TYPES).optional(),
    ForceStop: z.boolean().optional(),
    StoppedMode: z.enum(["KEEP_CHARGING", "STOP_CHARGING", ...STOP_TYPES]).optional(),
    DryRun: z.boolean().optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    const modeAsType = (STOP_TYPES as readonly string[]).includes(v.StoppedMode ?? "") ? (v.StoppedMode as StopType) : undefined;
    if (v.StopType !== undefined && modeAsType !== undefined && v.StopType !== modeAsType) {
      fail(ctx, "InvalidParameterCombination", `StopType ${v.StopType} contradicts StoppedMode ${modeAsType}`);
      return;
    }
    if (v.StoppedMode === "STOP_CHARGING") {
      fail(ctx, "InvalidParameterValue", "cannot be STOP_CHARGING: a stopped instance on a dedicated host keeps its CPU, memory and disks (KEEP_CHARGING)", ["StoppedMode"]);
      return;
    }
    const explicit = v.StopType ?? modeAsType;
    if (explicit !== undefined && v.ForceStop !== undefined) {
      const forceImplied = explicit !== "SOFT";
      if (v.ForceStop !== forceImplied) {
        fail(ctx, "InvalidParameterCombination", `ForceStop ${v.ForceStop} contradicts StopType ${explicit}`);
      }
    }
  });

/** Explicit StopType wins; else ForceStop true → SOFT_FIRST; else SOFT. */
export function parseStopInstances(body: unknown): StopInstancesParams {
  const r = parseWith(stopSchema, body);
  const modeAsType = (STOP_TYPES as readonly string[]).includes(r.StoppedMode ?? "") ? (r.StoppedMode as StopType) : undefined;
  const stopType: StopType = r.StopType ?? modeAsType ?? (r.ForceStop ? "SOFT_FIRST" : "SOFT");
  const params: StopInstancesParams = { instanceIds: unique(r.InstanceIds), stopType, dryRun: r.DryRun ?? false };
  if (r.StoppedMode === "KEEP_CHARGING") params.stoppedMode = r.StoppedMode;
  return params;
}

const rebootSchema = z
  .object({ InstanceIds: idList("instance"), ForceReboot: z.boolean().optional(), StopType: z.enum(STOP_TYPES).optional() })
  .strict()
  .superRefine((v, ctx) => {
    if (v.ForceReboot !== undefined && v.StopType !== undefined) {
      fail(ctx, "InvalidParameterCombination", "ForceReboot cannot be combined with StopType");
    }
  });

/** StopType as given; ForceReboot true → SOFT_FIRST; default SOFT. */
export function parseRebootInstances(body: unknown): RebootInstancesParams {
  const r = parseWith(rebootSchema, body);
  return { instanceIds: unique(r.InstanceIds), mode: r.StopType ?? (r.ForceReboot ? "SOFT_FIRST" : "SOFT") };
}

const terminateSchema = z
  .object({ InstanceIds: idList("instance"), DryRun: z.boolean().optional(), ReleaseAddress: z.boolean().optional() })
  .strict();

export function parseTerminateInstances(body: unknown): TerminateInstancesParams {
  const r = parseWith(terminateSchema, body);
  return { instanceIds: unique(r.InstanceIds), dryRun: r.DryRun ?? false, releaseAddress: r.ReleaseAddress ?? false };
}

// ------------------------------------------------------------------ rescue mode, ISO

export interface EnterRescueModeParams {
  instanceId: string;
  password: string;
  stopType: StopType;
}

const enterRescueSchema = z
  .object({
    InstanceId: idString("instance"),
    Password: z.string(),
    Username: z.string().optional(),
    ForceStop: z.boolean().optional(),
    StopType: z.enum(STOP_TYPES).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.ForceStop !== undefined && v.StopType !== undefined) fail(ctx, "InvalidParameterCombination", "ForceStop and StopType cannot be combined", ["StopType"]);
    if (v.Username !== undefined && v.Username !== "root") fail(ctx, "InvalidParameterValue", "the rescue system's user is root", ["Username"]);
  });

export function parseEnterRescueMode(body: unknown): EnterRescueModeParams {
  const r = parseWith(enterRescueSchema, body);
  return { instanceId: r.InstanceId, password: r.Password, stopType: r.StopType ?? (r.ForceStop ? "SOFT_FIRST" : "SOFT") };
}

export interface InstanceIdParams {
  instanceId: string;
}

const exitRescueSchema = z.object({ InstanceId: idString("instance") }).strict();

export function parseExitRescueMode(body: unknown): InstanceIdParams {
  return { instanceId: parseWith(exitRescueSchema, body).InstanceId };
}

export interface InstanceAttachIsoParams {
  instanceId: string;
  imageUrl: string;
  dryRun: boolean;
}

const attachIsoSchema = z
  .object({
    InstanceId: idString("instance"),
    ImageUrl: z
      .string()
      .min(1)
      .superRefine((v, ctx) => {
        if (urlHasCredentials(v)) fail(ctx, "InvalidParameter.InvalidParameterUrlError", URL_CREDENTIALS_MESSAGE);
      }),
    Architecture: z.enum(["x86_64", "arm_64"]).superRefine((v, ctx) => {
      if (v !== "x86_64") fail(ctx, "InvalidParameterValue", "must be x86_64: the guests on this host are x86_64 machines");
    }),
    // Information only (README): the ISO is a CD-ROM to the guest whatever OS it holds.
    OsType: osTypeField,
    OsVersion: osVersionField,
    DryRun: z.boolean().optional(),
  })
  .strict();

export function parseInstanceAttachIso(body: unknown): InstanceAttachIsoParams {
  const r = parseWith(attachIsoSchema, body);
  return { instanceId: r.InstanceId, imageUrl: r.ImageUrl, dryRun: r.DryRun ?? false };
}

export function parseInstanceDetachIso(body: unknown): InstanceIdParams {
  return { instanceId: parseWith(exitRescueSchema, body).InstanceId };
}

// ------------------------------------------------------------------ ModifyInstancesAttribute

/**
 * ModifyInstancesAttribute (reference/tencent-api-next.md §C.3): one kind of attribute per
 * call, for up to 100 instances. SecurityGroups replaces the instances' groups (the list's
 * order is their priority).
 */
export interface ModifyInstancesAttributeParams {
  instanceIds: string[];
  securityGroups?: string[];
  /** The new name (record only). */
  instanceName?: string;
  /** Termination protection: TerminateInstances refuses the instances while it is true. */
  disableApiTermination?: boolean;
}

/** The attributes this action changes; a call names exactly one of them. */
const MODIFY_ATTRIBUTES = ["InstanceName", "DisableApiTermination", "SecurityGroups"] as const;

const modifyInstancesAttributeSchema = z
  .object({
    InstanceIds: idList("instance"),
    SecurityGroups: boundGroupList.optional(),
    InstanceName: boundedString(60, "InvalidInstanceName.TooLong").optional(),
    DisableApiTermination: z.boolean().optional(),
    // Not offered on this host: refused by name (a HostName change needs the guest to apply it and a reboot).
    ...unsupportedFields(["UserData", "HostName", "AutoReboot", "CamRoleName", "CamRoleType", "EnableJumboFrame", "ResetNewCreationIdentify"]),
  })
  .strict()
  .superRefine((v, ctx) => {
    const given = MODIFY_ATTRIBUTES.filter((name) => v[name] !== undefined);
    if (given.length === 0) fail(ctx, "MissingParameter", `names no attribute to change: give one of ${MODIFY_ATTRIBUTES.join(", ")}`, [MODIFY_ATTRIBUTES[0]]);
    if (given.length > 1) fail(ctx, "InvalidParameterCombination", `changes ${given.join(" and ")}: one kind of attribute per call`, [given[1]!]);
  });

export function parseModifyInstancesAttribute(body: unknown): ModifyInstancesAttributeParams {
  const r = parseWith(modifyInstancesAttributeSchema, body);
  return {
    instanceIds: unique(r.InstanceIds),
    ...(r.SecurityGroups ? { securityGroups: [...r.SecurityGroups] } : {}),
    ...(r.InstanceName !== undefined ? { instanceName: r.InstanceName } : {}),
    ...(r.DisableApiTermination !== undefined ? { disableApiTermination: r.DisableApiTermination } : {}),
  };
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const INSTANCE_REQUEST_SCHEMAS = {
  DescribeInstances: describeInstancesSchema,
  DescribeInstancesStatus: describeStatusSchema,
  StartInstances: startSchema,
  StopInstances: stopSchema,
  RebootInstances: rebootSchema,
  TerminateInstances: terminateSchema,
  ModifyInstancesAttribute: modifyInstancesAttributeSchema,
  EnterRescueMode: enterRescueSchema,
  ExitRescueMode: exitRescueSchema,
  InstanceAttachISO: attachIsoSchema,
  InstanceDetachISO: exitRescueSchema,
} as const;
