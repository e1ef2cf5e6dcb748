/**
 * The image cache: ImportImage, DescribeImages, DeleteImages. Each image is one
 * qcow2 file plus a small JSON record beside it (images are not libvirt objects).
 * The format of an imported file is read from its content by qemu-img, never
 * guessed from its name; qcow2, raw, vmdk and vhd are converted into one qcow2.
 */
import { createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, access, constants } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { ImageTool } from "../drivers/storage/types.js";
import { ApiError } from "./errors.js";
import { isoSeconds, newId } from "./model.js";
import type { DataPaths } from "./paths.js";
import { writeFileAtomic } from "./util/atomic-file.js";

export type ImageState = "IMPORTING" | "NORMAL" | "IMPORTFAILED";

export interface ImageRecord {
  version: 1;
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
  sourceFormat?: string;
  virtualSizeBytes?: number;
  actualSizeBytes?: number;
  errorMessage?: string;
}

export interface UsableImage {
  imageId: string;
  path: string;
  virtualSizeBytes: number;
  osName: string;
  bootMode: "Legacy BIOS" | "UEFI";
}

/** Formats qemu-img may report for an importable file; vpc is VHD. */
const IMPORTABLE_FORMATS = new Set(["qcow2", "raw", "vmdk", "vpc"]);
const GiB = 1024 ** 3;

export interface ImportImageRequest {
  ImageUrl: string;
  ImageName: string;
  ImageDescription?: string;
  OsType: string;
  OsVersion: string;
  Architecture: string;
  BootMode?: "Legacy BIOS" | "UEFI";
}

export class ImageCatalog {
  private readonly images = new Map<string, ImageRecord>();

  constructor(
    private readonly options: {
      paths: DataPaths;
      imageTool: ImageTool;
      logger: Logger;
      maxImageBytes: number;
      downloadTimeoutMs: number;
      /** IDs of instances whose disks use the image. */
      usersOf: (imageId: string) => string[];
    },
  ) {}

  /** Loads the records; an import the agent was doing when it stopped is marked failed and its partial files removed. */
  async load(): Promise<void> {
    const dir = this.options.paths.imagesDir;
    await mkdir(dir, { recursive: true, mode: 0o711 });
    for (const name of await readdir(dir)) {
      const full = `${dir}/${name}`;
      if (name.endsWith(".part") || name.endsWith(".download")) {
        await rm(full, { force: true });
        continue;
      }
      if (!/^img-[a-z0-9]{8}\.json$/.test(name)) continue;
      const record = JSON.parse(await readFile(full, "utf8")) as ImageRecord;
      if (record.state === "IMPORTING") {
        record.state = "IMPORTFAILED";
        record.errorMessage = "the agent stopped while the import was running";
        await this.save(record);
      }
      this.images.set(record.imageId, record);
    }
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
    if (record.state !== "NORMAL" || record.virtualSizeBytes === undefined) {
      throw new ApiError("InvalidImageId.IncorrectState", `image ${imageId} is ${record.state}, not NORMAL`);
    }
    return {
      imageId,
      path: this.options.paths.imageFile(imageId),
      virtualSizeBytes: record.virtualSizeBytes,
      osName: `${record.osType} ${record.osVersion}`.trim(),
      bootMode: record.bootMode,
    };
  }

  /** Validates and records the import, then converts in the background. Returns the new image ID. */
  async startImport(request: ImportImageRequest): Promise<string> {
    const duplicate = [...this.images.values()].find((i) => i.imageName === request.ImageName && i.state !== "IMPORTFAILED");
    if (duplicate) throw new ApiError("InvalidImageName.Duplicate", `ImageName ${request.ImageName} is already used by ${duplicate.imageId}`);
    const url = parseImageUrl(request.ImageUrl);
    if (url.kind === "file") {
      try {
        const st = await stat(url.path);
        if (!st.isFile()) throw new Error("not a regular file");
        await access(url.path, constants.R_OK);
      } catch (error) {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${request.ImageUrl} cannot be read: ${(error as Error).message}`);
      }
    }
    let imageId = newId("img");
    while (this.images.has(imageId)) imageId = newId("img");
    const record: ImageRecord = {
      version: 1,
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
    };
    await this.save(record);
    this.images.set(imageId, record);
    void this.runImport(record, url);
    return imageId;
  }

  /** Resolves when no import is running any more (tests, shutdown). */
  async whenSettled(imageId: string, timeoutMs = 600_000): Promise<ImageRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = this.images.get(imageId);
      if (!record || record.state !== "IMPORTING" || Date.now() > deadline) return record!;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private async runImport(record: ImageRecord, url: ParsedUrl): Promise<void> {
    const { paths, imageTool, logger } = this.options;
    const log = logger.child({ imageId: record.imageId });
    const partial = `${paths.imageFile(record.imageId)}.part`;
    const download = `${paths.imageFile(record.imageId)}.download`;
    try {
      let source: string;
      if (url.kind === "file") {
        source = url.path;
      } else {
        await this.download(url.href, download);
        source = download;
      }
      const info = await imageTool.info(source);
      if (!IMPORTABLE_FORMATS.has(info.format)) {
        throw new Error(`the file is in format ${info.format}; importable formats are qcow2, raw, vmdk and vhd`);
      }
      if (info.backingFile) throw new Error("the image has a backing file; import a standalone image");
      if (info.virtualSizeBytes > this.options.maxImageBytes) {
        throw new Error(`the image's virtual size ${info.virtualSizeBytes} bytes exceeds the limit of ${this.options.maxImageBytes}`);
      }
      await imageTool.convert({ source, sourceFormat: info.format, target: partial, targetFormat: "qcow2" });
      const converted = await imageTool.info(partial);
      await rename(partial, paths.imageFile(record.imageId));
      Object.assign(record, {
        state: "NORMAL",
        sourceFormat: info.format === "vpc" ? "vhd" : info.format,
        virtualSizeBytes: converted.virtualSizeBytes,
        actualSizeBytes: converted.actualSizeBytes,
      } satisfies Partial<ImageRecord>);
      await this.save(record);
      log.info({ format: info.format, virtualSizeBytes: converted.virtualSizeBytes }, "image imported");
    } catch (error) {
      record.state = "IMPORTFAILED";
      record.errorMessage = (error as Error).message;
      await this.save(record).catch(() => undefined);
      log.warn({ err: error }, "image import failed");
    } finally {
      await rm(partial, { force: true });
      await rm(download, { force: true });
    }
  }

  private async download(href: string, target: string): Promise<void> {
    const response = await fetch(href, { signal: AbortSignal.timeout(this.options.downloadTimeoutMs) });
    if (!response.ok || !response.body) throw new Error(`download of ${href} answered HTTP ${response.status}`);
    const length = Number(response.headers.get("content-length") ?? "0");
    if (length > this.options.maxImageBytes) throw new Error(`the download is ${length} bytes, over the limit of ${this.options.maxImageBytes}`);
    let received = 0;
    const limit = this.options.maxImageBytes;
    const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
    body.on("data", (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) body.destroy(new Error(`the download exceeds the limit of ${limit} bytes`));
    });
    await pipeline(body, createWriteStream(target, { mode: 0o600 }));
  }

  /** DeleteImages' checks: every image exists, is not importing and is used by no instance. */
  checkDelete(imageIds: string[]): void {
    for (const id of imageIds) {
      const record = this.images.get(id);
      if (!record) throw new ApiError("InvalidImageId.NotFound", `image ${id} does not exist on this host`);
      if (record.state === "IMPORTING") throw new ApiError("InvalidImageId.IncorrectState", `image ${id} is still being imported`);
      const users = this.options.usersOf(id);
      if (users.length) throw new ApiError("ResourceInUse", `image ${id} is used by ${users.join(", ")}`);
    }
  }

  /** DeleteImages: all or nothing. */
  async delete(imageIds: string[]): Promise<void> {
    this.checkDelete(imageIds);
    for (const id of imageIds) {
      this.images.delete(id);
      await rm(this.options.paths.imageFile(id), { force: true });
      await rm(this.options.paths.imageRecord(id), { force: true });
    }
  }

  /** Bytes the cache takes on disk (for capacity reports). */
  cacheBytes(): number {
    let total = 0;
    for (const r of this.images.values()) total += r.actualSizeBytes ?? 0;
    return total;
  }

  private async save(record: ImageRecord): Promise<void> {
    await writeFileAtomic(this.options.paths.imageRecord(record.imageId), JSON.stringify(record, null, 1), 0o600);
  }
}

type ParsedUrl = { kind: "file"; path: string } | { kind: "http"; href: string };

export function parseImageUrl(raw: string): ParsedUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${JSON.stringify(raw)} is not a URL`);
  }
  if (url.protocol === "file:") {
    if (url.host && url.host !== "localhost") {
      throw new ApiError("InvalidParameter.InvalidParameterUrlError", "ImageUrl file:// URLs must name a local path");
    }
    return { kind: "file", path: fileURLToPath(url) };
  }
  if (url.protocol === "http:" || url.protocol === "https:") return { kind: "http", href: url.href };
  throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl scheme ${url.protocol} is not supported; use file://, http:// or https://`);
}

/** The CVM Image structure (seed API §2.4). */
export function toCvmImage(record: ImageRecord): Record<string, unknown> {
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
    ImageSource: "IMPORT",
    SyncPercent: record.state === "NORMAL" ? 100 : 0,
    IsSupportCloudinit: !/windows/i.test(record.osType),
    ImageFormat: "qcow2",
    OsType: /windows/i.test(record.osType) ? "windows" : "linux",
    OsVersion: record.osVersion,
    BootMode: record.bootMode,
    ...(record.errorMessage ? { ErrorMessage: record.errorMessage } : {}),
  };
}
