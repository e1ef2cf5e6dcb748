/**
 * The image cache: ImportImage, DescribeImages, DeleteImages, and the entry points for
 * images made from instances (beginImage / completeImage / failImage).
 *
 * Layout under `<data_dir>/images`:
 * - `img-xxxxxxxx.json`        one record per image;
 * - `base/<key>-<id>.qcow2`    base files of imported images (key: the first 16 hex digits
 *                              of the content key, see contentKeyOf). An import whose disk
 *                              shows the guest the same bytes as an existing image's base
 *                              (same content key, then `qemu-img compare`) shares that base:
 *                              the same disk imported twice, in any format, is one file;
 * - `base/created-<id>.qcow2`  base files of images made from instances;
 * - `img-xxxxxxxx.qcow2`       base files of images imported before the base/ layout;
 * - `partial/`                 work files of running imports (emptied at start-up).
 * System disks are qcow2 overlays backing onto a base file. DeleteImages is refused
 * while an instance uses the image; otherwise it removes the record at once, and the
 * base file goes only when no record names it and no disk's backing chain contains it
 * (a snapshot, or another image sharing the base), at the scheduled sweep
 * (`image_cache_sweep_schedule`), never by age.
 *
 * An import runs in the background: it reads the format from the content (never the
 * name), refuses what the seed does not allow (see IMPORT_ERROR_CODES) and shows its
 * progress in DescribeImages (SyncPercent); a failure leaves the image IMPORTFAILED
 * with an ErrorCode and nothing else behind.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, mkdir, open, readdir, readFile, realpath, rename, rm, stat } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createTask, type ScheduledTask } from "node-cron";
import type { Logger } from "pino";
import { ImageNotFoundError } from "../drivers/storage/qemu-img.js";
import type { ImageInfo, ImageInspector, ImageTool } from "../drivers/storage/types.js";
import { configDriveOf, parseImageSource, type ConfigDriveFormat, type ImageSource, type ImageTag } from "./api/schemas-images.js";
import { ApiError } from "./errors.js";
import { DISK_HEAD_BYTES, inspectDiskHead } from "./images/detect.js";
import { decideSweep } from "./images/sweep.js";
import { isoSeconds, newId } from "./model.js";
import type { DataPaths } from "./paths.js";
import { writeFileAtomic } from "./util/atomic-file.js";

export type ImageState = "IMPORTING" | "NORMAL" | "IMPORTFAILED" | "CREATING" | "CREATEFAILED";
export type ImageOrigin = "IMPORT" | "CREATE_IMAGE";

/**
 * Why an import failed, shown in DescribeImages as ErrorCode: the import error codes of
 * the seed (reference/seeds-cvm-manual-1.md §8.1, "Error codes").
 */
export const IMPORT_ERROR_CODES = Object.freeze({
  InvalidUrl: "The file at ImageUrl cannot be read, or its SHA-256 differs from the #sha256= the URL names.",
  InvalidFormatSize:
    "The file is not a qcow2, raw, vmdk or vhd image; it is damaged or truncated; it has a backing file; or its size is over max_image_bytes or cannot be represented.",
  PartitionNotPresent: "The disk holds no MBR or GPT partition table and is not a bare ext3, ext4 or NTFS filesystem.",
  InternalError: "The host failed during the import (e.g. the agent stopped, the disk is full).",
} as const);
export type ImportErrorCode = keyof typeof IMPORT_ERROR_CODES;

export interface ImageRecord {
  version: 1 | 2;
  imageId: string;
  imageName: string;
  imageDescription: string;
  osType: string;
  osVersion: string;
  architecture: string;
  bootMode: "Legacy BIOS" | "UEFI";
  state: ImageState;
  createdTime: string;
  sourceUrl: string;
  /** IMPORT when absent (records made before CreateImage existed). */
  origin?: ImageOrigin;
  sourceFormat?: string;
  virtualSizeBytes?: number;
  actualSizeBytes?: number;
  /** The base file, relative to the images directory (absent until the image is NORMAL). */
  baseFile?: string;
  /** SHA-256 of the imported file's bytes (only when the URL named one to check). */
  contentSha256?: string;
  /** SHA-256 of the first 128 KiB the guest sees and the virtual size: finds candidates for sharing a base. */
  contentKey?: string;
  /** Progress of a running import, 0–100. */
  progressPercent?: number;
  errorCode?: ImportErrorCode;
  errorMessage?: string;
  /** ImportImage's TagSpecification tags (image properties such as cdh:config-drive). */
  tags?: ImageTag[];
}

export interface UsableImage {
  imageId: string;
  /** The base file overlays back onto. */
  path: string;
  virtualSizeBytes: number;
  osName: string;
  bootMode: "Legacy BIOS" | "UEFI";
  /** The config drive the image's tags ask for. */
  configDrive: ConfigDriveFormat;
}

/** Formats qemu-img may report for an importable file; vpc is VHD. */
const IMPORTABLE_FORMATS = new Set(["qcow2", "raw", "vmdk", "vpc"]);
const GiB = 1024 ** 3;
/** A base handed out to a new system disk is kept this long even before its overlay exists. */
const HANDOUT_GRACE_MS = 30_000;

export interface ImportImageRequest {
  /** file:///path or http(s)://…, optionally with #sha256=<64 hex digits>. */
  ImageUrl: string;
  ImageName: string;
  ImageDescription?: string;
  OsType: string;
  OsVersion: string;
  Architecture: string;
  BootMode?: "Legacy BIOS" | "UEFI";
  Tags?: ImageTag[];
}

/** What an image made from an instance is (beginImage). */
export interface NewImageMeta {
  imageName: string;
  imageDescription?: string;
  osType: string;
  osVersion: string;
  architecture: string;
  bootMode: "Legacy BIOS" | "UEFI";
  source: "CREATE_IMAGE";
  tags?: ImageTag[];
}

/** An import refused for a reason the seed names. */
export class ImportFailure extends Error {
  override name = "ImportFailure";
  constructor(
    readonly code: ImportErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ImageCatalogOptions {
  paths: DataPaths;
  imageTool: ImageTool & ImageInspector;
  logger: Logger;
  maxImageBytes: number;
  downloadTimeoutMs: number;
  /** IDs of instances made from the image (their record names it): DeleteImages refuses it while there are any. */
  usersOf?: (imageId: string) => string[];
  /** Absolute paths of every instance disk, data disk and snapshot file: their backing chains keep bases alive. */
  diskFiles?: () => Promise<string[]>;
  /** node-cron schedule of the sweep of unreferenced base files; absent = no schedule (sweep() by hand). */
  sweepSchedule?: string;
  /** Fail points (crash tests): import:downloading, import:converting, import:committing. */
  checkpoint?: (point: string) => void;
}

export class ImageCatalog {
  private readonly images = new Map<string, ImageRecord>();
  /** Bytes each base file takes on disk, by path relative to the images directory. */
  private readonly baseBytes = new Map<string, number>();
  /** Base files handed out by requireUsable (absolute path → time). */
  private readonly handedOut = new Map<string, number>();
  /** Serialises commits into base/ with the sweep. */
  private exclusiveTail: Promise<unknown> = Promise.resolve();
  private sweepTask: ScheduledTask | undefined;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly options: ImageCatalogOptions) {}

  private get dir(): string {
    return this.options.paths.imagesDir;
  }
  private get baseDir(): string {
    return join(this.dir, "base");
  }
  private get partialDir(): string {
    return join(this.dir, "partial");
  }

  /**
   * Loads the records. An import or image creation the agent was doing when it stopped
   * is marked failed (IMPORTFAILED, CREATEFAILED) and its partial files removed.
   */
  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o711 });
    await mkdir(this.baseDir, { recursive: true, mode: 0o711 });
    await rm(this.partialDir, { recursive: true, force: true });
    await mkdir(this.partialDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      const full = join(this.dir, name);
      if (name.endsWith(".part") || name.endsWith(".download")) {
        await rm(full, { force: true });
        continue;
      }
      if (!/^img-[a-z0-9]{8}\.json$/.test(name)) continue;
      const record = JSON.parse(await readFile(full, "utf8")) as ImageRecord;
      if (record.state === "IMPORTING" || record.state === "CREATING") {
        record.state = record.state === "IMPORTING" ? "IMPORTFAILED" : "CREATEFAILED";
        record.errorCode = "InternalError";
        record.errorMessage = "the agent stopped while the image was being made; partial files were removed";
        delete record.progressPercent;
        delete record.baseFile;
        await this.save(record);
      }
      if (record.state === "NORMAL" && record.baseFile === undefined) record.baseFile = `${record.imageId}.qcow2`; // before base/
      if (record.state === "NORMAL" && !(await exists(join(this.dir, record.baseFile!)))) {
        // Never hand out a base that is not there (a disk replaced, files removed by hand).
        record.state = record.origin === "CREATE_IMAGE" ? "CREATEFAILED" : "IMPORTFAILED";
        record.errorCode = "InternalError";
        record.errorMessage = `the base file ${record.baseFile} is missing`;
        delete record.baseFile;
        await this.save(record);
      }
      this.images.set(record.imageId, record);
    }
    for (const rel of await this.listBases()) {
      const st = await stat(join(this.dir, rel)).catch(() => undefined);
      if (st) this.baseBytes.set(rel, st.blocks * 512);
    }
  }

  /** Starts the scheduled sweep and runs one sweep now, in the background. */
  start(): void {
    const run = () =>
      this.sweep().then(
        () => undefined,
        (error: unknown) => this.options.logger.warn({ err: error }, "image cache sweep failed"),
      );
    if (this.options.sweepSchedule) {
      this.sweepTask = createTask(this.options.sweepSchedule, run, { name: "cdh-agent-image-sweep", noOverlap: true });
      void this.sweepTask.start();
    }
    void run();
  }

  /** Stops the schedule (imports in flight go on until the process ends). */
  async stop(): Promise<void> {
    const task = this.sweepTask;
    this.sweepTask = undefined;
    await task?.destroy();
  }

  list(): ImageRecord[] {
    return [...this.images.values()].sort((a, b) => a.createdTime.localeCompare(b.createdTime) || a.imageId.localeCompare(b.imageId));
  }

  get(imageId: string): ImageRecord | undefined {
    return this.images.get(imageId);
  }

  /** The image for a new system disk, or the CVM error that says why it cannot be used. */
  requireUsable(imageId: string): UsableImage {
    const record = this.images.get(imageId);
    if (!record) throw new ApiError("InvalidImageId.NotFound", `image ${imageId} does not exist on this host`);
    if (record.state !== "NORMAL" || record.virtualSizeBytes === undefined || record.baseFile === undefined) {
      throw new ApiError("InvalidImageId.IncorrectState", `image ${imageId} is ${record.state}, not NORMAL`);
    }
    const path = join(this.dir, record.baseFile);
    this.handedOut.set(path, Date.now());
    return {
      imageId,
      path,
      virtualSizeBytes: record.virtualSizeBytes,
      osName: `${record.osType} ${record.osVersion}`.trim(),
      bootMode: record.bootMode,
      configDrive: configDriveOf(record.tags),
    };
  }

  private checkName(imageName: string): void {
    const duplicate = [...this.images.values()].find(
      (i) => i.imageName === imageName && i.state !== "IMPORTFAILED" && i.state !== "CREATEFAILED",
    );
    if (duplicate) throw new ApiError("InvalidImageName.Duplicate", `ImageName ${imageName} is already used by ${duplicate.imageId}`);
  }

  private newImageId(): string {
    let imageId = newId("img");
    while (this.images.has(imageId)) imageId = newId("img");
    return imageId;
  }

  /** Validates and records the import, then imports in the background. Returns the new image ID. */
  async startImport(request: ImportImageRequest): Promise<string> {
    this.checkName(request.ImageName);
    const source = parseImageUrl(request.ImageUrl);
    if (source.kind === "file") {
      try {
        const st = await stat(source.path);
        if (!st.isFile()) throw new Error("not a regular file");
        const fh = await open(source.path, "r");
        await fh.close();
      } catch (error) {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${request.ImageUrl} cannot be read: ${(error as Error).message}`);
      }
    }
    const imageId = this.newImageId();
    const record: ImageRecord = {
      version: 2,
      imageId,
      imageName: request.ImageName,
      imageDescription: request.ImageDescription ?? "",
      osType: request.OsType,
      osVersion: request.OsVersion,
      architecture: request.Architecture,
      bootMode: request.BootMode ?? "Legacy BIOS",
      state: "IMPORTING",
      createdTime: isoSeconds(new Date()),
      sourceUrl: request.ImageUrl,
      origin: "IMPORT",
      progressPercent: 0,
      ...(request.Tags?.length ? { tags: request.Tags } : {}),
    };
    await this.save(record);
    this.images.set(imageId, record);
    this.track(this.runImport(record, source));
    return imageId;
  }

  private track(work: Promise<void>): void {
    this.running.add(work);
    void work.finally(() => this.running.delete(work));
  }

  /** Resolves when the image is no longer IMPORTING or CREATING (tests, shutdown). */
  async whenSettled(imageId: string, timeoutMs = 600_000): Promise<ImageRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = this.images.get(imageId);
      if (!record || (record.state !== "IMPORTING" && record.state !== "CREATING") || Date.now() > deadline) return record!;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async runImport(record: ImageRecord, source: ImageSource): Promise<void> {
    const { imageTool, logger } = this.options;
    const log = logger.child({ imageId: record.imageId });
    const partial = join(this.partialDir, `${record.imageId}.qcow2`);
    const download = join(this.partialDir, `${record.imageId}.download`);
    const scratch = join(this.partialDir, `${record.imageId}.head`);
    const started = performance.now();
    try {
      let path: string;
      let sha256: Promise<string> | undefined;
      if (source.kind === "file") {
        path = source.path;
        const st = await stat(path).catch((error: Error) => {
          throw new ImportFailure("InvalidUrl", `${path} cannot be read: ${error.message}`);
        });
        if (st.size > this.options.maxImageBytes) {
          throw new ImportFailure("InvalidFormatSize", `the file is ${st.size} bytes, over the limit of ${this.options.maxImageBytes} (max_image_bytes)`);
        }
      } else {
        // Hashed on the way in: a #sha256= mismatch fails before any conversion.
        const downloaded = await this.download(source.href, download, record);
        this.verifyChecksum(source, downloaded);
        sha256 = Promise.resolve(downloaded);
        path = download;
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
      if (info.virtualSizeBytes > this.options.maxImageBytes) {
        throw new ImportFailure(
          "InvalidFormatSize",
          `the image's virtual size ${info.virtualSizeBytes} bytes exceeds the limit of ${this.options.maxImageBytes} (max_image_bytes)`,
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
      let converted: ImageInfo | undefined;
      for (;;) {
        if (!shared && !converted) {
          let checkedIn = false;
          await imageTool.convert({
            source: path,
            sourceFormat: info.format,
            target: partial,
            targetFormat: "qcow2",
            onProgress: (p) => {
              record.progressPercent = source.kind === "http" ? 50 + p / 2 : p;
              if (!checkedIn && p > 0 && p < 100) {
                checkedIn = true;
                this.options.checkpoint?.("import:converting");
              }
            },
          });
          // qemu-img convert -O qcow2 without -b makes a standalone qcow2 of the source's virtual size.
          const st = await stat(partial);
          converted = { format: "qcow2", virtualSizeBytes: info.virtualSizeBytes, actualSizeBytes: st.blocks * 512 };
        }
        if (sha256) this.verifyChecksum(source, await sha256);
        const committed = await this.exclusive(async () => {
          if (shared) {
            if (!(await exists(join(this.dir, shared.baseFile)))) return false; // swept meanwhile: convert after all
            record.baseFile = shared.baseFile;
          } else {
            const rel = `base/${contentKey.slice(0, 16)}-${record.imageId}.qcow2`;
            record.baseFile = rel; // named before the file appears: the sweep never takes it
            await rename(partial, join(this.dir, rel));
            await syncDir(this.baseDir);
            this.baseBytes.set(rel, converted!.actualSizeBytes);
            this.options.checkpoint?.("import:committing");
          }
          const sizes = shared ? { virtualSizeBytes: shared.virtualSizeBytes, actualSizeBytes: shared.actualSizeBytes } : converted!;
          await this.markNormal(record, {
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
      await Promise.all([partial, download, scratch].map((f) => rm(f, { force: true })));
      record.state = "IMPORTFAILED";
      record.errorCode = failure.code;
      record.errorMessage = failure.message;
      delete record.baseFile;
      delete record.progressPercent;
      await this.save(record).catch(() => undefined);
      log.warn({ code: failure.code, err: error }, "image import failed");
    } finally {
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
    for (const r of this.images.values()) {
      if (r.state !== "NORMAL" || r.contentKey !== contentKey || !r.baseFile || tried.has(r.baseFile)) continue;
      tried.add(r.baseFile);
      const base = join(this.dir, r.baseFile);
      const same = await this.options.imageTool.sameContent({ path: base, format: "qcow2" }, source).catch(() => false);
      if (same) return { imageId: r.imageId, baseFile: r.baseFile, virtualSizeBytes: r.virtualSizeBytes ?? 0, actualSizeBytes: r.actualSizeBytes ?? 0 };
    }
    return undefined;
  }

  private verifyChecksum(source: ImageSource, actual: string): void {
    if (source.sha256 !== undefined && source.sha256 !== actual) {
      throw new ImportFailure("InvalidUrl", `the file's SHA-256 is ${actual}, not ${source.sha256} as the URL's #sha256= says`);
    }
  }

  /** Downloads into `target`, hashing on the way; returns the SHA-256. */
  private async download(href: string, target: string, record: ImageRecord): Promise<string> {
    let response: Response;
    try {
      response = await fetch(href, { signal: AbortSignal.timeout(this.options.downloadTimeoutMs) });
    } catch (error) {
      throw new ImportFailure("InvalidUrl", `download of ${href} failed: ${(error as Error).message}`);
    }
    if (!response.ok || !response.body) throw new ImportFailure("InvalidUrl", `download of ${href} answered HTTP ${response.status}`);
    const limit = this.options.maxImageBytes;
    const length = Number(response.headers.get("content-length") ?? "0");
    if (length > limit) throw new ImportFailure("InvalidFormatSize", `the download is ${length} bytes, over the limit of ${limit} (max_image_bytes)`);
    const hash = createHash("sha256");
    let received = 0;
    let checkedIn = false;
    const meter = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        received += chunk.length;
        if (received > limit) {
          done(new ImportFailure("InvalidFormatSize", `the download exceeds the limit of ${limit} bytes (max_image_bytes)`));
          return;
        }
        hash.update(chunk);
        if (length > 0) record.progressPercent = Math.min(50, (received / length) * 50);
        if (!checkedIn) {
          checkedIn = true;
          this.options.checkpoint?.("import:downloading");
        }
        done(null, chunk);
      },
    });
    try {
      const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
      await pipeline(body, meter, createWriteStream(target, { mode: 0o600 }));
    } catch (error) {
      if (error instanceof ImportFailure) throw error;
      throw new ImportFailure("InvalidUrl", `download of ${href} failed: ${(error as Error).message}`);
    }
    if (length > 0 && received !== length) {
      throw new ImportFailure("InvalidUrl", `download of ${href} ended after ${received} of ${length} bytes`);
    }
    return hash.digest("hex");
  }

  /**
   * An image made from an instance: a record in state CREATING (the name must be free).
   * Finish it with completeImage or failImage.
   */
  async beginImage(meta: NewImageMeta): Promise<string> {
    this.checkName(meta.imageName);
    const imageId = this.newImageId();
    const record: ImageRecord = {
      version: 2,
      imageId,
      imageName: meta.imageName,
      imageDescription: meta.imageDescription ?? "",
      osType: meta.osType,
      osVersion: meta.osVersion,
      architecture: meta.architecture,
      bootMode: meta.bootMode,
      state: "CREATING",
      createdTime: isoSeconds(new Date()),
      sourceUrl: "",
      origin: "CREATE_IMAGE",
      progressPercent: 0,
      ...(meta.tags?.length ? { tags: meta.tags } : {}),
    };
    await this.save(record);
    this.images.set(imageId, record);
    return imageId;
  }

  /**
   * Takes a finished standalone qcow2 (no backing file) from anywhere under the data
   * directory, moves it into the cache (rename, or copy then rename across filesystems)
   * and marks the image NORMAL. On failure the image becomes CREATEFAILED and the error
   * is thrown; the file is then left where it was (the caller removes it).
   */
  async completeImage(imageId: string, file: string): Promise<void> {
    const record = this.images.get(imageId);
    if (!record || record.state !== "CREATING") throw new Error(`image ${imageId} is not being created`);
    const rel = `base/created-${imageId}.qcow2`;
    const target = join(this.dir, rel);
    try {
      const root = await realpath(this.options.paths.root);
      const real = await realpath(file);
      if (!real.startsWith(root + sep)) throw new Error(`${file} is not under the data directory ${root}`);
      const info = await this.options.imageTool.info(real);
      if (info.format !== "qcow2") throw new Error(`${file} is ${info.format}, not qcow2`);
      if (info.backingFile !== undefined) throw new Error(`${file} has a backing file (${info.backingFile}); flatten it first`);
      const check = await this.options.imageTool.check(real, "qcow2");
      if (check.errors > 0) throw new Error(`${file} is damaged: ${check.message}`);
      await this.exclusive(async () => {
        record.baseFile = rel;
        try {
          await rename(real, target);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EXDEV") throw error;
          const staged = join(this.partialDir, `${imageId}.qcow2`);
          await copyFile(real, staged);
          await syncFile(staged);
          await rename(staged, target);
          await rm(real, { force: true });
        }
        await syncDir(this.baseDir);
        this.baseBytes.set(rel, info.actualSizeBytes);
        await this.markNormal(record, { sourceFormat: "qcow2", virtualSizeBytes: info.virtualSizeBytes, actualSizeBytes: info.actualSizeBytes });
      });
    } catch (error) {
      if (record.state === "CREATING") {
        delete record.baseFile;
        await this.failImage(imageId, (error as Error).message).catch(() => undefined);
      }
      throw error;
    }
  }

  /** NORMAL on disk first, then in memory: nobody sees NORMAL that a crash could take back. */
  private async markNormal(record: ImageRecord, fields: Partial<ImageRecord>): Promise<void> {
    const done: ImageRecord = { ...record, ...fields, state: "NORMAL" };
    await this.save(done);
    Object.assign(record, fields, { state: "NORMAL", progressPercent: 100 });
  }

  /** An image made from an instance could not be made: CREATEFAILED with the reason. */
  async failImage(imageId: string, message: string): Promise<void> {
    const record = this.images.get(imageId);
    if (!record || record.state !== "CREATING") return;
    record.state = "CREATEFAILED";
    record.errorCode = "InternalError";
    record.errorMessage = message;
    delete record.progressPercent;
    delete record.baseFile;
    await this.save(record);
  }

  /** Progress of an image being made from an instance, 0–100 (shown as SyncPercent). */
  setProgress(imageId: string, percent: number): void {
    const record = this.images.get(imageId);
    if (record && (record.state === "CREATING" || record.state === "IMPORTING")) record.progressPercent = Math.max(0, Math.min(100, percent));
  }

  /**
   * DeleteImages' checks: every image exists, is not being imported or made, and no
   * instance uses it (the API's "in use (USING)" rule: an instance made from the image,
   * or reinstalled with it, names it until it is terminated or reinstalled with another).
   */
  checkDelete(imageIds: string[]): void {
    // Unknown IDs first, whatever their place in the list.
    for (const id of imageIds) if (!this.images.has(id)) throw new ApiError("InvalidImageId.NotFound", `image ${id} does not exist on this host`);
    for (const id of imageIds) {
      const record = this.images.get(id)!;
      if (record.state === "IMPORTING" || record.state === "CREATING") {
        throw new ApiError("InvalidImageId.IncorrectState", `image ${id} is ${record.state}; wait until it is done`);
      }
      const users = this.options.usersOf?.(id) ?? [];
      if (users.length > 0) {
        const shown = users.slice(0, 5).join(", ") + (users.length > 5 ? ` and ${users.length - 5} more` : "");
        throw new ApiError("InvalidImageId.IncorrectState", `image ${id} is in use by ${shown}; terminate or reinstall them first`);
      }
    }
  }

  /**
   * DeleteImages: all or nothing, and only for images no instance uses (checkDelete).
   * The records go at once; base files nothing references any more (no record, no disk's
   * backing chain) go in a sweep started now in the background.
   */
  async delete(imageIds: string[]): Promise<void> {
    this.checkDelete(imageIds);
    for (const id of imageIds) {
      this.images.delete(id);
      await rm(this.options.paths.imageRecord(id), { force: true });
    }
    void this.sweep().catch((error: unknown) => this.options.logger.warn({ err: error }, "image cache sweep failed"));
  }

  /**
   * Removes base files that no record names and no disk backs onto (walking every
   * disk's backing chain). When a chain cannot be read, nothing is removed.
   */
  async sweep(): Promise<{ removed: string[]; kept: number }> {
    return this.exclusive(async () => {
      const dirReal = await realpath(this.dir);
      const canonical = async (p: string) => realpath(p).catch(() => resolve(p));
      const bases = await this.listBases();
      const candidates = bases.map((rel) => join(dirReal, rel));
      const recordRefs = new Set<string>();
      for (const r of this.images.values()) if (r.baseFile) recordRefs.add(join(dirReal, r.baseFile));
      const now = Date.now();
      const handedOut = new Set<string>();
      for (const [path, at] of this.handedOut) {
        if (now - at > HANDOUT_GRACE_MS) this.handedOut.delete(path);
        else handedOut.add(await canonical(path));
      }
      if (candidates.every((c) => recordRefs.has(c) || handedOut.has(c))) return { removed: [], kept: candidates.length };
      const chainFiles = await this.walkChains(canonical);
      const decision = decideSweep({ candidates, recordRefs, handedOut, chainFiles });
      for (const file of decision.remove) {
        await rm(file, { force: true });
        this.baseBytes.delete(file.slice(dirReal.length + 1));
        this.options.logger.info({ file }, "image cache: removed a base file nothing uses");
      }
      return { removed: decision.remove, kept: decision.keep.length };
    });
  }

  private async walkChains(canonical: (p: string) => Promise<string>): Promise<Set<string>> {
    const files = new Set<string>();
    const disks = this.options.diskFiles ? await this.options.diskFiles() : [];
    for (const disk of disks) {
      try {
        for (const entry of await this.options.imageTool.backingChain(disk)) files.add(await canonical(entry.filename || disk));
        continue;
      } catch (error) {
        if (!(await exists(disk))) continue; // gone since it was listed
        this.options.logger.debug({ err: error, disk }, "backing chain unreadable; walking it one file at a time");
      }
      // A broken chain (a missing or damaged file further down): every file named up to the break counts.
      let current = disk;
      files.add(await canonical(disk));
      for (let depth = 0; depth < 64; depth++) {
        let info;
        try {
          info = await this.options.imageTool.info(current);
        } catch (error) {
          if (current === disk && !(error instanceof ImageNotFoundError)) {
            throw new Error(`cannot read ${disk} to find its backing file; the sweep removes nothing`, { cause: error });
          }
          break;
        }
        if (info.backingFile === undefined) break;
        current = info.backingFile;
        files.add(await canonical(current));
      }
    }
    return files;
  }

  /** Base files in the cache, relative to the images directory. */
  private async listBases(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await readdir(this.baseDir).catch(() => [] as string[])) if (name.endsWith(".qcow2")) out.push(`base/${name}`);
    for (const name of await readdir(this.dir)) if (/^img-[a-z0-9]{8}\.qcow2$/.test(name)) out.push(name);
    return out;
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.exclusiveTail.then(work, work);
    this.exclusiveTail = next.catch(() => undefined);
    return next;
  }

  /** Bytes the cache takes on disk (every base file, including those kept only for disks that back onto them). */
  cacheBytes(): number {
    let total = 0;
    for (const bytes of this.baseBytes.values()) total += bytes;
    return total;
  }

  private async save(record: ImageRecord): Promise<void> {
    const { progressPercent: _progress, ...persisted } = record;
    await writeFileAtomic(this.options.paths.imageRecord(record.imageId), JSON.stringify(persisted, null, 1), 0o600);
  }
}

/** What finds base files that may hold the same disk: the guest-visible head and the size. */
function contentKeyOf(head: Buffer, virtualSizeBytes: number): string {
  return createHash("sha256").update(head).update(`:${virtualSizeBytes}`).digest("hex");
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncFile(file: string): Promise<void> {
  const fh = await open(file, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** SHA-256 of a file's bytes, read in 1 MiB pieces. */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** ImageUrl → where to read it (the checksum fragment included); the CVM error when it is unusable. */
export function parseImageUrl(raw: string): ImageSource {
  const source = parseImageSource(raw);
  if (!source) {
    throw new ApiError(
      "InvalidParameter.InvalidParameterUrlError",
      `ImageUrl ${JSON.stringify(raw)} must be file:///absolute/path or an http(s):// URL, optionally ending in #sha256=<64 hex digits>`,
    );
  }
  return source;
}

/** The CVM Image structure (seed API §2.4), with ErrorCode/ErrorMessage when an import or creation failed. */
export function toCvmImage(record: ImageRecord): Record<string, unknown> {
  const done = record.state === "NORMAL";
  return {
    ImageId: record.imageId,
    OsName: `${record.osType} ${record.osVersion}`.trim(),
    ImageType: "PRIVATE_IMAGE",
    CreatedTime: record.createdTime,
    ImageName: record.imageName,
    ImageDescription: record.imageDescription,
    ImageSize: record.virtualSizeBytes ? Math.ceil(record.virtualSizeBytes / GiB) : 0,
    Architecture: record.architecture,
    ImageState: record.state,
    Platform: record.osType,
    ImageCreator: "",
    ImageSource: record.origin ?? "IMPORT",
    SyncPercent: done ? 100 : Math.floor(record.progressPercent ?? 0),
    IsSupportCloudinit: !/windows/i.test(record.osType),
    ImageFormat: "qcow2",
    OsType: /windows/i.test(record.osType) ? "windows" : "linux",
    OsVersion: record.osVersion,
    BootMode: record.bootMode,
    Tags: (record.tags ?? []).map((t) => ({ Key: t.key, Value: t.value })),
    ...(record.errorCode ? { ErrorCode: record.errorCode } : {}),
    ...(record.errorMessage ? { ErrorMessage: record.errorMessage } : {}),
  };
}
