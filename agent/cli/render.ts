/**
 * What the operator commands print for humans: aligned tables, key/value lists and a
 * progress bar. Pure string functions (the caller writes them).
 */

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
  /** Right-aligned (numbers). */
  right?: boolean;
}

/** A cell as text: absent → "-", arrays joined by ",", objects as JSON; control characters shown escaped. */
export function cell(value: unknown): string {
  let text: string;
  if (value === undefined || value === null || value === "") text = "-";
  else if (Array.isArray(value)) text = value.length ? value.map((v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))).join(",") : "-";
  else if (typeof value === "object") text = JSON.stringify(value);
  else text = String(value);
  // A name from the API must not move the cursor or ring the terminal.
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Columns padded to their widest cell, two blanks apart, no trailing blanks. */
export function renderTable<T>(columns: ReadonlyArray<Column<T>>, rows: readonly T[]): string {
  const cells = rows.map((row) => columns.map((c) => cell(c.value(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => [...r[i]!].length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => {
        const pad = " ".repeat(widths[i]! - [...v].length);
        return columns[i]!.right ? pad + v : v + pad;
      })
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join("\n") + "\n";
}

/** Nested fields flattened to `A.B[0].C` paths. */
export function flatten(value: unknown, prefix = ""): Array<[string, unknown]> {
  if (Array.isArray(value)) {
    if (value.length === 0 || value.every((v) => typeof v !== "object" || v === null)) return [[prefix, value]];
    return value.flatMap((v, i) => flatten(v, `${prefix}[${i}]`));
  }
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 0) return [[prefix, "-"]];
    return entries.flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
  }
  return [[prefix, value]];
}

/** `Key: value` lines, keys padded, nested objects flattened. */
export function renderFields(record: Record<string, unknown>): string {
  const rows = flatten(record);
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${(k + ":").padEnd(width + 1)}  ${cell(v)}`).join("\n") + "\n";
}

/** `[#########...........]  45%`, `width` characters between the brackets. */
export function progressBar(percent: number, width = 30): string {
  const p = Math.max(0, Math.min(100, Math.floor(Number.isFinite(percent) ? percent : 0)));
  const done = Math.round((p / 100) * width);
  return `[${"#".repeat(done)}${".".repeat(width - done)}] ${String(p).padStart(3)}%`;
}

/** Bytes, GiB-based sizes as the API gives them: `12 GiB`. */
export function gib(value: unknown): string {
  return typeof value === "number" ? `${value} GiB` : cell(value);
}
