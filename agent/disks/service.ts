/**
 * The CBS disk actions at host scope: CreateDisks, AttachDisks, DetachDisks,
 * DescribeDisks, TerminateDisks. Every request is checked whole before anything
 * changes; attach and detach run under the instance's lock (so they never race its
 * power operations) and hot-plug into a running guest. They answer when done: a
 * detach waits until the guest has released the disk.
 */
import type { Logger } from "pino";
import type { DomainPowerState, DomainSpec, Hypervisor } from "../../drivers/libvirt/types.js";
import { DomainError } from "../core/errors.js";
import { isPoweredOn, isoSeconds, newId, type InstanceState } from "../model.js";
import { dataDiskSpec, type IoLimits } from "../instances/domain-spec.js";
import type { InstanceEntry, InstanceRegistry } from "../instances/registry.js";
import type { Storage } from "../storage/storage.js";
import type { LocalDiskType } from "../storage/pools.js";
import { diskState, type DiskRecord, type DiskStore } from "./store.js";
import type { Filter } from "../core/filter.js";
import type { DiskFilterName } from "./filters.js";
import { pciSlotsFree } from "../network/enis/model.js";

/** Attach and detach are allowed while the instance is at rest, on or off. */
const AT_REST = new Set<InstanceState>(["RUNNING", "STOPPED"]);

export interface DiskServiceOptions {
  disks: DiskStore;
  storage: Storage;
  registry: InstanceRegistry;
  hypervisor: Hypervisor;
  ioLimits: (pool: string | undefined) => IoLimits | undefined;
  /** Runs work under the instance's operation lock (InstanceService.exclusive). */
  exclusive: <T>(instanceId: string, work: () => Promise<T>) => Promise<T>;
  /** Drops a deleted disk's snapshots. */
  onDiskDeleted: (diskId: string) => Promise<void>;
  host: { hostId: string; zone: string };
  logger: Logger;
}

export class DiskService {
  constructor(private readonly o: DiskServiceOptions) {}

  /** CreateDisks: empty local data disks, unattached. */
  async create(req: { diskType: LocalDiskType; diskSizeGiB: number; diskCount: number; diskName?: string; hostId?: string; clientToken?: string }): Promise<string[]> {
    if (req.hostId !== undefined && req.hostId !== this.o.host.hostId) {
      throw new DomainError("HostNotFound", `Placement.HostId ${req.hostId} is not this host (${this.o.host.hostId})`);
    }
    // ClientToken: the disks an earlier request with this token made (idempotency), in creation order.
    if (req.clientToken !== undefined) {
      const earlier = [...this.o.disks.all()].filter((d) => d.clientToken === req.clientToken);
      if (earlier.length) return earlier.sort((a, b) => (a.batchIndex ?? 0) - (b.batchIndex ?? 0)).map((d) => d.diskId);
    }
    const pools = this.o.storage.place(
      Array.from({ length: req.diskCount }, () => ({ diskType: req.diskType, sizeGiB: req.diskSizeGiB })),
      "PoolFull",
    );
    const createdTime = isoSeconds(new Date());
    const records: DiskRecord[] = pools.map((pool, i) => {
      let diskId = newId("disk");
      while (this.o.disks.has(diskId)) diskId = newId("disk");
      const record: DiskRecord = {
        version: 1,
        diskId,
        diskName: req.diskName ? (req.diskCount > 1 ? `${req.diskName}-${i + 1}` : req.diskName) : diskId,
        diskType: req.diskType,
        pool,
        sizeGiB: req.diskSizeGiB,
        path: this.o.storage.pools.diskPath(pool, diskId),
        deleteWithInstance: false,
        createdTime,
        busy: "CREATING",
        ...(req.clientToken !== undefined ? { clientToken: req.clientToken, batchIndex: i } : {}),
      };
      this.o.disks.put(record); // counted by admission from this moment
      return record;
    });
    try {
      for (const r of records) {
        await this.o.storage.createEmpty(r.path, r.sizeGiB);
        delete r.busy;
        await this.o.disks.save(r);
      }
    } catch (error) {
      for (const r of records) {
        await this.o.storage.destroyFile(r.path).catch(() => undefined);
        await this.o.disks.remove(r.diskId);
      }
      throw error;
    }
    void this.o.storage.measure().catch(() => undefined);
    return records.map((r) => r.diskId);
  }

  /** AttachDisks: each disk at the instance's next free target; hot-plugged when it runs. */
  async attach(req: { diskIds: string[]; instanceId: string; deleteWithInstance?: boolean }): Promise<void> {
    const entry = this.atRest(req.instanceId, "AttachDisks");
    const disks = req.diskIds.map((id) => this.requireDisk(id));
    for (const d of disks) {
      if (d.busy) throw new DomainError("DiskBusy", `disk ${d.diskId} is ${d.busy}`);
      if (d.instanceId) throw new DomainError("DiskAttached", `disk ${d.diskId} is already attached to ${d.instanceId}`);
    }
    this.checkPciRoom(req.instanceId, disks.length);
    const taken = new Set<string>();
    const targets = disks.map((d) => {
      const t = this.o.disks.freeTarget(req.instanceId, taken);
      if (!t) throw new DomainError("DiskSlotsFull", `instance ${req.instanceId} has no free disk slot for ${d.diskId}`);
      taken.add(t);
      return t;
    });
    // Reserved now (synchronously): a concurrent attach sees the disks busy.
    disks.forEach((d) => (d.busy = "ATTACHING"));
    await this.o.exclusive(req.instanceId, async () => {
      // Again under the lock: an ENI attach (same lock) may have taken a slot meanwhile.
      this.checkPciRoom(req.instanceId, disks.length);
      for (const [i, d] of disks.entries()) {
        try {
          const live = isPoweredOn(entry.power);
          const attached: DiskRecord = { ...d, instanceId: req.instanceId, target: targets[i]!, ...(req.deleteWithInstance !== undefined ? { deleteWithInstance: req.deleteWithInstance } : {}) };
          delete attached.busy;
          // The record first: a crash after it is healed by recovery (the domain follows the store).
          await this.o.disks.save(attached);
          try {
            await this.o.hypervisor.attachDisk(req.instanceId, dataDiskSpec({ diskId: d.diskId, target: targets[i]!, path: d.path }, this.o.ioLimits(d.pool)), live);
          } catch (error) {
            const { instanceId: _i, target: _t, ...back } = attached;
            await this.o.disks.save(back);
            throw error;
          }
        } finally {
          const now = this.o.disks.get(d.diskId);
          if (now) delete now.busy;
        }
      }
    }).finally(() => disks.forEach((d) => delete this.o.disks.get(d.diskId)?.busy));
    this.o.registry.touched(req.instanceId, "AttachDisks");
  }

  /** DetachDisks: unplugged from a running guest (waiting until it lets go), then from the definition. */
  async detach(req: { diskIds: string[]; instanceId?: string }): Promise<void> {
    const disks = req.diskIds.map((id) => this.requireDisk(id));
    const owners = new Set<string>();
    for (const d of disks) {
      if (d.busy) throw new DomainError("DiskBusy", `disk ${d.diskId} is ${d.busy}`);
      if (!d.instanceId) throw new DomainError("DiskNotAttached", `disk ${d.diskId} is not attached`);
      if (req.instanceId !== undefined && d.instanceId !== req.instanceId) {
        throw new DomainError("DiskNotAttached", `disk ${d.diskId} is attached to ${d.instanceId}, not ${req.instanceId}`);
      }
      owners.add(d.instanceId);
    }
    const entries = new Map([...owners].map((id) => [id, this.atRest(id, "DetachDisks")] as const));
    disks.forEach((d) => (d.busy = "DETACHING"));
    try {
      for (const [instanceId, entry] of entries) {
        await this.o.exclusive(instanceId, async () => {
          for (const d of disks.filter((x) => x.instanceId === instanceId)) {
            await this.o.hypervisor.detachDisk(instanceId, d.target!, isPoweredOn(entry.power));
            const { instanceId: _i, target: _t, busy: _b, ...detached } = d;
            await this.o.disks.save(detached);
          }
        });
        this.o.registry.touched(instanceId, "DetachDisks");
      }
    } finally {
      for (const d of disks) delete this.o.disks.get(d.diskId)?.busy;
    }
  }

  /** TerminateDisks: unattached disks only; their data destroyed, their snapshots dropped. */
  async terminate(diskIds: string[]): Promise<void> {
    const disks = diskIds.map((id) => this.requireDisk(id));
    for (const d of disks) {
      if (d.busy) throw new DomainError("DiskBusy", `disk ${d.diskId} is ${d.busy}`);
      if (d.instanceId) throw new DomainError("DiskAttached", `disk ${d.diskId} is attached to ${d.instanceId}; detach it first`);
    }
    for (const d of disks) {
      d.busy = "DETACHING";
      await this.o.storage.destroyFile(d.path);
      await this.o.onDiskDeleted(d.diskId);
      await this.o.disks.remove(d.diskId);
    }
    void this.o.storage.measure().catch(() => undefined);
  }

  /**
   * Recovery: the disk store is the truth about attachments. A data disk the store
   * attaches but the domain lacks is attached; a data disk (serial disk-…) the domain has
   * but the store does not attach there is detached. Both happen when a crash cut an
   * AttachDisks or DetachDisks short.
   */
  async heal(instanceId: string, spec: DomainSpec, state: DomainPowerState): Promise<void> {
    const live = state !== "shut off" && state !== "crashed";
    const want = this.o.disks.attachedTo(instanceId);
    const have = spec.disks.filter((d) => d.device === "disk" && d.target !== "vda" && d.serial?.startsWith("disk-"));
    for (const d of have) {
      if (!want.some((w) => w.target === d.target && w.diskId === d.serial)) {
        this.o.logger.warn({ instanceId, target: d.target, disk: d.serial }, "the domain has a data disk the records do not attach there; detaching it");
        await this.o.hypervisor.detachDisk(instanceId, d.target, live);
      }
    }
    for (const w of want) {
      if (!have.some((d) => d.target === w.target && d.serial === w.diskId)) {
        this.o.logger.warn({ instanceId, target: w.target, disk: w.diskId }, "the records attach a data disk the domain lacks; attaching it");
        await this.o.hypervisor.attachDisk(instanceId, dataDiskSpec({ diskId: w.diskId, target: w.target!, path: w.path }, this.o.ioLimits(w.pool)), live);
      }
    }
  }

  /** DescribeDisks: data disks from the store and system disks from the instances. */
  describe(req: { diskIds?: string[]; filters: Filter<DiskFilterName>[]; offset: number; limit: number; descending?: boolean }): { total: number; disks: Array<Record<string, unknown>> } {
    let rows = this.allDisks();
    if (req.diskIds) {
      const wanted = new Set(req.diskIds);
      rows = rows.filter((r) => wanted.has(r.DiskId as string));
    }
    for (const f of req.filters) {
      const values = new Set(f.values);
      const field = FILTER_FIELDS[f.name];
      rows = rows.filter((r) => values.has(String(r[field] ?? "")));
    }
    if (req.descending) rows.reverse();
    return { total: rows.length, disks: rows.slice(req.offset, req.offset + req.limit) };
  }

  private allDisks(): Array<Record<string, unknown>> {
    const placement = { Zone: this.o.host.zone, ProjectId: 0, HostId: this.o.host.hostId };
    const out: Array<Record<string, unknown>> = [];
    for (const e of this.o.registry.all()) {
      const sd = e.record.systemDisk;
      if (!sd.diskId || e.launchFailed) continue;
      out.push(cbsDisk({ diskId: sd.diskId, diskName: `${e.record.instanceId}-system`, usage: "SYSTEM_DISK", diskType: sd.diskType, sizeGiB: sd.sizeGiB, state: "ATTACHED", instanceId: e.record.instanceId, deleteWithInstance: true, createdTime: e.record.createdTime, placement }));
    }
    for (const d of this.o.disks.all()) {
      out.push(cbsDisk({ diskId: d.diskId, diskName: d.diskName, usage: "DATA_DISK", diskType: d.diskType, sizeGiB: d.sizeGiB, state: diskState(d), instanceId: d.instanceId ?? "", deleteWithInstance: d.deleteWithInstance, createdTime: d.createdTime, placement }));
    }
    return out.sort((a, b) => String(a.CreateTime).localeCompare(String(b.CreateTime)) || String(a.DiskId).localeCompare(String(b.DiskId)));
  }

  requireDisk(diskId: string): DiskRecord {
    const d = this.o.disks.get(diskId);
    if (d) return d;
    const system = [...this.o.registry.all()].find((e) => e.record.systemDisk.diskId === diskId);
    if (system) throw new DomainError("DiskNotSupported", `disk ${diskId} is the system disk of ${system.record.instanceId}`);
    throw new DomainError("DiskNotFound", `no disk ${diskId} on this host`);
  }

  /**
   * Refuses (DiskSlotsFull) before anything changes when `count` more virtio disks would not fit
   * the definition's PCI slots, which its NICs share (agent/network/enis/model.ts pciSlotsFree):
   * a hot-plug never finds the bus full half-way through a batch.
   */
  private checkPciRoom(id: string, count: number): void {
    const disks = this.o.disks.attachedTo(id).length;
    const nics = this.o.registry.get(id)?.record.nics.length ?? 1;
    const free = pciSlotsFree({ virtioDisks: 1 + disks, nics });
    if (free < count) {
      throw new DomainError(
        "DiskSlotsFull",
        `instance ${id} has ${Math.max(0, free)} free PCI slot(s) for ${count} disk(s): its system disk, ${disks} data disk(s) and ${nics} NIC(s) take the rest`,
      );
    }
  }

  private atRest(instanceId: string, action: string): InstanceEntry {
    const entry = this.o.registry.get(instanceId);
    if (!entry) throw new DomainError("InstanceNotFound", `no such instance on this host: ${instanceId}`);
    const state = this.o.registry.stateOf(entry);
    if (!AT_REST.has(state) || entry.transition) {
      throw new DomainError("InstanceNotAtRest", `${action} is not allowed for ${instanceId} in state ${state}${entry.transition ? ` (${entry.transition.action} running)` : ""}`);
    }
    return entry;
  }
}

const FILTER_FIELDS: Record<DiskFilterName, string> = {
  "disk-id": "DiskId",
  "disk-usage": "DiskUsage",
  "disk-type": "DiskType",
  "disk-state": "DiskState",
  "disk-name": "DiskName",
  "instance-id": "InstanceId",
  zone: "Zone",
};


/** The CBS Disk structure (the fields a host-scope disk has). */
function cbsDisk(d: {
  diskId: string;
  diskName: string;
  usage: "SYSTEM_DISK" | "DATA_DISK";
  diskType: string;
  sizeGiB: number;
  state: string;
  instanceId: string;
  deleteWithInstance: boolean;
  createdTime: string;
  placement: { Zone: string; ProjectId: number; HostId: string };
}): Record<string, unknown> {
  return {
    DiskId: d.diskId,
    DiskName: d.diskName,
    DiskUsage: d.usage,
    DiskType: d.diskType,
    DiskSize: d.sizeGiB,
    DiskState: d.state,
    Attached: d.state === "ATTACHED" || d.state === "DETACHING",
    InstanceId: d.instanceId,
    InstanceType: "CVM",
    DeleteWithInstance: d.deleteWithInstance,
    DiskChargeType: "CDHPAID",
    Portable: d.usage === "DATA_DISK",
    SnapshotAbility: true,
    Encrypt: false,
    CreateTime: d.createdTime,
    Placement: d.placement,
    Zone: d.placement.Zone,
  };
}
