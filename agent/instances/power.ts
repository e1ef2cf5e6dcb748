/**
 * Power operations as cancellable waits on libvirt's events: a soft stop sends ACPI,
 * re-sends it every retry interval and gives up at the timeout; a hard stop pulls the
 * plug. Each takes an AbortSignal, so that a hard stop or a terminate can pre-empt it.
 */
import { DomainStateError, type Hypervisor } from "../../drivers/libvirt/types.js";
import { isPoweredOn } from "../model.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

export interface PowerContext {
  hypervisor: Hypervisor;
  registry: InstanceRegistry;
  softStopTimeoutMs: number;
  softStopRetryMs: number;
  /** Asks libvirt for the domain's state now (heals a missed event). */
  refreshPower: (instanceId: string) => Promise<void>;
}

const isOff = (e: InstanceEntry) => e.power === "shut off" || e.power === "crashed";

/**
 * Sends a guest request (ACPI power button, ACPI reboot) again every retry interval
 * until `done` holds or the timeout passes: a guest still in its firmware or early boot
 * misses the first press. True when done.
 */
async function pressUntil(
  ctx: PowerContext,
  instanceId: string,
  signal: AbortSignal,
  press: () => Promise<void>,
  done: (e: InstanceEntry) => boolean,
): Promise<boolean> {
  const deadline = Date.now() + ctx.softStopTimeoutMs;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    try {
      await press();
    } catch (error) {
      if (!(error instanceof DomainStateError)) throw error;
      // "domain is not running": it went off between our look and our request.
      await ctx.refreshPower(instanceId);
    }
    const reached = await ctx.registry.waitFor(instanceId, done, {
      timeoutMs: Math.max(1, Math.min(ctx.softStopRetryMs, deadline - Date.now())),
      signal,
      poll: () => ctx.refreshPower(instanceId),
    });
    if (reached) return true;
  }
  return false;
}

/** ACPI shutdown, re-sent until the guest is off or the timeout passes. True when off. */
export async function softStop(ctx: PowerContext, instanceId: string, signal: AbortSignal): Promise<boolean> {
  return pressUntil(ctx, instanceId, signal, () => ctx.hypervisor.shutdown(instanceId), isOff);
}

export async function hardStop(ctx: PowerContext, instanceId: string): Promise<void> {
  await ctx.hypervisor.destroy(instanceId);
  ctx.registry.setPower(instanceId, "shut off");
}

export async function powerOn(ctx: PowerContext, instanceId: string): Promise<void> {
  try {
    await ctx.hypervisor.start(instanceId);
  } catch (error) {
    if (!(error instanceof DomainStateError)) throw error;
  }
  await ctx.refreshPower(instanceId);
  const entry = ctx.registry.get(instanceId);
  if (!entry || !isPoweredOn(entry.power)) throw new Error(`domain ${instanceId} did not start (state ${entry?.power ?? "gone"})`);
}

/** ACPI reboot, re-sent like a soft stop; true when the guest reset itself, or went off, within the timeout. */
export async function softReboot(ctx: PowerContext, instanceId: string, signal: AbortSignal): Promise<boolean> {
  const before = ctx.registry.get(instanceId)?.reboots ?? 0;
  return pressUntil(ctx, instanceId, signal, () => ctx.hypervisor.reboot(instanceId), (e) => e.reboots > before || isOff(e));
}

/** A reset: the machine restarts at once, as with a power cycle. */
export async function hardReboot(ctx: PowerContext, instanceId: string): Promise<void> {
  await ctx.hypervisor.reset(instanceId);
}
