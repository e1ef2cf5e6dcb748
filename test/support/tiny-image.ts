/**
 * The tiny guest images (Debian cloud kernel + busybox initramfs) that integration
 * tests and benchmarks boot. Built and cached by scripts/build-tiny-image.sh; this
 * helper runs the script (a no-op when the cache is fresh) and returns the paths.
 */
import { access } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export type TinyMode = "normal" | "noacpi" | "selfoff";

export const TINY_MODES: readonly TinyMode[] = ["normal", "noacpi", "selfoff"];

export interface TinyImages {
  /** Absolute directory holding the images and manifest.json. */
  dir: string;
  /** Bootable 64 MiB raw disks (MBR, FAT, syslinux), one per guest behaviour. */
  raw: Record<TinyMode, string>;
  /** tiny-normal.raw converted to qcow2. */
  qcow2Normal: string;
  /** The kernel and initramfs, for direct kernel boot (append `cdh.mode=…` yourself). */
  kernel: string;
  initrd: string;
  manifest: string;
}

export interface EnsureTinyImagesOptions {
  /** Output directory; default: the script's `${CDH_TEST_CACHE:-/var/cache/cdh-agent-test}/images`. */
  outDir?: string;
  /** Rebuild even when the cache is fresh. */
  force?: boolean;
  /** Build timeout in milliseconds. Default 10 minutes (downloads a ~27 MB kernel package). */
  timeoutMs?: number;
}

const SCRIPT = fileURLToPath(new URL("../../scripts/build-tiny-image.sh", import.meta.url));

export async function ensureTinyImages(options: EnsureTinyImagesOptions = {}): Promise<TinyImages> {
  const args = [SCRIPT];
  if (options.outDir !== undefined) args.push("--out", resolve(options.outDir));
  if (options.force) args.push("--force");
  const result = await execa("bash", args, { timeout: options.timeoutMs ?? 600_000, stderr: "pipe" });
  const dir = result.stdout.trim().split("\n").pop()?.trim() ?? "";
  if (!isAbsolute(dir)) {
    throw new Error(`build-tiny-image.sh printed no output directory (stdout: ${JSON.stringify(result.stdout)})`);
  }
  const images: TinyImages = {
    dir,
    raw: {
      normal: join(dir, "tiny-normal.raw"),
      noacpi: join(dir, "tiny-noacpi.raw"),
      selfoff: join(dir, "tiny-selfoff.raw"),
    },
    qcow2Normal: join(dir, "tiny-normal.qcow2"),
    kernel: join(dir, "tiny-vmlinuz"),
    initrd: join(dir, "tiny-initrd.gz"),
    manifest: join(dir, "manifest.json"),
  };
  for (const path of [...Object.values(images.raw), images.qcow2Normal, images.kernel, images.initrd, images.manifest]) {
    await access(path);
  }
  return images;
}
