import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { METRIC_COUNT, METRIC_INDEX } from "../../../../agent/monitor/metrics.js";
import { DEFAULT_RETENTION_S, SeriesStore } from "../../../../agent/monitor/store.js";

const ID = "ins-aaaaaaaa";
const CPU = METRIC_INDEX.CPUUsage;
const MEM = METRIC_INDEX.MemUsage;
/** A day boundary, so every period's bucket starts here. */
const T0 = 1_765_065_600;

function values(cpu: number, mem = Number.NaN): Float64Array {
  const v = new Float64Array(METRIC_COUNT).fill(Number.NaN);
  v[CPU] = cpu;
  v[MEM] = mem;
  return v;
}

let dir: string;
let store: SeriesStore;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "cdh-monitor-"));
  store = new SeriesStore({ dir });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("SeriesStore", () => {
  it("averages the samples of one 10 s bucket, and answers the bucket at once", () => {
    store.record(ID, T0 + 1, values(10));
    store.record(ID, T0 + 3, values(20));
    expect(store.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 + 9 })).toEqual({ timestamps: [T0], avg: [15], max: [15], min: [15] });
  });

  it("rolls 10 s buckets up into 60 s (avg, max, min) as each closes, and 60 s into 300 s", () => {
    for (let i = 0; i < 30; i++) store.record(ID, T0 + i * 10, values(i % 6 === 5 ? 90 : 30));
    store.record(ID, T0 + 300, values(0)); // closes the 5th minute
    const m = store.query({ instanceId: ID, metric: CPU, period: 60, start: T0, end: T0 + 299 });
    expect(m.timestamps).toEqual([0, 1, 2, 3, 4].map((k) => T0 + k * 60));
    expect(m.avg.every((x) => x === 40)).toBe(true);
    expect(m.max.every((x) => x === 90)).toBe(true);
    expect(m.min.every((x) => x === 30)).toBe(true);
    const five = store.query({ instanceId: ID, metric: CPU, period: 300, start: T0, end: T0 });
    expect(five).toEqual({ timestamps: [T0], avg: [40], max: [90], min: [30] });
  });

  it("shows a 60 s bucket under way from its closed 10 s buckets", () => {
    store.record(ID, T0, values(10));
    store.record(ID, T0 + 10, values(30));
    expect(store.query({ instanceId: ID, metric: CPU, period: 60, start: T0, end: T0 }).avg).toEqual([10]);
    store.record(ID, T0 + 20, values(50));
    expect(store.query({ instanceId: ID, metric: CPU, period: 60, start: T0, end: T0 }).avg).toEqual([20]);
  });

  it("answers only the points inside the window, aligned to the period, and none where nothing was sampled", () => {
    for (const k of [0, 1, 2, 5, 6]) store.record(ID, T0 + k * 10, values(k));
    const s = store.query({ instanceId: ID, metric: CPU, period: 10, start: T0 + 15, end: T0 + 55 });
    expect(s.timestamps).toEqual([T0 + 20, T0 + 50]);
    expect(s.avg).toEqual([2, 5]);
  });

  it("leaves a metric's point out where its value was not computable (NaN) while others have it", () => {
    store.record(ID, T0, values(5));
    expect(store.query({ instanceId: ID, metric: MEM, period: 10, start: T0, end: T0 }).timestamps).toEqual([]);
    expect(store.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 }).timestamps).toEqual([T0]);
  });

  it("forgets points older than the retention: the ring overwrites them", () => {
    const small = new SeriesStore({ dir: join(dir, "small"), retentionS: { 10: 60 } });
    for (let i = 0; i < 9; i++) small.record(ID, T0 + i * 10, values(i));
    const s = small.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 + 80 });
    expect(s.timestamps).toEqual([3, 4, 5, 6, 7, 8].map((k) => T0 + k * 10));
    small.close();
  });

  it("keeps its points across a restart (a new store on the same directory)", () => {
    for (let i = 0; i < 7; i++) store.record(ID, T0 + i * 10, values(i));
    store.close();
    store = new SeriesStore({ dir });
    expect(store.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 + 60 }).avg).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(store.query({ instanceId: ID, metric: CPU, period: 60, start: T0, end: T0 }).avg).toEqual([2.5]);
  });

  it("makes a file anew when its retention changed (another size)", () => {
    store.record(ID, T0, values(1));
    store.close();
    store = new SeriesStore({ dir, retentionS: { 10: 3600 } });
    expect(store.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 }).timestamps).toEqual([]);
    store.record(ID, T0 + 10, values(2));
    expect(store.query({ instanceId: ID, metric: CPU, period: 10, start: T0, end: T0 + 10 }).avg).toEqual([2]);
  });

  it("answers nothing for an instance it has never seen", () => {
    expect(store.query({ instanceId: "ins-bbbbbbbb", metric: CPU, period: 300, start: T0, end: T0 + 3000 }).timestamps).toEqual([]);
  });

  it("makes each ring at its full length, sparse: the disk holds only what was written", () => {
    store.record(ID, T0, values(1));
    const l = store.layout(10);
    expect(l.slots).toBe(DEFAULT_RETENTION_S[10] / 10);
    const st = statSync(join(dir, ID, "10.ring"));
    expect(st.size).toBe(32 + l.slots * l.recordBytes);
    expect(store.diskBytes()).toBeLessThan(st.size);
  });

  it("sweeps the series of instances gone past the retention, and keeps the others", () => {
    store.record(ID, T0, values(1));
    store.record("ins-cccccccc", T0, values(1));
    expect(store.sweep(new Set([ID]), 60, Date.now() + 120_000)).toEqual(["ins-cccccccc"]);
    expect(store.instances()).toEqual([ID]);
    expect(store.sweep(new Set(), 3600)).toEqual([]);
  });
});
