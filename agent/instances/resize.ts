/**
 * ResizeInstanceDisks: grows the system disk and attached data disks.
 */
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { DomainError, dryRunStop } from "../core/errors.js";
import type { Storage } from "../storage/storage.js";
import type { DiskStore } from "../disks/store.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl } from "./power.js";

const GiB = 1024 ** 3;

export interface ResizeRequest {
  instanceId: string;
  systemDiskGiB?: number;
  dataDisks: Array<{ diskId: string; diskSizeGiB: number }>;
  resizeOnline: boolean;
  forceStop: boolean;
  dryRun?: boolean;
}

export class ResizeOperation {
  constructor(
    private readonly o: {
      ops: Operations;
      disks: DiskStore;
      storage: Pick<Storage, "checkGrowth" | "measure">;
      hypervisor: Pick<Hypervisor, "blockResize">;
      imageTool: Pick<ImageTool, "resize" | "info">;
      power: PowerControl;
    },
  ) {}

  /**
   * ResizeInstanceDisks: grows the system disk and attached data disks, in 10 GB steps,
   * never shrinking. A stopped instance's files grow with qemu-img; a running one's
   * with `virsh blockresize` when ResizeOnline is set (the guest sees the new size at
   * once), or after a stop when ForceStop is set (it is started again after).
   */
  resizeDisks(req: ResizeRequest, ctx: RequestContext): void {
    const [entry] = this.o.ops.validate([req.instanceId], "ResizeInstanceDisks");
    const id = req.instanceId;
    const disks = this.o.disks;
    const changes: Array<{ field: string; target: string; path: string; pool: string; from: number; to: number; diskId?: string }> = [];
    if (req.systemDiskGiB !== undefined) {
      const sd = entry!.record.systemDisk;
      changes.push({ field: "SystemDisk.DiskSize", target: "vda", path: sd.path, pool: sd.pool ?? "", from: sd.sizeGiB, to: req.systemDiskGiB });
    }
    req.dataDisks.forEach((d, i) => {
      const rec = disks.get(d.diskId);
      if (!rec) throw new DomainError("DiskNotFound", `\`DataDisks.${i}.DiskId\` no disk ${d.diskId} on this host`);
      if (rec.instanceId !== id) throw new DomainError("DiskNotAttached", `\`DataDisks.${i}.DiskId\` disk ${d.diskId} is not attached to ${id}`);
      if (rec.busy) throw new DomainError("DiskBusy", `disk ${d.diskId} is ${rec.busy}`);
      changes.push({ field: `DataDisks.${i}.DiskSize`, target: rec.target!, path: rec.path, pool: rec.pool, from: rec.sizeGiB, to: d.diskSizeGiB, diskId: d.diskId });
    });
    for (const c of changes) {
      if (c.to < c.from) throw new DomainError("DiskShrink", `\`${c.field}\` ${c.to} GB is smaller than the disk's ${c.from} GB; disks only grow`);
      if (c.to === c.from || (c.to - c.from) % 10 !== 0) {
        throw new DomainError("DiskStep", `\`${c.field}\` ${c.to} GB: a disk of ${c.from} GB grows in steps of 10 GB (${c.from + 10}, ${c.from + 20}, …)`);
      }
    }
    const running = this.o.power.isOn(id);
    if (running && !req.resizeOnline && !req.forceStop) {
      throw new DomainError("InstanceRunning", `${id} is running: set ResizeOnline to grow its disks live, or ForceStop to stop it first`);
    }
    this.o.storage.checkGrowth(changes.filter((c) => c.pool).map((c) => ({ pool: c.pool, deltaGiB: c.to - c.from })));
    if (req.dryRun) throw dryRunStop();
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
    const t = this.o.ops.begin(entry!, "ResizeInstanceDisks", "UPDATING", ctx);
    this.o.ops.background(id, t, async () => {
      await this.o.ops.settle(entry!, t, "ResizeInstanceDisks", ctx, async () => {
        const hv = this.o.hypervisor;
        try {
          if (this.o.power.isOn(id) && req.resizeOnline) {
            for (const c of changes) await hv.blockResize(id, c.target, c.to * GiB);
          } else {
            const wasOn = this.o.power.isOn(id);
            if (wasOn && !(await this.o.power.softStop(id, t.abort.signal))) await this.o.power.hardStop(id);
            for (const c of changes) await this.o.imageTool.resize({ target: c.path, format: "qcow2", sizeBytes: c.to * GiB });
            if (wasOn) await this.o.power.powerOn(id);
          }
        } catch (error) {
          // What did not grow keeps its old size (qemu-img and blockresize grow whole or not at all).
          for (const c of changes) {
            const info = await this.o.imageTool.info(c.path).catch(() => undefined);
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
}
