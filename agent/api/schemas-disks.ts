/**
 * Disk actions: the CBS API's (2017-03-12) CreateDisks, AttachDisks, DetachDisks,
 * DescribeDisks, TerminateDisks, and the snapshot actions, at host scope; and CVM's
 * ResizeInstanceDisks. Local disks only: LOCAL_BASIC or LOCAL_SSD.
 */
import { z } from "zod";
import { ApiError } from "../errors.js";
import { boundedString, fail, filterList, idList, idString, intInRange, paging, parseWith, toFilters, toPaging, unique, type Filter, type Paging } from "./schemas.js";
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
  clientToken?: string;
}

const createDisksSchema = z
  .object({
    DiskType: diskType(),
    DiskSize: intInRange(10, MAX_DISK_GIB),
    DiskCount: intInRange(1, 50).optional(),
    DiskName: boundedString(60).optional(),
    DiskChargeType: z.string().optional(),
    Placement: z.object({ Zone: z.string().optional(), ProjectId: z.number().int().optional(), HostId: idString("host").optional() }).strict().optional(),
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
    ...(r.ClientToken !== undefined ? { clientToken: r.ClientToken } : {}),
  };
}

export interface AttachDisksParams {
  diskIds: string[];
  instanceId: string;
  deleteWithInstance?: boolean;
}

const attachDisksSchema = z
  .object({ DiskIds: idList("disk", 10), InstanceId: idString("instance"), DeleteWithInstance: z.boolean().optional(), AttachMode: z.string().optional() })
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

export interface DescribeDisksParams extends Paging {
  diskIds?: string[];
  filters: Filter<DiskFilterName>[];
}

const describeDisksSchema = z
  .object({ DiskIds: idList("disk").optional(), Filters: filterList(DISK_FILTER_NAMES).optional(), ...paging, ReturnBindAutoSnapshotPolicy: z.boolean().optional(), Order: z.string().optional(), OrderField: z.string().optional() })
  .strict();

export function parseDescribeDisks(body: unknown): DescribeDisksParams {
  const r = parseWith(describeDisksSchema, body);
  return { ...toPaging(r), filters: toFilters<DiskFilterName>(r.Filters), ...(r.DiskIds ? { diskIds: unique(r.DiskIds) } : {}) };
}

export interface TerminateDisksParams {
  diskIds: string[];
}

const terminateDisksSchema = z.object({ DiskIds: idList("disk"), DeleteSnapshot: z.number().int().optional() }).strict();

export function parseTerminateDisks(body: unknown): TerminateDisksParams {
  return { diskIds: unique(parseWith(terminateDisksSchema, body).DiskIds) };
}

export interface ResizeInstanceDisksParams {
  instanceId: string;
  systemDiskGiB?: number;
  dataDisks: Array<{ diskId: string; diskSizeGiB: number }>;
  resizeOnline: boolean;
  forceStop: boolean;
  dryRun: boolean;
}

const resizeSchema = z
  .object({
    InstanceId: idString("instance"),
    SystemDisk: z.object({ DiskSize: intInRange(1, MAX_DISK_GIB), DiskType: z.string().optional(), DiskId: z.string().optional() }).strict().optional(),
    DataDisks: z
      .array(z.object({ DiskId: idString("disk"), DiskSize: intInRange(1, MAX_DISK_GIB), DiskType: z.string().optional(), DeleteWithInstance: z.boolean().optional() }).strict())
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
    dataDisks: (r.DataDisks ?? []).map((d) => ({ diskId: d.DiskId, diskSizeGiB: d.DiskSize })),
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

const createSnapshotSchema = z.object({ DiskId: idString("disk"), SnapshotName: boundedString(60).optional(), Deadline: z.string().optional(), DiskBackupId: z.string().optional() }).strict();

export function parseCreateSnapshot(body: unknown): CreateSnapshotParams {
  const r = parseWith(createSnapshotSchema, body);
  return { diskId: r.DiskId, ...(r.SnapshotName !== undefined ? { snapshotName: r.SnapshotName } : {}) };
}


export interface DescribeSnapshotsParams extends Paging {
  snapshotIds?: string[];
  filters: Filter<SnapshotFilterName>[];
}

const describeSnapshotsSchema = z
  .object({ SnapshotIds: idList("snapshot").optional(), Filters: filterList(SNAPSHOT_FILTER_NAMES).optional(), ...paging, Order: z.string().optional(), OrderField: z.string().optional() })
  .strict();

export function parseDescribeSnapshots(body: unknown): DescribeSnapshotsParams {
  const r = parseWith(describeSnapshotsSchema, body);
  return { ...toPaging(r), filters: toFilters<SnapshotFilterName>(r.Filters), ...(r.SnapshotIds ? { snapshotIds: unique(r.SnapshotIds) } : {}) };
}

export interface DeleteSnapshotsParams {
  snapshotIds: string[];
}

const deleteSnapshotsSchema = z.object({ SnapshotIds: idList("snapshot"), DeleteBindImages: z.boolean().optional() }).strict();

export function parseDeleteSnapshots(body: unknown): DeleteSnapshotsParams {
  return { snapshotIds: unique(parseWith(deleteSnapshotsSchema, body).SnapshotIds) };
}

export interface ApplySnapshotParams {
  snapshotId: string;
  diskId: string;
}

const applySnapshotSchema = z.object({ SnapshotId: idString("snapshot"), DiskId: idString("disk"), AutoStopInstance: z.boolean().optional(), AutoStartInstance: z.boolean().optional() }).strict();

export function parseApplySnapshot(body: unknown): ApplySnapshotParams {
  const r = parseWith(applySnapshotSchema, body);
  return { snapshotId: r.SnapshotId, diskId: r.DiskId };
}
