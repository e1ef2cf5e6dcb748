/**
 * The host's ENIs in one JSON file (`<data dir>/enis.json`), rewritten atomically (temp file,
 * fsync, rename) like the security groups' store: a SIGKILL leaves the old or the new file.
 * It holds every ENI's name, description, tags and times, and the network part of the
 * unattached ones (model.ts). A file that fails its check is set aside for the operator and
 * the host starts with no unattached ENIs (the attached ones are in their records).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { setAside } from "../../util/set-aside.js";
import { ENI_ID, type EniStoreState } from "./model.js";

export function enisFile(root: string): string {
  return join(root, "enis.json");
}

const ipv4 = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/);

const netSchema = z
  .object({
    mac: z.string().regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/),
    subnetId: z.string(),
    vpcId: z.string(),
    network: z.string(),
    primaryIp: ipv4,
    secondaryIps: z.array(ipv4),
    securityGroupIds: z.array(z.string()),
  })
  .strict();

const eniSchema = z
  .object({
    eniId: z.string().regex(ENI_ID),
    name: z.string(),
    description: z.string(),
    createdTime: z.string(),
    tags: z.array(z.object({ key: z.string(), value: z.string() }).strict()),
    attachTime: z.string().optional(),
    net: netSchema.optional(),
  })
  .strict();

const fileSchema = z
  .object({ version: z.literal(1), enis: z.array(eniSchema) })
  .strict()
  .refine((s) => new Set(s.enis.map((e) => e.eniId)).size === s.enis.length, "an ENI ID is listed twice");

export class EniStore {
  private current: EniStoreState = { version: 1, enis: [] };

  constructor(private readonly o: { file: string; logger?: Pick<Logger, "warn"> }) {}

  /** The current state (after load). Callers copy before changing (structuredClone). */
  get state(): EniStoreState {
    return this.current;
  }

  async load(): Promise<EniStoreState> {
    let text: string | undefined;
    try {
      text = await readFile(this.o.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    if (text === undefined) return this.current;
    let reason: string;
    try {
      const parsed = fileSchema.safeParse(JSON.parse(text));
      if (parsed.success) {
        this.current = parsed.data as EniStoreState;
        return this.current;
      }
      reason = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(file)"}: ${i.message}`).join("; ");
    } catch (error) {
      reason = `not JSON: ${(error as Error).message}`;
    }
    const aside = await setAside(this.o.file);
    this.o.logger?.warn({ file: this.o.file, aside, reason }, "ENI store unreadable; set aside, starting without unattached ENIs");
    return this.current;
  }

  /** Writes `next` atomically, then makes it current. */
  async commit(next: EniStoreState): Promise<void> {
    await writeFileAtomic(this.o.file, `${JSON.stringify(next, null, 1)}\n`);
    this.current = next;
  }
}
