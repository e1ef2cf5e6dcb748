/**
 * FirewallState → two nftables tables (pure). README "Security groups: enforcement" has
 * the picture; in short:
 *
 * - `bridge <table>`: stateless, per tap (only the bridge family sees which port a frame
 *   came in on or goes out of; with br_netfilter the inet hooks see the bridge). A frame
 *   from a NIC's tap must carry its MAC and one of its addresses (ARP likewise; DHCP from
 *   0.0.0.0); a frame to a tap must be ARP or IPv4 for one of its addresses. Everything
 *   else from or to an agent's tap (IPv6, other ether types, spoofed frames) is dropped.
 *   This is what makes the address dispatch below sound.
 * - `inet <table>`: stateful (conntrack). Traffic forwarded out of an agent bridge is
 *   dispatched by (bridge, source address) to the sending NIC's chain, which runs its
 *   groups' egress chains in bound order and drops what none accepted; in a second base
 *   chain on the same hook (a later priority: an accept in the first goes on to it),
 *   traffic forwarded into an agent bridge is dispatched by (bridge, destination address)
 *   to the receiving NIC's ingress chain. Replies of an allowed flow pass by
 *   `ct state established,related`. Guest → host traffic (the input hook) passes only
 *   for the boot essentials: DHCP, DNS and the metadata port at its bridge's gateway.
 *   Traffic from the host to a guest is not filtered.
 * - A group is one chain per direction, its rules top-down (ACCEPT → accept, DROP →
 *   drop, no match → back to the NIC's chain, which goes on to its next group), and one
 *   set of its members' addresses for rules whose peer is that group.
 */
import type { FirewallNic, FirewallState, SgRule, SgRuleSet } from "./firewall-types.js";
import {
  NftTableBuilder,
  type NftMatch,
  type NftRule,
  type NftTable,
  type NftValue,
  type NftVerdict,
  checkIfname,
  normalizeCidr,
} from "../../drivers/network/nft.js";

export interface FirewallCompileOptions {
  /** Name of both tables (inet and bridge). */
  readonly table: string;
  /** The metadata server's port on each gateway (after the DNAT of 169.254.169.254:80). */
  readonly metadataPort: number;
}

export interface CompiledFirewall {
  readonly inet: NftTable;
  readonly bridge: NftTable;
}

/** Priorities: inet `filter` is 0; the ingress dispatch runs after the egress one on the forward hook. */
const INET_FILTER = 0;
const INGRESS_AFTER = 10;
/** bridge `filter` (-200): before br_netfilter hands the packet to the inet hooks (0, -1). */
const BRIDGE_FILTER = -200;

const ACCEPT: NftVerdict = { kind: "accept" };
const DROP: NftVerdict = { kind: "drop" };
const jump = (chain: string): NftVerdict => ({ kind: "jump", chain });
const ESTABLISHED: NftMatch = { kind: "ct", states: ["established", "related"] };
const INVALID: NftMatch = { kind: "ct", states: ["invalid"] };

/** Chain and set names (nft names allow no "-"). */
export const names = {
  groupKey: (securityGroupId: string) => securityGroupId.replace(/-/g, "_"),
  groupChain: (securityGroupId: string, dir: "in" | "out") => `${names.groupKey(securityGroupId)}_${dir}`,
  groupMembers: (securityGroupId: string) => `${names.groupKey(securityGroupId)}_members`,
  nicChain: (tap: string, dir: "in" | "out") => `nic_${tap}_${dir}`,
  fromTap: (tap: string) => `from_${tap}`,
  toTap: (tap: string) => `to_${tap}`,
};

const GROUP_ID_RE = /^sg-[a-z0-9]{1,32}$/;
const TAP_RE = /^[a-z0-9]{1,15}$/;

export class FirewallStateError extends Error {
  override readonly name = "FirewallStateError";
}

function checkState(state: FirewallState): void {
  const groups = new Set<string>();
  for (const g of state.groups) {
    if (!GROUP_ID_RE.test(g.securityGroupId)) throw new FirewallStateError(`invalid security group ID ${JSON.stringify(g.securityGroupId)}`);
    if (groups.has(g.securityGroupId)) throw new FirewallStateError(`security group ${g.securityGroupId} listed twice`);
    groups.add(g.securityGroupId);
  }
  const taps = new Set<string>();
  const owners = new Map<string, string>();
  for (const nic of state.nics) {
    if (!TAP_RE.test(nic.tap)) throw new FirewallStateError(`invalid tap name ${JSON.stringify(nic.tap)}`);
    checkIfname(nic.bridge);
    if (taps.has(nic.tap)) throw new FirewallStateError(`tap ${nic.tap} listed twice`);
    taps.add(nic.tap);
    for (const a of nic.addresses) {
      const key = `${nic.bridge} ${a}`;
      const other = owners.get(key);
      if (other !== undefined) throw new FirewallStateError(`address ${a} on ${nic.bridge} belongs to two NICs (${other}, ${nic.tap})`);
      owners.set(key, nic.tap);
    }
    for (const id of nic.securityGroupIds) {
      if (!groups.has(id)) throw new FirewallStateError(`NIC ${nic.tap} is bound to unknown security group ${id}`);
    }
  }
}

/** Compiles the whole state. Throws FirewallStateError on a state that cannot be right. */
export function compileFirewall(state: FirewallState, options: FirewallCompileOptions): CompiledFirewall {
  checkState(state);
  return { inet: compileInet(state, options), bridge: compileBridge(state, options) };
}

function uniq<T>(values: Iterable<T>): T[] {
  return [...new Set(values)];
}

function bridgesOf(state: FirewallState): string[] {
  return uniq(state.nics.map((n) => n.bridge)).sort();
}

function compileInet(state: FirewallState, options: FirewallCompileOptions): NftTable {
  const t = new NftTableBuilder("inet", options.table);
  const bridges = bridgesOf(state);
  const known = new Set(state.groups.map((g) => g.securityGroupId));
  t.set("agent_bridges", ["ifname"], bridges.map((b) => [{ ifname: b }]));
  t.set(
    "gateways",
    ["ifname", "ipv4_addr"],
    uniq(state.nics.map((n) => `${n.bridge} ${n.gateway}`))
      .sort()
      .map((k) => {
        const [bridge, gateway] = k.split(" ") as [string, string];
        return [{ ifname: bridge }, { ipv4: gateway }];
      }),
  );
  const byAddress = (dir: "in" | "out") =>
    state.nics.flatMap((nic) => nic.addresses.map((a) => [[{ ifname: nic.bridge }, { ipv4: a }] as NftValue[], jump(names.nicChain(nic.tap, dir))] as const));
  t.map("nic_out", ["ifname", "ipv4_addr"], byAddress("out"));
  t.map("nic_in", ["ifname", "ipv4_addr"], byAddress("in"));
  for (const g of state.groups) {
    const members = state.nics.filter((n) => n.securityGroupIds.includes(g.securityGroupId)).flatMap((n) => n.addresses);
    t.set(names.groupMembers(g.securityGroupId), ["ipv4_addr"], uniq(members).map((a) => [{ ipv4: a }]));
    t.chain(names.groupChain(g.securityGroupId, "in"), groupRules(g, "in", known));
    t.chain(names.groupChain(g.securityGroupId, "out"), groupRules(g, "out", known));
  }
  for (const nic of state.nics) {
    for (const dir of ["in", "out"] as const) {
      t.chain(names.nicChain(nic.tap, dir), [...nic.securityGroupIds.map((id) => ({ match: [], verdict: jump(names.groupChain(id, dir)) })), { match: [], verdict: DROP }]);
    }
  }
  const stateful: NftRule[] = [
    { match: [ESTABLISHED], verdict: ACCEPT },
    { match: [INVALID], verdict: DROP },
  ];
  t.chain("guest_out", [...stateful, { match: [], verdict: { kind: "vmap", key: ["iifname", "ip saddr"], map: "nic_out" } }, { match: [], verdict: DROP }]);
  t.chain("guest_in", [...stateful, { match: [], verdict: { kind: "vmap", key: ["oifname", "ip daddr"], map: "nic_in" } }, { match: [], verdict: DROP }]);
  const toGateway: NftMatch = { kind: "lookup", key: ["iifname", "ip daddr"], set: "gateways" };
  t.chain("guest_host", [
    ...stateful,
    // DHCP (a lease from 0.0.0.0 to broadcast, a renewal to the server).
    { match: [{ kind: "cmp", selector: "udp sport", values: [{ port: 68 }] }, { kind: "cmp", selector: "udp dport", values: [{ port: 67 }] }], verdict: ACCEPT },
    // DNS at the subnet's gateway, and the metadata server there (after its DNAT).
    { match: [toGateway, { kind: "cmp", selector: "udp dport", values: [{ port: 53 }] }], verdict: ACCEPT },
    { match: [toGateway, { kind: "cmp", selector: "tcp dport", values: [{ port: 53 }, { port: options.metadataPort }] }], verdict: ACCEPT },
    { match: [], verdict: DROP },
  ]);
  const fromAgentBridge: NftMatch = { kind: "lookup", key: ["iifname"], set: "agent_bridges" };
  const toAgentBridge: NftMatch = { kind: "lookup", key: ["oifname"], set: "agent_bridges" };
  // The subnets are isolated here, not by libvirt (their networks are in forward mode
  // 'open', so a libvirtd restart re-adds no rules of its own one by one under running
  // guests): only traffic bridged within one agent bridge goes on to the groups; anything
  // routed out of or into an agent bridge is dropped.
  const bridged = (chain: string) => bridges.map((b) => [[{ ifname: b }, { ifname: b }] as NftValue[], jump(chain)] as const);
  t.map("bridged_out", ["ifname", "ifname"], bridged("guest_out"));
  t.map("bridged_in", ["ifname", "ifname"], bridged("guest_in"));
  t.chain(
    "forward_out",
    [
      { match: [fromAgentBridge], verdict: { kind: "vmap", key: ["iifname", "oifname"], map: "bridged_out" } },
      { match: [fromAgentBridge], verdict: DROP },
    ],
    { hook: "forward", priority: INET_FILTER },
  );
  t.chain(
    "forward_in",
    [
      { match: [toAgentBridge], verdict: { kind: "vmap", key: ["iifname", "oifname"], map: "bridged_in" } },
      { match: [toAgentBridge], verdict: DROP },
    ],
    { hook: "forward", priority: INET_FILTER + INGRESS_AFTER },
  );
  t.chain("input_guest", [{ match: [fromAgentBridge], verdict: jump("guest_host") }], { hook: "input", priority: INET_FILTER });
  return t.build();
}

/** One group's rules in one direction, top-down. */
function groupRules(group: SgRuleSet, dir: "in" | "out", known: ReadonlySet<string>): NftRule[] {
  const rules = dir === "in" ? group.ingress : group.egress;
  return rules.flatMap((r) => compileRule(r, dir, known));
}

/**
 * One security group rule as nft rules: zero (a rule that can match nothing here: an
 * ICMPv6 rule, since guests have no IPv6, or a peer group that does not exist) or one.
 */
export function compileRule(rule: SgRule, dir: "in" | "out", known: ReadonlySet<string>): NftRule[] {
  const match: NftMatch[] = [];
  const peerSelector = dir === "in" ? "ip saddr" : "ip daddr";
  if ("cidr" in rule.peer) {
    const cidr = normalizeCidr(rule.peer.cidr.includes("/") ? rule.peer.cidr : `${rule.peer.cidr}/32`);
    if (cidr !== "0.0.0.0/0") match.push({ kind: "cmp", selector: peerSelector, values: [cidr.endsWith("/32") ? { ipv4: cidr.slice(0, -3) } : { cidr }] });
  } else {
    if (!known.has(rule.peer.securityGroupId)) return [];
    match.push({ kind: "lookup", key: [peerSelector], set: names.groupMembers(rule.peer.securityGroupId) });
  }
  switch (rule.protocol) {
    case "TCP":
    case "UDP": {
      const proto = rule.protocol === "TCP" ? "tcp" : "udp";
      if (rule.ports === "ALL") match.push({ kind: "cmp", selector: "meta l4proto", values: [{ proto }] });
      else {
        if (rule.ports.length === 0) return [];
        match.push({
          kind: "cmp",
          selector: proto === "tcp" ? "tcp dport" : "udp dport",
          values: rule.ports.map((p): NftValue => (typeof p === "number" ? { port: p } : { portRange: [p[0], p[1]] })),
        });
      }
      break;
    }
    case "ICMP":
      match.push({ kind: "cmp", selector: "meta l4proto", values: [{ proto: "icmp" }] });
      break;
    case "GRE":
      match.push({ kind: "cmp", selector: "meta l4proto", values: [{ proto: "gre" }] });
      break;
    case "ICMPV6":
      return [];
    case "ALL":
      break;
  }
  return [{ match, verdict: rule.action === "ACCEPT" ? ACCEPT : DROP }];
}

function compileBridge(state: FirewallState, options: FirewallCompileOptions): NftTable {
  const t = new NftTableBuilder("bridge", options.table);
  t.map("from_tap", ["ifname"], state.nics.map((n) => [[{ ifname: n.tap }], jump(names.fromTap(n.tap))] as const));
  t.map("to_tap", ["ifname"], state.nics.map((n) => [[{ ifname: n.tap }], jump(names.toTap(n.tap))] as const));
  for (const nic of state.nics) {
    t.chain(names.fromTap(nic.tap), fromTapRules(nic));
    t.chain(names.toTap(nic.tap), toTapRules(nic));
  }
  t.chain("guard_from", [{ match: [], verdict: { kind: "vmap", key: ["iifname"], map: "from_tap" } }], { hook: "prerouting", priority: BRIDGE_FILTER });
  t.chain("guard_to", [{ match: [], verdict: { kind: "vmap", key: ["oifname"], map: "to_tap" } }], { hook: "forward", priority: BRIDGE_FILTER });
  return t.build();
}

/** What a NIC may send: its MAC, its addresses (ARP too), DHCP before it has one. */
function fromTapRules(nic: FirewallNic): NftRule[] {
  const addresses = nic.addresses.map((a): NftValue => ({ ipv4: a }));
  const rules: NftRule[] = [{ match: [{ kind: "cmp", selector: "ether saddr", values: [{ mac: nic.mac.toLowerCase() }], negate: true }], verdict: DROP }];
  rules.push({
    match: [
      { kind: "cmp", selector: "arp saddr ether", values: [{ mac: nic.mac.toLowerCase() }] },
      // 0.0.0.0: an ARP probe (RFC 5227) before the address is claimed.
      { kind: "cmp", selector: "arp saddr ip", values: [...addresses, { ipv4: "0.0.0.0" }] },
    ],
    verdict: ACCEPT,
  });
  if (addresses.length > 0) rules.push({ match: [{ kind: "cmp", selector: "ip saddr", values: addresses }], verdict: ACCEPT });
  rules.push({
    match: [
      { kind: "cmp", selector: "ip saddr", values: [{ ipv4: "0.0.0.0" }] },
      { kind: "cmp", selector: "udp sport", values: [{ port: 68 }] },
      { kind: "cmp", selector: "udp dport", values: [{ port: 67 }] },
    ],
    verdict: ACCEPT,
  });
  rules.push({ match: [], verdict: DROP });
  return rules;
}

/** What another port may send to a NIC: ARP, and IPv4 for one of its addresses. */
function toTapRules(nic: FirewallNic): NftRule[] {
  const rules: NftRule[] = [{ match: [{ kind: "cmp", selector: "ether type", values: [{ proto: "arp" }] }], verdict: ACCEPT }];
  if (nic.addresses.length > 0) rules.push({ match: [{ kind: "cmp", selector: "ip daddr", values: nic.addresses.map((a) => ({ ipv4: a })) }], verdict: ACCEPT });
  rules.push({ match: [], verdict: DROP });
  return rules;
}
