/**
 * MigrateInstances on the source agent (this agent's extension, README "Migration"): for each
 * instance, under its operation lock, the destination reserves the room, prepares the disks,
 * drive, firewall and definition, the guest's state moves (cold: stop, then qemu-img convert
 * into the destination's NBD exports; live: libvirt's peer-to-peer migration with QEMU's storage
 * migration, driven by the convergence schedule), the destination commits, and only then do the
 * source's definition and files go. The journal records each step before it acts; a cancel or a
 * failure before the move completed aborts the destination and leaves the instance here.
 */
import { randomUUID } from "node:crypto";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { DomainNotFoundError, type Hypervisor } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import { DomainError } from "../core/errors.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { DiskStore } from "../disks/store.js";
import type { Checkpoint } from "../instances/provision.js";
import type { InstanceEntry, InstanceRegistry } from "../instances/registry.js";
import type { DataPaths } from "../paths.js";
import type { Storage } from "../storage/storage.js";
import { copyToNbd, LibvirtMigration, type JobFigures } from "./libvirt-job.js";
import type { MigrationEntry, MigrationJournal, MigrationPhase } from "./journal.js";
import { PeerApiError, peerClient, type MigrationPeer, type PeerCall } from "./peer-client.js";
import { ConvergenceMonitor, DEFAULT_SCHEDULE, type ConvergenceAction, type ConvergenceSchedule } from "./schedule.js";

export interface MigrateRequest {
  instanceIds: string[];
  destinationHostId: string;
  /** The destination's API; absent: the peer's configured endpoint. */
  destinationEndpoint?: string;
  live: boolean;
  stopType: "SOFT" | "HARD" | "SOFT_FIRST";
  maxDowntimeMs: number;
  bandwidthMiBs?: number;
  deadlineS: number;
  allowPostCopy: boolean;
  dryRun: boolean;
}

export interface SourceDeps {
  hostId: string;
  peers: readonly MigrationPeer[];
  ops: Operations;
  registry: InstanceRegistry;
  journal: MigrationJournal;
  hypervisor: Pick<Hypervisor, "getDomain" | "domainState" | "shutdown" | "destroy" | "undefine" | "start">;
  imageTool: Pick<ImageTool, "info">;
  storage: Pick<Storage, "destroyFile">;
  disks: DiskStore;
  paths: DataPaths;
  runner: CommandRunner;
  libvirtUri: string;
  firewallSync: () => Promise<void>;
  /** This host's default security group (the destination maps it to its own). */
  defaultGroupId: () => string;
  nicChanged: (instanceId: string) => Promise<void>;
  schedule?: ConvergenceSchedule;
  /** How often the live job is looked at (ms). */
  pollMs?: number;
  softStopTimeoutMs: number;
  checkpoint: Checkpoint;
  logger: Logger;
  /** A peer client (tests inject one); default: signed HTTPS. */
  clientFor?: (peer: MigrationPeer, endpoint: string) => PeerCall;
}

/** The internal action a source calls on the destination. */
export const PEER_ACTION = "MigrationPeerStep";

export class MigrationSource {
  readonly libvirt: LibvirtMigration;
  /** A failed move whose destination could not be told to abort (set by MigrationService: it retries). */
  unsettled?: (entry: MigrationEntry) => void;
  constructor(private readonly o: SourceDeps) {
    this.libvirt = new LibvirtMigration({ runner: o.runner, uri: o.libvirtUri });
  }

  peer(hostId: string): MigrationPeer {
    const peer = this.o.peers.find((p) => p.hostId === hostId);
    if (!peer) throw new DomainError("HostNotFound", `DestinationHostId ${hostId} is not among this host's migration_peers`);
    return peer;
  }

  private call(peer: MigrationPeer, endpoint?: string): PeerCall {
    return (this.o.clientFor ?? peerClient)(peer, endpoint ?? peer.endpoint);
  }

  /** Validates, then starts one background move per instance; answers at once. */
  migrate(req: MigrateRequest, ctx: RequestContext): void {
    const o = this.o;
    if (req.destinationHostId === o.hostId) throw new DomainError("BadValue", "DestinationHostId is this host");
    const peer = this.peer(req.destinationHostId);
    const entries = o.ops.validate(req.instanceIds, "MigrateInstances");
    for (const e of entries) {
      if (req.live && e.power !== "running") throw new DomainError("InstanceState", `instance ${e.record.instanceId} is not running: a live migration needs it running (Live false moves it cold)`, { state: o.registry.stateOf(e) });
      if (e.record.rescue) throw new DomainError("Unsupported", `instance ${e.record.instanceId} is in rescue mode`);
    }
    if (req.dryRun) throw new DomainError("DryRun", "DryRun: every check passed");
    for (const entry of entries) {
      o.ops.start(entry, "MigrateInstances", "MIGRATING", ctx, (t) => this.move(entry, peer, req, ctx, t.abort.signal));
    }
  }

  /** Cancels moves under way: each aborts at its next step (a live job at once); past the point of no return it finishes. */
  cancel(instanceIds: readonly string[]): void {
    for (const id of instanceIds) {
      const e = this.o.registry.get(id);
      if (!e) throw new DomainError("InstanceNotFound", `instance ${id} does not exist on this host`);
      if (e.transition?.action !== "MigrateInstances" || !e.migration) throw new DomainError("InstanceState", `instance ${id} is not migrating from this host`, { state: this.o.registry.stateOf(e) });
    }
    for (const id of instanceIds) {
      const e = this.o.registry.get(id)!;
      if (e.migration && e.migration.Phase !== "COMMITTING" && e.migration.Phase !== "CLEANING_UP") {
        e.migration = { ...e.migration, CancelRequested: true };
        e.transition?.abort.abort(new DomainError("Unsupported", "the migration was cancelled (CancelMigrateInstances)"));
      }
    }
  }

  private progress(entry: InstanceEntry, patch: Record<string, unknown>): void {
    entry.migration = { ...(entry.migration ?? {}), ...patch };
    this.o.registry.touched(entry.record.instanceId, `migration ${String(entry.migration.Phase ?? "")}`);
  }

  private async move(entry: InstanceEntry, peer: MigrationPeer, req: MigrateRequest, ctx: RequestContext, signal: AbortSignal): Promise<void> {
    const o = this.o;
    const id = entry.record.instanceId;
    const log = o.logger.child({ instanceId: id, requestId: ctx.requestId, destination: peer.hostId });
    const call = this.call(peer, req.destinationEndpoint);
    const migrationId = randomUUID();
    const wasRunning = entry.power === "running" || entry.power === "paused";
    const dataDisks = o.disks.attachedTo(id);
    const started = Date.now();
    this.progress(entry, {
      MigrationId: migrationId,
      DestinationHostId: peer.hostId,
      Live: req.live,
      Phase: "RESERVING",
      StartedTime: new Date(started).toISOString(),
      MaxDowntimeMs: req.maxDowntimeMs,
      AllowPostCopy: req.allowPostCopy,
      Steps: [],
    });
    const journalEntry: MigrationEntry = {
      version: 1,
      role: "source",
      migrationId,
      instanceId: id,
      peerHostId: peer.hostId,
      ...(req.destinationEndpoint ? { peerEndpoint: req.destinationEndpoint } : {}),
      live: req.live,
      wasRunning,
      phase: "reserved",
      record: entry.record,
      dataDisks,
      requestId: ctx.requestId,
      startedAt: new Date(started).toISOString(),
    };
    const phase = async (p: MigrationPhase) => {
      journalEntry.phase = p;
      await o.journal.write(journalEntry);
    };
    const step = (Step: string, body: Record<string, unknown> = {}, timeoutMs?: number) =>
      call(PEER_ACTION, { Step, MigrationId: migrationId, InstanceId: id, SourceHostId: o.hostId, ...body }, timeoutMs ? { timeoutMs } : {});
    let reserved = false;
    let stopped = false;
    try {
      // Exact virtual sizes: the destination's disks must match for QEMU's mirror.
      const diskBytes: Record<string, number> = { vda: (await o.imageTool.info(entry.record.systemDisk.path)).virtualSizeBytes };
      for (const d of dataDisks) diskBytes[d.target!] = (await o.imageTool.info(d.path)).virtualSizeBytes;
      await phase("reserved");
      signal.throwIfAborted();
      await step("reserve", { Live: req.live, WasRunning: wasRunning, Instance: entry.record, DataDisks: dataDisks, DiskBytes: diskBytes, SourceDefaultGroupId: o.defaultGroupId(), RequestId: ctx.requestId }).catch((e: unknown) => {
        throw asDomain(e, peer.hostId);
      });
      reserved = true;
      o.checkpoint("migrate:reserved");
      this.progress(entry, { Phase: "PREPARING" });
      signal.throwIfAborted();
      const prepared = await step("prepare", {}, 300_000).catch((e: unknown) => {
        throw asDomain(e, peer.hostId);
      });
      await phase("prepared");
      o.checkpoint("migrate:prepared");
      signal.throwIfAborted();
      if (req.live) {
        await phase("transferring");
        await this.liveTransfer(entry, peer, req, prepared, signal, log);
      } else {
        if (wasRunning) {
          this.progress(entry, { Phase: "STOPPING" });
          await this.stop(id, req.stopType, signal);
          stopped = true;
        }
        await phase("transferring");
        o.checkpoint("migrate:stopped");
        this.progress(entry, { Phase: "COPYING_DISKS" });
        const nbd = (prepared.Nbd as Array<{ Target: string; Port: number; Name: string }> | undefined) ?? [];
        const pathOf = (target: string) => (target === "vda" ? entry.record.systemDisk.path : dataDisks.find((d) => d.target === target)?.path);
        for (const [i, e] of nbd.entries()) {
          const source = pathOf(e.Target);
          if (!source) throw new DomainError("HostFailure", `the destination exported an unknown disk ${e.Target}`);
          this.progress(entry, { DisksCopied: i, DisksTotal: nbd.length, CopyingDisk: e.Target });
          await copyToNbd(o.runner, { source, address: peer.migrationAddress, port: e.Port, name: e.Name, signal, timeoutMs: Math.max(60_000, req.deadlineS * 1000) });
          o.checkpoint("migrate:disk-copied");
        }
        this.progress(entry, { DisksCopied: nbd.length, DisksTotal: nbd.length });
      }
      signal.throwIfAborted();
    } catch (error) {
      log.warn({ err: error, migrationId }, "migration failed before the move completed; the instance stays here");
      this.progress(entry, { Phase: "ABORTING" });
      // Also when reserve itself failed: its answer may have been lost after the room was taken.
      const destinationClean = await step("abort", {}, 120_000).then(
        () => true,
        (e: unknown) => {
          log.error({ err: e, reserved }, "migration: the destination could not abort now (unreachable?); the entry stays in the journal and the abort is retried until it answers");
          return false;
        },
      );
      if (stopped && wasRunning) await o.hypervisor.start(id).catch((e: unknown) => log.error({ err: e }, "migration: could not start the instance again after the failed move"));
      if (stopped) o.registry.setPower(id, (await o.hypervisor.domainState(id).catch(() => null)) ?? "unknown");
      if (destinationClean) await o.journal.remove(id, "source");
      // The destination may still hold the room, disks and drive (a cut link): settled later (MigrationService).
      // (wasRunning false: the instance was started again above; the retry must not start it once more.)
      else this.unsettled?.({ ...journalEntry, wasRunning: false });
      delete entry.migration;
      throw error;
    }
    // The point of no return: the guest's state is on the destination.
    await phase("transferred");
    o.checkpoint("migrate:transferred");
    if (req.live) await this.undefineLocal(id);
    this.progress(entry, { Phase: "COMMITTING" });
    await this.commit(step, log);
    await phase("committed");
    o.checkpoint("migrate:committed");
    this.progress(entry, { Phase: "CLEANING_UP" });
    await this.removeLocal(journalEntry);
    log.info({ migrationId, ms: Date.now() - started, live: req.live }, "migration done: the instance runs on the destination");
  }

  /** Commits on the destination; retried (it is idempotent) until it answers, for up to 5 minutes. */
  private async commit(step: (s: string, b?: Record<string, unknown>, t?: number) => Promise<Record<string, unknown>>, log: Logger): Promise<void> {
    const deadline = Date.now() + 300_000;
    for (let attempt = 1; ; attempt++) {
      try {
        await step("commit", {}, 120_000);
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        if (attempt === 1) log.warn({ err: error }, "migration: commit not confirmed yet; retrying");
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  private async liveTransfer(entry: InstanceEntry, peer: MigrationPeer, req: MigrateRequest, prepared: Record<string, unknown>, signal: AbortSignal, log: Logger): Promise<void> {
    const o = this.o;
    const id = entry.record.instanceId;
    const destXml = String(prepared.DomainXml ?? "");
    const destDisks = (prepared.Disks ?? {}) as Record<string, string>;
    const destDir = String(prepared.InstanceDir ?? "");
    if (!destXml || !destDir || !destDisks.vda) throw new DomainError("HostFailure", "the destination sent no definition");
    // libvirt checks the destination's definition against the running one (ABI): send the running
    // one as libvirt would (--migratable), with the destination's paths and metadata.
    const paths: Array<[string, string]> = [[entry.record.systemDisk.path, destDisks.vda]];
    for (const d of o.disks.attachedTo(id)) {
      const to = destDisks[d.target!];
      if (!to) throw new DomainError("HostFailure", `the destination made no disk for ${d.target}`);
      paths.push([d.path, to]);
    }
    paths.push([o.paths.instanceDir(id), destDir]);
    // The VNC socket lives outside the instance's folder (<data_dir>/vnc): the destination's own.
    const destVnc = /<graphics\b[^>]*\btype=['"]vnc['"][\s\S]*?\bsocket=['"]([^'"]+)['"]/.exec(destXml)?.[1];
    if (destVnc) paths.push([o.paths.vncSocket(id), destVnc]);
    const xml = retarget(await this.libvirt.migratableXml(id), paths, destXml);
    const xmlFile = join(o.paths.tmpDir, `migrate-${id}-${randomUUID()}.xml`);
    await writeFile(xmlFile, xml, { mode: 0o600 });
    const monitor = new ConvergenceMonitor(o.schedule ?? DEFAULT_SCHEDULE, { maxDowntimeMs: req.maxDowntimeMs, allowPostCopy: req.allowPostCopy });
    const steps: string[] = [];
    const note = (s: string) => {
      steps.push(s);
      this.progress(entry, { Steps: [...steps] });
      log.info({ step: s }, "migration: convergence step");
    };
    this.progress(entry, { Phase: "TRANSFERRING", Downtime: monitor.initialDowntimeMs() });
    const disks = ["vda", ...o.disks.attachedTo(id).map((d) => d.target!)];
    let finished = false;
    let failure: unknown;
    const job = this.libvirt
      .migrate(
        {
          domain: id,
          destUri: peer.libvirtUri ?? `qemu+tcp://${peer.migrationAddress}/system`,
          address: peer.migrationAddress,
          xmlFile,
          disks,
          ...(req.bandwidthMiBs ? { bandwidthMiBs: req.bandwidthMiBs } : {}),
          postcopy: req.allowPostCopy,
          autoConverge: true,
        },
        req.deadlineS * 1000 + 120_000,
      )
      .then(
        () => (finished = true),
        (e: unknown) => {
          finished = true;
          failure = e;
        },
      );
    const deadline = Date.now() + req.deadlineS * 1000;
    let downtimeSet = false;
    let postcopy = false;
    let aborted: string | undefined;
    try {
      while (!finished) {
        await Promise.race([job, new Promise((r) => setTimeout(r, o.pollMs ?? 1000))]);
        if (finished) break;
        if (signal.aborted && !aborted) {
          aborted = "cancelled";
          note("abort: cancelled");
          await this.libvirt.abort(id).catch((e: unknown) => log.warn({ err: e }, "domjobabort failed"));
          continue;
        }
        const f = await this.libvirt.jobFigures(id).catch(() => undefined);
        if (!f || !f.active) continue;
        if (!downtimeSet) {
          downtimeSet = true;
          await this.libvirt.setMaxDowntime(id, monitor.initialDowntimeMs()).catch((e: unknown) => log.warn({ err: e }, "could not set the initial max downtime"));
        }
        this.progress(entry, figuresView(f));
        let action: ConvergenceAction | undefined;
        if (f.iteration !== undefined && f.memoryRemainingBytes !== undefined && !postcopy) {
          const d = monitor.observe({ iteration: f.iteration, memoryRemainingBytes: f.memoryRemainingBytes });
          this.progress(entry, { StalledIterations: d.stalled });
          action = d.step?.action;
        }
        if (!action && !postcopy && Date.now() > deadline) {
          action = monitor.atDeadline();
          note(`deadline of ${req.deadlineS} s reached`);
        }
        if (!action || aborted) continue;
        if (action.kind === "downtime") {
          note(`downtime ${action.ms} ms`);
          this.progress(entry, { Downtime: action.ms });
          await this.libvirt.setMaxDowntime(id, action.ms).catch((e: unknown) => log.warn({ err: e }, "could not raise the max downtime"));
        } else if (action.kind === "postcopy") {
          note("post-copy");
          postcopy = true;
          this.progress(entry, { PostCopy: true });
          await this.libvirt.postcopy(id).catch((e: unknown) => log.warn({ err: e }, "could not switch to post-copy"));
        } else {
          aborted = "did not converge";
          note("abort: did not converge");
          await this.libvirt.abort(id).catch((e: unknown) => log.warn({ err: e }, "domjobabort failed"));
        }
      }
      await job;
    } finally {
      await rm(xmlFile, { force: true });
    }
    if (failure || aborted) {
      // Post-copy that failed leaves the guest split between hosts: libvirt pauses both. Not rolled back here.
      if (aborted === "cancelled") signal.throwIfAborted();
      if (aborted) throw new DomainError("GuestDidNotComply", `live migration aborted: ${aborted} (steps: ${steps.join(", ") || "none"})`, {}, { cause: failure });
      throw new DomainError("HostFailure", `live migration failed: ${(failure as Error).message}`, {}, { cause: failure });
    }
    const done = await this.libvirt.jobFigures(id, true).catch(() => undefined);
    this.progress(entry, { Phase: "TRANSFERRED", ...(done ? { DowntimeMs: done.downtimeMs ?? null, TotalTimeMs: done.timeElapsedMs ?? null } : {}) });
  }

  private async stop(id: string, stopType: MigrateRequest["stopType"], signal: AbortSignal): Promise<void> {
    const o = this.o;
    const off = async (timeoutMs: number) => {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const s = await o.hypervisor.domainState(id);
        if (s === "shut off" || s === "crashed" || s === null) return true;
        signal.throwIfAborted();
        await new Promise((r) => setTimeout(r, 300));
      }
      return false;
    };
    if (stopType !== "HARD") {
      await o.hypervisor.shutdown(id);
      if (await off(o.softStopTimeoutMs)) return o.registry.setPower(id, "shut off");
      if (stopType === "SOFT") throw new DomainError("GuestDidNotComply", `instance ${id} did not shut down within ${o.softStopTimeoutMs / 1000} s (StopType SOFT)`);
    }
    await o.hypervisor.destroy(id);
    await off(30_000);
    o.registry.setPower(id, "shut off");
  }

  private async undefineLocal(id: string): Promise<void> {
    try {
      await this.o.hypervisor.destroy(id);
    } catch (error) {
      if (!(error instanceof DomainNotFoundError)) throw error;
    }
    await this.o.hypervisor.undefine(id);
  }

  /** After the commit: the source's definition, disks, drive and records go. */
  async removeLocal(entry: MigrationEntry): Promise<void> {
    const o = this.o;
    const id = entry.instanceId;
    await this.undefineLocal(id);
    await o.storage.destroyFile(entry.record.systemDisk.path);
    for (const d of entry.dataDisks) {
      await o.storage.destroyFile(d.path);
      await o.disks.remove(d.diskId);
    }
    await rm(o.paths.instanceDir(id), { recursive: true, force: true });
    // Nothing of it is left on disk: the entry goes before the instance leaves the registry (memory only).
    await o.journal.remove(id, "source");
    // The operation ends here (ops.settle sees no transition of its own: nothing is saved into a definition that is gone).
    o.registry.setTransition(id, undefined);
    o.registry.remove(id);
    await o.firewallSync().catch((e: unknown) => o.logger.warn({ err: e, instanceId: id }, "migration: firewall sync after the move failed"));
    await o.nicChanged(id).catch(() => undefined);
  }

  /** A step client for a journal entry (recovery). */
  stepsFor(entry: MigrationEntry): (s: string, b?: Record<string, unknown>, t?: number) => Promise<Record<string, unknown>> {
    const peer = this.peer(entry.peerHostId);
    const call = this.call(peer, entry.peerEndpoint);
    return (Step, body = {}, timeoutMs) => call(PEER_ACTION, { Step, MigrationId: entry.migrationId, InstanceId: entry.instanceId, SourceHostId: this.o.hostId, ...body }, timeoutMs ? { timeoutMs } : {});
  }
}

/** The running definition with the destination's file paths and its <metadata> (the destination's record). */
export function retarget(xml: string, paths: ReadonlyArray<[string, string]>, destXml: string): string {
  let out = xml;
  // The destination's disks are standalone (flattened): no backing chain of the source's.
  for (let before = ""; before !== out; ) {
    before = out;
    out = out.replace(/<backingStore\/>|<backingStore\b[^>]*\/>|<backingStore\b[^>]*>(?:(?!<backingStore)[\s\S])*?<\/backingStore>/g, "");
  }
  for (const [from, to] of paths) out = out.split(`'${from}`).join(`'${to}`).split(`"${from}`).join(`"${to}`);
  const meta = /<metadata>[\s\S]*?<\/metadata>/.exec(destXml)?.[0];
  if (meta) out = out.replace(/<metadata>[\s\S]*?<\/metadata>/, () => meta);
  return out;
}

function figuresView(f: JobFigures): Record<string, unknown> {
  return {
    Iteration: f.iteration ?? null,
    MemoryRemainingBytes: f.memoryRemainingBytes ?? null,
    DiskRemainingBytes: f.diskRemainingBytes ?? null,
    DataRemainingBytes: f.dataRemainingBytes ?? null,
    DirtyRateBytesPerSecond: f.dirtyRateBps ?? null,
    ExpectedDowntimeMs: f.downtimeMs ?? null,
    AutoConvergeThrottle: f.autoConvergeThrottle ?? null,
    ElapsedMs: f.timeElapsedMs ?? null,
  };
}

/** A peer's refusal in the domain's words (its NoRoom stays NoRoom). */
function asDomain(error: unknown, hostId: string): unknown {
  if (!(error instanceof PeerApiError)) return error;
  if (error.code.startsWith("ResourceInsufficient")) return new DomainError("NoRoom", error.message, {}, { cause: error });
  if (error.code === "VpcIpIsUsed") return new DomainError("AddressInUse", error.message, {}, { cause: error });
  if (error.code.startsWith("InvalidParameterValue.Subnet")) return new DomainError("SubnetNotFound", error.message, {}, { cause: error });
  return new DomainError("HostFailure", `destination ${hostId} refused: ${error.message}`, {}, { cause: error });
}
