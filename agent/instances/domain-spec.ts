/** Instance record → libvirt domain spec. Pure. */
import type { DomainDiskSpec, DomainSpec, VirtType } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";

export const SMBIOS_MANUFACTURER = "cdh-agent";
/**
 * cloud-init's ds-identify recognises the OpenStack datasource by this DMI product
 * name, so guests find the metadata service even when an image ignores the drive.
 */
export const SMBIOS_PRODUCT = "OpenStack Compute";

/** Per-disk IO limits of a pool (0 = unlimited). */
export interface IoLimits {
  iops: number;
  throughputMBps: number;
}

function iotune(limits: IoLimits | undefined): DomainDiskSpec["iotune"] {
  if (!limits || (limits.iops <= 0 && limits.throughputMBps <= 0)) return undefined;
  return { totalIopsSec: Math.max(0, limits.iops), totalBytesSec: Math.max(0, limits.throughputMBps) * 1024 * 1024 };
}

/** A data disk as libvirt sees it: virtio, its target, serial = disk ID (/dev/disk/by-id/virtio-<id>). */
export function dataDiskSpec(disk: { diskId: string; target: string; path: string }, limits?: IoLimits): DomainDiskSpec {
  const tune = iotune(limits);
  return { device: "disk", target: disk.target, bus: "virtio", path: disk.path, format: "qcow2", serial: disk.diskId, ...(tune ? { iotune: tune } : {}) };
}

export function buildDomainSpec(options: {
  record: InstanceRecord;
  virtType: VirtType;
  paths: DataPaths;
  agentVersion: string;
  firmware?: "bios" | "uefi";
  /** Attached data disks, with their targets. */
  dataDisks?: ReadonlyArray<{ diskId: string; target: string; path: string; pool?: string }>;
  /** IO limits of a pool by name. */
  ioLimits?: (pool: string | undefined) => IoLimits | undefined;
}): DomainSpec {
  const { record, paths } = options;
  const firmware = options.firmware ?? "bios";
  return {
    name: record.instanceId,
    uuid: record.uuid,
    virtType: options.virtType,
    vcpus: record.cpu,
    memoryMiB: record.memoryGiB * 1024,
    firmware,
    ...(firmware === "uefi" ? { nvramPath: paths.nvram(record.instanceId) } : {}),
    disks: [
      {
        device: "disk",
        target: "vda",
        bus: "virtio",
        path: record.systemDisk.path,
        format: "qcow2",
        // The disk ID when the disk has one (the instance ID in records from before pools).
        serial: record.systemDisk.diskId ?? record.instanceId,
        bootOrder: 1,
        ...(() => {
          const tune = iotune(options.ioLimits?.(record.systemDisk.pool));
          return tune ? { iotune: tune } : {};
        })(),
      },
      ...(options.dataDisks ?? []).map((d) => dataDiskSpec(d, options.ioLimits?.(d.pool))),
      // The config drive: read-only, IDE (machine pc; cloud kernels lack AHCI).
      { device: "cdrom", target: "hdc", bus: "ide", path: paths.configDrive(record.instanceId), format: "raw", readonly: true },
    ],
    nics: record.nics.map((nic) => ({
      mac: nic.mac,
      source: { network: nic.network },
      // Anti-spoofing: the guest may send only from its own MAC and address.
      ...(nic.ipv4 ? { filter: { name: "clean-traffic", parameters: { IP: nic.ipv4 } } } : {}),
    })),
    consoleLogPath: paths.consoleLog(record.instanceId),
    guestAgent: true,
    vnc: true,
    smbios: {
      manufacturer: SMBIOS_MANUFACTURER,
      product: SMBIOS_PRODUCT,
      version: options.agentVersion,
      serial: record.uuid,
      family: "Virtual Machine",
    },
    metadata: JSON.stringify(record),
  };
}
