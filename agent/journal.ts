/**
 * The operation journal. A multi-step operation writes an entry before its first
 * side effect and removes it after its last; on start the agent finishes or rolls
 * back whatever entries it finds. One file per operation, written atomically.
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "./util/atomic-file.js";
import { setAside } from "./util/set-aside.js";
import { describeIssues, journalEntrySchema } from "./core/records.js";
import type { InstanceRecord } from "./model.js";
import type { DiskRecord } from "./disks/store.js";

export type JournalEntry =
  | { kind: "create"; instanceId: string; record: InstanceRecord; dataDisks?: DiskRecord[]; requestId: string; startedAt: string }
  | { kind: "terminate"; instanceId: string; record: InstanceRecord; requestId: string; startedAt: string }
  /** A reinstall: `record` is the new record (new image, new system disk file at its path); `oldPath` the disk it replaces. */
  | { kind: "reset"; instanceId: string; record: InstanceRecord; oldPath: string; requestId: string; startedAt: string }
  /** A resize (ResetInstancesType): `record` has the new size; `mode` how it applies (agent/instances/reset-type.ts). */
  | { kind: "retype"; instanceId: string; record: InstanceRecord; mode: "stopped" | "restart" | "live"; from: { cpu: number; memoryGiB: number }; requestId: string; startedAt: string }
  /** A new primary address (ModifyInstancesVpcAttribute): `record` has it; `from` the primary NIC's before; `wasRunning` whether to start it again. */
  | { kind: "readdress"; instanceId: string; record: InstanceRecord; from: { ipv4: string; subnetId: string; vpcId?: string; network: string }; wasRunning: boolean; requestId: string; startedAt: string };

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

  /**
   * Every entry on disk, each checked against its schema. One that cannot be read or fails
   * the check (a crash cannot make one, but a disk or a hand can) is renamed aside
   * (`….json.bad-<time>`) and reported, never fatal: the agent starts without it.
   */
  async readAll(): Promise<{ entries: JournalEntry[]; setAside: Array<{ file: string; aside: string; reason: string }> }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { entries: [], setAside: [] };
      throw error;
    }
    const entries: JournalEntry[] = [];
    const bad: Array<{ file: string; aside: string; reason: string }> = [];
    for (const name of names.sort()) {
      if (!name.endsWith(".json") || name.startsWith(".")) continue;
      const file = join(this.dir, name);
      const reason = await readFile(file, "utf8").then(
        (text) => {
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch (error) {
            return `not JSON: ${(error as Error).message}`;
          }
          const parsed = journalEntrySchema.safeParse(value);
          if (!parsed.success) return describeIssues(parsed.error);
          const entry = parsed.data as unknown as JournalEntry;
          if (entry.record.instanceId !== entry.instanceId) return "its instanceId is not its record's";
          if (name !== `${entry.instanceId}.${entry.kind}.json`) return `its file name is not ${entry.instanceId}.${entry.kind}.json`;
          entries.push(entry);
          return undefined;
        },
        (error: unknown) => `unreadable: ${(error as Error).message}`,
      );
      if (reason !== undefined) bad.push({ file, aside: await setAside(file), reason });
    }
    return { entries, setAside: bad };
  }
}
