/**
 * The VPC ENI actions (reference/tencent-api-next.md §B.2) on this host: create, describe,
 * attach (a virtio NIC hot-plugged into a running guest, or added to a stopped one's
 * definition), detach (waiting for the guest to let the device go), delete, secondary
 * addresses (assign, unassign, move) and attributes (name, description, security groups).
 *
 * Every change answers once done (the VPC API calls these asynchronous; DescribeVpcTaskResult
 * answers SUCCESS for them at once). A change of an instance's NICs:
 * 1. is journaled (journal.ts) before its first side effect, with the NICs and store entries
 *    before and after, so that start-up recovery finishes or undoes it;
 * 2. gives the firewall the new state (securityGroups.syncNow()): for an attach or a new
 *    address before the guest can use it, for a detach or a released address right after;
 * 3. saves the record (its domain's metadata), refreshes the guest's drive, then emits
 *    nicEvents (DHCP, caps).
 * Locks: one lock for the ENI actions (they are short), inside it the instance's operation
 * lock (ops.exclusive), inside that the store's. A terminated instance's ENIs go back to the
 * store under the store's lock only (instanceGone), so a terminate never waits on an ENI action.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { DomainNicSpec, Hypervisor } from "../../../drivers/libvirt/types.js";
import { DomainStateError } from "../../../drivers/libvirt/types.js";
import type { Operations, RequestContext } from "../../core/operations.js";
import { isPoweredOn, newMac, type InstanceRecord, type InstanceState, type NicRecord } from "../../model.js";
import type { InstanceEntry, InstanceRegistry } from "../../instances/registry.js";
import { KeyedLock } from "../../util/keyed-lock.js";
import { nicTapName } from "../firewall-types.js";
import type { Subnet } from "../subnets.js";
import { addressesInUse, allocate, checkAddress, nicAddresses } from "./addresses.js";
import { eniError } from "./errors.js";
import type { EniJournal, EniJournalEntry, EniOp } from "./journal.js";
import { eniTime, newEniId, nicLimitsOf, pciSlotsFree, type EniNet, type EniStoreState, type StoredEni } from "./model.js";
import type { EniStore } from "./store.js";
import { selectEnis, toNetworkInterface, type EniFilter, type EniRow } from "./views.js";

/** ENI changes of an instance are allowed while it is at rest, on or off. */
const AT_REST = new Set<InstanceState>(["RUNNING", "STOPPED"]);

/** Addresses an unattached ENI may hold (the seeds' table's largest row); an attach checks the instance's own. */
export const MAX_ADDRESSES_UNATTACHED = 30;
/** Security groups per ENI (as per instance: reference §A.4). */
export const MAX_GROUPS_PER_ENI = 5;

export interface EniServiceOptions {
  store: EniStore;
  journal: EniJournal;
  registry: InstanceRegistry;
  subnets: readonly Subnet[];
  hypervisor: Pick<Hypervisor, "attachNic" | "detachNic" | "liveNics" | "getDomain">;
  ops: Pick<Operations, "saveRecord" | "exclusive">;
  /** The firewall: a sync of the host's whole state (SecurityGroupService.syncNow). */
  firewall: { syncNow(): Promise<void> };
  /** Rebuilds and swaps the guest's config drive (GuestDocumentsService.refresh). */
  drives: { refresh(record: InstanceRecord): Promise<void> };
  nicEvents: { emit(instanceId: string): Promise<void> };
  groups: {
    exists(id: string): boolean;
    readonly defaultGroupId: string;
    /** The instance's own groups replaced (the primary ENI's groups are its instance's). */
    replaceInstanceGroups(groupIds: readonly string[], instanceId: string, ctx: RequestContext): Promise<void>;
  };
  /**
   * Addresses of a subnet that a change under way elsewhere holds (a primary address change:
   * VpcAttributeOperation.reserved, its new and its old address): never given to an ENI or as a
   * secondary address. Read at each allocation, so it may name an object made after this one.
   */
  reservedAddresses?: (subnetId: string) => Iterable<string>;
  /** Data disks attached to an instance (each takes a PCI slot). */
  dataDiskCount: (instanceId: string) => number;
  zone: string;
  /** How long a detach waits for the guest to release the device (config nic_detach_timeout_s). */
  detachTimeoutMs: number;
  checkpoint?: (point: string) => void;
  now?: () => Date;
  logger: Logger;
}

export interface CreateEniRequest {
  vpcId: string;
  subnetId: string;
  name: string;
  description?: string;
  securityGroupIds?: string[];
  addresses: Array<{ ip: string; primary: boolean }>;
  secondaryCount: number;
  tags: Array<{ key: string; value: string }>;
  clientToken?: string;
}

/** Where an ENI is: attached (its instance and its index in record.nics) or in the store. */
type Located =
  | { kind: "attached"; entry: InstanceEntry; index: number; nic: NicRecord; stored: StoredEni | undefined }
  | { kind: "free"; stored: StoredEni & { net: EniNet } };

export class EniService {
  private readonly lock = new KeyedLock();
  private readonly busy = new Map<string, string>();
  /** Request IDs of the ENI actions answered (DescribeVpcTaskResult), the newest last. */
  private readonly tasks = new Map<string, string[]>();
  private readonly clientTokens = new Map<string, string>();
  /** Addresses chosen by a create or an assign whose record or store does not have them yet: `${subnetId} ${ip}` → holders. */
  private readonly pending = new Map<string, number>();
  private readonly now: () => Date;

  constructor(private readonly o: EniServiceOptions) {
    this.now = o.now ?? (() => new Date());
  }

  // ------------------------------------------------------------------ reading

  private subnet(subnetId: string): Subnet {
    const s = this.o.subnets.find((x) => x.subnetId === subnetId);
    if (!s) throw eniError("NotFound", `subnet ${subnetId} is not a subnet of this host (known: ${this.o.subnets.map((x) => x.subnetId).join(", ")})`);
    return s;
  }

  private records(): InstanceRecord[] {
    return [...this.o.registry.all()].filter((e) => !e.launchFailed).map((e) => e.record);
  }

  /**
   * The addresses in use on a subnet: every NIC's, every unattached ENI's and those a create or
   * an assign under way has chosen (launches and address changes allocate from these too).
   */
  addressesInUse(subnetId: string): Set<string> {
    const used = addressesInUse({ records: this.records(), enis: this.o.store.state.enis, subnetId });
    for (const key of this.pending.keys()) {
      const [s, ip] = key.split(" ");
      if (s === subnetId) used.add(ip!);
    }
    return used;
  }

  /** What an ENI or a secondary address may not be given: the books (`used`), and what changes elsewhere hold (`held`: reservedAddresses). */
  private unavailable(subnetId: string): { used: Set<string>; held: Set<string> } {
    const used = this.addressesInUse(subnetId);
    const held = new Set(this.o.reservedAddresses?.(subnetId) ?? []);
    for (const ip of held) used.add(ip);
    return { used, held };
  }

  /** Holds `ips` of `subnetId` in the books until `work` ends (its record or store entry has them by then, or it failed). */
  private async holding<T>(subnetId: string, ips: readonly string[], work: () => Promise<T>): Promise<T> {
    const keys = ips.map((ip) => `${subnetId} ${ip}`);
    for (const k of keys) this.pending.set(k, (this.pending.get(k) ?? 0) + 1);
    try {
      return await work();
    } finally {
      for (const k of keys) {
        const n = (this.pending.get(k) ?? 1) - 1;
        if (n > 0) this.pending.set(k, n);
        else this.pending.delete(k);
      }
    }
  }

  /** Every MAC of every NIC and ENI. */
  private macs(): Set<string> {
    const macs = new Set<string>();
    for (const r of this.records()) for (const n of r.nics) macs.add(n.mac.toLowerCase());
    for (const e of this.o.store.state.enis) if (e.net) macs.add(e.net.mac);
    return macs;
  }

  private idTaken(id: string): boolean {
    return this.o.store.state.enis.some((e) => e.eniId === id) || this.records().some((r) => r.nics.some((n) => n.eniId === id));
  }

  /** A new ENI ID for a primary NIC at launch (RunInstances). */
  newPrimaryEniId(): string {
    return newEniId((id) => this.idTaken(id));
  }

  private locate(eniId: string, field = "NetworkInterfaceId"): Located {
    const stored = this.o.store.state.enis.find((e) => e.eniId === eniId);
    for (const entry of this.o.registry.all()) {
      if (entry.launchFailed) continue;
      const index = entry.record.nics.findIndex((n) => n.eniId === eniId);
      if (index >= 0) return { kind: "attached", entry, index, nic: entry.record.nics[index]!, stored };
    }
    if (stored?.net) return { kind: "free", stored: stored as StoredEni & { net: EniNet } };
    throw eniError("NotFound", `\`${field}\` ${eniId} does not exist on this host`);
  }

  private rows(): EniRow[] {
    const stored = new Map(this.o.store.state.enis.map((e) => [e.eniId, e]));
    const rows: EniRow[] = [];
    for (const entry of this.o.registry.all()) {
      if (entry.launchFailed) continue;
      const r = entry.record;
      r.nics.forEach((nic, index) => {
        if (!nic.eniId) return;
        const meta = stored.get(nic.eniId);
        rows.push({
          eniId: nic.eniId,
          name: meta?.name ?? (index === 0 ? "primary" : ""),
          description: meta?.description ?? "",
          createdTime: meta?.createdTime ?? r.createdTime.replace("T", " ").replace("Z", ""),
          tags: meta?.tags ?? [],
          mac: nic.mac,
          subnetId: nic.subnetId ?? "",
          vpcId: nic.vpcId ?? "",
          primaryIp: nic.ipv4 ?? "",
          secondaryIps: nic.secondaryIpv4s ?? [],
          securityGroupIds: index === 0 ? (r.securityGroupIds ?? [this.o.groups.defaultGroupId]) : (nic.securityGroupIds ?? r.securityGroupIds ?? [this.o.groups.defaultGroupId]),
          primary: index === 0,
          attachment: {
            instanceId: r.instanceId,
            deviceIndex: nic.slot ?? index,
            attachTime: meta?.attachTime ?? r.createdTime.replace("T", " ").replace("Z", ""),
          },
          ...(this.busy.has(nic.eniId) ? { busy: this.busy.get(nic.eniId)! } : {}),
        });
      });
    }
    for (const e of this.o.store.state.enis) {
      if (!e.net) continue;
      rows.push({
        eniId: e.eniId,
        name: e.name,
        description: e.description,
        createdTime: e.createdTime,
        tags: e.tags,
        mac: e.net.mac,
        subnetId: e.net.subnetId,
        vpcId: e.net.vpcId,
        primaryIp: e.net.primaryIp,
        secondaryIps: e.net.secondaryIps,
        securityGroupIds: e.net.securityGroupIds,
        primary: false,
        ...(this.busy.has(e.eniId) ? { busy: this.busy.get(e.eniId)! } : {}),
      });
    }
    return rows;
  }

  describe(q: { ids?: string[]; filters: EniFilter[]; offset: number; limit: number }): { TotalCount: number; NetworkInterfaceSet: Array<Record<string, unknown>> } {
    const { total, page } = selectEnis(this.rows(), q);
    return { TotalCount: total, NetworkInterfaceSet: page.map((r) => toNetworkInterface(r, this.o.zone)) };
  }

  /** The NetworkInterface of one ENI. */
  view(eniId: string): Record<string, unknown> {
    const row = this.rows().find((r) => r.eniId === eniId);
    if (!row) throw eniError("NotFound", `${eniId} does not exist on this host`);
    return toNetworkInterface(row, this.o.zone);
  }

  /** DescribeVpcTaskResult: the ENI actions answer when done, so a known task succeeded. */
  taskResult(taskId: string): Record<string, unknown> {
    const resources = this.tasks.get(taskId);
    if (!resources) throw eniError("NotFound", `\`TaskId\` ${taskId} is not a task of this host`);
    return { Status: "SUCCESS", Output: "", Result: resources.map((id) => ({ ResourceId: id, Status: "SUCCESS" })) };
  }

  private done(ctx: RequestContext, ...resources: string[]): void {
    this.tasks.set(ctx.requestId, resources);
    while (this.tasks.size > 1000) this.tasks.delete(this.tasks.keys().next().value!);
  }

  // ------------------------------------------------------------------ checks

  private atRest(instanceId: string, action: string): InstanceEntry {
    const entry = this.o.registry.get(instanceId);
    if (!entry || entry.launchFailed) throw eniError("NotFound", `\`InstanceId\` ${instanceId} does not exist on this host`);
    const state = this.o.registry.stateOf(entry);
    if (!AT_REST.has(state) || entry.transition) {
      throw eniError("InvalidState", `${action} is not allowed for ${instanceId} in state ${state}${entry.transition ? ` (${entry.transition.action} running)` : ""}`);
    }
    return entry;
  }

  private checkGroups(ids: readonly string[], field: string): string[] {
    if (ids.length > MAX_GROUPS_PER_ENI) throw eniError("Limit", `\`${field}\` names ${ids.length} groups; an ENI has at most ${MAX_GROUPS_PER_ENI}`);
    if (new Set(ids).size !== ids.length) throw eniError("Duplicate", `\`${field}\` names a group twice`);
    ids.forEach((id, i) => {
      if (!this.o.groups.exists(id)) throw eniError("NotFound", `\`${field}.${i}\` security group ${id} does not exist`);
    });
    return [...ids];
  }

  private notBusy(eniId: string): void {
    const b = this.busy.get(eniId);
    if (b) throw eniError("InvalidState", `${eniId} is ${b}`);
  }

  // ------------------------------------------------------------------ create, delete, modify

  async create(req: CreateEniRequest, ctx: RequestContext): Promise<Record<string, unknown>> {
    return this.lock.run("eni", async () => {
      if (req.clientToken !== undefined) {
        const earlier = this.clientTokens.get(req.clientToken);
        if (earlier && this.rows().some((r) => r.eniId === earlier)) return this.view(earlier);
      }
      const subnet = this.subnet(req.subnetId);
      if (subnet.vpcId !== req.vpcId) throw eniError("Mismatch", `\`SubnetId\` ${req.subnetId} belongs to ${subnet.vpcId}, not ${req.vpcId}`);
      const primaries = req.addresses.filter((a) => a.primary);
      if (primaries.length > 1) throw eniError("BadValue", "`PrivateIpAddresses` marks more than one address Primary");
      const total = Math.max(1, req.addresses.length) + req.secondaryCount;
      if (total > MAX_ADDRESSES_UNATTACHED) {
        throw eniError("Limit", `the ENI would hold ${total} addresses; at most ${MAX_ADDRESSES_UNATTACHED} (and at most the instance size's, on attach)`);
      }
      const groups = req.securityGroupIds ? this.checkGroups(req.securityGroupIds, "SecurityGroupIds") : [this.o.groups.defaultGroupId];
      const { used, held } = this.unavailable(subnet.subnetId);
      const seen = new Set<string>();
      const given = req.addresses.map((a, i) => {
        if (seen.has(a.ip)) throw eniError("Duplicate", `\`PrivateIpAddresses.${i}.PrivateIpAddress\` ${a.ip} is given twice`);
        seen.add(a.ip);
        return { ip: checkAddress(subnet, used, a.ip, `PrivateIpAddresses.${i}.PrivateIpAddress`, held), primary: a.primary };
      });
      for (const g of given) used.add(g.ip);
      // The primary: the one marked Primary, else the first given, else allocated.
      const primaryIp = (given.find((g) => g.primary) ?? given[0])?.ip ?? allocate(subnet, used);
      const secondaryIps = [...given.map((g) => g.ip).filter((ip) => ip !== primaryIp)];
      for (let i = 0; i < req.secondaryCount; i++) secondaryIps.push(allocate(subnet, used));
      const eni: StoredEni = {
        eniId: newEniId((id) => this.idTaken(id)),
        name: req.name,
        description: req.description ?? "",
        createdTime: eniTime(this.now()),
        tags: req.tags.map((t) => ({ ...t })),
        net: { mac: newMac(this.macs()), subnetId: subnet.subnetId, vpcId: subnet.vpcId, network: subnet.network, primaryIp, secondaryIps, securityGroupIds: groups },
      };
      await this.holding(subnet.subnetId, [primaryIp, ...secondaryIps], () => this.commitStore((s) => s.enis.push(eni)));
      if (req.clientToken !== undefined) this.clientTokens.set(req.clientToken, eni.eniId);
      this.done(ctx, eni.eniId);
      return this.view(eni.eniId);
    });
  }

  async delete(eniId: string, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const at = this.locate(eniId);
      if (at.kind === "attached") throw eniError("InUse", `${eniId} is attached to ${at.entry.record.instanceId}; detach it first`);
      this.notBusy(eniId);
      await this.commitStore((s) => {
        s.enis = s.enis.filter((e) => e.eniId !== eniId);
      });
      this.done(ctx, eniId);
    });
  }

  async modify(req: { eniId: string; name?: string; description?: string; securityGroupIds?: string[] }, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const at = this.locate(req.eniId);
      this.notBusy(req.eniId);
      const groups = req.securityGroupIds ? this.checkGroups(req.securityGroupIds, "SecurityGroupIds") : undefined;
      if (groups && groups.length === 0) throw eniError("BadValue", "`SecurityGroupIds` must name at least one group");
      if (groups && at.kind === "attached") {
        const instanceId = at.entry.record.instanceId;
        if (at.index === 0) {
          // The primary ENI's groups are its instance's (the firewall, DescribeInstances and the metadata follow them).
          await this.o.groups.replaceInstanceGroups(groups, instanceId, ctx);
        } else {
          await this.o.ops.exclusive(instanceId, async () => {
            const entry = this.atRest(instanceId, "ModifyNetworkInterfaceAttribute");
            const nic = entry.record.nics.find((n) => n.eniId === req.eniId);
            if (!nic) throw eniError("NotAttached", `${req.eniId} is not attached to ${instanceId} any more`);
            const before = nic.securityGroupIds;
            nic.securityGroupIds = groups;
            try {
              await this.o.firewall.syncNow();
            } catch (error) {
              if (before === undefined) delete nic.securityGroupIds;
              else nic.securityGroupIds = before;
              throw eniError("HostFailure", `the firewall could not apply the groups, nothing was changed: ${(error as Error).message}`, { cause: error });
            }
            // A crash before this save: the record read back has the old groups, and start-up's resync applies them.
            await this.o.ops.saveRecord(entry);
          });
        }
      }
      if (req.name !== undefined || req.description !== undefined || (groups && at.kind === "free")) {
        await this.commitStore((s) => {
          let meta = s.enis.find((e) => e.eniId === req.eniId);
          if (!meta) {
            meta = this.defaultMeta(req.eniId, at);
            s.enis.push(meta);
          }
          if (req.name !== undefined) meta.name = req.name;
          if (req.description !== undefined) meta.description = req.description;
          if (groups && meta.net) meta.net.securityGroupIds = groups;
        });
      }
      this.done(ctx, req.eniId);
    });
  }

  /** A store entry for an attached ENI that has none yet (a primary ENI made at launch). */
  private defaultMeta(eniId: string, at: Located): StoredEni {
    const record = at.kind === "attached" ? at.entry.record : undefined;
    const created = record ? record.createdTime.replace("T", " ").replace("Z", "") : eniTime(this.now());
    return { eniId, name: at.kind === "attached" && at.index === 0 ? "primary" : "", description: "", createdTime: created, tags: [], attachTime: created };
  }

  private async commitStore(change: (draft: EniStoreState) => void): Promise<void> {
    await this.lock.run("store", async () => {
      const draft = structuredClone(this.o.store.state);
      change(draft);
      await this.o.store.commit(draft);
    });
  }

  // ------------------------------------------------------------------ attach, detach

  async attach(req: { eniId: string; instanceId: string }, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const at = this.locate(req.eniId);
      if (at.kind === "attached") {
        throw eniError("Attached", `${req.eniId} is already attached to ${at.entry.record.instanceId}`);
      }
      this.notBusy(req.eniId);
      this.atRest(req.instanceId, "AttachNetworkInterface");
      await this.o.ops.exclusive(req.instanceId, async () => {
        const entry = this.atRest(req.instanceId, "AttachNetworkInterface");
        const record = entry.record;
        const net = at.stored.net;
        const limits = nicLimitsOf(record);
        if (record.nics.length + 1 > limits.nicsPerInstance) {
          throw eniError("Limit", `${req.instanceId} (${record.cpu} vCPU, ${record.memoryGiB} GiB) may have ${limits.nicsPerInstance} NICs; it has ${record.nics.length}`);
        }
        const count = 1 + net.secondaryIps.length;
        if (count > limits.addressesPerNic) {
          throw eniError("Limit", `${req.eniId} holds ${count} addresses; a NIC of ${req.instanceId} may hold ${limits.addressesPerNic}`);
        }
        const free = pciSlotsFree({ virtioDisks: 1 + this.o.dataDiskCount(req.instanceId), nics: record.nics.length });
        if (free < 1) throw eniError("Limit", `${req.instanceId} has no PCI slot left for another NIC (its disks and NICs take them all)`);
        const slots = new Set(record.nics.map((n, i) => n.slot ?? i));
        let slot = 0;
        while (slots.has(slot)) slot++;
        const nic: NicRecord = {
          mac: net.mac,
          network: net.network,
          ipv4: net.primaryIp,
          subnetId: net.subnetId,
          vpcId: net.vpcId,
          eniId: req.eniId,
          ...(net.secondaryIps.length ? { secondaryIpv4s: [...net.secondaryIps] } : {}),
          securityGroupIds: [...net.securityGroupIds],
          slot,
        };
        const { net: _net, ...meta } = at.stored;
        const after: StoredEni = { ...structuredClone(meta), attachTime: eniTime(this.now()) };
        const live = isPoweredOn(entry.power);
        await this.change(
          "attach",
          req.eniId,
          [{ entry, after: [...record.nics, nic] }],
          [{ eniId: req.eniId, before: at.stored, after }],
          ctx,
          async () => {
            this.busy.set(req.eniId, "ATTACHING");
            try {
              // The NIC's slot fixes its tap name (firewall rules already in place for it).
              await this.o.hypervisor.attachNic(req.instanceId, this.nicSpec(req.instanceId, nic, slot), live);
            } finally {
              this.busy.delete(req.eniId);
            }
            this.o.checkpoint?.("eni-attach:plugged");
          },
        );
      });
      this.done(ctx, req.eniId);
    });
  }

  async detach(req: { eniId: string; instanceId: string }, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const at = this.locate(req.eniId);
      if (at.kind !== "attached" || at.entry.record.instanceId !== req.instanceId) {
        throw eniError("NotAttached", `${req.eniId} is not attached to ${req.instanceId}${at.kind === "attached" ? ` (it is attached to ${at.entry.record.instanceId})` : ""}`);
      }
      if (at.index === 0) throw eniError("PrimaryNic", `${req.eniId} is the primary NIC of ${req.instanceId}, which is never detached`);
      this.notBusy(req.eniId);
      this.atRest(req.instanceId, "DetachNetworkInterface");
      await this.o.ops.exclusive(req.instanceId, async () => {
        const entry = this.atRest(req.instanceId, "DetachNetworkInterface");
        const record = entry.record;
        const nic = record.nics.find((n) => n.eniId === req.eniId);
        if (!nic) throw eniError("NotAttached", `${req.eniId} is not attached to ${req.instanceId} any more`);
        const meta = this.o.store.state.enis.find((e) => e.eniId === req.eniId) ?? this.defaultMeta(req.eniId, at);
        const { attachTime: _t, ...rest } = structuredClone(meta);
        const after: StoredEni = { ...rest, net: netOf(nic, this.groupsOfNic(record, nic)) };
        const live = isPoweredOn(entry.power);
        await this.change(
          "detach",
          req.eniId,
          [{ entry, after: record.nics.filter((n) => n !== nic) }],
          [{ eniId: req.eniId, before: this.o.store.state.enis.find((e) => e.eniId === req.eniId) ?? null, after }],
          ctx,
          async () => {
            this.busy.set(req.eniId, "DETACHING");
            try {
              await this.o.hypervisor.detachNic(req.instanceId, nic.mac, live, this.o.detachTimeoutMs);
            } catch (error) {
              if (error instanceof DomainStateError) {
                throw eniError("InvalidState", `${error.message}; ${req.eniId} stays attached (the guest may still let it go later: detach again then)`, { cause: error });
              }
              throw error;
            } finally {
              this.busy.delete(req.eniId);
            }
          },
          // Unplugged first: the guest's NIC is gone before its rules go.
          true,
        );
      });
      this.done(ctx, req.eniId);
    });
  }

  private groupsOfNic(record: InstanceRecord, nic: NicRecord): string[] {
    return [...(nic.securityGroupIds ?? record.securityGroupIds ?? [this.o.groups.defaultGroupId])];
  }

  private nicSpec(instanceId: string, nic: NicRecord, index: number): DomainNicSpec {
    return { mac: nic.mac, source: { network: nic.network }, targetDev: nicTapName(instanceId, nic, index) };
  }

  // ------------------------------------------------------------------ addresses

  async assign(req: { eniId: string; addresses: string[]; count: number }, ctx: RequestContext): Promise<Array<Record<string, unknown>>> {
    return this.lock.run("eni", async () => {
      const at = this.locate(req.eniId);
      this.notBusy(req.eniId);
      const net = at.kind === "attached" ? { subnetId: at.nic.subnetId ?? "", addresses: nicAddresses(at.nic) } : { subnetId: at.stored.net.subnetId, addresses: [at.stored.net.primaryIp, ...at.stored.net.secondaryIps] };
      const subnet = this.subnet(net.subnetId);
      const limit = at.kind === "attached" ? nicLimitsOf(at.entry.record).addressesPerNic : MAX_ADDRESSES_UNATTACHED;
      const total = net.addresses.length + req.addresses.length + req.count;
      if (total > limit) throw eniError("Limit", `${req.eniId} would hold ${total} addresses; at most ${limit}`);
      const { used, held } = this.unavailable(subnet.subnetId);
      const seen = new Set<string>();
      const added = req.addresses.map((ip, i) => {
        if (seen.has(ip)) throw eniError("Duplicate", `\`PrivateIpAddresses.${i}.PrivateIpAddress\` ${ip} is given twice`);
        seen.add(ip);
        return checkAddress(subnet, used, ip, `PrivateIpAddresses.${i}.PrivateIpAddress`, held);
      });
      for (const ip of added) used.add(ip);
      for (let i = 0; i < req.count; i++) added.push(allocate(subnet, used));
      await this.holding(subnet.subnetId, added, () => this.changeAddresses(at, (list) => [...list, ...added], ctx, false));
      this.done(ctx, req.eniId);
      return added.map((ip) => ({ PrivateIpAddress: ip, Primary: false, PublicIpAddress: "", AddressId: "", Description: "", IsWanIpBlocked: false, State: "AVAILABLE" }));
    });
  }

  async unassign(req: { eniId: string; addresses: string[] }, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const at = this.locate(req.eniId);
      this.notBusy(req.eniId);
      const primary = at.kind === "attached" ? at.nic.ipv4 : at.stored.net.primaryIp;
      const secondaries = at.kind === "attached" ? (at.nic.secondaryIpv4s ?? []) : at.stored.net.secondaryIps;
      req.addresses.forEach((ip, i) => {
        if (ip === primary) throw eniError("PrimaryIp", `\`PrivateIpAddresses.${i}.PrivateIpAddress\` ${ip} is the primary address of ${req.eniId}, which cannot be released`);
        if (!secondaries.includes(ip)) throw eniError("NotFound", `\`PrivateIpAddresses.${i}.PrivateIpAddress\` ${ip} is not an address of ${req.eniId}`);
      });
      const gone = new Set(req.addresses);
      // Released: the record first, then the firewall stops allowing it, then the guest's drive.
      await this.changeAddresses(at, (list) => list.filter((ip) => !gone.has(ip)), ctx, true);
      this.done(ctx, req.eniId);
    });
  }

  /** MigratePrivateIpAddress: a secondary address moves to another ENI of the same subnet. */
  async migrate(req: { sourceEniId: string; destinationEniId: string; ip: string }, ctx: RequestContext): Promise<void> {
    await this.lock.run("eni", async () => {
      const src = this.locate(req.sourceEniId, "SourceNetworkInterfaceId");
      const dst = this.locate(req.destinationEniId, "DestinationNetworkInterfaceId");
      this.notBusy(req.sourceEniId);
      this.notBusy(req.destinationEniId);
      if (req.sourceEniId === req.destinationEniId) throw eniError("BadValue", "`DestinationNetworkInterfaceId` is the source ENI");
      const subnetOf = (l: Located) => (l.kind === "attached" ? (l.nic.subnetId ?? "") : l.stored.net.subnetId);
      if (subnetOf(src) !== subnetOf(dst)) {
        throw eniError("Mismatch", `${req.destinationEniId} is in ${subnetOf(dst)}, not in ${req.sourceEniId}'s subnet ${subnetOf(src)}`);
      }
      const srcPrimary = src.kind === "attached" ? src.nic.ipv4 : src.stored.net.primaryIp;
      const srcSecondaries = src.kind === "attached" ? (src.nic.secondaryIpv4s ?? []) : src.stored.net.secondaryIps;
      if (req.ip === srcPrimary) throw eniError("PrimaryIp", `\`PrivateIpAddress\` ${req.ip} is the primary address of ${req.sourceEniId}, which cannot move`);
      if (!srcSecondaries.includes(req.ip)) throw eniError("NotFound", `\`PrivateIpAddress\` ${req.ip} is not an address of ${req.sourceEniId}`);
      const dstCount = dst.kind === "attached" ? nicAddresses(dst.nic).length : 1 + dst.stored.net.secondaryIps.length;
      const limit = dst.kind === "attached" ? nicLimitsOf(dst.entry.record).addressesPerNic : MAX_ADDRESSES_UNATTACHED;
      if (dstCount + 1 > limit) throw eniError("Limit", `${req.destinationEniId} already holds ${dstCount} addresses; at most ${limit}`);
      await this.changeAddressesOf(
        [
          { at: src, next: (l) => l.filter((ip) => ip !== req.ip) },
          { at: dst, next: (l) => [...l, req.ip] },
        ],
        ctx,
      );
      this.done(ctx, req.sourceEniId, req.destinationEniId);
    });
  }

  private changeAddresses(at: Located, next: (secondaries: string[]) => string[], ctx: RequestContext, releasing: boolean): Promise<void> {
    return this.changeAddressesOf([{ at, next }], ctx, releasing);
  }

  /**
   * Secondary addresses of one or two ENIs change. Unattached ones: the store alone. Attached
   * ones: journaled, the record's NIC changed, the firewall and the guest told (new addresses:
   * firewall first; released ones: guest first), the record saved, nicEvents emitted.
   */
  private async changeAddressesOf(parts: Array<{ at: Located; next: (secondaries: string[]) => string[] }>, ctx: RequestContext, releasing = false): Promise<void> {
    const instances = new Map<string, { entry: InstanceEntry; after: NicRecord[] }>();
    const store: Array<{ eniId: string; before: StoredEni | null; after: StoredEni | null }> = [];
    for (const { at, next } of parts) {
      if (at.kind === "attached") {
        const id = at.entry.record.instanceId;
        const plan = instances.get(id) ?? { entry: at.entry, after: structuredClone(at.entry.record.nics) };
        const nic = plan.after[at.index]!;
        const list = next(nic.secondaryIpv4s ?? []);
        if (list.length) nic.secondaryIpv4s = list;
        else delete nic.secondaryIpv4s;
        instances.set(id, plan);
      } else {
        const after = structuredClone(at.stored);
        after.net.secondaryIps = next(after.net.secondaryIps);
        store.push({ eniId: at.stored.eniId, before: at.stored, after });
      }
    }
    if (instances.size === 0) {
      await this.commitStore((s) => {
        for (const c of store) s.enis = s.enis.map((e) => (e.eniId === c.eniId ? c.after! : e));
      });
      return;
    }
    for (const { entry } of instances.values()) this.atRest(entry.record.instanceId, "AssignPrivateIpAddresses");
    const ids = [...instances.keys()].sort();
    const run = async (i: number): Promise<void> => {
      if (i < ids.length) return this.o.ops.exclusive(ids[i]!, () => run(i + 1));
      await this.change("addresses", parts[0]!.at.kind === "attached" ? (parts[0]!.at.nic.eniId ?? "") : parts[0]!.at.stored.eniId, [...instances.values()], store, ctx, undefined, releasing);
    };
    await run(0);
  }

  /**
   * One journaled change of instances' NICs (and store entries): the journal, the records in
   * memory, then either the firewall before the host step (`plug`: an attach, new addresses)
   * or after it (`releasing`: a detach, released addresses), the records saved, the store
   * committed, the drives refreshed, nicEvents emitted, the journal removed. A failure before
   * the records are saved puts everything back as it was.
   */
  private async change(
    op: EniOp,
    eniId: string,
    instances: Array<{ entry: InstanceEntry; after: NicRecord[] }>,
    store: Array<{ eniId: string; before: StoredEni | null; after: StoredEni | null }>,
    ctx: RequestContext,
    hostStep: (() => Promise<void>) | undefined,
    releasing = false,
  ): Promise<void> {
    const entry: EniJournalEntry = {
      id: randomUUID(),
      op,
      eniId,
      instances: instances.map((i) => ({ instanceId: i.entry.record.instanceId, before: structuredClone(i.entry.record.nics), after: structuredClone(i.after) })),
      store: store.map((s) => ({ eniId: s.eniId, before: s.before ? structuredClone(s.before) : null, after: s.after ? structuredClone(s.after) : null })),
      requestId: ctx.requestId,
      startedAt: new Date().toISOString(),
    };
    const journaled = async () => {
      await this.o.journal.write(entry);
      this.o.checkpoint?.(`eni-${op}:journaled`);
    };
    const setNics = (which: "before" | "after") => {
      for (const [i, planned] of entry.instances.entries()) {
        const record = instances[i]!.entry.record;
        record.nics = structuredClone(planned[which]);
        record.configGeneration = (record.configGeneration ?? 1) + 1;
      }
    };
    try {
      if (!releasing) {
        setNics("after");
        // The journal and the firewall's rules for the new NICs at once, both before the host
        // step (a tap with no rules could send as another NIC's address): rules for a NIC no
        // record has are gone with the next sync or the start-up resync, should a crash come first.
        // Both settled before a failure is handled: the journal entry is removed below, after
        // its write (Promise.all would reject at once and could leave the entry behind).
        const [j, f] = await Promise.allSettled([journaled(), this.o.firewall.syncNow()]);
        if (j.status === "rejected") throw j.reason;
        if (f.status === "rejected") throw f.reason;
        await hostStep?.();
      } else {
        await journaled();
        await hostStep?.();
        setNics("after");
      }
    } catch (error) {
      setNics("before");
      await this.o.firewall.syncNow().catch((e: unknown) => this.o.logger.error({ err: e }, "could not put the firewall back after a failed ENI change"));
      await this.o.journal.remove(entry.id);
      if (error instanceof Error && error.name === "EniError") throw error;
      throw eniError("HostFailure", `${op} of ${eniId} failed, nothing was changed: ${(error as Error).message}`, { cause: error });
    }
    await this.finish(entry, instances.map((i) => i.entry), releasing);
  }

  /** The rest of a change once the host step is done: records saved, store, drives, events, journal. */
  private async finish(entry: EniJournalEntry, entries: InstanceEntry[], releasing: boolean): Promise<void> {
    const drives = () =>
      Promise.all(
        entries.map((e) =>
          this.o.drives.refresh(e.record).catch((err: unknown) => this.o.logger.error({ err, instanceId: e.record.instanceId }, "could not refresh the guest's drive after a NIC change")),
        ),
      );
    // The records, the store and (when the firewall already has the new state) the guests' drives at once.
    await Promise.all([...entries.map((e) => this.o.ops.saveRecord(e)), this.commitStore((s) => applyStore(s, entry.store, "after")), ...(releasing ? [] : [drives()])]);
    // Indexes over the instances' NICs (the metadata endpoint's callers by address) are built anew.
    this.o.registry.membership += 1;
    if (releasing) {
      await this.o.firewall.syncNow();
      await drives();
    }
    for (const e of entries) {
      this.o.registry.touched(e.record.instanceId, `NICs changed (${entry.op} ${entry.eniId})`);
      await this.o.nicEvents.emit(e.record.instanceId);
    }
    await this.o.journal.remove(entry.id);
  }

  // ------------------------------------------------------------------ terminate, recovery

  /**
   * A terminated instance's ENIs: the secondary ones go back to the store (unattached, with
   * their addresses and groups), the primary one goes with the instance. Idempotent (a
   * terminate resumed after a crash runs it again). Takes only the store's lock.
   */
  async instanceGone(record: InstanceRecord): Promise<void> {
    const nics = record.nics;
    await this.commitStore((s) => {
      nics.forEach((nic, index) => {
        if (!nic.eniId) return;
        const meta = s.enis.find((e) => e.eniId === nic.eniId);
        if (index === 0) {
          s.enis = s.enis.filter((e) => e.eniId !== nic.eniId);
          return;
        }
        if (meta?.net) return;
        const created = record.createdTime.replace("T", " ").replace("Z", "");
        const back: StoredEni = { ...(meta ?? { eniId: nic.eniId, name: "", description: "", createdTime: created, tags: [] }), net: netOf(nic, this.groupsOfNic(record, nic)) };
        delete back.attachTime;
        s.enis = [...s.enis.filter((e) => e.eniId !== nic.eniId), back];
      });
    });
  }

  /**
   * Start-up (after instance recovery, before the firewall's resync): every journaled ENI
   * change is finished (the domain's NIC made to match the record after it) or, when that
   * fails, undone (the record and the domain as before); then an ENI both attached and in
   * the store (cannot happen but by hand) keeps its attachment. Returns the instances touched.
   */
  async recover(): Promise<string[]> {
    const touched = new Set<string>();
    const { entries, setAside } = await this.o.journal.readAll();
    for (const b of setAside) this.o.logger.warn({ file: b.file, aside: b.aside, reason: b.reason }, "ENI journal entry unreadable; set aside for the operator");
    for (const j of entries) {
      const log = this.o.logger.child({ eniId: j.eniId, op: j.op, requestId: j.requestId });
      try {
        await this.settle(j, "after");
        log.info("finished an ENI change interrupted by a restart");
      } catch (error) {
        log.error({ err: error }, "could not finish an ENI change interrupted by a restart; undoing it");
        await this.settle(j, "before").catch((e: unknown) => log.error({ err: e }, "could not undo it either; the record is what the agent follows"));
      }
      for (const i of j.instances) touched.add(i.instanceId);
      await this.o.journal.remove(j.id);
    }
    const attached = new Set(this.records().flatMap((r) => r.nics.flatMap((n) => (n.eniId ? [n.eniId] : []))));
    const doubled = this.o.store.state.enis.filter((e) => e.net && attached.has(e.eniId));
    if (doubled.length) {
      this.o.logger.warn({ enis: doubled.map((e) => e.eniId) }, "ENIs both attached and unattached; they stay attached");
      await this.commitStore((s) => {
        for (const e of s.enis) if (attached.has(e.eniId)) delete e.net;
      });
    }
    return [...touched];
  }

  /** Brings one journaled change to its `which` side: records, the domains' NIC, the store, the drive. */
  private async settle(j: EniJournalEntry, which: "before" | "after"): Promise<void> {
    const macs = new Set<string>();
    for (const s of j.store) {
      if (s.before?.net) macs.add(s.before.net.mac);
      if (s.after?.net) macs.add(s.after.net.mac);
    }
    for (const i of j.instances) for (const n of [...i.before, ...i.after]) if (n.eniId === j.eniId) macs.add(n.mac.toLowerCase());
    for (const i of j.instances) {
      const entry = this.o.registry.get(i.instanceId);
      if (!entry || entry.launchFailed) continue; // terminated meanwhile: its ENIs went back with instanceGone
      const want = i[which];
      entry.record.nics = structuredClone(want);
      entry.record.configGeneration = (entry.record.configGeneration ?? 1) + 1;
      await this.reconcileDomain(i.instanceId, want, macs);
      await this.o.ops.saveRecord(entry);
      await this.o.drives.refresh(entry.record).catch((err: unknown) => this.o.logger.warn({ err, instanceId: i.instanceId }, "could not refresh the drive after recovering an ENI change"));
    }
    this.o.registry.membership += 1;
    await this.commitStore((s) => applyStore(s, j.store, which));
  }

  /** Makes the domain's NICs among `macs` (persistent and live) exactly those of `want`. */
  private async reconcileDomain(instanceId: string, want: readonly NicRecord[], macs: ReadonlySet<string>): Promise<void> {
    const details = await this.o.hypervisor.getDomain(instanceId);
    if (!details) return;
    const live = await this.o.hypervisor.liveNics(instanceId);
    const defined = new Set(details.spec.nics.map((n) => n.mac.toLowerCase()));
    const running = new Set((live ?? []).map((n) => n.mac.toLowerCase()));
    for (const mac of macs) {
      const index = want.findIndex((n) => n.mac.toLowerCase() === mac);
      if (index < 0) {
        if (defined.has(mac) || running.has(mac)) await this.o.hypervisor.detachNic(instanceId, mac, running.has(mac), this.o.detachTimeoutMs);
      } else if (!defined.has(mac) || (live !== null && !running.has(mac))) {
        // attach-device --config of a NIC already defined fails: plug it live only where missing.
        if (defined.has(mac)) await this.o.hypervisor.detachNic(instanceId, mac, false);
        await this.o.hypervisor.attachNic(instanceId, this.nicSpec(instanceId, want[index]!, index), live !== null);
      }
    }
  }
}

/** The network part of an attached NIC, for the store. */
function netOf(nic: NicRecord, groups: string[]): EniNet {
  return {
    mac: nic.mac.toLowerCase(),
    subnetId: nic.subnetId ?? "",
    vpcId: nic.vpcId ?? "",
    network: nic.network,
    primaryIp: nic.ipv4 ?? "",
    secondaryIps: [...(nic.secondaryIpv4s ?? [])],
    securityGroupIds: groups,
  };
}

function applyStore(s: EniStoreState, changes: EniJournalEntry["store"], which: "before" | "after"): void {
  for (const c of changes) {
    const value = c[which];
    s.enis = s.enis.filter((e) => e.eniId !== c.eniId);
    if (value) s.enis.push(structuredClone(value));
  }
}
