/**
 * ModifyInstancesAttribute's record-only attributes: InstanceName and DisableApiTermination.
 * Nothing in the guest or in libvirt's domain changes; the record does, and is saved where the
 * instance's record lives (its domain's metadata, or the launch-failed file of a tombstone).
 * All or nothing: every instance is checked first; a refusal changes none. The change answers
 * once it is saved, so a TerminateInstances that follows sees it, also after an agent restart.
 */
import type { Operations } from "../core/operations.js";
import type { DataPaths } from "../paths.js";
import { saveLaunchFailed } from "./provision.js";
import type { InstanceRegistry } from "./registry.js";

export interface AttributeChange {
  instanceName?: string;
  disableApiTermination?: boolean;
}

export class AttributeOperations {
  constructor(private readonly o: { ops: Pick<Operations, "saveRecord" | "validate">; registry: InstanceRegistry; paths: DataPaths }) {}

  /** The instances exist and their states allow the change (model.ts ALLOWED_FROM: not PENDING, not TERMINATING); then each record changes and is saved. */
  async modify(ids: readonly string[], change: AttributeChange): Promise<void> {
    const entries = this.o.ops.validate(ids, "ModifyInstancesAttribute");
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
