/**
 * Security groups as the VPC API shows them (SecurityGroup, SecurityGroupPolicySet), and
 * the selection of DescribeSecurityGroups and DescribeSecurityGroupPolicies (filters,
 * order, paging). Pure.
 */
import { sgError } from "./errors.js";
import { SG_ID, type Direction, type StoredGroup, type StoredPolicy } from "./model.js";
import { canonicalCidr } from "./rules.js";

export interface SgFilter {
  name: string;
  values: string[];
}

export function toSecurityGroup(g: StoredGroup): Record<string, unknown> {
  return {
    SecurityGroupId: g.securityGroupId,
    SecurityGroupName: g.name,
    SecurityGroupDesc: g.description,
    ProjectId: g.projectId,
    IsDefault: g.isDefault,
    CreatedTime: g.createdTime,
    UpdateTime: g.updateTime,
    TagSet: g.tags.map((t) => ({ Key: t.key, Value: t.value })),
  };
}

/** A rule as DescribeSecurityGroupPolicies shows it: empty members as "", templates with empty IDs. */
export function toPolicyView(p: StoredPolicy, index: number): Record<string, unknown> {
  return {
    PolicyIndex: index,
    Protocol: p.protocol,
    Port: p.port,
    ServiceTemplate: { ServiceId: "", ServiceGroupId: "" },
    CidrBlock: p.cidrBlock ?? "",
    Ipv6CidrBlock: "",
    SecurityGroupId: p.securityGroupId ?? "",
    AddressTemplate: { AddressId: "", AddressGroupId: "" },
    Action: p.action,
    PolicyDescription: p.description,
    ModifyTime: p.modifyTime,
  };
}

export const POLICY_FILTERS = ["security-group-id", "ip", "address-module", "service-module", "protocol-type", "port", "poly", "direction", "description"] as const;

function policyMatches(p: StoredPolicy, direction: Direction, f: SgFilter): boolean {
  const any = (test: (v: string) => boolean) => f.values.some(test);
  switch (f.name) {
    case "security-group-id":
      return any((v) => p.securityGroupId === v);
    case "ip":
      return any((v) => (p.cidrBlock ?? "").includes(v) || (canonicalCidr(p.cidrBlock ?? "") ?? "").includes(v));
    case "address-module":
    case "service-module":
      return false; // no templates on this host: no rule names one
    case "protocol-type":
      return any((v) => v.toUpperCase() === p.protocol);
    case "port":
      return any((v) => (v.toUpperCase() === "ALL" ? p.port === "ALL" : p.port.includes(v)));
    case "poly":
      return any((v) => v.toUpperCase() === "ALL" || v.toUpperCase() === p.action);
    case "direction":
      return any((v) => v.toUpperCase() === "ALL" || v.toUpperCase() === (direction === "ingress" ? "INBOUND" : "OUTBOUND"));
    case "description":
      return any((v) => p.description.includes(v));
    default:
      return false;
  }
}

export function checkFilterNames(filters: readonly SgFilter[], known: readonly string[], allowTagPrefix: boolean): void {
  for (const [i, f] of filters.entries()) {
    if (known.includes(f.name) || (allowTagPrefix && /^tag:.+/.test(f.name))) continue;
    throw sgError("FilterInvalidKey", `\`Filters.${i}.Name\` '${f.name}' is not a filter of this action; use ${[...known, ...(allowTagPrefix ? ["tag:<key>"] : [])].join(", ")}`);
  }
}

/** The SecurityGroupPolicySet of a group; filters keep a rule's PolicyIndex (its position in the whole set). */
export function toPolicySet(g: StoredGroup, filters: readonly SgFilter[] = []): Record<string, unknown> {
  const view = (direction: Direction) =>
    g[direction].flatMap((p, i) => (filters.every((f) => policyMatches(p, direction, f)) ? [toPolicyView(p, i)] : []));
  return {
    Version: String(g.version),
    Ingress: view("ingress"),
    Egress: view("egress"),
    PolicyStatistics: {
      IngressIPv4TotalCount: g.ingress.length,
      IngressIPv6TotalCount: 0,
      EgressIPv4TotalCount: g.egress.length,
      EgressIPv6TotalCount: 0,
    },
  };
}

export const GROUP_FILTERS = ["security-group-id", "project-id", "security-group-name", "tag-key"] as const;

function groupMatches(g: StoredGroup, f: SgFilter): boolean {
  const wanted = new Set(f.values);
  switch (f.name) {
    case "security-group-id":
      return wanted.has(g.securityGroupId);
    case "project-id":
      return wanted.has(g.projectId);
    case "security-group-name":
      return wanted.has(g.name);
    case "tag-key":
      return g.tags.some((t) => wanted.has(t.key));
    default: {
      const key = f.name.slice("tag:".length);
      return g.tags.some((t) => t.key === key && wanted.has(t.value));
    }
  }
}

export interface DescribeGroupsQuery {
  securityGroupIds?: readonly string[] | undefined;
  filters: readonly SgFilter[];
  offset: number;
  limit: number;
  orderField?: "CreatedTime" | "UpdateTime" | undefined;
  orderDirection: "ASC" | "DESC";
}

/**
 * DescribeSecurityGroups: SecurityGroupIds (each must exist) or Filters (AND across
 * filters, OR across one filter's values), never both; ordered by creation unless
 * OrderField says otherwise; then Offset and Limit.
 */
export function selectGroups(groups: readonly StoredGroup[], q: DescribeGroupsQuery): { total: number; page: StoredGroup[] } {
  if (q.securityGroupIds?.length && q.filters.length) throw sgError("Coexist", "`SecurityGroupIds` and `Filters` cannot be given together");
  checkFilterNames(q.filters, GROUP_FILTERS, true);
  let rows: StoredGroup[];
  if (q.securityGroupIds?.length) {
    rows = q.securityGroupIds.map((id, i) => {
      if (!SG_ID.test(id)) throw sgError("GroupIdMalformed", `\`SecurityGroupIds.${i}\` '${id}' is not a security group ID (sg- and 8 lowercase letters or digits)`);
      const g = groups.find((x) => x.securityGroupId === id);
      if (!g) throw sgError("GroupNotFound", `\`SecurityGroupIds.${i}\` ${id} does not exist`);
      return g;
    });
    rows = [...new Set(rows)];
  } else {
    rows = groups.filter((g) => q.filters.every((f) => groupMatches(g, f)));
  }
  const field = q.orderField === "UpdateTime" ? "updateTime" : "createdTime";
  const sign = q.orderDirection === "DESC" ? -1 : 1;
  if (q.orderField || !q.securityGroupIds?.length) {
    rows = [...rows].sort((a, b) => sign * (a[field].localeCompare(b[field]) || a.seq - b.seq));
  }
  return { total: rows.length, page: rows.slice(q.offset, q.offset + q.limit) };
}
