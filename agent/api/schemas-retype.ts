/**
 * ResetInstancesType and DescribeInstancesModification (CVM 2017-03-12; reference
 * tencent-api-next.md §C.4): a new CDH_<cores>C<GiB>G for one instance, and the sizes
 * instances can take on this host now (agent/instances/reset-type.ts).
 */
import { z } from "zod";
import { fail, filterList, idList, parseWith, unique } from "./schemas.js";
import { parseInstanceType } from "./schemas-run.js";

export interface ResetInstancesTypeParams {
  instanceId: string;
  instanceType: string;
  cpu: number;
  memoryGiB: number;
  forceStop: boolean;
}

const resetInstancesTypeSchema = z
  .object({
    // Exactly one instance (the API's rule).
    InstanceIds: idList("instance", 1),
    InstanceType: z.string().superRefine((v, ctx) => {
      if (!parseInstanceType(v)) fail(ctx, "InvalidInstanceType.Malformed", `'${v}' is not CDH_<cores>C<GiB>G with whole numbers of at least 1, e.g. CDH_2C4G`);
    }),
    ForceStop: z.boolean().optional(),
  })
  .strict();

export function parseResetInstancesType(body: unknown): ResetInstancesTypeParams {
  const r = parseWith(resetInstancesTypeSchema, body);
  const size = parseInstanceType(r.InstanceType)!;
  return { instanceId: r.InstanceIds[0]!, instanceType: r.InstanceType, ...size, forceStop: r.ForceStop ?? false };
}

export interface DescribeInstancesModificationParams {
  instanceIds: string[];
  /** Filter `status`: SELL and/or UNAVAILABLE (absent: both). */
  statuses?: Array<"SELL" | "UNAVAILABLE">;
}

const describeInstancesModificationSchema = z
  .object({
    InstanceIds: idList("instance", 20),
    Filters: filterList(["status"] as const).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    for (const [i, f] of (v.Filters ?? []).entries()) {
      if (f.Values.length > 2) fail(ctx, "InvalidParameterValue.LimitExceeded", "`status` takes at most 2 values", ["Filters", i, "Values"]);
      f.Values.forEach((s, j) => {
        if (s !== "SELL" && s !== "UNAVAILABLE") fail(ctx, "InvalidParameterValue", `'${s}' is not a status; SELL or UNAVAILABLE`, ["Filters", i, "Values", j]);
      });
    }
  });

export function parseDescribeInstancesModification(body: unknown): DescribeInstancesModificationParams {
  const r = parseWith(describeInstancesModificationSchema, body);
  // Filters are ANDed: a status must be in every filter's values.
  const filters = r.Filters ?? [];
  const statuses = filters.length
    ? (["SELL", "UNAVAILABLE"] as const).filter((s) => filters.every((f) => f.Values.includes(s)))
    : undefined;
  return { instanceIds: unique(r.InstanceIds), ...(statuses ? { statuses } : {}) };
}

/** The request schemas of this file's actions, by action. */
export const RETYPE_REQUEST_SCHEMAS = {
  ResetInstancesType: resetInstancesTypeSchema,
  DescribeInstancesModification: describeInstancesModificationSchema,
} as const;
