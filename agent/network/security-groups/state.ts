/**
 * The FirewallState (agent/network/firewall-types.ts) of the host: every group's rule set
 * and every NIC of every instance that exists (running or not; a launch that failed has no
 * NIC), with its tap, bridge, MAC, addresses, gateway and bound groups. Pure.
 */
import { nicTapName, type FirewallNic, type FirewallState } from "../firewall-types.js";
import type { Subnet } from "../subnets.js";
import type { StoredGroup } from "./model.js";
import { toSgRule } from "./rules.js";

/** What the state needs of an instance record. */
export interface FirewallInstance {
  instanceId: string;
  nics: ReadonlyArray<{ mac: string; network: string; ipv4?: string | undefined; subnetId?: string | undefined; slot?: number | undefined }>;
  /** Absent: the host's default group (records written before security groups). */
  securityGroupIds?: readonly string[] | undefined;
}

/** The groups an instance is bound to, in priority order. */
export function boundGroups(instance: Pick<FirewallInstance, "securityGroupIds">, defaultGroupId: string): readonly string[] {
  return instance.securityGroupIds ?? [defaultGroupId];
}

export function buildFirewallState(input: {
  groups: readonly StoredGroup[];
  defaultGroupId: string;
  instances: Iterable<FirewallInstance>;
  subnets: readonly Pick<Subnet, "subnetId" | "network" | "bridge" | "gateway">[];
}): FirewallState {
  const groups = input.groups.map((g) => ({
    securityGroupId: g.securityGroupId,
    ingress: g.ingress.map(toSgRule),
    egress: g.egress.map(toSgRule),
  }));
  const known = new Set(groups.map((g) => g.securityGroupId));
  const nics: FirewallNic[] = [];
  const instances = [...input.instances].sort((a, b) => a.instanceId.localeCompare(b.instanceId));
  for (const instance of instances) {
    instance.nics.forEach((nic, index) => {
      const subnet = input.subnets.find((s) => (nic.subnetId !== undefined ? s.subnetId === nic.subnetId : s.network === nic.network));
      if (!subnet) return; // a NIC on no configured subnet has no bridge the agent filters
      nics.push({
        tap: nicTapName(instance.instanceId, nic, index),
        bridge: subnet.bridge,
        mac: nic.mac.toLowerCase(),
        addresses: nic.ipv4 ? [nic.ipv4] : [],
        gateway: subnet.gateway,
        // A group deleted under a stale record would name nothing: only groups that exist.
        securityGroupIds: boundGroups(instance, input.defaultGroupId).filter((id) => known.has(id)),
        instanceId: instance.instanceId,
      });
    });
  }
  return { groups, nics };
}

/** An instance's groups with their names, in priority order (what the metadata trees serve). */
export function namedGroupsOf(
  state: { readonly groups: readonly StoredGroup[]; readonly defaultGroupId: string },
  instance: Pick<FirewallInstance, "securityGroupIds">,
): Array<{ id: string; name: string }> {
  return boundGroups(instance, state.defaultGroupId).flatMap((id) => {
    const group = state.groups.find((g) => g.securityGroupId === id);
    return group ? [{ id, name: group.name }] : [];
  });
}
