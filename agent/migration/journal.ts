/**
 * The migration journal: one file per instance and role (source or destination) under
 * <data_dir>/migrations, written before each step's side effects and removed after the last.
 * On start the agent settles every entry it finds (agent/migration/recovery.ts) before its
 * instance recovery runs, so a half-moved instance is never adopted twice.
 */
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic-file.js";
import { setAside } from "../util/set-aside.js";
import { checkInstanceRecord } from "../core/records.js";
import type { InstanceRecord } from "../model.js";
import type { DiskRecord } from "../disks/store.js";

/**
 * Source: reserved (the destination holds the room) → prepared (its disks, drive, firewall and
 * definition are ready) → transferring (stopped for a cold move; QEMU's job for a live one) →
 * transferred (the guest's state is on the destination) → committed (the destination owns it;
 * only the source's own leftovers remain to delete).
 * Destination: reserved → prepared → committed.
 */
export type MigrationPhase = "reserved" | "prepared" | "transferring" | "transferred" | "committed";

export interface MigrationEntry {
  version: 1;
  role: "source" | "destination";
  migrationId: string;
  instanceId: string;
  /** The other side's host ID. */
  peerHostId: string;
  /** The source's endpoint for the destination (source entries). */
  peerEndpoint?: string;
  live: boolean;
  /** The instance ran when the move began (a cold move starts it again on the destination). */
  wasRunning: boolean;
  phase: MigrationPhase;
  /** The record on this side (a destination's has its own paths). */
  record: InstanceRecord;
  dataDisks: DiskRecord[];
  /** Each disk's exact virtual size (bytes) by target: the destination makes its disks at these sizes. */
  diskBytes?: Record<string, number>;
  requestId: string;
  startedAt: string;
}

export class MigrationJournal {
  constructor(private readonly dir: string) {}

  private file(instanceId: string, role: MigrationEntry["role"]): string {
    return join(this.dir, `${instanceId}.${role}.json`);
  }

  async write(entry: MigrationEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file(entry.instanceId, entry.role), JSON.stringify(entry));
  }

  async remove(instanceId: string, role: MigrationEntry["role"]): Promise<void> {
    await rm(this.file(instanceId, role), { force: true });
  }

  async read(instanceId: string, role: MigrationEntry["role"]): Promise<MigrationEntry | undefined> {
    try {
      return parseEntry(await readFile(this.file(instanceId, role), "utf8"));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  }

  /** Every entry; one that cannot be read is set aside (renamed) and reported. */
  async readAll(onBad: (file: string, reason: string) => void): Promise<MigrationEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const out: MigrationEntry[] = [];
    for (const name of names.sort()) {
      if (!/^ins-[a-z0-9]{8}\.(source|destination)\.json$/.test(name)) continue;
      const file = join(this.dir, name);
      try {
        const entry = parseEntry(await readFile(file, "utf8"));
        if (name !== `${entry.instanceId}.${entry.role}.json`) throw new Error("its name is not its entry's");
        out.push(entry);
      } catch (error) {
        await setAside(file);
        onBad(file, (error as Error).message);
      }
    }
    return out;
  }
}

const PHASES = new Set<MigrationPhase>(["reserved", "prepared", "transferring", "transferred", "committed"]);

function parseEntry(text: string): MigrationEntry {
  const v = JSON.parse(text) as MigrationEntry;
  if (v.version !== 1 || (v.role !== "source" && v.role !== "destination") || !PHASES.has(v.phase)) throw new Error("not a migration journal entry");
  if (typeof v.migrationId !== "string" || typeof v.peerHostId !== "string" || !Array.isArray(v.dataDisks)) throw new Error("a field is missing");
  const record = checkInstanceRecord(v.record);
  if (record.instanceId !== v.instanceId) throw new Error("its record is another instance's");
  return { ...v, record };
}
