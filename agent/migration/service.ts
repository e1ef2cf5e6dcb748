/**
 * Migration, both roles of one agent: MigrateInstances / CancelMigrateInstances as the source,
 * MigrationPeerStep (internal, called by a source agent) as the destination, and the start-up
 * settlement of whatever a crash left in the migration journal (run before the instance
 * recovery, so that exactly one host keeps a runnable definition).
 */
import type { Logger } from "pino";
import { DomainError } from "../core/errors.js";
import type { RequestContext } from "../core/operations.js";
import type { InstanceRegistry } from "../instances/registry.js";
import type { DiskRecord } from "../disks/store.js";
import { checkInstanceRecord } from "../core/records.js";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { MigrationDestination } from "./destination.js";
import type { MigrationEntry, MigrationJournal } from "./journal.js";
import type { MigrateRequest, MigrationSource } from "./source.js";

export interface PeerStepParams {
  step: "reserve" | "prepare" | "commit" | "abort" | "status";
  migrationId: string;
  instanceId: string;
  sourceHostId: string;
  live?: boolean;
  wasRunning?: boolean;
  instance?: unknown;
  dataDisks?: unknown[];
  diskBytes?: Record<string, number>;
  sourceDefaultGroupId?: string;
  requestId?: string;
}

export class MigrationService {
  /** Source entries whose outcome needs the destination, which did not answer at start-up. */
  private readonly pending = new Map<string, MigrationEntry>();
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: {
      source: MigrationSource;
      destination: MigrationDestination;
      journal: MigrationJournal;
      registry: InstanceRegistry;
      hypervisor: Pick<Hypervisor, "domainState" | "start">;
      logger: Logger;
    },
  ) {
    // A move that failed while the destination could not be told to abort: retried here until it answers.
    o.source.unsettled = (entry) => {
      this.pending.set(entry.instanceId, entry);
      this.scheduleRetry();
    };
  }

  migrate(req: MigrateRequest, ctx: RequestContext): void {
    for (const id of req.instanceIds) {
      const e = this.pending.get(id);
      if (e) throw new DomainError("InstanceState", `instance ${id}: its last migration (${e.migrationId}) is not settled with host ${e.peerHostId} yet; retry once it is`, { state: "MIGRATING" });
    }
    this.o.source.migrate(req, ctx);
  }

  cancel(instanceIds: readonly string[]): void {
    this.o.source.cancel(instanceIds);
  }

  /** The destination's steps (MigrationPeerStep). */
  async peerStep(p: PeerStepParams): Promise<Record<string, unknown>> {
    const d = this.o.destination;
    switch (p.step) {
      case "reserve": {
        if (p.instance === undefined || p.live === undefined || p.wasRunning === undefined) throw new DomainError("MissingValue", "reserve needs Instance, Live and WasRunning");
        let record;
        try {
          record = checkInstanceRecord(p.instance);
        } catch (error) {
          throw new DomainError("BadValue", `Instance: ${(error as Error).message}`);
        }
        if (record.instanceId !== p.instanceId) throw new DomainError("BadValue", "Instance is not InstanceId's record");
        await d.reserve({
          migrationId: p.migrationId,
          sourceHostId: p.sourceHostId,
          live: p.live,
          wasRunning: p.wasRunning,
          record,
          dataDisks: checkDisks(p.dataDisks ?? [], p.instanceId),
          diskBytes: p.diskBytes ?? {},
          ...(p.sourceDefaultGroupId ? { sourceDefaultGroupId: p.sourceDefaultGroupId } : {}),
          requestId: p.requestId ?? p.migrationId,
        });
        return {};
      }
      case "prepare": {
        const r = await d.prepare(p.migrationId, p.instanceId);
        return { DomainXml: r.domainXml, Nbd: r.nbd.map((n) => ({ Target: n.target, Port: n.port, Name: n.name })), InstanceDir: r.instanceDir, Disks: r.disks };
      }
      case "commit":
        return { State: (await d.commit(p.migrationId, p.instanceId)).state };
      case "abort":
        await d.abort(p.migrationId, p.instanceId);
        return {};
      case "status": {
        const s = await d.status(p.migrationId, p.instanceId);
        return { Phase: s.phase, DomainState: s.domainState };
      }
    }
  }

  /** Start-up, before the instance recovery: settles every journal entry it can. */
  async recover(): Promise<void> {
    const log = this.o.logger;
    const entries = await this.o.journal.readAll((file, reason) => log.error({ file, reason }, "migration journal entry unreadable; set aside"));
    for (const entry of entries) {
      try {
        if (entry.role === "destination") {
          const outcome = await this.o.destination.recover(entry);
          log.warn({ instanceId: entry.instanceId, migrationId: entry.migrationId, phase: entry.phase, outcome }, "migration (destination) interrupted by a restart: settled");
        } else if (!(await this.settleSource(entry))) {
          this.pending.set(entry.instanceId, entry);
        }
      } catch (error) {
        log.error({ err: error, instanceId: entry.instanceId, role: entry.role }, "migration recovery failed; retried later");
        if (entry.role === "source") this.pending.set(entry.instanceId, entry);
      }
    }
  }

  /** After the instance recovery: instances whose move is unsettled stay MIGRATING until the destination answers. */
  afterRecovery(): void {
    for (const id of this.pending.keys()) {
      const e = this.o.registry.get(id);
      if (e) this.o.registry.setTransition(id, { state: "MIGRATING", action: "MigrateInstances", abort: new AbortController() });
    }
    if (this.pending.size) this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryPending();
    }, 5000);
    this.retryTimer.unref();
  }

  private async retryPending(): Promise<void> {
    for (const [id, entry] of [...this.pending]) {
      try {
        if (await this.settleSource(entry)) {
          this.pending.delete(id);
          const e = this.o.registry.get(id);
          if (e?.transition?.state === "MIGRATING") this.o.registry.setTransition(id, undefined);
        }
      } catch (error) {
        this.o.logger.warn({ err: error, instanceId: id }, "migration recovery: still unsettled");
      }
    }
    if (this.pending.size) this.scheduleRetry();
  }

  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /**
   * A source entry: decided by where the guest's state is. True when settled; false when the
   * destination must be asked and cannot be now.
   */
  private async settleSource(entry: MigrationEntry): Promise<boolean> {
    const o = this.o;
    const log = o.logger.child({ instanceId: entry.instanceId, migrationId: entry.migrationId, phase: entry.phase });
    if (entry.phase === "committed") {
      await o.source.removeLocal(entry);
      log.warn("migration interrupted after the destination committed: the source's leftovers removed");
      return true;
    }
    const step = o.source.stepsFor(entry);
    let status: Record<string, unknown>;
    try {
      status = await step("status", {}, 15_000);
    } catch (error) {
      log.warn({ err: error }, "migration recovery: the destination does not answer; the instance stays MIGRATING until it does");
      return false;
    }
    if (status.Phase === "owned") {
      await o.source.removeLocal(entry);
      log.warn("migration interrupted: the destination owns the instance; the source's leftovers removed");
      return true;
    }
    // A live job this agent started may still run (virsh outlives a SIGKILLed agent): end it first,
    // then judge by where the guest runs.
    if (entry.live) await o.source.libvirt.abort(entry.instanceId).catch(() => undefined);
    let local = await o.hypervisor.domainState(entry.instanceId);
    for (let i = 0; i < 50 && entry.live && local === "paused"; i++) {
      const f = await o.source.libvirt.jobFigures(entry.instanceId).catch(() => undefined);
      if (!f?.active) break;
      await new Promise((r) => setTimeout(r, 200));
      local = await o.hypervisor.domainState(entry.instanceId);
    }
    if (status.Phase !== "none") status = await step("status", {}, 15_000);
    const destRuns = status.DomainState === "running" || status.DomainState === "paused";
    const localRuns = local === "running" || local === "paused";
    if (entry.live && !localRuns && destRuns && status.Phase !== "none") {
      await step("commit", {}, 120_000);
      await o.source.removeLocal({ ...entry, phase: "committed" });
      log.warn("migration interrupted after the guest moved: committed on the destination, the source's leftovers removed");
      return true;
    }
    if (status.Phase !== "none") await step("abort", {}, 120_000);
    if (!entry.live && entry.wasRunning && (local === "shut off" || local === "crashed")) {
      await o.hypervisor.start(entry.instanceId).catch((e: unknown) => log.error({ err: e }, "could not start the instance again"));
    }
    await o.journal.remove(entry.instanceId, "source");
    log.warn({ local }, "migration interrupted before the move completed: aborted; the instance stays here");
    return true;
  }
}

function checkDisks(list: unknown[], instanceId: string): DiskRecord[] {
  return list.map((d, i) => {
    const r = d as DiskRecord;
    if (typeof r !== "object" || r === null || typeof r.diskId !== "string" || !/^disk-[a-z0-9]{8}$/.test(r.diskId) || typeof r.target !== "string" || !/^vd[b-z]$/.test(r.target) || typeof r.sizeGiB !== "number" || typeof r.path !== "string") {
      throw new DomainError("BadValue", `DataDisks.${i} is not a disk record`);
    }
    return { ...r, instanceId };
  });
}
