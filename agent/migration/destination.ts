/**
 * The destination's side of a migration: the internal steps a source agent calls through the
 * signed API (MigrationPeerStep). reserve holds the room before anything moves (a registry
 * entry in MIGRATING: capacity counts it at once); prepare makes the disks at their exact
 * sizes, the config drive, the firewall for the NICs, and the definition (owned by the source's
 * host ID until commit, so no recovery of this agent adopts it early); commit takes the
 * instance over; abort removes everything the steps made. Every step is idempotent.
 */
import { mkdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import type { Logger } from "pino";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { buildDomainXml } from "../../drivers/libvirt/domain-xml.js";
import { DomainNotFoundError, type Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { admissionShortfall, type HostResource } from "../capacity.js";
import { DomainError } from "../core/errors.js";
import type { DiskRecord, DiskStore } from "../disks/store.js";
import type { ConfigDrives, Checkpoint } from "../instances/provision.js";
import type { DomainSpecs } from "../instances/provision.js";
import type { InstanceRegistry } from "../instances/registry.js";
import type { InstanceRecord } from "../model.js";
import type { Subnet } from "../network/subnets.js";
import type { DataPaths } from "../paths.js";
import type { Storage } from "../storage/storage.js";
import type { PoolSet } from "../storage/pools.js";
import { exportOverNbd, type NbdExport } from "./libvirt-job.js";
import type { MigrationEntry, MigrationJournal } from "./journal.js";

export interface DestinationDeps {
  hostId: string;
  registry: InstanceRegistry;
  journal: MigrationJournal;
  hypervisor: Pick<Hypervisor, "getDomain" | "defineDomain" | "start" | "destroy" | "undefine" | "setMetadata" | "domainState">;
  specs: Pick<DomainSpecs, "of">;
  drives: Pick<ConfigDrives, "buildDrive">;
  storage: Pick<Storage, "place" | "destroyFile" | "instanceOverheadGiB">;
  pools: Pick<PoolSet, "diskPath">;
  imageTool: Pick<ImageTool, "create">;
  disks: DiskStore;
  paths: DataPaths;
  subnets: readonly Subnet[];
  hostResource: () => HostResource;
  /** This host's default security group (the source's default maps to it). */
  defaultGroupId: () => string;
  /** True when this host has the security group (sg-…). */
  groupExists: (groupId: string) => boolean;
  /** Brings the firewall in line with the registry (the new instance's taps included). */
  firewallSync: () => Promise<void>;
  /** The instance's NICs changed (DHCP, caps follow: agent/network/nic-events.ts). */
  nicChanged: (instanceId: string) => Promise<void>;
  runner: CommandRunner;
  /** This host's link address (config migration_address): where the cold path's NBD exports listen. */
  migrationAddress?: string;
  checkpoint: Checkpoint;
  logger: Logger;
}

export interface ReserveRequest {
  migrationId: string;
  sourceHostId: string;
  live: boolean;
  wasRunning: boolean;
  record: InstanceRecord;
  dataDisks: DiskRecord[];
  /** Each disk's exact virtual size (bytes), by target (vda, vdb, …): storage migration needs equal sizes. */
  diskBytes: Record<string, number>;
  /** The source's default security group: the instance's groups name this host's default instead. */
  sourceDefaultGroupId?: string;
  requestId: string;
}

const GiB = 1024 ** 3;

export class MigrationDestination {
  /** Open NBD exports of cold moves, by instance. */
  private readonly exports = new Map<string, NbdExport[]>();

  constructor(private readonly o: DestinationDeps) {}

  /** The room first: CPU and memory (the registry entry), the disks' pools, the address; nothing is made yet. */
  async reserve(req: ReserveRequest): Promise<void> {
    const o = this.o;
    const id = req.record.instanceId;
    const existing = await o.journal.read(id, "destination");
    if (existing) {
      if (existing.migrationId === req.migrationId) return; // the same step again
      throw new DomainError("Unsupported", `instance ${id} is already moving here (migration ${existing.migrationId})`);
    }
    if (o.registry.has(id)) throw new DomainError("Unsupported", `instance ${id} already exists on host ${o.hostId}`);
    // Each host has its own default group: the source's becomes this host's.
    const mapGroups = (groups: string[] | undefined) => groups?.map((g) => (g === req.sourceDefaultGroupId ? o.defaultGroupId() : g));
    req = {
      ...req,
      record: {
        ...req.record,
        ...(req.record.securityGroupIds ? { securityGroupIds: mapGroups(req.record.securityGroupIds)! } : {}),
        nics: req.record.nics.map((n) => (n.securityGroupIds ? { ...n, securityGroupIds: mapGroups(n.securityGroupIds)! } : n)),
      },
    };
    const shortfall = admissionShortfall(o.hostResource(), { cpu: req.record.cpu, memoryGiB: req.record.memoryGiB }, 1);
    if (shortfall) throw new DomainError("NoRoom", `instance ${id} does not fit on host ${o.hostId}: ${shortfall}`);
    for (const nic of req.record.nics) {
      const subnet = o.subnets.find((s) => s.subnetId === nic.subnetId && s.network === nic.network) ?? (nic.subnetId ? undefined : o.subnets.find((s) => s.network === nic.network));
      if (!subnet) throw new DomainError("SubnetNotFound", `host ${o.hostId} has no subnet ${nic.subnetId ?? nic.network} for NIC ${nic.mac}`);
      const taken = [...o.registry.all()].some((e) => e.record.nics.some((n) => n.mac === nic.mac || (n.ipv4 !== undefined && n.ipv4 === nic.ipv4 && n.subnetId === nic.subnetId)));
      if (taken) throw new DomainError("AddressInUse", `NIC ${nic.mac} (${nic.ipv4 ?? "no address"}) is already used on host ${o.hostId}`);
      for (const g of nic.securityGroupIds ?? []) if (!o.groupExists(g)) throw new DomainError("NotFound", `security group ${g} does not exist on host ${o.hostId}`);
    }
    for (const g of req.record.securityGroupIds ?? []) if (!o.groupExists(g)) throw new DomainError("NotFound", `security group ${g} does not exist on host ${o.hostId}`);
    if (!req.record.systemDisk.diskId) throw new DomainError("Unsupported", `instance ${id} has a system disk from before storage pools; it cannot move`);
    const overhead = o.storage.instanceOverheadGiB;
    const placed = o.storage.place([
      { diskType: req.record.systemDisk.diskType, sizeGiB: req.record.systemDisk.sizeGiB + overhead },
      ...req.dataDisks.map((d) => ({ diskType: d.diskType, sizeGiB: d.sizeGiB })),
    ]);
    const record: InstanceRecord = {
      ...req.record,
      hostId: o.hostId,
      systemDisk: { ...req.record.systemDisk, pool: placed[0]!, path: o.pools.diskPath(placed[0]!, req.record.systemDisk.diskId) },
      latestOperation: { action: "MigrateInstances", state: "OPERATING", requestId: req.requestId },
    };
    // An ISO attached on the source does not move: the copy here would need its own download.
    delete record.iso;
    const dataDisks = req.dataDisks.map((d, i) => ({ ...d, pool: placed[i + 1]!, path: o.pools.diskPath(placed[i + 1]!, d.diskId), instanceId: id }));
    for (const d of dataDisks) if (o.disks.has(d.diskId)) throw new DomainError("Unsupported", `disk ${d.diskId} already exists on host ${o.hostId}`);
    const entry: MigrationEntry = {
      version: 1,
      role: "destination",
      migrationId: req.migrationId,
      instanceId: id,
      peerHostId: req.sourceHostId,
      live: req.live,
      wasRunning: req.wasRunning,
      phase: "reserved",
      record,
      dataDisks,
      diskBytes: req.diskBytes,
      requestId: req.requestId,
      startedAt: new Date().toISOString(),
    };
    await o.journal.write(entry);
    o.registry.add({
      record,
      power: "absent",
      launchFailed: false,
      transition: { state: "MIGRATING", action: "MigrateInstances", abort: new AbortController() },
      reboots: 0,
    });
    for (const d of dataDisks) o.disks.put(d);
    await Promise.all(dataDisks.map((d) => o.disks.save(d)));
    o.checkpoint("migrate:dest-reserved");
    o.logger.info({ instanceId: id, migrationId: req.migrationId, source: req.sourceHostId }, "migration: room reserved");
  }

  /**
   * Disks at their exact sizes (empty: QEMU or qemu-img fills them), the config drive, the
   * firewall and the definition. Answers the definition (live) or the NBD exports (cold).
   */
  async prepare(migrationId: string, instanceId: string): Promise<{ domainXml: string; nbd: Array<{ target: string; port: number; name: string }>; instanceDir: string; disks: Record<string, string> }> {
    const o = this.o;
    const entry = await this.entryOf(migrationId, instanceId);
    const sizes = entry.diskBytes ?? {};
    const { record } = entry;
    await mkdir(o.paths.instanceDir(instanceId), { recursive: true, mode: 0o711 });
    const disks = [{ target: "vda", path: record.systemDisk.path, sizeGiB: record.systemDisk.sizeGiB }, ...entry.dataDisks.map((d) => ({ target: d.target!, path: d.path, sizeGiB: d.sizeGiB }))];
    for (const d of disks) {
      await rm(d.path, { force: true });
      await o.imageTool.create({ target: d.path, format: "qcow2", sizeBytes: sizes[d.target] ?? d.sizeGiB * GiB });
    }
    await o.drives.buildDrive(record);
    // Filtered before the guest can send here: the firewall follows the registry, which has it.
    await o.firewallSync();
    await o.nicChanged(instanceId);
    // Owned by the source's host ID until commit: no recovery or sweep of this agent takes it.
    const pending = { ...record, hostId: entry.peerHostId };
    const spec = o.specs.of(pending);
    let nbd: Array<{ target: string; port: number; name: string }> = [];
    if (!entry.live) {
      await o.hypervisor.defineDomain(spec);
      if (!o.migrationAddress) throw new DomainError("Unsupported", `host ${o.hostId} has no migration_address for the disk copy`);
      await this.stopExports(instanceId);
      const opened: NbdExport[] = [];
      this.exports.set(instanceId, opened);
      for (const d of disks) {
        const port = await freePort(o.migrationAddress);
        const name = `${instanceId}-${d.target}`;
        opened.push(await exportOverNbd(o.runner, { path: d.path, address: o.migrationAddress, port, name }));
        nbd.push({ target: d.target, port, name });
      }
    } else {
      nbd = [];
    }
    await o.journal.write({ ...entry, phase: "prepared" });
    o.checkpoint("migrate:dest-prepared");
    return { domainXml: buildDomainXml(spec), nbd, instanceDir: o.paths.instanceDir(instanceId), disks: Object.fromEntries(disks.map((d) => [d.target, d.path])) };
  }

  /** The instance is this host's from here: its record (own host ID), its power, its operation's outcome. */
  async commit(migrationId: string, instanceId: string): Promise<{ state: string }> {
    const o = this.o;
    const entry = await o.journal.read(instanceId, "destination");
    if (!entry) {
      const done = o.registry.get(instanceId);
      if (done && !done.transition) return { state: done.power }; // committed already
      throw new DomainError("NotFound", `no migration ${migrationId} of ${instanceId} on host ${o.hostId}`);
    }
    if (entry.migrationId !== migrationId) throw new DomainError("Unsupported", `instance ${instanceId} is in migration ${entry.migrationId}, not ${migrationId}`);
    await this.stopExports(instanceId);
    const record: InstanceRecord = { ...entry.record, latestOperation: { action: "MigrateInstances", state: "SUCCESS", requestId: entry.requestId } };
    const domain = await o.hypervisor.getDomain(instanceId);
    if (!domain) throw new DomainError("HostFailure", `instance ${instanceId} has no definition on host ${o.hostId} to take over`);
    if (entry.live) {
      if (domain.state !== "running" && domain.state !== "paused") throw new DomainError("HostFailure", `instance ${instanceId} is ${domain.state} on host ${o.hostId}, not running`);
      await o.hypervisor.setMetadata(instanceId, JSON.stringify(record));
    } else {
      await o.hypervisor.defineDomain(o.specs.of(record));
    }
    await o.journal.write({ ...entry, phase: "committed", record });
    o.checkpoint("migrate:dest-committed");
    let entryNow = o.registry.get(instanceId);
    if (!entryNow) {
      o.registry.add({ record, power: domain.state, launchFailed: false, reboots: 0 });
      entryNow = o.registry.get(instanceId)!;
    }
    entryNow.record = record;
    if (!entry.live && entry.wasRunning) {
      await o.firewallSync();
      await o.hypervisor.start(instanceId);
      o.registry.setPower(instanceId, "running");
    } else {
      o.registry.setPower(instanceId, (await o.hypervisor.domainState(instanceId)) ?? "absent");
    }
    await o.journal.remove(instanceId, "destination");
    o.registry.setTransition(instanceId, undefined);
    o.registry.touched(instanceId, "MigrateInstances SUCCESS (arrived)");
    o.logger.info({ instanceId, migrationId, source: entry.peerHostId }, "migration: instance taken over");
    return { state: entryNow.power };
  }

  /** Removes whatever the steps made here; a committed instance is never touched. */
  async abort(migrationId: string, instanceId: string): Promise<void> {
    const o = this.o;
    const entry = await o.journal.read(instanceId, "destination");
    if (!entry || entry.migrationId !== migrationId) return;
    if (entry.phase === "committed") throw new DomainError("Unsupported", `instance ${instanceId} was committed on host ${o.hostId}; it is no longer the migration's to abort`);
    await this.removeLeftovers(entry);
  }

  /** The destination's view of a migration, for the source's recovery. */
  async status(migrationId: string, instanceId: string): Promise<{ phase: string; domainState: string }> {
    const o = this.o;
    const entry = await o.journal.read(instanceId, "destination");
    const state = (await o.hypervisor.domainState(instanceId).catch(() => null)) ?? "absent";
    if (entry && entry.migrationId === migrationId) return { phase: entry.phase, domainState: state };
    const e = o.registry.get(instanceId);
    if (e && !e.transition) return { phase: "owned", domainState: state };
    return { phase: "none", domainState: state };
  }

  /** Start-up: an entry left by a crash. Committed: finish; else everything the steps made goes, unless the guest runs here (the source decides). */
  async recover(entry: MigrationEntry): Promise<"finished" | "removed" | "kept"> {
    const o = this.o;
    if (entry.phase === "committed") {
      // The definition already carries this host's ID: the instance recovery adopts it.
      await o.journal.remove(entry.instanceId, "destination");
      return "finished";
    }
    const state = await o.hypervisor.domainState(entry.instanceId).catch(() => null);
    if (entry.live && (state === "running" || state === "paused")) {
      // QEMU finished the move while this agent was down: the guest lives only here now, or the
      // source still has it paused. The source's recovery asks and commits or aborts; until then
      // it stays reserved (MIGRATING).
      o.registry.add({ record: entry.record, power: state, launchFailed: false, transition: { state: "MIGRATING", action: "MigrateInstances", abort: new AbortController() }, reboots: 0 });
      for (const d of entry.dataDisks) o.disks.put(d);
      return "kept";
    }
    await this.removeLeftovers(entry);
    return "removed";
  }

  private async removeLeftovers(entry: MigrationEntry): Promise<void> {
    const o = this.o;
    const id = entry.instanceId;
    await this.stopExports(id);
    try {
      await o.hypervisor.destroy(id);
    } catch (error) {
      if (!(error instanceof DomainNotFoundError)) throw error;
    }
    await o.hypervisor.undefine(id);
    await o.storage.destroyFile(entry.record.systemDisk.path);
    for (const d of entry.dataDisks) {
      await o.storage.destroyFile(d.path);
      await o.disks.remove(d.diskId);
    }
    await rm(o.paths.instanceDir(id), { recursive: true, force: true });
    await o.journal.remove(id, "destination");
    const e = o.registry.get(id);
    if (e && e.transition?.state === "MIGRATING") o.registry.remove(id);
    await o.firewallSync().catch((err: unknown) => o.logger.warn({ err, instanceId: id }, "migration: firewall sync after abort failed"));
    await o.nicChanged(id).catch(() => undefined);
    o.logger.info({ instanceId: id, migrationId: entry.migrationId }, "migration: aborted here; everything it made is gone");
  }

  private async entryOf(migrationId: string, instanceId: string): Promise<MigrationEntry> {
    const entry = await this.o.journal.read(instanceId, "destination");
    if (!entry || entry.migrationId !== migrationId) throw new DomainError("NotFound", `no migration ${migrationId} of ${instanceId} on host ${this.o.hostId}`);
    return entry;
  }

  private async stopExports(instanceId: string): Promise<void> {
    const open = this.exports.get(instanceId) ?? [];
    this.exports.delete(instanceId);
    await Promise.all(open.map((e) => e.stop()));
  }
}

/** A free TCP port on `address` in 49216–49279 (the NBD range scripts/two-hosts.sh keeps to the link). */
async function freePort(address: string): Promise<number> {
  for (let port = 49216; port <= 49279; port++) {
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, address, () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new DomainError("NoRoom", `no free port for a disk copy on ${address} (49216-49279)`);
}
