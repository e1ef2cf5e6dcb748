/**
 * ResetInstancesInternetMaxBandwidth (reference/tencent-api-next.md C.5): only
 * InternetAccessible.InternetMaxBandwidthOut is honoured. The host's charge type is
 * TRAFFIC_POSTPAID_BY_HOUR (what DescribeInstances shows), for which CVM applies the change at
 * once, up or down, in batches, and rejects StartTime/EndTime (prepaid bandwidth only).
 */
import { z } from "zod";
import { MAX_INTERNET_MBPS } from "../network/bandwidth/rule.js";
import { fail, idList, intInRange, parseWith } from "./schemas.js";

export interface ResetInstancesInternetMaxBandwidthParams {
  instanceIds: string[];
  /** Mbit/s; 0 removes the cap. */
  internetMaxBandwidthOut: number;
}

/** The charge type the host shows for an instance with an internet cap. */
export const HOST_INTERNET_CHARGE_TYPE = "TRAFFIC_POSTPAID_BY_HOUR";

const prepaidOnly = z.unknown().superRefine((v, ctx) => {
  if (v !== undefined) fail(ctx, "InvalidParameterValue", `is for prepaid bandwidth only; this host's is ${HOST_INTERNET_CHARGE_TYPE}, which changes at once`);
});

const resetSchema = z
  .object({
    InstanceIds: idList("instance"),
    InternetAccessible: z
      .object({
        InternetMaxBandwidthOut: intInRange(0, MAX_INTERNET_MBPS),
        // Information only, as at RunInstances.
        InternetChargeType: z.string().optional(),
        PublicIpAssigned: z.boolean().optional(),
      })
      .strict(),
    StartTime: prepaidOnly.optional(),
    EndTime: prepaidOnly.optional(),
  })
  .strict();

export function parseResetInstancesInternetMaxBandwidth(body: unknown): ResetInstancesInternetMaxBandwidthParams {
  const r = parseWith(resetSchema, body);
  return { instanceIds: [...new Set(r.InstanceIds)], internetMaxBandwidthOut: r.InternetAccessible.InternetMaxBandwidthOut };
}

/** The request schemas of this file's actions (test/unit/api/fields.test.ts walks every field). */
export const BANDWIDTH_REQUEST_SCHEMAS = { ResetInstancesInternetMaxBandwidth: resetSchema } as const;
