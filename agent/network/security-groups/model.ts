/**
 * The security-group model as the agent keeps it (reference/tencent-api-next.md §A.1):
 * groups `sg-xxxxxxxx`, each with two ordered rule lists (ingress, egress) and a rule-set
 * Version that goes up by 1 with every change of its rules. The store keeps exactly these
 * records in one JSON file (store.ts); the views (views.ts) turn them into the VPC API's
 * structures.
 */
import { randomBytes } from "node:crypto";
import type { SgProtocol } from "../firewall-types.js";

export type PolicyAction = "ACCEPT" | "DROP";
export type Direction = "ingress" | "egress";

/** One rule, as stored: checked and normalized (rules.ts). */
export interface StoredPolicy {
  protocol: SgProtocol;
  /** "ALL", "80", "8000-8010" or "80,443" (the last three only with TCP and UDP). */
  port: string;
  /** Exactly one of cidrBlock / securityGroupId. Any 0.0.0.0/n is stored as 0.0.0.0/0. */
  cidrBlock?: string;
  securityGroupId?: string;
  action: PolicyAction;
  description: string;
  /** "YYYY-MM-DD hh:mm:ss" (UTC), when the rule was written. */
  modifyTime: string;
}

export interface StoredTag {
  key: string;
  value: string;
}

export interface StoredGroup {
  securityGroupId: string;
  name: string;
  description: string;
  /** The host knows project 0 only; the API shows it as the string "0". */
  projectId: "0";
  isDefault: boolean;
  /** "YYYY-MM-DD hh:mm:ss" (UTC). */
  createdTime: string;
  /** Last change of the group's rules, same format. */
  updateTime: string;
  /** Creation order, for a stable sort of groups made in the same second. */
  seq: number;
  tags: StoredTag[];
  /** The rule-set version: 0 for a new group, +1 with every change of its rules. */
  version: number;
  ingress: StoredPolicy[];
  egress: StoredPolicy[];
}

export interface SgStoreState {
  version: 1;
  /** The host's default group: bound to every instance launched without SecurityGroupIds. */
  defaultGroupId: string;
  /** The next group's seq. */
  nextSeq: number;
  groups: StoredGroup[];
}

/** Rules per direction of one group (the seeds: 100 inbound and 100 outbound). */
export const MAX_POLICIES_PER_DIRECTION = 100;
/** Groups bound to one instance (CVM LimitExceeded.AssociateUSGLimitExceeded). */
export const MAX_GROUPS_PER_INSTANCE = 5;
/** Instances in one AssociateSecurityGroups / DisassociateSecurityGroups / ModifyInstancesAttribute. */
export const MAX_INSTANCES_PER_BINDING = 100;
/** The default host-wide number of groups (config security_group_limit). */
export const DEFAULT_SECURITY_GROUP_LIMIT = 50;

export const SG_ID = /^sg-[a-z0-9]{8}$/;

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

export function newSecurityGroupId(taken: (id: string) => boolean): string {
  for (;;) {
    let out = "sg-";
    for (const b of randomBytes(8)) out += ID_ALPHABET[b % 36];
    if (!taken(out)) return out;
  }
}

/** "YYYY-MM-DD hh:mm:ss", UTC: the VPC API's time format. */
export function sgTime(date: Date): string {
  return date.toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "");
}

/**
 * The seeds' first template ("放通22，80，443，3389端口和 ICMP 协议"): inbound TCP 22, 80,
 * 443, 3389 and ICMP accepted from anywhere, outbound everything accepted. The seed's
 * template also opens the intranet; on this host the intranet is the subnet, which the
 * operator opens (or not) by changing the default group.
 */
export function defaultGroupRules(modifyTime: string): { ingress: StoredPolicy[]; egress: StoredPolicy[] } {
  const rule = (protocol: SgProtocol, port: string, description: string): StoredPolicy => ({
    protocol,
    port,
    cidrBlock: "0.0.0.0/0",
    action: "ACCEPT",
    description,
    modifyTime,
  });
  return {
    ingress: [
      rule("TCP", "22", "SSH (Linux login)"),
      rule("TCP", "80", "HTTP"),
      rule("TCP", "443", "HTTPS"),
      rule("TCP", "3389", "RDP (Windows login)"),
      rule("ICMP", "ALL", "ping"),
    ],
    egress: [rule("ALL", "ALL", "all outbound")],
  };
}
