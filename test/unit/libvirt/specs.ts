import type { DomainSpec } from "../../../drivers/libvirt/types.js";

/** A bios + kvm domain with two disks, a config-drive CD-ROM and an anti-spoofing filtered NIC. */
export const biosKvmSpec: DomainSpec = {
  name: "ins-7k2m9xqa",
  uuid: "6f1c2a9e-3b4d-4c5e-8f70-112233445566",
  virtType: "kvm",
  vcpus: 4,
  memoryMiB: 8192,
  firmware: "bios",
  disks: [
    {
      device: "disk",
      target: "vda",
      bus: "virtio",
      path: "/var/lib/cdh-agent/instances/ins-7k2m9xqa/root.qcow2",
      format: "qcow2",
      serial: "disk-rt7k2m9x",
      bootOrder: 1,
    },
    {
      device: "disk",
      target: "vdb",
      bus: "virtio",
      path: "/var/lib/cdh-agent/instances/ins-7k2m9xqa/data-1.raw",
      format: "raw",
      serial: "disk-da4p8wz1",
    },
    {
      device: "cdrom",
      target: "sda",
      bus: "sata",
      path: "/var/lib/cdh-agent/instances/ins-7k2m9xqa/config-drive.iso",
      format: "raw",
      readonly: true,
    },
  ],
  nics: [
    {
      mac: "52:54:00:3a:7f:01",
      source: { bridge: "cdhbr0" },
      targetDev: "cdh7k2m9xqa0",
    },
  ],
  consoleLogPath: "/var/lib/cdh-agent/instances/ins-7k2m9xqa/console.log",
  serialSocketPath: "/var/lib/cdh-agent/instances/ins-7k2m9xqa/serial.sock",
  guestAgent: true,
  vnc: true,
  vncSocketPath: "/var/lib/cdh-agent/vnc/ins-7k2m9xqa.sock",
  smbios: {
    manufacturer: "Tencent Cloud",
    product: "CVM",
    version: "cdh-agent 0.1.0",
    serial: "ds=nocloud;i=ins-7k2m9xqa",
    family: "CDH & <sub-instance>",
  },
  metadata: JSON.stringify({ instanceId: "ins-7k2m9xqa", note: "quotes \" & <angles> survive", tags: ["a", "b"] }),
};

/** A uefi + qemu (TCG) domain with nothing optional. */
export const uefiQemuSpec: DomainSpec = {
  name: "ins-m1n1m4l0",
  uuid: "0a0b0c0d-1e1f-4a2b-9c3d-4e5f60718293",
  virtType: "qemu",
  vcpus: 1,
  memoryMiB: 512,
  firmware: "uefi",
  nvramPath: "/var/lib/cdh-agent/instances/ins-m1n1m4l0/nvram.fd",
  disks: [],
  nics: [],
  consoleLogPath: "/var/lib/cdh-agent/instances/ins-m1n1m4l0/console.log",
  guestAgent: false,
  vnc: false,
  smbios: { manufacturer: "Tencent Cloud", product: "CVM", version: "1", serial: "ins-m1n1m4l0", family: "CDH" },
  metadata: "{}",
};
