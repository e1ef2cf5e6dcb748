/**
 * Where the agent's time goes: the commands its debug log timed (`command finished`,
 * `command failed`, `stream ended`, each with `durationMs` and its end time) inside one
 * measured window, laid on a time line. Every millisecond of the window is given to the
 * commands running then (`qemu-img create ∥ xorriso` when two overlap), or, when none
 * runs, to the agent's own work: before its first command (the API call, admission, the
 * journal), between commands (files, fsyncs, records) and after its last one (until the
 * client's poll sees the end state). The baseline's steps are timed by the bench itself;
 * the two are printed side by side with the difference per step.
 */
import { readFile } from "node:fs/promises";
import { median } from "./stats.js";

export interface TimedCommand {
  /** Wall-clock ms (epoch) when it started and ended. */
  start: number;
  end: number;
  label: string;
}

/** Step → milliseconds, for one measured run. */
export type Breakdown = Map<string, number>;

const BEFORE = "agent: before its first command (API call, admission, journal)";
const BETWEEN = "agent: between commands (files, fsync, records)";
const AFTER = "agent: after its last command, until the poll sees it";

/** The commands the agent's log timed that overlap [from, to] (wall-clock ms). */
export async function agentCommands(logFile: string, from: number, to: number): Promise<TimedCommand[]> {
  const text = await readFile(logFile, "utf8").catch(() => "");
  const out: TimedCommand[] = [];
  for (const line of text.split("\n")) {
    if (!line.includes('"command"')) continue;
    let j: { time?: string | number; msg?: string; command?: string; durationMs?: number };
    try {
      j = JSON.parse(line) as typeof j;
    } catch {
      continue;
    }
    if (j.msg !== "command finished" && j.msg !== "command failed" && j.msg !== "stream ended") continue;
    if (typeof j.command !== "string" || typeof j.durationMs !== "number") continue;
    const end = typeof j.time === "number" ? j.time : Date.parse(String(j.time));
    const start = end - j.durationMs;
    if (!Number.isFinite(end) || end < from || start > to) continue;
    out.push({ start, end, label: labelOf(j.command) });
  }
  return out;
}

/** `virsh -c URI define --file …` → `virsh define`; `qemu-img convert -p …` → `qemu-img convert`. */
export function labelOf(command: string): string {
  const words = command.split(/\s+/).filter(Boolean);
  const program = (words[0] ?? "?").split("/").at(-1)!;
  if (program === "virsh") {
    const rest = words.slice(1);
    if (rest[0] === "-c") rest.splice(0, 2);
    const sub = (rest[0] ?? "").replace(/^'/, "");
    return sub.startsWith("list") || rest.join(" ").includes(";") ? "virsh (script)" : `virsh ${sub}`;
  }
  if (program === "qemu-img") return `qemu-img ${words[1] ?? ""}`.trim();
  return program;
}

/**
 * Gives every millisecond of [from, to] to what ran then. Commands that only started
 * after `to` or ended before `from` are not there (agentCommands filters them).
 */
export function attribute(commands: readonly TimedCommand[], from: number, to: number): Breakdown {
  const edges = new Set<number>([from, to]);
  for (const c of commands) {
    if (c.start > from && c.start < to) edges.add(c.start);
    if (c.end > from && c.end < to) edges.add(c.end);
  }
  const points = [...edges].sort((a, b) => a - b);
  const firstStart = Math.min(...commands.map((c) => c.start), to);
  const lastEnd = Math.max(...commands.map((c) => c.end), from);
  const out: Breakdown = new Map();
  for (let i = 0; i + 1 < points.length; i++) {
    const a = points[i]!;
    const b = points[i + 1]!;
    const mid = (a + b) / 2;
    const running = [...new Set(commands.filter((c) => c.start <= mid && c.end >= mid).map((c) => c.label))].sort();
    const label = running.length ? running.join(" ∥ ") : mid < firstStart ? BEFORE : mid > lastEnd ? AFTER : BETWEEN;
    out.set(label, (out.get(label) ?? 0) + (b - a));
  }
  return out;
}

/**
 * The table of medians per step, agent beside baseline. A step missing from a run counts
 * 0 in that run, so the medians stay comparable with the runs' totals.
 */
export function renderBreakdown(title: string, ours: readonly Breakdown[], base: readonly Breakdown[]): string {
  const med = (runs: readonly Breakdown[], key: string) => median(runs.map((r) => r.get(key) ?? 0));
  const keys = (runs: readonly Breakdown[]) => [...new Set(runs.flatMap((r) => [...r.keys()]))];
  const ourKeys = keys(ours);
  const baseKeys = keys(base);
  const all = [...ourKeys, ...baseKeys.filter((k) => !ourKeys.includes(k))];
  // The agent's steps in the order they first ran, then the baseline's own.
  const rows = all.map((k) => {
    const a = ours.length ? med(ours, k) : 0;
    const b = base.length ? med(base, k) : 0;
    return { k, a, b, d: a - b };
  });
  const width = Math.max(4, ...rows.map((r) => r.k.length));
  const num = (x: number) => x.toFixed(0).padStart(7);
  const lines = [
    `  ${title} (median ms per step over ${ours.length} runs)`,
    `    ${"step".padEnd(width)}    agent  baseline    extra`,
    ...rows.map((r) => `    ${r.k.padEnd(width)}  ${num(r.a)}   ${num(r.b)}  ${(r.d >= 0 ? "+" : "") + r.d.toFixed(0).padStart(6)}`),
  ];
  const totalA = median(ours.map(sum));
  const totalB = median(base.map(sum));
  lines.push(`    ${"total (median of the runs' totals)".padEnd(width)}  ${num(totalA)}   ${num(totalB)}  ${(totalA - totalB >= 0 ? "+" : "") + (totalA - totalB).toFixed(0).padStart(6)}`);
  return lines.join("\n");
}

function sum(b: Breakdown): number {
  let s = 0;
  for (const v of b.values()) s += v;
  return s;
}

/** Times the baseline's steps one after another into a Breakdown. */
export class StepClock {
  readonly steps: Breakdown = new Map();
  async step<T>(label: string, work: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await work();
    } finally {
      this.steps.set(label, (this.steps.get(label) ?? 0) + (performance.now() - t));
    }
  }
}
