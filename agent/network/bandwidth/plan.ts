/**
 * A NIC's caps as tc commands and the host's packet-rate caps as one nftables table. Pure: no
 * I/O (agent/network/bandwidth/service.ts runs them). README "Bandwidth and packet caps".
 *
 * Why tc and not libvirt's `<bandwidth>`: what a guest sends arrives on its tap's ingress, and
 * libvirt shapes that with a tc `police` filter, which this kernel does not have
 * (reference/test-environment.md); libvirt's `<bandwidth>` also cannot tell traffic that leaves
 * the VPC from the rest. So, per NIC:
 *
 * - What the guest sends: the tap's ingress qdisc redirects every frame (u32 match-all + mirred)
 *   to the NIC's IFB device, where an HTB tree shapes it: class 1:1 is the intranet cap; under it
 *   1:10 (the default: VPC traffic, ARP, anything not IPv4) and, when the NIC has an internet
 *   cap, 1:20 = min(internet cap, intranet cap) for IPv4 to any destination outside the VPC's
 *   subnets. u32 filters on the destination address send the VPC's subnets (and 169.254.0.0/16,
 *   the host's metadata service) to 1:10 first (prio 1), everything else IPv4 to 1:20 (prio 2).
 * - What the guest receives: the same tree as the tap's root qdisc, with the ingress rates
 *   (the seeds' rule: the internet cap when over 10 Mbit/s, else 10) and the filters on the
 *   source address.
 * - Packets per second (tc's `police` is missing here, so HTB, which counts bytes, cannot do it):
 *   an nftables `bridge` table of the agent's with one `limit rate over N/second … drop` rule per
 *   tap and direction, at the bridge's prerouting (from the guest) and postrouting (to it) hooks.
 */
import { ipToInt, intToIp } from "../subnets.js";

export interface NicCaps {
  /** The tap device (firewall-types.ts nicTapName). */
  readonly tap: string;
  /** Intranet cap, Mbit/s, each direction. */
  readonly intranetMbps: number;
  /** Intranet packet rate, packets/s, each direction. */
  readonly intranetPps: number;
  /** Traffic leaving the VPC: egress and ingress Mbit/s; absent = no internet cap on this NIC. */
  readonly internet?: { readonly outMbps: number; readonly inMbps: number };
  /** The CIDRs that count as inside the VPC ("10.201.0.0/24"); used only with `internet`. */
  readonly vpcCidrs: readonly string[];
}

/** Destinations that never count as leaving the VPC: the host's link-local metadata service. */
export const ALWAYS_INSIDE = ["169.254.0.0/16"] as const;

/** The IFB device of a tap: "cbw" + the tap's name after its "cdh" prefix (same length, ≤ 15). */
export function ifbName(tap: string): string {
  if (!/^cdh[a-z0-9]+$/.test(tap) || tap.length > 15) throw new Error(`no IFB name for tap ${JSON.stringify(tap)}`);
  return `cbw${tap.slice(3)}`;
}

/** IFB devices the agent made (for the sweep of those whose tap is gone). */
export function isAgentIfb(name: string): boolean {
  return /^cbw[a-z0-9]+$/.test(name) && name.length <= 15;
}

/** Bytes a class sends per round: fixed, so that HTB does not warn about (or derive) huge quanta at Gbit/s rates. */
const QUANTUM = 60_000;

const kbit = (mbps: number) => `${Math.max(8, Math.round(mbps * 1000))}kbit`;

function normalize(cidr: string): string {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  if (!m) throw new Error(`not an IPv4 CIDR: ${JSON.stringify(cidr)}`);
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  return `${intToIp(Math.floor(ipToInt(m[1]!) / size) * size)}/${prefix}`;
}

/** One HTB tree (as tc batch lines) on `dev`: `rateMbps` overall, `internetMbps` for `dir` addresses outside `inside`. */
function htbTree(dev: string, rateMbps: number, internetMbps: number | undefined, inside: readonly string[], dir: "dst" | "src"): string[] {
  const lines = [
    `qdisc add dev ${dev} root handle 1: htb default 10`,
    `class add dev ${dev} parent 1: classid 1:1 htb rate ${kbit(rateMbps)} ceil ${kbit(rateMbps)} quantum ${QUANTUM}`,
    `class add dev ${dev} parent 1:1 classid 1:10 htb rate ${kbit(rateMbps)} ceil ${kbit(rateMbps)} quantum ${QUANTUM}`,
  ];
  if (internetMbps === undefined) return lines;
  const capped = Math.min(internetMbps, rateMbps);
  lines.push(`class add dev ${dev} parent 1:1 classid 1:20 htb rate ${kbit(capped)} ceil ${kbit(capped)} quantum ${QUANTUM}`);
  for (const cidr of inside) lines.push(`filter add dev ${dev} parent 1: protocol ip prio 1 u32 match ip ${dir} ${cidr} flowid 1:10`);
  lines.push(`filter add dev ${dev} parent 1: protocol ip prio 2 u32 match u32 0 0 flowid 1:20`);
  return lines;
}

export interface TcPlan {
  readonly tap: string;
  readonly ifb: string;
  /** `tc -force -batch -` lines that remove what a previous plan left (failures expected and ignored). */
  readonly clear: readonly string[];
  /** `tc -batch -` lines that install the caps (after `clear`, with the IFB device up). */
  readonly install: readonly string[];
}

/** The tc commands for one NIC. */
export function tcPlan(nic: NicCaps): TcPlan {
  const ifb = ifbName(nic.tap);
  const inside = nic.internet ? [...new Set([...nic.vpcCidrs, ...ALWAYS_INSIDE].map(normalize))].sort() : [];
  return {
    tap: nic.tap,
    ifb,
    clear: [`qdisc del dev ${nic.tap} root`, `qdisc del dev ${nic.tap} ingress`, `qdisc del dev ${ifb} root`],
    install: [
      // What the guest sends, shaped on the IFB device.
      ...htbTree(ifb, nic.intranetMbps, nic.internet?.outMbps, inside, "dst"),
      `qdisc add dev ${nic.tap} handle ffff: ingress`,
      `filter add dev ${nic.tap} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev ${ifb}`,
      // What the guest receives, shaped on the tap itself.
      ...htbTree(nic.tap, nic.intranetMbps, nic.internet?.inMbps, inside, "src"),
    ],
  };
}

/** A short, stable text of what a plan installs (to tell whether a tap already has it). */
export function planKey(plan: TcPlan): string {
  return plan.install.join("\n");
}

/** The packet-rate table: `table bridge <table>`, replaced whole in one `nft -f -` transaction. */
export function ppsRuleset(table: string, nics: readonly Pick<NicCaps, "tap" | "intranetPps">[]): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(table)) throw new Error(`bad nftables table name ${JSON.stringify(table)}`);
  const sorted = [...nics].sort((a, b) => (a.tap < b.tap ? -1 : a.tap > b.tap ? 1 : 0));
  const rule = (key: "iifname" | "oifname", n: Pick<NicCaps, "tap" | "intranetPps">) => {
    if (!/^[a-z0-9]{1,15}$/.test(n.tap)) throw new Error(`bad tap name ${JSON.stringify(n.tap)}`);
    const burst = Math.max(100, Math.round(n.intranetPps / 10));
    return `    ${key} "${n.tap}" limit rate over ${n.intranetPps}/second burst ${burst} packets counter drop`;
  };
  return [
    `table bridge ${table}`,
    `delete table bridge ${table}`,
    `table bridge ${table} {`,
    "  chain from_guest {",
    "    type filter hook prerouting priority -250; policy accept;",
    ...sorted.map((n) => rule("iifname", n)),
    "  }",
    "  chain to_guest {",
    "    type filter hook postrouting priority -250; policy accept;",
    ...sorted.map((n) => rule("oifname", n)),
    "  }",
    "}",
    "",
  ].join("\n");
}
