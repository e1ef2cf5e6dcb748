/**
 * The series store: fixed-size ring files on plain files, one per instance and period,
 * under the monitor directory (<data_dir>/monitor by default):
 *
 *   <dir>/<instanceId>/<period>.ring
 *
 * A file is a 32-byte header (magic "CDHMON01", period, slots, metrics, statistics per
 * metric) and `slots` fixed-size records: a uint32 timestamp (Unix seconds, aligned to the
 * period; 0 = never written) and, per stored metric (metrics.ts STORED_METRICS, in order),
 * float32 values: one (the average) at 10 s, three (avg, max, min) at the rolled-up
 * periods. The record of time t sits at slot (t / period) mod slots, so a file never grows
 * past its size (made at its full length, sparse: the disk holds only what was written),
 * the oldest point is overwritten when the ring wraps (that is the retention), and a record
 * counts only where its stored timestamp is the one a query expects there.
 *
 * Roll-ups: a 10 s record is rewritten at every sample of its bucket (the running average,
 * so a short collection interval gives points at once); when a bucket of one period closes,
 * the bucket of the next period that holds it is recomputed from the finer ring (present
 * records only: avg of averages, max of maxima, min of minima) and written, cascading to
 * the next period when that one closed too. The data is read back from the files, not from
 * memory, so a restart loses at most the bucket under way; memory is O(instances × metrics).
 *
 * Why not an embedded database: the access pattern is a fixed-size ring of fixed-size
 * records addressed by time, which plain files give with one pwrite per sample and one or
 * two preads per query, with a size on disk known in advance and no native build (README).
 */
import { closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { METRIC_COUNT, PERIODS, type Period } from "./metrics.js";

const MAGIC = Buffer.from("CDHMON01", "ascii");
const HEADER_BYTES = 32;
/** A query answers at most this many points (the Monitor API's limit). */
export const MAX_POINTS = 1440;

/** Retention of each period, seconds: the Monitor API's (10 s: a day … 86400 s: half a year). */
export const DEFAULT_RETENTION_S: Readonly<Record<Period, number>> = Object.freeze({
  10: 86_400,
  60: 15 * 86_400,
  300: 31 * 86_400,
  3600: 93 * 86_400,
  86400: 186 * 86_400,
});

export interface SeriesQuery {
  instanceId: string;
  /** Column in STORED_METRICS. */
  metric: number;
  period: Period;
  /** Unix seconds, both inclusive; aligned down to the period by the store. */
  start: number;
  end: number;
}

/** Points in time order; missing points are absent. At 10 s max and min equal avg. */
export interface Series {
  timestamps: number[];
  avg: number[];
  max: number[];
  min: number[];
}

export interface SeriesStoreOptions {
  dir: string;
  retentionS?: Partial<Record<Period, number>>;
  /**
   * Open files kept (least recently used closed first). Default 1024: every sample writes
   * each instance's 10 s file and each minute its 60 s file, so 200 instances keep 400 hot;
   * a smaller cache reopens files every sample (on the 2-CPU test host 200 instances cost
   * 53 ms of CPU per sample with 256 against 21 ms with 1024). The unit sets LimitNOFILE=65536.
   */
  maxOpenFiles?: number;
}

interface Layout {
  period: Period;
  slots: number;
  stats: 1 | 3;
  recordBytes: number;
}

const ID_RE = /^[a-z]+-[a-z0-9]{1,32}$/;

interface Accumulator {
  bucket: number;
  count: number;
  sum: Float64Array;
  n: Float64Array;
}

export class SeriesStore {
  readonly dir: string;
  private readonly layouts: Map<Period, Layout>;
  private readonly fds = new Map<string, number>();
  private readonly maxOpen: number;
  /** The 10 s bucket under way per instance. */
  private readonly acc = new Map<string, Accumulator>();
  private readonly buf: Buffer;

  constructor(o: SeriesStoreOptions) {
    this.dir = o.dir;
    this.maxOpen = o.maxOpenFiles ?? 1024;
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    this.layouts = new Map(
      PERIODS.map((p) => {
        const retention = o.retentionS?.[p] ?? DEFAULT_RETENTION_S[p];
        const slots = Math.max(1, Math.ceil(retention / p));
        const stats: 1 | 3 = p === 10 ? 1 : 3;
        return [p, { period: p, slots, stats, recordBytes: 4 + METRIC_COUNT * stats * 4 }];
      }),
    );
    const largest = Math.max(...[...this.layouts.values()].map((l) => l.recordBytes));
    this.buf = Buffer.alloc(largest * (MAX_POINTS + 2));
  }

  /** Slots of each period (for the README and the benchmark's size figures). */
  layout(period: Period): Readonly<Layout> {
    return this.layouts.get(period)!;
  }

  /**
   * One sample of an instance at `atS` (Unix seconds): folded into its 10 s bucket, which
   * is rewritten; a bucket that closed is rolled up into the longer periods.
   */
  record(instanceId: string, atS: number, values: Float64Array): void {
    if (!ID_RE.test(instanceId)) throw new Error(`bad instance ID ${JSON.stringify(instanceId)}`);
    const bucket = Math.floor(atS / 10) * 10;
    let a = this.acc.get(instanceId);
    if (a && a.bucket !== bucket) {
      if (bucket > a.bucket) this.rollUp(instanceId, a.bucket);
      a = undefined;
    }
    if (!a) {
      a = { bucket, count: 0, sum: new Float64Array(METRIC_COUNT), n: new Float64Array(METRIC_COUNT) };
      this.acc.set(instanceId, a);
    }
    a.count++;
    for (let i = 0; i < METRIC_COUNT; i++) {
      const v = values[i]!;
      if (!Number.isNaN(v)) {
        a.sum[i]! += v;
        a.n[i]! += 1;
      }
    }
    const avg = new Float64Array(METRIC_COUNT);
    for (let i = 0; i < METRIC_COUNT; i++) avg[i] = a.n[i]! > 0 ? a.sum[i]! / a.n[i]! : Number.NaN;
    this.writeRecord(instanceId, 10, bucket, [avg]);
  }

  /**
   * Writes a whole record of one period directly (the benchmark fills a store this way,
   * and roll-ups do). `stats` holds avg (and, for rolled-up periods, max and min).
   */
  writeRecord(instanceId: string, period: Period, ts: number, stats: readonly Float64Array[]): void {
    const l = this.layouts.get(period)!;
    const b = this.buf;
    b.writeUInt32LE(ts, 0);
    for (let s = 0; s < l.stats; s++) {
      const src = stats[Math.min(s, stats.length - 1)]!;
      for (let i = 0; i < METRIC_COUNT; i++) b.writeFloatLE(src[i]!, 4 + (s * METRIC_COUNT + i) * 4);
    }
    const fd = this.fd(instanceId, l);
    writeSync(fd, b, 0, l.recordBytes, HEADER_BYTES + this.slotOf(l, ts) * l.recordBytes);
  }

  /** Recomputes, from the finer ring, the bucket of each longer period that holds the closed 10 s bucket `ts`. */
  private rollUp(instanceId: string, ts: number): void {
    let finer: Period = 10;
    let closedEnd = ts + 10;
    for (const p of PERIODS) {
      if (p === 10) continue;
      const bucket = Math.floor((closedEnd - 1) / p) * p;
      const stats = this.aggregate(instanceId, finer, bucket, bucket + p - finer);
      if (stats) this.writeRecord(instanceId, p, bucket, stats);
      // The next period is touched only when this bucket is complete.
      if (closedEnd !== bucket + p) break;
      finer = p;
      closedEnd = bucket + p;
    }
  }

  /** avg, max, min per metric over the records of `period` in [from, to]; undefined when none. */
  private aggregate(instanceId: string, period: Period, from: number, to: number): Float64Array[] | undefined {
    const rows = this.readRange(instanceId, period, from, to);
    if (rows.length === 0) return undefined;
    const l = this.layouts.get(period)!;
    const avg = new Float64Array(METRIC_COUNT);
    const max = new Float64Array(METRIC_COUNT).fill(Number.NaN);
    const min = new Float64Array(METRIC_COUNT).fill(Number.NaN);
    for (let i = 0; i < METRIC_COUNT; i++) {
      let s = 0;
      let n = 0;
      for (const r of rows) {
        const a = r.values[i]!;
        if (Number.isNaN(a)) continue;
        const hi = l.stats === 3 ? r.values[METRIC_COUNT + i]! : a;
        const lo = l.stats === 3 ? r.values[2 * METRIC_COUNT + i]! : a;
        s += a;
        n++;
        if (!(hi <= max[i]!)) max[i] = hi;
        if (!(lo >= min[i]!)) min[i] = lo;
      }
      avg[i] = n > 0 ? s / n : Number.NaN;
    }
    return [avg, max, min];
  }

  /** Records of one period whose timestamps lie in [from, to] (aligned), in time order, all values decoded. */
  private readRange(instanceId: string, period: Period, from: number, to: number): Array<{ ts: number; values: Float32Array }> {
    const out: Array<{ ts: number; values: Float32Array }> = [];
    const n = METRIC_COUNT * this.layouts.get(period)!.stats;
    this.scan(instanceId, period, from, to, (ts, b, off) => {
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) values[i] = b.readFloatLE(off + 4 + i * 4);
      out.push({ ts, values });
    });
    return out;
  }

  /**
   * Calls `visit` for every record of one period whose timestamp lies in [from, to]
   * (aligned), in time order, with the buffer and the record's offset in it (valid during
   * the call only). One or two preads of consecutive slots.
   */
  private scan(instanceId: string, period: Period, from: number, to: number, visit: (ts: number, b: Buffer, off: number) => void): void {
    const l = this.layouts.get(period)!;
    let first = Math.ceil(from / period) * period;
    const last = Math.floor(to / period) * period;
    if (last < first) return;
    const fd = this.fd(instanceId, l, false);
    if (fd === undefined) return;
    // A window longer than the ring: its older part is overwritten already.
    first = Math.max(first, last - (l.slots - 1) * period);
    const count = Math.min((last - first) / period + 1, MAX_POINTS + 1);
    const startSlot = this.slotOf(l, first);
    let done = 0;
    while (done < count) {
      const slot = (startSlot + done) % l.slots;
      const n = Math.min(count - done, l.slots - slot);
      const got = readSync(fd, this.buf, 0, n * l.recordBytes, HEADER_BYTES + slot * l.recordBytes);
      for (let k = 0; k < n && (k + 1) * l.recordBytes <= got; k++) {
        const expected = first + (done + k) * period;
        const off = k * l.recordBytes;
        if (this.buf.readUInt32LE(off) === expected) visit(expected, this.buf, off);
      }
      done += n;
    }
  }

  /** One metric of one instance over [start, end] at a period (at most MAX_POINTS + 1 slots read). */
  query(q: SeriesQuery): Series {
    const l = this.layouts.get(q.period)!;
    const out: Series = { timestamps: [], avg: [], max: [], min: [] };
    const at = 4 + q.metric * 4;
    const stride = METRIC_COUNT * 4;
    this.scan(q.instanceId, q.period, q.start, q.end, (ts, b, off) => {
      const a = b.readFloatLE(off + at);
      if (Number.isNaN(a)) return;
      out.timestamps.push(ts);
      out.avg.push(a);
      out.max.push(l.stats === 3 ? b.readFloatLE(off + at + stride) : a);
      out.min.push(l.stats === 3 ? b.readFloatLE(off + at + 2 * stride) : a);
    });
    return out;
  }

  /** Bytes the store's files hold on disk (allocated blocks, not their sparse length). */
  diskBytes(): number {
    let total = 0;
    for (const id of safeReaddir(this.dir)) {
      for (const f of safeReaddir(join(this.dir, id))) {
        try {
          total += statSync(join(this.dir, id, f)).blocks * 512;
        } catch {
          // Removed meanwhile.
        }
      }
    }
    return total;
  }

  /**
   * Removes the series of instances not in `keep` whose files were last written more than
   * `olderThanS` ago (terminated instances, once their longest retention has passed).
   */
  sweep(keep: ReadonlySet<string>, olderThanS: number, nowMs = Date.now()): string[] {
    const removed: string[] = [];
    for (const id of safeReaddir(this.dir)) {
      if (keep.has(id) || !ID_RE.test(id)) continue;
      const dir = join(this.dir, id);
      let newest = 0;
      for (const f of safeReaddir(dir)) {
        try {
          newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
        } catch {
          // Removed meanwhile.
        }
      }
      if (nowMs - newest < olderThanS * 1000) continue;
      this.closeInstance(id);
      rmSync(dir, { recursive: true, force: true });
      removed.push(id);
    }
    return removed;
  }

  /** Instances with series on disk. */
  instances(): string[] {
    return safeReaddir(this.dir).filter((id) => ID_RE.test(id));
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  private closeInstance(instanceId: string): void {
    for (const p of PERIODS) {
      const key = `${instanceId}/${p}`;
      const fd = this.fds.get(key);
      if (fd !== undefined) {
        closeSync(fd);
        this.fds.delete(key);
      }
    }
    this.acc.delete(instanceId);
  }

  private slotOf(l: Layout, ts: number): number {
    return Math.floor(ts / l.period) % l.slots;
  }

  private fd(instanceId: string, l: Layout): number;
  private fd(instanceId: string, l: Layout, create: false): number | undefined;
  private fd(instanceId: string, l: Layout, create = true): number | undefined {
    const key = `${instanceId}/${l.period}`;
    const open = this.fds.get(key);
    if (open !== undefined) {
      // Least recently used last out: move to the end.
      this.fds.delete(key);
      this.fds.set(key, open);
      return open;
    }
    const path = join(this.dir, instanceId, `${l.period}.ring`);
    let fd: number;
    if (existsSync(path)) {
      fd = openSync(path, "r+");
      if (!this.headerMatches(fd, l)) {
        // Another format or retention: the file is made again (its points are lost).
        closeSync(fd);
        if (!create) return undefined;
        fd = this.create(path, l);
      }
    } else {
      if (!create) return undefined;
      mkdirSync(join(this.dir, instanceId), { recursive: true, mode: 0o750 });
      fd = this.create(path, l);
    }
    this.fds.set(key, fd);
    while (this.fds.size > this.maxOpen) {
      const [oldKey, oldFd] = this.fds.entries().next().value as [string, number];
      this.fds.delete(oldKey);
      closeSync(oldFd);
    }
    return fd;
  }

  private create(path: string, l: Layout): number {
    const fd = openSync(path, "w+", 0o640);
    const h = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(h, 0);
    h.writeUInt32LE(l.period, 8);
    h.writeUInt32LE(l.slots, 12);
    h.writeUInt32LE(METRIC_COUNT, 16);
    h.writeUInt32LE(l.stats, 20);
    writeSync(fd, h, 0, HEADER_BYTES, 0);
    ftruncateSync(fd, HEADER_BYTES + l.slots * l.recordBytes);
    return fd;
  }

  private headerMatches(fd: number, l: Layout): boolean {
    const h = Buffer.alloc(HEADER_BYTES);
    if (readSync(fd, h, 0, HEADER_BYTES, 0) !== HEADER_BYTES) return false;
    return (
      h.subarray(0, 8).equals(MAGIC) &&
      h.readUInt32LE(8) === l.period &&
      h.readUInt32LE(12) === l.slots &&
      h.readUInt32LE(16) === METRIC_COUNT &&
      h.readUInt32LE(20) === l.stats &&
      fstatSync(fd).size === HEADER_BYTES + l.slots * l.recordBytes
    );
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
