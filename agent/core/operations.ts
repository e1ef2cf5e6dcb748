/**
 * The operations core every instance operation runs through:
 *
 *   validate  every instance named exists and is in a state the action is allowed from
 *             (all or nothing: one refusal and nothing changes);
 *   begin     the transitional state and LatestOperation OPERATING, in the same synchronous
 *             step as validate, so two concurrent requests cannot both pass;
 *   settle    the work, in the background and serialised per instance (one lock per
 *             instance), unless a newer operation pre-empted it;
 *   finish    LatestOperation SUCCESS or FAILED, the transition cleared, the record saved
 *             into the domain's metadata (saves of one instance never overlap, newest wins).
 *
 * The operation files (agent/instances/*.ts) hold only what is particular to them.
 */
import type { Logger } from "pino";
import { DomainError } from "./errors.js";
import { ALLOWED_FROM, type InstanceAction, type LatestOperation, type TransitionState } from "../model.js";
import { KeyedLock } from "../util/keyed-lock.js";
import type { InstanceEntry, InstanceRegistry, Transition } from "../instances/registry.js";

export interface RequestContext {
  requestId: string;
}

/** Where finish writes the record (libvirt's domain metadata). */
export interface RecordSink {
  setMetadata(instanceId: string, json: string): Promise<void>;
}

export class Operations {
  private readonly lock = new KeyedLock();
  /** Background operations still running (tests and shutdown wait for them). */
  private readonly running = new Set<Promise<void>>();
  /** Record saves into libvirt, one chain per instance (see saveRecord). */
  private readonly saves = new Map<string, { pending: boolean; done: Promise<void> }>();

  /** The error each operation of an instance last failed with (throwIfFailed answers with it). */
  private readonly failures = new WeakMap<InstanceEntry, { action: string; error: unknown }>();

  constructor(
    private readonly o: {
      registry: InstanceRegistry;
      records: RecordSink;
      /** The code LatestOperation shows for an error (the API edge's table: agent/api/error-map.ts). */
      codeOf: (error: unknown) => string;
      logger: Logger;
      /** Called when an operation ends (Prometheus: operations by kind and outcome). */
      onFinished?: (action: string, outcome: "SUCCESS" | "FAILED") => void;
    },
  ) {}

  /** Every ID must name a known instance in a state the action is allowed from; else nothing changes. */
  validate(ids: readonly string[], action: InstanceAction): InstanceEntry[] {
    const { registry } = this.o;
    const missing = ids.filter((id) => !registry.has(id));
    if (missing.length) throw new DomainError("InstanceNotFound", `no such instance on this host: ${missing.join(", ")}`);
    const entries = [...new Set(ids)].map((id) => registry.get(id)!);
    for (const entry of entries) {
      const state = registry.stateOf(entry);
      if (!ALLOWED_FROM[action].has(state)) {
        const verb = action === "StopInstancesHard" ? "StopInstances (HARD)" : action;
        throw new DomainError("InstanceState", `${verb} is not allowed for ${entry.record.instanceId} in state ${state}`, { state });
      }
    }
    return entries;
  }

  /** The transitional state and LatestOperation OPERATING (call in the same step as validate). */
  begin(entry: InstanceEntry, action: string, state: TransitionState, ctx: RequestContext): Transition {
    const transition: Transition = { state, action, abort: new AbortController() };
    entry.record.latestOperation = { action, state: "OPERATING", requestId: ctx.requestId };
    this.o.registry.setTransition(entry.record.instanceId, transition);
    return transition;
  }

  /** Runs an operation's work (under the instance lock) and records its outcome, unless it was pre-empted. */
  async settle(entry: InstanceEntry, t: Transition, action: string, ctx: RequestContext, work: () => Promise<void>): Promise<void> {
    if (t.abort.signal.aborted) return;
    // A record save still under way from the previous operation lands before this one redefines.
    await this.saves.get(entry.record.instanceId)?.done;
    try {
      await work();
      if (entry.transition === t) await this.finish(entry, action, ctx, undefined);
    } catch (error) {
      if (t.abort.signal.aborted && entry.transition !== t) return; // pre-empted: the newer operation reports
      this.o.logger.warn({ instanceId: entry.record.instanceId, requestId: ctx.requestId, err: error }, `${action} failed`);
      if (entry.transition === t) await this.finish(entry, action, ctx, error);
    }
  }

  /** Ends the operation; the returned promise settles once the record is saved in libvirt. */
  finish(entry: InstanceEntry, action: string, ctx: RequestContext, error: unknown): Promise<void> {
    if (error) this.failures.set(entry, { action, error });
    entry.record.latestOperation = error ? this.failedOperation(action, ctx, error) : { action, state: "SUCCESS", requestId: ctx.requestId };
    this.o.registry.setTransition(entry.record.instanceId, undefined);
    this.o.registry.touched(entry.record.instanceId, `${action} ${entry.record.latestOperation.state}`);
    this.o.onFinished?.(action, error ? "FAILED" : "SUCCESS");
    return entry.launchFailed ? Promise.resolve() : this.saveRecord(entry);
  }

  /** begin + settle in the background: the common shape of an operation that answers at once. */
  start(entry: InstanceEntry, action: string, state: TransitionState, ctx: RequestContext, work: (t: Transition) => Promise<void>): Transition {
    const t = this.begin(entry, action, state, ctx);
    this.background(entry.record.instanceId, t, () => this.settle(entry, t, action, ctx, () => work(t)));
    return t;
  }

  /** For the actions that answer only once done: a failure is the request's answer too. */
  throwIfFailed(entry: InstanceEntry, action: string): void {
    const op = entry.record.latestOperation;
    const failure = this.failures.get(entry);
    if (op?.action === action && op.state === "FAILED" && failure?.action === action) {
      // The operation's own refusal, or the host's failure with its message (as LatestOperation shows it).
      if (failure.error instanceof DomainError || (failure.error instanceof Error && "code" in failure.error && failure.error.name === "ApiError")) throw failure.error;
      throw new DomainError("HostFailure", op.errorMessage ?? `${action} failed`, {}, { cause: failure.error });
    }
  }

  /**
   * Saves the record into the domain's metadata. Saves of one instance never overlap and the
   * last one always writes the newest record: two overlapping virsh calls could otherwise land
   * in either order and leave an older record (say, one still naming a detached ISO) on top.
   */
  saveRecord(entry: InstanceEntry): Promise<void> {
    const id = entry.record.instanceId;
    const current = this.saves.get(id);
    if (current) {
      current.pending = true;
      return current.done;
    }
    const slot = { pending: false, done: Promise.resolve() };
    slot.done = (async () => {
      do {
        slot.pending = false;
        await this.o.records.setMetadata(id, JSON.stringify(entry.record)).catch((e: unknown) => {
          this.o.logger.warn({ instanceId: id, err: e }, "could not save the instance record in libvirt");
        });
      } while (slot.pending);
      this.saves.delete(id);
    })();
    this.saves.set(id, slot);
    return slot.done;
  }

  /** Runs work in the background under the instance's lock; a pre-empted transition's work is skipped (a terminate's never). */
  background(instanceId: string, t: Transition, work: () => Promise<void>): void {
    const p = this.lock
      .run(instanceId, async () => {
        if (t.abort.signal.aborted && t.state !== "TERMINATING") return;
        await work();
      })
      .catch((error: unknown) => this.o.logger.error({ instanceId, err: error }, "operation crashed"))
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  /** Runs work under the instance's operation lock (disk attach and detach, snapshots, ISO). */
  exclusive<T>(instanceId: string, work: () => Promise<T>): Promise<T> {
    return this.lock.run(instanceId, work);
  }

  /** Resolves when every background operation has ended. */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running]);
  }

  /** LatestOperation FAILED for `error`, with the code the API shows for it. */
  failedOperation(action: string, ctx: RequestContext, error: unknown): LatestOperation {
    return {
      action,
      state: "FAILED",
      requestId: ctx.requestId,
      errorCode: this.o.codeOf(error),
      errorMessage: error instanceof Error ? error.message : String(error),
    };
  }

}
