/**
 * Security-group rules: the API's SecurityGroupPolicy checked and normalized into the
 * stored form, compared by content, and compiled into the firewall's SgRule. Pure.
 *
 * What a rule may say (reference/tencent-api-next.md §A.1), compared case-insensitively:
 * - Protocol: TCP, UDP, ICMP, GRE or ALL. ICMPv6 is refused: it goes with Ipv6CidrBlock,
 *   and this host's subnets are IPv4 only, so such a rule could never match.
 * - Port: ALL, one port (80), a range (8000-8010) or a list (80,443); anything but ALL
 *   only with TCP or UDP. Absent means ALL.
 * - Exactly one peer: CidrBlock (an IPv4 address or CIDR; any 0.0.0.0/n is stored as
 *   0.0.0.0/0) or SecurityGroupId (every address of every NIC in that group, as NICs join
 *   and leave it). Ipv6CidrBlock, AddressTemplate, ServiceTemplate and the MY_PUBLIC_IP
 *   literal are refused naming the field: there is no IPv6, no parameter template and no
 *   public address on this host, and a rule accepted but not enforced is worse than a
 *   refusal. Empty values ("" and templates whose IDs are all "") count as absent, so a
 *   rule read back from DescribeSecurityGroupPolicies can be sent again.
 * - Action: ACCEPT or DROP.
 * - PolicyDescription: free text, at most 100 characters. ModifyTime (output) may be
 *   echoed back and is not kept. Priority is refused: the position (PolicyIndex) is the
 *   priority here.
 */
import type { SgPorts, SgProtocol, SgRule } from "../firewall-types.js";
import { sgError } from "./errors.js";
import { SG_ID, type PolicyAction, type StoredPolicy } from "./model.js";

/** SecurityGroupPolicy as the request carries it (its JSON types checked by the API schema). */
export interface PolicyInput {
  PolicyIndex?: number | undefined;
  Protocol?: string | undefined;
  Port?: string | undefined;
  ServiceTemplate?: { ServiceId?: string | undefined; ServiceGroupId?: string | undefined } | undefined;
  CidrBlock?: string | undefined;
  Ipv6CidrBlock?: string | undefined;
  SecurityGroupId?: string | undefined;
  AddressTemplate?: { AddressId?: string | undefined; AddressGroupId?: string | undefined } | undefined;
  Action?: string | undefined;
  PolicyDescription?: string | undefined;
  ModifyTime?: string | undefined;
  Priority?: number | undefined;
}

/** SecurityGroupPolicySet as the request carries it; Version normalized to a string. */
export interface PolicySetInput {
  Version?: string | undefined;
  Egress?: PolicyInput[] | undefined;
  Ingress?: PolicyInput[] | undefined;
}

const PROTOCOLS: readonly SgProtocol[] = ["TCP", "UDP", "ICMP", "GRE", "ALL"];
export const DESCRIPTION_MAX = 100;

function given(value: string | undefined): value is string {
  return value !== undefined && value !== "";
}

function templateGiven(t: Record<string, string | undefined> | undefined): boolean {
  return t !== undefined && Object.values(t).some((v) => given(v));
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** An IPv4 address or CIDR → its canonical network form ("10.0.0.0/24", "10.0.0.5/32", any 0.0.0.0/n as 0.0.0.0/0), or undefined. */
export function canonicalCidr(text: string): string | undefined {
  const m = /^([^/]+)(?:\/(\d{1,2}))?$/.exec(text.trim());
  if (!m || !IPV4.test(m[1]!)) return undefined;
  const given = m[2] === undefined ? 32 : Number(m[2]);
  if (given > 32) return undefined;
  // Any 0.0.0.0/n means every address (the VPC API stores it as 0.0.0.0/0).
  const prefix = m[1] === "0.0.0.0" ? 0 : given;
  const n = m[1]!.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
  const size = 2 ** (32 - prefix);
  const base = n - (n % size);
  const ip = [24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256).join(".");
  return `${ip}/${prefix}`;
}

/** "ALL" | "80" | "8000-8010" | "80,443" → the canonical text, or a problem. */
export function normalizePort(text: string): { port: string } | { problem: string } {
  const t = text.trim().toUpperCase();
  if (t === "ALL") return { port: "ALL" };
  const portOf = (s: string): number | undefined => (/^\d{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535 ? Number(s) : undefined);
  const range = /^(\d+)\s*-\s*(\d+)$/.exec(t);
  if (range) {
    const a = portOf(range[1]!);
    const b = portOf(range[2]!);
    if (a === undefined || b === undefined) return { problem: `'${text}': ports are 1 to 65535` };
    if (a > b) return { problem: `'${text}': a range goes from the lower port to the higher` };
    return { port: a === b ? String(a) : `${a}-${b}` };
  }
  const parts = t.split(",").map((s) => s.trim());
  const ports = parts.map(portOf);
  if (ports.some((p) => p === undefined)) {
    return { problem: `'${text}' is not ALL, a port (80), a range (8000-8010) or a list of ports (80,443); ports are 1 to 65535` };
  }
  return { port: [...new Set(ports as number[])].join(",") };
}

/** Checks one rule of a request and returns it normalized; every refusal names `field`. */
export function parsePolicy(input: PolicyInput, field: string, modifyTime: string): StoredPolicy {
  if (input.Priority !== undefined) throw sgError("BadValue", `\`${field}.Priority\` is not supported: a rule's position (PolicyIndex) is its priority`);
  if (given(input.Ipv6CidrBlock)) {
    throw sgError("BadValue", `\`${field}.Ipv6CidrBlock\` is not supported: this host's subnets are IPv4 only, such a rule could never match`);
  }
  if (templateGiven(input.AddressTemplate)) throw sgError("BadValue", `\`${field}.AddressTemplate\` is not supported: this host has no parameter templates; give CidrBlock or SecurityGroupId`);
  if (templateGiven(input.ServiceTemplate)) throw sgError("BadValue", `\`${field}.ServiceTemplate\` is not supported: this host has no parameter templates; give Protocol and Port`);
  if (!given(input.Protocol)) throw sgError("Empty", `\`${field}.Protocol\` is missing: give TCP, UDP, ICMP, GRE or ALL`);
  const proto = input.Protocol.trim().toUpperCase();
  if (proto === "ICMPV6") throw sgError("BadValue", `\`${field}.Protocol\` ICMPv6 is not supported: this host's subnets are IPv4 only (use ICMP)`);
  if (!(PROTOCOLS as readonly string[]).includes(proto)) throw sgError("BadValue", `\`${field}.Protocol\` '${input.Protocol}' is not one of TCP, UDP, ICMP, GRE, ALL`);
  const protocol = proto as SgProtocol;
  let port = "ALL";
  if (given(input.Port)) {
    const p = normalizePort(input.Port);
    if ("problem" in p) throw sgError("BadValue", `\`${field}.Port\` ${p.problem}`);
    port = p.port;
  }
  if (port !== "ALL" && protocol !== "TCP" && protocol !== "UDP") {
    throw sgError("BadValue", `\`${field}.Port\` must be ALL with protocol ${protocol}: ports exist for TCP and UDP only`);
  }
  const peers = [given(input.CidrBlock) ? "CidrBlock" : "", given(input.SecurityGroupId) ? "SecurityGroupId" : ""].filter(Boolean);
  if (peers.length > 1) throw sgError("Coexist", `\`${field}\` gives both CidrBlock and SecurityGroupId; a rule has exactly one peer`);
  if (peers.length === 0) throw sgError("Empty", `\`${field}\` names no peer: give CidrBlock or SecurityGroupId`);
  if (!given(input.Action)) throw sgError("Empty", `\`${field}.Action\` is missing: give ACCEPT or DROP`);
  const action = input.Action.trim().toUpperCase();
  if (action !== "ACCEPT" && action !== "DROP") throw sgError("BadValue", `\`${field}.Action\` '${input.Action}' is not ACCEPT or DROP`);
  const description = input.PolicyDescription ?? "";
  if ([...description].length > DESCRIPTION_MAX) throw sgError("TooLong", `\`${field}.PolicyDescription\` is longer than ${DESCRIPTION_MAX} characters`);
  const policy: StoredPolicy = { protocol, port, action: action as PolicyAction, description, modifyTime };
  if (given(input.CidrBlock)) {
    const text = input.CidrBlock.trim();
    if (text.toUpperCase() === "MY_PUBLIC_IP") throw sgError("BadValue", `\`${field}.CidrBlock\` MY_PUBLIC_IP is not supported: callers of this host have no public address`);
    const canonical = canonicalCidr(text);
    if (!canonical) throw sgError("BadValue", `\`${field}.CidrBlock\` '${input.CidrBlock}' is not an IPv4 address or CIDR such as 10.0.0.0/16`);
    policy.cidrBlock = canonical.endsWith("/0") ? "0.0.0.0/0" : text;
  } else {
    const id = input.SecurityGroupId!.trim();
    if (!SG_ID.test(id)) throw sgError("GroupIdMalformed", `\`${field}.SecurityGroupId\` '${id}' is not a security group ID (sg- and 8 lowercase letters or digits)`);
    policy.securityGroupId = id;
  }
  return policy;
}

/** The identity of a rule for duplicates and delete-by-content: everything but description and time. */
export function policyKey(p: Pick<StoredPolicy, "protocol" | "port" | "cidrBlock" | "securityGroupId" | "action">): string {
  const peer = p.cidrBlock !== undefined ? `cidr:${canonicalCidr(p.cidrBlock)}` : `sg:${p.securityGroupId}`;
  return `${p.action}|${p.protocol}|${p.port}|${peer}`;
}

/** The firewall's form of a stored rule. */
export function toSgRule(p: StoredPolicy): SgRule {
  let ports: SgPorts = "ALL";
  if (p.port !== "ALL") {
    ports = p.port.split(",").map((part): number | readonly [number, number] => {
      const [a, b] = part.split("-").map(Number) as [number, number | undefined];
      return b === undefined ? a : [a, b];
    });
  }
  return {
    action: p.action,
    protocol: p.protocol,
    ports,
    peer: p.cidrBlock !== undefined ? { cidr: canonicalCidr(p.cidrBlock)! } : { securityGroupId: p.securityGroupId! },
  };
}
