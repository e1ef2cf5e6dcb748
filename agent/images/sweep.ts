/**
 * The image cache sweep's decision, as pure logic: which base files may be deleted.
 * A base file is kept while a catalog record names it, while it was handed out to a
 * new system disk moments ago (its overlay may not exist yet), or while any disk
 * file's backing chain (qemu-img info --backing-chain) contains it. Age plays no part.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";

export interface SweepInput {
  /** Every base file in the cache (canonical absolute paths). */
  candidates: readonly string[];
  /** Base files catalog records name (any state). */
  recordRefs: ReadonlySet<string>;
  /** Base files handed out by requireUsable within the grace period. */
  handedOut: ReadonlySet<string>;
  /** Every file in every disk's backing chain, the disks themselves included. */
  chainFiles: ReadonlySet<string>;
}

export interface SweepDecision {
  remove: string[];
  keep: Array<{ file: string; why: "record" | "handed-out" | "backing" }>;
}

export function decideSweep(input: SweepInput): SweepDecision {
  const decision: SweepDecision = { remove: [], keep: [] };
  for (const file of [...new Set(input.candidates)].sort()) {
    if (input.recordRefs.has(file)) decision.keep.push({ file, why: "record" });
    else if (input.handedOut.has(file)) decision.keep.push({ file, why: "handed-out" });
    else if (input.chainFiles.has(file)) decision.keep.push({ file, why: "backing" });
    else decision.remove.push(file);
  }
  return decision;
}

/** Every `*.qcow2` file below the given directories (recursively); missing directories are skipped. */
export async function listQcow2Files(dirs: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT" || (error as NodeJS.ErrnoException).code === "ENOTDIR") return;
      throw error;
    }
    for (const entry of entries) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile() && entry.name.endsWith(".qcow2")) found.push(full);
    }
  };
  for (const dir of dirs) await walk(dir);
  return found.sort();
}
