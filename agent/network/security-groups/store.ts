/**
 * The host's security groups in one JSON file under the data directory
 * (`<data dir>/security-groups.json`), rewritten atomically (temp file, fsync, rename), so
 * a SIGKILL leaves the old or the new file, never half of one. The first start creates
 * the default group (the seeds' first template) and writes it; later starts read it back.
 * A file that fails its check is set aside for the operator and the host starts with a new
 * default group: NICs bound to groups that no longer exist are then filtered with what is
 * left (fail closed: nothing they had is opened).
 * The store only reads and writes; the service (service.ts) decides what changes and when.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { writeFileAtomic } from "../../util/atomic-file.js";
import { setAside } from "../../util/set-aside.js";
import { defaultGroupRules, newSecurityGroupId, sgTime, SG_ID, type SgStoreState } from "./model.js";

export function securityGroupsFile(root: string): string {
  return join(root, "security-groups.json");
}

const policySchema = z
  .object({
    protocol: z.enum(["TCP", "UDP", "ICMP", "ICMPV6", "GRE", "ALL"]),
    port: z.string(),
    cidrBlock: z.string().optional(),
    securityGroupId: z.string().regex(SG_ID).optional(),
    action: z.enum(["ACCEPT", "DROP"]),
    description: z.string(),
    modifyTime: z.string(),
  })
  .strict()
  .refine((p) => (p.cidrBlock === undefined) !== (p.securityGroupId === undefined), "a rule has exactly one peer");

const groupSchema = z
  .object({
    securityGroupId: z.string().regex(SG_ID),
    name: z.string(),
    description: z.string(),
    projectId: z.literal("0"),
    isDefault: z.boolean(),
    createdTime: z.string(),
    updateTime: z.string(),
    seq: z.number().int().nonnegative(),
    tags: z.array(z.object({ key: z.string(), value: z.string() }).strict()),
    version: z.number().int().nonnegative(),
    ingress: z.array(policySchema),
    egress: z.array(policySchema),
  })
  .strict();

const fileSchema = z
  .object({ version: z.literal(1), defaultGroupId: z.string().regex(SG_ID), nextSeq: z.number().int().nonnegative(), groups: z.array(groupSchema) })
  .strict()
  .refine((s) => s.groups.some((g) => g.securityGroupId === s.defaultGroupId && g.isDefault), "the default group must exist");

export class SecurityGroupStore {
  private current: SgStoreState | undefined;

  constructor(
    private readonly o: {
      file: string;
      now?: () => Date;
      logger?: Pick<Logger, "warn" | "info">;
    },
  ) {}

  /** The current state (after load). Callers copy before changing (structuredClone). */
  get state(): SgStoreState {
    if (!this.current) throw new Error("security group store not loaded");
    return this.current;
  }

  /** Reads the file; on the first start (no file), creates the default group and writes it. */
  async load(): Promise<SgStoreState> {
    let text: string | undefined;
    try {
      text = await readFile(this.o.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    if (text !== undefined) {
      let reason: string;
      try {
        const parsed = fileSchema.safeParse(JSON.parse(text));
        if (parsed.success) {
          this.current = parsed.data as SgStoreState;
          return this.current;
        }
        reason = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(file)"}: ${i.message}`).join("; ");
      } catch (error) {
        reason = `not JSON: ${(error as Error).message}`;
      }
      const aside = await setAside(this.o.file);
      this.o.logger?.warn({ file: this.o.file, aside, reason }, "security group store unreadable; set aside, starting with a new default group");
    }
    const fresh = this.initial();
    await this.commit(fresh);
    this.o.logger?.info({ defaultGroupId: fresh.defaultGroupId }, "default security group created");
    return fresh;
  }

  /** Writes `next` atomically, then makes it current. */
  async commit(next: SgStoreState): Promise<void> {
    await writeFileAtomic(this.o.file, `${JSON.stringify(next, null, 1)}\n`);
    this.current = next;
  }

  private initial(): SgStoreState {
    const now = sgTime((this.o.now ?? (() => new Date()))());
    const id = newSecurityGroupId(() => false);
    return {
      version: 1,
      defaultGroupId: id,
      nextSeq: 1,
      groups: [
        {
          securityGroupId: id,
          name: "default",
          description: "the host's default group: inbound TCP 22, 80, 443, 3389 and ICMP, outbound everything",
          projectId: "0",
          isDefault: true,
          createdTime: now,
          updateTime: now,
          seq: 0,
          tags: [],
          version: 0,
          ...defaultGroupRules(now),
        },
      ],
    };
  }
}
