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

/** ACPI shutdown, re-sent until the guest is off or the timeout passes. True when off. */
export async function softStop(ctx: PowerContext, instanceId: string, signal: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + ctx.softStopTimeoutMs;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    try {
      await ctx.hypervisor.shutdown(instanceId);
    } catch (error) {
      if (!(error instanceof DomainStateError)) throw error;
      // "domain is not running": it went off between our look and our request.
      await ctx.refreshPower(instanceId);
    }
    const off = await ctx.registry.waitFor(instanceId, isOff, {
      timeoutMs: Math.max(1, Math.min(ctx.softStopRetryMs, deadline - Date.now())),
      signal,
      poll: () => ctx.refreshPower(instanceId),
    });
    if (off) return true;
  }
  return false;
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

/**
 * ACPI reboot, re-sent every retry interval (a guest still in its firmware or early
 * boot misses the button, as with a soft stop); true when the guest reset itself, or
 * went off, within the timeout.
 */
export async function softReboot(ctx: PowerContext, instanceId: string, signal: AbortSignal): Promise<boolean> {
  const before = ctx.registry.get(instanceId)?.reboots ?? 0;
  const done = (e: InstanceEntry) => e.reboots > before || isOff(e);
  const deadline = Date.now() + ctx.softStopTimeoutMs;
  while (Date.now() < deadline) {
    signal.throwIfAborted();
    try {
      await ctx.hypervisor.reboot(instanceId);
    } catch (error) {
      if (!(error instanceof DomainStateError)) throw error;
      await ctx.refreshPower(instanceId);
    }
    const rebooted = await ctx.registry.waitFor(instanceId, done, {
      timeoutMs: Math.max(1, Math.min(ctx.softStopRetryMs, deadline - Date.now())),
      signal,
      poll: () => ctx.refreshPower(instanceId),
    });
    if (rebooted) return true;
  }
  return false;
}

/** A reset: the machine restarts at once, as with a power cycle. */
export async function hardReboot(ctx: PowerContext, instanceId: string): Promise<void> {
  await ctx.hypervisor.reset(instanceId);
}
