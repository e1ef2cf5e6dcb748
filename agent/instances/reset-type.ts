/**
 * ResetInstancesType (a new CDH_<cores>C<GiB>G for an instance) and
 * DescribeInstancesModification (the sizes an instance can take on this host now).
 *
 * Admission counts only the difference (growth of vCPUs or memory; a shrink needs no
 * room) against what the host has left, in the same synchronous step as validate, like
 * RunInstances' check and reserve: two requests cannot both take the same room. From
 * admission until the new definition is in libvirt the growth is held as a pending
 * reservation (`reservations()`, counted by the host's capacity), then the record itself
 * holds it. Three ways to apply:
 *
 *   stopped  the definition is replaced by one with the new size (one `virsh define`,
 *            which also carries the record: libvirt has the old size or the new one);
 *   restart  a running instance with ForceStop: soft stop, then hard (PowerControl),
 *            the new definition, started again;
 *   live     a running instance whose definition has hot-plug headroom (config
 *            hotplug_max_vcpus / hotplug_max_memory_gib) and a change that only grows
 *            within it: `virsh setvcpus --live --config`, a hot-plugged DIMM of the
 *            difference, then the new definition (the size it boots with next time).
 *
 * A journal entry ("retype") covers each; after a SIGKILL recovery finishes it when libvirt
 * already has the new size (a live one is rolled forward: the vCPUs and DIMM still missing
 * are added), reports it FAILED with the old size otherwise, and starts again an instance
 * the resize had stopped.
 */
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import { admissionShortfall, type Allocation, type HostResource } from "../capacity.js";
import { DomainError } from "../core/errors.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { Journal } from "../journal.js";
import { isoSeconds, type InstanceRecord } from "../model.js";
import type { PowerControl } from "./power.js";
import type { Checkpoint, DomainSpecs } from "./provision.js";
import type { InstanceEntry, InstanceRegistry, Transition } from "./registry.js";

export const RETYPE_ACTION = "ResetInstancesType";

export interface RetypeRequest {
  instanceId: string;
  /** As sent (CDH_<c>C<g>G), with its parsed size. */
  instanceType: string;
  cpu: number;
  memoryGiB: number;
  forceStop: boolean;
}

export type RetypeMode = "stopped" | "restart" | "live";

/** What a running domain has now and how far it may grow live (from its live definition). */
export interface LiveSize {
  vcpus: number;
  memoryMiB: number;
  maxVcpus: number;
  maxMemoryMiB: number;
  freeSlots: number;
}

/** The room a change of size asks of the host: only growth counts, a shrink asks nothing. */
export function retypeGrowth(from: Allocation, to: Allocation): Allocation {
  return { cpu: Math.max(0, to.cpu - from.cpu), memoryGiB: Math.max(0, to.memoryGiB - from.memoryGiB) };
}

/** Why `to` does not fit for an instance that holds `from` (null when it does): admission of the difference. */
export function retypeShortfall(resource: HostResource, from: Allocation, to: Allocation): string | null {
  return admissionShortfall(resource, retypeGrowth(from, to), 1);
}

/** Why a running domain cannot take `to` live (null when it can). */
export function liveProblem(live: LiveSize | null, to: Allocation): string | null {
  if (!live) return "the domain is not running";
  const toMiB = to.memoryGiB * 1024;
  if (to.cpu < live.vcpus || toMiB < live.memoryMiB) return "vCPUs and memory are only added live, never removed";
  if (to.cpu > live.maxVcpus) {
    return `${to.cpu} vCPUs is beyond the definition's hot-plug headroom of ${live.maxVcpus} (hotplug_max_vcpus)`;
  }
  if (toMiB > live.maxMemoryMiB) {
    return `${to.memoryGiB} GiB is beyond the definition's hot-plug headroom of ${live.maxMemoryMiB / 1024} GiB (hotplug_max_memory_gib)`;
  }
  if (toMiB > live.memoryMiB && live.freeSlots < 1) return "every DIMM slot of the definition is taken (hotplug_memory_slots)";
  return null;
}

/** vCPU counts offered: powers of two up to the host's total, and the instance's own. */
const MEMORY_PER_VCPU = [1, 2, 4, 8] as const;

/**
 * The sizes DescribeInstancesModification considers (README "Resizing"): vCPUs 1, 2, 4, 8, …
 * up to the host's CpuTotal (and the instance's own count), each with 1, 2, 4 or 8 GiB per
 * vCPU (the CVM families' ratios) up to MemTotal; the instance's own size left out.
 */
export function candidateSizes(limits: { cpuTotal: number; memTotalGiB: number }, own: Allocation): Allocation[] {
  const cpus = new Set<number>([own.cpu]);
  for (let c = 1; c <= limits.cpuTotal; c *= 2) cpus.add(c);
  const out: Allocation[] = [];
  for (const cpu of [...cpus].sort((a, b) => a - b)) {
    if (cpu > limits.cpuTotal) continue;
    const mems = new Set<number>(MEMORY_PER_VCPU.map((r) => cpu * r));
    if (cpu === own.cpu) mems.add(own.memoryGiB);
    for (const memoryGiB of [...mems].sort((a, b) => a - b)) {
      if (memoryGiB > limits.memTotalGiB) continue;
      if (cpu === own.cpu && memoryGiB === own.memoryGiB) continue;
      out.push({ cpu, memoryGiB });
    }
  }
  return out;
}

export const typeName = (a: Allocation): string => `CDH_${a.cpu}C${a.memoryGiB}G`;

/** One size for DescribeInstancesModification: SELL when every instance named can take it now, else why not. */
export interface ModificationStatus {
  size: Allocation;
  status: "SELL" | "UNAVAILABLE";
  message: string;
}

export class Retyper {
  /** Growth admitted and not yet in a record: counted by the host's capacity. */
  private readonly pending = new Map<string, Allocation>();

  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      journal: Journal;
      hypervisor: Pick<Hypervisor, "defineDomain" | "setVcpusLive" | "attachMemoryLive" | "liveSize">;
      specs: Pick<DomainSpecs, "of">;
      power: PowerControl;
      hostResource: () => HostResource;
      checkpoint: Checkpoint;
    },
  ) {}

  /** Growth admitted for resizes under way (beyond what the instances' records hold). */
  reservations(): Iterable<Allocation> {
    return this.pending.values();
  }

  /**
   * ResetInstancesType. Answers once admitted; the work goes on in the background and
   * shows in the instance's state and LatestOperation.
   */
  async retype(req: RetypeRequest, ctx: RequestContext): Promise<void> {
    const id = req.instanceId;
    const to: Allocation = { cpu: req.cpu, memoryGiB: req.memoryGiB };
    // A look at the running domain first (async); everything after it is one synchronous step.
    const [first] = this.o.ops.validate([id], RETYPE_ACTION);
    const live = this.o.power.isOn(id) ? await this.o.hypervisor.liveSize(id) : null;

    const [entry] = this.o.ops.validate([id], RETYPE_ACTION);
    if (entry !== first) throw new DomainError("InstanceNotAtRest", `${id} changed while the request was checked; try again`);
    // One resize (or any operation) at a time: a second admission would replace the first's reservation.
    if (entry!.transition) throw new DomainError("InstanceNotAtRest", `${id} has ${entry!.transition.action} under way; try again once it has ended`);
    const rec = entry!.record;
    const from: Allocation = { cpu: rec.cpu, memoryGiB: rec.memoryGiB };
    if (from.cpu === to.cpu && from.memoryGiB === to.memoryGiB) {
      throw new DomainError("BadValue", `\`InstanceType\` ${req.instanceType} is ${id}'s size already`);
    }
    let mode: RetypeMode = "stopped";
    if (this.o.power.isOn(id)) {
      const why = liveProblem(live, to);
      if (why === null) mode = "live";
      else if (req.forceStop) mode = "restart";
      else {
        throw new DomainError(
          "InstanceRunning",
          `${id} is running and ${req.instanceType} cannot apply live: ${why}; stop it first, or set ForceStop to stop it, resize it and start it again`,
        );
      }
    }
    const short = retypeShortfall(this.o.hostResource(), from, to);
    if (short) throw new DomainError("NoRoom", `${req.instanceType} does not fit for ${id} on this host (only the growth counts): ${short}`);
    // Admission: the growth is held from here (the same step as the check above).
    this.pending.set(id, retypeGrowth(from, to));
    const t = this.o.ops.begin(entry!, RETYPE_ACTION, mode === "restart" ? "STOPPING" : "UPDATING", ctx);
    try {
      await this.o.journal.write({ kind: "retype", instanceId: id, record: { ...rec, instanceType: req.instanceType, cpu: to.cpu, memoryGiB: to.memoryGiB }, mode, from, requestId: ctx.requestId, startedAt: isoSeconds(new Date()) });
    } catch (error) {
      this.pending.delete(id);
      await this.o.ops.finish(entry!, RETYPE_ACTION, ctx, error);
      throw error;
    }
    this.o.checkpoint("retype:journaled");
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(entry!, t, RETYPE_ACTION, ctx, async () => {
        try {
          await this.apply(entry!, req.instanceType, to, mode, t.abort.signal, t);
        } finally {
          this.pending.delete(id);
          await this.o.journal.remove({ kind: "retype", instanceId: id });
        }
      }),
    );
  }

  /** The record with the new size (everything else as the instance has it now). */
  private resized(entry: InstanceEntry, instanceType: string, to: Allocation): InstanceRecord {
    return { ...entry.record, instanceType, cpu: to.cpu, memoryGiB: to.memoryGiB };
  }

  /** Defines the domain with the new size (libvirt takes the definition and the record in one step). */
  private async define(entry: InstanceEntry, record: InstanceRecord): Promise<void> {
    await this.o.hypervisor.defineDomain(this.o.specs.of(record));
    entry.record = record;
    this.o.registry.touched(record.instanceId, `${RETYPE_ACTION}: ${record.instanceType}`);
  }

  private async apply(entry: InstanceEntry, instanceType: string, to: Allocation, mode: RetypeMode, signal: AbortSignal, t: Transition): Promise<void> {
    const id = entry.record.instanceId;
    if (mode === "live") {
      await this.growLive(id, to);
      this.o.checkpoint("retype:grown-live");
      await this.define(entry, this.resized(entry, instanceType, to));
      return;
    }
    if (mode === "restart") {
      await this.o.power.stopAnyway(id, signal);
      this.o.checkpoint("retype:stopped");
    }
    const old = entry.record;
    await this.define(entry, this.resized(entry, instanceType, to));
    this.o.checkpoint("retype:defined");
    if (mode !== "restart") return;
    t.state = "STARTING";
    try {
      await this.o.power.powerOn(id);
    } catch (error) {
      // The new size did not start: back to the old definition, started as it was.
      await this.define(entry, { ...old, latestOperation: entry.record.latestOperation! });
      await this.o.power.powerOn(id).catch(() => undefined);
      throw error;
    }
  }

  /** Adds the vCPUs and the memory the running domain still lacks to reach `to` (idempotent). */
  private async growLive(id: string, to: Allocation): Promise<void> {
    const now = await this.o.hypervisor.liveSize(id);
    if (!now) throw new DomainError("HostFailure", `${id} stopped while it was being resized live; its size is unchanged`);
    if (now.vcpus < to.cpu) await this.o.hypervisor.setVcpusLive(id, to.cpu);
    this.o.checkpoint("retype:vcpus-live");
    const missingMiB = to.memoryGiB * 1024 - now.memoryMiB;
    if (missingMiB > 0) await this.o.hypervisor.attachMemoryLive(id, missingMiB);
  }

  /**
   * Recovery of a resize a restart interrupted. libvirt's definition carries the record, so
   * the adopted record has the old size or the new one. A live resize is rolled forward
   * (admitted, and partly applied to the running guest); another one is finished when the
   * definition has the new size and reported FAILED with the old size otherwise; an
   * instance a ForceStop resize had stopped is started again either way.
   */
  async resume(entry: InstanceEntry | undefined, j: { instanceId: string; record: InstanceRecord; mode: RetypeMode; requestId: string }): Promise<void> {
    const ctx = { requestId: j.requestId };
    if (!entry) {
      await this.o.journal.remove({ kind: "retype", instanceId: j.instanceId });
      return;
    }
    const id = entry.record.instanceId;
    const to: Allocation = { cpu: j.record.cpu, memoryGiB: j.record.memoryGiB };
    const definedNew = entry.record.cpu === to.cpu && entry.record.memoryGiB === to.memoryGiB;
    if (!definedNew) this.pending.set(id, retypeGrowth({ cpu: entry.record.cpu, memoryGiB: entry.record.memoryGiB }, to));
    const t = this.o.ops.begin(entry, RETYPE_ACTION, j.mode === "restart" ? "STARTING" : "UPDATING", ctx);
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(entry, t, RETYPE_ACTION, ctx, async () => {
        try {
          if (j.mode === "live" && !definedNew) {
            if (this.o.power.isOn(id)) await this.growLive(id, to);
            await this.define(entry, this.resized(entry, j.record.instanceType, to));
            return;
          }
          if (j.mode === "restart" && !this.o.power.isOn(id)) await this.o.power.powerOn(id);
          if (!definedNew) throw new DomainError("HostFailure", `the agent restarted before the new size was defined; ${id} keeps ${entry.record.instanceType}`);
        } finally {
          this.pending.delete(id);
          await this.o.journal.remove({ kind: "retype", instanceId: id });
        }
      }),
    );
  }

  /**
   * DescribeInstancesModification: every candidate size (candidateSizes) within the host's
   * totals, SELL when each instance named can take it now (retypeShortfall: what
   * ResetInstancesType admits), UNAVAILABLE with the reasons otherwise. For a running
   * instance a SELL size says whether it applies live or needs ForceStop, and why.
   */
  async modification(ids: readonly string[]): Promise<ModificationStatus[]> {
    const missing = ids.filter((id) => !this.o.registry.has(id));
    if (missing.length) throw new DomainError("InstanceNotFound", `no such instance on this host: ${missing.join(", ")}`);
    // Running instances: how far each may grow live (the message says whether a size applies live).
    const lives = new Map<string, LiveSize | null>();
    for (const id of new Set(ids)) {
      if (this.o.power.isOn(id)) lives.set(id, await this.o.hypervisor.liveSize(id).catch(() => null));
    }
    const resource = this.o.hostResource();
    const limits = { cpuTotal: resource.CpuTotal, memTotalGiB: Math.floor(resource.MemTotal) };
    const entries = [...new Set(ids)].map((id) => this.o.registry.get(id)!);
    const owns = entries.map((e) => ({ id: e.record.instanceId, own: { cpu: e.record.cpu, memoryGiB: e.record.memoryGiB } }));
    const sizes = new Map<string, Allocation>();
    for (const { own } of owns) for (const s of candidateSizes(limits, own)) sizes.set(typeName(s), s);
    const out: ModificationStatus[] = [];
    for (const size of [...sizes.values()].sort((a, b) => a.cpu - b.cpu || a.memoryGiB - b.memoryGiB)) {
      const why = owns.flatMap(({ id, own }) => {
        if (own.cpu === size.cpu && own.memoryGiB === size.memoryGiB) return [`${id} has this size already`];
        const short = retypeShortfall(resource, own, size);
        return short ? [`${id}: ${short}`] : [];
      });
      if (why.length) {
        out.push({ size, status: "UNAVAILABLE", message: why.join("; ") });
        continue;
      }
      const notes = owns.flatMap(({ id }) => {
        if (!lives.has(id)) return [];
        const problem = liveProblem(lives.get(id)!, size);
        return [problem === null ? `${id} (running) takes it live` : `${id} is running and needs ForceStop: ${problem}`];
      });
      out.push({ size, status: "SELL", message: ["fits on this host now", ...notes].join("; ") });
    }
    return out;
  }
}
