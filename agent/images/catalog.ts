/**
 * The image catalog: the records, DescribeImages' source, DeleteImages, the entry points
 * for images made from instances (beginImage / completeImage / failImage), and the cache
 * of base files with its sweep. ImportImage's work is import.ts.
 *
 * Layout under `<data_dir>/images`:
 * - `img-xxxxxxxx.json`        one record per image (checked where loaded: a bad one is set
 *                              aside as `img-xxxxxxxx.json.bad-<time>` with a warning);
 * - `base/<key>-<id>.qcow2`    base files of imported images (key: the first 16 hex digits
 *                              of the content key). An import whose disk shows the guest
 *                              the same bytes as an existing image's base shares that base;
 * - `base/created-<id>.qcow2`  base files of images made from instances;
 * - `img-xxxxxxxx.qcow2`       base files of images imported before the base/ layout;
 * - `partial/`                 work files of running imports (emptied at start-up).
 * System disks are qcow2 overlays backing onto a base file. DeleteImages is refused
 * while an instance uses the image; otherwise it removes the record at once, and the
 * base file goes only when no record names it and no disk's backing chain contains it
 * (a snapshot, or another image sharing the base), at the scheduled sweep
 * (`image_cache_sweep_schedule`), never by age.
 */
import { storedOsFamily } from "../os-family.js";
import { copyFile, mkdir, open, readdir, readFile, realpath, rename, rm, stat } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { createTask, type ScheduledTask } from "node-cron";
import type { Logger } from "pino";
import { ImageNotFoundError } from "../../drivers/storage/qemu-img.js";
import type { ImageInspector, ImageTool } from "../../drivers/storage/types.js";
import { DomainError } from "../core/errors.js";
import { isoSeconds, newId } from "../model.js";
import type { DataPaths } from "../paths.js";
import { writeFileAtomic } from "../util/atomic-file.js";
import { setAside } from "../util/set-aside.js";
import { exists, syncDir, syncFile } from "../util/fs.js";
import { ImageImporter, type ImportStore } from "./import.js";
import { parseImageRecord, type ImageRecord, type ImportImageRequest, type NewImageMeta, type UsableImage } from "./model.js";
import { configDriveOf } from "./source.js";
import { decideSweep } from "./sweep.js";

/** A base handed out to a new system disk is kept this long even before its overlay exists. */
const HANDOUT_GRACE_MS = 30_000;

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

export class ImageCatalog implements ImportStore {
  private readonly images = new Map<string, ImageRecord>();
  /** Bytes each base file takes on disk, by path relative to the images directory. */
  private readonly baseBytes = new Map<string, number>();
  /** Base files handed out by requireUsable (absolute path → time). */
  private readonly handedOut = new Map<string, number>();
  /** Serialises commits into base/ with the sweep. */
  private exclusiveTail: Promise<unknown> = Promise.resolve();
  private sweepTask: ScheduledTask | undefined;
  private readonly running = new Set<Promise<void>>();

  private readonly importer: ImageImporter;

  constructor(private readonly options: ImageCatalogOptions) {
    this.importer = new ImageImporter({
      store: this,
      imageTool: options.imageTool,
      logger: options.logger,
      maxImageBytes: options.maxImageBytes,
      downloadTimeoutMs: options.downloadTimeoutMs,
      ...(options.checkpoint ? { checkpoint: options.checkpoint } : {}),
    });
  }

  /** The records, for the importer (looking for a base to share). */
  records(): Iterable<ImageRecord> {
    return this.images.values();
  }

  /** A base file's bytes on disk, counted in the cache's size. */
  noteBase(rel: string, bytes: number): void {
    this.baseBytes.set(rel, bytes);
  }

  async syncBaseDir(): Promise<void> {
    await syncDir(this.baseDir);
  }

  get dir(): string {
    return this.options.paths.imagesDir;
  }
  private get baseDir(): string {
    return join(this.dir, "base");
  }
  get partialDir(): string {
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
      const parsed = parseImageRecord(await readFile(full, "utf8"));
      if (!parsed.ok || parsed.record.imageId !== name.slice(0, -".json".length)) {
        const aside = await setAside(full);
        this.options.logger.warn({ file: full, aside, reason: parsed.ok ? "the file name and imageId differ" : parsed.error }, "image record unreadable; set aside");
        continue;
      }
      const record = parsed.record;
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
    if (!record) throw new DomainError("ImageNotFound", `image ${imageId} does not exist on this host`);
    if (record.state !== "NORMAL" || record.virtualSizeBytes === undefined || record.baseFile === undefined) {
      throw new DomainError("ImageNotUsable", `image ${imageId} is ${record.state}, not NORMAL`);
    }
    const path = join(this.dir, record.baseFile);
    this.handedOut.set(path, Date.now());
    return {
      imageId,
      path,
      virtualSizeBytes: record.virtualSizeBytes,
      osName: `${record.osType} ${record.osVersion}`.trim(),
      osFamily: storedOsFamily(record.osType),
      bootMode: record.bootMode,
      configDrive: configDriveOf(record.tags),
    };
  }

  /** Refuses a name another image (not a failed one) has: ImportImage, CreateImage and their DryRuns. */
  checkName(imageName: string): void {
    const duplicate = [...this.images.values()].find(
      (i) => i.imageName === imageName && i.state !== "IMPORTFAILED" && i.state !== "CREATEFAILED",
    );
    if (duplicate) throw new DomainError("ImageNameTaken", `ImageName ${imageName} is already used by ${duplicate.imageId}`);
  }

  private newImageId(): string {
    let imageId = newId("img");
    while (this.images.has(imageId)) imageId = newId("img");
    return imageId;
  }

  /** ImportImage's checks (the name, the URL, a local file's readability), all a DryRun runs; nothing changes. */
  async checkImport(request: Pick<ImportImageRequest, "ImageName" | "ImageUrl">): Promise<void> {
    await this.importer.check(request);
  }

  /** Checks and records the import, then imports in the background. Returns the new image ID. */
  async startImport(request: ImportImageRequest): Promise<string> {
    const source = await this.importer.check(request);
    // The name is checked again: another import may have taken it while the file was looked at.
    this.checkName(request.ImageName);
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
    this.track(this.importer.run(record, source));
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
  async markNormal(record: ImageRecord, fields: Partial<ImageRecord>): Promise<void> {
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
    for (const id of imageIds) if (!this.images.has(id)) throw new DomainError("ImageNotFound", `image ${id} does not exist on this host`);
    for (const id of imageIds) {
      const record = this.images.get(id)!;
      if (record.state === "IMPORTING" || record.state === "CREATING") {
        throw new DomainError("ImageNotUsable", `image ${id} is ${record.state}; wait until it is done`);
      }
      const users = this.options.usersOf?.(id) ?? [];
      if (users.length > 0) {
        const shown = users.slice(0, 5).join(", ") + (users.length > 5 ? ` and ${users.length - 5} more` : "");
        throw new DomainError("ImageNotUsable", `image ${id} is in use by ${shown}; terminate or reinstall them first`);
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

  exclusive<T>(work: () => Promise<T>): Promise<T> {
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

  async save(record: ImageRecord): Promise<void> {
    const { progressPercent: _progress, ...persisted } = record;
    await writeFileAtomic(this.options.paths.imageRecord(record.imageId), JSON.stringify(persisted, null, 1), 0o600);
  }
}
