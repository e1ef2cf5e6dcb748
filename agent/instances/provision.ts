/**
 * Making and unmaking an instance's host resources: its directory, system disk and
 * domain. Every step is idempotent, so recovery after a crash simply runs the same
 * function again (roll forward) or the teardown (roll back).
 */
import { mkdir, rm, readdir, readFile, stat } from "node:fs/promises";
import type { Logger } from "pino";
import { DomainNotFoundError, type Hypervisor, type VirtType } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import type { ImageCatalog } from "../images.js";
import type { InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { buildDomainSpec, type IoLimits } from "./domain-spec.js";
import type { DomainSpec } from "../../drivers/libvirt/types.js";
import type { Storage } from "../storage/storage.js";
import type { DiskStore } from "../disks/store.js";

const GiB = 1024 ** 3;

export interface ProvisionContext {
  hypervisor: Hypervisor;
  imageTool: ImageTool;
  images: ImageCatalog;
  paths: DataPaths;
  virtType: VirtType;
  agentVersion: string;
  logger: Logger;
  /**
   * Fault injection for the crash tests: called at named points of create and
   * terminate; the agent kills itself there when its fail_point setting names the point.
   */
  checkpoint: (point: string) => void;
  /** Builds (or rebuilds) the instance's config drive from its record, atomically. */
  buildConfigDrive: (record: InstanceRecord) => Promise<void>;
  storage: Storage;
  disks: DiskStore;
  /** Per-disk IO limits of a pool. */
  ioLimits: (pool: string | undefined) => IoLimits | undefined;
  /** The rescue system's files, and the network an instance's rescue system gets. */
  rescue?: { kernel: string; initrd: string };
  subnetOf?: (subnetId: string | undefined) => { prefixLength: number; gateway: string; dns: readonly string[] } | undefined;
  /** Called before a disk's record goes (its snapshots are dropped with it). */
  onDiskDeleted?: (diskId: string) => Promise<void>;
}

/** The domain spec of an instance as it is now: its record, its attached data disks, its pools' limits. */
export function domainSpecOf(ctx: ProvisionContext, record: InstanceRecord, bootMode: "Legacy BIOS" | "UEFI"): DomainSpec {
  return buildDomainSpec({
    record,
    virtType: ctx.virtType,
    paths: ctx.paths,
    agentVersion: ctx.agentVersion,
    firmware: bootMode === "UEFI" ? "uefi" : "bios",
    dataDisks: ctx.disks.attachedTo(record.instanceId).map((d) => ({ diskId: d.diskId, target: d.target!, path: d.path, pool: d.pool })),
    ioLimits: ctx.ioLimits,
    ...(ctx.rescue ? { rescue: { ...ctx.rescue, ...rescueNetwork(ctx, record) } } : {}),
  });
}

function rescueNetwork(ctx: ProvisionContext, record: InstanceRecord): { network?: { ip: string; prefixLength: number; gateway: string; dns: readonly string[] } } {
  const nic = record.nics[0];
  const subnet = ctx.subnetOf?.(nic?.subnetId);
  if (!nic?.ipv4 || !subnet) return {};
  return { network: { ip: nic.ipv4, prefixLength: subnet.prefixLength, gateway: subnet.gateway, dns: subnet.dns } };
}

/**
 * Creates the system disk and the domain, and starts it. Safe to run again after a
 * crash at any point: a defined domain means its disk was complete; without one the
 * disk is made anew.
 */
export async function provisionInstance(ctx: ProvisionContext, record: InstanceRecord, signal?: AbortSignal): Promise<void> {
  const { hypervisor, imageTool, paths } = ctx;
  const existing = await hypervisor.getDomain(record.instanceId);
  if (!existing) {
    const image = ctx.images.requireUsable(record.imageId);
    await mkdir(paths.instanceDir(record.instanceId), { recursive: true, mode: 0o711 });
    await rm(record.systemDisk.path, { force: true });
    signal?.throwIfAborted();
    // The system disk, the data disks and the config drive are made at the same time.
    const started = performance.now();
    const dataDisks = ctx.disks.attachedTo(record.instanceId);
    const timed = async (work: Promise<unknown>) => {
      await work;
      return Math.round(performance.now() - started);
    };
    const [disksMs, driveMs] = await Promise.all([
      timed(
        Promise.all([
          imageTool.createOverlay({
            backing: image.path,
            backingFormat: "qcow2",
            target: record.systemDisk.path,
            sizeBytes: Math.max(record.systemDisk.sizeGiB * GiB, image.virtualSizeBytes),
          }),
          // Data disks: made empty, unless a crash left a complete one (it was then never used).
          ...dataDisks.map(async (disk) => {
            if (!(await exists(disk.path)) || !(await isQcow2(imageTool, disk.path))) await ctx.storage.createEmpty(disk.path, disk.sizeGiB);
          }),
        ]),
      ),
      timed(ctx.buildConfigDrive(record)),
    ]);
    ctx.logger.info({ instanceId: record.instanceId, disks: 1 + dataDisks.length, disksMs, driveMs }, "instance disks and config drive made");
    ctx.checkpoint("create:overlay-created");
    signal?.throwIfAborted();
    await hypervisor.defineDomain(domainSpecOf(ctx, record, image.bootMode));
    ctx.checkpoint("create:domain-defined");
  }
  signal?.throwIfAborted();
  const state = existing?.state ?? "shut off";
  if (state === "shut off" || state === "crashed") await hypervisor.start(record.instanceId);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isQcow2(imageTool: ImageTool, path: string): Promise<boolean> {
  try {
    return (await imageTool.info(path)).format === "qcow2";
  } catch {
    return false;
  }
}

/**
 * Removes the domain and every file of the instance: the system disk and the data disks
 * deleted with it (their data destroyed first, see Storage.destroyFile); data disks kept
 * are detached. `allDisks` (a failed launch) removes every disk made for it. Idempotent.
 */
export async function teardownInstance(
  ctx: ProvisionContext,
  instanceId: string,
  options: { allDisks?: boolean; systemDiskPath?: string; systemDiskId?: string } = {},
): Promise<void> {
  try {
    await ctx.hypervisor.destroy(instanceId);
  } catch (error) {
    // Gone already (a terminate interrupted after its undefine): nothing to stop.
    if (!(error instanceof DomainNotFoundError)) throw error;
  }
  ctx.checkpoint("terminate:destroyed");
  await ctx.hypervisor.undefine(instanceId);
  ctx.checkpoint("terminate:undefined");
  if (options.systemDiskPath) await ctx.storage.destroyFile(options.systemDiskPath);
  if (options.systemDiskId) await ctx.onDiskDeleted?.(options.systemDiskId);
  for (const disk of ctx.disks.attachedTo(instanceId)) {
    if (disk.deleteWithInstance || options.allDisks) {
      await ctx.storage.destroyFile(disk.path);
      await ctx.onDiskDeleted?.(disk.diskId);
      await ctx.disks.remove(disk.diskId);
    } else {
      const { instanceId: _i, target: _t, ...kept } = disk;
      await ctx.disks.save(kept);
    }
  }
  await rm(ctx.paths.instanceDir(instanceId), { recursive: true, force: true });
  await rm(`${ctx.paths.launchFailedDir}/${instanceId}.json`, { force: true });
}

/** Instances whose launch failed keep a record (no domain holds it) until terminated. */
export async function saveLaunchFailed(paths: DataPaths, record: InstanceRecord): Promise<void> {
  await writeFileAtomic(`${paths.launchFailedDir}/${record.instanceId}.json`, JSON.stringify(record));
}

export async function loadLaunchFailed(paths: DataPaths): Promise<InstanceRecord[]> {
  let names: string[];
  try {
    names = await readdir(paths.launchFailedDir);
  } catch {
    return [];
  }
  const out: InstanceRecord[] = [];
  for (const name of names) {
    if (!/^ins-[a-z0-9]{8}\.json$/.test(name)) continue;
    out.push(JSON.parse(await readFile(`${paths.launchFailedDir}/${name}`, "utf8")) as InstanceRecord);
  }
  return out;
}
