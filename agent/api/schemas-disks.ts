/**
 * Disk actions: the CBS API's (2017-03-12) CreateDisks, AttachDisks, DetachDisks,
 * DescribeDisks, TerminateDisks, and the snapshot actions, at host scope; and CVM's
 * ResizeInstanceDisks. Local disks only: LOCAL_BASIC or LOCAL_SSD.
 */
import { z } from "zod";
import { ApiError } from "../errors.js";
import {
  boundedString,
  defaultProjectOnly,
  fail,
  filterList,
  idList,
  idString,
  intInRange,
  paging,
  parseWith,
  toFilters,
  toPaging,
  unique,
  unsupportedFields,
  type Filter,
  type Paging,
} from "./schemas.js";
import { DISK_FILTER_NAMES, SNAPSHOT_FILTER_NAMES, type DiskFilterName, type SnapshotFilterName } from "../disks/filters.js";

export type LocalDiskType = "LOCAL_BASIC" | "LOCAL_SSD";

const diskType = () =>
  z.string().superRefine((v, ctx) => {
    if (v !== "LOCAL_BASIC" && v !== "LOCAL_SSD") {
      fail(ctx, "InvalidParameterValue", `DiskType ${JSON.stringify(v)} is not offered on this host: use LOCAL_BASIC or LOCAL_SSD`);
    }
  });

/** The largest disk, GiB (CBS: 32000 GB). */
export const MAX_DISK_GIB = 32000;

export interface CreateDisksParams {
  diskType: LocalDiskType;
  diskSizeGiB: number;
  diskCount: number;
  diskName?: string;
  hostId?: string;
  /** Placement.Zone as sent; the dispatcher checks it is the host's. */
  zone?: string;
  /** Idempotency: the same token gives back the same disks. */
  clientToken?: string;
}

/** The order of a Describe's rows: by creation time (the only field disks and snapshots here have to sort on), ASC by default. */
export interface OrderParams {
  descending: boolean;
}

/** Order (ASC, DESC) and OrderField (CREATE_TIME only: disks and snapshots on this host have no deadline or price). */
const order = {
  Order: z.enum(["ASC", "DESC"]).optional(),
  OrderField: z
    .string()
    .superRefine((v, ctx) => {
      if (v !== "CREATE_TIME") fail(ctx, "InvalidParameterValue", `must be CREATE_TIME: '${v}' is not a field disks and snapshots on this host have`);
    })
    .optional(),
};

const createDisksSchema = z
  .object({
    DiskType: diskType(),
    DiskSize: intInRange(10, MAX_DISK_GIB),
    DiskCount: intInRange(1, 50).optional(),
    DiskName: boundedString(60).optional(),
    // Information only (README): CDHPAID, what DescribeDisks shows; a local disk is part of the host.
    DiskChargeType: z
      .string()
      .superRefine((v, ctx) => {
        if (v !== "CDHPAID") fail(ctx, "InvalidParameterValue", `must be CDHPAID: local disks are part of the dedicated host, not billed on their own ('${v}')`);
      })
      .optional(),
    Placement: z.object({ Zone: z.string().optional(), ProjectId: defaultProjectOnly().optional(), HostId: idString("host").optional() }).strict().optional(),
    ClientToken: boundedString(64).optional(),
    SnapshotId: idString("snapshot").optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.SnapshotId !== undefined) fail(ctx, "InvalidParameterValue", "is not supported: create the disk, then ApplySnapshot", ["SnapshotId"]);
  });

export function parseCreateDisks(body: unknown): CreateDisksParams {
  const r = parseWith(createDisksSchema, body);
  return {
    diskType: r.DiskType as LocalDiskType,
    diskSizeGiB: r.DiskSize,
    diskCount: r.DiskCount ?? 1,
    ...(r.DiskName !== undefined ? { diskName: r.DiskName } : {}),
    ...(r.Placement?.HostId !== undefined ? { hostId: r.Placement.HostId } : {}),
    ...(r.Placement?.Zone !== undefined ? { zone: r.Placement.Zone } : {}),
    ...(r.ClientToken !== undefined ? { clientToken: r.ClientToken } : {}),
  };
}

export interface AttachDisksParams {
  diskIds: string[];
  instanceId: string;
  deleteWithInstance?: boolean;
}

const attachDisksSchema = z
  .object({ DiskIds: idList("disk", 10), InstanceId: idString("instance"), DeleteWithInstance: z.boolean().optional(), ...unsupportedFields(["AttachMode"]) })
  .strict();

export function parseAttachDisks(body: unknown): AttachDisksParams {
  const r = parseWith(attachDisksSchema, body);
  return { diskIds: unique(r.DiskIds), instanceId: r.InstanceId, ...(r.DeleteWithInstance !== undefined ? { deleteWithInstance: r.DeleteWithInstance } : {}) };
}

export interface DetachDisksParams {
  diskIds: string[];
  instanceId?: string;
}

const detachDisksSchema = z.object({ DiskIds: idList("disk", 10), InstanceId: idString("instance").optional() }).strict();

export function parseDetachDisks(body: unknown): DetachDisksParams {
  const r = parseWith(detachDisksSchema, body);
  return { diskIds: unique(r.DiskIds), ...(r.InstanceId !== undefined ? { instanceId: r.InstanceId } : {}) };
}

export { DISK_FILTER_NAMES, SNAPSHOT_FILTER_NAMES, type DiskFilterName, type SnapshotFilterName } from "../disks/filters.js";

export interface DescribeDisksParams extends Paging, OrderParams {
  diskIds?: string[];
  filters: Filter<DiskFilterName>[];
  /** ReturnBindAutoSnapshotPolicy: each disk shows AutoSnapshotPolicyIds (always empty: there are no automatic snapshot policies here). */
  withAutoSnapshotPolicies: boolean;
}

const describeDisksSchema = z
  .object({ DiskIds: idList("disk").optional(), Filters: filterList(DISK_FILTER_NAMES).optional(), ...paging, ReturnBindAutoSnapshotPolicy: z.boolean().optional(), ...order })
  .strict();

export function parseDescribeDisks(body: unknown): DescribeDisksParams {
  const r = parseWith(describeDisksSchema, body);
  return {
    ...toPaging(r),
    filters: toFilters<DiskFilterName>(r.Filters),
    ...(r.DiskIds ? { diskIds: unique(r.DiskIds) } : {}),
    descending: r.Order === "DESC",
    withAutoSnapshotPolicies: r.ReturnBindAutoSnapshotPolicy === true,
  };
}

export interface TerminateDisksParams {
  diskIds: string[];
}

/** DeleteSnapshot: 1 (delete the disk's snapshots with it) is what happens here; 0 (keep them) is refused. */
const terminateDisksSchema = z
  .object({
    DiskIds: idList("disk"),
    DeleteSnapshot: z
      .number()
      .int()
      .superRefine((v, ctx) => {
        if (v !== 1) fail(ctx, "InvalidParameterValue", `must be 1: a disk's snapshots are deleted with it on this host (a snapshot lives beside its disk), got ${v}`);
      })
      .optional(),
  })
  .strict();

export function parseTerminateDisks(body: unknown): TerminateDisksParams {
  return { diskIds: unique(parseWith(terminateDisksSchema, body).DiskIds) };
}

export interface ResizeInstanceDisksParams {
  instanceId: string;
  systemDiskGiB?: number;
  /** SystemDisk.DiskType and DiskId as sent: they must name the instance's own system disk (the dispatcher checks). */
  systemDiskType?: string;
  systemDiskId?: string;
  /** diskType as sent: it must be the disk's own type (a resize does not change it). */
  dataDisks: Array<{ diskId: string; diskSizeGiB: number; diskType?: string }>;
  resizeOnline: boolean;
  forceStop: boolean;
  dryRun: boolean;
}

const resizeSchema = z
  .object({
    InstanceId: idString("instance"),
    SystemDisk: z.object({ DiskSize: intInRange(1, MAX_DISK_GIB), DiskType: z.string().optional(), DiskId: z.string().optional() }).strict().optional(),
    DataDisks: z
      .array(
        z
          .object({
            DiskId: idString("disk"),
            DiskSize: intInRange(1, MAX_DISK_GIB),
            DiskType: z.string().optional(),
            // A resize changes sizes only; DeleteWithInstance is AttachDisks' to set.
            ...unsupportedFields(["DeleteWithInstance"]),
          })
          .strict(),
      )
      .optional(),
    ResizeOnline: z.boolean().optional(),
    ForceStop: z.boolean().optional(),
    DryRun: z.boolean().optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.SystemDisk === undefined && !v.DataDisks?.length) fail(ctx, "MissingParameter", "name SystemDisk or DataDisks to grow", ["SystemDisk"]);
    if (v.ResizeOnline && v.ForceStop) fail(ctx, "InvalidParameterCombination", "ResizeOnline and ForceStop cannot be combined", ["ForceStop"]);
  });

export function parseResizeInstanceDisks(body: unknown): ResizeInstanceDisksParams {
  const r = parseWith(resizeSchema, body);
  const seen = new Set<string>();
  for (const [i, d] of (r.DataDisks ?? []).entries()) {
    if (seen.has(d.DiskId)) throw new ApiError("InvalidParameterValue", `\`DataDisks.${i}.DiskId\` ${d.DiskId} is named twice`);
    seen.add(d.DiskId);
  }
  return {
    instanceId: r.InstanceId,
    ...(r.SystemDisk ? { systemDiskGiB: r.SystemDisk.DiskSize } : {}),
    ...(r.SystemDisk?.DiskType !== undefined ? { systemDiskType: r.SystemDisk.DiskType } : {}),
    ...(r.SystemDisk?.DiskId !== undefined ? { systemDiskId: r.SystemDisk.DiskId } : {}),
    dataDisks: (r.DataDisks ?? []).map((d) => ({ diskId: d.DiskId, diskSizeGiB: d.DiskSize, ...(d.DiskType !== undefined ? { diskType: d.DiskType } : {}) })),
    resizeOnline: r.ResizeOnline ?? false,
    forceStop: r.ForceStop ?? false,
    dryRun: r.DryRun ?? false,
  };
}

// ------------------------------------------------------------------ snapshots

export interface CreateSnapshotParams {
  diskId: string;
  snapshotName?: string;
}

/** Deadline (snapshots here never expire) and DiskBackupId (there are no disk backups) are refused by name. */
const createSnapshotSchema = z.object({ DiskId: idString("disk"), SnapshotName: boundedString(60).optional(), ...unsupportedFields(["Deadline", "DiskBackupId"]) }).strict();

export function parseCreateSnapshot(body: unknown): CreateSnapshotParams {
  const r = parseWith(createSnapshotSchema, body);
  return { diskId: r.DiskId, ...(r.SnapshotName !== undefined ? { snapshotName: r.SnapshotName } : {}) };
}


export interface DescribeSnapshotsParams extends Paging, OrderParams {
  snapshotIds?: string[];
  filters: Filter<SnapshotFilterName>[];
}

const describeSnapshotsSchema = z
  .object({ SnapshotIds: idList("snapshot").optional(), Filters: filterList(SNAPSHOT_FILTER_NAMES).optional(), ...paging, ...order })
  .strict();

export function parseDescribeSnapshots(body: unknown): DescribeSnapshotsParams {
  const r = parseWith(describeSnapshotsSchema, body);
  return {
    ...toPaging(r),
    filters: toFilters<SnapshotFilterName>(r.Filters),
    ...(r.SnapshotIds ? { snapshotIds: unique(r.SnapshotIds) } : {}),
    descending: r.Order === "DESC",
  };
}

export interface DeleteSnapshotsParams {
  snapshotIds: string[];
}

/** DeleteBindImages: information only (README): no image on this host is made from a snapshot, so there is none to delete. */
const deleteSnapshotsSchema = z.object({ SnapshotIds: idList("snapshot"), DeleteBindImages: z.boolean().optional() }).strict();

export function parseDeleteSnapshots(body: unknown): DeleteSnapshotsParams {
  return { snapshotIds: unique(parseWith(deleteSnapshotsSchema, body).SnapshotIds) };
}

export interface ApplySnapshotParams {
  snapshotId: string;
  diskId: string;
}

/** AutoStopInstance / AutoStartInstance: false (the instance is stopped and started by the caller) is what happens; true is refused. */
const noAutoPower = z
  .boolean()
  .superRefine((v, ctx) => {
    if (v) fail(ctx, "InvalidParameterValue", "cannot be true: stop the instance with StopInstances before the rollback and start it after");
  })
  .optional();
const applySnapshotSchema = z.object({ SnapshotId: idString("snapshot"), DiskId: idString("disk"), AutoStopInstance: noAutoPower, AutoStartInstance: noAutoPower }).strict();

export function parseApplySnapshot(body: unknown): ApplySnapshotParams {
  const r = parseWith(applySnapshotSchema, body);
  return { snapshotId: r.SnapshotId, diskId: r.DiskId };
}

/** The request schemas of this file's actions, by action (test/unit/api/fields.test.ts walks every field). */
export const DISK_REQUEST_SCHEMAS = {
  CreateDisks: createDisksSchema,
  AttachDisks: attachDisksSchema,
  DetachDisks: detachDisksSchema,
  DescribeDisks: describeDisksSchema,
  TerminateDisks: terminateDisksSchema,
  ResizeInstanceDisks: resizeSchema,
  CreateSnapshot: createSnapshotSchema,
  DescribeSnapshots: describeSnapshotsSchema,
  DeleteSnapshots: deleteSnapshotsSchema,
  ApplySnapshot: applySnapshotSchema,
} as const;
