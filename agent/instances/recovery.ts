/**
 * Start-up recovery: the registry is rebuilt from libvirt's domains (each carries its
 * record) and the launch-failed records, then every operation a crash interrupted is
 * finished or undone from its journal entry: a launch rolls forward, a terminate rolls
 * forward, a reinstall is finished when the domain already names the new disk and undone
 * otherwise. An operation that kept no journal and whose outcome never reached libvirt is
 * settled (see settleInterrupted).
 */
import { readdir, rm, mkdir } from "node:fs/promises";
import type { Logger } from "pino";
import type { DomainDetails, DomainPowerState, DomainSpec, Hypervisor } from "../../drivers/libvirt/types.js";
import type { Journal } from "../journal.js";
import { parseRecord, type InstanceRecord, type PowerView } from "../model.js";
import type { DataPaths } from "../paths.js";
import { undoQuiesce } from "../disks/copy.js";
import type { DiskStore } from "../disks/store.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { Launcher } from "./launch.js";
import { loadLaunchFailed } from "./provision.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";
import type { Reinstaller } from "./reinstall.js";
import type { Retyper } from "./reset-type.js";
import type { VpcAttributeOperation } from "./vpc-attribute.js";
import type { Terminator } from "./terminate.js";

const INSTANCE_NAME = /^ins-[a-z0-9]{8}$/;
/** Domains read from libvirt and adopted at a time (two virsh batches, see getDomains). */
const DOMAINS_AT_A_TIME = 250;

export class Recovery {
  /** Instances whose operation a crash interrupted, finished or rolled back by the last run: their power is that operation's to decide (power restore leaves them alone). */
  readonly resumedFromJournal = new Set<string>();

  constructor(
    private readonly o: {
      hypervisor: Hypervisor;
      registry: InstanceRegistry;
      journal: Journal;
      paths: DataPaths;
      disks: DiskStore;
      ops: Operations;
      launcher: Pick<Launcher, "create">;
      terminator: Pick<Terminator, "destroyInstance">;
      reinstaller: Pick<Reinstaller, "resumeReset" | "dropOrphanReset">;
      /** ResetInstancesType's recovery (agent/instances/reset-type.ts). */
      retyper: Pick<Retyper, "resume">;
      vpcAttribute: Pick<VpcAttributeOperation, "resume">;
      /** This agent's host ID: domains whose record names another host are not adopted. */
      hostId: string;
      /** Makes the domain's data disks match the disk store (an attach or detach cut short by a crash). */
      healDisks?: (instanceId: string, spec: DomainSpec, state: DomainPowerState) => Promise<void>;
      /** Sees each adopted domain's definition as read (the firewall's NIC migration picks its candidates here, without reading every domain again). */
      onAdopted?: (instanceId: string, spec: DomainSpec) => void;
      logger: Logger;
    },
  ) {}

  /** Reads libvirt and the journal, and finishes every operation a crash interrupted. */
  async run(): Promise<void> {
    const { hypervisor, registry, journal, paths, logger } = this.o;
    await mkdir(paths.instancesDir, { recursive: true, mode: 0o711 });
    await rm(paths.tmpDir, { recursive: true, force: true });
    await mkdir(paths.tmpDir, { recursive: true, mode: 0o700 });

    const listed = (await hypervisor.listDomains()).filter((d) => INSTANCE_NAME.test(d.name));
    const names = listed.map((d) => d.name);
    // The states domstats gave with the list: the reads below ask libvirt only for the XML.
    const states = new Map(listed.map((d) => [d.name, d.state]));
    // A few hundred domains at a time, the next read from libvirt while these are adopted:
    // the domain trees of 1,000 domains at once would grow the heap for good (README, bench (c)).
    const chunks: string[][] = [];
    for (let i = 0; i < names.length; i += DOMAINS_AT_A_TIME) chunks.push(names.slice(i, i + DOMAINS_AT_A_TIME));
    let next = chunks.length ? hypervisor.getDomains(chunks[0]!, states) : undefined;
    for (let c = 0; c < chunks.length; c++) {
      const domains = await next!;
      next = c + 1 < chunks.length ? hypervisor.getDomains(chunks[c + 1]!, states) : undefined;
      // Awaited on the next turn; a failure meanwhile is not an unhandled rejection.
      next?.catch(() => undefined);
      await this.adopt(chunks[c]!, domains);
    }

    for (const record of await loadLaunchFailed(paths, logger)) {
      if (!registry.has(record.instanceId)) registry.add({ ...newEntry(record, "absent"), launchFailed: true });
    }

    const { entries, setAside: bad } = await journal.readAll();
    for (const b of bad) logger.warn({ file: b.file, aside: b.aside, reason: b.reason }, "journal entry unreadable; set aside for the operator");
    for (const j of entries) {
      const ctx = { requestId: j.requestId };
      this.resumedFromJournal.add(j.instanceId);
      let entry = registry.get(j.instanceId);
      if (j.kind === "create") {
        if (entry?.launchFailed) {
          await journal.remove(j);
          continue;
        }
        if (!entry) {
          entry = newEntry(j.record, "absent");
          registry.add(entry);
        }
        // A crash between the journal and the disk records: the journal has them.
        for (const d of j.dataDisks ?? []) if (!this.o.disks.has(d.diskId)) await this.o.disks.save(d);
        logger.info({ instanceId: j.instanceId }, "finishing a launch interrupted by a restart");
        this.resume(entry, "create", ctx);
      } else if (j.kind === "readdress") {
        logger.info({ instanceId: j.instanceId }, "finishing a primary address change interrupted by a restart");
        await this.o.vpcAttribute.resume(entry, j);
      } else if (j.kind === "retype") {
        logger.info({ instanceId: j.instanceId }, "finishing a resize interrupted by a restart");
        await this.o.retyper.resume(entry, j);
      } else if (j.kind === "reset") {
        if (!entry) {
          logger.error({ instanceId: j.instanceId }, "a reinstall was interrupted but its domain is gone; removing the new disk");
          await this.o.reinstaller.dropOrphanReset(j);
          continue;
        }
        const definedOnNew = entry.record.systemDisk.path === j.record.systemDisk.path;
        logger.info({ instanceId: j.instanceId, definedOnNew }, "finishing a reinstall interrupted by a restart");
        await this.o.reinstaller.resumeReset(entry, j, definedOnNew);
      } else {
        if (!entry) {
          entry = newEntry(j.record, "absent");
          registry.add(entry);
        }
        logger.info({ instanceId: j.instanceId }, "finishing a termination interrupted by a restart");
        this.resume(entry, "terminate", ctx);
      }
    }
    // Records libvirt kept with an operation OPERATING that no journal entry resumes:
    // the restart came before the outcome reached libvirt (it is saved after the work).
    for (const entry of registry.all()) {
      if (entry.record.latestOperation?.state === "OPERATING" && !entry.transition && !entry.launchFailed) this.settleInterrupted(entry);
    }

    // Instance directories nobody owns any more (a crash between teardown steps).
    const journaled = new Set(entries.map((e) => e.instanceId));
    for (const name of await readdir(paths.instancesDir)) {
      if (registry.has(name) || journaled.has(name)) continue;
      logger.warn({ dir: paths.instanceDir(name) }, "removing an orphaned instance directory");
      await rm(paths.instanceDir(name), { recursive: true, force: true });
    }
  }

  /** Adopts the domains of `names` that carry this host's record (their details read from libvirt). */
  private async adopt(names: readonly string[], domains: ReadonlyMap<string, DomainDetails>): Promise<void> {
    const { hypervisor, registry, paths, logger } = this.o;
    for (const name of names) {
      const details = domains.get(name);
      if (!details?.spec.metadata) {
        logger.warn({ domain: name }, "domain has an instance-like name but no cdh-agent record; leaving it alone");
        continue;
      }
      let record: InstanceRecord;
      try {
        record = parseRecord(details.spec.metadata);
      } catch (error) {
        // The domain stays as it is (nothing of it is touched); the operator decides.
        logger.warn({ domain: name, reason: (error as Error).message }, "domain's cdh-agent record is unreadable; leaving the domain alone");
        continue;
      }
      if (record.hostId !== undefined && record.hostId !== this.o.hostId) {
        logger.debug({ domain: name, owner: record.hostId }, "domain belongs to another host's agent; not adopted");
        continue;
      }
      registry.add(newEntry(record, details.state));
      this.o.onAdopted?.(record.instanceId, details.spec);
      // A disk copy a crash cut short may have left the guest paused or frozen.
      await undoQuiesce({ hypervisor, logger, instanceId: record.instanceId, marker: paths.quiesceMarker(record.instanceId), power: details.state });
      await this.o.healDisks?.(record.instanceId, details.spec, details.state).catch((error: unknown) =>
        logger.error({ instanceId: record.instanceId, err: error }, "could not bring the domain's data disks in line with the disk records"),
      );
    }
  }

  /** Finishes a create or a terminate that a crash interrupted. */
  private resume(entry: InstanceEntry, kind: "create" | "terminate", ctx: RequestContext): void {
    const action = kind === "create" ? "RunInstances" : "TerminateInstances";
    const t = this.o.ops.begin(entry, action, kind === "create" ? "PENDING" : "TERMINATING", ctx);
    this.o.ops.background(entry.record.instanceId, t, () =>
      kind === "create" ? this.o.launcher.create(entry, ctx) : this.o.terminator.destroyInstance(entry.record.instanceId, ctx),
    );
  }

  /**
   * Recovery: the record says an operation is OPERATING, but no journal entry resumes
   * it: a restart cut the agent off after the work and before the outcome was saved in
   * libvirt (finish saves it in the background), or in the middle of an operation that
   * keeps no journal. A launch succeeded (its journal goes only once the instance runs);
   * for anything else the outcome is not known, and it is reported FAILED rather than
   * OPERATING for ever.
   */
  private settleInterrupted(entry: InstanceEntry): void {
    const op = entry.record.latestOperation!;
    const error = op.action === "RunInstances" ? undefined : new Error(`the agent restarted during ${op.action}; its outcome was not recorded`);
    this.o.logger.warn({ instanceId: entry.record.instanceId, action: op.action }, "an operation a restart interrupted is settled");
    void this.o.ops.finish(entry, op.action, { requestId: op.requestId }, error);
  }
}

function newEntry(record: InstanceRecord, power: PowerView): InstanceEntry {
  return { record, power, launchFailed: false, reboots: 0 };
}
