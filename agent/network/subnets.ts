/**
 * Subnets: each is a libvirt network (a bridge) with a CIDR, a gateway on the host's
 * side of the bridge and DNS servers, declared in the configuration. Addresses are
 * handed out here, synchronously, so that admission and allocation are one step.
 */
import { DomainError } from "../core/errors.js";

export interface Subnet {
  readonly subnetId: string;
  readonly vpcId: string;
  /** libvirt network name. */
  readonly network: string;
  /** Bridge device of that network. */
  readonly bridge: string;
  /** Network address, e.g. "10.201.0.0". */
  readonly address: string;
  readonly prefixLength: number;
  /** The host's address on the bridge: the guests' default gateway and metadata endpoint. */
  readonly gateway: string;
  readonly dns: readonly string[];
  /**
   * The operator says traffic can leave the VPC from this subnet (subnets[].internet_route):
   * InternetAccessible.InternetMaxBandwidthOut is accepted for its instances and caps that traffic.
   */
  readonly internetRoute?: boolean;
  /** False: no DHCP on this subnet (config `"dhcp": false`); absent: as `dhcp_enabled` says. */
  readonly dhcp?: boolean;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return IPV4_RE.test(text);
}

export function ipToInt(ip: string): number {
  return ip.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

/** "10.201.0.0/24" → { address, prefixLength }, or a problem text. */
export function parseCidr(cidr: string): { address: string; prefixLength: number } | string {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr);
  if (!m || !isIpv4(m[1]!)) return `${JSON.stringify(cidr)} is not an IPv4 CIDR such as 10.201.0.0/24`;
  const prefixLength = Number(m[2]);
  if (prefixLength < 8 || prefixLength > 30) return `prefix /${prefixLength} must be between /8 and /30`;
  const size = 2 ** (32 - prefixLength);
  const base = ipToInt(m[1]!);
  if (base % size !== 0) return `${m[1]} is not the network address of /${prefixLength}`;
  return { address: m[1]!, prefixLength };
}

function range(subnet: Pick<Subnet, "address" | "prefixLength">): { first: number; last: number } {
  const base = ipToInt(subnet.address);
  const size = 2 ** (32 - subnet.prefixLength);
  // Network and broadcast addresses are never handed out.
  return { first: base + 1, last: base + size - 2 };
}

export function inSubnet(subnet: Pick<Subnet, "address" | "prefixLength">, ip: string): boolean {
  if (!isIpv4(ip)) return false;
  const n = ipToInt(ip);
  const { first, last } = range(subnet);
  return n >= first && n <= last;
}

export function netmask(prefixLength: number): string {
  return intToIp(prefixLength === 0 ? 0 : (2 ** 32 - 2 ** (32 - prefixLength)));
}

/**
 * An address for a new NIC on `subnet`: the requested one, checked, or the lowest free
 * one. `used` holds the addresses already taken on this subnet.
 */
export function allocateAddress(subnet: Subnet, used: ReadonlySet<string>, requested?: string): string {
  if (requested !== undefined) {
    if (!isIpv4(requested)) {
      throw new DomainError("AddressMalformed", `VirtualPrivateCloud.PrivateIpAddresses: ${JSON.stringify(requested)} is not an IPv4 address`);
    }
    if (!inSubnet(subnet, requested) || requested === subnet.gateway) {
      throw new DomainError(
        "AddressNotInSubnet",
        `VirtualPrivateCloud.PrivateIpAddresses: ${requested} is not a usable address of ${subnet.subnetId} (${subnet.address}/${subnet.prefixLength}, gateway ${subnet.gateway})`,
      );
    }
    if (used.has(requested)) throw new DomainError("AddressInUse", `VirtualPrivateCloud.PrivateIpAddresses: ${requested} is already used in ${subnet.subnetId}`);
    return requested;
  }
  const { first, last } = range(subnet);
  const gateway = ipToInt(subnet.gateway);
  for (let n = first; n <= last; n++) {
    if (n === gateway) continue;
    const ip = intToIp(n);
    if (!used.has(ip)) return ip;
  }
  throw new DomainError("NoRoom", `subnet ${subnet.subnetId} has no free address left`);
}

/** The subnet a request names (or the default one), checked against the VPC. */
export function resolveSubnet(subnets: readonly Subnet[], vpc?: { vpcId: string; subnetId: string }): Subnet {
  if (!vpc) return subnets[0]!;
  const subnet = subnets.find((s) => s.subnetId === vpc.subnetId);
  if (!subnet) {
    throw new DomainError(
      "SubnetNotFound",
      `VirtualPrivateCloud.SubnetId ${vpc.subnetId} is not a subnet of this host (known: ${subnets.map((s) => s.subnetId).join(", ")})`,
    );
  }
  if (subnet.vpcId !== vpc.vpcId) {
    throw new DomainError("SubnetNotInVpc", `VirtualPrivateCloud.SubnetId ${vpc.subnetId} belongs to ${subnet.vpcId}, not ${vpc.vpcId}`);
  }
  return subnet;
}
