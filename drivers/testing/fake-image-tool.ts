/**
 * A fake of the ImageTool port for unit tests: disk files are real (small) files whose
 * content names what they are, so that tests see what was made and removed. It models
 * create, createOverlay, resize and info; anything else (convert, backing chains) throws,
 * as does a call a test scripted to fail.
 */
import { readFile, stat, writeFile } from "node:fs/promises";
import type { ImageInfo, ImageTool } from "../storage/types.js";

export class FakeImageTool implements ImageTool {
  readonly calls: Array<{ method: keyof ImageTool; target: string }> = [];
  private readonly failures: Array<{ method: keyof ImageTool; error: Error }> = [];

  /** The next call of `method` throws `error`. */
  failNext(method: keyof ImageTool, error: Error): void {
    this.failures.push({ method, error });
  }

  async info(path: string): Promise<ImageInfo> {
    this.enter("info", path);
    const meta = JSON.parse(await readFile(path, "utf8")) as { sizeBytes: number };
    const st = await stat(path);
    return { format: "qcow2", virtualSizeBytes: meta.sizeBytes, actualSizeBytes: st.size };
  }

  backingChain(path: string): Promise<Array<ImageInfo & { filename: string }>> {
    this.enter("backingChain", path);
    return Promise.reject(new Error("FakeImageTool: backingChain is not modelled"));
  }

  convert(options: { target: string }): Promise<void> {
    this.enter("convert", options.target);
    return Promise.reject(new Error("FakeImageTool: convert is not modelled"));
  }

  async createOverlay(options: { backing: string; target: string; sizeBytes: number }): Promise<void> {
    this.enter("createOverlay", options.target);
    await writeFile(options.target, JSON.stringify({ backing: options.backing, sizeBytes: options.sizeBytes }));
  }

  async create(options: { target: string; sizeBytes: number }): Promise<void> {
    this.enter("create", options.target);
    await writeFile(options.target, JSON.stringify({ sizeBytes: options.sizeBytes }));
  }

  async resize(options: { target: string; sizeBytes: number }): Promise<void> {
    this.enter("resize", options.target);
    const meta = JSON.parse(await readFile(options.target, "utf8")) as Record<string, unknown>;
    await writeFile(options.target, JSON.stringify({ ...meta, sizeBytes: options.sizeBytes }));
  }

  private enter(method: keyof ImageTool, target: string): void {
    this.calls.push({ method, target });
    const i = this.failures.findIndex((f) => f.method === method);
    if (i >= 0) throw this.failures.splice(i, 1)[0]!.error;
  }
}
