/** Small numeric helpers and the result table the bench prints. */

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Wall-clock milliseconds of `fn`. */
export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * One row of the result table. `ratio` is ours / baseline; `goal` says which way
 * is good: "ratio-max" (ratio ≤ limit), "ratio-min" (ratio ≥ limit), "abs-max"
 * (ours < limit, in ours' unit). `met` is undefined for rows without a target.
 */
export interface Row {
  part: string;
  what: string;
  ours: number;
  baseline: number | undefined;
  unit: string;
  target: string;
  met: boolean | undefined;
  note?: string;
}

export function ratioRow(o: {
  part: string;
  what: string;
  ours: number;
  baseline: number;
  unit: string;
  /** ours/baseline must be ≤ max (or ≥ min). */
  max?: number;
  min?: number;
  note?: string;
}): Row {
  const r = o.ours / o.baseline;
  const target = o.max !== undefined ? `≤ ${o.max}×` : o.min !== undefined ? `≥ ${o.min}×` : "—";
  const met = o.max !== undefined ? r <= o.max : o.min !== undefined ? r >= o.min : undefined;
  return { part: o.part, what: o.what, ours: o.ours, baseline: o.baseline, unit: o.unit, target, met, ...(o.note ? { note: o.note } : {}) };
}

export function formatNumber(x: number | undefined, unit: string): string {
  if (x === undefined || Number.isNaN(x)) return "—";
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return `${x.toFixed(digits)} ${unit}`.trim();
}

export function renderTable(rows: readonly Row[]): string {
  const header = ["", "what", "ours", "baseline", "ratio", "target", "met?"];
  const body = rows.map((r) => [
    r.part,
    r.what,
    formatNumber(r.ours, r.unit),
    formatNumber(r.baseline, r.unit),
    r.baseline ? `${(r.ours / r.baseline).toFixed(2)}×` : "—",
    r.target,
    r.met === undefined ? "—" : r.met ? "yes" : "NO",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
