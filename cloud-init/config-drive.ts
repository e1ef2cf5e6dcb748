/**
 * The config drive: the files it holds (pure) and the ISO 9660 image built from them.
 *
 * Layout (label `config-2`), as Nova writes it and cloud-init / cloudbase-init read it:
 *   openstack/latest/{meta_data.json,vendor_data.json,network_data.json,user_data}
 *   openstack/2018-08-27/…      the same files under the newest version cloud-init knows
 *   ec2/latest/meta-data.json, ec2/latest/user-data
 *   qcloud_action/os.conf      the Tencent file for images without cloud-init
 * NoCloud variant (label `cidata`): meta-data, user-data, vendor-data, network-config.
 *
 * The image is made by xorriso (as mkisofs: ISO 9660 + Joliet + Rock Ridge) with every
 * date fixed, so the same files always give the same bytes: a rebuilt drive differs
 * from the old one only when the documents do.
 */
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { CommandRunner } from "../drivers/exec/runner.js";
import type { GuestDocuments } from "./types.js";

export type ConfigDriveLabel = "config-2" | "cidata";

/** The dated OpenStack version written beside `latest` (Rocky, the newest cloud-init 22.4 knows). */
export const OPENSTACK_VERSION = "2018-08-27";

/**
 * The time written for the volume and every file: 2000-01-01T00:00:00Z. Fixed, so the
 * image depends on its content only.
 */
export const CONFIG_DRIVE_EPOCH_SECONDS = 946_684_800;

/** Relative path → content. Paths use "/" and never start with it. */
export type ConfigDriveFiles = ReadonlyMap<string, Buffer>;

/** The files of the config drive (`nocloud: true`: of the NoCloud `cidata` drive). */
export function configDriveFiles(docs: GuestDocuments, options: { nocloud?: boolean } = {}): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  if (options.nocloud) {
    files.set("meta-data", Buffer.from(docs.nocloud.metaData));
    files.set("user-data", Buffer.from(docs.nocloud.userData));
    if (docs.nocloud.vendorData !== undefined) files.set("vendor-data", Buffer.from(docs.nocloud.vendorData));
    files.set("network-config", Buffer.from(docs.nocloud.networkConfig));
    return files;
  }
  for (const version of ["latest", OPENSTACK_VERSION]) {
    const dir = `openstack/${version}`;
    files.set(`${dir}/meta_data.json`, json(docs.openstack.metaData));
    files.set(`${dir}/vendor_data.json`, json(docs.openstack.vendorData));
    files.set(`${dir}/network_data.json`, json(docs.openstack.networkData));
    if (docs.openstack.userData !== undefined) files.set(`${dir}/user_data`, Buffer.from(docs.openstack.userData));
  }
  files.set("ec2/latest/meta-data.json", json(docs.ec2.metaData));
  if (docs.ec2.userData !== undefined) files.set("ec2/latest/user-data", Buffer.from(docs.ec2.userData));
  files.set("qcloud_action/os.conf", Buffer.from(docs.tencentOsConf));
  return files;
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

export interface BuildConfigDriveOptions {
  /** Runs xorriso. It must see this process's file system (a LocalRunner). */
  runner: CommandRunner;
  files: ConfigDriveFiles;
  /** The image; replaced atomically, mode 0600 (it may hold a Windows password). */
  outPath: string;
  label: ConfigDriveLabel;
  /** Where the files are staged (removed afterwards). */
  tmpDir: string;
  signal?: AbortSignal;
  /** Default 60 000. */
  timeoutMs?: number;
}

export interface BuiltConfigDrive {
  path: string;
  sizeBytes: number;
  /** Hex SHA-256 of the image. */
  sha256: string;
}

/**
 * Builds the ISO image of `files` at `outPath`: staged under `tmpDir`, written by
 * xorriso into a 0600 temporary file beside `outPath`, synced, then renamed over it.
 * A failure leaves `outPath` as it was.
 */
export async function buildConfigDrive(options: BuildConfigDriveOptions): Promise<BuiltConfigDrive> {
  const { runner, files, outPath, label, tmpDir } = options;
  if (label !== "config-2" && label !== "cidata") throw new Error(`config drive label ${JSON.stringify(label)} is not config-2 or cidata`);
  for (const path of files.keys()) checkRelativePath(path);

  await mkdir(tmpDir, { recursive: true });
  const staging = await mkdtemp(join(tmpDir, "config-drive-"));
  const outDir = dirname(outPath);
  const tmpIso = join(outDir, `.${basename(outPath)}.${randomBytes(4).toString("hex")}.tmp`);
  let renamed = false;
  try {
    const root = join(staging, "root");
    // The files are staged at the same time (a launch waits for the drive), their
    // folders first; the output file beside them.
    const entries = [...files.entries()].map(([path, content]) => ({ target: join(root, ...path.split("/")), content }));
    const folders = [...new Set([root, ...entries.map((e) => dirname(e.target))])];
    await Promise.all([
      (async () => {
        await Promise.all(folders.map((f) => mkdir(f, { recursive: true, mode: 0o700 })));
        await Promise.all(entries.map((e) => writeFile(e.target, e.content, { mode: 0o600 })));
      })(),
      (async () => {
        // Created here with mode 0600 before xorriso writes into it: never world-readable.
        await mkdir(outDir, { recursive: true });
        await (await open(tmpIso, "wx", 0o600)).close();
      })(),
    ]);
    const stamp = xorrisoTimestamp(CONFIG_DRIVE_EPOCH_SECONDS);
    await runner.run(
      [
        "xorriso",
        "-as",
        "mkisofs",
        "-quiet",
        "-input-charset",
        "utf-8",
        "-o",
        tmpIso,
        "-V",
        label,
        // Joliet for Windows, Rock Ridge with owners and modes normalised (-r), and
        // Nova's relaxations so plain ISO 9660 readers see the names as written.
        "-J",
        "-r",
        "-l",
        "-allow-lowercase",
        "-allow-multidot",
        "--modification-date=" + stamp,
        "--set_all_file_dates",
        stamp,
        root,
      ],
      {
        env: { SOURCE_DATE_EPOCH: String(CONFIG_DRIVE_EPOCH_SECONDS) },
        timeoutMs: options.timeoutMs ?? 60_000,
        ...(options.signal ? { signal: options.signal } : {}),
      },
    );

    await chmod(tmpIso, 0o600);
    const image = await readFile(tmpIso);
    const fh = await open(tmpIso, "r+");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmpIso, outPath);
    renamed = true;
    const dir = await open(outDir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    return { path: outPath, sizeBytes: image.length, sha256: createHash("sha256").update(image).digest("hex") };
  } finally {
    if (!renamed) await rm(tmpIso, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

function checkRelativePath(path: string): void {
  const parts = path.split("/");
  if (path.startsWith("/") || parts.some((p) => p === "" || p === "." || p === ".." || !/^[A-Za-z0-9._-]+$/.test(p))) {
    throw new Error(`config drive path ${JSON.stringify(path)} is not a plain relative path`);
  }
}

/** xorriso's 16-digit form, YYYYMMDDhhmmsscc, in UTC. */
function xorrisoTimestamp(epochSeconds: number): string {
  const d = new Date(epochSeconds * 1000);
  const two = (n: number) => String(n).padStart(2, "0");
  return (
    String(d.getUTCFullYear()).padStart(4, "0") +
    two(d.getUTCMonth() + 1) +
    two(d.getUTCDate()) +
    two(d.getUTCHours()) +
    two(d.getUTCMinutes()) +
    two(d.getUTCSeconds()) +
    "00"
  );
}
