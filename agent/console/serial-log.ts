/**
 * Reading an instance's console log (the file libvirt's `<serial><log>` writes) a piece at a
 * time, for DescribeInstanceSerialLog (this agent's extension): `logs ID` and `logs -f` of the
 * command line page through it by byte offset.
 *
 * A piece is text: it ends at a character boundary (a UTF-8 sequence the guest has not
 * finished writing waits for the next read), and bytes that are not UTF-8 become U+FFFD.
 */
import { open } from "node:fs/promises";

export interface SerialLogPiece {
  /** The text of bytes [offset, nextOffset). */
  text: string;
  offset: number;
  nextOffset: number;
  /** The log's size in bytes when it was read. */
  size: number;
}

/** Default and largest piece, bytes. */
export const SERIAL_LOG_DEFAULT_LIMIT = 64 * 1024;
export const SERIAL_LOG_MAX_LIMIT = 1024 * 1024;

/** Bytes at the end of `buf` that begin a UTF-8 character not complete in `buf` (0..3). */
export function incompleteTail(buf: Buffer): number {
  for (let back = 1; back <= Math.min(3, buf.length); back++) {
    const b = buf[buf.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back
    const need = (b & 0xe0) === 0xc0 ? 2 : (b & 0xf0) === 0xe0 ? 3 : (b & 0xf8) === 0xf0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

/**
 * Bytes [offset, offset + limit) of the log as text. A log that does not exist (the guest has
 * not started yet) reads as empty; an offset past the end reads nothing (size says where the end is).
 */
export async function readSerialLog(path: string, offset: number, limit: number): Promise<SerialLogPiece> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { text: "", offset, nextOffset: offset, size: 0 };
    throw error;
  }
  try {
    const { size } = await handle.stat();
    if (offset >= size) return { text: "", offset, nextOffset: offset, size };
    const buf = Buffer.alloc(Math.min(limit, size - offset));
    const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
    let piece = buf.subarray(0, bytesRead);
    const cut = incompleteTail(piece);
    if (cut > 0 && cut < piece.length) piece = piece.subarray(0, piece.length - cut);
    return { text: piece.toString("utf8"), offset, nextOffset: offset + piece.length, size };
  } finally {
    await handle.close();
  }
}
