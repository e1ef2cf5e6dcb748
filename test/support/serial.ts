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
 * Polls a console log until `test` returns something other than `undefined` for a
 * complete line (ending in a newline); resolves with that value. Tolerates the file not
 * existing yet. On timeout, throws an error naming `what` and carrying the last 2 KB.
 */
export async function waitForSerialLine<T>(
  path: string,
  test: (line: string) => T | undefined,
  what: string,
  options: WaitForSerialOptions = {},
): Promise<T> {
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
        const found = test(raw.replace(/\r$/, ""));
        if (found !== undefined) return found;
      }
    }
    if (Date.now() >= deadline) {
      throw new Error(`serial log ${path}: no line matched ${what} within ${timeoutMs} ms; last 2 KB:\n${tail}`);
    }
    await sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())), options.signal);
  }
}

/**
 * Polls a console log until a complete line (ending in a newline) matches `pattern`;
 * resolves with the match. Tolerates the file not existing yet. On timeout, throws an
 * error carrying the last 2 KB of the log.
 */
export function waitForSerial(
  path: string,
  pattern: RegExp,
  options: WaitForSerialOptions = {},
): Promise<RegExpMatchArray> {
  return waitForSerialLine(path, (line) => line.match(pattern) ?? undefined, String(pattern), options);
}

/** The tiny guest's READY line; its disks as in {@link GuestDisks} (list, disks, serials). */
export interface TinyReady extends GuestDisks {
  mode: string;
  vcpus: number;
  memtotalKb: number;
  uuid: string;
  serial: string;
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
  return { mode, vcpus: Number(vcpus), memtotalKb: Number(memtotalKb), uuid, serial, ...diskMaps(parseDiskList(diskList)) };
}

// --- disks, as the tiny guest and the rescue system print them (scripts/lib/guest-disks.sh)

/** One virtio disk as a guest sees it. */
export interface GuestDisk {
  name: string;
  /** Size in 512-byte sectors. */
  sectors: number;
  /** virtio serial, "" when none. */
  serial: string;
}

/** A guest's disks: as a list in the guest's order, and as name → sectors / serial maps. */
export interface GuestDisks {
  list: GuestDisk[];
  /** Disk name → size in 512-byte sectors, e.g. { vda: 131072 }. */
  disks: Record<string, number>;
  /** Disk name → virtio serial (libvirt's `<serial>`), "" when the disk has none. */
  serials: Record<string, string>;
}

/**
 * Decodes a "safe word" (scripts/lib/guest-disks.sh): `hex:<hex>` is bytes, anything else
 * is the bytes of the text itself.
 */
export function decodeSafeWord(word: string): Buffer {
  if (word.startsWith("hex:")) {
    const hex = word.slice(4);
    if (!/^(?:[0-9a-f]{2})*$/.test(hex)) throw new Error(`bad hex word ${JSON.stringify(word)}`);
    return Buffer.from(hex, "hex");
  }
  if (!/^[A-Za-z0-9._+@/=-]*$/.test(word)) throw new Error(`bad safe word ${JSON.stringify(word)}`);
  return Buffer.from(word, "latin1");
}

/**
 * Parses `vda:SECTORS:SERIAL,vdb:SECTORS:SERIAL,…` (SERIAL a safe word, possibly empty;
 * an old-style `vda:SECTORS` entry has serial ""). Throws on a malformed entry.
 */
export function parseDiskList(list: string): GuestDisk[] {
  const out: GuestDisk[] = [];
  for (const item of list.split(",")) {
    if (item === "") continue;
    const m = /^(vd[a-z]+):(\d+)(?::(.*))?$/.exec(item);
    if (!m) throw new Error(`bad disk entry ${JSON.stringify(item)} in ${JSON.stringify(list)}`);
    out.push({ name: m[1]!, sectors: Number(m[2]), serial: decodeSafeWord(m[3] ?? "").toString("utf8") });
  }
  return out;
}

function diskMaps(list: GuestDisk[]): GuestDisks {
  const disks: Record<string, number> = {};
  const serials: Record<string, string> = {};
  for (const d of list) {
    disks[d.name] = d.sectors;
    serials[d.name] = d.serial;
  }
  return { list, disks, serials };
}

/** A guest's data fields `NAME=WORD …` decoded: disk name → its first bytes. */
function parseDataFields(fields: string, line: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const field of fields.split(" ")) {
    if (field === "") continue;
    const m = /^(vd[a-z]+)=(\S*)$/.exec(field);
    if (!m) throw new Error(`bad data field ${JSON.stringify(field)} in ${JSON.stringify(line)}`);
    out[m[1]!] = decodeSafeWord(m[2]!);
  }
  return out;
}

/** As the guest prints them: the bytes up to the first NUL or newline, at most 64. */
export function markerText(head: Buffer): string {
  let end = Math.min(head.length, 64);
  const nul = head.indexOf(0);
  const nl = head.indexOf(0x0a);
  if (nul >= 0 && nul < end) end = nul;
  if (nl >= 0 && nl < end) end = nl;
  return head.subarray(0, end).toString("utf8");
}

export const TINY_DISKS_PATTERN = /CDH-TINY-DISKS disks=(\S*)/;
export const TINY_DATA_PATTERN = /CDH-TINY-DATA((?: vd[a-z]+=\S*)*)\s*$/;

/** The tiny guest's disks from a `CDH-TINY-DISKS disks=…` or `CDH-TINY-READY … disks=…` line. */
export function parseTinyDisks(line: string): GuestDisks {
  const m = TINY_DISKS_PATTERN.exec(line) ?? TINY_READY_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-TINY-DISKS or CDH-TINY-READY line: ${JSON.stringify(line)}`);
  return diskMaps(parseDiskList(m[m.length - 1]!));
}

/**
 * The tiny guest's `CDH-TINY-DATA vdb=WORD …` line: disk name → text of its first bytes
 * (up to NUL or newline, at most 64, decoded as UTF-8). Throws when the line is not one.
 */
export function parseTinyData(line: string): Record<string, string> {
  const m = TINY_DATA_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-TINY-DATA line: ${JSON.stringify(line)}`);
  const out: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(parseDataFields(m[1]!, line))) out[name] = bytes.toString("utf8");
  return out;
}

/**
 * Waits for a READY or DISKS line of the tiny guest whose disks satisfy `predicate`
 * (e.g. `(d) => d.disks.vdc === 2097152`); resolves with those disks. Use `fromOffset`
 * to skip what the log held before a change was requested.
 */
export function waitForDisks(
  path: string,
  predicate: (disks: GuestDisks) => boolean,
  options: WaitForSerialOptions = {},
): Promise<GuestDisks> {
  return waitForSerialLine(
    path,
    (line) => {
      if (!TINY_DISKS_PATTERN.test(line) && !TINY_READY_PATTERN.test(line)) return undefined;
      const disks = parseTinyDisks(line);
      return predicate(disks) ? disks : undefined;
    },
    "a CDH-TINY-READY/DISKS line satisfying the predicate",
    options,
  );
}

/** Waits for a CDH-TINY-DATA line whose data satisfy `predicate` (default: any). */
export function waitForTinyData(
  path: string,
  predicate: (data: Record<string, string>) => boolean = () => true,
  options: WaitForSerialOptions = {},
): Promise<Record<string, string>> {
  return waitForSerialLine(
    path,
    (line) => {
      if (!TINY_DATA_PATTERN.test(line)) return undefined;
      const data = parseTinyData(line);
      return predicate(data) ? data : undefined;
    },
    "a CDH-TINY-DATA line satisfying the predicate",
    options,
  );
}

// --- the rescue system (scripts/build-rescue-image.sh)

export interface RescueReady extends GuestDisks {
  /** Whether the kernel command line carried a valid `cdh.rescue_hash=` that root now has. */
  rootPassword: "set" | "unset";
}

export const RESCUE_READY_PATTERN = /CDH-RESCUE-READY disks=(\S*) root_password=(set|unset)/;
export const RESCUE_DATA_PATTERN = /CDH-RESCUE-DATA (vd[a-z]+)=(\S*)/;

/** Parses `CDH-RESCUE-READY disks=… root_password=set|unset`; throws when the line is not one. */
export function parseRescueReady(line: string): RescueReady {
  const m = RESCUE_READY_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-RESCUE-READY line: ${JSON.stringify(line)}`);
  return { ...diskMaps(parseDiskList(m[1]!)), rootPassword: m[2] as "set" | "unset" };
}

/** Parses `CDH-RESCUE-DATA vdX=WORD`: the disk and the text of its first bytes. */
export function parseRescueData(line: string): { name: string; text: string; bytes: Buffer } {
  const m = RESCUE_DATA_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-RESCUE-DATA line: ${JSON.stringify(line)}`);
  const bytes = decodeSafeWord(m[2]!);
  return { name: m[1]!, text: bytes.toString("utf8"), bytes };
}

/** Waits for the CDH-RESCUE-DATA line of disk `name`; resolves with its text. */
export async function waitForRescueData(path: string, name: string, options: WaitForSerialOptions = {}): Promise<string> {
  return waitForSerialLine(
    path,
    (line) => {
      if (!RESCUE_DATA_PATTERN.test(line)) return undefined;
      const d = parseRescueData(line);
      return d.name === name ? d.text : undefined;
    },
    `a CDH-RESCUE-DATA line for ${name}`,
    options,
  );
}
