/**
 * The VPC API's ENI actions (2017-03-12, reference/tencent-api-next.md §B.2) and
 * DescribeVpcTaskResult: strict schemas and the typed parameters they produce. Fields a host
 * has no use for (QosLevel, TrunkingFlag, IsRdma, AttachType 1, ClientToken of attach/detach,
 * public and EIP fields of an address) are not in the schemas: a request naming one is refused
 * as an unknown parameter, never silently ignored. What a value means for the host (subnet,
 * free address, limits) is the domain's check (agent/network/enis/service.ts).
 */
import { z } from "zod";
import { ENI_ID } from "../network/enis/model.js";
import type { EniFilter } from "../network/enis/views.js";
import type { CreateEniRequest } from "../network/enis/service.js";
import { SG_ID } from "../network/security-groups/model.js";
import { fail, ID_PATTERNS, parseWith, unique } from "./schemas.js";
import { tagsSchema } from "./schemas-vpc.js";

const eniId = z.string().superRefine((v, ctx) => {
  if (!ENI_ID.test(v)) fail(ctx, "InvalidParameterValue.Malformed", `'${v}' is not an ENI ID (eni- followed by 8 lowercase letters or digits)`);
});
const instanceId = z.string().superRefine((v, ctx) => {
  if (!ID_PATTERNS.instance.test(v)) fail(ctx, "InvalidParameterValue.Malformed", `'${v}' is not an instance ID (ins- followed by 8 lowercase letters or digits)`);
});
const sgIds = z.array(
  z.string().superRefine((v, ctx) => {
    if (!SG_ID.test(v)) fail(ctx, "InvalidParameterValue.Malformed", `'${v}' is not a security group ID (sg- followed by 8 lowercase letters or digits)`);
  }),
);
const ipv4 = z.string().superRefine((v, ctx) => {
  if (!/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(v)) fail(ctx, "InvalidParameterValue.Malformed", `'${v}' is not an IPv4 address`);
});
/** ≤60 bytes (the API's rule for names). */
const name60 = z.string().superRefine((v, ctx) => {
  if (v === "") fail(ctx, "InvalidParameterValue", "must not be empty");
  else if (Buffer.byteLength(v) > 60) fail(ctx, "InvalidParameterValue.TooLong", `is ${Buffer.byteLength(v)} bytes long; at most 60 are allowed`);
});
const description60 = z.string().superRefine((v, ctx) => {
  if ([...v].length > 60) fail(ctx, "InvalidParameterValue.TooLong", `is ${[...v].length} characters long; at most 60 are allowed`);
});
/** A whole number the SDK types as number that some callers send as a string. */
function count(max: number) {
  return z.union([z.number(), z.string()]).transform((raw, ctx) => {
    const v = typeof raw === "string" ? raw.trim() : String(raw);
    if (!/^\d+$/.test(v)) {
      fail(ctx, "InvalidParameterValue.Malformed", `'${raw}' is not a whole number`);
      return z.NEVER;
    }
    const n = Number(v);
    if (n > max) fail(ctx, "InvalidParameterValue.Range", `must be at most ${max}, got ${n}`);
    return n;
  });
}

const addressSpec = z.object({ PrivateIpAddress: ipv4, Primary: z.boolean().optional() }).strict();
/** An address to release: the address only (a Primary flag would mean nothing). */
const releasedSpec = z.object({ PrivateIpAddress: ipv4 }).strict();
function addressList() {
  return z.array(addressSpec).superRefine((l, ctx) => {
    if (l.length > 10) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${l.length} addresses; at most 10`);
  });
}

// ------------------------------------------------------------------ CreateNetworkInterface

export type CreateNetworkInterfaceParams = CreateEniRequest;

const createSchema = z
  .object({
    VpcId: z.string().min(1),
    NetworkInterfaceName: name60,
    SubnetId: z.string().min(1),
    NetworkInterfaceDescription: description60.optional(),
    SecondaryPrivateIpAddressCount: count(30).optional(),
    SecurityGroupIds: sgIds.optional(),
    PrivateIpAddresses: addressList().optional(),
    Tags: tagsSchema.optional(),
    ClientToken: z.string().superRefine((v, ctx) => {
      if (v.length > 64 || !/^[\x20-\x7e]*$/.test(v)) fail(ctx, "InvalidParameterValue", "must be at most 64 ASCII characters");
    }).optional(),
  })
  .strict();

export function parseCreateNetworkInterface(body: unknown): CreateNetworkInterfaceParams {
  const r = parseWith(createSchema, body);
  return {
    vpcId: r.VpcId,
    subnetId: r.SubnetId,
    name: r.NetworkInterfaceName,
    ...(r.NetworkInterfaceDescription !== undefined ? { description: r.NetworkInterfaceDescription } : {}),
    ...(r.SecurityGroupIds ? { securityGroupIds: r.SecurityGroupIds } : {}),
    addresses: (r.PrivateIpAddresses ?? []).map((a) => ({ ip: a.PrivateIpAddress, primary: a.Primary === true })),
    secondaryCount: r.SecondaryPrivateIpAddressCount ?? 0,
    tags: (r.Tags ?? []).map((t) => ({ key: t.Key, value: t.Value ?? "" })),
    ...(r.ClientToken !== undefined ? { clientToken: r.ClientToken } : {}),
  };
}

// ------------------------------------------------------------------ DescribeNetworkInterfaces

export interface DescribeNetworkInterfacesParams {
  ids?: string[];
  filters: EniFilter[];
  offset: number;
  limit: number;
}

const describeSchema = z
  .object({
    NetworkInterfaceIds: z.array(eniId).superRefine((l, ctx) => {
      if (l.length > 100) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${l.length} IDs; at most 100`);
    }).optional(),
    Filters: z
      .array(z.object({ Name: z.string(), Values: z.array(z.string()) }).strict())
      .superRefine((list, ctx) => {
        if (list.length > 10) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${list.length} filters; at most 10`);
        list.forEach((f, i) => {
          if (f.Values.length === 0) fail(ctx, "InvalidParameterValue", "must contain at least one value", [i, "Values"]);
        });
      })
      .optional(),
    Offset: count(2_147_483_647).optional(),
    Limit: count(100).superRefine((v, ctx) => {
      if (v < 1) fail(ctx, "InvalidParameterValue.Range", "must be at least 1");
    }).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.NetworkInterfaceIds?.length && v.Filters?.length) fail(ctx, "InvalidParameter.Coexist", "cannot be given together with NetworkInterfaceIds", ["Filters"]);
  });

export function parseDescribeNetworkInterfaces(body: unknown): DescribeNetworkInterfacesParams {
  const r = parseWith(describeSchema, body);
  return {
    ...(r.NetworkInterfaceIds?.length ? { ids: unique(r.NetworkInterfaceIds) } : {}),
    filters: (r.Filters ?? []).map((f) => ({ name: f.Name, values: [...f.Values] })),
    offset: r.Offset ?? 0,
    limit: r.Limit ?? 20,
  };
}

// ------------------------------------------------------------------ attach, detach, delete

export interface EniAttachmentParams {
  eniId: string;
  instanceId: string;
}

const attachmentSchema = z.object({ NetworkInterfaceId: eniId, InstanceId: instanceId }).strict();

function parseAttachment(body: unknown): EniAttachmentParams {
  const r = parseWith(attachmentSchema, body);
  return { eniId: r.NetworkInterfaceId, instanceId: r.InstanceId };
}
export const parseAttachNetworkInterface = parseAttachment;
export const parseDetachNetworkInterface = parseAttachment;

export interface EniIdParams {
  eniId: string;
}

const eniIdSchema = z.object({ NetworkInterfaceId: eniId }).strict();

export function parseDeleteNetworkInterface(body: unknown): EniIdParams {
  return { eniId: parseWith(eniIdSchema, body).NetworkInterfaceId };
}

// ------------------------------------------------------------------ addresses

export interface AssignPrivateIpAddressesParams {
  eniId: string;
  addresses: string[];
  count: number;
}

const assignSchema = z
  .object({
    NetworkInterfaceId: eniId,
    PrivateIpAddresses: addressList()
      .superRefine((l, ctx) => {
        l.forEach((a, i) => {
          if (a.Primary) fail(ctx, "InvalidParameterValue", "cannot be true: an assigned address is a secondary one", [i, "Primary"]);
        });
      })
      .optional(),
    SecondaryPrivateIpAddressCount: count(30).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (!v.PrivateIpAddresses?.length && !v.SecondaryPrivateIpAddressCount) {
      fail(ctx, "MissingParameter", "give PrivateIpAddresses or SecondaryPrivateIpAddressCount", ["PrivateIpAddresses"]);
    }
  });

export function parseAssignPrivateIpAddresses(body: unknown): AssignPrivateIpAddressesParams {
  const r = parseWith(assignSchema, body);
  return { eniId: r.NetworkInterfaceId, addresses: (r.PrivateIpAddresses ?? []).map((a) => a.PrivateIpAddress), count: r.SecondaryPrivateIpAddressCount ?? 0 };
}

export interface UnassignPrivateIpAddressesParams {
  eniId: string;
  addresses: string[];
}

const unassignSchema = z
  .object({
    NetworkInterfaceId: eniId,
    PrivateIpAddresses: z.array(releasedSpec).superRefine((l, ctx) => {
      if (l.length === 0) fail(ctx, "InvalidParameterValue", "must name at least one address");
      if (l.length > 10) fail(ctx, "InvalidParameterValue.LimitExceeded", `has ${l.length} addresses; at most 10`);
    }),
  })
  .strict();

export function parseUnassignPrivateIpAddresses(body: unknown): UnassignPrivateIpAddressesParams {
  const r = parseWith(unassignSchema, body);
  const addresses = r.PrivateIpAddresses.map((a) => a.PrivateIpAddress);
  return { eniId: r.NetworkInterfaceId, addresses: unique(addresses) };
}

export interface MigratePrivateIpAddressParams {
  sourceEniId: string;
  destinationEniId: string;
  ip: string;
}

const migrateSchema = z.object({ SourceNetworkInterfaceId: eniId, DestinationNetworkInterfaceId: eniId, PrivateIpAddress: ipv4 }).strict();

export function parseMigratePrivateIpAddress(body: unknown): MigratePrivateIpAddressParams {
  const r = parseWith(migrateSchema, body);
  return { sourceEniId: r.SourceNetworkInterfaceId, destinationEniId: r.DestinationNetworkInterfaceId, ip: r.PrivateIpAddress };
}

// ------------------------------------------------------------------ attributes, tasks

export interface ModifyNetworkInterfaceAttributeParams {
  eniId: string;
  name?: string;
  description?: string;
  securityGroupIds?: string[];
}

const modifySchema = z
  .object({
    NetworkInterfaceId: eniId,
    NetworkInterfaceName: name60.optional(),
    NetworkInterfaceDescription: description60.optional(),
    SecurityGroupIds: sgIds.optional(),
  })
  .strict();

export function parseModifyNetworkInterfaceAttribute(body: unknown): ModifyNetworkInterfaceAttributeParams {
  const r = parseWith(modifySchema, body);
  return {
    eniId: r.NetworkInterfaceId,
    ...(r.NetworkInterfaceName !== undefined ? { name: r.NetworkInterfaceName } : {}),
    ...(r.NetworkInterfaceDescription !== undefined ? { description: r.NetworkInterfaceDescription } : {}),
    ...(r.SecurityGroupIds ? { securityGroupIds: r.SecurityGroupIds } : {}),
  };
}

export interface DescribeVpcTaskResultParams {
  taskId: string;
}

const taskSchema = z.object({ TaskId: z.string().min(1) }).strict();

export function parseDescribeVpcTaskResult(body: unknown): DescribeVpcTaskResultParams {
  return { taskId: parseWith(taskSchema, body).TaskId };
}

export const ENI_REQUEST_SCHEMAS = {
  CreateNetworkInterface: createSchema,
  DescribeNetworkInterfaces: describeSchema,
  AttachNetworkInterface: attachmentSchema,
  DetachNetworkInterface: attachmentSchema,
  DeleteNetworkInterface: eniIdSchema,
  AssignPrivateIpAddresses: assignSchema,
  UnassignPrivateIpAddresses: unassignSchema,
  MigratePrivateIpAddress: migrateSchema,
  ModifyNetworkInterfaceAttribute: modifySchema,
  DescribeVpcTaskResult: taskSchema,
} as const;
