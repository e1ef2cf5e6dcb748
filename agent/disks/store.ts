/**
 * Data disks: one JSON record per disk under `<data_dir>/disks/`, written atomically.
 * A data disk lives in a storage pool as `<disk-id>.qcow2` and is attached to at most
 * one instance, at a fixed target (vdb, vdc, …) with the serial equal to its ID, so
 * the guest finds it under /dev/disk/by-id/virtio-<disk-id>. The store is the one
 * truth about attachments; domain definitions follow it (and are healed from it).
 */
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { LocalDiskType } from "../storage/pools.js";
import type { Logger } from "pino";
import { writeFileAtomic } from "../util/atomic-file.js";
import { setAside } from "../util/set-aside.js";
import { describeIssues, diskRecordSchema } from "../core/records.js";

export type DiskState = "UNATTACHED" | "ATTACHING" | "ATTACHED" | "DETACHING" | "EXPANDING" | "ROLLBACKING" | "CREATING";

export interface DiskRecord {
  version: 1;
  diskId: string;
  diskName: string;
  diskType: LocalDiskType;
  pool: string;
  sizeGiB: number;
  /** Absolute path of the qcow2 file in its pool. */
  path: string;
  /** The instance it is attached to, and where. */
  instanceId?: string;
  target?: string;
  /** Deleted when its instance is terminated (default for disks made by RunInstances). */
  deleteWithInstance: boolean;
  createdTime: string;
  /** A transition in progress (shown as DiskState); absent = derived from the attachment. */
  busy?: "ATTACHING" | "DETACHING" | "EXPANDING" | "ROLLBACKING" | "CREATING";
  /** CreateDisks' ClientToken: the same token gives back the same disks, in the order of batchIndex. */
  clientToken?: string;
  /** Position within its CreateDisks batch (0-based), with clientToken. */
  batchIndex?: number;
}

/** The virtio targets data disks take, in order: vdb … vdz (vda is the system disk). */
export const DATA_DISK_TARGETS: readonly string[] = Object.freeze(
  Array.from({ length: 25 }, (_, i) => `vd${String.fromCharCode("b".charCodeAt(0) + i)}`),
);

export function diskState(record: DiskRecord): DiskState {
  return record.busy ?? (record.instanceId ? "ATTACHED" : "UNATTACHED");
}

export class DiskStore {
  private readonly disks = new Map<string, DiskRecord>();

  constructor(
    private readonly dir: string,
    private readonly logger?: Pick<Logger, "warn">,
  ) {}

  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      if (!/^disk-[a-z0-9]{8}\.json$/.test(name)) continue;
      const file = join(this.dir, name);
      let record: DiskRecord;
      try {
        const parsed = diskRecordSchema.safeParse(JSON.parse(await readFile(file, "utf8")));
        if (!parsed.success) throw new Error(describeIssues(parsed.error));
        record = parsed.data as unknown as DiskRecord;
        if (`${record.diskId}.json` !== name) throw new Error(`its diskId ${record.diskId} is not its file's name`);
      } catch (error) {
        // Set aside for the operator, never a failed start-up.
        const aside = await setAside(file);
        this.logger?.warn({ file, aside, reason: (error as Error).message }, "disk record unreadable; set aside");
        continue;
      }
      this.disks.set(record.diskId, record);
    }
  }

  get(diskId: string): DiskRecord | undefined {
    return this.disks.get(diskId);
  }

  has(diskId: string): boolean {
    return this.disks.has(diskId);
  }

  all(): IterableIterator<DiskRecord> {
    return this.disks.values();
  }

  /** The disks attached to an instance, by target (vdb first). */
  attachedTo(instanceId: string): DiskRecord[] {
    return [...this.disks.values()].filter((d) => d.instanceId === instanceId).sort((a, b) => (a.target ?? "").localeCompare(b.target ?? ""));
  }

  /** The first free data-disk target of an instance, counting `taken` as used too. */
  freeTarget(instanceId: string, taken: ReadonlySet<string> = new Set()): string | undefined {
    const used = new Set(this.attachedTo(instanceId).map((d) => d.target));
    return DATA_DISK_TARGETS.find((t) => !used.has(t) && !taken.has(t));
  }

  /** Adds or replaces a record in memory only (saved by save()). */
  put(record: DiskRecord): void {
    this.disks.set(record.diskId, record);
  }

  async save(record: DiskRecord): Promise<void> {
    this.disks.set(record.diskId, record);
    await writeFileAtomic(join(this.dir, `${record.diskId}.json`), JSON.stringify(record, null, 1), 0o600);
  }

  async remove(diskId: string): Promise<void> {
    this.disks.delete(diskId);
    await rm(join(this.dir, `${diskId}.json`), { force: true });
  }
}
