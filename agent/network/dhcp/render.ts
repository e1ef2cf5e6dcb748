/**
 * DHCP with fixed leases only (pure): which NIC gets which lease, and the files and the
 * command line of the dnsmasq that serves one subnet (agent/network/dhcp/dnsmasq.ts runs it).
 *
 * As OpenStack's DHCP agent does (neutron/agent/linux/dhcp.py): one dnsmasq per subnet,
 * `--dhcp-range=<network>,static` (no address pool at all), one `dhcp-host` line per NIC in a
 * hosts file, the options in an options file (both re-read on SIGHUP), and the classless
 * static routes (option 121, and 249 for older Windows) to the metadata addresses through the
 * gateway, with the default route beside them (a client that gets option 121 ignores option 3,
 * RFC 3442). A MAC that is in no `dhcp-host` line is ignored outright (`dhcp-ignore=tag:!known`):
 * it gets neither an offer nor a NAK.
 */
import type { InstanceRecord } from "../../model.js";
import { inSubnet, netmask, type Subnet } from "../subnets.js";
import { METADATA_ADDRESSES } from "../../../drivers/network/metadata-redirect.js";

/** One fixed lease: a NIC's MAC and its primary address (and, for an instance's first NIC, its host name). */
export interface DhcpHost {
  readonly mac: string;
  readonly ip: string;
  readonly hostname?: string;
  readonly instanceId: string;
}

/** A NIC left without a lease, and why (logged by the service). */
export interface DhcpSkipped {
  readonly instanceId: string;
  readonly mac: string;
  readonly reason: string;
}

/** The subnet fields DHCP uses. */
export type DhcpSubnet = Pick<Subnet, "subnetId" | "network" | "bridge" | "address" | "prefixLength" | "gateway" | "dns">;

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The DHCP host name (option 12) for an instance's host name: its first label, lower case,
 * when that is a valid DNS label; else none (cloud-init and cloudbase-init take the full
 * name from the metadata anyway).
 */
export function dhcpHostname(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const label = name.split(".")[0]!.toLowerCase();
  return LABEL_RE.test(label) ? label : undefined;
}

/** True when `nic` sits on `subnet` (by its subnet ID; records from before subnets: by network). */
function onSubnet(nic: InstanceRecord["nics"][number], subnet: DhcpSubnet): boolean {
  return nic.subnetId !== undefined ? nic.subnetId === subnet.subnetId : nic.network === subnet.network;
}

/**
 * The fixed leases of one subnet: one per NIC on it (its primary address; secondary
 * addresses are never leased), in address order. A NIC whose MAC or address is malformed,
 * outside the subnet, the gateway, or already leased to another NIC gets none.
 */
export function dhcpHosts(records: Iterable<InstanceRecord>, subnet: DhcpSubnet): { hosts: DhcpHost[]; skipped: DhcpSkipped[] } {
  const hosts: DhcpHost[] = [];
  const skipped: DhcpSkipped[] = [];
  const macs = new Set<string>();
  const ips = new Set<string>();
  const sorted = [...records].sort((a, b) => (a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0));
  for (const record of sorted) {
    record.nics.forEach((nic, index) => {
      if (!onSubnet(nic, subnet)) return;
      const mac = nic.mac.toLowerCase();
      const skip = (reason: string) => skipped.push({ instanceId: record.instanceId, mac, reason });
      if (!MAC_RE.test(mac)) return skip("malformed MAC");
      if (nic.ipv4 === undefined) return skip("no address");
      if (!inSubnet(subnet, nic.ipv4) || nic.ipv4 === subnet.gateway) return skip(`${nic.ipv4} is not a host address of ${subnet.address}/${subnet.prefixLength}`);
      if (macs.has(mac)) return skip("MAC already leased to another NIC");
      if (ips.has(nic.ipv4)) return skip(`${nic.ipv4} already leased to another NIC`);
      macs.add(mac);
      ips.add(nic.ipv4);
      // The host name only on the instance's first NIC: one name, one lease.
      const hostname = index === 0 ? dhcpHostname(record.hostName ?? record.instanceId) : undefined;
      hosts.push({ mac, ip: nic.ipv4, instanceId: record.instanceId, ...(hostname ? { hostname } : {}) });
    });
  }
  const key = (ip: string) => ip.split(".").reduce((n, p) => n * 256 + Number(p), 0);
  hosts.sort((a, b) => key(a.ip) - key(b.ip));
  return { hosts, skipped };
}

/**
 * The `--dhcp-hostsfile`: `MAC,id:*,IP[,NAME]` a line. `id:*` matches the MAC alone, whatever
 * client identifier the client sends (cloud-init's ephemeral dhclient and systemd-networkd
 * send different ones for the same NIC).
 */
export function renderHostsFile(hosts: readonly DhcpHost[]): string {
  const lines = ["# cdh-agent: fixed DHCP leases, one per NIC (rewritten by the agent; dnsmasq re-reads it on SIGHUP)"];
  for (const h of hosts) lines.push(`${h.mac},id:*,${h.ip}${h.hostname ? `,${h.hostname}` : ""}`);
  return `${lines.join("\n")}\n`;
}

/** MAC → address of a hosts file (what dnsmasq last read); comments and odd lines are skipped. */
export function parseHostsFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const fields = line.trim().split(",");
    if (fields.length < 3 || !MAC_RE.test(fields[0]!)) continue;
    const ip = fields.find((f, i) => i > 0 && /^\d+\.\d+\.\d+\.\d+$/.test(f));
    if (ip) out.set(fields[0]!, ip);
  }
  return out;
}

/**
 * The routes a client is given (option 121 and 249): each metadata address (/32) through the
 * gateway, and the default route, which option 121 replaces (RFC 3442).
 */
export function classlessRoutes(gateway: string, metadataAddresses: readonly string[] = METADATA_ADDRESSES): string[] {
  return [...metadataAddresses.map((a) => `${a}/32,${gateway}`), `0.0.0.0/0,${gateway}`];
}

/** The `--dhcp-optsfile`: router, DNS servers (when the subnet has any) and the classless static routes. */
export function renderOptsFile(subnet: DhcpSubnet, metadataAddresses: readonly string[] = METADATA_ADDRESSES): string {
  const routes = classlessRoutes(subnet.gateway, metadataAddresses).join(",");
  const lines = [
    "# cdh-agent: DHCP options of this subnet (rewritten by the agent; dnsmasq re-reads it on SIGHUP)",
    `option:router,${subnet.gateway}`,
    ...(subnet.dns.length ? [`option:dns-server,${subnet.dns.join(",")}`] : []),
    `option:classless-static-route,${routes}`,
    // Microsoft's classless static route option (Windows before Vista asks for 249, not 121).
    `249,${routes}`,
  ];
  return `${lines.join("\n")}\n`;
}

/** The files of one subnet's dnsmasq, in its own directory. */
export interface DnsmasqFiles {
  readonly pidFile: string;
  readonly hostsFile: string;
  readonly optsFile: string;
  readonly logFile: string;
}

/** The pid file's name: how the agent recognises a dnsmasq it started (README "DHCP"). */
export const PID_FILE_NAME = "cdh-dhcp.pid";

export function dnsmasqFiles(dir: string): DnsmasqFiles {
  return {
    pidFile: `${dir}/${PID_FILE_NAME}`,
    hostsFile: `${dir}/hosts`,
    optsFile: `${dir}/opts`,
    logFile: `${dir}/dnsmasq.log`,
  };
}

/**
 * dnsmasq's arguments (argv without the program): DHCP only (`port=0`: no DNS), on the
 * subnet's bridge only (`bind-dynamic` with one `interface`: the DHCP socket is bound to that
 * device, so several dnsmasqs share port 67), no default config file, no lease file (the
 * leases are the hosts file; nothing stale survives a restart), static leases only.
 */
export function dnsmasqArgs(subnet: DhcpSubnet, files: DnsmasqFiles, leaseTimeS: number): string[] {
  if (!Number.isInteger(leaseTimeS) || leaseTimeS < 120) throw new RangeError(`DHCP lease time ${leaseTimeS} s: at least 120 s`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(subnet.bridge)) throw new TypeError(`invalid bridge name ${JSON.stringify(subnet.bridge)}`);
  return [
    "--conf-file=/dev/null",
    "--port=0",
    `--interface=${subnet.bridge}`,
    "--except-interface=lo",
    "--bind-dynamic",
    `--pid-file=${files.pidFile}`,
    `--dhcp-range=${subnet.address},static,${netmask(subnet.prefixLength)},${leaseTimeS}s`,
    `--dhcp-hostsfile=${files.hostsFile}`,
    `--dhcp-optsfile=${files.optsFile}`,
    "--dhcp-ignore=tag:!known",
    "--dhcp-authoritative",
    "--leasefile-ro",
    `--log-facility=${files.logFile}`,
  ];
}

/**
 * Whether dnsmasq must be restarted rather than told to re-read its files: when a MAC it had
 * a lease for is gone or has another address. dnsmasq keeps a lease in memory until it
 * expires, and would refuse a NIC the same address while another MAC holds it ("not using
 * configured address … because it is leased to …"); a restart (no lease file) forgets them all,
 * and the clients still present get theirs back on their next request.
 */
export function needsRestart(before: ReadonlyMap<string, string>, after: readonly DhcpHost[]): boolean {
  const now = new Map(after.map((h) => [h.mac, h.ip]));
  for (const [mac, ip] of before) if (now.get(mac) !== ip) return true;
  return false;
}
