/**
 * ModifyInstancesVpcAttribute (reference/tencent-api-next.md §C.6): a new primary private
 * address for each instance named, in the subnet named (another subnet of this host moves the
 * primary NIC there). The seeds' rule: a running instance is stopped, changed and started
 * again; the guest learns its new address from the rebuilt config drive at boot.
 *
 * Address books: the new address is held from admission until the definition has it, the old
 * one until the instance runs on the new definition (or, stopped, until the change is done),
 * so neither is handed to anyone else meanwhile (`reserved()`, which the address books count).
 * A failed start goes back to the old address, which is still held.
 *
 * Steps, each after the one before it:
 *   journaled   a journal entry ("readdress": the new record, the old NIC, whether it ran)
 *   stopped     a running instance is off (soft stop; with ForceStop a hard one after it)
 *   defined     libvirt has the new definition, with the record (new address and subnet,
 *               configGeneration bumped): libvirt has the old address or the new one
 *   drive       the config drive says the new address; the firewall allows it (and no
 *               longer the old one); DHCP and caps are told (nicEvents)
 *   started     the instance runs again, if it ran; the old address is free
 * After a SIGKILL, recovery (`resume`) finishes the change when libvirt has the new record
 * (drive, firewall, start) and reports it FAILED on the old address otherwise (drive rebuilt,
 * started again if it ran): guest, definition, drive and address books agree either way.
 */
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import { DomainError } from "../core/errors.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { Journal } from "../journal.js";
import { isoSeconds, type InstanceRecord, type NicRecord } from "../model.js";
import { allocateAddress, resolveSubnet, type Subnet } from "../network/subnets.js";
import type { PowerControl } from "./power.js";
import type { Checkpoint, ConfigDrives, DomainSpecs } from "./provision.js";
import type { InstanceEntry, InstanceRegistry, Transition } from "./registry.js";

export const VPC_ATTRIBUTE_ACTION = "ModifyInstancesVpcAttribute";

export interface VpcAttributeRequest {
  instanceIds: string[];
  vpcId: string;
  subnetId: string;
  /** One per instance, in the order of instanceIds; absent: each gets the subnet's lowest free address. */
  privateIpAddresses?: string[];
  /** A running instance that ignores the soft stop is stopped hard (the API's default: true). */
  forceStop: boolean;
}

/** What the primary NIC had before the change (the journal keeps it for a rollback). */
export interface PrimaryNicBefore {
  ipv4: string;
  subnetId: string;
  vpcId?: string;
  network: string;
}

/** The primary NIC of `record` on `subnet` with `ipv4` (the MAC, the ENI and the slot stay). */
export function readdressed(record: InstanceRecord, subnet: Subnet, ipv4: string): InstanceRecord {
  const primary = record.nics[0];
  if (!primary) throw new DomainError("BadValue", `${record.instanceId} has no NIC`);
  const moved = primary.subnetId !== subnet.subnetId;
  const nic: NicRecord = { ...primary, ipv4, subnetId: subnet.subnetId, vpcId: subnet.vpcId, network: subnet.network };
  // Secondary addresses belong to the old subnet: a move is refused while there are any (moveProblem).
  if (moved) delete nic.secondaryIpv4s;
  return withPrimary(record, nic);
}

/** `record` with `nic` as its primary NIC and a new configuration generation (the guest has a change to apply). */
export function withPrimary(record: InstanceRecord, nic: NicRecord): InstanceRecord {
  return { ...record, nics: [nic, ...record.nics.slice(1)], configGeneration: (record.configGeneration ?? 1) + 1 };
}

/** Why `record` cannot move to `subnet` (null when it can): the API's rule, no ENIs on a subnet change. */
export function moveProblem(record: InstanceRecord, subnet: Subnet): string | null {
  const primary = record.nics[0];
  if (!primary || primary.subnetId === subnet.subnetId) return null;
  if (record.nics.length > 1) {
    return `${record.instanceId} has ${record.nics.length - 1} elastic network interface(s) attached besides its primary NIC; detach them before moving it to ${subnet.subnetId}`;
  }
  if (primary.secondaryIpv4s?.length) {
    return `${record.instanceId}'s primary NIC has secondary addresses in ${primary.subnetId} (${primary.secondaryIpv4s.join(", ")}); unassign them before moving it to ${subnet.subnetId}`;
  }
  return null;
}

export class VpcAttributeOperation {
  /** Addresses held by changes under way, by instance: the new one and the old one, each with its subnet. */
  private readonly held = new Map<string, Array<{ subnetId: string; ip: string }>>();

  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      journal: Journal;
      hypervisor: Pick<Hypervisor, "defineDomain">;
      specs: Pick<DomainSpecs, "of">;
      power: PowerControl;
      drives: ConfigDrives;
      subnets: readonly Subnet[];
      /** The subnet's address books (the ENI service's: every NIC and unattached ENI); absent: the records' NICs. */
      addressesInUse?: (subnetId: string) => Set<string>;
      /** The firewall synced (anti-spoofing allows the new address only) and NIC listeners told (nicEvents). */
      nicsChanged?: (record: InstanceRecord) => Promise<void>;
      checkpoint: Checkpoint;
    },
  ) {}

  /** Addresses of `subnetId` that changes under way hold (the address books count them as used). */
  reserved(subnetId: string): string[] {
    const out: string[] = [];
    for (const list of this.held.values()) for (const h of list) if (h.subnetId === subnetId) out.push(h.ip);
    return out;
  }

  private used(subnetId: string): Set<string> {
    const used = this.o.addressesInUse?.(subnetId) ?? this.fromRecords(subnetId);
    for (const ip of this.reserved(subnetId)) used.add(ip);
    return used;
  }

  private fromRecords(subnetId: string): Set<string> {
    const used = new Set<string>();
    for (const e of this.o.registry.all()) {
      if (e.launchFailed) continue;
      for (const n of e.record.nics) {
        if (n.subnetId !== subnetId) continue;
        if (n.ipv4) used.add(n.ipv4);
        for (const ip of n.secondaryIpv4s ?? []) used.add(ip);
      }
    }
    return used;
  }

  /**
   * ModifyInstancesVpcAttribute. Every instance is checked and its new address chosen in one
   * synchronous step (nothing changes when one is refused); answers once admitted, the work
   * goes on in the background and shows in each instance's state and LatestOperation.
   */
  async modify(req: VpcAttributeRequest, ctx: RequestContext): Promise<void> {
    const ids = req.instanceIds;
    if (req.privateIpAddresses && req.privateIpAddresses.length !== ids.length) {
      throw new DomainError(
        "BadValue",
        `\`VirtualPrivateCloud.PrivateIpAddresses\` has ${req.privateIpAddresses.length} address(es) for ${ids.length} instance(s); give one per instance, in the order of InstanceIds`,
      );
    }
    if (new Set(ids).size !== ids.length) throw new DomainError("BadValue", "`InstanceIds` names an instance twice");
    const entries = this.o.ops.validate(ids, VPC_ATTRIBUTE_ACTION);
    const subnet = resolveSubnet(this.o.subnets, { vpcId: req.vpcId, subnetId: req.subnetId });
    const used = this.used(subnet.subnetId);
    const plans = entries.map((entry, i) => {
      const rec = entry.record;
      if (entry.transition) throw new DomainError("InstanceNotAtRest", `${rec.instanceId} has ${entry.transition.action} under way; try again once it has ended`);
      const primary = rec.nics[0];
      if (!primary?.ipv4 || !primary.subnetId) throw new DomainError("Unsupported", `${rec.instanceId} has no primary address in a subnet of this host to change`);
      const problem = moveProblem(rec, subnet);
      if (problem) throw new DomainError("EniBlocksSubnetChange", problem);
      const requested = req.privateIpAddresses?.[i];
      if (requested !== undefined && requested === primary.ipv4 && primary.subnetId === subnet.subnetId) {
        throw new DomainError("BadValue", `\`VirtualPrivateCloud.PrivateIpAddresses\`: ${requested} is ${rec.instanceId}'s primary address already`);
      }
      const ip = allocateAddress(subnet, used, requested);
      used.add(ip);
      const before: PrimaryNicBefore = { ipv4: primary.ipv4, subnetId: primary.subnetId, network: primary.network, ...(primary.vpcId ? { vpcId: primary.vpcId } : {}) };
      return { entry, ip, before, wasRunning: this.o.power.isOn(rec.instanceId) };
    });
    // Admission: both addresses of each are held from here (the same step as the checks above).
    const started: Array<{ entry: InstanceEntry; t: Transition; record: InstanceRecord; before: PrimaryNicBefore; wasRunning: boolean }> = [];
    for (const p of plans) {
      const id = p.entry.record.instanceId;
      this.held.set(id, [
        { subnetId: subnet.subnetId, ip: p.ip },
        { subnetId: p.before.subnetId, ip: p.before.ipv4 },
      ]);
      const t = this.o.ops.begin(p.entry, VPC_ATTRIBUTE_ACTION, p.wasRunning ? "STOPPING" : "UPDATING", ctx);
      started.push({ entry: p.entry, t, record: readdressed(p.entry.record, subnet, p.ip), before: p.before, wasRunning: p.wasRunning });
    }
    for (const s of started) {
      const id = s.entry.record.instanceId;
      try {
        await this.o.journal.write({ kind: "readdress", instanceId: id, record: s.record, from: s.before, wasRunning: s.wasRunning, requestId: ctx.requestId, startedAt: isoSeconds(new Date()) });
      } catch (error) {
        this.held.delete(id);
        await this.o.ops.finish(s.entry, VPC_ATTRIBUTE_ACTION, ctx, error);
        continue;
      }
      this.o.checkpoint("vpc-attribute:journaled");
      this.o.ops.background(id, s.t, () =>
        this.o.ops.settle(s.entry, s.t, VPC_ATTRIBUTE_ACTION, ctx, async () => {
          try {
            await this.apply(s.entry, s.record, s.wasRunning, req.forceStop, s.t);
          } finally {
            this.held.delete(id);
            await this.o.journal.remove({ kind: "readdress", instanceId: id });
          }
        }),
      );
    }
  }

  /** Defines the domain with `record` (libvirt takes the definition and the record in one step). */
  private async define(entry: InstanceEntry, record: InstanceRecord): Promise<void> {
    await this.o.hypervisor.defineDomain(this.o.specs.of(record));
    entry.record = record;
    // Indexes over the instances' NICs (the metadata endpoint's callers by address) are built anew.
    this.o.registry.membership += 1;
    this.o.registry.touched(record.instanceId, `${VPC_ATTRIBUTE_ACTION}: ${record.nics[0]?.ipv4}`);
  }

  /** The drive rebuilt from the record, the firewall and the NIC listeners brought to it. */
  private async follow(record: InstanceRecord): Promise<void> {
    await this.o.drives.buildDrive(record);
    await this.o.nicsChanged?.(record);
  }

  private async apply(entry: InstanceEntry, record: InstanceRecord, wasRunning: boolean, forceStop: boolean, t: Transition): Promise<void> {
    const id = record.instanceId;
    if (wasRunning && this.o.power.isOn(id)) {
      if (forceStop) await this.o.power.stopAnyway(id, t.abort.signal);
      else if (!(await this.o.power.softStop(id, t.abort.signal))) {
        throw new DomainError("GuestDidNotComply", `${id} did not shut down within the soft-stop timeout; its address is unchanged (set ForceStop to stop it hard)`);
      }
      this.o.checkpoint("vpc-attribute:stopped");
    }
    // The record as it is now (a rename meanwhile stays), with the new primary NIC.
    const oldNic = entry.record.nics[0]!;
    await this.define(entry, withPrimary(entry.record, record.nics[0]!));
    this.o.checkpoint("vpc-attribute:defined");
    try {
      await this.follow(entry.record);
      this.o.checkpoint("vpc-attribute:drive");
      if (!wasRunning) return;
      t.state = "STARTING";
      await this.o.power.powerOn(id);
      this.o.checkpoint("vpc-attribute:started");
    } catch (error) {
      // Back to the old address (still held), started again as it was.
      await this.define(entry, withPrimary(entry.record, oldNic));
      await this.follow(entry.record);
      if (wasRunning) await this.o.power.powerOn(id).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Recovery of a change a restart interrupted: finished when libvirt has the new record
   * (its drive and firewall brought to it, started again if it ran), FAILED on the old
   * address otherwise (drive rebuilt from the record libvirt has, started again if it ran).
   */
  async resume(entry: InstanceEntry | undefined, j: { instanceId: string; record: InstanceRecord; from: PrimaryNicBefore; wasRunning: boolean; requestId: string }): Promise<void> {
    const ctx = { requestId: j.requestId };
    if (!entry || entry.launchFailed) {
      await this.o.journal.remove({ kind: "readdress", instanceId: j.instanceId });
      return;
    }
    const id = entry.record.instanceId;
    const want = j.record.nics[0]!;
    const now = entry.record.nics[0];
    const definedNew = now?.ipv4 === want.ipv4 && now?.subnetId === want.subnetId;
    this.held.set(id, [
      { subnetId: want.subnetId!, ip: want.ipv4! },
      { subnetId: j.from.subnetId, ip: j.from.ipv4 },
    ]);
    const t = this.o.ops.begin(entry, VPC_ATTRIBUTE_ACTION, j.wasRunning && !this.o.power.isOn(id) ? "STARTING" : "UPDATING", ctx);
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(entry, t, VPC_ATTRIBUTE_ACTION, ctx, async () => {
        try {
          await this.follow(entry.record);
          if (j.wasRunning && !this.o.power.isOn(id)) await this.o.power.powerOn(id);
          if (!definedNew) throw new DomainError("HostFailure", `the agent restarted before the new address was defined; ${id} keeps ${j.from.ipv4}`);
        } finally {
          this.held.delete(id);
          await this.o.journal.remove({ kind: "readdress", instanceId: id });
        }
      }),
    );
  }
}
