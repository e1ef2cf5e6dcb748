/**
 * The rescue system (Debian cloud kernel + busybox/dropbear initramfs) that instances in
 * rescue mode boot by direct kernel boot. Built and cached by
 * scripts/build-rescue-image.sh; this helper runs the script (a no-op when the cache is
 * fresh) and returns the paths.
 */
import { access } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";

export interface RescueImage {
  /** Absolute directory holding the kernel, the initramfs and manifest.json. */
  dir: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

export interface EnsureRescueImageOptions {
  /** Output directory; default: the script's /var/lib/cdh-agent/rescue (the agent's default too). */
  outDir?: string;
  /** Rebuild even when the cache is fresh. */
  force?: boolean;
  /** Build timeout in milliseconds. Default 10 minutes (downloads a ~27 MB kernel package). */
  timeoutMs?: number;
}

const SCRIPT = fileURLToPath(new URL("../../scripts/build-rescue-image.sh", import.meta.url));

/**
 * The kernel command line the rescue system expects: consoles with ttyS0 last (the READY
 * and DATA lines go there), root's sha512-crypt hash, optionally a static address.
 */
export function rescueCmdline(options: { rootHash?: string; ip?: string; gateway?: string; dns?: string[] } = {}): string {
  const words = ["console=tty1", "console=ttyS0", "quiet"];
  if (options.rootHash !== undefined) {
    if (/\s|"/.test(options.rootHash)) throw new Error("a rescue hash cannot hold spaces or quotes");
    words.push(`cdh.rescue_hash=${options.rootHash}`);
  }
  if (options.ip) words.push(`cdh.ip=${options.ip}`);
  if (options.gateway) words.push(`cdh.gw=${options.gateway}`);
  if (options.dns?.length) words.push(`cdh.dns=${options.dns.join(",")}`);
  return words.join(" ");
}

export async function ensureRescueImage(options: EnsureRescueImageOptions = {}): Promise<RescueImage> {
  const args = [SCRIPT];
  if (options.outDir !== undefined) args.push("--out", resolve(options.outDir));
  if (options.force) args.push("--force");
  const result = await execa("bash", args, { timeout: options.timeoutMs ?? 600_000, stderr: "pipe" });
  const dir = result.stdout.trim().split("\n").pop()?.trim() ?? "";
  if (!isAbsolute(dir)) {
    throw new Error(`build-rescue-image.sh printed no output directory (stdout: ${JSON.stringify(result.stdout)})`);
  }
  const image: RescueImage = {
    dir,
    kernel: join(dir, "rescue-vmlinuz"),
    initrd: join(dir, "rescue-initrd.gz"),
    manifest: join(dir, "manifest.json"),
  };
  for (const path of [image.kernel, image.initrd, image.manifest]) await access(path);
  return image;
}
