/**
 * ImportImage: the check phase (shared by DryRun and the real call) and the import that
 * runs in the background. It reads the format from the content (never the name), refuses
 * what the seed does not allow (see IMPORT_ERROR_CODES) and shows its progress in
 * DescribeImages (SyncPercent); a failure leaves the image IMPORTFAILED with an ErrorCode
 * and nothing else behind. An import whose disk shows the guest the same bytes as an
 * existing image's base (same content key, then `qemu-img compare`) shares that base.
 *
 * A file whose first bytes carry no other format's magic is most likely raw: its convert
 * (`-f raw`, which reads the file as it is and follows nothing) starts at once, beside
 * `qemu-img info` and the checks, instead of after them; it is kept only when info says
 * raw and every check passes, and stopped (its output removed) otherwise. qemu-img info
 * stays the judge of the format.
 */
import { createHash } from "node:crypto";
import { open, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { ImageInfo, ImageInspector, ImageTool } from "../../drivers/storage/types.js";
import { DomainError } from "../core/errors.js";
import { exists } from "../util/fs.js";
import { DISK_HEAD_BYTES, inspectDiskHead } from "./detect.js";
import { checkReadable, download as fetchFile, FetchError, hashFile } from "./fetch.js";
import { ImportFailure, type ImageRecord, type ImportImageRequest } from "./model.js";
import { parseImageUrl, type ImageSource } from "./source.js";

/** Formats qemu-img may report for an importable file; vpc is VHD. */
const IMPORTABLE_FORMATS = new Set(["qcow2", "raw", "vmdk", "vpc"]);

/** What the import needs of the catalog that keeps the records and the cache. */
export interface ImportStore {
  readonly dir: string;
  readonly partialDir: string;
  records(): Iterable<ImageRecord>;
  /** Refuses a name another image (not a failed one) has. */
  checkName(imageName: string): void;
  save(record: ImageRecord): Promise<void>;
  /** Serialises commits into the cache with the sweep. */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  markNormal(record: ImageRecord, fields: Partial<ImageRecord>): Promise<void>;
  noteBase(rel: string, bytes: number): void;
  syncBaseDir(): Promise<void>;
}

export class ImageImporter {
  constructor(
    private readonly o: {
      store: ImportStore;
      imageTool: ImageTool & ImageInspector;
      logger: Logger;
      maxImageBytes: number;
      downloadTimeoutMs: number;
      /** Fail points (crash tests): import:downloading, import:converting, import:committing. */
      checkpoint?: (point: string) => void;
    },
  ) {}

  /**
   * Every check ImportImage makes before it records anything: the name is free, the URL
   * is one the agent reads, a local file can be opened. DryRun stops right after it.
   */
  async check(request: Pick<ImportImageRequest, "ImageName" | "ImageUrl">): Promise<ImageSource> {
    this.o.store.checkName(request.ImageName);
    const source = parseImageUrl(request.ImageUrl);
    if (source.kind === "file") {
      await checkReadable(source.path).catch((error: unknown) => {
        const reason = (error as Error).cause instanceof Error ? ((error as Error).cause as Error).message : (error as Error).message;
        throw new DomainError("BadUrl", `ImageUrl ${request.ImageUrl} cannot be read: ${reason}`);
      });
    }
    return source;
  }

  /** Imports into the record, in the background: NORMAL or IMPORTFAILED at the end, never a thrown error. */
  async run(record: ImageRecord, source: ImageSource): Promise<void> {
    const { imageTool, logger, store } = this.o;
    const log = logger.child({ imageId: record.imageId });
    const partial = join(store.partialDir, `${record.imageId}.qcow2`);
    const download = join(store.partialDir, `${record.imageId}.download`);
    const scratch = join(store.partialDir, `${record.imageId}.head`);
    const started = performance.now();
    // The convert started before qemu-img info answered (see the top of this file).
    let speculative: { done: Promise<void>; abort: AbortController } | undefined;
    let convertCheckedIn = false;
    const convert = (path: string, format: string, signal?: AbortSignal) =>
      imageTool.convert({
        source: path,
        sourceFormat: format,
        target: partial,
        targetFormat: "qcow2",
        ...(signal ? { signal } : {}),
        onProgress: (p) => {
          record.progressPercent = source.kind === "http" ? 50 + p / 2 : p;
          if (!convertCheckedIn && p > 0 && p < 100) {
            convertCheckedIn = true;
            this.o.checkpoint?.("import:converting");
          }
        },
      });
    const dropSpeculative = async () => {
      if (!speculative) return;
      speculative.abort.abort();
      await speculative.done.catch(() => undefined);
      speculative = undefined;
      await rm(partial, { force: true });
    };
    try {
      let path: string;
      let sha256: Promise<string> | undefined;
      if (source.kind === "file") {
        path = source.path;
        const { bytes } = await checkReadable(path).catch((error: unknown) => {
          throw importFailureOf(error);
        });
        if (bytes > this.o.maxImageBytes) {
          throw new ImportFailure("InvalidFormatSize", `the file is ${bytes} bytes, over the limit of ${this.o.maxImageBytes} (max_image_bytes)`);
        }
      } else {
        // Hashed on the way in: a #sha256= mismatch fails before any conversion.
        let checkedIn = false;
        const { sha256: downloaded } = await fetchFile(source.href, download, {
          maxBytes: this.o.maxImageBytes,
          limitName: "max_image_bytes",
          timeoutMs: this.o.downloadTimeoutMs,
          onBytes: (received, length) => {
            if (length > 0) record.progressPercent = Math.min(50, (received / length) * 50);
            if (!checkedIn) {
              checkedIn = true;
              this.o.checkpoint?.("import:downloading");
            }
          },
        }).catch((error: unknown) => {
          throw importFailureOf(error);
        });
        this.verifyChecksum(source, downloaded);
        sha256 = Promise.resolve(downloaded);
        path = download;
      }
      if (await looksRaw(path)) {
        const abort = new AbortController();
        speculative = { done: convert(path, "raw", abort.signal), abort };
        speculative.done.catch(() => undefined); // awaited or dropped below
      }
      const info = await imageTool.info(path).catch((error: Error) => {
        throw new ImportFailure("InvalidFormatSize", `the file is not a readable disk image: ${error.message}`);
      });
      const format = info.format === "vpc" ? "vhd" : info.format;
      if (!IMPORTABLE_FORMATS.has(info.format)) {
        throw new ImportFailure("InvalidFormatSize", `the file's content is in format ${format}; importable formats are qcow2, raw, vmdk and vhd`);
      }
      if (info.backingFile !== undefined) {
        throw new ImportFailure("InvalidFormatSize", `the ${format} image has a backing file (${info.backingFile}); only standalone images are imported`);
      }
      if (!Number.isSafeInteger(info.virtualSizeBytes) || info.virtualSizeBytes <= 0) {
        throw new ImportFailure("InvalidFormatSize", `the image's virtual size (${info.virtualSizeBytes}) is not a representable positive number of bytes`);
      }
      if (info.virtualSizeBytes > this.o.maxImageBytes) {
        throw new ImportFailure(
          "InvalidFormatSize",
          `the image's virtual size ${info.virtualSizeBytes} bytes exceeds the limit of ${this.o.maxImageBytes} (max_image_bytes)`,
        );
      }
      if (info.corrupt) throw new ImportFailure("InvalidFormatSize", `the ${format} image is marked corrupt`);
      const check = await imageTool.check(path, info.format);
      if (check.errors > 0) {
        throw new ImportFailure("InvalidFormatSize", `the ${format} image is damaged or truncated: ${check.message}`);
      }
      const head = await imageTool.readHead({ path, format: info.format, bytes: DISK_HEAD_BYTES, scratchFile: scratch });
      const finding = inspectDiskHead(head);
      if (!finding.acceptable) {
        throw new ImportFailure("PartitionNotPresent", `the disk holds ${finding.description}; an MBR or GPT partition table, or a bare ext3, ext4 or NTFS filesystem, is needed`);
      }
      // The checksum of a local file only when the URL asks for one: a full read, beside the convert.
      if (sha256 === undefined && source.sha256 !== undefined) sha256 = hashFile(path);
      sha256?.catch(() => undefined);

      // One copy of each image: a base with the same guest-visible first sectors and size
      // is a candidate, and qemu-img compare decides (no full hash in the usual case).
      const contentKey = contentKeyOf(head, info.virtualSizeBytes);
      let shared = await this.findSameContent(contentKey, { path, format: info.format });
      if (info.format !== "raw" || shared) await dropSpeculative();
      let converted: ImageInfo | undefined;
      for (;;) {
        if (!shared && !converted) {
          if (speculative) {
            const { done } = speculative;
            speculative = undefined;
            await done;
          } else {
            await convert(path, info.format);
          }
          // qemu-img convert -O qcow2 without -b makes a standalone qcow2 of the source's virtual size.
          const st = await stat(partial);
          converted = { format: "qcow2", virtualSizeBytes: info.virtualSizeBytes, actualSizeBytes: st.blocks * 512 };
        }
        if (sha256) this.verifyChecksum(source, await sha256);
        const committed = await store.exclusive(async () => {
          if (shared) {
            if (!(await exists(join(store.dir, shared.baseFile)))) return false; // swept meanwhile: convert after all
            record.baseFile = shared.baseFile;
          } else {
            const rel = `base/${contentKey.slice(0, 16)}-${record.imageId}.qcow2`;
            record.baseFile = rel; // named before the file appears: the sweep never takes it
            await rename(partial, join(store.dir, rel));
            await store.syncBaseDir();
            store.noteBase(rel, converted!.actualSizeBytes);
            this.o.checkpoint?.("import:committing");
          }
          const sizes = shared ? { virtualSizeBytes: shared.virtualSizeBytes, actualSizeBytes: shared.actualSizeBytes } : converted!;
          await store.markNormal(record, {
            sourceFormat: format,
            virtualSizeBytes: sizes.virtualSizeBytes,
            actualSizeBytes: sizes.actualSizeBytes,
            contentKey,
            ...(sha256 ? { contentSha256: await sha256 } : {}),
          });
          return true;
        });
        if (committed) break;
        shared = undefined;
      }
      log.info(
        { format, virtualSizeBytes: record.virtualSizeBytes, baseFile: record.baseFile, sharedBase: converted === undefined, ms: Math.round(performance.now() - started) },
        "image imported",
      );
    } catch (error) {
      const failure =
        error instanceof ImportFailure ? error : new ImportFailure("InternalError", `the import failed: ${(error as Error).message}`);
      // Work files go before the failure is visible: a client that sees IMPORTFAILED sees nothing left.
      await dropSpeculative();
      await Promise.all([partial, download, scratch].map((f) => rm(f, { force: true })));
      record.state = "IMPORTFAILED";
      record.errorCode = failure.code;
      record.errorMessage = failure.message;
      delete record.baseFile;
      delete record.progressPercent;
      await store.save(record).catch(() => undefined);
      log.warn({ code: failure.code, err: error }, "image import failed");
    } finally {
      await dropSpeculative();
      await rm(partial, { force: true });
      await rm(download, { force: true });
      await rm(scratch, { force: true });
    }
  }

  /** A NORMAL image whose base shows the guest exactly the bytes of `source`, if any. */
  private async findSameContent(
    contentKey: string,
    source: { path: string; format: string },
  ): Promise<{ imageId: string; baseFile: string; virtualSizeBytes: number; actualSizeBytes: number } | undefined> {
    const tried = new Set<string>();
    for (const r of this.o.store.records()) {
      if (r.state !== "NORMAL" || r.contentKey !== contentKey || !r.baseFile || tried.has(r.baseFile)) continue;
      tried.add(r.baseFile);
      const base = join(this.o.store.dir, r.baseFile);
      const same = await this.o.imageTool.sameContent({ path: base, format: "qcow2" }, source).catch(() => false);
      if (same) return { imageId: r.imageId, baseFile: r.baseFile, virtualSizeBytes: r.virtualSizeBytes ?? 0, actualSizeBytes: r.actualSizeBytes ?? 0 };
    }
    return undefined;
  }

  private verifyChecksum(source: ImageSource, actual: string): void {
    if (source.sha256 !== undefined && source.sha256 !== actual) {
      throw new ImportFailure("InvalidUrl", `the file's SHA-256 is ${actual}, not ${source.sha256} as the URL's #sha256= says`);
    }
  }
}

/** The downloader's failure as the import's code: too large is InvalidFormatSize, anything else InvalidUrl. */
function importFailureOf(error: unknown): Error {
  if (error instanceof FetchError) return new ImportFailure(error.reason === "too-large" ? "InvalidFormatSize" : "InvalidUrl", error.message);
  return error as Error;
}

/** What finds base files that may hold the same disk: the guest-visible head and the size. */
function contentKeyOf(head: Buffer, virtualSizeBytes: number): string {
  return createHash("sha256").update(head).update(`:${virtualSizeBytes}`).digest("hex");
}

/**
 * True when the file's first bytes carry none of the magics qemu-img's format probes look
 * for (qcow, qcow2, VMDK, VHD, VHDX, VDI, QED, LUKS, Parallels, cloop, Bochs, DMG by
 * name): qemu-img will then most likely call it raw. Only a hint; info decides.
 */
export async function looksRaw(path: string): Promise<boolean> {
  if (/\.dmg$/i.test(path)) return false;
  let head: Buffer;
  try {
    const fh = await open(path, "r");
    try {
      const buf = Buffer.alloc(512);
      const { bytesRead } = await fh.read(buf, 0, 512, 0);
      head = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
  if (head.length < 512) return false;
  const text = head.toString("latin1", 0, 64);
  const magics = ["QFI\xfb", "KDMV", "COWD", "# Disk Descriptor", "conectix", "vhdxfile", "QED\0", "LUKS\xba\xbe", "WithoutFreeSpace", "WithouFreSpacExt", "#!", "Bochs Virtual HD Image", "<<< "];
  if (magics.some((m) => text.startsWith(m))) return false;
  if (head.readUInt32LE(0x40) === 0xbeda107f) return false; // VDI
  return true;
}
