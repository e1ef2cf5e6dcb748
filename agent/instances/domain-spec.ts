/** Instance record → libvirt domain spec. Pure. */
import type { DomainSpec, VirtType } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import type { DataPaths } from "../paths.js";

export const SMBIOS_MANUFACTURER = "cdh-agent";
/**
 * cloud-init's ds-identify recognises the OpenStack datasource by this DMI product
 * name, so guests find the metadata service even when an image ignores the drive.
 */
export const SMBIOS_PRODUCT = "OpenStack Compute";

export function buildDomainSpec(options: {
  record: InstanceRecord;
  virtType: VirtType;
  paths: DataPaths;
  agentVersion: string;
  firmware?: "bios" | "uefi";
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
        serial: record.instanceId,
        bootOrder: 1,
      },
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
