/**
 * AttachDisks and the definition's PCI room, which data disks share with NICs (agent/network/enis/model.ts):
 * a batch that would not fit is refused whole before anything changes, with a recording
 * hypervisor that fails closed (anything but attachDisk throws) and the real disk store and registry.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Hypervisor } from "../../../../drivers/libvirt/types.js";
import { DomainError } from "../../../../agent/core/errors.js";
import { DiskService, type DiskServiceOptions } from "../../../../agent/disks/service.js";
import { DATA_DISK_TARGETS, DiskStore, type DiskRecord } from "../../../../agent/disks/store.js";
import { InstanceRegistry } from "../../../../agent/instances/registry.js";
import type { InstanceRecord, NicRecord } from "../../../../agent/model.js";
import { PCI_FIXED_SLOTS, PCI_SLOTS } from "../../../../agent/network/enis/model.js";

const ID = "ins-pci00001";

function nic(i: number): NicRecord {
  return { mac: `52:54:00:00:00:${String(i + 1).padStart(2, "0")}`, network: "net-a", ipv4: `10.9.0.${i + 2}`, subnetId: "subnet-a", vpcId: "vpc-a", slot: i };
}

function record(nics: number): InstanceRecord {
  return {
    version: 1,
    instanceId: ID,
    uuid: "00000000-0000-4000-8000-000000000001",
    instanceName: "pci",
    instanceType: "CDH_8C16G",
    cpu: 8,
    memoryGiB: 16,
    imageId: "img-abcd1234",
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 1, path: "/x" },
    nics: Array.from({ length: nics }, (_, i) => nic(i)),
    createdTime: "2026-12-07T10:00:00Z",
    launchIndex: 0,
    configGeneration: 1,
  };
}

function failClosed<T extends object>(name: string, allowed: Partial<T>): T {
  return new Proxy(allowed as T, {
    get(target, prop) {
      if (prop in target) return (target as Record<string | symbol, unknown>)[prop];
      if (prop === "then") return undefined;
      throw new Error(`${name}.${String(prop)} was not expected`);
    },
  });
}

describe("AttachDisks checks the PCI room its NICs share", () => {
  let dir: string;
  let store: DiskStore;
  let registry: InstanceRegistry;
  let plugged: string[];
  let svc: DiskService;
  let opts: DiskServiceOptions;
  let n = 0;

  async function disk(attached: boolean): Promise<DiskRecord> {
    const diskId = `disk-${String(++n).padStart(8, "0")}`;
    const target = attached ? store.freeTarget(ID) : undefined;
    const r: DiskRecord = {
      version: 1,
      diskId,
      diskName: diskId,
      diskType: "LOCAL_BASIC",
      pool: "default",
      sizeGiB: 1,
      path: join(dir, `${diskId}.qcow2`),
      deleteWithInstance: false,
      createdTime: "2026-12-07T10:00:00Z",
      ...(attached ? { instanceId: ID, target: target! } : {}),
    };
    await store.save(r);
    return r;
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "pci-room-"));
    store = new DiskStore(join(dir, "disks"));
    await store.load();
    registry = new InstanceRegistry();
    plugged = [];
    opts = {
      disks: store,
      storage: failClosed("storage", {}),
      registry,
      hypervisor: failClosed<Hypervisor>("hypervisor", {
        async attachDisk(_name, d) {
          plugged.push(d.target);
        },
      }),
      ioLimits: () => undefined,
      exclusive: (_id, work) => work(),
      onDiskDeleted: async () => {},
      host: { hostId: "host-1", zone: "zone-1" },
      logger: pino({ level: "silent" }),
    };
    svc = new DiskService(opts);
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a batch the free slots cannot hold, whole (DiskSlotsFull, naming the NICs), and takes one that fits", async () => {
    // 3 NICs and 19 data disks: 32 - 6 fixed - 1 system disk - 19 - 3 = 3 slots left.
    registry.add({ record: record(3), power: "running", launchFailed: false, reboots: 0 });
    for (let i = 0; i < 19; i++) await disk(true);
    expect(PCI_SLOTS - PCI_FIXED_SLOTS - 1 - 19 - 3).toBe(3);
    const four = [await disk(false), await disk(false), await disk(false), await disk(false)];
    let refusal: unknown;
    try {
      await svc.attach({ diskIds: four.map((d) => d.diskId), instanceId: ID });
    } catch (e) {
      refusal = e;
    }
    expect(refusal).toBeInstanceOf(DomainError);
    expect((refusal as DomainError).kind).toBe("DiskSlotsFull");
    expect((refusal as DomainError).message).toContain("3 free PCI slot(s) for 4 disk(s)");
    expect((refusal as DomainError).message).toContain("3 NIC(s)");
    // Nothing half-made: no hot-plug, every disk as it was (unattached, not busy).
    expect(plugged).toEqual([]);
    for (const d of four) expect(store.get(d.diskId)).toMatchObject({ diskId: d.diskId });
    for (const d of four) expect(store.get(d.diskId)!.instanceId ?? store.get(d.diskId)!.busy).toBeUndefined();
    await svc.attach({ diskIds: four.slice(0, 3).map((d) => d.diskId), instanceId: ID });
    expect(plugged).toHaveLength(3);
    expect(store.attachedTo(ID)).toHaveLength(22);
    // Full now, though targets remain (25 of them): the PCI room is what ran out.
    expect(store.freeTarget(ID)).toBeDefined();
    await expect(svc.attach({ diskIds: [four[3]!.diskId], instanceId: ID })).rejects.toThrow(/0 free PCI slot\(s\) for 1 disk/);
    expect(DATA_DISK_TARGETS.length).toBeGreaterThan(22);
  });

  it("checks again under the instance's lock, counting a NIC an ENI attach added while the request waited", async () => {
    registry.add({ record: record(1), power: "running", launchFailed: false, reboots: 0 });
    for (let i = 0; i < 23; i++) await disk(true); // 32 - 6 - 1 - 23 - 1 = 1 slot left
    const last = await disk(false);
    svc = new DiskService({
      ...opts,
      // The ENI attach that held the lock took the last slot.
      exclusive: async (_id, work) => {
        registry.get(ID)!.record.nics.push(nic(1));
        return work();
      },
    });
    await expect(svc.attach({ diskIds: [last.diskId], instanceId: ID })).rejects.toThrow(/0 free PCI slot\(s\) for 1 disk.*2 NIC/);
    expect(plugged).toEqual([]);
    expect(store.get(last.diskId)!.busy).toBeUndefined();
    expect(store.get(last.diskId)!.instanceId).toBeUndefined();
  });
});
