/**
 * The contract between the security-group service (what the API says: groups, rules,
 * bindings) and the firewall (what nftables enforces). The service builds a whole
 * `FirewallState` after every change and hands it to `Firewall.sync`; the firewall
 * compares it with what it applied last and writes only the difference, as one atomic
 * nft transaction. Pure data: no I/O, no libvirt, no nft here.
 */

/** Protocols of a rule, upper-cased (the API compares case-insensitively). */
export type SgProtocol = "TCP" | "UDP" | "ICMP" | "ICMPV6" | "GRE" | "ALL";

/** A port matcher: every port, or a list of single ports and inclusive ranges. */
export type SgPorts = "ALL" | ReadonlyArray<number | readonly [number, number]>;

/** Whom a rule's other end is: an IPv4 CIDR ("0.0.0.0/0", "10.0.0.5/32"), or every address of every NIC in a group. */
export type SgPeer = { readonly cidr: string } | { readonly securityGroupId: string };

export interface SgRule {
  readonly action: "ACCEPT" | "DROP";
  readonly protocol: SgProtocol;
  /** "ALL" unless protocol is TCP or UDP. */
  readonly ports: SgPorts;
  readonly peer: SgPeer;
}

/** One group's rules, each direction top-down: the first matching rule decides. */
export interface SgRuleSet {
  readonly securityGroupId: string;
  /** What may reach a NIC of the group (peer = the sender). */
  readonly ingress: readonly SgRule[];
  /** What a NIC of the group may send (peer = the receiver). */
  readonly egress: readonly SgRule[];
}

/** A guest NIC as the firewall sees it. */
export interface FirewallNic {
  /** The host-side tap device, fixed in the domain definition (so rules exist before the guest starts). */
  readonly tap: string;
  /** The bridge the tap is a port of. */
  readonly bridge: string;
  /** The NIC's MAC: the only source MAC it may send from. */
  readonly mac: string;
  /** Its IPv4 addresses, primary first: the only source addresses it may send from. */
  readonly addresses: readonly string[];
  /** The subnet's gateway (the host's address on the bridge): metadata and DNS there always pass. */
  readonly gateway: string;
  /** Bound groups in priority order (first evaluated first). Empty = deny everything but the boot essentials. */
  readonly securityGroupIds: readonly string[];
  /** Owner, for the inventory sweep's report. */
  readonly instanceId: string;
}

export interface FirewallState {
  /** Every group that exists (also those bound to nothing: peers may name them). */
  readonly groups: readonly SgRuleSet[];
  /** Every NIC of every instance that exists on this host, running or not. */
  readonly nics: readonly FirewallNic[];
}

export interface Firewall {
  /**
   * Make the kernel's ruleset match `state`, in one nft transaction. Resolves once the
   * kernel has it; rejects (leaving the previous rules in force) when nft refuses it.
   */
  sync(state: FirewallState): Promise<void>;
  /** Chains and set elements of the agent's table that belong to no NIC or group of `state` (the inventory sweep's report). */
  strays(state: FirewallState): Promise<string[]>;
}

/**
 * The tap device of an instance's NIC: "cdh" + the 8 characters after "ins-" + the NIC's
 * index, at most 15 characters (IFNAMSIZ). Written into the domain definition as
 * `<target dev=…/>`, so the firewall's chains for it exist before the guest can send.
 */
export function tapName(instanceId: string, nicIndex: number): string {
  const suffix = instanceId.replace(/^ins-/, "");
  const name = `cdh${suffix}${nicIndex}`;
  if (!/^[a-z0-9]+$/.test(suffix) || name.length > 15) throw new Error(`no tap name for ${instanceId} NIC ${nicIndex}`);
  return name;
}

/** The tap device of an instance's NIC, from its fixed slot (NicRecord.slot) or, for older records, its index. */
export function nicTapName(instanceId: string, nic: { readonly slot?: number | undefined }, index: number): string {
  return tapName(instanceId, nic.slot ?? index);
}
