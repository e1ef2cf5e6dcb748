/**
 * ENIs as the VPC API shows them (NetworkInterface, reference/tencent-api-next.md §B.1) and
 * DescribeNetworkInterfaces' selection (filters, paging). Pure.
 */
import { eniError } from "./errors.js";
import type { EniTag } from "./model.js";

/** One ENI, attached or not, as the service assembles it from the records and the store. */
export interface EniRow {
  eniId: string;
  name: string;
  description: string;
  createdTime: string;
  tags: readonly EniTag[];
  mac: string;
  subnetId: string;
  vpcId: string;
  primaryIp: string;
  secondaryIps: readonly string[];
  securityGroupIds: readonly string[];
  /** The instance's primary NIC. */
  primary: boolean;
  attachment?: { instanceId: string; deviceIndex: number; attachTime: string };
  /** An operation under way on it (ATTACHING, DETACHING, …); absent: AVAILABLE. */
  busy?: string;
}

export interface EniFilter {
  name: string;
  values: string[];
}

export const ENI_FILTERS = [
  "vpc-id",
  "subnet-id",
  "network-interface-id",
  "attachment.instance-id",
  "groups.security-group-id",
  "network-interface-name",
  "network-interface-description",
  "address-ip",
  "ip-exact-match",
  "is-primary",
  "eni-type",
  "eni-qos",
  "address-ipv6",
  "public-address-ip",
  "address-type",
  "tag-key",
  "termination-protection",
  "traffic-protection",
] as const;

export function toNetworkInterface(row: EniRow, zone: string): Record<string, unknown> {
  const address = (ip: string, primary: boolean) => ({
    PrivateIpAddress: ip,
    Primary: primary,
    PublicIpAddress: "",
    AddressId: "",
    Description: "",
    IsWanIpBlocked: false,
    State: "AVAILABLE",
    QosLevel: "DEFAULT",
  });
  const state = row.busy ?? "AVAILABLE";
  return {
    NetworkInterfaceId: row.eniId,
    NetworkInterfaceName: row.name,
    NetworkInterfaceDescription: row.description,
    SubnetId: row.subnetId,
    VpcId: row.vpcId,
    GroupSet: [...row.securityGroupIds],
    Primary: row.primary,
    MacAddress: row.mac.toUpperCase(),
    State: state,
    NetworkInterfaceState: row.busy ?? (row.attachment ? "INUSE" : "AVAILABLE"),
    PrivateIpAddressSet: [address(row.primaryIp, true), ...row.secondaryIps.map((ip) => address(ip, false))],
    Attachment: row.attachment
      ? { DeviceIndex: row.attachment.deviceIndex, InstanceAccountId: "", AttachTime: row.attachment.attachTime, InstanceId: row.attachment.instanceId }
      : null,
    Zone: zone,
    CreatedTime: row.createdTime,
    Ipv6AddressSet: [],
    TagSet: row.tags.map((t) => ({ Key: t.key, Value: t.value })),
    EniType: row.primary ? 1 : 0,
    Business: "cvm",
    CdcId: "",
    AttachType: 0,
    ResourceId: "",
    QosLevel: "DEFAULT",
  };
}

function isTrue(v: string): boolean {
  return v.toUpperCase() === "TRUE";
}

function matches(row: EniRow, f: EniFilter, exact: boolean): boolean {
  const any = (test: (v: string) => boolean) => f.values.some(test);
  const addresses = [row.primaryIp, ...row.secondaryIps];
  switch (f.name) {
    case "vpc-id":
      return any((v) => v === row.vpcId);
    case "subnet-id":
      return any((v) => v === row.subnetId);
    case "network-interface-id":
      return any((v) => v === row.eniId);
    case "attachment.instance-id":
      return any((v) => v === row.attachment?.instanceId);
    case "groups.security-group-id":
      return any((v) => row.securityGroupIds.includes(v));
    case "network-interface-name":
      return any((v) => v === row.name);
    case "network-interface-description":
      return any((v) => v === row.description);
    case "address-ip":
      // One address: a suffix-fuzzy match (unless ip-exact-match); several: exact.
      return f.values.length === 1 && !exact ? addresses.some((a) => a.endsWith(f.values[0]!)) : any((v) => addresses.includes(v));
    case "ip-exact-match":
      return true; // read with address-ip
    case "is-primary":
      return any((v) => isTrue(v) === row.primary);
    case "eni-type":
      return any((v) => v === (row.primary ? "1" : "0"));
    case "eni-qos":
      return any((v) => v.toUpperCase() === "DEFAULT");
    case "address-ipv6":
    case "public-address-ip":
    case "address-type":
      return false; // no IPv6 and no public addresses on this host
    case "tag-key":
      return any((v) => row.tags.some((t) => t.key === v));
    case "termination-protection":
    case "traffic-protection":
      return any((v) => !isTrue(v));
    default:
      if (f.name.startsWith("tag:")) {
        const key = f.name.slice(4);
        return any((v) => row.tags.some((t) => t.key === key && t.value === v));
      }
      return false;
  }
}

export function checkFilters(filters: readonly EniFilter[]): void {
  filters.forEach((f, i) => {
    if (!(ENI_FILTERS as readonly string[]).includes(f.name) && !(f.name.startsWith("tag:") && f.name.length > 4)) {
      throw eniError("FilterInvalidKey", `\`Filters.${i}.Name\` ${JSON.stringify(f.name)} is not a filter of DescribeNetworkInterfaces (${ENI_FILTERS.join(", ")}, tag:<key>)`);
    }
  });
}

/** The rows the request selects (several filters ANDed, one filter's values ORed), in ID order, and the page. */
export function selectEnis(rows: readonly EniRow[], q: { ids?: readonly string[]; filters: readonly EniFilter[]; offset: number; limit: number }): { total: number; page: EniRow[] } {
  checkFilters(q.filters);
  const exact = q.filters.some((f) => f.name === "ip-exact-match" && f.values.some(isTrue));
  let selected = [...rows].sort((a, b) => a.createdTime.localeCompare(b.createdTime) || a.eniId.localeCompare(b.eniId));
  if (q.ids) {
    const wanted = new Set(q.ids);
    const missing = q.ids.filter((id) => !rows.some((r) => r.eniId === id));
    if (missing.length) throw eniError("NotFound", `\`NetworkInterfaceIds\` ${missing.join(", ")} ${missing.length > 1 ? "do" : "does"} not exist on this host`);
    selected = selected.filter((r) => wanted.has(r.eniId));
  }
  for (const f of q.filters) selected = selected.filter((r) => matches(r, f, exact));
  return { total: selected.length, page: selected.slice(q.offset, q.offset + q.limit) };
}
