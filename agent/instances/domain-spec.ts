/** Instance record → libvirt domain spec. Pure. */
import type { DomainDiskSpec, DomainSpec, VirtType } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import { nicTapName } from "../network/firewall-types.js";
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

/** Hot-plug headroom of the host: every domain may grow live up to these (never below its own size). */
export interface HotplugHeadroom {
  maxVcpus: number;
  maxMemoryGiB: number;
  /** DIMM slots kept in each definition (each live memory growth takes one). */
  memorySlots: number;
}

/** The headroom written into an instance's definition, or undefined when the host keeps none. */
export function hotplugOf(record: Pick<InstanceRecord, "cpu" | "memoryGiB">, h: HotplugHeadroom | undefined): DomainSpec["hotplug"] {
  if (!h || (h.maxVcpus <= 0 && h.maxMemoryGiB <= 0)) return undefined;
  return {
    maxVcpus: Math.max(record.cpu, h.maxVcpus),
    maxMemoryMiB: Math.max(record.memoryGiB, h.maxMemoryGiB) * 1024,
    memorySlots: h.maxMemoryGiB > record.memoryGiB ? h.memorySlots : 0,
  };
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
  /** The rescue system (used while record.rescue is set) and the instance's network for it. */
  rescue?: { kernel: string; initrd: string; network?: { ip: string; prefixLength: number; gateway: string; dns: readonly string[] } };
  /** The host's hot-plug headroom (config hotplug_max_vcpus, hotplug_max_memory_gib); absent or zero: none. */
  hotplug?: HotplugHeadroom;
}): DomainSpec {
  const { record, paths } = options;
  const firmware = options.firmware ?? "bios";
  const hotplug = hotplugOf(record, options.hotplug);
  return {
    name: record.instanceId,
    uuid: record.uuid,
    virtType: options.virtType,
    vcpus: record.cpu,
    memoryMiB: record.memoryGiB * 1024,
    ...(hotplug ? { hotplug } : {}),
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
      // Empty for an image tagged cdh:config-drive=none (the device stays: the same definition shape).
      { device: "cdrom", target: "hdc", bus: "ide", ...(record.configDrive === "none" ? {} : { path: paths.configDrive(record.instanceId) }), format: "raw", readonly: true },
      // The ISO tray (InstanceAttachISO): always there, so an ISO can go in while the guest runs;
      // it boots after the system disk, so a disk without a boot loader falls through to it.
      { device: "cdrom", target: "hdd", bus: "ide", format: "raw", readonly: true, ...(record.iso ? { path: record.iso.path, bootOrder: 2 } : {}) },
    ],
    nics: record.nics.map((nic, index) => ({
      mac: nic.mac,
      source: { network: nic.network },
      // A fixed tap name: the firewall's chains for it (anti-spoofing, security groups) exist
      // before the guest starts (agent/network/firewall-compile.ts).
      targetDev: nicTapName(record.instanceId, nic, index),
    })),
    ...(record.rescue && options.rescue ? { directBoot: rescueBoot(record.rescue.passwordHash, options.rescue) } : {}),
    consoleLogPath: paths.consoleLog(record.instanceId),
    // A unix socket path holds at most 107 bytes: a data directory too deep for one keeps the pty.
    ...(Buffer.byteLength(paths.serialSocket(record.instanceId)) <= 107 ? { serialSocketPath: paths.serialSocket(record.instanceId) } : {}),
    guestAgent: true,
    // A data directory too deep for a socket path (107 bytes) gets no graphics console.
    vnc: Buffer.byteLength(paths.vncSocket(record.instanceId)) <= 107,
    ...(Buffer.byteLength(paths.vncSocket(record.instanceId)) <= 107 ? { vncSocketPath: paths.vncSocket(record.instanceId) } : {}),
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

/**
 * The rescue system's kernel command line (scripts/build-rescue-image.sh): consoles,
 * root's password as a crypt hash (no spaces in it), and the instance's address.
 */
export function rescueBoot(
  passwordHash: string,
  rescue: { kernel: string; initrd: string; network?: { ip: string; prefixLength: number; gateway: string; dns: readonly string[] } },
): { kernel: string; initrd: string; cmdline: string } {
  const words = ["console=tty1", "console=ttyS0", `cdh.rescue_hash=${passwordHash}`];
  const n = rescue.network;
  if (n) {
    words.push(`cdh.ip=${n.ip}/${n.prefixLength}`, `cdh.gw=${n.gateway}`);
    if (n.dns.length) words.push(`cdh.dns=${n.dns.join(",")}`);
  }
  return { kernel: rescue.kernel, initrd: rescue.initrd, cmdline: words.join(" ") };
}
