/**
 * The one downloader, shared by ImportImage and InstanceAttachISO: an http(s) URL into a
 * file (bounded in bytes and time, hashed on the way, progress reported), a local file
 * checked for reading, and SHA-256 of a file. Failures are FetchErrors with a reason;
 * each caller says what the reason means to its client.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, open, stat } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";

export type FetchFailure =
  /** The file or URL cannot be read (not there, refused, HTTP error, cut short). */
  | "unreadable"
  /** More bytes than the caller's limit. */
  | "too-large";

export class FetchError extends Error {
  override name = "FetchError";
  constructor(
    readonly reason: FetchFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface FetchOptions {
  maxBytes: number;
  /** Named in the too-large message (the setting that sets the limit). */
  limitName: string;
  timeoutMs: number;
  /** Called on every chunk with the bytes so far and the announced length (0 when unknown). */
  onBytes?: (received: number, length: number) => void;
}

/** Downloads `href` into `target` (mode 0600), hashing on the way; returns the SHA-256 and the size. */
export async function download(href: string, target: string, o: FetchOptions): Promise<{ sha256: string; bytes: number }> {
  let response: Response;
  try {
    response = await fetch(href, { signal: AbortSignal.timeout(o.timeoutMs) });
  } catch (error) {
    throw new FetchError("unreadable", `download of ${href} failed: ${(error as Error).message}`, { cause: error });
  }
  if (!response.ok || !response.body) throw new FetchError("unreadable", `download of ${href} answered HTTP ${response.status}`);
  const limit = o.maxBytes;
  const length = Number(response.headers.get("content-length") ?? "0");
  if (length > limit) {
    await response.body.cancel().catch(() => undefined);
    throw new FetchError("too-large", `the download is ${length} bytes, over the limit of ${limit} (${o.limitName})`);
  }
  const hash = createHash("sha256");
  let received = 0;
  const meter = new Transform({
    transform: (chunk: Buffer, _enc, done) => {
      received += chunk.length;
      if (received > limit) {
        done(new FetchError("too-large", `the download exceeds the limit of ${limit} bytes (${o.limitName})`));
        return;
      }
      hash.update(chunk);
      o.onBytes?.(received, length);
      done(null, chunk);
    },
  });
  try {
    const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
    await pipeline(body, meter, createWriteStream(target, { mode: 0o600 }));
  } catch (error) {
    if (error instanceof FetchError) throw error;
    throw new FetchError("unreadable", `download of ${href} failed: ${(error as Error).message}`, { cause: error });
  }
  if (length > 0 && received !== length) {
    throw new FetchError("unreadable", `download of ${href} ended after ${received} of ${length} bytes`);
  }
  return { sha256: hash.digest("hex"), bytes: received };
}

/** A local file the agent can open for reading, and its size. */
export async function checkReadable(path: string): Promise<{ bytes: number }> {
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error("not a regular file");
    const fh = await open(path, "r");
    await fh.close();
    return { bytes: st.size };
  } catch (error) {
    throw new FetchError("unreadable", `${path} cannot be read: ${(error as Error).message}`, { cause: error });
  }
}

/** Copies a local file into `target`, refusing one over the limit. */
export async function copyLocal(path: string, target: string, o: Pick<FetchOptions, "maxBytes" | "limitName">): Promise<void> {
  const { bytes } = await checkReadable(path);
  if (bytes > o.maxBytes) throw new FetchError("too-large", `the file is ${bytes} bytes, over the limit of ${o.maxBytes} (${o.limitName})`);
  try {
    await copyFile(path, target);
  } catch (error) {
    throw new FetchError("unreadable", `${path} cannot be read: ${(error as Error).message}`, { cause: error });
  }
}

/** SHA-256 of a file's bytes, read in 1 MiB pieces. */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
