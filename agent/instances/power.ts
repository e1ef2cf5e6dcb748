/**
 * Power: the primitives (cancellable waits on libvirt's events: a soft stop sends ACPI,
 * re-sends it every retry interval and gives up at the timeout; a hard stop pulls the
 * plug; each takes an AbortSignal, so that a hard stop or a terminate can pre-empt it)
 * and the StartInstances, StopInstances and RebootInstances operations built on them.
 */
import { DomainStateError, type DomainPowerState, type Hypervisor } from "../../drivers/libvirt/types.js";
import { DomainError } from "../core/errors.js";
import { isPoweredOn } from "../model.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerIntents } from "./power-restore.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

export type StopType = "SOFT" | "HARD" | "SOFT_FIRST";

const isOff = (e: InstanceEntry) => e.power === "shut off" || e.power === "crashed";

/** The power primitives every operation that stops or starts a guest uses. */
export class PowerControl {
  readonly softStopTimeoutMs: number;

  constructor(
    private readonly o: {
      hypervisor: Pick<Hypervisor, "shutdown" | "destroy" | "start" | "reboot" | "reset" | "domainState">;
      registry: InstanceRegistry;
      softStopTimeoutMs: number;
      softStopRetryMs: number;
    },
  ) {
    this.softStopTimeoutMs = o.softStopTimeoutMs;
  }

  /** Records a state libvirt has just given (a start that returned: running), without asking again. */
  known(instanceId: string, state: DomainPowerState): void {
    this.o.registry.setPower(instanceId, state);
  }

  /** Asks libvirt for the domain's state now (heals a missed event). */
  async refresh(instanceId: string): Promise<void> {
    const state = await this.o.hypervisor.domainState(instanceId);
    this.o.registry.setPower(instanceId, state ?? "absent");
  }

  isOn(instanceId: string): boolean {
    const p = this.o.registry.get(instanceId)?.power;
    return p !== undefined && isPoweredOn(p);
  }

  /**
   * Sends a guest request (ACPI power button, ACPI reboot) again every retry interval
   * until `done` holds or the timeout passes: a guest still in its firmware or early boot
   * misses the first press. True when done.
   */
  private async pressUntil(instanceId: string, signal: AbortSignal, press: () => Promise<void>, done: (e: InstanceEntry) => boolean): Promise<boolean> {
    const deadline = Date.now() + this.o.softStopTimeoutMs;
    while (Date.now() < deadline) {
      signal.throwIfAborted();
      try {
        await press();
      } catch (error) {
        if (!(error instanceof DomainStateError)) throw error;
        // "domain is not running": it went off between our look and our request.
        await this.refresh(instanceId);
      }
      const reached = await this.o.registry.waitFor(instanceId, done, {
        timeoutMs: Math.max(1, Math.min(this.o.softStopRetryMs, deadline - Date.now())),
        signal,
        poll: () => this.refresh(instanceId),
      });
      if (reached) return true;
    }
    return false;
  }

  /** ACPI shutdown, re-sent until the guest is off or the timeout passes. True when off. */
  softStop(instanceId: string, signal: AbortSignal): Promise<boolean> {
    return this.pressUntil(instanceId, signal, () => this.o.hypervisor.shutdown(instanceId), isOff);
  }

  async hardStop(instanceId: string): Promise<void> {
    await this.o.hypervisor.destroy(instanceId);
    this.o.registry.setPower(instanceId, "shut off");
  }

  /** A soft stop, then a hard one if the guest ignored it. */
  async stopAnyway(instanceId: string, signal: AbortSignal): Promise<void> {
    if (!(await this.softStop(instanceId, signal))) await this.hardStop(instanceId);
  }

  async powerOn(instanceId: string): Promise<void> {
    try {
      await this.o.hypervisor.start(instanceId);
    } catch (error) {
      if (!(error instanceof DomainStateError)) throw error;
    }
    await this.refresh(instanceId);
    const entry = this.o.registry.get(instanceId);
    if (!entry || !isPoweredOn(entry.power)) throw new Error(`domain ${instanceId} did not start (state ${entry?.power ?? "gone"})`);
  }

  /**
   * Starts a domain that is off and counts it running once libvirt's start returned (as a
   * launch does): no second call to ask. The start-up power restore uses it for many at once.
   */
  async startNow(instanceId: string): Promise<void> {
    try {
      await this.o.hypervisor.start(instanceId);
    } catch (error) {
      if (!(error instanceof DomainStateError)) throw error;
      // "already active": look.
      return this.powerOn(instanceId);
    }
    this.known(instanceId, "running");
  }

  /** ACPI reboot, re-sent like a soft stop; true when the guest reset itself, or went off, within the timeout. */
  softReboot(instanceId: string, signal: AbortSignal): Promise<boolean> {
    const before = this.o.registry.get(instanceId)?.reboots ?? 0;
    return this.pressUntil(instanceId, signal, () => this.o.hypervisor.reboot(instanceId), (e) => e.reboots > before || isOff(e));
  }

  /** A reset: the machine restarts at once, as with a power cycle. */
  async hardReboot(instanceId: string): Promise<void> {
    await this.o.hypervisor.reset(instanceId);
  }

  /** Stops a running instance the way StopType says, for an operation that needs it off. */
  async stopFor(instanceId: string, stopType: StopType, signal: AbortSignal, action: string): Promise<void> {
    if (!this.isOn(instanceId)) return;
    if (stopType === "HARD") return this.hardStop(instanceId);
    if (await this.softStop(instanceId, signal)) return;
    if (stopType === "SOFT_FIRST") return this.hardStop(instanceId);
    throw new DomainError("GuestDidNotComply", `${action}: the guest did not shut down within ${this.o.softStopTimeoutMs / 1000} s; use StopType HARD or SOFT_FIRST`);
  }
}

/** StartInstances, StopInstances, RebootInstances. */
export class PowerOperations {
  constructor(
    private readonly o: {
      ops: Operations;
      power: PowerControl;
      /** The owner's wanted power, saved before each start or stop (power-restore.ts). */
      intents?: Pick<PowerIntents, "set">;
    },
  ) {}

  start(ids: string[], ctx: RequestContext): void {
    const { ops, power } = this.o;
    for (const entry of ops.validate(ids, "StartInstances")) {
      ops.start(entry, "StartInstances", "STARTING", ctx, async () => {
        await this.o.intents?.set(entry, "on");
        await power.powerOn(entry.record.instanceId);
      });
    }
  }

  stop(ids: string[], stopType: StopType, ctx: RequestContext): void {
    const { ops, power } = this.o;
    for (const entry of ops.validate(ids, stopType === "HARD" ? "StopInstancesHard" : "StopInstances")) {
      if (stopType === "HARD") entry.transition?.abort.abort(new Error("pre-empted by a hard stop"));
      ops.start(entry, "StopInstances", "STOPPING", ctx, async (t) => {
        const id = entry.record.instanceId;
        // Saved before the stop: a crash after it must not start the instance again at the next host start.
        await this.o.intents?.set(entry, "off");
        if (stopType === "HARD") return power.hardStop(id);
        if (await power.softStop(id, t.abort.signal)) return;
        if (stopType === "SOFT_FIRST") return power.hardStop(id);
        // Still running: the owner's stop did not happen (finish saves the record with it).
        entry.record.powerIntent = "on";
        throw new DomainError("GuestDidNotComply", `the guest did not shut down within ${power.softStopTimeoutMs / 1000} s (ACPI ignored?); use StopType HARD or SOFT_FIRST`);
      });
    }
  }

  reboot(ids: string[], mode: StopType, ctx: RequestContext): void {
    const { ops, power } = this.o;
    for (const entry of ops.validate(ids, "RebootInstances")) {
      ops.start(entry, "RebootInstances", "REBOOTING", ctx, async (t) => {
        const id = entry.record.instanceId;
        await this.o.intents?.set(entry, "on");
        if (mode !== "HARD" && (await power.softReboot(id, t.abort.signal))) {
          // A guest that powered off instead of rebooting is started again.
          if (!power.isOn(id)) await power.powerOn(id);
          return;
        }
        if (mode === "SOFT") throw new DomainError("GuestDidNotComply", `the guest did not reboot within ${power.softStopTimeoutMs / 1000} s; use ForceReboot`);
        if (power.isOn(id)) await power.hardReboot(id);
        else await power.powerOn(id);
      });
    }
  }
}
