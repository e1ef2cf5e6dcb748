/**
 * Pure checks an image import runs on bytes: what the first sectors of a disk hold
 * (a partition table, a bare filesystem, nothing), and whether that is bootable
 * enough to import (reference/seeds-cvm-manual-1.md §8.1, seeds-cdh-and-image-faq.md
 * §5.6: Linux images are ext3/ext4 on MBR, Windows images NTFS on MBR).
 *
 * The agent accepts:
 * - an MBR partition table with at least one partition;
 * - a GPT (protective MBR + "EFI PART" header) with at least one partition. The seed
 *   says "GPT not supported" for Tencent's importer; the agent accepts GPT because a
 *   UEFI image (BootMode UEFI) needs an EFI system partition, which lives on GPT;
 * - a disk that is one bare ext3, ext4 or NTFS filesystem (no partition table).
 * Anything else (all zeros, ext2, XFS, Btrfs, FAT, ISO 9660, LUKS, LVM without a
 * partition table, unknown bytes) is refused with PartitionNotPresent, naming what was found.
 */

/** How many bytes of the disk the check reads (the Btrfs superblock sits at 64 KiB). */
export const DISK_HEAD_BYTES = 128 * 1024;

export interface DiskHeadFinding {
  /** True when the image may be imported. */
  acceptable: boolean;
  kind: "mbr" | "gpt" | "filesystem" | "none";
  /** Filesystem name for kind "filesystem" (ext2, ext3, ext4, xfs, btrfs, ntfs, vfat, iso9660, luks, lvm2). */
  filesystem?: string;
  /** Partitions in the table (kind mbr or gpt). */
  partitions?: number;
  /** What was found, for messages: "an MBR partition table with 1 partition (type 0x83)". */
  description: string;
}

const BARE_FILESYSTEMS_ALLOWED = new Set(["ext3", "ext4", "ntfs"]);

function ascii(buf: Buffer, offset: number, length: number): string {
  if (buf.length < offset + length) return "";
  return buf.toString("latin1", offset, offset + length);
}

/** A filesystem whose superblock the head shows, or undefined. */
export function detectFilesystem(head: Buffer): string | undefined {
  if (ascii(head, 3, 8) === "NTFS    ") return "ntfs";
  if (ascii(head, 0, 4) === "XFSB") return "xfs";
  if (ascii(head, 0, 6) === "LUKS\xba\xbe") return "luks";
  if (ascii(head, 512, 8) === "LABELONE") return "lvm2";
  if (ascii(head, 82, 8) === "FAT32   " || ascii(head, 54, 5) === "FAT12" || ascii(head, 54, 5) === "FAT16") return "vfat";
  if (head.length >= 1024 + 104 && head.readUInt16LE(1024 + 56) === 0xef53) {
    const compat = head.readUInt32LE(1024 + 92);
    const incompat = head.readUInt32LE(1024 + 96);
    // extents, 64bit or flex_bg make it ext4; a journal without them is ext3.
    if (incompat & (0x40 | 0x80 | 0x200)) return "ext4";
    if (compat & 0x4) return "ext3";
    return "ext2";
  }
  if (ascii(head, 0x10040, 8) === "_BHRfS_M") return "btrfs";
  if (ascii(head, 0x8001, 5) === "CD001") return "iso9660";
  return undefined;
}

interface MbrEntry {
  status: number;
  type: number;
  startLba: number;
  sectors: number;
}

function mbrEntries(head: Buffer): MbrEntry[] {
  const entries: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const o = 446 + 16 * i;
    entries.push({ status: head[o]!, type: head[o + 4]!, startLba: head.readUInt32LE(o + 8), sectors: head.readUInt32LE(o + 12) });
  }
  return entries;
}

/** Partitions of a GPT whose header is at LBA 1 and entries inside the head; undefined when no valid header. */
function gptPartitions(head: Buffer): number | undefined {
  if (ascii(head, 512, 8) !== "EFI PART") return undefined;
  const entriesLba = Number(head.readBigUInt64LE(512 + 72));
  const count = head.readUInt32LE(512 + 80);
  const size = head.readUInt32LE(512 + 84);
  if (size < 128 || size > 4096 || count === 0 || count > 100_000) return 0;
  let found = 0;
  for (let i = 0; i < count; i++) {
    const o = entriesLba * 512 + i * size;
    if (o + 16 > head.length) break;
    let used = false;
    for (let b = 0; b < 16; b++) if (head[o + b] !== 0) used = true;
    if (used) found++;
  }
  return found;
}

/** What the first sectors of a disk hold, and whether the agent imports it. */
export function inspectDiskHead(head: Buffer): DiskHeadFinding {
  if (head.length < 512) {
    return { acceptable: false, kind: "none", description: `the disk is only ${head.length} bytes long: no partition table or filesystem` };
  }
  const fs = detectFilesystem(head);
  // A volume boot record (NTFS, FAT) also ends in 55 AA: a filesystem signature wins.
  if (fs === "ntfs" || fs === "vfat" || fs === "xfs" || fs === "luks") return bareFilesystem(fs);
  if (head[510] === 0x55 && head[511] === 0xaa) {
    const entries = mbrEntries(head);
    const validStatus = entries.every((e) => e.status === 0x00 || e.status === 0x80);
    const used = entries.filter((e) => e.type !== 0 && e.sectors > 0);
    if (validStatus && used.some((e) => e.type === 0xee)) {
      const parts = gptPartitions(head);
      if (parts === undefined) {
        return { acceptable: false, kind: "none", description: "a protective MBR (type 0xee) without a GPT header at LBA 1" };
      }
      return {
        acceptable: parts > 0,
        kind: "gpt",
        partitions: parts,
        description: `a GPT partition table with ${parts} partition${parts === 1 ? "" : "s"}`,
      };
    }
    if (validStatus && used.length > 0) {
      const types = used.map((e) => `0x${e.type.toString(16).padStart(2, "0")}`).join(", ");
      return {
        acceptable: true,
        kind: "mbr",
        partitions: used.length,
        description: `an MBR partition table with ${used.length} partition${used.length === 1 ? "" : "s"} (type ${types})`,
      };
    }
    if (validStatus) return { acceptable: false, kind: "mbr", partitions: 0, description: "an MBR partition table with no partitions" };
  }
  if (fs !== undefined) return bareFilesystem(fs);
  if (head.every((b) => b === 0)) {
    return { acceptable: false, kind: "none", description: `the first ${Math.round(head.length / 1024)} KiB are all zeros: no partition table or filesystem` };
  }
  return { acceptable: false, kind: "none", description: "no partition table (MBR or GPT) and no filesystem signature" };
}

function bareFilesystem(fs: string): DiskHeadFinding {
  const acceptable = BARE_FILESYSTEMS_ALLOWED.has(fs);
  return {
    acceptable,
    kind: "filesystem",
    filesystem: fs,
    description: `a bare ${fs} filesystem without a partition table${acceptable ? "" : ` (only ext3, ext4 or NTFS may be imported without one)`}`,
  };
}
