/**
 * Request schemas of the serial console's actions, this agent's extensions in the CVM style
 * (version 2017-03-12, same endpoint and signature; agent/console/serial.ts, serial-log.ts):
 *   DescribeInstanceSerialConsoleUrl { InstanceId }
 *       → InstanceSerialConsoleUrl: a one-time URL (percent-encoded, as InstanceVncUrl is) of a
 *         WebSocket text session on the instance's serial port
 *   DescribeInstanceSerialLog { InstanceId, Offset?, Limit? }
 *       → the console log's bytes [Offset, Offset + Limit) as text (Offset default 0; Limit
 *         default 65 536, at most 1 048 576), NextOffset and the log's Size
 */
import { z } from "zod";
import { SERIAL_LOG_DEFAULT_LIMIT, SERIAL_LOG_MAX_LIMIT } from "../console/serial-log.js";
import { idString, intInRange, parseWith } from "./schemas.js";

const describeSerialConsoleUrlSchema = z.object({ InstanceId: idString("instance") }).strict();

export interface DescribeInstanceSerialConsoleUrlParams {
  instanceId: string;
}

export function parseDescribeInstanceSerialConsoleUrl(body: unknown): DescribeInstanceSerialConsoleUrlParams {
  return { instanceId: parseWith(describeSerialConsoleUrlSchema, body).InstanceId };
}

const describeSerialLogSchema = z
  .object({
    InstanceId: idString("instance"),
    Offset: intInRange(0, Number.MAX_SAFE_INTEGER).optional(),
    Limit: intInRange(1, SERIAL_LOG_MAX_LIMIT).optional(),
  })
  .strict();

export interface DescribeInstanceSerialLogParams {
  instanceId: string;
  offset: number;
  limit: number;
}

export function parseDescribeInstanceSerialLog(body: unknown): DescribeInstanceSerialLogParams {
  const p = parseWith(describeSerialLogSchema, body);
  return { instanceId: p.InstanceId, offset: p.Offset ?? 0, limit: p.Limit ?? SERIAL_LOG_DEFAULT_LIMIT };
}

export const SERIAL_REQUEST_SCHEMAS = {
  DescribeInstanceSerialConsoleUrl: describeSerialConsoleUrlSchema,
  DescribeInstanceSerialLog: describeSerialLogSchema,
} as const;
