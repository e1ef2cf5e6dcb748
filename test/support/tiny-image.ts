/**
 * The tiny guest images (Debian cloud kernel + busybox initramfs) that integration
 * tests and benchmarks boot. Built and cached by scripts/build-tiny-image.sh; this
 * helper runs the script (a no-op when the cache is fresh) and returns the paths.
 */
import { access, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { markerText } from "./serial.js";

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

// --- markers in disk images, written and read with QEMU's own tools ------------------

export type DiskFormat = "raw" | "qcow2";

export interface DiskMarkerOptions {
  /** Image format; default: what `qemu-img info` detects. */
  format?: DiskFormat;
}

async function detectFormat(path: string, format?: DiskFormat): Promise<DiskFormat> {
  if (format) return format;
  const { stdout } = await execa("qemu-img", ["info", "--force-share", "--output=json", path], { timeout: 30_000 });
  const detected = (JSON.parse(stdout) as { format?: string }).format;
  if (detected !== "raw" && detected !== "qcow2") throw new Error(`${path}: unsupported image format ${detected}`);
  return detected;
}

/**
 * Writes `marker` followed by a NUL at byte 0 of a raw or qcow2 image with
 * `qemu-io -c "write -s FILE 0 LEN"`, so that the tiny guest's CDH-TINY-DATA line and
 * the rescue system's CDH-RESCUE-DATA line show it (they print up to the first NUL or
 * newline, at most 64 bytes). The image must not be open in a running guest (QEMU's
 * image locking refuses the write).
 */
export async function writeDiskMarker(path: string, marker: string | Buffer, options: DiskMarkerOptions = {}): Promise<void> {
  const bytes = Buffer.concat([Buffer.isBuffer(marker) ? marker : Buffer.from(marker, "utf8"), Buffer.alloc(1)]);
  if (bytes.length > 65) throw new Error(`a disk marker is at most 64 bytes (got ${bytes.length - 1})`);
  const format = await detectFormat(path, options.format);
  const dir = await mkdtemp(join(tmpdir(), "cdh-marker-"));
  try {
    const src = join(dir, "marker");
    await writeFile(src, bytes);
    await execa("qemu-io", ["-f", format, "-c", `write -q -s ${src} 0 ${bytes.length}`, path], { timeout: 30_000 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The first `length` (default 64) bytes of a raw or qcow2 image, read with `qemu-img dd`. */
export async function readDiskHead(path: string, options: DiskMarkerOptions & { length?: number } = {}): Promise<Buffer> {
  const length = options.length ?? 64;
  const format = await detectFormat(path, options.format);
  const dir = await mkdtemp(join(tmpdir(), "cdh-marker-"));
  try {
    const out = join(dir, "head");
    await execa("qemu-img", ["dd", "-f", format, "-O", "raw", `bs=${length}`, "count=1", `if=${path}`, `of=${out}`], {
      timeout: 30_000,
    });
    return (await readFile(out)).subarray(0, length);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The marker text at the start of an image, by the guests' rule (up to NUL or newline, at most 64 bytes). */
export async function readDiskMarker(path: string, options: DiskMarkerOptions = {}): Promise<string> {
  return markerText(await readDiskHead(path, { ...options, length: 64 }));
}
