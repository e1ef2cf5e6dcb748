/**
 * The security-group service: the VPC actions on groups and rules, the CVM binding actions,
 * and the firewall that enforces them. Every change builds the host's whole FirewallState
 * and awaits Firewall.sync before the store (or the instance record) takes it, so:
 * - an answer means the kernel filters accordingly (a change reaches every NIC before the API answers);
 * - a sync the firewall rejects leaves everything as it was (store, records, rules) and the
 *   action fails (InternalError.ModuleError, or FailedOperation.SecurityGroupActionFailed for
 *   the CVM actions): nothing half made.
 * Syncs run one at a time (one lock for every change and sync); each builds its state when it
 * runs, so the latest state wins. Side effects of other changes (a launch, a terminate) call
 * syncNow(), which joins a sync already queued and not yet started.
 */
import type { Logger } from "pino";
import type { Operations, RequestContext } from "../../core/operations.js";
import { DomainError } from "../../core/errors.js";
import type { InstanceRecord, InstanceState } from "../../model.js";
import type { InstanceEntry, InstanceRegistry } from "../../instances/registry.js";
import { KeyedLock } from "../../util/keyed-lock.js";
import type { Firewall, FirewallState } from "../firewall-types.js";
import type { Subnet } from "../subnets.js";
import { sgError, SgError } from "./errors.js";
import { MAX_GROUPS_PER_INSTANCE, MAX_POLICIES_PER_DIRECTION, newSecurityGroupId, sgTime, type SgStoreState, type StoredGroup } from "./model.js";
import { createPolicies, deletePolicies, modifyPolicies, oneDirection, replacePolicy, type ChangeContext } from "./policies.js";
import { parsePolicy, policyKey, type PolicySetInput } from "./rules.js";
import { boundGroups, buildFirewallState, groupsOfAnyNic } from "./state.js";
import type { SecurityGroupStore } from "./store.js";
import { checkFilterNames, POLICY_FILTERS, selectGroups, toPolicySet, toSecurityGroup, type DescribeGroupsQuery, type SgFilter } from "./views.js";

/** States whose groups may change: not while the record is being made (PENDING) or unmade. */
const BINDING_REFUSED = new Set<InstanceState>(["PENDING", "TERMINATING", "LAUNCH_FAILED", "UNKNOWN"]);

export interface SecurityGroupServiceOptions {
  store: SecurityGroupStore;
  registry: InstanceRegistry;
  subnets: readonly Subnet[];
  /** The enforcement. Absent: nothing is enforced (the service warns at start). */
  firewall: Firewall | undefined;
  /** Saves an instance record where it lives (its domain's metadata), and the code LatestOperation shows for an error. */
  ops: Pick<Operations, "saveRecord" | "failedOperation">;
  /** Host-wide number of groups (config security_group_limit). */
  groupLimit: number;
  /** Unattached ENIs bound to a group (agent/network/enis): a group they name is in use. */
  unattachedEnisOf?: (groupId: string) => string[];
  now?: () => Date;
  logger: Logger;
}

export class SecurityGroupService {
  private readonly lock = new KeyedLock();
  private queued: Promise<void> | undefined;
  /**
   * Groups a DeleteSecurityGroup is removing (between its check and its commit, while the
   * firewall applies it): a launch in that window must not bind them.
   */
  private readonly deleting = new Set<string>();
  private readonly now: () => Date;

  constructor(private readonly o: SecurityGroupServiceOptions) {
    this.now = o.now ?? (() => new Date());
  }

  /** Reads the store (creating the default group on the first start). */
  async load(): Promise<void> {
    await this.o.store.load();
    if (!this.o.firewall) this.o.logger.warn("no firewall is wired: security groups are kept but NOT enforced");
  }

  get defaultGroupId(): string {
    return this.o.store.state.defaultGroupId;
  }

  /** The groups an instance is bound to, in priority order. */
  groupsOf(record: Pick<InstanceRecord, "securityGroupIds">): readonly string[] {
    return boundGroups(record, this.defaultGroupId);
  }

  /** The host's whole FirewallState, from the store and every instance that exists. */
  firewallState(state: SgStoreState = this.o.store.state): FirewallState {
    return buildFirewallState({
      groups: state.groups,
      defaultGroupId: state.defaultGroupId,
      instances: [...this.o.registry.all()].filter((e) => !e.launchFailed).map((e) => e.record),
      subnets: this.o.subnets,
    });
  }

  // ---------------------------------------------------------------- the firewall

  /** Applies the current state now (start-up, after a libvirtd restart). Rejects when the firewall does. */
  resync(): Promise<void> {
    return this.syncNow();
  }

  /** A sync of the current state, after a change elsewhere (launch, terminate); joins one queued and not yet started. */
  syncNow(): Promise<void> {
    if (this.queued) return this.queued;
    const p = this.lock.run("sg", async () => {
      if (this.queued === p) this.queued = undefined;
      await this.apply(this.firewallState());
    });
    this.queued = p;
    p.catch(() => undefined).finally(() => {
      if (this.queued === p) this.queued = undefined;
    });
    return p;
  }

  private async apply(state: FirewallState): Promise<void> {
    if (!this.o.firewall) return;
    await this.o.firewall.sync(state);
  }

  /**
   * One change of the store: `change` edits a copy (throwing leaves everything as it was),
   * the firewall takes the resulting state, then the store writes it. A write that fails
   * after the firewall took the state puts the previous state back into the firewall.
   */
  private change<T>(change: (draft: SgStoreState, ctx: ChangeContext) => T): Promise<T> {
    return this.lock.run("sg", async () => {
      const before = this.o.store.state;
      const draft = structuredClone(before);
      const ctx: ChangeContext = { now: sgTime(this.now()), groupExists: (id) => draft.groups.some((g) => g.securityGroupId === id) };
      const result = change(draft, ctx);
      try {
        await this.apply(this.firewallState(draft));
      } catch (error) {
        this.o.logger.error({ err: error }, "the firewall refused a security group change; nothing changed");
        throw sgError("FirewallFailed", `the firewall could not apply the change, nothing was changed: ${(error as Error).message}`, { cause: error });
      }
      try {
        await this.o.store.commit(draft);
      } catch (error) {
        await this.apply(this.firewallState(before)).catch((e: unknown) => this.o.logger.error({ err: e }, "could not put the previous rules back"));
        throw error;
      }
      return result;
    });
  }

  // ---------------------------------------------------------------- VPC: groups

  async createGroup(req: { groupName: string; groupDescription: string; tags: Array<{ key: string; value: string }>; policySet?: PolicySetInput }): Promise<Record<string, unknown>> {
    return this.change((draft, ctx) => {
      if (draft.groups.length >= this.o.groupLimit) {
        throw sgError("GroupQuota", `this host already holds ${draft.groups.length} security groups (security_group_limit ${this.o.groupLimit})`);
      }
      const group: StoredGroup = {
        securityGroupId: newSecurityGroupId((id) => draft.groups.some((g) => g.securityGroupId === id)),
        name: req.groupName,
        description: req.groupDescription,
        projectId: "0",
        isDefault: false,
        createdTime: ctx.now,
        updateTime: ctx.now,
        seq: draft.nextSeq,
        tags: req.tags.map((t) => ({ ...t })),
        version: 0,
        ingress: [],
        egress: [],
      };
      const set = req.policySet;
      if (set && (set.Version !== undefined || set.Ingress?.length || set.Egress?.length)) {
        modifyPolicies(group, set, true, { now: ctx.now, groupExists: (id) => id === group.securityGroupId || ctx.groupExists(id) });
      }
      draft.nextSeq += 1;
      draft.groups.push(group);
      return toSecurityGroup(group);
    });
  }

  describeGroups(q: DescribeGroupsQuery): { TotalCount: number; SecurityGroupSet: Array<Record<string, unknown>> } {
    const { total, page } = selectGroups(this.o.store.state.groups, q);
    return { TotalCount: total, SecurityGroupSet: page.map(toSecurityGroup) };
  }

  /** DeleteSecurityGroup: refused for the default group, and while an instance or another group's rule uses it. */
  async deleteGroup(id: string): Promise<void> {
    try {
      await this.change((draft) => this.removeGroup(draft, id));
    } finally {
      this.deleting.delete(id);
    }
  }

  private removeGroup(draft: SgStoreState, id: string): void {
    const group = findGroup(draft, id, "SecurityGroupId");
    if (group.isDefault || id === draft.defaultGroupId) throw sgError("DefaultGroup", `\`SecurityGroupId\` ${id} is the host's default group, which cannot be deleted`);
    const users = [
      ...[...this.o.registry.all()].filter((e) => groupsOfAnyNic(e.record, draft.defaultGroupId).has(id)).map((e) => e.record.instanceId),
      ...(this.o.unattachedEnisOf?.(id) ?? []),
    ];
    if (users.length) throw sgError("InUse", `\`SecurityGroupId\` ${id} is bound to ${users.sort().join(", ")}; unbind it first`);
    const referrers = draft.groups
      .filter((g) => g.securityGroupId !== id && [...g.ingress, ...g.egress].some((p) => p.securityGroupId === id))
      .map((g) => g.securityGroupId);
    if (referrers.length) throw sgError("InUse", `\`SecurityGroupId\` ${id} is named by rules of ${referrers.join(", ")}; change those rules first`);
    draft.groups = draft.groups.filter((g) => g.securityGroupId !== id);
    this.deleting.add(id);
  }

  associationStatistics(ids: readonly string[]): Array<Record<string, unknown>> {
    const state = this.o.store.state;
    return ids.map((id, i) => {
      findGroup(state, id, `SecurityGroupIds.${i}`);
      const cvm = [...this.o.registry.all()].filter((e) => boundGroups(e.record, state.defaultGroupId).includes(id)).length;
      const sg = state.groups.filter((g) => g.securityGroupId !== id && [...g.ingress, ...g.egress].some((p) => p.securityGroupId === id)).length;
      return {
        SecurityGroupId: id,
        CVM: cvm,
        CDB: 0,
        ENI: 0,
        SG: sg,
        CLB: 0,
        InstanceStatistics: [{ InstanceType: "CVM", InstanceCount: cvm }],
        TotalCount: cvm,
      };
    });
  }

  limits(): Record<string, number> {
    return {
      SecurityGroupLimit: this.o.groupLimit,
      SecurityGroupPolicyLimit: MAX_POLICIES_PER_DIRECTION,
      ReferedSecurityGroupLimit: this.o.groupLimit,
      SecurityGroupInstanceLimit: 2000,
      InstanceSecurityGroupLimit: MAX_GROUPS_PER_INSTANCE,
      SecurityGroupExtendedPolicyLimit: MAX_POLICIES_PER_DIRECTION,
      SecurityGroupReferedCvmAndEniLimit: 2000,
      SecurityGroupReferedSvcLimit: 0,
    };
  }

  // ---------------------------------------------------------------- VPC: rules

  async createPolicies(id: string, set: PolicySetInput): Promise<void> {
    await this.change((draft, ctx) => createPolicies(findGroup(draft, id, "SecurityGroupId"), set, ctx));
  }

  async modifyPolicies(id: string, set: PolicySetInput, sort: boolean): Promise<void> {
    await this.change((draft, ctx) => modifyPolicies(findGroup(draft, id, "SecurityGroupId"), set, sort, ctx));
  }

  /** ReplaceSecurityGroupPolicy; `original`, when given, must still be the rule at that index. */
  async replacePolicy(id: string, set: PolicySetInput, original?: PolicySetInput): Promise<void> {
    await this.change((draft, ctx) => {
      const group = findGroup(draft, id, "SecurityGroupId");
      if (original && (original.Ingress?.length || original.Egress?.length)) {
        const { direction, rules } = oneDirection(set);
        const was = oneDirection(original);
        const index = rules[0]?.PolicyIndex;
        const current = index === undefined ? undefined : group[direction][index];
        const field = "OriginalSecurityGroupPolicySet";
        if (was.direction !== direction || was.rules.length !== 1) throw sgError("BadValue", `\`${field}\` must give the one rule being replaced, in the same direction`);
        const before = parsePolicy(was.rules[0]!, `${field}.${direction === "ingress" ? "Ingress" : "Egress"}.0`, ctx.now);
        if (current && policyKey(current) !== policyKey(before)) {
          throw sgError("VersionMismatch", `\`${field}\` is not the rule at PolicyIndex ${index} any more: read the rules again`);
        }
      }
      replacePolicy(group, set, ctx);
    });
  }

  async deletePolicies(id: string, set: PolicySetInput): Promise<void> {
    await this.change((draft, ctx) => deletePolicies(findGroup(draft, id, "SecurityGroupId"), set, ctx));
  }

  describePolicies(id: string, filters: readonly SgFilter[]): Record<string, unknown> {
    checkFilterNames(filters, POLICY_FILTERS, false);
    return toPolicySet(findGroup(this.o.store.state, id, "SecurityGroupId"), filters);
  }

  // ---------------------------------------------------------------- CVM: bindings

  /** RunInstances SecurityGroupIds: each must exist; none given → the default group. */
  launchGroups(ids: readonly string[] | undefined, field = "SecurityGroupIds"): string[] {
    if (ids === undefined) return [this.defaultGroupId];
    if (ids.length > MAX_GROUPS_PER_INSTANCE) {
      throw sgError("InstanceGroupLimit", `\`${field}\` names ${ids.length} groups; an instance has at most ${MAX_GROUPS_PER_INSTANCE}`);
    }
    this.requireBindable(ids, field);
    return [...ids];
  }

  private requireBindable(ids: readonly string[], field: string): void {
    const state = this.o.store.state;
    ids.forEach((id, i) => {
      if (!state.groups.some((g) => g.securityGroupId === id) || this.deleting.has(id)) {
        throw sgError("BindGroupNotFound", `\`${field}.${i}\` security group ${id} does not exist`);
      }
    });
  }

  /** AssociateSecurityGroups: the group goes last (lowest priority) on each instance that does not have it yet. */
  associate(groupId: string, instanceIds: readonly string[], ctx: RequestContext): Promise<void> {
    return this.bind(instanceIds, "AssociateSecurityGroups", ctx, "SecurityGroupIds", [groupId], (current, id) => {
      if (current.includes(groupId)) return current;
      if (current.length >= MAX_GROUPS_PER_INSTANCE) {
        throw sgError("InstanceGroupLimit", `${id} already has ${current.length} security groups; an instance has at most ${MAX_GROUPS_PER_INSTANCE}`);
      }
      return [...current, groupId];
    });
  }

  /** DisassociateSecurityGroups: refused when it would leave an instance with no group (every instance has one). */
  disassociate(groupId: string, instanceIds: readonly string[], ctx: RequestContext): Promise<void> {
    return this.bind(instanceIds, "DisassociateSecurityGroups", ctx, "SecurityGroupIds", [groupId], (current, id) => {
      const next = current.filter((g) => g !== groupId);
      if (next.length === current.length) throw sgError("BadValue", `\`SecurityGroupIds.0\` ${groupId} is not bound to ${id}`);
      if (next.length === 0) throw sgError("BadValue", `\`SecurityGroupIds.0\` ${groupId} is the only group of ${id}; every instance keeps at least one (bind another first)`);
      return next;
    });
  }

  /** ModifyInstancesAttribute SecurityGroups: the instances' groups replaced by `groupIds` (in this order). */
  replaceGroups(groupIds: readonly string[], instanceIds: readonly string[], ctx: RequestContext): Promise<void> {
    if (groupIds.length > MAX_GROUPS_PER_INSTANCE) {
      throw sgError("InstanceGroupLimit", `\`SecurityGroups\` names ${groupIds.length} groups; an instance has at most ${MAX_GROUPS_PER_INSTANCE}`);
    }
    return this.bind(instanceIds, "ModifyInstancesAttribute", ctx, "SecurityGroups", groupIds, () => [...groupIds]);
  }

  /**
   * A binding change of several instances, all or nothing: every instance is checked and its
   * new list computed first; then the records change, the firewall takes the state, and the
   * records are saved. LatestOperation shows the action (SUCCESS, or FAILED with the code).
   */
  private bind(
    instanceIds: readonly string[],
    action: string,
    ctx: RequestContext,
    field: string,
    groupIds: readonly string[],
    next: (current: readonly string[], instanceId: string) => readonly string[],
  ): Promise<void> {
    return this.lock.run("sg", async () => {
      this.requireBindable(groupIds, field);
      const entries = this.bindable(instanceIds, action);
      const plans = entries.map((entry) => ({ entry, before: entry.record.securityGroupIds, after: [...next(this.groupsOf(entry.record), entry.record.instanceId)] }));
      for (const { entry, after } of plans) entry.record.securityGroupIds = after;
      try {
        await this.apply(this.firewallState());
      } catch (error) {
        const failed = sgError("BindFailed", `the firewall could not apply the change, nothing was changed: ${(error as Error).message}`, { cause: error });
        for (const { entry, before } of plans) {
          if (before === undefined) delete entry.record.securityGroupIds;
          else entry.record.securityGroupIds = before;
          entry.record.latestOperation = this.o.ops.failedOperation(action, ctx, failed);
          this.o.registry.touched(entry.record.instanceId, `${action} FAILED`);
        }
        await Promise.all(plans.map((p) => this.o.ops.saveRecord(p.entry)));
        this.o.logger.error({ err: error, action }, "the firewall refused a binding change; nothing changed");
        throw failed;
      }
      for (const { entry } of plans) {
        entry.record.latestOperation = { action, state: "SUCCESS", requestId: ctx.requestId };
        this.o.registry.touched(entry.record.instanceId, `${action} SUCCESS`);
      }
      await Promise.all(plans.map((p) => this.o.ops.saveRecord(p.entry)));
    });
  }

  private bindable(ids: readonly string[], action: string): InstanceEntry[] {
    const { registry } = this.o;
    const missing = ids.filter((id) => !registry.has(id));
    if (missing.length) throw new DomainError("InstanceNotFound", `no such instance on this host: ${missing.join(", ")}`);
    return [...new Set(ids)].map((id) => {
      const entry = registry.get(id)!;
      const state = registry.stateOf(entry);
      if (BINDING_REFUSED.has(state)) throw new DomainError("InstanceState", `${action} is not allowed for ${id} in state ${state}`, { state });
      return entry;
    });
  }
}

function findGroup(state: SgStoreState, id: string, field: string): StoredGroup {
  const group = state.groups.find((g) => g.securityGroupId === id);
  if (!group) throw sgError("GroupNotFound", `\`${field}\` security group ${id} does not exist`);
  return group;
}

export { SgError };
