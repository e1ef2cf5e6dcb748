/**
 * The ImageTool port over qemu-img, through the CommandRunner (argv arrays).
 * - info/backingChain read the format from the content (no -f) and use
 *   --force-share (-U) so that images in use by a running guest can be read;
 * - convert always names the source format (-f): a format probed at convert time
 *   lets a guest-written raw image pass itself off as qcow2 with a backing file.
 */
import { ExecError, type CommandRunner, type RunOptions } from "../exec/runner.js";
import type { ImageInfo, ImageTool } from "./types.js";

export interface QemuImgOptions {
  runner: CommandRunner;
  /** Timeout of info/create/resize, in milliseconds. Default: the runner's default. */
  timeoutMs?: number;
  /** Timeout of convert (copies whole images), in milliseconds. Default 2 hours. */
  convertTimeoutMs?: number;
}

/** qemu-img failed; `cause` is the ExecError. */
export class ImageToolError extends Error {
  override name = "ImageToolError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The image file does not exist (or cannot be opened). */
export class ImageNotFoundError extends ImageToolError {
  override name = "ImageNotFoundError";
  constructor(readonly path: string, options?: { cause?: unknown }) {
    super(`image ${path} does not exist`, options);
  }
}

/** A resize to fewer bytes than the image has: refused before qemu-img runs. */
export class ImageShrinkError extends ImageToolError {
  override name = "ImageShrinkError";
  constructor(
    readonly path: string,
    readonly currentBytes: number,
    readonly requestedBytes: number,
  ) {
    super(`image ${path} is ${currentBytes} bytes; refusing to shrink it to ${requestedBytes} bytes`);
  }
}

/** An image format name qemu-img does not know, or that the agent does not accept. */
export class UnsupportedImageFormatError extends ImageToolError {
  override name = "UnsupportedImageFormatError";
}

/** Source formats the agent accepts for convert; "vhd" is qemu-img's "vpc". */
const SOURCE_FORMATS = new Set(["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "qed"]);

/** Maps a user-facing format name to qemu-img's (vhd -> vpc). */
export function qemuFormatName(format: string): string {
  const f = format.toLowerCase();
  const name = f === "vhd" ? "vpc" : f;
  if (!SOURCE_FORMATS.has(name)) throw new UnsupportedImageFormatError(`unsupported image format ${JSON.stringify(format)}`);
  return name;
}

const DEFAULT_CONVERT_TIMEOUT_MS = 2 * 60 * 60 * 1000;

interface QemuImgJson {
  filename?: string;
  format?: string;
  "virtual-size"?: number;
  "actual-size"?: number;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  "backing-filename-format"?: string;
  "format-specific"?: { type?: string; data?: { corrupt?: boolean } };
}

function toImageInfo(json: QemuImgJson, path: string): ImageInfo {
  if (typeof json.format !== "string" || typeof json["virtual-size"] !== "number") {
    throw new ImageToolError(`qemu-img info ${path}: unexpected output`);
  }
  const info: ImageInfo = {
    format: json.format,
    virtualSizeBytes: json["virtual-size"],
    actualSizeBytes: json["actual-size"] ?? 0,
  };
  const backing = json["full-backing-filename"] ?? json["backing-filename"];
  if (backing !== undefined) info.backingFile = backing;
  if (json["backing-filename-format"] !== undefined) info.backingFormat = json["backing-filename-format"];
  const corrupt = json["format-specific"]?.data?.corrupt;
  if (typeof corrupt === "boolean") info.corrupt = corrupt;
  return info;
}

/** The qemu-img message without its "qemu-img: " prefix. */
function qemuImgMessage(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.replace(/^qemu-img:\s*/, "").trim())
    .filter((l) => l.length > 0 && !l.startsWith("warning:"));
  return lines.join("; ") || "no error text";
}

export class QemuImg implements ImageTool {
  private readonly runner: CommandRunner;
  private readonly timeoutMs: number | undefined;
  private readonly convertTimeoutMs: number;

  constructor(options: QemuImgOptions) {
    this.runner = options.runner;
    this.timeoutMs = options.timeoutMs;
    this.convertTimeoutMs = options.convertTimeoutMs ?? DEFAULT_CONVERT_TIMEOUT_MS;
  }

  private async qemuImg(args: readonly string[], what: string, path: string, options: RunOptions = {}): Promise<string> {
    try {
      const result = await this.runner.run(["qemu-img", ...args], {
        ...(this.timeoutMs !== undefined ? { timeoutMs: this.timeoutMs } : {}),
        ...options,
      });
      return result.stdout;
    } catch (error) {
      if (error instanceof ExecError && error.failure === "exit") {
        if (/No such file or directory/.test(error.stderr) && /Could not open/.test(error.stderr)) {
          throw new ImageNotFoundError(path, { cause: error });
        }
        if (/Unknown (file |driver )?format|Unknown driver/i.test(error.stderr)) {
          throw new UnsupportedImageFormatError(`qemu-img ${what}: ${qemuImgMessage(error.stderr)}`, { cause: error });
        }
        throw new ImageToolError(`qemu-img ${what}: ${qemuImgMessage(error.stderr)}`, { cause: error });
      }
      throw new ImageToolError(`qemu-img ${what} failed: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  }

  private parseJson(stdout: string, path: string): unknown {
    try {
      return JSON.parse(stdout);
    } catch (error) {
      throw new ImageToolError(`qemu-img info ${path}: output is not JSON`, { cause: error });
    }
  }

  async info(path: string, options: { signal?: AbortSignal } = {}): Promise<ImageInfo> {
    const stdout = await this.qemuImg(["info", "--output=json", "--force-share", path], `info ${path}`, path, {
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const json = this.parseJson(stdout, path);
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      throw new ImageToolError(`qemu-img info ${path}: unexpected output`);
    }
    return toImageInfo(json as QemuImgJson, path);
  }

  async backingChain(path: string): Promise<Array<ImageInfo & { filename: string }>> {
    const stdout = await this.qemuImg(
      ["info", "--output=json", "--force-share", "--backing-chain", path],
      `info --backing-chain ${path}`,
      path,
    );
    const json = this.parseJson(stdout, path);
    if (!Array.isArray(json)) throw new ImageToolError(`qemu-img info --backing-chain ${path}: unexpected output`);
    return (json as QemuImgJson[]).map((entry) => ({ ...toImageInfo(entry, path), filename: entry.filename ?? "" }));
  }

  async convert(options: {
    source: string;
    sourceFormat: string;
    target: string;
    targetFormat: "qcow2" | "raw";
    signal?: AbortSignal;
  }): Promise<void> {
    const sourceFormat = qemuFormatName(options.sourceFormat);
    await this.qemuImg(
      ["convert", "-f", sourceFormat, "-O", options.targetFormat, options.source, options.target],
      `convert ${options.source}`,
      options.source,
      { timeoutMs: this.convertTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
    );
  }

  async createOverlay(options: {
    backing: string;
    backingFormat: "qcow2" | "raw";
    target: string;
    sizeBytes: number;
  }): Promise<void> {
    checkSize(options.sizeBytes);
    await this.qemuImg(
      ["create", "-f", "qcow2", "-F", options.backingFormat, "-b", options.backing, options.target, String(options.sizeBytes)],
      `create overlay ${options.target}`,
      options.backing,
    );
  }

  async create(options: { target: string; format: "qcow2" | "raw"; sizeBytes: number }): Promise<void> {
    checkSize(options.sizeBytes);
    await this.qemuImg(
      ["create", "-f", options.format, options.target, String(options.sizeBytes)],
      `create ${options.target}`,
      options.target,
    );
  }

  async resize(options: { target: string; format: "qcow2" | "raw"; sizeBytes: number }): Promise<void> {
    checkSize(options.sizeBytes);
    const current = await this.info(options.target);
    if (options.sizeBytes < current.virtualSizeBytes) {
      throw new ImageShrinkError(options.target, current.virtualSizeBytes, options.sizeBytes);
    }
    if (options.sizeBytes === current.virtualSizeBytes) return;
    await this.qemuImg(
      ["resize", "-f", options.format, options.target, String(options.sizeBytes)],
      `resize ${options.target}`,
      options.target,
    );
  }
}

function checkSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new ImageToolError(`image size must be a positive whole number of bytes, got ${sizeBytes}`);
  }
}
