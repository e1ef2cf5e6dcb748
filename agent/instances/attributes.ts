/**
 * ModifyInstancesAttribute's record-only attributes: InstanceName and DisableApiTermination.
 * Nothing in the guest or in libvirt's domain changes; the record does, and is saved where the
 * instance's record lives (its domain's metadata, or the launch-failed file of a tombstone).
 * All or nothing: every instance is checked first; a refusal changes none. The change answers
 * once it is saved, so a TerminateInstances that follows sees it, also after an agent restart.
 */
import { DomainError } from "../core/errors.js";
import type { Operations } from "../core/operations.js";
import type { InstanceState } from "../model.js";
import type { DataPaths } from "../paths.js";
import { saveLaunchFailed } from "./provision.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

export interface AttributeChange {
  instanceName?: string;
  disableApiTermination?: boolean;
}

/**
 * States whose record may change here: PENDING (no domain yet to save into) and TERMINATING
 * (going away) may not; a LAUNCH_FAILED tombstone may, so that its protection can be cleared
 * and it can be terminated.
 */
const REFUSED = new Set<InstanceState>(["PENDING", "TERMINATING"]);

export class AttributeOperations {
  constructor(private readonly o: { ops: Pick<Operations, "saveRecord">; registry: InstanceRegistry; paths: DataPaths }) {}

  /** The instances the change applies to, checked; nothing changes. */
  check(ids: readonly string[]): InstanceEntry[] {
    const { registry } = this.o;
    const missing = ids.filter((id) => !registry.has(id));
    if (missing.length) throw new DomainError("InstanceNotFound", `no such instance on this host: ${missing.join(", ")}`);
    const entries = [...new Set(ids)].map((id) => registry.get(id)!);
    for (const entry of entries) {
      const state = registry.stateOf(entry);
      if (REFUSED.has(state)) throw new DomainError("InstanceState", `ModifyInstancesAttribute is not allowed for ${entry.record.instanceId} in state ${state}`, { state });
    }
    return entries;
  }

  async modify(ids: readonly string[], change: AttributeChange): Promise<void> {
    const entries = this.check(ids);
    for (const entry of entries) {
      const r = entry.record;
      if (change.instanceName !== undefined) r.instanceName = change.instanceName;
      if (change.disableApiTermination === true) r.disableApiTermination = true;
      else if (change.disableApiTermination === false) delete r.disableApiTermination;
      this.o.registry.touched(r.instanceId, "ModifyInstancesAttribute");
    }
    await Promise.all(entries.map((e) => (e.launchFailed ? saveLaunchFailed(this.o.paths, e.record) : this.o.ops.saveRecord(e))));
  }
}
