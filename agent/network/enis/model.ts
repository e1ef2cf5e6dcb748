/**
 * Elastic network interfaces (reference/tencent-api-next.md §B) as the agent keeps them.
 *
 * An ENI's network part (MAC, subnet, addresses, groups) lives in exactly one place:
 * - attached: in its instance's record, as a NicRecord of `record.nics` (agent/model.ts), which
 *   everything that follows NICs reads (firewall, guest documents, DHCP, caps);
 * - unattached: in the ENI store (`<data dir>/enis.json`, store.ts), as `net`.
 * Attach moves it from the store into a record, detach back. Its name, description, tags and
 * times are in the store whether it is attached or not (a primary ENI made by RunInstances has
 * no store entry until it is renamed: its defaults come from the record).
 */
import { randomBytes } from "node:crypto";

export const ENI_ID = /^eni-[a-z0-9]{8}$/;

export interface EniTag {
  key: string;
  value: string;
}

/** The network part of an unattached ENI. */
export interface EniNet {
  mac: string;
  subnetId: string;
  vpcId: string;
  /** libvirt network of the subnet. */
  network: string;
  primaryIp: string;
  secondaryIps: string[];
  /** In priority order. */
  securityGroupIds: string[];
}

export interface StoredEni {
  eniId: string;
  name: string;
  description: string;
  /** "YYYY-MM-DD hh:mm:ss" (UTC). */
  createdTime: string;
  tags: EniTag[];
  /** When it was last attached, same format; absent while unattached. */
  attachTime?: string;
  /** Present while unattached. */
  net?: EniNet;
}

export interface EniStoreState {
  version: 1;
  enis: StoredEni[];
}

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

export function newEniId(taken: (id: string) => boolean): string {
  for (;;) {
    let out = "";
    for (const b of randomBytes(8)) out += ALPHABET[b % 36];
    const id = `eni-${out}`;
    if (!taken(id)) return id;
  }
}

/** "YYYY-MM-DD hh:mm:ss" in UTC (the VPC API's time format). */
export function eniTime(date: Date): string {
  return date.toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "");
}

/**
 * Limits per instance size, from the seeds' ENI quota table ("云主机配置 / 弹性网卡数 /
 * 网卡绑定IP数", reference/seeds-cdh-and-image-faq.md §6.8): how many NICs an instance may
 * have (the primary one included) and how many private addresses one NIC may hold (its
 * primary address included). Sizes between the table's rows take the next lower row
 * (3 vCPUs as 2; 5 to 7 as 4; 4 vCPUs with exactly 16 GiB as "4 cores, under 16 GiB").
 */
export interface NicLimits {
  nicsPerInstance: number;
  addressesPerNic: number;
}

export function nicLimitsOf(size: { cpu: number; memoryGiB: number }): NicLimits {
  const { cpu, memoryGiB } = size;
  if (cpu > 12) return { nicsPerInstance: 8, addressesPerNic: 30 };
  if (cpu >= 8) return { nicsPerInstance: 6, addressesPerNic: 20 };
  if (cpu >= 4) return memoryGiB > 16 ? { nicsPerInstance: 4, addressesPerNic: 20 } : { nicsPerInstance: 4, addressesPerNic: 10 };
  if (cpu >= 2) return { nicsPerInstance: 2, addressesPerNic: 10 };
  return memoryGiB > 1 ? { nicsPerInstance: 2, addressesPerNic: 6 } : { nicsPerInstance: 2, addressesPerNic: 2 };
}

/**
 * PCI room of a definition (machine type pc, i440fx): one root bus of 32 slots, all of them
 * hot-pluggable through ACPI, none behind a bridge. A definition the agent writes takes:
 * slot 0 (host bridge), 1 (PIIX3: IDE with the config drive and the ISO tray, USB, ISA with
 * the pvpanic device), 2 (the Cirrus VGA), one each for the virtio-serial controller (guest
 * agent), the balloon and the RNG; then one per virtio disk and one per NIC. A NIC attach is
 * refused (LimitExceeded) when no slot would be left for it, so it never needs a reboot.
 */
export const PCI_SLOTS = 32;
export const PCI_FIXED_SLOTS = 6;

export function pciSlotsFree(used: { virtioDisks: number; nics: number }): number {
  return PCI_SLOTS - PCI_FIXED_SLOTS - used.virtioDisks - used.nics;
}
