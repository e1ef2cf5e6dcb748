/**
 * ResetInstancesInternetMaxBandwidth: a new cap on the traffic that leaves the VPC, live.
 * All or nothing: every instance is checked first (it exists, its state allows the change, one
 * of its NICs is on a subnet with a route out of the VPC); then each record changes, is saved,
 * and the caps are applied before the answer (the tc classes change in place: no reboot, no
 * lost connection).
 */
import type { Operations } from "../../core/operations.js";
import type { InstanceRegistry } from "../../instances/registry.js";
import type { BandwidthCaps } from "./service.js";

export async function resetInternetMaxBandwidth(
  o: { ops: Pick<Operations, "saveRecord" | "validate">; registry: InstanceRegistry; caps: BandwidthCaps },
  ids: readonly string[],
  mbps: number,
): Promise<void> {
  const entries = o.ops.validate(ids, "ResetInstancesInternetMaxBandwidth");
  for (const entry of entries) o.caps.checkInternet(entry.record, "InternetAccessible.InternetMaxBandwidthOut");
  for (const entry of entries) {
    if (mbps > 0) entry.record.internetMaxBandwidthOut = mbps;
    else delete entry.record.internetMaxBandwidthOut;
    o.registry.touched(entry.record.instanceId, "ResetInstancesInternetMaxBandwidth");
  }
  await Promise.all(entries.map((e) => o.ops.saveRecord(e)));
  await o.caps.sync();
}
