/**
 * Request schemas of the console actions: DescribeInstanceVncUrl (CVM 2017-03-12,
 * reference/tencent-api-next.md C.7). The answers come from agent/console/access.ts.
 */
import { z } from "zod";
import { idString, parseWith } from "./schemas.js";

const describeVncUrlSchema = z.object({ InstanceId: idString("instance") }).strict();

export interface DescribeInstanceVncUrlParams {
  instanceId: string;
}

export function parseDescribeInstanceVncUrl(body: unknown): DescribeInstanceVncUrlParams {
  return { instanceId: parseWith(describeVncUrlSchema, body).InstanceId };
}

export const CONSOLE_REQUEST_SCHEMAS = {
  DescribeInstanceVncUrl: describeVncUrlSchema,
} as const;
