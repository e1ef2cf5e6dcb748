/**
 * Disk snapshots at host scope, with the CBS action names: CreateSnapshot,
 * DescribeSnapshots, DeleteSnapshots, ApplySnapshot. A snapshot is a standalone qcow2
 * copy of the disk (backing chain flattened) in the disk's pool, under snapshots/,
 * with a JSON record under `<data_dir>/snapshots/`. The record is written (CREATING)
 * before the copy starts; at start-up a CREATING record is a copy a crash cut short,
 * and it is removed with its partial file. Rolling back replaces the disk file
 * atomically (copy to `.part`, rename), so a crash leaves either the old or the new disk.
 */
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { DomainError } from "../core/errors.js";
import { isPoweredOn, isoSeconds, newId } from "../model.js";
import type { InstanceEntry, InstanceRegistry } from "../instances/registry.js";
import type { PoolFile } from "../storage/pools.js";
import type { Storage } from "../storage/storage.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { consistentCopy } from "./copy.js";
import type { DiskStore } from "./store.js";
import type { Filter } from "../core/filter.js";
import { describeIssues, snapshotRecordSchema } from "../core/records.js";
import { setAside } from "../util/set-aside.js";
import type { SnapshotFilterName } from "./filters.js";

const GiB = 1024 ** 3;

export interface SnapshotRecord {
  version: 1;
  snapshotId: string;
  snapshotName: string;
  diskId: string;
  diskUsage: "SYSTEM_DISK" | "DATA_DISK";
  /** The disk's size when the snapshot was taken. */
  diskSizeGiB: number;
  pool: string;
  path: string;
  state: "CREATING" | "NORMAL" | "ROLLBACKING";
  createdTime: string;
  /** The instance the disk belonged to then (for a system disk). */
  instanceId?: string;
  /** Bytes the file takes (for pool accounting). */
  sizeBytes?: number;
  /** How the copy of a running disk was made consistent. */
  quiesce?: "none" | "fsfreeze" | "paused";
}

/** A disk as snapshots see it: a data disk from the store or an instance's system disk. */
interface DiskRef {
  diskId: string;
  usage: "SYSTEM_DISK" | "DATA_DISK";
  path: string;
  pool: string;
  sizeGiB: number;
  /** The instance it is attached to, if any. */
  instance?: InstanceEntry;
}

export interface SnapshotServiceOptions {
  dir: string;
  disks: DiskStore;
  registry: InstanceRegistry;
  storage: Storage;
  hypervisor: Hypervisor;
  imageTool: ImageTool;
  exclusive: <T>(instanceId: string, work: () => Promise<T>) => Promise<T>;
  checkpoint: (point: string) => void;
  /** The quiesce marker of an instance (DataPaths.quiesceMarker). */
  quiesceMarker: (instanceId: string) => string;
  logger: Logger;
}

export class SnapshotService {
  private readonly snapshots = new Map<string, SnapshotRecord>();

  constructor(private readonly o: SnapshotServiceOptions) {}

  /** Loads the records; copies and rollbacks a crash cut short are cleaned up. */
  async load(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.o.dir)) {
      if (!/^snap-[a-z0-9]{8}\.json$/.test(name)) continue;
      const file = join(this.o.dir, name);
      let record: SnapshotRecord;
      try {
        const parsed = snapshotRecordSchema.safeParse(JSON.parse(await readFile(file, "utf8")));
        if (!parsed.success) throw new Error(describeIssues(parsed.error));
        record = parsed.data as unknown as SnapshotRecord;
        if (`${record.snapshotId}.json` !== name) throw new Error(`its snapshotId ${record.snapshotId} is not its file's name`);
      } catch (error) {
        // Set aside for the operator (its file is left where it is), never a failed start-up.
        const aside = await setAside(file);
        this.o.logger.warn({ file, aside, reason: (error as Error).message }, "snapshot record unreadable; set aside");
        continue;
      }
      await rm(`${record.path}.part`, { force: true });
      if (record.state === "CREATING") {
        this.o.logger.warn({ snapshotId: record.snapshotId }, "removing a snapshot whose copy a restart cut short");
        await rm(record.path, { force: true });
        await rm(join(this.o.dir, name), { force: true });
        continue;
      }
      if (record.state === "ROLLBACKING") {
        record.state = "NORMAL";
        await this.save(record);
      }
      this.snapshots.set(record.snapshotId, record);
    }
    // A rollback's partial copy sits beside its disk.
    for (const d of this.o.disks.all()) await rm(`${d.path}.rollback.part`, { force: true });
    for (const e of this.o.registry.all()) await rm(`${e.record.systemDisk.path}.rollback.part`, { force: true });
  }

  /** Snapshot files, for pool accounting. */
  *files(): Iterable<PoolFile> {
    for (const s of this.snapshots.values()) yield { pool: s.pool, path: s.path, promisedBytes: s.sizeBytes ?? s.diskSizeGiB * GiB };
  }

  /** CreateSnapshot: the copy runs in the background; the snapshot is CREATING until it is done. */
  async create(req: { diskId: string; snapshotName?: string }): Promise<string> {
    const disk = this.resolve(req.diskId);
    if (disk.instance?.transition) {
      throw new DomainError("DiskBusy", `disk ${disk.diskId}: its instance ${disk.instance.record.instanceId} is busy with ${disk.instance.transition.action}`);
    }
    await this.checkRoom(disk);
    let snapshotId = newId("snap");
    while (this.snapshots.has(snapshotId)) snapshotId = newId("snap");
    const record: SnapshotRecord = {
      version: 1,
      snapshotId,
      snapshotName: req.snapshotName ?? snapshotId,
      diskId: disk.diskId,
      diskUsage: disk.usage,
      diskSizeGiB: disk.sizeGiB,
      pool: disk.pool,
      path: this.o.storage.pools.snapshotPath(disk.pool, snapshotId),
      state: "CREATING",
      createdTime: isoSeconds(new Date()),
      ...(disk.instance ? { instanceId: disk.instance.record.instanceId } : {}),
    };
    this.snapshots.set(snapshotId, record);
    await this.save(record);
    const work = async () => {
      const running = disk.instance && isPoweredOn(disk.instance.power) ? disk.instance.record.instanceId : undefined;
      record.quiesce = await consistentCopy({
        imageTool: this.o.imageTool,
        hypervisor: this.o.hypervisor,
        logger: this.o.logger,
        source: disk.path,
        target: record.path,
        ...(running ? { runningInstance: running, quiesceMarker: this.o.quiesceMarker(running) } : {}),
        checkpoint: () => this.o.checkpoint("snapshot:copying"),
      });
      record.sizeBytes = (await stat(record.path)).blocks * 512;
      record.state = "NORMAL";
      await this.save(record);
      void this.o.storage.measure().catch(() => undefined);
    };
    const run = disk.instance ? this.o.exclusive(disk.instance.record.instanceId, work) : work();
    void run.catch(async (error: unknown) => {
      this.o.logger.error({ snapshotId, err: error }, "snapshot failed");
      this.snapshots.delete(snapshotId);
      await rm(record.path, { force: true });
      await rm(join(this.o.dir, `${snapshotId}.json`), { force: true });
    });
    return snapshotId;
  }

  /** Resolves when no snapshot is CREATING any more (tests). */
  async settled(snapshotId: string, timeoutMs = 300_000): Promise<SnapshotRecord | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.snapshots.get(snapshotId);
      if (!r || r.state !== "CREATING" || Date.now() > deadline) return r;
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  describe(req: { snapshotIds?: string[]; filters: Filter<SnapshotFilterName>[]; offset: number; limit: number; descending?: boolean }): { total: number; snapshots: Array<Record<string, unknown>> } {
    let rows = [...this.snapshots.values()].sort((a, b) => a.createdTime.localeCompare(b.createdTime) || a.snapshotId.localeCompare(b.snapshotId));
    if (req.snapshotIds) {
      const wanted = new Set(req.snapshotIds);
      rows = rows.filter((r) => wanted.has(r.snapshotId));
    }
    const field: Record<SnapshotFilterName, (r: SnapshotRecord) => string> = {
      "snapshot-id": (r) => r.snapshotId,
      "disk-id": (r) => r.diskId,
      "disk-usage": (r) => r.diskUsage,
      "snapshot-name": (r) => r.snapshotName,
      "snapshot-state": (r) => r.state,
    };
    for (const f of req.filters) {
      const values = new Set(f.values);
      rows = rows.filter((r) => values.has(field[f.name](r)));
    }
    if (req.descending) rows.reverse();
    return { total: rows.length, snapshots: rows.slice(req.offset, req.offset + req.limit).map(toCbsSnapshot) };
  }

  /** DeleteSnapshots: all or nothing; a snapshot being made or rolled back is busy. */
  async delete(snapshotIds: string[]): Promise<void> {
    const records = snapshotIds.map((id) => this.require(id));
    for (const r of records) if (r.state !== "NORMAL") throw new DomainError("SnapshotNotSupported", `snapshot ${r.snapshotId} is ${r.state}`);
    for (const r of records) await this.drop(r);
  }

  /** Drops every snapshot of a disk that is being deleted. */
  async dropForDisk(diskId: string): Promise<void> {
    for (const r of [...this.snapshots.values()]) if (r.diskId === diskId) await this.drop(r);
  }

  private async drop(r: SnapshotRecord): Promise<void> {
    this.snapshots.delete(r.snapshotId);
    await this.o.storage.destroyFile(r.path);
    await rm(join(this.o.dir, `${r.snapshotId}.json`), { force: true });
  }

  /**
   * ApplySnapshot: the disk's content becomes the snapshot's. Its instance must be
   * STOPPED (or the disk unattached). The disk keeps its ID, size and place.
   */
  async apply(req: { snapshotId: string; diskId: string }): Promise<void> {
    const snap = this.require(req.snapshotId);
    if (snap.diskId !== req.diskId) throw new DomainError("SnapshotNotSupported", `snapshot ${snap.snapshotId} is of disk ${snap.diskId}, not ${req.diskId}`);
    if (snap.state !== "NORMAL") throw new DomainError("SnapshotNotSupported", `snapshot ${snap.snapshotId} is ${snap.state}`);
    const disk = this.resolve(req.diskId);
    if (disk.instance) {
      const state = this.o.registry.stateOf(disk.instance);
      if (state !== "STOPPED" || disk.instance.transition) {
        throw new DomainError("InstanceNotStopped", `instance ${disk.instance.record.instanceId} is ${state}; stop it before rolling its disk back`);
      }
    }
    snap.state = "ROLLBACKING";
    await this.save(snap);
    const work = async () => {
      const part = `${disk.path}.rollback.part`;
      try {
        await this.o.imageTool.convert({ source: snap.path, sourceFormat: "qcow2", target: part, targetFormat: "qcow2" });
        // A disk grown after the snapshot keeps its size.
        await this.o.imageTool.resize({ target: part, format: "qcow2", sizeBytes: Math.max(disk.sizeGiB, snap.diskSizeGiB) * GiB });
        this.o.checkpoint("snapshot:rollback-copied");
        await rename(part, disk.path);
      } finally {
        await rm(part, { force: true });
        snap.state = "NORMAL";
        await this.save(snap);
      }
    };
    if (disk.instance) await this.o.exclusive(disk.instance.record.instanceId, work);
    else await work();
  }

  private require(snapshotId: string): SnapshotRecord {
    const r = this.snapshots.get(snapshotId);
    if (!r) throw new DomainError("SnapshotNotFound", `no snapshot ${snapshotId} on this host`);
    return r;
  }

  /** A data disk or a system disk (with a disk ID) by its ID. */
  /**
   * The copy takes what the disk's file holds: refused before anything is made when its
   * pool cannot give that much (a full filesystem would otherwise fail the copy half way).
   */
  private async checkRoom(disk: DiskRef): Promise<void> {
    const need = (await stat(disk.path)).blocks * 512;
    await this.o.storage.measure();
    // What the filesystem really has free, read now (promises of thin disks are not bytes written).
    const left = this.o.storage.usage().find((u) => u.name === disk.pool)?.fsFreeBytes ?? 0;
    if (left < need) {
      const mib = (n: number) => `${Math.ceil(n / 1024 ** 2)} MiB`;
      throw new DomainError("PoolFull", `not enough space in pool ${disk.pool}: the snapshot of disk ${disk.diskId} needs ${mib(need)}, its filesystem has ${mib(left)} free`);
    }
  }

  private resolve(diskId: string): DiskRef {
    const d = this.o.disks.get(diskId);
    if (d) {
      if (d.busy) throw new DomainError("DiskBusy", `disk ${diskId} is ${d.busy}`);
      const instance = d.instanceId ? this.o.registry.get(d.instanceId) : undefined;
      return { diskId, usage: "DATA_DISK", path: d.path, pool: d.pool, sizeGiB: d.sizeGiB, ...(instance ? { instance } : {}) };
    }
    for (const e of this.o.registry.all()) {
      const sd = e.record.systemDisk;
      if (sd.diskId === diskId && sd.pool && !e.launchFailed) return { diskId, usage: "SYSTEM_DISK", path: sd.path, pool: sd.pool, sizeGiB: sd.sizeGiB, instance: e };
    }
    throw new DomainError("DiskNotFound", `no disk ${diskId} on this host`);
  }

  private async save(record: SnapshotRecord): Promise<void> {
    await writeFileAtomic(join(this.o.dir, `${record.snapshotId}.json`), JSON.stringify(record, null, 1), 0o600);
  }
}


/** The CBS Snapshot structure. */
function toCbsSnapshot(r: SnapshotRecord): Record<string, unknown> {
  return {
    SnapshotId: r.snapshotId,
    SnapshotName: r.snapshotName,
    SnapshotState: r.state,
    DiskId: r.diskId,
    DiskUsage: r.diskUsage,
    DiskSize: r.diskSizeGiB,
    Percent: r.state === "CREATING" ? 0 : 100,
    CreateTime: r.createdTime,
    SnapshotType: "PRIVATE_SNAPSHOT",
    Encrypt: false,
    IsPermanent: true,
    ImageCount: 0,
    Placement: {},
  };
}
