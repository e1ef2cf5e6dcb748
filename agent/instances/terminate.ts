/**
 * TerminateInstances: every instance named is checked first; each is then TERMINATING
 * (pre-empting any operation in progress), journaled, and torn down in the background,
 * retrying until it is gone. Recovery finishes a terminate a crash interrupted.
 */
import type { Logger } from "pino";
import { DomainError } from "../core/errors.js";
import type { Journal } from "../journal.js";
import { isoSeconds, type InstanceRecord } from "../model.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { Checkpoint, Provisioner } from "./provision.js";
import type { InstanceEntry, InstanceRegistry, Transition } from "./registry.js";

export class Terminator {
  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      journal: Journal;
      keyPairs: Pick<KeyPairStore, "forgetInstances">;
      provisioner: Provisioner;
      checkpoint: Checkpoint;
      logger: Logger;
      /** Runs once the instance is gone (the firewall drops its NICs' chains and set members). */
      afterGone?: (instanceId: string) => Promise<void>;
      /** Runs once the domain is gone, before the journal and the record go (its ENIs back to the store); again after a crash. */
      beforeGone?: (record: InstanceRecord) => Promise<void>;
    },
  ) {}

  /**
   * Every check TerminateInstances makes, with no change: the instances exist, their states
   * allow it, and none has DisableApiTermination set. All or nothing: one protected instance
   * refuses the whole request, naming every protected one, before anything is terminated.
   */
  check(ids: readonly string[]): InstanceEntry[] {
    const entries = this.o.ops.validate(ids, "TerminateInstances");
    const protectedIds = entries.filter((e) => e.record.disableApiTermination === true).map((e) => e.record.instanceId);
    if (protectedIds.length) {
      throw new DomainError(
        "TerminationProtected",
        `${protectedIds.join(", ")} ${protectedIds.length > 1 ? "have" : "has"} DisableApiTermination set: clear it with ModifyInstancesAttribute first; nothing was terminated`,
      );
    }
    return entries;
  }

  async terminate(ids: string[], ctx: RequestContext): Promise<void> {
    const entries = this.check(ids);
    const ts: Transition[] = [];
    for (const entry of entries) {
      entry.transition?.abort.abort(new Error("pre-empted by TerminateInstances"));
      ts.push(this.o.ops.begin(entry, "TerminateInstances", "TERMINATING", ctx));
    }
    const startedAt = isoSeconds(new Date());
    await Promise.all(
      entries.map((e) => this.o.journal.write({ kind: "terminate", instanceId: e.record.instanceId, record: e.record, requestId: ctx.requestId, startedAt })),
    );
    this.o.checkpoint("terminate:journaled");
    entries.forEach((entry, i) => this.o.ops.background(entry.record.instanceId, ts[i]!, () => this.destroyInstance(entry.record.instanceId, ctx)));
  }

  /** Tears the instance down and forgets it (also used by recovery). */
  async destroyInstance(instanceId: string, ctx: RequestContext): Promise<void> {
    const log = this.o.logger.child({ instanceId, requestId: ctx.requestId });
    for (let attempt = 1; ; attempt++) {
      try {
        const entry = this.o.registry.get(instanceId);
        const sd = entry?.record.systemDisk;
        await this.o.provisioner.teardown(instanceId, sd ? { systemDiskPath: sd.path, ...(sd.diskId ? { systemDiskId: sd.diskId } : {}) } : {});
        break;
      } catch (error) {
        // The journal entry stays; the instance stays TERMINATING until it is gone.
        log.error({ err: error, attempt }, "terminate failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(30_000, 1000 * 2 ** attempt)));
      }
    }
    await this.o.keyPairs.forgetInstances([instanceId]).catch((e: unknown) => log.warn({ err: e }, "could not drop the key pair bindings"));
    const gone = this.o.registry.get(instanceId)?.record;
    if (gone) await this.o.beforeGone?.(gone).catch((e: unknown) => log.error({ err: e }, "could not give the instance's ENIs back"));
    // The journal goes before the instance leaves the API: a client that sees it gone never races a recovery.
    await this.o.journal.remove({ kind: "terminate", instanceId });
    this.o.registry.remove(instanceId);
    await this.o.afterGone?.(instanceId).catch((e: unknown) => log.error({ err: e }, "the firewall could not drop the instance's rules; the next change or resync does"));
    log.info("instance terminated");
  }
}
