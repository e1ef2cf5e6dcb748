/**
 * The address books of the subnets: an address is in use while any NIC of any instance
 * (its primary or a secondary address) or any unattached ENI holds it. Launches
 * (agent/instances/launch.ts) and the ENI actions both allocate from here. Pure.
 */
import type { NicRecord } from "../../model.js";
import { inSubnet, intToIp, ipToInt, isIpv4, type Subnet } from "../subnets.js";
import { eniError } from "./errors.js";
import type { StoredEni } from "./model.js";

/** Every address a NIC holds, primary first. */
export function nicAddresses(nic: Pick<NicRecord, "ipv4" | "secondaryIpv4s">): string[] {
  return [...(nic.ipv4 ? [nic.ipv4] : []), ...(nic.secondaryIpv4s ?? [])];
}

/** The addresses in use on `subnetId`. */
export function addressesInUse(o: {
  records: Iterable<{ readonly nics: readonly NicRecord[] }>;
  enis: readonly StoredEni[];
  subnetId: string;
}): Set<string> {
  const used = new Set<string>();
  for (const record of o.records) {
    for (const nic of record.nics) if (nic.subnetId === o.subnetId) for (const ip of nicAddresses(nic)) used.add(ip);
  }
  for (const eni of o.enis) {
    if (eni.net?.subnetId !== o.subnetId) continue;
    used.add(eni.net.primaryIp);
    for (const ip of eni.net.secondaryIps) used.add(ip);
  }
  return used;
}

/**
 * A requested address, checked: IPv4, a host address of the subnet, not its gateway, not used;
 * `held`: addresses a change under way holds (a primary address change), refused as in use with
 * that said.
 */
export function checkAddress(subnet: Subnet, used: ReadonlySet<string>, ip: string, field: string, held: ReadonlySet<string> = new Set()): string {
  if (!isIpv4(ip)) throw eniError("BadValue", `\`${field}\` ${JSON.stringify(ip)} is not an IPv4 address`);
  const base = ipToInt(subnet.address);
  const n = ipToInt(ip);
  const size = 2 ** (32 - subnet.prefixLength);
  if (n < base || n >= base + size) {
    throw eniError("BadValue", `\`${field}\` ${ip} is not in subnet ${subnet.subnetId} (${subnet.address}/${subnet.prefixLength})`);
  }
  if (!inSubnet(subnet, ip) || ip === subnet.gateway) {
    throw eniError("Reserved", `\`${field}\` ${ip} is reserved in ${subnet.subnetId} (its network, broadcast or gateway address ${subnet.gateway})`);
  }
  if (held.has(ip)) throw eniError("AddressInUse", `\`${field}\` ${ip} is held by an address change under way in ${subnet.subnetId} (ModifyInstancesVpcAttribute)`);
  if (used.has(ip)) throw eniError("AddressInUse", `\`${field}\` ${ip} is already used in ${subnet.subnetId}`);
  return ip;
}

/** The lowest free host address of the subnet (not the gateway); each one returned is added to `used`. */
export function allocate(subnet: Subnet, used: Set<string>): string {
  const base = ipToInt(subnet.address);
  const size = 2 ** (32 - subnet.prefixLength);
  for (let n = base + 1; n < base + size - 1; n++) {
    const ip = intToIp(n);
    if (ip === subnet.gateway || used.has(ip)) continue;
    used.add(ip);
    return ip;
  }
  throw eniError("SubnetFull", `subnet ${subnet.subnetId} has no free address left`);
}
