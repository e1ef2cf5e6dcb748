/**
 * InstanceAttachISO's file: fetched from ImageUrl (file:// or http(s)://, like ImportImage)
 * into the instance's directory, written to a temporary name and renamed when complete,
 * and accepted only when it is an ISO 9660 image ("CD001" at byte 32769).
 */
import { createWriteStream } from "node:fs";
import { copyFile, open, rename, rm } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ApiError } from "../errors.js";
import { parseImageUrl } from "../images.js";

const ISO_MAGIC_OFFSET = 32769;

export async function fetchIso(url: string, target: string, options: { maxBytes: number; timeoutMs: number }): Promise<void> {
  const source = parseImageUrl(url);
  const part = `${target}.part`;
  await rm(part, { force: true });
  try {
    if (source.kind === "file") {
      try {
        await copyFile(source.path, part);
      } catch (error) {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} cannot be read: ${(error as Error).message}`);
      }
    } else {
      const response = await fetch(source.href, { signal: AbortSignal.timeout(options.timeoutMs) }).catch((error: unknown) => {
        throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} cannot be fetched: ${(error as Error).message}`);
      });
      if (!response.ok || !response.body) throw new ApiError("InvalidParameter.InvalidParameterUrlError", `ImageUrl ${url} answered HTTP ${response.status}`);
      let received = 0;
      const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream);
      body.on("data", (chunk: Buffer) => {
        received += chunk.length;
        if (received > options.maxBytes) body.destroy(new ApiError("InvalidParameterValue", `the ISO is larger than ${options.maxBytes} bytes`));
      });
      await pipeline(body, createWriteStream(part, { mode: 0o600 }));
    }
    const handle = await open(part, "r");
    try {
      const magic = Buffer.alloc(5);
      await handle.read(magic, 0, 5, ISO_MAGIC_OFFSET);
      if (magic.toString("latin1") !== "CD001") {
        throw new ApiError("InvalidParameterValue", `ImageUrl ${url} is not an ISO 9660 image (no CD001 signature)`);
      }
    } finally {
      await handle.close();
    }
    await rename(part, target);
  } finally {
    await rm(part, { force: true });
  }
}
