/**
 * Local disk pools: a directory per pool, with its disk type, a capacity and per-disk
 * IO limits. Disk files live in their pool as `<disk-id>.qcow2`; snapshots under
 * `<pool>/snapshots/`; files the inventory sweep found orphaned under `<pool>/quarantine/`.
 *
 * What a pool can still give is derived from the disks themselves each time it is asked:
 *   promised  = Σ virtual sizes of the pool's disks + Σ sizes of its snapshots
 *   available = capacity − promised − image cache (when the cache shares the filesystem),
 *               and never more than the filesystem can still really write for the disks:
 *               free bytes − the host's reservation − (promised − what the disks already take).
 * So a thin (sparse qcow2) disk cannot quietly fill the host: its promise counts in full.
 */
import { mkdir, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import type { StoragePoolConfig } from "../config.js";

export type LocalDiskType = "LOCAL_BASIC" | "LOCAL_SSD";

const GiB = 1024 ** 3;

export interface StoragePool extends StoragePoolConfig {
  /** Capacity in bytes: size_gib, or the filesystem's size (set by PoolSet.load). */
  capacityBytes: number;
  /** st_dev of the pool directory (to tell which pools share a filesystem with the cache). */
  device: number;
}

/** One file a pool holds, as the owners of disks and snapshots describe it. */
export interface PoolFile {
  pool: string;
  path: string;
  /** What was promised for the file: a disk's virtual size, a snapshot's size. */
  promisedBytes: number;
}

export interface PoolUsage {
  name: string;
  diskType: LocalDiskType;
  capacityBytes: number;
  promisedBytes: number;
  /** What the files really take on disk (st_blocks × 512, as qemu-img's actual-size). */
  usedBytes: number;
  /** Image cache bytes counted against this pool (same filesystem). */
  cacheBytes: number;
  /** Free bytes of the pool's filesystem. */
  fsFreeBytes: number;
  availableBytes: number;
}

export class PoolSet {
  private readonly pools = new Map<string, StoragePool>();

  /** `reservedBytes`: kept free for the host on every pool's filesystem (reserved_disk_gib). */
  constructor(
    private readonly configs: readonly StoragePoolConfig[],
    private readonly reservedBytes = 0,
  ) {}

  /** Creates the pool directories (0711: QEMU must reach the files) and reads their filesystems. */
  async load(): Promise<void> {
    for (const config of this.configs) {
      await mkdir(config.path, { recursive: true, mode: 0o711 });
      await mkdir(join(config.path, "snapshots"), { recursive: true, mode: 0o700 });
      await mkdir(join(config.path, "quarantine"), { recursive: true, mode: 0o700 });
      const fs = await statfs(config.path);
      const st = await stat(config.path);
      const fsBytes = fs.blocks * fs.bsize;
      this.pools.set(config.name, {
        ...config,
        capacityBytes: config.sizeGiB !== undefined ? config.sizeGiB * GiB : fsBytes,
        device: st.dev,
      });
    }
  }

  list(): StoragePool[] {
    return [...this.pools.values()];
  }

  get(name: string): StoragePool | undefined {
    return this.pools.get(name);
  }

  /** The pool a path lies in (directly, or under snapshots/ or quarantine/), if any. */
  poolOf(path: string): StoragePool | undefined {
    for (const pool of this.pools.values()) if (path.startsWith(`${pool.path}/`)) return pool;
    return undefined;
  }

  diskPath(pool: string, diskId: string, suffix = ""): string {
    return join(this.require(pool).path, `${diskId}${suffix}.qcow2`);
  }

  snapshotPath(pool: string, snapshotId: string): string {
    return join(this.require(pool).path, "snapshots", `${snapshotId}.qcow2`);
  }

  quarantineDir(pool: string): string {
    return join(this.require(pool).path, "quarantine");
  }

  private require(name: string): StoragePool {
    const pool = this.pools.get(name);
    if (!pool) throw new Error(`storage pool ${name} is not configured`);
    return pool;
  }

  /** What the filesystems said at the last measure(); promises are counted live. */
  private measured = new Map<string, { used: number; fsFree: number; cache: number }>();

  /**
   * Reads what the files really take and what each filesystem has free (stat, statfs).
   * Run after every change of disks and on a timer; admission uses the last figures,
   * so it stays one synchronous step.
   */
  async measure(files: Iterable<PoolFile>, cache: { dir: string; bytes: number }): Promise<void> {
    let cacheDevice: number | undefined;
    try {
      cacheDevice = (await stat(cache.dir)).dev;
    } catch {
      cacheDevice = undefined;
    }
    const used = new Map<string, number>();
    // Up to 32 stats at a time (one file after another, 1,000 disks took ~0.3 s at start-up, where the API waits for it).
    const list = [...files];
    for (let i = 0; i < list.length; i += 32) {
      const batch = list.slice(i, i + 32);
      const bytes = await Promise.all(batch.map((f) => allocatedBytes(f.path)));
      batch.forEach((f, j) => used.set(f.pool, (used.get(f.pool) ?? 0) + bytes[j]!));
    }
    let cacheCharged = false;
    const next = new Map<string, { used: number; fsFree: number; cache: number }>();
    for (const pool of this.pools.values()) {
      // The cache is charged once, to the first pool on its filesystem.
      const cacheBytes = !cacheCharged && cacheDevice === pool.device ? cache.bytes : 0;
      if (cacheBytes) cacheCharged = true;
      const fs = await statfs(pool.path);
      next.set(pool.name, { used: used.get(pool.name) ?? 0, fsFree: fs.bavail * fs.bsize, cache: cacheBytes });
    }
    this.measured = next;
  }

  /** Usage of every pool: promises from `files` now, the rest from the last measure(). Synchronous. */
  usage(files: Iterable<PoolFile>): PoolUsage[] {
    const promised = new Map<string, number>();
    for (const f of files) promised.set(f.pool, (promised.get(f.pool) ?? 0) + f.promisedBytes);
    return [...this.pools.values()].map((pool) => {
      const m = this.measured.get(pool.name) ?? { used: 0, fsFree: pool.capacityBytes, cache: 0 };
      const p = promised.get(pool.name) ?? 0;
      return {
        name: pool.name,
        diskType: pool.diskType,
        capacityBytes: pool.capacityBytes,
        promisedBytes: p,
        usedBytes: m.used,
        cacheBytes: m.cache,
        fsFreeBytes: m.fsFree,
        availableBytes: poolAvailable({ capacity: pool.capacityBytes, promised: p, used: m.used, cache: m.cache, fsFree: m.fsFree, reserved: this.reservedBytes }),
      };
    });
  }
}

/** Pure: what a pool can still promise (see the module comment). */
export function poolAvailable(u: { capacity: number; promised: number; used: number; cache: number; fsFree: number; reserved?: number }): number {
  const byCapacity = u.capacity - u.promised - u.cache;
  const stillToWrite = Math.max(0, u.promised - u.used);
  const byFilesystem = u.fsFree - (u.reserved ?? 0) - stillToWrite;
  return Math.max(0, Math.min(byCapacity, byFilesystem));
}

/**
 * Picks a pool of the disk type for each requested size (GiB), first fit in the order
 * the pools are configured, counting what earlier requests of the same call took.
 * Returns the pool names, or null when some request does not fit.
 */
export function placeDisks(
  usage: readonly PoolUsage[],
  requests: ReadonlyArray<{ diskType: LocalDiskType; sizeGiB: number }>,
): string[] | null {
  const left = new Map(usage.map((u) => [u.name, u.availableBytes] as const));
  const out: string[] = [];
  for (const r of requests) {
    const need = r.sizeGiB * GiB;
    const pool = usage.find((u) => u.diskType === r.diskType && (left.get(u.name) ?? 0) >= need);
    if (!pool) return null;
    left.set(pool.name, (left.get(pool.name) ?? 0) - need);
    out.push(pool.name);
  }
  return out;
}

async function allocatedBytes(path: string): Promise<number> {
  try {
    return (await stat(path)).blocks * 512;
  } catch {
    return 0;
  }
}
