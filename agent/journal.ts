/**
 * The operation journal. A multi-step operation writes an entry before its first
 * side effect and removes it after its last; on start the agent finishes or rolls
 * back whatever entries it finds. One file per operation, written atomically.
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "./util/atomic-file.js";
import type { InstanceRecord } from "./model.js";
import type { DiskRecord } from "./disks/store.js";

export type JournalEntry =
  | { kind: "create"; instanceId: string; record: InstanceRecord; dataDisks?: DiskRecord[]; requestId: string; startedAt: string }
  | { kind: "terminate"; instanceId: string; record: InstanceRecord; requestId: string; startedAt: string }
  /** A reinstall: `record` is the new record (new image, new system disk file at its path); `oldPath` the disk it replaces. */
  | { kind: "reset"; instanceId: string; record: InstanceRecord; oldPath: string; requestId: string; startedAt: string };

export class Journal {
  constructor(private readonly dir: string) {}

  private pathOf(entry: { kind: string; instanceId: string }): string {
    return join(this.dir, `${entry.instanceId}.${entry.kind}.json`);
  }

  async write(entry: JournalEntry): Promise<void> {
    await writeFileAtomic(this.pathOf(entry), JSON.stringify(entry));
  }

  async remove(entry: { kind: string; instanceId: string }): Promise<void> {
    await rm(this.pathOf(entry), { force: true });
  }

  /** Every entry on disk; unreadable ones (a crash cannot make them, but a disk can) are reported, not fatal. */
  async readAll(): Promise<{ entries: JournalEntry[]; unreadable: string[] }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { entries: [], unreadable: [] };
      throw error;
    }
    const entries: JournalEntry[] = [];
    const unreadable: string[] = [];
    for (const name of names.sort()) {
      if (!name.endsWith(".json") || name.startsWith(".")) continue;
      try {
        entries.push(JSON.parse(await readFile(join(this.dir, name), "utf8")) as JournalEntry);
      } catch {
        unreadable.push(name);
      }
    }
    return { entries, unreadable };
  }
}
