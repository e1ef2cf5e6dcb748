import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DISK_HEAD_BYTES, detectFilesystem, inspectDiskHead } from "../../../agent/images/detect.js";

const dir = mkdtempSync(join(tmpdir(), "detect-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A 32 MiB sparse disk file, made by real tools, and its first DISK_HEAD_BYTES. */
function disk(name: string, make: (path: string) => void): Buffer {
  const path = join(dir, name);
  writeFileSync(path, "");
  execFileSync("truncate", ["-s", "32M", path]);
  make(path);
  return readFileSync(path).subarray(0, DISK_HEAD_BYTES);
}

const sfdisk = (script: string) => (path: string) => execFileSync("sfdisk", ["-q", path], { input: script });
const mkfs = (type: string) => (path: string) => execFileSync(`mkfs.${type}`, ["-q", "-F", path], { stdio: "ignore" });

describe("inspectDiskHead", () => {
  it("accepts an MBR partition table and names its partitions' types", () => {
    const f = inspectDiskHead(disk("mbr", sfdisk("label: dos\n,16M,83,*\n,,c\n")));
    expect(f).toMatchObject({ acceptable: true, kind: "mbr", partitions: 2 });
    expect(f.description).toBe("an MBR partition table with 2 partitions (type 0x83, 0x0c)");
  });

  it("accepts a GPT behind its protective MBR, counting its partitions", () => {
    const f = inspectDiskHead(disk("gpt", sfdisk("label: gpt\n,8M,U\n,,L\n")));
    expect(f).toMatchObject({ acceptable: true, kind: "gpt", partitions: 2 });
  });

  it("refuses an MBR or GPT without partitions", () => {
    expect(inspectDiskHead(disk("mbr0", sfdisk("label: dos\n")))).toMatchObject({ acceptable: false });
    expect(inspectDiskHead(disk("gpt0", sfdisk("label: gpt\n")))).toMatchObject({ acceptable: false, kind: "gpt", partitions: 0 });
  });

  it("accepts bare ext3 and ext4, refuses bare ext2 and FAT, naming them", () => {
    expect(inspectDiskHead(disk("ext4", mkfs("ext4")))).toMatchObject({ acceptable: true, kind: "filesystem", filesystem: "ext4" });
    expect(inspectDiskHead(disk("ext3", mkfs("ext3")))).toMatchObject({ acceptable: true, filesystem: "ext3" });
    const ext2 = inspectDiskHead(disk("ext2", mkfs("ext2")));
    expect(ext2).toMatchObject({ acceptable: false, filesystem: "ext2" });
    expect(ext2.description).toContain("bare ext2 filesystem");
    // A FAT boot sector ends in 55 AA like an MBR: the filesystem signature must win.
    const fat = inspectDiskHead(disk("vfat", (p) => execFileSync("mkfs.vfat", [p], { stdio: "ignore" })));
    expect(fat).toMatchObject({ acceptable: false, kind: "filesystem", filesystem: "vfat" });
  });

  it("recognises an ISO 9660 image and refuses it", () => {
    const iso = join(dir, "cd.iso");
    execFileSync("genisoimage", ["-quiet", "-o", iso, "-V", "X", dir]);
    expect(detectFilesystem(readFileSync(iso))).toBe("iso9660");
    expect(inspectDiskHead(readFileSync(iso).subarray(0, DISK_HEAD_BYTES))).toMatchObject({ acceptable: false });
  });

  it("accepts a bare NTFS volume (boot sector signature) and refuses XFS, LUKS and Btrfs ones", () => {
    const ntfs = Buffer.alloc(DISK_HEAD_BYTES);
    ntfs.write("NTFS    ", 3, "latin1");
    ntfs[510] = 0x55;
    ntfs[511] = 0xaa;
    expect(inspectDiskHead(ntfs)).toMatchObject({ acceptable: true, filesystem: "ntfs" });
    const xfs = Buffer.alloc(DISK_HEAD_BYTES);
    xfs.write("XFSB", 0, "latin1");
    expect(inspectDiskHead(xfs)).toMatchObject({ acceptable: false, filesystem: "xfs" });
    const btrfs = Buffer.alloc(DISK_HEAD_BYTES);
    btrfs.write("_BHRfS_M", 0x10040, "latin1");
    expect(inspectDiskHead(btrfs)).toMatchObject({ acceptable: false, filesystem: "btrfs" });
    const luks = Buffer.from("LUKS\xba\xbe" + "\0".repeat(600), "latin1");
    expect(inspectDiskHead(luks)).toMatchObject({ acceptable: false, filesystem: "luks" });
  });

  it("refuses zeros, noise and a too-short disk, saying what it saw", () => {
    expect(inspectDiskHead(Buffer.alloc(DISK_HEAD_BYTES)).description).toContain("all zeros");
    const noise = Buffer.alloc(DISK_HEAD_BYTES);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919 + 13) % 251;
    expect(inspectDiskHead(noise)).toMatchObject({ acceptable: false, kind: "none" });
    expect(inspectDiskHead(Buffer.alloc(100)).description).toContain("100 bytes");
  });
});
