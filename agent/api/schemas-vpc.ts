/**
 * The VPC API's security-group actions (2017-03-12, reference/tencent-api-next.md §A.2) and
 * the CVM actions that bind groups to instances (§A.3, §C.3): strict schemas and the typed
 * parameters they produce. What a rule may say is the domain's check
 * (agent/network/security-groups/rules.ts); here only the JSON shape, the IDs and paging.
 *
 * Leniency the SDK needs (§E.3): Offset and Limit, ProjectId and Version are typed string
 * in the SDK and numbers in many callers, so both are taken; Port likewise.
 * PolicyStatistics (output) may be echoed back inside a SecurityGroupPolicySet and is not read.
 */
import { z } from "zod";
import type { ErrorCode } from "../errors.js";
import type { PolicyInput, PolicySetInput } from "../network/security-groups/rules.js";
import { MAX_INSTANCES_PER_BINDING, SG_ID } from "../network/security-groups/model.js";
import type { SgFilter } from "../network/security-groups/views.js";
import { boundedString, fail, idList, parseWith, unique } from "./schemas.js";

function sgId(code: ErrorCode) {
  return z.string().superRefine((v, ctx) => {
    if (!SG_ID.test(v)) fail(ctx, code, `'${v}' is not a security group ID (sg- followed by 8 lowercase letters or digits)`);
  });
}
const vpcSgId = sgId("InvalidParameterValue.Malformed");

/** A string the SDK types as string that callers also send as a number. */
const stringish = z.union([z.string(), z.number()]).transform((v) => String(v));

const policySchema = z
  .object({
    PolicyIndex: z.number().int().optional(),
    Protocol: z.string().optional(),
    Port: stringish.optional(),
    ServiceTemplate: z.object({ ServiceId: z.string().optional(), ServiceGroupId: z.string().optional() }).strict().optional(),
    CidrBlock: z.string().optional(),
    Ipv6CidrBlock: z.string().optional(),
    SecurityGroupId: z.string().optional(),
    AddressTemplate: z.object({ AddressId: z.string().optional(), AddressGroupId: z.string().optional() }).strict().optional(),
    Action: z.string().optional(),
    PolicyDescription: z.string().optional(),
    ModifyTime: z.string().optional(),
    Priority: z.number().int().optional(),
  })
  .strict();

const policySetSchema = z
  .object({
    Version: stringish.optional(),
    Egress: z.array(policySchema).optional(),
    Ingress: z.array(policySchema).optional(),
    PolicyStatistics: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

function toPolicySet(raw: z.output<typeof policySetSchema>): PolicySetInput {
  return {
    ...(raw.Version !== undefined ? { Version: raw.Version } : {}),
    ...(raw.Egress ? { Egress: raw.Egress as PolicyInput[] } : {}),
    ...(raw.Ingress ? { Ingress: raw.Ingress as PolicyInput[] } : {}),
  };
}

/** Tags of a VPC resource (security groups, ENIs): at most 50, keys unique. */
export const tagsSchema = z
  .array(z.object({ Key: z.string(), Value: z.string().optional() }).strict())
  .superRefine((tags, ctx) => {
    if (tags.length > 50) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${tags.length} tags; at most 50`);
    const seen = new Set<string>();
    tags.forEach((t, i) => {
      if (t.Key === "" || [...t.Key].length > 127) fail(ctx, "InvalidParameterValue", "must be 1 to 127 characters", [i, "Key"]);
      if ([...(t.Value ?? "")].length > 255) fail(ctx, "InvalidParameterValue.TooLong", "is longer than 255 characters", [i, "Value"]);
      if (seen.has(t.Key)) fail(ctx, "InvalidParameterValue.Duplicate", `tag key '${t.Key}' is given twice`, [i, "Key"]);
      seen.add(t.Key);
    });
  });

const projectSchema = stringish.superRefine((v, ctx) => {
  if (v !== "0") fail(ctx, "InvalidParameterValue", `project ${v} does not exist: this host has only the default project, 0`);
});

const filtersSchema = z
  .array(z.object({ Name: z.string(), Values: z.array(z.string()) }).strict())
  .superRefine((list, ctx) => {
    if (list.length > 10) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${list.length} filters; at most 10`);
    list.forEach((f, i) => {
      if (f.Values.length === 0) fail(ctx, "InvalidParameterValue.Empty", "must contain at least one value", [i, "Values"]);
    });
  });

function toFilters(raw: ReadonlyArray<{ Name: string; Values: string[] }> | undefined): SgFilter[] {
  return (raw ?? []).map((f) => ({ name: f.Name, values: [...f.Values] }));
}

/** Offset / Limit: strings or numbers holding a whole number. */
function pagingNumber(min: number, max: number, tooBig: ErrorCode) {
  return stringish.transform((v, ctx) => {
    if (!/^\d+$/.test(v.trim())) {
      fail(ctx, "InvalidParameterValue.Malformed", `'${v}' is not a whole number`);
      return z.NEVER;
    }
    const n = Number(v);
    if (n < min) fail(ctx, "InvalidParameterValue.Range", `must be at least ${min}, got ${n}`);
    else if (n > max) fail(ctx, tooBig, `must be at most ${max}, got ${n}`);
    return n;
  });
}

// ------------------------------------------------------------------ groups

export interface CreateSecurityGroupParams {
  groupName: string;
  groupDescription: string;
  tags: Array<{ key: string; value: string }>;
  /** CreateSecurityGroupWithPolicies only. */
  policySet?: PolicySetInput;
}

const createGroupShape = {
  GroupName: boundedString(60),
  GroupDescription: z.string().superRefine((v, ctx) => {
    if ([...v].length > 100) fail(ctx, "InvalidParameterValue.TooLong", `is ${[...v].length} characters long; at most 100 are allowed`);
  }),
  ProjectId: projectSchema.optional(),
  Tags: tagsSchema.optional(),
};
const createGroupSchema = z.object(createGroupShape).strict();
const createGroupWithPoliciesSchema = z.object({ ...createGroupShape, SecurityGroupPolicySet: policySetSchema.optional() }).strict();

function toCreate(r: z.output<typeof createGroupSchema>): CreateSecurityGroupParams {
  return { groupName: r.GroupName, groupDescription: r.GroupDescription, tags: (r.Tags ?? []).map((t) => ({ key: t.Key, value: t.Value ?? "" })) };
}

export function parseCreateSecurityGroup(body: unknown): CreateSecurityGroupParams {
  return toCreate(parseWith(createGroupSchema, body));
}

export function parseCreateSecurityGroupWithPolicies(body: unknown): CreateSecurityGroupParams {
  const r = parseWith(createGroupWithPoliciesSchema, body);
  return { ...toCreate(r), ...(r.SecurityGroupPolicySet ? { policySet: toPolicySet(r.SecurityGroupPolicySet) } : {}) };
}

export interface DescribeSecurityGroupsParams {
  securityGroupIds?: string[];
  filters: SgFilter[];
  offset: number;
  limit: number;
  orderField?: "CreatedTime" | "UpdateTime";
  orderDirection: "ASC" | "DESC";
}

const describeGroupsSchema = z
  .object({
    SecurityGroupIds: z.array(vpcSgId).superRefine((l, ctx) => {
      if (l.length > 100) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${l.length} IDs; at most 100`);
    }).optional(),
    Filters: filtersSchema.optional(),
    Offset: pagingNumber(0, 2_147_483_647, "InvalidParameterValue.Range").optional(),
    Limit: pagingNumber(1, 100, "InvalidParameterValue.LimitExceeded").optional(),
    OrderField: z.enum(["CreatedTime", "UpdateTime"]).optional(),
    OrderDirection: z.enum(["ASC", "DESC"]).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.SecurityGroupIds?.length && v.Filters?.length) fail(ctx, "InvalidParameter.Coexist", "SecurityGroupIds and Filters cannot be given together");
  });

export function parseDescribeSecurityGroups(body: unknown): DescribeSecurityGroupsParams {
  const r = parseWith(describeGroupsSchema, body);
  return {
    ...(r.SecurityGroupIds?.length ? { securityGroupIds: unique(r.SecurityGroupIds) } : {}),
    filters: toFilters(r.Filters),
    offset: r.Offset ?? 0,
    limit: r.Limit ?? 20,
    ...(r.OrderField ? { orderField: r.OrderField } : {}),
    orderDirection: r.OrderDirection ?? "ASC",
  };
}

export interface SecurityGroupIdParams {
  securityGroupId: string;
}

const groupIdSchema = z.object({ SecurityGroupId: vpcSgId }).strict();

export function parseDeleteSecurityGroup(body: unknown): SecurityGroupIdParams {
  return { securityGroupId: parseWith(groupIdSchema, body).SecurityGroupId };
}

export interface SecurityGroupIdsParams {
  securityGroupIds: string[];
}

const statisticsSchema = z
  .object({
    SecurityGroupIds: z.array(vpcSgId).superRefine((l, ctx) => {
      if (l.length === 0) fail(ctx, "InvalidParameterValue.Empty", "must name at least one group");
      if (l.length > 100) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${l.length} IDs; at most 100`);
    }),
  })
  .strict();

export function parseDescribeSecurityGroupAssociationStatistics(body: unknown): SecurityGroupIdsParams {
  return { securityGroupIds: unique(parseWith(statisticsSchema, body).SecurityGroupIds) };
}

export type NoParams = Record<string, never>;

export function parseDescribeSecurityGroupLimits(body: unknown): NoParams {
  parseWith(z.object({}).strict(), body);
  return {};
}

// ------------------------------------------------------------------ rules

export interface PolicySetParams {
  securityGroupId: string;
  policySet: PolicySetInput;
}

const policySetRequest = z.object({ SecurityGroupId: vpcSgId, SecurityGroupPolicySet: policySetSchema }).strict();

function parsePolicySetRequest(body: unknown): PolicySetParams {
  const r = parseWith(policySetRequest, body);
  return { securityGroupId: r.SecurityGroupId, policySet: toPolicySet(r.SecurityGroupPolicySet) };
}

export const parseCreateSecurityGroupPolicies = parsePolicySetRequest;
export const parseDeleteSecurityGroupPolicies = parsePolicySetRequest;

export interface ModifySecurityGroupPoliciesParams extends PolicySetParams {
  sortPolicys: boolean;
}

const modifyPoliciesSchema = z
  .object({ SecurityGroupId: vpcSgId, SecurityGroupPolicySet: policySetSchema, SortPolicys: z.boolean().optional() })
  .strict();

export function parseModifySecurityGroupPolicies(body: unknown): ModifySecurityGroupPoliciesParams {
  const r = parseWith(modifyPoliciesSchema, body);
  return { securityGroupId: r.SecurityGroupId, policySet: toPolicySet(r.SecurityGroupPolicySet), sortPolicys: r.SortPolicys ?? false };
}

export interface ReplaceSecurityGroupPolicyParams extends PolicySetParams {
  /** The rule being replaced, as the caller last read it: it must still be the rule at that index. */
  original?: PolicySetInput;
}

const replacePolicySchema = z
  .object({ SecurityGroupId: vpcSgId, SecurityGroupPolicySet: policySetSchema, OriginalSecurityGroupPolicySet: policySetSchema.optional() })
  .strict();

export function parseReplaceSecurityGroupPolicy(body: unknown): ReplaceSecurityGroupPolicyParams {
  const r = parseWith(replacePolicySchema, body);
  return {
    securityGroupId: r.SecurityGroupId,
    policySet: toPolicySet(r.SecurityGroupPolicySet),
    ...(r.OriginalSecurityGroupPolicySet ? { original: toPolicySet(r.OriginalSecurityGroupPolicySet) } : {}),
  };
}

export interface DescribeSecurityGroupPoliciesParams {
  securityGroupId: string;
  filters: SgFilter[];
}

const describePoliciesSchema = z.object({ SecurityGroupId: vpcSgId, Filters: filtersSchema.optional() }).strict();

export function parseDescribeSecurityGroupPolicies(body: unknown): DescribeSecurityGroupPoliciesParams {
  const r = parseWith(describePoliciesSchema, body);
  return { securityGroupId: r.SecurityGroupId, filters: toFilters(r.Filters) };
}

// ------------------------------------------------------------------ CVM: binding groups to instances

const cvmSgId = sgId("InvalidSgId.Malformed");

export interface SecurityGroupBindingParams {
  /** Exactly one group (the CVM API supports a single group per call). */
  securityGroupId: string;
  instanceIds: string[];
}

const bindingSchema = z
  .object({
    SecurityGroupIds: z.array(cvmSgId).superRefine((l, ctx) => {
      if (l.length !== 1) fail(ctx, "InvalidParameterValue", `names ${l.length} groups; exactly one is supported per call`);
    }),
    InstanceIds: idList("instance", MAX_INSTANCES_PER_BINDING),
  })
  .strict();

function parseBinding(body: unknown): SecurityGroupBindingParams {
  const r = parseWith(bindingSchema, body);
  return { securityGroupId: r.SecurityGroupIds[0]!, instanceIds: unique(r.InstanceIds) };
}

export const parseAssociateSecurityGroups = parseBinding;
export const parseDisassociateSecurityGroups = parseBinding;

/** A list of groups in priority order (RunInstances SecurityGroupIds, ModifyInstancesAttribute SecurityGroups). */
export const boundGroupList = z.array(cvmSgId).superRefine((l, ctx) => {
  if (l.length === 0) fail(ctx, "InvalidParameterValue", "must name at least one group: every instance belongs to a security group");
  if (new Set(l).size !== l.length) fail(ctx, "InvalidParameterValue", "names a group twice");
});
