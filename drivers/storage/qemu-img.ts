/**
 * The ImageTool port over qemu-img, through the CommandRunner (argv arrays).
 * - info/backingChain read the format from the content (no -f) and use
 *   --force-share (-U) so that images in use by a running guest can be read;
 * - convert always names the source format (-f): a format probed at convert time
 *   lets a guest-written raw image pass itself off as qcow2 with a backing file.
 */
import { open, readFile, rm } from "node:fs/promises";
import { ExecError, type CommandRunner, type RunOptions } from "../exec/runner.js";
import type { ImageCheck, ImageInfo, ImageInspector, ImageTool } from "./types.js";

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

/**
 * The percentage in one line of `qemu-img convert -p` output ("    (42.17/100%)"),
 * or undefined when the line is not a progress line.
 */
export function parseQemuImgProgress(line: string): number | undefined {
  const m = /\(\s*(\d{1,3}(?:\.\d+)?)\/100%\)/.exec(line);
  if (!m) return undefined;
  const value = Number(m[1]);
  return Number.isFinite(value) && value >= 0 && value <= 100 ? value : undefined;
}

interface QemuImgCheckJson {
  "check-errors"?: number;
  corruptions?: number;
  leaks?: number;
}

export class QemuImg implements ImageTool, ImageInspector {
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
    onProgress?: (percent: number) => void;
    forceShare?: boolean;
  }): Promise<void> {
    const sourceFormat = qemuFormatName(options.sourceFormat);
    const args = ["convert", ...(options.forceShare ? ["-U"] : []), "-f", sourceFormat, "-O", options.targetFormat, options.source, options.target];
    if (options.onProgress) {
      await this.convertWithProgress(["convert", "-p", ...args.slice(1)], options.source, options.onProgress, options.signal);
      return;
    }
    await this.qemuImg(args, `convert ${options.source}`, options.source, {
      timeoutMs: this.convertTimeoutMs,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** `qemu-img convert -p` through the runner's line stream ("\r"-separated progress). */
  private convertWithProgress(args: string[], source: string, onProgress: (p: number) => void, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new ImageToolError(`qemu-img convert ${source} was aborted`));
        return;
      }
      const stderr: string[] = [];
      let why: string | undefined;
      const handle = this.runner.stream(["qemu-img", ...args], {
        splitOnCarriageReturn: true,
        onLine: (line) => {
          const p = parseQemuImgProgress(line);
          if (p !== undefined) onProgress(p);
        },
        onStderrLine: (line) => {
          if (stderr.length < 50) stderr.push(line);
        },
        onExit: ({ exitCode, signal: killedBy, error }) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          if (exitCode === 0 && !why) {
            resolve();
            return;
          }
          const detail = why ?? (error ? error.message : qemuImgMessage(stderr.join("\n")));
          const how = why ? "" : killedBy ? ` (killed by ${killedBy})` : ` (exit code ${exitCode})`;
          reject(new ImageToolError(`qemu-img convert ${source}: ${detail}${how}`, error ? { cause: error } : undefined));
        },
      });
      const onAbort = () => {
        why = "aborted";
        handle.kill();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(() => {
        why = `timed out after ${this.convertTimeoutMs} ms`;
        handle.kill();
      }, this.convertTimeoutMs);
      timer.unref?.();
    });
  }

  async check(path: string, format: string, options: { signal?: AbortSignal } = {}): Promise<ImageCheck> {
    const fmt = qemuFormatName(format);
    if (fmt === "raw") return { supported: false, errors: 0, leaks: 0, message: "" };
    let result;
    try {
      result = await this.runner.run(["qemu-img", "check", "-f", fmt, "--output=json", "-U", path], {
        allowFailure: true,
        ...(this.timeoutMs !== undefined ? { timeoutMs: this.timeoutMs } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      throw new ImageToolError(`qemu-img check ${path} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    // Exit codes: 0 sound, 1 check incomplete, 2 corrupt, 3 leaks only, 63 format has no check.
    if (result.exitCode === 63) return { supported: false, errors: 0, leaks: 0, message: "" };
    let json: QemuImgCheckJson = {};
    try {
      json = JSON.parse(result.stdout) as QemuImgCheckJson;
    } catch {
      json = {};
    }
    const errors = (json.corruptions ?? 0) + (json["check-errors"] ?? 0);
    const leaks = json.leaks ?? 0;
    if (result.exitCode === 0 || result.exitCode === 3) {
      return { supported: true, errors: 0, leaks, message: "" };
    }
    const firstLines = result.stderr.split("\n").filter((l) => l.trim()).slice(0, 2).map((l) => l.replace(/^qemu-img:\s*/, ""));
    return {
      supported: true,
      errors: Math.max(errors, 1),
      leaks,
      message: firstLines.join("; ") || `qemu-img check exited with code ${result.exitCode}`,
    };
  }

  async sameContent(
    a: { path: string; format: string },
    b: { path: string; format: string },
    options: { signal?: AbortSignal } = {},
  ): Promise<boolean> {
    const result = await this.runner
      .run(["qemu-img", "compare", "-U", "-q", "-f", qemuFormatName(a.format), "-F", qemuFormatName(b.format), a.path, b.path], {
        allowFailure: true,
        timeoutMs: this.convertTimeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      })
      .catch((error: unknown) => {
        throw new ImageToolError(`qemu-img compare ${a.path} ${b.path} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      });
    // Exit codes: 0 identical, 1 different, anything else an error.
    if (result.exitCode === 0) return true;
    if (result.exitCode === 1) return false;
    throw new ImageToolError(`qemu-img compare ${a.path} ${b.path}: ${qemuImgMessage(result.stderr)}`);
  }

  async readHead(options: { path: string; format: string; bytes: number; scratchFile: string; signal?: AbortSignal }): Promise<Buffer> {
    const fmt = qemuFormatName(options.format);
    if (fmt === "raw") {
      // What the guest sees of a raw file is the file: no qemu-img needed.
      const fh = await open(options.path, "r");
      try {
        const buf = Buffer.alloc(options.bytes);
        const { bytesRead } = await fh.read(buf, 0, options.bytes, 0);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    }
    const bs = 65536;
    const count = Math.max(1, Math.ceil(options.bytes / bs));
    try {
      await this.qemuImg(
        ["dd", "-U", "-f", fmt, "-O", "raw", `bs=${bs}`, `count=${count}`, `if=${options.path}`, `of=${options.scratchFile}`],
        `dd ${options.path}`,
        options.path,
        options.signal ? { signal: options.signal } : {},
      );
      const head = await readFile(options.scratchFile);
      return head.subarray(0, options.bytes);
    } finally {
      await rm(options.scratchFile, { force: true });
    }
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
