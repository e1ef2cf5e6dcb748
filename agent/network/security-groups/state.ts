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
  nics: ReadonlyArray<{
    mac: string;
    network: string;
    ipv4?: string | undefined;
    subnetId?: string | undefined;
    slot?: number | undefined;
    /** Secondary addresses (AssignPrivateIpAddresses): anti-spoofing lets them out too, and they are group members. */
    secondaryIpv4s?: readonly string[] | undefined;
    /** A secondary NIC's own groups (an ENI's); absent, and always for the primary NIC: the instance's. */
    securityGroupIds?: readonly string[] | undefined;
  }>;
  /** Absent: the host's default group (records written before security groups). */
  securityGroupIds?: readonly string[] | undefined;
}

/** The groups an instance is bound to, in priority order. */
export function boundGroups(instance: Pick<FirewallInstance, "securityGroupIds">, defaultGroupId: string): readonly string[] {
  return instance.securityGroupIds ?? [defaultGroupId];
}

/** A NIC's groups in priority order: the primary NIC (index 0) follows its instance; another NIC its own, else its instance's. */
export function nicGroups(instance: Pick<FirewallInstance, "securityGroupIds" | "nics">, index: number, defaultGroupId: string): readonly string[] {
  const own = index === 0 ? undefined : instance.nics[index]?.securityGroupIds;
  return own ?? boundGroups(instance, defaultGroupId);
}

/** Every group any NIC of the instance is bound to (its own and its ENIs'). */
export function groupsOfAnyNic(instance: Pick<FirewallInstance, "securityGroupIds" | "nics">, defaultGroupId: string): Set<string> {
  const all = new Set(boundGroups(instance, defaultGroupId));
  instance.nics.forEach((_, i) => nicGroups(instance, i, defaultGroupId).forEach((g) => all.add(g)));
  return all;
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
        // Exactly the NIC's current addresses, primary first.
        addresses: [...(nic.ipv4 ? [nic.ipv4] : []), ...(nic.secondaryIpv4s ?? [])],
        gateway: subnet.gateway,
        // A group deleted under a stale record would name nothing: only groups that exist.
        securityGroupIds: nicGroups(instance, index, input.defaultGroupId).filter((id) => known.has(id)),
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
