/**
 * The client hardware address of a DHCP request (`chaddr`), held to the NIC the request came in
 * on (pure). dnsmasq answers by chaddr and cannot see which bridge port a request used, so a
 * guest could ask for another NIC's lease by writing that NIC's MAC there. An nftables `bridge`
 * table of the agent's (`<firewall_nft_table>_dhcp`, replaced whole in one `nft -f -`) drops, at
 * bridge prerouting, every DHCP request (UDP 68 → 67) that arrives on one of the agent's taps
 * (the set `agent_taps`) with a chaddr that is not the MAC of that tap's NIC: the pair (tap,
 * chaddr) must be in the set `nic_macs`. Only the taps this agent lists are checked, so a table
 * another agent left in the same network namespace (another table name) never touches this
 * agent's taps. The ENI actions load the sets with the firewall's rules, before a hot-plug
 * (DhcpService.guardNow), and a launch before its domain starts, so a tap is listed before it
 * exists.
 *
 * BOOTP puts chaddr 28 bytes into its message, after the 8 bytes of the UDP header: bits
 * 288–335 of the transport header (`@th,288,48`) hold an Ethernet MAC.
 */
import type { InstanceRecord } from "../../model.js";
import { nicTapName } from "../firewall-types.js";

/** One tap of the agent and the MAC of its NIC (lower case, colon-separated). */
export interface TapMac {
  readonly tap: string;
  readonly mac: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const TAP_RE = /^[a-z0-9]{1,15}$/;
/** Every NIC of every record, as its tap and MAC (malformed ones left out: they match nothing, so they get no DHCP). */
export function tapMacs(records: Iterable<Pick<InstanceRecord, "instanceId" | "nics">>): TapMac[] {
  const out: TapMac[] = [];
  for (const record of records) {
    record.nics.forEach((nic, index) => {
      let tap: string;
      try {
        tap = nicTapName(record.instanceId, nic, index);
      } catch {
        return;
      }
      const mac = nic.mac.toLowerCase();
      if (MAC_RE.test(mac)) out.push({ tap, mac });
    });
  }
  return out.sort((a, b) => (a.tap < b.tap ? -1 : a.tap > b.tap ? 1 : 0));
}

/** The table: `table bridge <table>` with the agent's taps, their (tap, MAC) pairs and the one rule that drops the rest. */
export function chaddrRuleset(table: string, pairs: readonly TapMac[]): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(table)) throw new Error(`bad nftables table name ${JSON.stringify(table)}`);
  const elements = pairs.map((p) => {
    if (!TAP_RE.test(p.tap)) throw new Error(`bad tap name ${JSON.stringify(p.tap)}`);
    if (!MAC_RE.test(p.mac)) throw new Error(`bad MAC ${JSON.stringify(p.mac)}`);
    return `"${p.tap}" . 0x${p.mac.replace(/:/g, "")}`;
  });
  const taps = [...new Set(pairs.map((p) => `"${p.tap}"`))];
  return [
    `table bridge ${table}`,
    `delete table bridge ${table}`,
    `table bridge ${table} {`,
    "  set agent_taps {",
    "    typeof iifname",
    ...(taps.length ? [`    elements = { ${taps.join(", ")} }`] : []),
    "  }",
    "  set nic_macs {",
    "    typeof iifname . @th,288,48",
    ...(elements.length ? [`    elements = { ${elements.join(", ")} }`] : []),
    "  }",
    "  chain dhcp_requests {",
    "    type filter hook prerouting priority -260; policy accept;",
    "    iifname @agent_taps udp sport 68 udp dport 67 iifname . @th,288,48 != @nic_macs counter drop",
    "  }",
    "}",
    "",
  ].join("\n");
}

/** Removes the table (DHCP off: nothing to guard), whether it exists or not. */
export function chaddrRemoval(table: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(table)) throw new Error(`bad nftables table name ${JSON.stringify(table)}`);
  return `table bridge ${table}\ndelete table bridge ${table}\n`;
}
