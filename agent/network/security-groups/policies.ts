/**
 * The rule-set changes of the VPC actions, as pure functions on a group (a draft the
 * store writes only when the whole change passed, and the firewall took it):
 * CreateSecurityGroupPolicies (insert at PolicyIndex, or append), ReplaceSecurityGroupPolicy,
 * DeleteSecurityGroupPolicies (by index or by content), ModifySecurityGroupPolicies (the
 * whole set). Every change raises the group's Version by 1; a request's Version, when
 * given, must be the current one (UnsupportedOperation.VersionMismatch).
 */
import { sgError } from "./errors.js";
import { MAX_POLICIES_PER_DIRECTION, type Direction, type StoredGroup, type StoredPolicy } from "./model.js";
import { parsePolicy, policyKey, type PolicyInput, type PolicySetInput } from "./rules.js";

const SET = "SecurityGroupPolicySet";

export interface ChangeContext {
  /** "YYYY-MM-DD hh:mm:ss" of this change. */
  now: string;
  /** True when a group with this ID exists (a rule's SecurityGroupId peer must). */
  groupExists: (id: string) => boolean;
}

const FIELD: Record<Direction, string> = { ingress: "Ingress", egress: "Egress" };

/** The one direction a request changes: exactly one of Ingress and Egress holds rules. */
export function oneDirection(set: PolicySetInput): { direction: Direction; rules: PolicyInput[] } {
  const ingress = set.Ingress ?? [];
  const egress = set.Egress ?? [];
  if (ingress.length && egress.length) throw sgError("Coexist", `\`${SET}\` gives both Ingress and Egress rules; one direction per request`);
  if (!ingress.length && !egress.length) throw sgError("Empty", `\`${SET}\` gives no rule in Ingress or Egress`);
  return ingress.length ? { direction: "ingress", rules: ingress } : { direction: "egress", rules: egress };
}

export function checkVersion(group: StoredGroup, version: string | undefined): void {
  if (version === undefined || version === "") return;
  if (version !== String(group.version)) {
    throw sgError("VersionMismatch", `\`${SET}.Version\` ${version} is not the current version of ${group.securityGroupId} (${group.version}): read the rules again`);
  }
}

function parseAll(rules: readonly PolicyInput[], direction: Direction, ctx: ChangeContext, self: string): StoredPolicy[] {
  return rules.map((r, i) => {
    const field = `${SET}.${FIELD[direction]}.${i}`;
    const p = parsePolicy(r, field, ctx.now);
    if (p.securityGroupId !== undefined && p.securityGroupId !== self && !ctx.groupExists(p.securityGroupId)) {
      throw sgError("GroupNotFound", `\`${field}.SecurityGroupId\` ${p.securityGroupId} does not exist`);
    }
    return p;
  });
}

function noDuplicates(list: readonly StoredPolicy[], direction: Direction, what: string): void {
  const seen = new Map<string, number>();
  list.forEach((p, i) => {
    const key = policyKey(p);
    const first = seen.get(key);
    if (first !== undefined) {
      throw sgError("DuplicatePolicy", `${what}: ${FIELD[direction]} rule ${i} is the same as rule ${first} (${p.action} ${p.protocol} ${p.port} ${p.cidrBlock ?? p.securityGroupId})`);
    }
    seen.set(key, i);
  });
}

function withinLimit(list: readonly StoredPolicy[], direction: Direction, group: StoredGroup): void {
  if (list.length > MAX_POLICIES_PER_DIRECTION) {
    throw sgError("PolicyQuota", `\`${SET}.${FIELD[direction]}\` would give ${group.securityGroupId} ${list.length} ${direction} rules; at most ${MAX_POLICIES_PER_DIRECTION} per direction`);
  }
}

function bump(group: StoredGroup, now: string): void {
  group.version += 1;
  group.updateTime = now;
}

/** CreateSecurityGroupPolicies: the rules inserted at their common PolicyIndex (0 = top), or appended. */
export function createPolicies(group: StoredGroup, set: PolicySetInput, ctx: ChangeContext): void {
  checkVersion(group, set.Version);
  const { direction, rules } = oneDirection(set);
  const indexes = new Set(rules.map((r) => r.PolicyIndex));
  if (indexes.size > 1) throw sgError("BadValue", `\`${SET}.${FIELD[direction]}\` rules give different PolicyIndex values; all of them must give the same one (or none)`);
  const index = rules[0]!.PolicyIndex;
  const current = group[direction];
  if (index !== undefined && (index < 0 || index > current.length)) {
    throw sgError("Range", `\`${SET}.${FIELD[direction]}.0.PolicyIndex\` ${index} is outside 0..${current.length} (${group.securityGroupId} has ${current.length} ${direction} rules)`);
  }
  const added = parseAll(rules, direction, ctx, group.securityGroupId);
  const next = [...current];
  next.splice(index ?? current.length, 0, ...added);
  noDuplicates(next, direction, `${group.securityGroupId} already has this rule`);
  withinLimit(next, direction, group);
  group[direction] = next;
  bump(group, ctx.now);
}

/** ReplaceSecurityGroupPolicy: the rule at PolicyIndex replaced by the one given. */
export function replacePolicy(group: StoredGroup, set: PolicySetInput, ctx: ChangeContext): void {
  checkVersion(group, set.Version);
  const { direction, rules } = oneDirection(set);
  if (rules.length !== 1) throw sgError("BadValue", `\`${SET}.${FIELD[direction]}\` gives ${rules.length} rules; ReplaceSecurityGroupPolicy replaces exactly one`);
  const index = rules[0]!.PolicyIndex;
  const field = `${SET}.${FIELD[direction]}.0.PolicyIndex`;
  if (index === undefined) throw sgError("Empty", `\`${field}\` is missing: it says which rule to replace`);
  const current = group[direction];
  if (index < 0 || index >= current.length) throw sgError("Range", `\`${field}\` ${index} is outside 0..${current.length - 1} (${group.securityGroupId} has ${current.length} ${direction} rules)`);
  const [policy] = parseAll(rules, direction, ctx, group.securityGroupId);
  const next = [...current];
  next[index] = policy!;
  noDuplicates(next, direction, `${group.securityGroupId} already has this rule`);
  group[direction] = next;
  bump(group, ctx.now);
}

/** The fields a rule matched by content must give (the reference: Action, Protocol, a peer). */
function isByContent(r: PolicyInput): boolean {
  return [r.Protocol, r.Port, r.CidrBlock, r.SecurityGroupId, r.Action].some((v) => v !== undefined && v !== "");
}

/** DeleteSecurityGroupPolicies: by PolicyIndex (several allowed) or by content, never both. */
export function deletePolicies(group: StoredGroup, set: PolicySetInput, ctx: ChangeContext): void {
  checkVersion(group, set.Version);
  const { direction, rules } = oneDirection(set);
  const current = group[direction];
  const byIndex = rules.filter((r) => r.PolicyIndex !== undefined);
  const byContent = rules.filter(isByContent);
  const where = `${SET}.${FIELD[direction]}`;
  if (byIndex.length && byContent.length) {
    throw sgError("Coexist", `\`${where}\` matches rules by PolicyIndex and by content together; use one or the other`);
  }
  const doomed = new Set<number>();
  if (byIndex.length) {
    if (byIndex.length !== rules.length) throw sgError("Empty", `\`${where}\` has a rule without PolicyIndex`);
    rules.forEach((r, i) => {
      const index = r.PolicyIndex!;
      if (index < 0 || index >= current.length) {
        throw sgError("Range", `\`${where}.${i}.PolicyIndex\` ${index} is outside 0..${current.length - 1} (${group.securityGroupId} has ${current.length} ${direction} rules)`);
      }
      doomed.add(index);
    });
  } else {
    rules.forEach((r, i) => {
      if (!isByContent(r)) throw sgError("Empty", `\`${where}.${i}\` names no rule: give PolicyIndex, or Action, Protocol, Port and CidrBlock (or SecurityGroupId)`);
      const key = policyKey(parsePolicy(r, `${where}.${i}`, ctx.now));
      const found = current.findIndex((p, at) => !doomed.has(at) && policyKey(p) === key);
      if (found < 0) throw sgError("GroupNotFound", `\`${where}.${i}\` matches no ${direction} rule of ${group.securityGroupId}`);
      doomed.add(found);
    });
  }
  group[direction] = current.filter((_p, at) => !doomed.has(at));
  bump(group, ctx.now);
}

/**
 * ModifySecurityGroupPolicies: the whole set (both directions) replaced; Version "0" clears
 * every rule. SortPolicys true: exactly the given order. False (the default, "leaves the
 * existing order unchanged"): the rules the group already had keep their order among
 * themselves, ahead of the new ones, which follow in the given order.
 */
export function modifyPolicies(group: StoredGroup, set: PolicySetInput, sort: boolean, ctx: ChangeContext): void {
  if (set.Version === "0") {
    group.ingress = [];
    group.egress = [];
    bump(group, ctx.now);
    return;
  }
  checkVersion(group, set.Version);
  for (const direction of ["ingress", "egress"] as const) {
    const rules = (direction === "ingress" ? set.Ingress : set.Egress) ?? [];
    rules.forEach((r, i) => {
      if (r.PolicyIndex !== undefined) throw sgError("BadValue", `\`${SET}.${FIELD[direction]}.${i}.PolicyIndex\` is not allowed: ModifySecurityGroupPolicies replaces the whole set in the given order`);
    });
    let next = parseAll(rules, direction, ctx, group.securityGroupId);
    noDuplicates(next, direction, "the request gives a rule twice");
    withinLimit(next, direction, group);
    if (!sort) {
      const old = new Map(group[direction].map((p, i) => [policyKey(p), i]));
      const kept = next.filter((p) => old.has(policyKey(p))).sort((a, b) => old.get(policyKey(a))! - old.get(policyKey(b))!);
      next = [...kept, ...next.filter((p) => !old.has(policyKey(p)))];
    }
    group[direction] = next;
  }
  bump(group, ctx.now);
}
