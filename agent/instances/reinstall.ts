/**
 * ResetInstance (a reinstall): a new system disk from the same or another image, with the
 * instance's data disks, ID, UUID, addresses and MACs kept; rolled back onto the old disk
 * when the new one cannot be made or does not boot. Recovery finishes or undoes a
 * reinstall a crash interrupted (resumeReset, dropOrphanReset).
 */
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { DomainError, dryRunStop } from "../core/errors.js";
import type { Journal } from "../journal.js";
import { isoSeconds, newId, type InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";
import type { ImageCatalog } from "../images/catalog.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import { checkPassword, sha512Crypt } from "../logins/password.js";
import type { Storage } from "../storage/storage.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl } from "./power.js";
import type { Checkpoint, ConfigDrives, DomainSpecs } from "./provision.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

const GiB = 1024 ** 3;

/** ResetInstance. */
export interface ResetRequest {
  instanceId: string;
  imageId?: string;
  systemDiskGiB?: number;
  login?: { password?: string; keyIds?: string[]; keepImageLogin?: boolean };
  hostName?: string;
  userData?: string;
  dryRun?: boolean;
}

export class Reinstaller {
  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      journal: Journal;
      paths: DataPaths;
      images: Pick<ImageCatalog, "requireUsable">;
      keyPairs: Pick<KeyPairStore, "associate">;
      storage: Pick<Storage, "checkGrowth" | "pools" | "destroyFile" | "measure">;
      hypervisor: Pick<Hypervisor, "defineDomain">;
      imageTool: Pick<ImageTool, "createOverlay">;
      specs: DomainSpecs;
      drives: Pick<ConfigDrives, "buildDrive">;
      power: PowerControl;
      checkpoint: Checkpoint;
    },
  ) {}

  /**
   * ResetInstance: a new system disk from the (same or another) image; data disks,
   * ID, UUID, addresses and MACs stay. The instance shows RESETTING. The new disk is a
   * new file beside the old one; the domain is redefined onto it and started, and only
   * then is the old disk destroyed. A journal entry covers the whole: after a crash the
   * reinstall is finished when the domain already names the new disk, else undone.
   */
  async reset(req: ResetRequest, ctx: RequestContext): Promise<void> {
    const [entry] = this.o.ops.validate([req.instanceId], "ResetInstance");
    const old = entry!.record;
    const imageId = req.imageId ?? old.imageId;
    const image = this.o.images.requireUsable(imageId);
    const osType = image.osFamily;
    const sizeGiB = req.systemDiskGiB ?? Math.max(old.systemDisk.sizeGiB, Math.ceil(image.virtualSizeBytes / GiB));
    if (sizeGiB < old.systemDisk.sizeGiB) {
      throw new DomainError("DiskShrink", `\`SystemDisk.DiskSize\` ${sizeGiB} GB is smaller than the system disk's ${old.systemDisk.sizeGiB} GB`);
    }
    if (sizeGiB * GiB < image.virtualSizeBytes) {
      throw new DomainError("BadValue", `\`SystemDisk.DiskSize\` ${sizeGiB} GB is smaller than image ${imageId} (${Math.ceil(image.virtualSizeBytes / GiB)} GB)`);
    }
    const login = req.login;
    if (login?.password !== undefined) checkPassword(login.password, osType, { field: "LoginSettings.Password" });
    if (login?.keyIds?.length && osType === "windows") {
      throw new DomainError("KeyPairNotSupported", `\`LoginSettings.KeyIds\` image ${imageId} is Windows, which logs in with a password only`);
    }
    const pool = old.systemDisk.pool;
    // The old disk's promise passes to the new one (the old file goes once the new one is in
    // place): only growth is admitted, so a reinstall at the same size never fails for room.
    const growthGiB = sizeGiB - old.systemDisk.sizeGiB;
    if (pool && growthGiB > 0) this.o.storage.checkGrowth([{ pool, deltaGiB: growthGiB }]);
    if (req.dryRun) throw dryRunStop();

    const generation = (old.configGeneration ?? 1) + 1;
    const diskId = old.systemDisk.diskId ?? newId("disk");
    const newPath = pool ? this.o.storage.pools.diskPath(pool, diskId, `-r${generation}`) : `${old.systemDisk.path.replace(/\.qcow2$/, "")}-r${generation}.qcow2`;
    let loginRecord = old.login ?? { keyIds: [] };
    if (login) {
      if (login.keepImageLogin) loginRecord = { keyIds: [], keepImage: true };
      else if (login.password !== undefined) loginRecord = { keyIds: [], ...(osType === "linux" ? { passwordHash: sha512Crypt(login.password) } : {}) };
      else if (login.keyIds) loginRecord = { keyIds: [...login.keyIds] };
    }
    const { configDrive: _oldDrive, ...kept } = old;
    const record: InstanceRecord = {
      ...kept,
      imageId,
      osName: image.osName,
      osType,
      ...(image.configDrive !== "config-2" ? { configDrive: image.configDrive } : {}),
      systemDisk: { ...old.systemDisk, diskId, sizeGiB, path: newPath },
      login: loginRecord,
      configGeneration: generation,
      ...(req.hostName !== undefined ? { hostName: req.hostName } : {}),
      ...(req.userData !== undefined ? { userData: req.userData } : {}),
    };
    const t = this.o.ops.begin(entry!, "ResetInstance", "RESETTING", ctx);
    record.latestOperation = entry!.record.latestOperation!;
    // The new disk's growth counts from now (as a pool file of the journal); the rest is the old disk's promise.
    this.pendingResets.set(req.instanceId, { pool: pool ?? "", path: newPath, promisedBytes: growthGiB * GiB });
    await this.o.journal.write({ kind: "reset", instanceId: req.instanceId, record, oldPath: old.systemDisk.path, requestId: ctx.requestId, startedAt: isoSeconds(new Date()) });
    if (login?.keyIds) await this.o.keyPairs.associate([req.instanceId], login.keyIds);
    if (osType === "windows" && login?.password !== undefined) {
      await writeFileAtomic(this.o.paths.windowsPassword(req.instanceId), login.password, 0o600);
    }
    this.o.ops.background(req.instanceId, t, () =>
      this.o.ops.settle(entry!, t, "ResetInstance", ctx, () => this.reinstall(entry!, record, old.systemDisk.path, image, t.abort.signal)),
    );
  }

  /** Reinstall files that are being made: counted by the pools until the reinstall ends. */
  readonly pendingResets = new Map<string, { pool: string; path: string; promisedBytes: number }>();

  private async reinstall(entry: InstanceEntry, record: InstanceRecord, oldPath: string, image: { path: string; virtualSizeBytes: number; bootMode: "Legacy BIOS" | "UEFI" }, signal: AbortSignal): Promise<void> {
    const id = record.instanceId;
    const oldRecord = entry.record;
    const undo = async () => {
      await this.o.storage.destroyFile(record.systemDisk.path).catch(() => undefined);
      await this.o.journal.remove({ kind: "reset", instanceId: id });
      this.pendingResets.delete(id);
    };
    try {
      if (this.o.power.isOn(id) && !(await this.o.power.softStop(id, signal))) await this.o.power.hardStop(id);
      await this.o.imageTool.createOverlay({ backing: image.path, backingFormat: "qcow2", target: record.systemDisk.path, sizeBytes: Math.max(record.systemDisk.sizeGiB * GiB, image.virtualSizeBytes) });
      this.o.checkpoint("reset:disk-created");
      await this.o.drives.buildDrive(record);
      await this.o.hypervisor.defineDomain(this.o.specs.of(record, image.bootMode));
    } catch (error) {
      // Not defined onto the new disk: the instance keeps its old one.
      await this.o.drives.buildDrive(oldRecord).catch(() => undefined);
      await undo();
      throw error;
    }
    this.o.checkpoint("reset:defined");
    entry.record = record;
    this.o.registry.touched(id, "ResetInstance: new system disk");
    try {
      await this.o.power.powerOn(id);
    } catch (error) {
      // The new disk did not boot: back onto the old one, which is only removed once the new one boots.
      if (this.o.power.isOn(id)) await this.o.power.hardStop(id).catch(() => undefined);
      await this.o.hypervisor.defineDomain(this.o.specs.of(oldRecord));
      entry.record = { ...oldRecord, latestOperation: record.latestOperation! };
      await this.o.drives.buildDrive(oldRecord).catch(() => undefined);
      await undo();
      throw error;
    }
    // The new disk booted: the old one goes.
    await this.o.storage.destroyFile(oldPath);
    await this.o.journal.remove({ kind: "reset", instanceId: id });
    this.pendingResets.delete(id);
    void this.o.storage.measure().catch(() => undefined);
  }

  /** Recovery: a reinstall whose instance is gone leaves only its new disk to remove. */
  async dropOrphanReset(j: { instanceId: string; record: InstanceRecord }): Promise<void> {
    await this.o.storage.destroyFile(j.record.systemDisk.path);
    await this.o.journal.remove({ kind: "reset", instanceId: j.instanceId });
  }

  /** Recovery of a reinstall a crash interrupted: finished when libvirt already has the new disk, else undone. */
  async resumeReset(entry: InstanceEntry, j: { record: InstanceRecord; oldPath: string; requestId: string }, definedOnNew: boolean): Promise<void> {
    const ctx = { requestId: j.requestId };
    const id = entry.record.instanceId;
    if (!definedOnNew) {
      await this.o.storage.destroyFile(j.record.systemDisk.path);
      await this.o.journal.remove({ kind: "reset", instanceId: id });
      entry.record.latestOperation = this.o.ops.failedOperation("ResetInstance", ctx, new Error("the agent restarted before the new system disk was in place; the instance keeps its old disk"));
      this.o.registry.touched(id, "ResetInstance rolled back");
      return;
    }
    const t = this.o.ops.begin(entry, "ResetInstance", "RESETTING", ctx);
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(entry, t, "ResetInstance", ctx, async () => {
        if (!this.o.power.isOn(id)) await this.o.power.powerOn(id);
        await this.o.storage.destroyFile(j.oldPath);
        await this.o.journal.remove({ kind: "reset", instanceId: id });
      }),
    );
  }
}
