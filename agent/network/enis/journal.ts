/**
 * The ENI operations' journal: an attach, a detach or an address change writes an entry
 * before its first side effect and removes it after its last, like the agent's journal
 * (agent/journal.ts: one file per operation, written atomically, read back at start). It has
 * its own directory (`<data dir>/eni-journal/`) because the agent's journal entries are the
 * instance operations' (each kind resumed by instance recovery); an entry here says, for
 * every instance it touches, its NICs before and after, and the ENI store's entries before
 * and after, so that start-up recovery can finish the change (or, when that fails, undo it)
 * with the guest, the definition, the record, the drive and the store in line.
 */
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { NicRecord } from "../../model.js";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { setAside } from "../../util/set-aside.js";
import type { StoredEni } from "./model.js";

export type EniOp = "attach" | "detach" | "addresses" | "groups";

export interface EniJournalEntry {
  id: string;
  op: EniOp;
  eniId: string;
  /** The instances whose NICs change: each one's NICs before and after. */
  instances: Array<{ instanceId: string; before: NicRecord[]; after: NicRecord[] }>;
  /** The store entries the change touches, before and after (null: absent). */
  store: Array<{ eniId: string; before: StoredEni | null; after: StoredEni | null }>;
  requestId: string;
  startedAt: string;
}

const nicSchema = z.object({ mac: z.string(), network: z.string() }).passthrough();
const storedSchema = z.object({ eniId: z.string(), name: z.string() }).passthrough();

const entrySchema = z
  .object({
    id: z.string().regex(/^[a-z0-9-]{8,64}$/),
    op: z.enum(["attach", "detach", "addresses", "groups"]),
    eniId: z.string(),
    instances: z.array(z.object({ instanceId: z.string(), before: z.array(nicSchema), after: z.array(nicSchema) }).strict()),
    store: z.array(z.object({ eniId: z.string(), before: storedSchema.nullable(), after: storedSchema.nullable() }).strict()),
    requestId: z.string(),
    startedAt: z.string(),
  })
  .strict();

export class EniJournal {
  constructor(private readonly dir: string) {}

  private pathOf(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  async write(entry: EniJournalEntry): Promise<void> {
    await writeFileAtomic(this.pathOf(entry.id), JSON.stringify(entry));
  }

  async remove(id: string): Promise<void> {
    await rm(this.pathOf(id), { force: true });
  }

  /** Every entry, oldest first; one that fails its check is set aside (reported, never fatal). */
  async readAll(): Promise<{ entries: EniJournalEntry[]; setAside: Array<{ file: string; aside: string; reason: string }> }> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const entries: EniJournalEntry[] = [];
    const bad: Array<{ file: string; aside: string; reason: string }> = [];
    for (const name of (await readdir(this.dir)).sort()) {
      if (!name.endsWith(".json") || name.startsWith(".")) continue;
      const file = join(this.dir, name);
      let reason: string | undefined;
      try {
        const parsed = entrySchema.safeParse(JSON.parse(await readFile(file, "utf8")));
        if (parsed.success && name === `${parsed.data.id}.json`) entries.push(parsed.data as unknown as EniJournalEntry);
        else reason = parsed.success ? "its file name is not its id" : parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      } catch (error) {
        reason = `unreadable: ${(error as Error).message}`;
      }
      if (reason !== undefined) bad.push({ file, aside: await setAside(file), reason });
    }
    return { entries: entries.sort((a, b) => a.startedAt.localeCompare(b.startedAt)), setAside: bad };
  }
}
