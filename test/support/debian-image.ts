/**
 * The Debian 12 cloud guest image (systemd, cloud-init, openssh-server, qemu-guest-agent)
 * that tests boot when they need a real guest. Built and cached by
 * scripts/build-debian-image.sh; this helper runs the script (a no-op when the cache is
 * valid for the current script) and returns the paths and the parsed manifest.
 */
import { access, readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export interface DebianImageManifest {
  name: string;
  /** sha256 of scripts/build-debian-image.sh, the build's input. */
  inputsSha256: string;
  inputs: string[];
  suite: string;
  mirror: string;
  kernelPackage: string;
  kernelPackageVersion: string;
  kernelVersion: string;
  cloudInitVersion: string;
  rootfsUuid: string;
  rootfsLabel: string;
  kernelCmdline: string;
  diskBytes: number;
  partitionStartSector: number;
  packages: number;
  builtAt: string;
  buildSeconds: number;
  files: { name: string; size: number; sha256: string }[];
}

export interface DebianImage {
  /** Absolute directory holding the image files. */
  dir: string;
  /** Bootable raw disk (MBR, GRUB for BIOS, one ext4 partition), 2 GiB sparse. */
  raw: string;
  /** The same disk as qcow2: use it as the backing file of an overlay. */
  qcow2: string;
  manifestPath: string;
  manifest: DebianImageManifest;
}

export interface EnsureDebianImageOptions {
  /** Output directory; default: the script's `${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images`. */
  outDir?: string;
  /** Rebuild even when the cache is valid. */
  force?: boolean;
  /** Build timeout in milliseconds. Default 30 minutes (debootstrap and ~150 packages on a cold cache). */
  timeoutMs?: number;
  /** Pass the script's progress (stderr) through to this process's stderr. */
  verbose?: boolean;
}

const SCRIPT = fileURLToPath(new URL("../../scripts/build-debian-image.sh", import.meta.url));

export async function ensureDebianImage(options: EnsureDebianImageOptions = {}): Promise<DebianImage> {
  const args = [SCRIPT];
  if (options.outDir !== undefined) args.push("--out", resolve(options.outDir));
  if (options.force) args.push("--force");
  const result = await execa("bash", args, {
    timeout: options.timeoutMs ?? 1_800_000,
    stderr: options.verbose ? "inherit" : "pipe",
  });
  const dir = result.stdout.trim().split("\n").pop()?.trim() ?? "";
  if (!isAbsolute(dir)) {
    throw new Error(`build-debian-image.sh printed no output directory (stdout: ${JSON.stringify(result.stdout)})`);
  }
  const image = {
    dir,
    raw: join(dir, "debian12-cloud.raw"),
    qcow2: join(dir, "debian12-cloud.qcow2"),
    manifestPath: join(dir, "debian12-cloud.manifest.json"),
  };
  for (const path of [image.raw, image.qcow2, image.manifestPath]) await access(path);
  const manifest = JSON.parse(await readFile(image.manifestPath, "utf8")) as DebianImageManifest;
  return { ...image, manifest };
}
