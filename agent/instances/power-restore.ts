/**
 * Power across a host restart. The owner's wanted power state (the record's powerIntent) is
 * saved in the domain's metadata before every stop or start the owner asks for, and when the
 * agent sees a domain go off without an operation of its own (a guest that powered itself off):
 * a SIGKILL between the save and the stop leaves "off" with the domain still running, which a
 * restart leaves alone; never "on" for a domain the owner stopped.
 *
 * At start-up, once recovery has run, the instances the owner wants on whose domains are off
 * (the host lost power, or libvirtd and QEMU went down with the agent) are started again, a few
 * at a time (restore_power_concurrency); a domain still running (only the agent restarted) is
 * left alone, and one the owner stopped stays stopped. The outcome goes into the reports.
 */
import type { Logger } from "pino";
import type { Operations, RequestContext } from "../core/operations.js";
import { isPoweredOn, type InstanceRecord } from "../model.js";
import { LaunchQueue } from "./launch-queue.js";
import type { PowerControl } from "./power.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

export type PowerIntent = "on" | "off";

/** The power the owner wants; records without the field: off only after a successful StopInstances. */
export function intendedPower(record: InstanceRecord): PowerIntent {
  if (record.powerIntent) return record.powerIntent;
  const op = record.latestOperation;
  return op?.action === "StopInstances" && op.state === "SUCCESS" ? "off" : "on";
}

/** Keeps the owner's wanted power state in the record (saved in libvirt before the change). */
export class PowerIntents {
  constructor(private readonly o: { ops: Pick<Operations, "saveRecord">; registry: InstanceRegistry; logger: Logger }) {}

  /** Sets and saves the intent; resolves once libvirt has it (at once when it is already so). */
  async set(entry: InstanceEntry, intent: PowerIntent): Promise<void> {
    if (entry.record.powerIntent === intent) return;
    entry.record.powerIntent = intent;
    await this.o.ops.saveRecord(entry);
  }

  /**
   * The domain went off (stopped or crashed) while no agent operation ran: the guest powered
   * itself off, or someone stopped it behind the agent's back. It shows STOPPED, and a STOPPED
   * instance stays stopped across a host restart.
   */
  offWithoutOperation(instanceId: string): void {
    const entry = this.o.registry.get(instanceId);
    if (!entry || entry.transition || entry.launchFailed) return;
    void this.set(entry, "off").catch((e: unknown) => this.o.logger.warn({ instanceId, err: e }, "could not save the instance's power intent"));
  }
}

/** Why an instance was started again (the reports carry it). */
export const RESTORE_REASON = "RUNNING before the host, or libvirtd and the agent, went down; found shut off at start-up";

export interface PowerRestoreResult {
  enabled: boolean;
  startedAt: string;
  finishedAt?: string;
  /** Instances started again, with the outcome of each start. */
  restarted: Array<{ instanceId: string; reason: string; result: "OPERATING" | "SUCCESS" | "FAILED"; error?: string }>;
  /** Off, and the owner had stopped them (or restore is off): left stopped. */
  keptStopped: string[];
  /** Still running when the agent came up (only the agent restarted): nothing to do. */
  stillRunning: number;
}

export class PowerRestore {
  private result: PowerRestoreResult | undefined;

  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      power: Pick<PowerControl, "startNow">;
      /** restore_power_on_start. */
      enabled: boolean;
      /** restore_power_concurrency: starts under way at once. */
      concurrency: number;
      logger: Logger;
    },
  ) {}

  /** The last restore's outcome (undefined before begin). */
  lastResult(): Readonly<PowerRestoreResult> | undefined {
    return this.result;
  }

  /**
   * Decides at once (call after recovery, before the API serves; `resumed`: the instances whose
   * interrupted operation recovery settled, left as it left them): the instances to start show
   * STARTING from now on; the starts run in the background, `concurrency` at a time. The
   * returned promise settles when every start has ended.
   */
  begin(resumed: ReadonlySet<string> = new Set()): Promise<PowerRestoreResult> {
    const { ops, registry, logger } = this.o;
    const result: PowerRestoreResult = { enabled: this.o.enabled, startedAt: new Date().toISOString(), restarted: [], keptStopped: [], stillRunning: 0 };
    this.result = result;
    const toStart: InstanceEntry[] = [];
    for (const entry of registry.all()) {
      // Recovery's operations decide for these: one under way, or one a crash interrupted that
      // recovery finished or rolled back (a reinstall rolled back leaves the instance stopped).
      if (entry.launchFailed || entry.transition || resumed.has(entry.record.instanceId)) continue;
      if (isPoweredOn(entry.power)) {
        result.stillRunning += 1;
        continue;
      }
      if (entry.power !== "shut off" && entry.power !== "crashed") continue; // unknown or gone: nothing to start
      if (this.o.enabled && intendedPower(entry.record) === "on") toStart.push(entry);
      else result.keptStopped.push(entry.record.instanceId);
    }
    if (!toStart.length) {
      result.finishedAt = new Date().toISOString();
      if (result.keptStopped.length || !this.o.enabled) logger.info({ keptStopped: result.keptStopped.length, enabled: this.o.enabled }, "power restore: nothing to start");
      return Promise.resolve(result);
    }
    logger.info({ instances: toStart.length, concurrency: this.o.concurrency }, "power restore: starting the instances that were running before the restart");
    const queue = new LaunchQueue({ concurrency: this.o.concurrency });
    const ctx: RequestContext = { requestId: `power-restore-${result.startedAt}` };
    const starts = toStart.map((entry) => {
      const id = entry.record.instanceId;
      const row: PowerRestoreResult["restarted"][number] = { instanceId: id, reason: RESTORE_REASON, result: "OPERATING" };
      result.restarted.push(row);
      const t = ops.begin(entry, "StartInstances", "STARTING", ctx);
      // The turn first, then the instance's lock: a stop or terminate meanwhile pre-empts (settle skips aborted work).
      // A turn is held while libvirt starts the domain, not while the outcome is saved in its
      // metadata (a virsh of its own): the next start need not wait for that save.
      let settled: Promise<void> = Promise.resolve();
      return queue
        .run(
          () =>
            new Promise<void>((turnDone) => {
              settled = ops.exclusive(id, () =>
                ops.settle(entry, t, "StartInstances", ctx, () => this.o.power.startNow(id).finally(turnDone)),
              );
              settled.then(turnDone, turnDone); // pre-empted before the start, or failed: the turn ends too
            }),
          { signal: t.abort.signal, label: id },
        )
        .then(() => settled)
        .catch(() => undefined) // pre-empted while waiting for its turn: the newer operation reports
        .then(() => {
          const op = entry.record.latestOperation;
          const mine = op?.action === "StartInstances" && op.requestId === ctx.requestId;
          row.result = mine && op.state === "SUCCESS" ? "SUCCESS" : "FAILED";
          if (row.result === "FAILED") row.error = mine ? (op.errorMessage ?? "the start failed") : "pre-empted by another operation";
        });
    });
    return Promise.all(starts).then(() => {
      result.finishedAt = new Date().toISOString();
      const failed = result.restarted.filter((r) => r.result === "FAILED");
      logger.info({ restarted: result.restarted.length - failed.length, failed: failed.length, keptStopped: result.keptStopped.length }, "power restore done");
      return result;
    });
  }
}

/** The outcome as the reports carry it (PascalCase, as every report field). */
export function powerRestoreView(r: Readonly<PowerRestoreResult>): Record<string, unknown> {
  return {
    Enabled: r.enabled,
    StartedAt: r.startedAt,
    FinishedAt: r.finishedAt ?? null,
    Restarted: r.restarted.map((x) => ({ InstanceId: x.instanceId, Reason: x.reason, Result: x.result, ...(x.error ? { Error: x.error } : {}) })),
    KeptStopped: [...r.keptStopped],
    StillRunning: r.stillRunning,
  };
}
