/**
 * Reading a guest's serial console log (the file libvirt's `<serial><log file=…/>`
 * writes through virtlogd) and the tiny guest's marker lines.
 */
import { open, stat } from "node:fs/promises";

export interface WaitForSerialOptions {
  /** Give up after this many milliseconds. Default 60 000. */
  timeoutMs?: number;
  /** Only look at what the log holds from this byte offset on (e.g. its size before a reboot). */
  fromOffset?: number;
  /** Cancels the wait. */
  signal?: AbortSignal;
  /** Poll interval in milliseconds. Default 100. */
  pollMs?: number;
}

/** Size of a log file in bytes, 0 when it does not exist yet: a `fromOffset` for the next wait. */
export async function serialLogSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw err;
  }
}

async function readFrom(path: string, offset: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return Buffer.alloc(0);
    throw err;
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return Buffer.alloc(0);
    const buf = Buffer.alloc(size - offset);
    const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Polls a console log until a complete line (ending in a newline) matches `pattern`;
 * resolves with the match. Tolerates the file not existing yet. On timeout, throws an
 * error carrying the last 2 KB of the log.
 */
export async function waitForSerial(
  path: string,
  pattern: RegExp,
  options: WaitForSerialOptions = {},
): Promise<RegExpMatchArray> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const pollMs = options.pollMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let offset = options.fromOffset ?? 0;
  let partial = "";
  let tail = "";
  for (;;) {
    options.signal?.throwIfAborted();
    const chunk = await readFrom(path, offset);
    if (chunk.length > 0) {
      offset += chunk.length;
      const text = partial + chunk.toString("utf8");
      tail = (tail + chunk.toString("utf8")).slice(-2048);
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const raw of lines) {
        const line = raw.replace(/\r$/, "");
        const match = line.match(pattern);
        if (match) return match;
      }
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `serial log ${path}: no line matched ${String(pattern)} within ${timeoutMs} ms; last 2 KB:\n${tail}`,
      );
    }
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())), options.signal);
  }
}

export interface TinyReady {
  mode: string;
  vcpus: number;
  memtotalKb: number;
  uuid: string;
  serial: string;
  /** Disk name → size in 512-byte sectors, e.g. { vda: 131072 }. */
  disks: Record<string, number>;
}

export const TINY_READY_PATTERN =
  /CDH-TINY-READY mode=(\S+) vcpus=(\d+) memtotal_kb=(\d+) uuid=(\S*) serial=(\S*) disks=(\S*)/;

/** Parses the tiny guest's `CDH-TINY-READY …` line; throws when the line is not one. */
export function parseTinyReady(line: string): TinyReady {
  const m = TINY_READY_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-TINY-READY line: ${JSON.stringify(line)}`);
  const [, mode, vcpus, memtotalKb, uuid, serial, diskList] = m as unknown as [
    string, string, string, string, string, string, string,
  ];
  const disks: Record<string, number> = {};
  for (const item of diskList.split(",")) {
    if (item === "") continue;
    const [name, sectors] = item.split(":");
    if (!name || sectors === undefined || !/^\d+$/.test(sectors)) {
      throw new Error(`bad disk entry ${JSON.stringify(item)} in ${JSON.stringify(line)}`);
    }
    disks[name] = Number(sectors);
  }
  return { mode, vcpus: Number(vcpus), memtotalKb: Number(memtotalKb), uuid, serial, disks };
}
