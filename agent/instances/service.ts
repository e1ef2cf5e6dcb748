/**
 * The instance lifecycle as the controller sees it: RunInstances, Start, Stop, Reboot,
 * Terminate. Each request is checked against every instance it names before anything
 * changes (all or nothing); the state check and the switch to the transitional state
 * happen in one synchronous step, so concurrent requests cannot both pass. The work
 * then runs in the background, serialised per instance.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { CONFIG_DRIVE_TAG } from "../api/schemas-images.js";
import { ApiError, type ErrorCode } from "../errors.js";
import type { Journal } from "../journal.js";
import {
  ALLOWED_FROM,
  isPoweredOn,
  isoSeconds,
  newId,
  newMac,
  stateErrorCode,
  type InstanceAction,
  type InstanceRecord,
  type LatestOperation,
  type TransitionState,
} from "../model.js";
import type { DataPaths } from "../paths.js";
import { KeyedLock } from "../util/keyed-lock.js";
import { GuestAgentError } from "../../drivers/libvirt/types.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import { checkPassword, sha512Crypt } from "../logins/password.js";
import { allocateAddress, resolveSubnet, type Subnet } from "../network/subnets.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { mkdir, rm } from "node:fs/promises";
import { consistentCopy } from "../disks/copy.js";
import { cleanGuestForImage } from "./guest-cleanup.js";
import { admissionShortfall, type HostResource } from "../capacity.js";
import { hardReboot, hardStop, powerOn, softReboot, softStop, type PowerContext } from "./power.js";
import { domainSpecOf, provisionInstance, saveLaunchFailed, teardownInstance, type ProvisionContext } from "./provision.js";
import type { InstanceEntry, InstanceRegistry, Transition } from "./registry.js";
import type { Storage } from "../storage/storage.js";
import { DATA_DISK_TARGETS, type DiskRecord } from "../disks/store.js";

export interface RequestContext {
  requestId: string;
}

export interface RunRequest {
  instanceType: string;
  cpu: number;
  memoryGiB: number;
  imageId: string;
  systemDisk: { diskType: "LOCAL_BASIC" | "LOCAL_SSD"; sizeGiB: number };
  names: string[];
  hostName?: string;
  userData?: string;
  clientToken?: string;
  dryRun?: boolean;
  /** LoginSettings: a password (checked by the caller's schema only for shape) or key pairs. */
  login?: { password?: string; keyIds?: string[]; keepImageLogin?: boolean };
  /** VirtualPrivateCloud: the subnet and, optionally, the address of the primary NIC. */
  vpc?: { vpcId: string; subnetId: string; privateIpAddress?: string };
  /** DataDisks: local data disks made with each instance (vdb, vdc, … in this order). */
  dataDisks?: Array<{ diskType: "LOCAL_BASIC" | "LOCAL_SSD"; sizeGiB: number; deleteWithInstance: boolean }>;
}

/** At most this many data disks per instance (CVM: 20 cloud + 1 local; the virtio targets vdb…vdv). */
export const MAX_DATA_DISKS = 21;

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

/** ResetInstancesPassword. */
export interface ResetPasswordRequest {
  instanceIds: string[];
  password: string;
  userName?: string;
  forceStop: boolean;
}

/** AssociateInstancesKeyPairs / DisassociateInstancesKeyPairs. */
export interface KeyBindingRequest {
  instanceIds: string[];
  keyIds: string[];
  forceStop: boolean;
}

export type StopType = "SOFT" | "HARD" | "SOFT_FIRST";

const GiB = 1024 ** 3;

export class InstanceService {
  private readonly lock = new KeyedLock();
  /** Background operations still running (tests and shutdown wait for them). */
  private readonly running = new Set<Promise<void>>();
  /** Record saves into libvirt, one chain per instance (see saveRecord). */
  private readonly saves = new Map<string, { pending: boolean; done: Promise<void> }>();

  constructor(
    private readonly o: {
      registry: InstanceRegistry;
      journal: Journal;
      paths: DataPaths;
      provision: ProvisionContext;
      power: PowerContext;
      hostResource: () => HostResource;
      subnets: readonly Subnet[];
      storage: Storage;
      /** Written into every record: the agent adopts only its own host's domains. */
      hostId: string;
      keyPairs: KeyPairStore;
      /** Rebuilds the config drive from the record and swaps it into a running guest. */
      refreshGuest: (record: InstanceRecord) => Promise<void>;
      logger: Logger;
    },
  ) {}


  // ---------------------------------------------------------------- RunInstances

  async run(req: RunRequest, ctx: RequestContext): Promise<string[]> {
    const { registry, provision } = this.o;
    if (req.clientToken) {
      const earlier = [...registry.all()]
        .filter((e) => e.record.clientToken === req.clientToken)
        .sort((a, b) => a.record.launchIndex - b.record.launchIndex);
      if (earlier.length) return earlier.map((e) => e.record.instanceId);
    }
    const image = provision.images.requireUsable(req.imageId);
    if (req.systemDisk.sizeGiB * GiB < image.virtualSizeBytes) {
      throw new ApiError(
        "InvalidParameterValue",
        `SystemDisk.DiskSize ${req.systemDisk.sizeGiB} GiB is smaller than image ${req.imageId} (${Math.ceil(image.virtualSizeBytes / GiB)} GiB)`,
      );
    }
    const osType: "linux" | "windows" = /windows/i.test(image.osName) ? "windows" : "linux";
    if (req.login?.password !== undefined) checkPassword(req.login.password, osType, { field: "LoginSettings.Password" });
    const subnet = resolveSubnet(this.o.subnets, req.vpc);
    const count = req.names.length;
    if (req.vpc?.privateIpAddress !== undefined && count > 1) {
      throw new ApiError("InvalidParameterValue", "VirtualPrivateCloud.PrivateIpAddresses names one address; InstanceCount must then be 1");
    }
    const dataDisks = req.dataDisks ?? [];
    if (dataDisks.length > MAX_DATA_DISKS) {
      throw new ApiError("InvalidParameterValue.LimitExceeded", `DataDisks has ${dataDisks.length} disks; at most ${MAX_DATA_DISKS} per instance`);
    }
    const shortfall = admissionShortfall(this.o.hostResource(), { cpu: req.cpu, memoryGiB: req.memoryGiB }, count);
    if (shortfall) {
      throw new ApiError("ResourceInsufficient.SpecifiedInstanceType", `${count} x ${req.instanceType} does not fit on this host: ${shortfall}`);
    }
    // One system disk and the data disks per instance, each placed in a pool of its type.
    const perInstance = [{ diskType: req.systemDisk.diskType, sizeGiB: req.systemDisk.sizeGiB }, ...dataDisks];
    const placed = this.o.storage.place(req.names.flatMap(() => perInstance));
    if (req.dryRun) throw new ApiError("DryRunOperation", "the request would have succeeded; DryRun was set");

    // From here to the registry insert there is no await: admission and reservation are one step.
    const macs = new Set([...registry.all()].flatMap((e) => e.record.nics.map((n) => n.mac)));
    const usedIps = new Set(
      [...registry.all()].flatMap((e) => e.record.nics.filter((n) => n.subnetId === subnet.subnetId && n.ipv4).map((n) => n.ipv4!)),
    );
    // Checked (and thrown) before anything is made.
    const addresses = req.names.map(() => {
      const ip = allocateAddress(subnet, usedIps, req.vpc?.privateIpAddress);
      usedIps.add(ip);
      return ip;
    });
    const passwordHash = osType === "linux" && req.login?.password !== undefined ? sha512Crypt(req.login.password) : undefined;
    const keyIds = req.login?.keyIds ?? [];
    const createdTime = isoSeconds(new Date());
    const disks = this.o.storage.o.disks;
    const takenDiskIds = new Set<string>();
    const newDiskId = () => {
      let id = newId("disk");
      while (disks.has(id) || takenDiskIds.has(id)) id = newId("disk");
      takenDiskIds.add(id);
      return id;
    };
    const diskRecords: DiskRecord[] = [];
    const entries: InstanceEntry[] = req.names.map((name, launchIndex) => {
      let instanceId = newId("ins");
      while (registry.has(instanceId)) instanceId = newId("ins");
      const pools = placed.slice(launchIndex * perInstance.length, (launchIndex + 1) * perInstance.length);
      const systemPool = pools[0]!;
      const systemDiskId = newDiskId();
      dataDisks.forEach((d, i) => {
        const diskId = newDiskId();
        diskRecords.push({
          version: 1,
          diskId,
          diskName: `${name || instanceId}-data-${i + 1}`,
          diskType: d.diskType,
          pool: pools[i + 1]!,
          sizeGiB: d.sizeGiB,
          path: this.o.storage.pools.diskPath(pools[i + 1]!, diskId),
          instanceId,
          target: DATA_DISK_TARGETS[i]!,
          deleteWithInstance: d.deleteWithInstance,
          createdTime,
        });
      });
      const mac = newMac(macs);
      macs.add(mac);
      const record: InstanceRecord = {
        version: 1,
        instanceId,
        uuid: randomUUID(),
        hostId: this.o.hostId,
        instanceName: name,
        ...(req.hostName ? { hostName: req.hostName } : {}),
        instanceType: req.instanceType,
        cpu: req.cpu,
        memoryGiB: req.memoryGiB,
        imageId: req.imageId,
        osName: image.osName,
        systemDisk: {
          diskType: req.systemDisk.diskType,
          sizeGiB: req.systemDisk.sizeGiB,
          diskId: systemDiskId,
          pool: systemPool,
          path: this.o.storage.pools.diskPath(systemPool, systemDiskId),
        },
        nics: [{ mac, network: subnet.network, ipv4: addresses[launchIndex]!, subnetId: subnet.subnetId, vpcId: subnet.vpcId }],
        osType,
        ...(image.configDrive === "nocloud" ? { configDrive: "nocloud" as const } : {}),
        login: { keyIds: [...keyIds], ...(passwordHash ? { passwordHash } : {}), ...(req.login?.keepImageLogin ? { keepImage: true as const } : {}) },
        configGeneration: 1,
        createdTime,
        ...(req.clientToken ? { clientToken: req.clientToken } : {}),
        launchIndex,
        ...(req.userData ? { userData: req.userData } : {}),
        latestOperation: { action: "RunInstances", state: "OPERATING", requestId: ctx.requestId },
      };
      return {
        record,
        power: "absent",
        launchFailed: false,
        transition: { state: "PENDING", action: "RunInstances", abort: new AbortController() },
        reboots: 0,
      };
    });
    for (const entry of entries) registry.add(entry);
    for (const d of diskRecords) disks.put(d);
    try {
      await Promise.all(
        entries.map((e) =>
          this.o.journal.write({
            kind: "create",
            instanceId: e.record.instanceId,
            record: e.record,
            dataDisks: diskRecords.filter((d) => d.instanceId === e.record.instanceId),
            requestId: ctx.requestId,
            startedAt: createdTime,
          }),
        ),
      );
      await Promise.all(diskRecords.map((d) => disks.save(d)));
    } catch (error) {
      for (const d of diskRecords) await disks.remove(d.diskId).catch(() => undefined);
      for (const e of entries) {
        registry.remove(e.record.instanceId);
        await this.o.journal.remove({ kind: "create", instanceId: e.record.instanceId }).catch(() => undefined);
      }
      throw error;
    }
    this.o.provision.checkpoint("create:journaled");
    const ids = entries.map((e) => e.record.instanceId);
    if (keyIds.length) await this.o.keyPairs.associate(ids, keyIds);
    if (osType === "windows" && req.login?.password !== undefined) {
      for (const id of ids) {
        await mkdir(this.o.paths.instanceDir(id), { recursive: true, mode: 0o711 });
        await writeFileAtomic(this.o.paths.windowsPassword(id), req.login.password, 0o600);
      }
    }
    for (const entry of entries) this.background(entry.record.instanceId, entry.transition!, () => this.create(entry, ctx));
    return entries.map((e) => e.record.instanceId);
  }

  /** Provisions one instance (also used by recovery to finish an interrupted create). */
  async create(entry: InstanceEntry, ctx: RequestContext): Promise<void> {
    const id = entry.record.instanceId;
    const log = this.o.logger.child({ instanceId: id, requestId: ctx.requestId });
    try {
      await provisionInstance(this.o.provision, entry.record, entry.transition?.abort.signal);
      await this.o.power.refreshPower(id);
      this.o.provision.checkpoint("create:started");
    } catch (error) {
      log.error({ err: error }, "launch failed; removing what was made");
      await teardownInstance(this.o.provision, id, { allDisks: true, systemDiskPath: entry.record.systemDisk.path }).catch((e: unknown) => log.error({ err: e }, "cleanup after failed launch failed"));
      entry.launchFailed = true;
      entry.power = "absent";
      await saveLaunchFailed(this.o.paths, { ...entry.record, latestOperation: failedOperation("RunInstances", ctx, error) });
      await this.o.journal.remove({ kind: "create", instanceId: id });
      await this.finish(entry, "RunInstances", ctx, error);
      return;
    }
    // The journal goes before the answer is visible: a client that sees RUNNING and
    // SUCCESS never races a recovery of this create.
    await this.o.journal.remove({ kind: "create", instanceId: id });
    await this.finish(entry, "RunInstances", ctx, undefined);
    log.info("instance launched");
  }

  // ---------------------------------------------------------------- power

  start(ids: string[], ctx: RequestContext): void {
    const entries = this.validate(ids, "StartInstances");
    for (const entry of entries) {
      const t = this.begin(entry, "StartInstances", "STARTING", ctx);
      this.background(entry.record.instanceId, t, async () => {
        await this.settle(entry, t, "StartInstances", ctx, () => powerOn(this.o.power, entry.record.instanceId));
      });
    }
  }

  stop(ids: string[], stopType: StopType, ctx: RequestContext): void {
    const entries = this.validate(ids, stopType === "HARD" ? "StopInstancesHard" : "StopInstances");
    for (const entry of entries) {
      if (stopType === "HARD") entry.transition?.abort.abort(new Error("pre-empted by a hard stop"));
      const t = this.begin(entry, "StopInstances", "STOPPING", ctx);
      this.background(entry.record.instanceId, t, async () => {
        await this.settle(entry, t, "StopInstances", ctx, async () => {
          const id = entry.record.instanceId;
          if (stopType === "HARD") return hardStop(this.o.power, id);
          if (await softStop(this.o.power, id, t.abort.signal)) return;
          if (stopType === "SOFT_FIRST") return hardStop(this.o.power, id);
          throw new ApiError("FailedOperation", `the guest did not shut down within ${this.o.power.softStopTimeoutMs / 1000} s (ACPI ignored?); use StopType HARD or SOFT_FIRST`);
        });
      });
    }
  }

  reboot(ids: string[], mode: StopType, ctx: RequestContext): void {
    const entries = this.validate(ids, "RebootInstances");
    for (const entry of entries) {
      const t = this.begin(entry, "RebootInstances", "REBOOTING", ctx);
      this.background(entry.record.instanceId, t, async () => {
        await this.settle(entry, t, "RebootInstances", ctx, async () => {
          const id = entry.record.instanceId;
          if (mode !== "HARD" && (await softReboot(this.o.power, id, t.abort.signal))) {
            // A guest that powered off instead of rebooting is started again.
            if (!this.isOn(id)) await powerOn(this.o.power, id);
            return;
          }
          if (mode === "SOFT") throw new ApiError("FailedOperation", `the guest did not reboot within ${this.o.power.softStopTimeoutMs / 1000} s; use ForceReboot`);
          if (this.isOn(id)) await hardReboot(this.o.power, id);
          else await powerOn(this.o.power, id);
        });
      });
    }
  }

  private isOn(id: string): boolean {
    const p = this.o.registry.get(id)?.power;
    return p !== undefined && isPoweredOn(p);
  }

  // ---------------------------------------------------------------- logins

  /** Binds key pairs to instances (replacing earlier ones); the guests get them through their config. */
  async associateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    const entries = this.validate(req.instanceIds, "AssociateInstancesKeyPairs");
    await this.o.keyPairs.associate(req.instanceIds, req.keyIds);
    for (const entry of entries) {
      // Binding keys hands the login to the platform: a KeepImageLogin instance stops keeping it.
      const { keepImage: _kept, ...login } = entry.record.login ?? { keyIds: [] };
      entry.record.login = { ...login, keyIds: [...req.keyIds] };
      this.applyLogin(entry, "AssociateInstancesKeyPairs", req.forceStop, ctx, { keys: true });
    }
  }

  /** Removes key pairs from instances. */
  async disassociateKeyPairs(req: KeyBindingRequest, ctx: RequestContext): Promise<void> {
    const entries = this.validate(req.instanceIds, "DisassociateInstancesKeyPairs");
    await this.o.keyPairs.disassociate(req.instanceIds, req.keyIds);
    const removed = new Set(req.keyIds);
    for (const entry of entries) {
      entry.record.login = { ...entry.record.login, keyIds: (entry.record.login?.keyIds ?? []).filter((k) => !removed.has(k)) };
      this.applyLogin(entry, "DisassociateInstancesKeyPairs", req.forceStop, ctx, { keys: true });
    }
  }

  /**
   * Sets a new login password. A running guest whose qemu-guest-agent answers gets it
   * at once, without a reboot; a running guest without one is stopped first when
   * ForceStop allows it (the seed's rule) and started again; a stopped one gets it at
   * its next boot, from its config drive.
   */
  async resetPassword(req: ResetPasswordRequest, ctx: RequestContext): Promise<void> {
    const entries = this.validate(req.instanceIds, "ResetInstancesPassword");
    for (const entry of entries) {
      const windows = entry.record.osType === "windows";
      checkPassword(req.password, windows ? "windows" : "linux", { field: "Password" });
      if (req.userName !== undefined && req.userName !== (windows ? "Administrator" : "root")) {
        throw new ApiError("InvalidParameterValue", `UserName ${req.userName}: this host's images log in as ${windows ? "Administrator" : "root"}`);
      }
    }
    for (const entry of entries) {
      const id = entry.record.instanceId;
      if (entry.record.osType === "windows") {
        await mkdir(this.o.paths.instanceDir(id), { recursive: true, mode: 0o711 });
        await writeFileAtomic(this.o.paths.windowsPassword(id), req.password, 0o600);
      } else {
        entry.record.login = { keyIds: entry.record.login?.keyIds ?? [], passwordHash: sha512Crypt(req.password) };
      }
      this.applyLogin(entry, "ResetInstancesPassword", req.forceStop, ctx, { password: req.password });
    }
  }

  /** Applies a changed login to one instance in the background: drive, then live or by a stop/start. */
  private applyLogin(entry: InstanceEntry, action: string, forceStop: boolean, ctx: RequestContext, change: { password?: string; keys?: boolean }): void {
    const id = entry.record.instanceId;
    entry.record.configGeneration = (entry.record.configGeneration ?? 1) + 1;
    const t = this.begin(entry, action, "UPDATING", ctx);
    this.background(id, t, async () => {
      await this.settle(entry, t, action, ctx, async () => {
        await this.o.refreshGuest(entry.record);
        if (!this.isOn(id)) return; // applied at the next boot from the drive
        if (await this.applyLive(id, entry, change)) return;
        if (!forceStop) {
          throw new ApiError(
            "UnsupportedOperation.InstanceStateRunning",
            `${id} is running and its guest agent does not answer: set ForceStop to stop it, apply the change and start it again`,
          );
        }
        if (!(await softStop(this.o.power, id, t.abort.signal))) await hardStop(this.o.power, id);
        await powerOn(this.o.power, id);
      });
    });
  }

  /** Through qemu-guest-agent: true when the running guest took the change. */
  private async applyLive(id: string, entry: InstanceEntry, change: { password?: string; keys?: boolean }): Promise<boolean> {
    const hv = this.o.provision.hypervisor;
    try {
      await hv.guestAgent(id, { execute: "guest-ping" }, 5);
      const windows = entry.record.osType === "windows";
      const user = windows ? "Administrator" : "root";
      if (change.password !== undefined) {
        const linuxHash = entry.record.login?.passwordHash;
        const secret = windows || !linuxHash ? change.password : linuxHash;
        await hv.guestAgent(id, {
          execute: "guest-set-user-password",
          arguments: { username: user, password: Buffer.from(secret).toString("base64"), crypted: !windows && Boolean(linuxHash) },
        });
      }
      if (change.keys && !windows) {
        const keys = await this.o.keyPairs.keysOfInstance(id);
        await hv.guestAgent(id, {
          execute: "guest-ssh-add-authorized-keys",
          arguments: { username: user, keys: keys.map((k) => k.publicKey), reset: true },
        });
      }
      return true;
    } catch (error) {
      if (error instanceof GuestAgentError) {
        this.o.logger.info({ instanceId: id, err: error }, "guest agent did not take the change");
        return false;
      }
      throw error;
    }
  }

  // ---------------------------------------------------------------- disks

  /**
   * ResizeInstanceDisks: grows the system disk and attached data disks, in 10 GB steps,
   * never shrinking. A stopped instance's files grow with qemu-img; a running one's
   * with `virsh blockresize` when ResizeOnline is set (the guest sees the new size at
   * once), or after a stop when ForceStop is set (it is started again after).
   */
  resizeDisks(req: { instanceId: string; systemDiskGiB?: number; dataDisks: Array<{ diskId: string; diskSizeGiB: number }>; resizeOnline: boolean; forceStop: boolean }, ctx: RequestContext): void {
    const [entry] = this.validate([req.instanceId], "ResizeInstanceDisks");
    const id = req.instanceId;
    const disks = this.o.storage.o.disks;
    const changes: Array<{ field: string; target: string; path: string; pool: string; from: number; to: number; diskId?: string }> = [];
    if (req.systemDiskGiB !== undefined) {
      const sd = entry!.record.systemDisk;
      changes.push({ field: "SystemDisk.DiskSize", target: "vda", path: sd.path, pool: sd.pool ?? "", from: sd.sizeGiB, to: req.systemDiskGiB });
    }
    req.dataDisks.forEach((d, i) => {
      const rec = disks.get(d.diskId);
      if (!rec) throw new ApiError("InvalidDiskId.NotFound", `\`DataDisks.${i}.DiskId\` no disk ${d.diskId} on this host`);
      if (rec.instanceId !== id) throw new ApiError("ResourceUnavailable.NotAttached", `\`DataDisks.${i}.DiskId\` disk ${d.diskId} is not attached to ${id}`);
      if (rec.busy) throw new ApiError("InvalidDisk.Busy", `disk ${d.diskId} is ${rec.busy}`);
      changes.push({ field: `DataDisks.${i}.DiskSize`, target: rec.target!, path: rec.path, pool: rec.pool, from: rec.sizeGiB, to: d.diskSizeGiB, diskId: d.diskId });
    });
    for (const c of changes) {
      if (c.to < c.from) throw new ApiError("InvalidParameterValue.DiskShrink", `\`${c.field}\` ${c.to} GB is smaller than the disk's ${c.from} GB; disks only grow`);
      if (c.to === c.from || (c.to - c.from) % 10 !== 0) {
        throw new ApiError("InvalidParameterValue.DiskSizeNotMultipleOfStep", `\`${c.field}\` ${c.to} GB: a disk of ${c.from} GB grows in steps of 10 GB (${c.from + 10}, ${c.from + 20}, …)`);
      }
    }
    const running = this.isOn(id);
    if (running && !req.resizeOnline && !req.forceStop) {
      throw new ApiError("UnsupportedOperation.InstanceStateRunning", `${id} is running: set ResizeOnline to grow its disks live, or ForceStop to stop it first`);
    }
    this.o.storage.checkGrowth(changes.filter((c) => c.pool).map((c) => ({ pool: c.pool, deltaGiB: c.to - c.from })));
    // The promise counts from now: sizes change in memory in the same step as the checks.
    const apply = (size: "from" | "to") => {
      for (const c of changes) {
        if (c.diskId) {
          const rec = disks.get(c.diskId);
          if (rec) rec.sizeGiB = c[size];
        } else entry!.record.systemDisk.sizeGiB = c[size];
      }
    };
    apply("to");
    for (const c of changes) if (c.diskId) disks.get(c.diskId)!.busy = "EXPANDING";
    const t = this.begin(entry!, "ResizeInstanceDisks", "UPDATING", ctx);
    this.background(id, t, async () => {
      await this.settle(entry!, t, "ResizeInstanceDisks", ctx, async () => {
        const hv = this.o.provision.hypervisor;
        try {
          if (this.isOn(id) && req.resizeOnline) {
            for (const c of changes) await hv.blockResize(id, c.target, c.to * GiB);
          } else {
            const wasOn = this.isOn(id);
            if (wasOn && !(await softStop(this.o.power, id, t.abort.signal))) await hardStop(this.o.power, id);
            for (const c of changes) await this.o.provision.imageTool.resize({ target: c.path, format: "qcow2", sizeBytes: c.to * GiB });
            if (wasOn) await powerOn(this.o.power, id);
          }
        } catch (error) {
          // What did not grow keeps its old size (qemu-img and blockresize grow whole or not at all).
          for (const c of changes) {
            const info = await this.o.provision.imageTool.info(c.path).catch(() => undefined);
            if (!info || info.virtualSizeBytes < c.to * GiB) {
              if (c.diskId) disks.get(c.diskId)!.sizeGiB = c.from;
              else entry!.record.systemDisk.sizeGiB = c.from;
            }
          }
          throw error;
        } finally {
          for (const c of changes) {
            const rec = c.diskId ? disks.get(c.diskId) : undefined;
            if (rec) {
              delete rec.busy;
              await disks.save(rec);
            }
          }
          void this.o.storage.measure().catch(() => undefined);
        }
      });
    });
  }

  // ---------------------------------------------------------------- reinstall

  /**
   * ResetInstance: a new system disk from the (same or another) image; data disks,
   * ID, UUID, addresses and MACs stay. The instance shows RESETTING. The new disk is a
   * new file beside the old one; the domain is redefined onto it and started, and only
   * then is the old disk destroyed. A journal entry covers the whole: after a crash the
   * reinstall is finished when the domain already names the new disk, else undone.
   */
  async reset(req: ResetRequest, ctx: RequestContext): Promise<void> {
    const [entry] = this.validate([req.instanceId], "ResetInstance");
    const old = entry!.record;
    const imageId = req.imageId ?? old.imageId;
    const image = this.o.provision.images.requireUsable(imageId);
    const osType: "linux" | "windows" = /windows/i.test(image.osName) ? "windows" : "linux";
    const sizeGiB = req.systemDiskGiB ?? Math.max(old.systemDisk.sizeGiB, Math.ceil(image.virtualSizeBytes / GiB));
    if (sizeGiB < old.systemDisk.sizeGiB) {
      throw new ApiError("InvalidParameterValue.DiskShrink", `\`SystemDisk.DiskSize\` ${sizeGiB} GB is smaller than the system disk's ${old.systemDisk.sizeGiB} GB`);
    }
    if (sizeGiB * GiB < image.virtualSizeBytes) {
      throw new ApiError("InvalidParameterValue", `\`SystemDisk.DiskSize\` ${sizeGiB} GB is smaller than image ${imageId} (${Math.ceil(image.virtualSizeBytes / GiB)} GB)`);
    }
    const login = req.login;
    if (login?.password !== undefined) checkPassword(login.password, osType, { field: "LoginSettings.Password" });
    if (login?.keyIds?.length && osType === "windows") {
      throw new ApiError("InvalidParameterValue.KeyPairNotSupported", `\`LoginSettings.KeyIds\` image ${imageId} is Windows, which logs in with a password only`);
    }
    const pool = old.systemDisk.pool;
    // The new disk is made before the old one goes: both are promised meanwhile.
    if (pool) this.o.storage.checkGrowth([{ pool, deltaGiB: sizeGiB }]);
    if (req.dryRun) throw new ApiError("DryRunOperation", "the request would have succeeded; DryRun was set");

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
      ...(image.configDrive === "nocloud" ? { configDrive: "nocloud" as const } : {}),
      systemDisk: { ...old.systemDisk, diskId, sizeGiB, path: newPath },
      login: loginRecord,
      configGeneration: generation,
      ...(req.hostName !== undefined ? { hostName: req.hostName } : {}),
      ...(req.userData !== undefined ? { userData: req.userData } : {}),
    };
    const t = this.begin(entry!, "ResetInstance", "RESETTING", ctx);
    record.latestOperation = entry!.record.latestOperation!;
    // The promise of the new disk counts from now (as a pool file of the journal).
    this.pendingResets.set(req.instanceId, { pool: pool ?? "", path: newPath, promisedBytes: sizeGiB * GiB });
    await this.o.journal.write({ kind: "reset", instanceId: req.instanceId, record, oldPath: old.systemDisk.path, requestId: ctx.requestId, startedAt: isoSeconds(new Date()) });
    if (login?.keyIds) await this.o.keyPairs.associate([req.instanceId], login.keyIds);
    if (osType === "windows" && login?.password !== undefined) {
      await writeFileAtomic(this.o.paths.windowsPassword(req.instanceId), login.password, 0o600);
    }
    this.background(req.instanceId, t, () =>
      this.settle(entry!, t, "ResetInstance", ctx, () => this.reinstall(entry!, record, old.systemDisk.path, image, t.abort.signal)),
    );
  }

  /** Reinstall files that are being made: counted by the pools until the reinstall ends. */
  readonly pendingResets = new Map<string, { pool: string; path: string; promisedBytes: number }>();

  private async reinstall(entry: InstanceEntry, record: InstanceRecord, oldPath: string, image: { path: string; virtualSizeBytes: number; bootMode: "Legacy BIOS" | "UEFI" }, signal: AbortSignal): Promise<void> {
    const id = record.instanceId;
    const p = this.o.provision;
    const oldRecord = entry.record;
    const undo = async () => {
      await p.storage.destroyFile(record.systemDisk.path).catch(() => undefined);
      await this.o.journal.remove({ kind: "reset", instanceId: id });
      this.pendingResets.delete(id);
    };
    try {
      if (this.isOn(id) && !(await softStop(this.o.power, id, signal))) await hardStop(this.o.power, id);
      await p.imageTool.createOverlay({ backing: image.path, backingFormat: "qcow2", target: record.systemDisk.path, sizeBytes: Math.max(record.systemDisk.sizeGiB * GiB, image.virtualSizeBytes) });
      p.checkpoint("reset:disk-created");
      await p.buildConfigDrive(record);
      await p.hypervisor.defineDomain(domainSpecOf(p, record, image.bootMode));
    } catch (error) {
      // Not defined onto the new disk: the instance keeps its old one.
      await p.buildConfigDrive(oldRecord).catch(() => undefined);
      await undo();
      throw error;
    }
    p.checkpoint("reset:defined");
    entry.record = record;
    this.o.registry.touched(id, "ResetInstance: new system disk");
    try {
      await powerOn(this.o.power, id);
    } catch (error) {
      // The new disk did not boot: back onto the old one, which is only removed once the new one boots.
      if (this.isOn(id)) await hardStop(this.o.power, id).catch(() => undefined);
      await p.hypervisor.defineDomain(domainSpecOf(p, oldRecord, this.bootModeOf(oldRecord)));
      entry.record = { ...oldRecord, latestOperation: record.latestOperation! };
      await p.buildConfigDrive(oldRecord).catch(() => undefined);
      await undo();
      throw error;
    }
    // The new disk booted: the old one goes.
    await p.storage.destroyFile(oldPath);
    await this.o.journal.remove({ kind: "reset", instanceId: id });
    this.pendingResets.delete(id);
    void p.storage.measure().catch(() => undefined);
  }

  /** Recovery: a reinstall whose instance is gone leaves only its new disk to remove. */
  async dropOrphanReset(j: { instanceId: string; record: InstanceRecord }): Promise<void> {
    await this.o.provision.storage.destroyFile(j.record.systemDisk.path);
    await this.o.journal.remove({ kind: "reset", instanceId: j.instanceId });
  }

  /** Recovery of a reinstall a crash interrupted: finished when libvirt already has the new disk, else undone. */
  async resumeReset(entry: InstanceEntry, j: { record: InstanceRecord; oldPath: string; requestId: string }, definedOnNew: boolean): Promise<void> {
    const ctx = { requestId: j.requestId };
    const id = entry.record.instanceId;
    if (!definedOnNew) {
      await this.o.provision.storage.destroyFile(j.record.systemDisk.path);
      await this.o.journal.remove({ kind: "reset", instanceId: id });
      entry.record.latestOperation = failedOperation("ResetInstance", ctx, new Error("the agent restarted before the new system disk was in place; the instance keeps its old disk"));
      this.o.registry.touched(id, "ResetInstance rolled back");
      return;
    }
    const t = this.begin(entry, "ResetInstance", "RESETTING", ctx);
    this.background(id, t, () =>
      this.settle(entry, t, "ResetInstance", ctx, async () => {
        if (!this.isOn(id)) await powerOn(this.o.power, id);
        await this.o.provision.storage.destroyFile(j.oldPath);
        await this.o.journal.remove({ kind: "reset", instanceId: id });
      }),
    );
  }

  /**
   * Recovery: the record says an operation is OPERATING, but no journal entry resumes
   * it: a restart cut the agent off after the work and before the outcome was saved in
   * libvirt (finish saves it in the background), or in the middle of an operation that
   * keeps no journal. A launch succeeded (its journal goes only once the instance runs);
   * for anything else the outcome is not known, and it is reported FAILED rather than
   * OPERATING for ever.
   */
  settleInterrupted(entry: InstanceEntry): void {
    const op = entry.record.latestOperation!;
    const error = op.action === "RunInstances" ? undefined : new Error(`the agent restarted during ${op.action}; its outcome was not recorded`);
    this.o.logger.warn({ instanceId: entry.record.instanceId, action: op.action }, "an operation a restart interrupted is settled");
    void this.finish(entry, op.action, { requestId: op.requestId }, error);
  }

  // ---------------------------------------------------------------- images from instances

  /**
   * CreateImage: a new image from the instance's system disk. A stopped disk is copied
   * as it is; a running one with its filesystems frozen by the guest agent, or paused
   * when there is none (agent/disks/copy.ts). The image is CREATING until the copy is in
   * the cache; `done` settles then. The instance keeps its state meanwhile.
   */
  async createImage(
    req: { instanceId: string; imageName: string; imageDescription?: string; dryRun?: boolean; cleanGuest?: boolean },
    ctx: RequestContext,
  ): Promise<{ imageId: string; done: Promise<void> }> {
    const [entry] = this.validate([req.instanceId], "CreateImage");
    const record = entry!.record;
    if (req.cleanGuest && (record.osType === "windows" || !this.isOn(req.instanceId))) {
      throw new ApiError("InvalidParameterValue", "`Sysprep` TRUE clears logs and shell histories inside a running Linux guest through its guest agent; this instance is not one");
    }
    const images = this.o.provision.images;
    const source = images.get(record.imageId);
    const [osType, ...version] = (record.osName ?? "Linux").split(" ");
    if (req.dryRun) throw new ApiError("DryRunOperation", "the request would have succeeded; DryRun was set");
    const imageId = await images.beginImage({
      imageName: req.imageName,
      ...(req.imageDescription !== undefined ? { imageDescription: req.imageDescription } : {}),
      osType: source?.osType ?? osType ?? "Linux",
      osVersion: source?.osVersion ?? version.join(" "),
      architecture: source?.architecture ?? "x86_64",
      bootMode: source?.bootMode ?? "Legacy BIOS",
      source: "CREATE_IMAGE",
      // The new image wants the drive its instance was made with.
      ...(record.configDrive === "nocloud" ? { tags: [{ key: CONFIG_DRIVE_TAG, value: "nocloud" }] } : {}),
    });
    const t = this.begin(entry!, "CreateImage", "UPDATING", ctx);
    let settle!: (error?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (e) => (e ? reject(e as Error) : resolve())));
    void done.catch(() => undefined); // reported through the image and LatestOperation
    this.background(req.instanceId, t, () =>
      this.settle(entry!, t, "CreateImage", ctx, async () => {
        const file = `${this.o.paths.tmpDir}/${imageId}.qcow2`;
        try {
          if (req.cleanGuest) {
            const outcome = await cleanGuestForImage(this.o.provision.hypervisor, req.instanceId);
            if (!outcome.done) throw new ApiError("FailedOperation", `the guest could not be cleaned for the image: ${outcome.reason}`);
            this.o.logger.info({ instanceId: req.instanceId, imageId }, "guest logs and shell histories cleared for the image");
          }
          const quiesce = await consistentCopy({
            imageTool: this.o.provision.imageTool,
            hypervisor: this.o.provision.hypervisor,
            logger: this.o.logger,
            source: record.systemDisk.path,
            target: file,
            ...(this.isOn(req.instanceId) ? { runningInstance: req.instanceId, quiesceMarker: this.o.paths.quiesceMarker(req.instanceId) } : {}),
            checkpoint: () => this.o.provision.checkpoint("image:copying"),
          });
          this.o.logger.info({ instanceId: req.instanceId, imageId, quiesce }, "system disk copied for the image");
          await images.completeImage(imageId, file);
          settle();
        } catch (error) {
          await images.failImage(imageId, (error as Error).message).catch(() => undefined);
          settle(error);
          throw error;
        } finally {
          await rm(file, { force: true });
          await rm(`${file}.part`, { force: true });
        }
      }),
    );
    return { imageId, done };
  }

  // ---------------------------------------------------------------- rescue mode

  /**
   * EnterRescueMode: the instance is stopped (soft, soft then hard, or hard, as StopType
   * says) and booted from the rescue system with its own disks attached and root's
   * password set to the rescue password. Until ExitRescueMode nothing else is allowed.
   */
  enterRescue(req: { instanceId: string; password: string; stopType: StopType }, ctx: RequestContext): void {
    const [entry] = this.validate([req.instanceId], "EnterRescueMode");
    const id = req.instanceId;
    const p = this.o.provision;
    if (!p.rescue) throw new ApiError("UnsupportedOperation", "this host has no rescue system configured (rescue_kernel, rescue_initrd)");
    checkPassword(req.password, "linux", { field: "Password" });
    const hash = sha512Crypt(req.password);
    const t = this.begin(entry!, "EnterRescueMode", "ENTER_RESCUE_MODE", ctx);
    this.background(id, t, () =>
      this.settle(entry!, t, "EnterRescueMode", ctx, async () => {
        await this.stopFor(id, req.stopType, t.abort.signal, "EnterRescueMode");
        const record: InstanceRecord = { ...entry!.record, rescue: { passwordHash: hash, since: isoSeconds(new Date()) } };
        await p.hypervisor.defineDomain(domainSpecOf(p, record, this.bootModeOf(record)));
        entry!.record = record;
        await powerOn(this.o.power, id);
      }),
    );
  }

  /** ExitRescueMode: the rescue system goes, the original boot returns, the instance starts. */
  exitRescue(req: { instanceId: string }, ctx: RequestContext): void {
    const entry = this.o.registry.get(req.instanceId);
    if (entry && !entry.record.rescue && !entry.transition) {
      throw new ApiError("UnsupportedOperation.NotInRescueMode", `instance ${req.instanceId} is not in rescue mode`);
    }
    const [e] = this.validate([req.instanceId], "ExitRescueMode");
    const id = req.instanceId;
    const p = this.o.provision;
    const t = this.begin(e!, "ExitRescueMode", "EXIT_RESCUE_MODE", ctx);
    this.background(id, t, () =>
      this.settle(e!, t, "ExitRescueMode", ctx, async () => {
        if (this.isOn(id)) await hardStop(this.o.power, id);
        const { rescue: _rescue, ...record } = e!.record;
        await p.hypervisor.defineDomain(domainSpecOf(p, record, this.bootModeOf(record)));
        e!.record = record;
        await powerOn(this.o.power, id);
      }),
    );
  }

  /** Stops a running instance the way StopType says, for an operation that needs it off. */
  private async stopFor(id: string, stopType: StopType, signal: AbortSignal, action: string): Promise<void> {
    if (!this.isOn(id)) return;
    if (stopType === "HARD") return hardStop(this.o.power, id);
    if (await softStop(this.o.power, id, signal)) return;
    if (stopType === "SOFT_FIRST") return hardStop(this.o.power, id);
    throw new ApiError("FailedOperation", `${action}: the guest did not shut down within ${this.o.power.softStopTimeoutMs / 1000} s; use StopType HARD or SOFT_FIRST`);
  }

  private bootModeOf(record: InstanceRecord): "Legacy BIOS" | "UEFI" {
    return this.o.provision.images.get(record.imageId)?.bootMode ?? "Legacy BIOS";
  }

  // ---------------------------------------------------------------- ISO

  /** InstanceAttachISO: the ISO (a local file already checked by the caller) goes into the instance's ISO tray. */
  async attachIso(req: { instanceId: string; file: string; url: string }, ctx: RequestContext): Promise<void> {
    const [entry] = this.validate([req.instanceId], "InstanceAttachISO");
    const id = req.instanceId;
    const t = this.begin(entry!, "InstanceAttachISO", "UPDATING", ctx);
    await this.exclusive(id, async () => {
      await this.settle(entry!, t, "InstanceAttachISO", ctx, async () => {
        const record: InstanceRecord = { ...entry!.record, iso: { path: req.file, url: req.url } };
        const spec = domainSpecOf(this.o.provision, record, this.bootModeOf(record));
        const live = this.isOn(id) ? await this.o.provision.hypervisor.liveDiskTargets(id) : null;
        if (live && !live.includes("hdd")) {
          throw new ApiError("UnsupportedOperation.InstanceStateRunning", `${id} was defined without an ISO tray; stop it to attach an ISO`);
        }
        if (live) await this.o.provision.hypervisor.changeMedia(id, "hdd", req.file);
        // The definition carries the ISO (and its boot order) for the next boots.
        await this.o.provision.hypervisor.defineDomain(spec);
        entry!.record = record;
      });
    });
    this.throwIfFailed(entry!, "InstanceAttachISO");
  }

  /** For the actions that answer only once done: a failure is the request's answer too. */
  private throwIfFailed(entry: InstanceEntry, action: string): void {
    const op = entry.record.latestOperation;
    if (op?.action === action && op.state === "FAILED") throw new ApiError((op.errorCode ?? "InternalError") as ErrorCode, op.errorMessage ?? `${action} failed`);
  }

  /** InstanceDetachISO: only while the instance is not running (the seed's rule). The file goes. */
  async detachIso(req: { instanceId: string }, ctx: RequestContext): Promise<void> {
    const [entry] = this.validate([req.instanceId], "InstanceDetachISO");
    const id = req.instanceId;
    const iso = entry!.record.iso;
    if (!iso) throw new ApiError("ResourceNotFound", `instance ${id} has no ISO attached`);
    const t = this.begin(entry!, "InstanceDetachISO", "UPDATING", ctx);
    await this.exclusive(id, () =>
      this.settle(entry!, t, "InstanceDetachISO", ctx, async () => {
        const { iso: _iso, ...record } = entry!.record;
        await this.o.provision.hypervisor.defineDomain(domainSpecOf(this.o.provision, record, this.bootModeOf(record)));
        entry!.record = record;
        await rm(iso.path, { force: true });
      }),
    );
    this.throwIfFailed(entry!, "InstanceDetachISO");
  }

  // ---------------------------------------------------------------- terminate

  async terminate(ids: string[], ctx: RequestContext): Promise<void> {
    const entries = this.validate(ids, "TerminateInstances");
    const ts: Transition[] = [];
    for (const entry of entries) {
      entry.transition?.abort.abort(new Error("pre-empted by TerminateInstances"));
      ts.push(this.begin(entry, "TerminateInstances", "TERMINATING", ctx));
    }
    const startedAt = isoSeconds(new Date());
    await Promise.all(
      entries.map((e) => this.o.journal.write({ kind: "terminate", instanceId: e.record.instanceId, record: e.record, requestId: ctx.requestId, startedAt })),
    );
    this.o.provision.checkpoint("terminate:journaled");
    entries.forEach((entry, i) => this.background(entry.record.instanceId, ts[i]!, () => this.destroyInstance(entry.record.instanceId, ctx)));
  }

  /** Tears the instance down and forgets it (also used by recovery). */
  async destroyInstance(instanceId: string, ctx: RequestContext): Promise<void> {
    const log = this.o.logger.child({ instanceId, requestId: ctx.requestId });
    for (let attempt = 1; ; attempt++) {
      try {
        const entry = this.o.registry.get(instanceId);
        const sd = entry?.record.systemDisk;
        await teardownInstance(this.o.provision, instanceId, sd ? { systemDiskPath: sd.path, ...(sd.diskId ? { systemDiskId: sd.diskId } : {}) } : {});
        break;
      } catch (error) {
        // The journal entry stays; the instance stays TERMINATING until it is gone.
        log.error({ err: error, attempt }, "terminate failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(30_000, 1000 * 2 ** attempt)));
      }
    }
    await this.o.keyPairs.forgetInstances([instanceId]).catch((e: unknown) => log.warn({ err: e }, "could not drop the key pair bindings"));
    // The journal goes before the instance leaves the API: a client that sees it gone never races a recovery.
    await this.o.journal.remove({ kind: "terminate", instanceId });
    this.o.registry.remove(instanceId);
    log.info("instance terminated");
  }

  /** Recovery: finishes a create or a terminate that a crash interrupted. */
  resume(entry: InstanceEntry, kind: "create" | "terminate", ctx: RequestContext): void {
    const action = kind === "create" ? "RunInstances" : "TerminateInstances";
    const t = this.begin(entry, action, kind === "create" ? "PENDING" : "TERMINATING", ctx);
    this.background(entry.record.instanceId, t, () =>
      kind === "create" ? this.create(entry, ctx) : this.destroyInstance(entry.record.instanceId, ctx),
    );
  }

  // ---------------------------------------------------------------- helpers

  /** Every ID must name a known instance in a state the action is allowed from; else nothing changes. */
  validate(ids: string[], action: InstanceAction): InstanceEntry[] {
    const missing = ids.filter((id) => !this.o.registry.has(id));
    if (missing.length) throw new ApiError("InvalidInstanceId.NotFound", `no such instance on this host: ${missing.join(", ")}`);
    const entries = [...new Set(ids)].map((id) => this.o.registry.get(id)!);
    for (const entry of entries) {
      const state = this.o.registry.stateOf(entry);
      if (!ALLOWED_FROM[action].has(state)) {
        const verb = action === "StopInstancesHard" ? "StopInstances (HARD)" : action;
        throw new ApiError(stateErrorCode(state) as ErrorCode, `${verb} is not allowed for ${entry.record.instanceId} in state ${state}`);
      }
    }
    return entries;
  }

  private begin(entry: InstanceEntry, action: string, state: TransitionState, ctx: RequestContext): Transition {
    const transition: Transition = { state, action, abort: new AbortController() };
    entry.record.latestOperation = { action, state: "OPERATING", requestId: ctx.requestId };
    this.o.registry.setTransition(entry.record.instanceId, transition);
    return transition;
  }

  /** Runs an operation's work under the instance lock and records its outcome, unless it was pre-empted. */
  private async settle(entry: InstanceEntry, t: Transition, action: string, ctx: RequestContext, work: () => Promise<void>): Promise<void> {
    if (t.abort.signal.aborted) return;
    // A record save still under way from the previous operation lands before this one redefines.
    await this.saves.get(entry.record.instanceId)?.done;
    try {
      await work();
      if (entry.transition === t) await this.finish(entry, action, ctx, undefined);
    } catch (error) {
      if (t.abort.signal.aborted && entry.transition !== t) return; // pre-empted: the newer operation reports
      this.o.logger.warn({ instanceId: entry.record.instanceId, requestId: ctx.requestId, err: error }, `${action} failed`);
      if (entry.transition === t) await this.finish(entry, action, ctx, error);
    }
  }

  /** Ends the operation; the returned promise settles once the record is saved in libvirt. */
  private finish(entry: InstanceEntry, action: string, ctx: RequestContext, error: unknown): Promise<void> {
    entry.record.latestOperation = error
      ? failedOperation(action, ctx, error)
      : { action, state: "SUCCESS", requestId: ctx.requestId };
    this.o.registry.setTransition(entry.record.instanceId, undefined);
    this.o.registry.touched(entry.record.instanceId, `${action} ${entry.record.latestOperation.state}`);
    return entry.launchFailed ? Promise.resolve() : this.saveRecord(entry);
  }

  /**
   * Saves the record into the domain's metadata. Saves of one instance never overlap and the
   * last one always writes the newest record: two overlapping virsh calls could otherwise land
   * in either order and leave an older record (say, one still naming a detached ISO) on top.
   */
  private saveRecord(entry: InstanceEntry): Promise<void> {
    const id = entry.record.instanceId;
    const current = this.saves.get(id);
    if (current) {
      current.pending = true;
      return current.done;
    }
    const slot = { pending: false, done: Promise.resolve() };
    slot.done = (async () => {
      do {
        slot.pending = false;
        await this.o.provision.hypervisor.setMetadata(id, JSON.stringify(entry.record)).catch((e: unknown) => {
          this.o.logger.warn({ instanceId: id, err: e }, "could not save the instance record in libvirt");
        });
      } while (slot.pending);
      this.saves.delete(id);
    })();
    this.saves.set(id, slot);
    return slot.done;
  }

  private background(instanceId: string, t: Transition, work: () => Promise<void>): void {
    const p = this.lock
      .run(instanceId, async () => {
        if (t.abort.signal.aborted && t.state !== "TERMINATING") return;
        await work();
      })
      .catch((error: unknown) => this.o.logger.error({ instanceId, err: error }, "operation crashed"))
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  /** Runs work under the instance's operation lock (disk attach and detach, snapshots). */
  exclusive<T>(instanceId: string, work: () => Promise<T>): Promise<T> {
    return this.lock.run(instanceId, work);
  }

  /** Resolves when every background operation has ended. */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running]);
  }
}

function failedOperation(action: string, ctx: RequestContext, error: unknown): LatestOperation {
  return {
    action,
    state: "FAILED",
    requestId: ctx.requestId,
    errorCode: error instanceof ApiError ? error.code : "InternalError",
    errorMessage: error instanceof Error ? error.message : String(error),
  };
}
