/**
 * Schemas of the instance record and the journal entries, checked wherever they are read
 * back (a domain's <metadata>, launch-failed records, the journal): what the agent wrote
 * may have been written by an older agent, cut short by a full disk, or edited by hand.
 * A value that fails is reported with the path of the first problems, never trusted.
 */
import { z } from "zod";
import type { InstanceRecord } from "../model.js";

const diskType = z.enum(["LOCAL_BASIC", "LOCAL_SSD"]);
const absolutePath = z.string().regex(/^\//, "must be an absolute path");

const latestOperation = z.object({
  action: z.string(),
  state: z.enum(["OPERATING", "SUCCESS", "FAILED"]),
  requestId: z.string(),
  errorCode: z.string().optional(),
  errorMessage: z.string().optional(),
});

export const instanceRecordSchema = z
  .object({
    version: z.literal(1),
    instanceId: z.string().regex(/^ins-[a-z0-9]{8}$/),
    uuid: z.string(),
    hostId: z.string().optional(),
    instanceName: z.string(),
    hostName: z.string().optional(),
    instanceType: z.string(),
    cpu: z.number().int().positive(),
    memoryGiB: z.number().positive(),
    imageId: z.string(),
    osName: z.string().optional(),
    systemDisk: z
      .object({ diskType, sizeGiB: z.number().positive(), path: absolutePath, diskId: z.string().optional(), pool: z.string().optional() })
      .passthrough(),
    nics: z.array(
      z
        .object({
          mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i),
          network: z.string(),
          ipv4: z.string().optional(),
          subnetId: z.string().optional(),
          vpcId: z.string().optional(),
          eniId: z.string().regex(/^eni-[a-z0-9]{8}$/).optional(),
          secondaryIpv4s: z.array(z.string()).optional(),
          securityGroupIds: z.array(z.string().regex(/^sg-[a-z0-9]{8}$/)).optional(),
          slot: z.number().int().nonnegative().optional(),
        })
        .passthrough(),
    ),
    createdTime: z.string(),
    clientToken: z.string().optional(),
    launchIndex: z.number().int().nonnegative(),
    userData: z.string().optional(),
    latestOperation: latestOperation.optional(),
    osType: z.enum(["linux", "windows"]).optional(),
    configDrive: z.enum(["nocloud", "none"]).optional(),
    login: z
      .object({ passwordHash: z.string().optional(), keyIds: z.array(z.string()), keepImage: z.literal(true).optional() })
      .passthrough()
      .optional(),
    configGeneration: z.number().int().positive().optional(),
    rescue: z.object({ passwordHash: z.string(), since: z.string() }).optional(),
    iso: z.object({ path: absolutePath, url: z.string() }).optional(),
    securityGroupIds: z.array(z.string().regex(/^sg-[a-z0-9]{8}$/)).optional(),
    disableApiTermination: z.boolean().optional(),
    tags: z.array(z.object({ key: z.string(), value: z.string() })).optional(),
    powerIntent: z.enum(["on", "off"]).optional(),
    internetMaxBandwidthOut: z.number().int().nonnegative().optional(),
  })
  .passthrough();

/** A data disk's record (agent/disks/store.ts), in the journal and in its own file. */
export const diskRecordSchema = z
  .object({
    version: z.literal(1),
    diskId: z.string().regex(/^disk-[a-z0-9]{8}$/),
    diskName: z.string(),
    diskType,
    pool: z.string(),
    sizeGiB: z.number().positive(),
    path: absolutePath,
    instanceId: z.string().optional(),
    target: z.string().optional(),
    deleteWithInstance: z.boolean(),
    createdTime: z.string(),
    clientToken: z.string().optional(),
    batchIndex: z.number().int().nonnegative().optional(),
  })
  .passthrough();

/** A snapshot's record (agent/disks/snapshots.ts). */
export const snapshotRecordSchema = z
  .object({
    version: z.literal(1),
    snapshotId: z.string().regex(/^snap-[a-z0-9]{8}$/),
    snapshotName: z.string(),
    diskId: z.string().regex(/^disk-[a-z0-9]{8}$/),
    diskUsage: z.enum(["SYSTEM_DISK", "DATA_DISK"]),
    diskSizeGiB: z.number().positive(),
    pool: z.string(),
    path: absolutePath,
    state: z.enum(["CREATING", "NORMAL", "ROLLBACKING"]),
    createdTime: z.string(),
    instanceId: z.string().optional(),
    sizeBytes: z.number().nonnegative().optional(),
    quiesce: z.enum(["none", "fsfreeze", "paused"]).optional(),
  })
  .passthrough();

const base = { instanceId: z.string().regex(/^ins-[a-z0-9]{8}$/), record: instanceRecordSchema, requestId: z.string(), startedAt: z.string() };

export const journalEntrySchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("create"), ...base, dataDisks: z.array(diskRecordSchema).optional() }).passthrough(),
  z.object({ kind: z.literal("terminate"), ...base }).passthrough(),
  z.object({ kind: z.literal("reset"), ...base, oldPath: absolutePath }).passthrough(),
  z
    .object({
      kind: z.literal("retype"),
      ...base,
      mode: z.enum(["stopped", "restart", "live"]),
      from: z.object({ cpu: z.number().int().positive(), memoryGiB: z.number().int().positive() }),
    })
    .passthrough(),
  z
    .object({
      kind: z.literal("readdress"),
      ...base,
      from: z.object({ ipv4: z.string(), subnetId: z.string(), vpcId: z.string().optional(), network: z.string() }),
      wasRunning: z.boolean(),
    })
    .passthrough(),
]);

/** Why a value failed its schema, in one line: the paths and messages of the first three problems. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join(".") || "(value)"}: ${i.message}`)
    .join("; ");
}

/** The record, checked; throws naming what is wrong. */
export function checkInstanceRecord(value: unknown): InstanceRecord {
  const parsed = instanceRecordSchema.safeParse(value);
  if (!parsed.success) throw new Error(`not an instance record: ${describeIssues(parsed.error)}`);
  return parsed.data as unknown as InstanceRecord;
}
