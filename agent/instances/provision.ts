/**
 * Making and unmaking an instance's host resources: its directory, system disk and
 * domain. Every step is idempotent, so recovery after a crash simply runs the same
 * function again (roll forward) or the teardown (roll back).
 */
import { mkdir, rm, readdir, readFile, stat } from "node:fs/promises";
import type { Logger } from "pino";
import { DomainNotFoundError, type DomainPowerState, type Hypervisor, type VirtType } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import type { ImageCatalog } from "../images/catalog.js";
import type { InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { setAside } from "../util/set-aside.js";
import { checkInstanceRecord } from "../core/records.js";
import { buildDomainSpec, type HotplugHeadroom, type IoLimits } from "./domain-spec.js";
import type { DomainSpec } from "../../drivers/libvirt/types.js";
import type { Storage } from "../storage/storage.js";
import type { DiskStore } from "../disks/store.js";

const GiB = 1024 ** 3;

/**
 * Fault injection for the crash tests: called at named points of the operations; the
 * agent kills itself there when its fail_point setting names the point.
 */
export type Checkpoint = (point: string) => void;

/** The config drive of an instance, made (or remade) from its record. */
export interface ConfigDrives {
  buildDrive(record: InstanceRecord): Promise<void>;
  /** Rebuilds the drive and swaps it into a running guest. */
  refresh(record: InstanceRecord): Promise<void>;
}

/** What is told when a disk's file is destroyed (its snapshots go with it). */
export interface DiskDeletionListener {
  dropForDisk(diskId: string): Promise<void>;
}

/** The domain spec of an instance as it is now: its record, its attached data disks, its pools' limits. */
export class DomainSpecs {
  constructor(
    private readonly o: {
      virtType: VirtType;
      paths: DataPaths;
      agentVersion: string;
      disks: DiskStore;
      images: Pick<ImageCatalog, "get">;
      /** Per-disk IO limits of a pool. */
      ioLimits: (pool: string | undefined) => IoLimits | undefined;
      /** The rescue system's files, and the network an instance's rescue system gets. */
      rescue?: { kernel: string; initrd: string };
      subnetOf?: (subnetId: string | undefined) => { prefixLength: number; gateway: string; dns: readonly string[] } | undefined;
      /** Hot-plug headroom written into every definition (agent/instances/reset-type.ts). */
      hotplug?: HotplugHeadroom;
    },
  ) {}

  /** The host's hot-plug headroom (undefined: none). */
  get hotplug(): HotplugHeadroom | undefined {
    return this.o.hotplug;
  }

  /** The firmware the instance's image wants (an image since deleted: legacy BIOS). */
  bootModeOf(record: InstanceRecord): "Legacy BIOS" | "UEFI" {
    return this.o.images.get(record.imageId)?.bootMode ?? "Legacy BIOS";
  }

  of(record: InstanceRecord, bootMode: "Legacy BIOS" | "UEFI" = this.bootModeOf(record)): DomainSpec {
    const o = this.o;
    return buildDomainSpec({
      record,
      virtType: o.virtType,
      paths: o.paths,
      agentVersion: o.agentVersion,
      firmware: bootMode === "UEFI" ? "uefi" : "bios",
      dataDisks: o.disks.attachedTo(record.instanceId).map((d) => ({ diskId: d.diskId, target: d.target!, path: d.path, pool: d.pool })),
      ioLimits: o.ioLimits,
      ...(o.rescue ? { rescue: { ...o.rescue, ...this.rescueNetwork(record) } } : {}),
      ...(o.hotplug ? { hotplug: o.hotplug } : {}),
    });
  }

  /** True when the host has a rescue system (EnterRescueMode needs one). */
  get hasRescue(): boolean {
    return this.o.rescue !== undefined;
  }

  private rescueNetwork(record: InstanceRecord): { network?: { ip: string; prefixLength: number; gateway: string; dns: readonly string[] } } {
    const nic = record.nics[0];
    const subnet = this.o.subnetOf?.(nic?.subnetId);
    if (!nic?.ipv4 || !subnet) return {};
    return { network: { ip: nic.ipv4, prefixLength: subnet.prefixLength, gateway: subnet.gateway, dns: subnet.dns } };
  }
}

/** Makes and unmakes instances' host resources (launch, terminate, a failed launch's cleanup). */
export class Provisioner {
  constructor(
    private readonly o: {
      hypervisor: Pick<Hypervisor, "getDomain" | "defineDomain" | "start" | "destroy" | "undefine">;
      imageTool: ImageTool;
      images: Pick<ImageCatalog, "requireUsable">;
      paths: DataPaths;
      storage: Pick<Storage, "createEmpty" | "destroyFile">;
      disks: DiskStore;
      specs: DomainSpecs;
      drives: Pick<ConfigDrives, "buildDrive">;
      snapshots: DiskDeletionListener;
      checkpoint: Checkpoint;
      logger: Logger;
      /** Runs right before the domain starts: the firewall filters the instance's NICs before its guest can send. */
      beforeStart?: (record: InstanceRecord) => Promise<void>;
    },
  ) {}

  /** Returns the domain's state as the last step left it ("running" after its start). */
  provision(record: InstanceRecord, signal?: AbortSignal): Promise<DomainPowerState> {
    return provisionInstance(this.o, record, signal);
  }

  teardown(instanceId: string, options: { allDisks?: boolean; systemDiskPath?: string; systemDiskId?: string } = {}): Promise<void> {
    return teardownInstance(this.o, instanceId, options);
  }
}

type ProvisionerDeps = ConstructorParameters<typeof Provisioner>[0];

/**
 * Creates the system disk and the domain, and starts it. Safe to run again after a
 * crash at any point (recovery rolls a create forward with it).
 *
 * A launch waits for the slowest of its steps, so they overlap: the config drive (the
 * slowest: xorriso) is built while libvirt is asked whether the domain exists; then the
 * disks are made while the domain is defined (a definition does not need its files);
 * only the start waits for all of them. So a defined domain no longer means complete
 * disks: when recovery finds the domain defined and not running, every disk that is not
 * a readable qcow2 is made anew (the guest never ran from it: the user never saw the
 * instance RUNNING). The config drive is rebuilt every time (atomically; the same record
 * gives the same bytes).
 */
async function provisionInstance(o: ProvisionerDeps, record: InstanceRecord, signal?: AbortSignal): Promise<DomainPowerState> {
  const { hypervisor, imageTool, paths } = o;
  const id = record.instanceId;
  // The directory first, with its mode (the drive's build would make it 0755).
  await mkdir(paths.instanceDir(id), { recursive: true, mode: 0o711 });
  const started = performance.now();
  const timed = async (work: Promise<unknown>) => {
    await work;
    return Math.round(performance.now() - started);
  };
  const drive = timed(o.drives.buildDrive(record));
  drive.catch(() => undefined); // awaited below; a failure is thrown there
  let existing: Awaited<ReturnType<typeof hypervisor.getDomain>>;
  try {
    existing = await hypervisor.getDomain(id);
  } catch (error) {
    await drive.catch(() => undefined);
    throw error;
  }
  const state = existing?.state ?? "shut off";
  const startable = state === "shut off" || state === "crashed";
  if (!existing || startable) {
    const image = o.images.requireUsable(record.imageId);
    const dataDisks = o.disks.attachedTo(id);
    const makeSystemDisk = async () => {
      if (existing && (await exists(record.systemDisk.path)) && (await isQcow2(imageTool, record.systemDisk.path))) return;
      await rm(record.systemDisk.path, { force: true });
      signal?.throwIfAborted();
      await imageTool.createOverlay({
        backing: image.path,
        backingFormat: "qcow2",
        target: record.systemDisk.path,
        sizeBytes: Math.max(record.systemDisk.sizeGiB * GiB, image.virtualSizeBytes),
      });
    };
    const disks = timed(
      Promise.all([
        makeSystemDisk(),
        // Data disks: made empty, unless a crash left a complete one (it was then never used).
        ...dataDisks.map(async (disk) => {
          if (!(await exists(disk.path)) || !(await isQcow2(imageTool, disk.path))) await o.storage.createEmpty(disk.path, disk.sizeGiB);
        }),
      ]),
    );
    const defined = existing ? Promise.resolve() : hypervisor.defineDomain(o.specs.of(record, image.bootMode));
    const [disksMs, driveMs] = await settleAll([disks, drive, defined]);
    o.logger.info({ instanceId: id, disks: 1 + dataDisks.length, disksMs, driveMs }, "instance disks and config drive made");
    o.checkpoint("create:overlay-created");
    o.checkpoint("create:domain-defined");
  } else {
    await drive;
  }
  signal?.throwIfAborted();
  if (!startable) return state;
  await o.beforeStart?.(record);
  // A start that returned has the domain running (the driver checks a late answer): no need to ask libvirt again.
  await hypervisor.start(id);
  return "running";
}

/** Like Promise.all, but waits for every promise to settle before it throws the first failure. */
async function settleAll<T extends readonly unknown[]>(work: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(work);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
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
async function teardownInstance(
  o: ProvisionerDeps,
  instanceId: string,
  options: { allDisks?: boolean; systemDiskPath?: string; systemDiskId?: string } = {},
): Promise<void> {
  try {
    await o.hypervisor.destroy(instanceId);
  } catch (error) {
    // Gone already (a terminate interrupted after its undefine): nothing to stop.
    if (!(error instanceof DomainNotFoundError)) throw error;
  }
  o.checkpoint("terminate:destroyed");
  await o.hypervisor.undefine(instanceId);
  o.checkpoint("terminate:undefined");
  if (options.systemDiskPath) await o.storage.destroyFile(options.systemDiskPath);
  if (options.systemDiskId) await o.snapshots.dropForDisk(options.systemDiskId);
  for (const disk of o.disks.attachedTo(instanceId)) {
    if (disk.deleteWithInstance || options.allDisks) {
      await o.storage.destroyFile(disk.path);
      await o.snapshots.dropForDisk(disk.diskId);
      await o.disks.remove(disk.diskId);
    } else {
      const { instanceId: _i, target: _t, ...kept } = disk;
      await o.disks.save(kept);
    }
  }
  await rm(o.paths.instanceDir(instanceId), { recursive: true, force: true });
  await rm(`${o.paths.launchFailedDir}/${instanceId}.json`, { force: true });
}

/** Instances whose launch failed keep a record (no domain holds it) until terminated. */
export async function saveLaunchFailed(paths: DataPaths, record: InstanceRecord): Promise<void> {
  await writeFileAtomic(`${paths.launchFailedDir}/${record.instanceId}.json`, JSON.stringify(record));
}

/** The launch-failed records, each checked; a bad one is renamed aside with a warning. */
export async function loadLaunchFailed(paths: DataPaths, logger: Logger): Promise<InstanceRecord[]> {
  let names: string[];
  try {
    names = await readdir(paths.launchFailedDir);
  } catch {
    return [];
  }
  const out: InstanceRecord[] = [];
  for (const name of names) {
    if (!/^ins-[a-z0-9]{8}\.json$/.test(name)) continue;
    const file = `${paths.launchFailedDir}/${name}`;
    try {
      const record = checkInstanceRecord(JSON.parse(await readFile(file, "utf8")));
      if (`${record.instanceId}.json` !== name) throw new Error(`its instanceId ${record.instanceId} is not its file's name`);
      out.push(record);
    } catch (error) {
      const aside = await setAside(file);
      logger.warn({ file, aside, reason: (error as Error).message }, "launch-failed record unreadable; set aside");
    }
  }
  return out;
}
