/**
 * The migration actions' requests (this agent's extension, README "Migration"): MigrateInstances
 * and CancelMigrateInstances on the source, MigrationPeerStep (internal: one agent to another).
 */
import { z } from "zod";
import { fail, idList, idString, intInRange, parseWith, unique } from "./schemas.js";
import type { MigrateRequest } from "../migration/source.js";
import type { PeerStepParams } from "../migration/service.js";

const migrateInstancesSchema = z
  .object({
    InstanceIds: idList("instance", 10),
    DestinationHostId: idString("host"),
    /** https://ADDRESS:PORT of the destination agent; absent: the one in migration_peers. */
    DestinationEndpoint: z.string().superRefine((v, ctx) => {
      let url: URL | undefined;
      try {
        url = new URL(v);
      } catch {
        url = undefined;
      }
      if (!url || (url.protocol !== "https:" && url.protocol !== "http:") || url.pathname !== "/" || url.search || url.username) {
        fail(ctx, "InvalidParameterValue", `'${v}' is not an endpoint such as https://10.250.0.2:8620`);
      }
    }).optional(),
    /** true (default): live; false: cold (stopped first with StopType when running). */
    Live: z.boolean().optional(),
    StopType: z.enum(["SOFT", "HARD", "SOFT_FIRST"]).optional(),
    /** The most downtime the convergence schedule may allow, ms (default 2500). */
    MaxDowntime: intInRange(10, 60_000).optional(),
    /** Migration bandwidth, MiB/s (default: unlimited). */
    Bandwidth: intInRange(1, 100_000).optional(),
    /** Seconds the move may take before the schedule's last resort (default 600). */
    Deadline: intInRange(10, 86_400).optional(),
    /** Let the schedule end in post-copy (default false: it aborts instead). */
    AllowPostCopy: z.boolean().optional(),
    DryRun: z.boolean().optional(),
  })
  .strict();

export function parseMigrateInstances(body: unknown): MigrateRequest {
  const r = parseWith(migrateInstancesSchema, body);
  return {
    instanceIds: unique(r.InstanceIds),
    destinationHostId: r.DestinationHostId,
    ...(r.DestinationEndpoint !== undefined ? { destinationEndpoint: r.DestinationEndpoint } : {}),
    live: r.Live ?? true,
    stopType: r.StopType ?? "SOFT_FIRST",
    maxDowntimeMs: r.MaxDowntime ?? 2500,
    ...(r.Bandwidth !== undefined ? { bandwidthMiBs: r.Bandwidth } : {}),
    deadlineS: r.Deadline ?? 600,
    allowPostCopy: r.AllowPostCopy ?? false,
    dryRun: r.DryRun ?? false,
  };
}

const cancelMigrateInstancesSchema = z.object({ InstanceIds: idList("instance", 10) }).strict();

export function parseCancelMigrateInstances(body: unknown): { instanceIds: string[] } {
  return { instanceIds: unique(parseWith(cancelMigrateInstancesSchema, body).InstanceIds) };
}

const migrationPeerStepSchema = z
  .object({
    Step: z.enum(["reserve", "prepare", "commit", "abort", "status"]),
    MigrationId: z.string().regex(/^[0-9a-f-]{36}$/),
    InstanceId: idString("instance"),
    SourceHostId: idString("host"),
    Live: z.boolean().optional(),
    WasRunning: z.boolean().optional(),
    /** The instance's record (reserve); checked by the destination. */
    Instance: z.record(z.string(), z.unknown()).optional(),
    DataDisks: z.array(z.record(z.string(), z.unknown())).max(21).optional(),
    DiskBytes: z.record(z.string().regex(/^vd[a-z]$/), z.number().int().positive()).optional(),
    SourceDefaultGroupId: z.string().regex(/^sg-[a-z0-9]{8}$/).optional(),
    RequestId: z.string().max(64).optional(),
  })
  .strict();

export function parseMigrationPeerStep(body: unknown): PeerStepParams {
  const r = parseWith(migrationPeerStepSchema, body);
  return {
    step: r.Step,
    migrationId: r.MigrationId,
    instanceId: r.InstanceId,
    sourceHostId: r.SourceHostId,
    ...(r.Live !== undefined ? { live: r.Live } : {}),
    ...(r.WasRunning !== undefined ? { wasRunning: r.WasRunning } : {}),
    ...(r.Instance !== undefined ? { instance: r.Instance } : {}),
    ...(r.DataDisks !== undefined ? { dataDisks: r.DataDisks } : {}),
    ...(r.DiskBytes !== undefined ? { diskBytes: r.DiskBytes } : {}),
    ...(r.SourceDefaultGroupId !== undefined ? { sourceDefaultGroupId: r.SourceDefaultGroupId } : {}),
    ...(r.RequestId !== undefined ? { requestId: r.RequestId } : {}),
  };
}

/** The request schemas of the migration actions, by action (test/unit/api/fields.test.ts). */
export const MIGRATION_REQUEST_SCHEMAS = {
  MigrateInstances: migrateInstancesSchema,
  CancelMigrateInstances: cancelMigrateInstancesSchema,
  MigrationPeerStep: migrationPeerStepSchema,
} as const;
