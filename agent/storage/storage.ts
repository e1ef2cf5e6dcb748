/**
 * The host's local storage as one thing: the pools, every file the agent keeps in them
 * (system disks, data disks, snapshots), placement of new disks (admission), making
 * empty disks, and destroying a disk's data when it is deleted ("degaussing").
 */
import { rm, stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { DomainError } from "../core/errors.js";
import type { DiskStore } from "../disks/store.js";
import type { InstanceRegistry } from "../instances/registry.js";
import { placeDisks, type LocalDiskType, type PoolFile, type PoolSet, type PoolUsage } from "./pools.js";

const GiB = 1024 ** 3;

export type WipeMode = "zero" | "discard" | "none";

export class Storage {
  private readonly extra: Array<() => Iterable<PoolFile>> = [];

  constructor(
    readonly o: {
      pools: PoolSet;
      disks: DiskStore;
      registry: InstanceRegistry;
      imageTool: ImageTool;
      runner: CommandRunner;
      wipe: WipeMode;
      /**
       * Disk each instance takes beyond its disks, for its configuration files (instance_overhead_gib;
       * the CDH FAQ's 2 GB): promised with its system disk, in the system disk's pool. Absent: 0.
       */
      instanceOverheadGiB?: number;
      imageCache: { dir: string; bytes: () => number };
      logger: Logger;
    },
  ) {}

  get pools(): PoolSet {
    return this.o.pools;
  }

  /** What each instance takes beyond its disks (GiB), promised with its system disk. */
  get instanceOverheadGiB(): number {
    return this.o.instanceOverheadGiB ?? 0;
  }

  /** More files that take pool space (snapshots), from their owner. */
  addFiles(source: () => Iterable<PoolFile>): void {
    this.extra.push(source);
  }

  /** Every file the agent keeps in the pools, with what was promised for it. */
  *files(): Iterable<PoolFile> {
    for (const e of this.o.registry.all()) {
      const sd = e.record.systemDisk;
      if (e.launchFailed || !sd.pool) continue;
      yield { pool: sd.pool, path: sd.path, promisedBytes: (sd.sizeGiB + this.instanceOverheadGiB) * GiB };
    }
    for (const d of this.o.disks.all()) yield { pool: d.pool, path: d.path, promisedBytes: d.sizeGiB * GiB };
    for (const source of this.extra) yield* source();
  }

  usage(): PoolUsage[] {
    return this.o.pools.usage(this.files());
  }

  /** Re-reads what the files take and what the filesystems have free. */
  async measure(): Promise<void> {
    await this.o.pools.measure(this.files(), { dir: this.o.imageCache.dir, bytes: this.o.imageCache.bytes() });
  }

  /** Disk totals for HostResource: capacity and what is left, in GiB, and the pools' disk type. */
  totals(): { totalGiB: number; availableGiB: number; diskType: LocalDiskType } {
    const usage = this.usage();
    let total = 0;
    let available = 0;
    const byType = new Map<LocalDiskType, number>();
    for (const u of usage) {
      total += u.capacityBytes;
      available += u.availableBytes;
      byType.set(u.diskType, (byType.get(u.diskType) ?? 0) + u.capacityBytes);
    }
    // HostResource has one DiskType: the type of most of the capacity.
    const diskType = [...byType.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "LOCAL_BASIC";
    return { totalGiB: Math.floor(total / GiB), availableGiB: Math.floor(available / GiB), diskType };
  }

  /**
   * Chooses a pool for each disk, or throws the CVM capacity error naming what does not
   * fit. Synchronous, so that the caller can reserve in the same step.
   */
  place(requests: ReadonlyArray<{ diskType: LocalDiskType; sizeGiB: number }>, shortage: "NoRoom" | "PoolFull" = "NoRoom"): string[] {
    const usage = this.usage();
    for (const r of requests) {
      if (!usage.some((u) => u.diskType === r.diskType)) {
        throw new DomainError("BadValue", `DiskType ${r.diskType}: this host has no ${r.diskType} storage pool`);
      }
    }
    const placed = placeDisks(usage, requests);
    if (placed) return placed;
    const want = new Map<string, number>();
    for (const r of requests) want.set(r.diskType, (want.get(r.diskType) ?? 0) + r.sizeGiB);
    const have = new Map<string, number>();
    for (const u of usage) have.set(u.diskType, (have.get(u.diskType) ?? 0) + Math.floor(u.availableBytes / GiB));
    const detail = [...want.entries()].map(([t, g]) => `${g} GiB of ${t} requested, ${have.get(t) ?? 0} GiB available`).join("; ");
    throw new DomainError(shortage, `the disks do not fit in this host's storage pools: ${detail}`);
  }

  /** Throws ResourceInsufficient unless every pool can give the growth asked of it. Synchronous. */
  checkGrowth(growth: ReadonlyArray<{ pool: string; deltaGiB: number }>): void {
    const need = new Map<string, number>();
    for (const g of growth) need.set(g.pool, (need.get(g.pool) ?? 0) + g.deltaGiB * GiB);
    for (const u of this.usage()) {
      const n = need.get(u.name) ?? 0;
      if (n > u.availableBytes) {
        throw new DomainError("PoolFull", `pool ${u.name} has ${Math.floor(u.availableBytes / GiB)} GiB left; the disks would grow by ${n / GiB} GiB`);
      }
    }
  }

  /** An empty qcow2 disk of the given size (GiB). */
  async createEmpty(path: string, sizeGiB: number): Promise<void> {
    await rm(path, { force: true });
    await this.o.imageTool.create({ target: path, format: "qcow2", sizeBytes: sizeGiB * GiB });
  }

  /**
   * Destroys a disk file's data, then deletes it. `zero` overwrites every byte of the
   * file; `discard` punches out all its blocks (the filesystem frees them and, on a
   * device with discard, the device drops them; a later file never reads them back);
   * `none` only deletes. A missing file is not an error.
   */
  async destroyFile(path: string): Promise<void> {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      return;
    }
    if (size > 0 && this.o.wipe !== "none") {
      try {
        if (this.o.wipe === "zero") {
          await this.o.runner.run(["shred", "--iterations=0", "--zero", "--", path], { timeoutMs: 6 * 60 * 60 * 1000 });
        } else {
          await this.o.runner.run(["fallocate", "--punch-hole", "--offset", "0", "--length", String(size), "--", path], { timeoutMs: 600_000 });
        }
      } catch (error) {
        // The file is deleted anyway: the filesystem never hands its blocks out unzeroed.
        this.o.logger.warn({ path, err: error }, `disk wipe (${this.o.wipe}) failed; deleting the file anyway`);
      }
    }
    await rm(path, { force: true });
  }

  /** Absolute paths of every disk and snapshot file (for the image cache's backing-chain walk). */
  diskFiles(): string[] {
    return [...this.files()].map((f) => f.path).concat(
      [...this.o.registry.all()].filter((e) => !e.record.systemDisk.pool).map((e) => e.record.systemDisk.path),
    );
  }
}
