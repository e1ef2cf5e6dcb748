/**
 * Domains defined before the agent's own firewall carry libvirt's `clean-traffic`
 * nwfilter on their NICs and no fixed tap name (libvirt picked `vnetN`), so the firewall's
 * per-tap chains do not see them. At start-up the agent redefines each such domain from its
 * record (the persistent definition only: `<target dev=tapName()>`, no filterref). A domain
 * that is shut off starts with the new definition; a running one keeps its live NICs (its
 * vnetN tap and clean-traffic) until it is next stopped and started: until then its
 * anti-spoofing is clean-traffic's, its security groups are enforced by address (the inet
 * table) all the same.
 */
import type { Logger } from "pino";
import type { DomainSpec, Hypervisor } from "../../drivers/libvirt/types.js";
import type { InstanceRecord } from "../model.js";
import { tapName } from "./firewall-types.js";

/**
 * True when a persistent definition's NICs are not what the agent writes today: a filter,
 * or a tap name that is not one of the instance's (tapName(instanceId, slot), any slot:
 * a NIC keeps its slot when another is detached).
 */
export function needsNicMigration(instanceId: string, spec: Pick<DomainSpec, "nics">): boolean {
  const ours = tapName(instanceId, 0).slice(0, -1);
  return spec.nics.some((nic) => nic.filter !== undefined || nic.targetDev === undefined || !new RegExp(`^${ours}\\d+$`).test(nic.targetDev));
}

export async function migrateNicDefinitions(o: {
  hypervisor: Pick<Hypervisor, "defineDomain">;
  /** Instances at rest (no operation under way), with their records. */
  instances: () => Iterable<InstanceRecord>;
  /** The instances whose definition, as start-up recovery read it, needsNicMigration. */
  candidates: ReadonlySet<string>;
  /** The domain spec the agent writes for a record (DomainSpecs.of). */
  specOf: (record: InstanceRecord) => DomainSpec;
  /** Runs `work` with the instance's operations held off. */
  exclusive: (instanceId: string, work: () => Promise<void>) => Promise<void>;
  logger: Pick<Logger, "info" | "warn">;
}): Promise<string[]> {
  const migrated: string[] = [];
  for (const record of o.instances()) {
    if (!o.candidates.has(record.instanceId)) continue;
    try {
      await o.exclusive(record.instanceId, () => o.hypervisor.defineDomain(o.specOf(record)));
      migrated.push(record.instanceId);
      o.logger.info(
        { instanceId: record.instanceId },
        "domain redefined with fixed tap names and without clean-traffic (the agent's firewall); a running guest takes it at its next start",
      );
    } catch (error) {
      o.logger.warn({ err: error, instanceId: record.instanceId }, "could not redefine the domain's NICs for the firewall; it keeps clean-traffic");
    }
  }
  return migrated;
}
