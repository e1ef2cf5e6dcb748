/**
 * RunInstances: every check first (image, disk size, password, subnet and address, data
 * disks, capacity, pool placement), then, in one synchronous step, the admission and the
 * reservation (IDs, MACs, addresses, disk records, registry entries); the journal entry
 * and the provisioning follow, in the background, one instance at a time per instance,
 * at most launch_concurrency on the host at once (the others wait PENDING in the queue).
 */
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import type { Logger } from "pino";
import { DomainError, dryRunStop } from "../core/errors.js";
import type { Journal } from "../journal.js";
import { isoSeconds, newId, newMac, type InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import { checkPassword, sha512Crypt } from "../logins/password.js";
import { allocateAddress, resolveSubnet, type Subnet } from "../network/subnets.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { admissionShortfall, type HostResource } from "../capacity.js";
import type { ImageCatalog } from "../images/catalog.js";
import type { UsableImage } from "../images/model.js";
import type { Storage } from "../storage/storage.js";
import { DATA_DISK_TARGETS, type DiskRecord, type DiskStore } from "../disks/store.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { LaunchQueue } from "./launch-queue.js";
import type { PowerControl } from "./power.js";
import { saveLaunchFailed, type Checkpoint, type Provisioner } from "./provision.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

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
  /** DisableApiTermination: TerminateInstances refuses the instances until it is cleared. */
  disableApiTermination?: boolean;
  /** TagSpecification's tags, kept in each instance's record. */
  tags?: Array<{ key: string; value: string }>;
  /** SecurityGroupIds in priority order (checked by the caller); absent: the host's default group. */
  securityGroupIds?: string[];
  /** InternetAccessible.InternetMaxBandwidthOut (Mbit/s, > 0): only on a subnet with a route out of the VPC. */
  internetMaxBandwidthOut?: number;
}

/** At most this many data disks per instance (CVM: 20 cloud + 1 local; the virtio targets vdb…vdv). */
export const MAX_DATA_DISKS = 21;

const GiB = 1024 ** 3;

/** What check() found: the image, the subnet and addresses, and the pools the disks go to. */
export interface LaunchPlan {
  image: UsableImage;
  osType: "linux" | "windows";
  subnet: Subnet;
  dataDisks: NonNullable<RunRequest["dataDisks"]>;
  /** One instance's disks: the system disk, then the data disks. */
  perInstance: Array<{ diskType: "LOCAL_BASIC" | "LOCAL_SSD"; sizeGiB: number }>;
  /** The pool of every disk of every instance, instance after instance. */
  placed: string[];
  addresses: string[];
}

export class Launcher {
  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      journal: Journal;
      paths: DataPaths;
      images: Pick<ImageCatalog, "requireUsable">;
      storage: Pick<Storage, "place" | "pools" | "instanceOverheadGiB">;
      disks: DiskStore;
      subnets: readonly Subnet[];
      hostResource: () => HostResource;
      /** Written into every record: the agent adopts only its own host's domains. */
      hostId: string;
      keyPairs: Pick<KeyPairStore, "associate">;
      provisioner: Provisioner;
      power: PowerControl;
      /** The host's launch queue: provisioning waits here for its turn. */
      queue: Pick<LaunchQueue, "run">;
      checkpoint: Checkpoint;
      logger: Logger;
      /** The addresses in use on a subnet: every NIC's (secondary ones too) and every unattached ENI's (agent/network/enis). */
      addressesInUse?: (subnetId: string) => Set<string>;
      /** A new ENI ID for an instance's primary NIC (unique among the host's ENIs). */
      newEniId?: () => string;
    },
  ) {}

  /**
   * RunInstances. check() runs every check the launch depends on and has no side effect;
   * DryRun stops right after it. check() and reserve() are synchronous and run in one
   * step, so two concurrent requests cannot both be admitted into the same room.
   */
  async run(req: RunRequest, ctx: RequestContext): Promise<string[]> {
    const earlier = this.byClientToken(req.clientToken);
    if (earlier) return earlier;
    const plan = this.check(req);
    if (req.dryRun) throw dryRunStop();
    const { entries, diskRecords } = this.reserve(req, plan, ctx);
    return this.commit(req, plan, entries, diskRecords, ctx);
  }

  /** The instances an earlier request with the same ClientToken launched (idempotency), in launch order. */
  private byClientToken(clientToken: string | undefined): string[] | undefined {
    if (!clientToken) return undefined;
    const earlier = [...this.o.registry.all()]
      .filter((e) => e.record.clientToken === clientToken)
      .sort((a, b) => a.record.launchIndex - b.record.launchIndex);
    return earlier.length ? earlier.map((e) => e.record.instanceId) : undefined;
  }

  /** Every check of RunInstances, in the order the client hears of them; nothing changes. */
  check(req: RunRequest): LaunchPlan {
    const { registry, images } = this.o;
    const image = images.requireUsable(req.imageId);
    if (req.systemDisk.sizeGiB * GiB < image.virtualSizeBytes) {
      throw new DomainError("BadValue",
        `SystemDisk.DiskSize ${req.systemDisk.sizeGiB} GiB is smaller than image ${req.imageId} (${Math.ceil(image.virtualSizeBytes / GiB)} GiB)`,
      );
    }
    const osType = image.osFamily;
    if (req.login?.password !== undefined) checkPassword(req.login.password, osType, { field: "LoginSettings.Password" });
    const subnet = resolveSubnet(this.o.subnets, req.vpc);
    if (req.internetMaxBandwidthOut && !subnet.internetRoute) {
      throw new DomainError("BadValue", `InternetAccessible.InternetMaxBandwidthOut: subnet ${subnet.subnetId} has no route out of the VPC (subnets[].internet_route), so there is no traffic leaving it to cap`);
    }
    const count = req.names.length;
    if (req.vpc?.privateIpAddress !== undefined && count > 1) {
      throw new DomainError("BadValue", "VirtualPrivateCloud.PrivateIpAddresses names one address; InstanceCount must then be 1");
    }
    const dataDisks = req.dataDisks ?? [];
    if (dataDisks.length > MAX_DATA_DISKS) {
      throw new DomainError("TooMany", `DataDisks has ${dataDisks.length} disks; at most ${MAX_DATA_DISKS} per instance`);
    }
    const shortfall = admissionShortfall(this.o.hostResource(), { cpu: req.cpu, memoryGiB: req.memoryGiB }, count);
    if (shortfall) {
      throw new DomainError("NoRoom", `${count} x ${req.instanceType} does not fit on this host: ${shortfall}`);
    }
    // One system disk and the data disks per instance, each placed in a pool of its type.
    const perInstance = [{ diskType: req.systemDisk.diskType, sizeGiB: req.systemDisk.sizeGiB }, ...dataDisks];
    // The system disk's pool also holds the instance's configuration files (instance_overhead_gib).
    const overhead = this.o.storage.instanceOverheadGiB;
    const placed = this.o.storage.place(req.names.flatMap(() => perInstance.map((d, i) => (i === 0 ? { ...d, sizeGiB: d.sizeGiB + overhead } : d))));
    const usedIps =
      this.o.addressesInUse?.(subnet.subnetId) ??
      new Set([...registry.all()].flatMap((e) => e.record.nics.filter((n) => n.subnetId === subnet.subnetId && n.ipv4).map((n) => n.ipv4!)));
    const addresses = req.names.map(() => {
      const ip = allocateAddress(subnet, usedIps, req.vpc?.privateIpAddress);
      usedIps.add(ip);
      return ip;
    });
    return { image, osType, subnet, dataDisks, perInstance, placed, addresses };
  }

  /** Admission: IDs, MACs, disk records and registry entries, in one synchronous step after check(). */
  private reserve(req: RunRequest, plan: LaunchPlan, ctx: RequestContext): { entries: InstanceEntry[]; diskRecords: DiskRecord[] } {
    const { registry } = this.o;
    const { image, osType, subnet, dataDisks, perInstance, placed, addresses } = plan;
    const macs = new Set([...registry.all()].flatMap((e) => e.record.nics.map((n) => n.mac)));
    const passwordHash = osType === "linux" && req.login?.password !== undefined ? sha512Crypt(req.login.password) : undefined;
    const keyIds = req.login?.keyIds ?? [];
    const createdTime = isoSeconds(new Date());
    const disks = this.o.disks;
    const takenDiskIds = new Set<string>();
    const newDiskId = () => {
      let id = newId("disk");
      while (disks.has(id) || takenDiskIds.has(id)) id = newId("disk");
      takenDiskIds.add(id);
      return id;
    };
    const diskRecords: DiskRecord[] = [];
    const eniIds = new Set<string>();
    const newEni = () => {
      let id = this.o.newEniId?.() ?? `eni-${newId("ins").slice(4)}`;
      while (eniIds.has(id)) id = this.o.newEniId?.() ?? `eni-${newId("ins").slice(4)}`;
      eniIds.add(id);
      return id;
    };
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
        // The primary NIC is an ENI of its own (eni-…), never detached (agent/network/enis).
        nics: [{ mac, network: subnet.network, ipv4: addresses[launchIndex]!, subnetId: subnet.subnetId, vpcId: subnet.vpcId, eniId: newEni() }],
        osType,
        ...(image.configDrive !== "config-2" ? { configDrive: image.configDrive } : {}),
        login: { keyIds: [...keyIds], ...(passwordHash ? { passwordHash } : {}), ...(req.login?.keepImageLogin ? { keepImage: true as const } : {}) },
        configGeneration: 1,
        createdTime,
        ...(req.clientToken ? { clientToken: req.clientToken } : {}),
        launchIndex,
        ...(req.userData ? { userData: req.userData } : {}),
        ...(req.disableApiTermination ? { disableApiTermination: true } : {}),
        ...(req.tags?.length ? { tags: req.tags.map((t) => ({ ...t })) } : {}),
        ...(req.securityGroupIds ? { securityGroupIds: [...req.securityGroupIds] } : {}),
        ...(req.internetMaxBandwidthOut ? { internetMaxBandwidthOut: req.internetMaxBandwidthOut } : {}),
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
    return { entries, diskRecords };
  }

  /** The journal entries and disk records on disk, the logins, then each launch in the background. */
  private async commit(req: RunRequest, plan: LaunchPlan, entries: InstanceEntry[], diskRecords: DiskRecord[], ctx: RequestContext): Promise<string[]> {
    const { registry, disks } = this.o;
    const keyIds = req.login?.keyIds ?? [];
    const createdTime = entries[0]?.record.createdTime ?? isoSeconds(new Date());
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
    this.o.checkpoint("create:journaled");
    const ids = entries.map((e) => e.record.instanceId);
    if (keyIds.length) await this.o.keyPairs.associate(ids, keyIds);
    if (plan.osType === "windows" && req.login?.password !== undefined) {
      for (const id of ids) {
        await mkdir(this.o.paths.instanceDir(id), { recursive: true, mode: 0o711 });
        await writeFileAtomic(this.o.paths.windowsPassword(id), req.login.password, 0o600);
      }
    }
    for (const entry of entries) this.o.ops.background(entry.record.instanceId, entry.transition!, () => this.create(entry, ctx));
    return entries.map((e) => e.record.instanceId);
  }

  /** Provisions one instance (also used by recovery to finish an interrupted create). */
  async create(entry: InstanceEntry, ctx: RequestContext): Promise<void> {
    const id = entry.record.instanceId;
    const log = this.o.logger.child({ instanceId: id, requestId: ctx.requestId });
    const t = entry.transition;
    const signal = t?.abort.signal;
    try {
      const power = await this.o.queue.run(() => this.o.provisioner.provision(entry.record, signal), { ...(signal ? { signal } : {}), label: id });
      this.o.power.known(id, power);
      this.o.checkpoint("create:started");
    } catch (error) {
      if (signal?.aborted && entry.transition !== t) {
        // Pre-empted (TerminateInstances, perhaps while queued): nothing is marked failed,
        // the terminate that follows under the lock reports; what was made goes, all disks.
        log.info("launch pre-empted; removing what was made");
        await this.o.provisioner.teardown(id, { allDisks: true, systemDiskPath: entry.record.systemDisk.path }).catch((e: unknown) => log.error({ err: e }, "cleanup after a pre-empted launch failed"));
        await this.o.journal.remove({ kind: "create", instanceId: id });
        return;
      }
      log.error({ err: error }, "launch failed; removing what was made");
      await this.o.provisioner.teardown(id, { allDisks: true, systemDiskPath: entry.record.systemDisk.path }).catch((e: unknown) => log.error({ err: e }, "cleanup after failed launch failed"));
      entry.launchFailed = true;
      entry.power = "absent";
      await saveLaunchFailed(this.o.paths, { ...entry.record, latestOperation: this.o.ops.failedOperation("RunInstances", ctx, error) });
      await this.o.journal.remove({ kind: "create", instanceId: id });
      await this.o.ops.finish(entry, "RunInstances", ctx, error);
      return;
    }
    // The journal goes before the answer is visible: a client that sees RUNNING and
    // SUCCESS never races a recovery of this create.
    await this.o.journal.remove({ kind: "create", instanceId: id });
    await this.o.ops.finish(entry, "RunInstances", ctx, undefined);
    log.info("instance launched");
  }
}
