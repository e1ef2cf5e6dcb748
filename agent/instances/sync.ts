/**
 * Keeping the registry true: start-up recovery (libvirt + journal), libvirt's events,
 * and the periodic full reconcile that heals missed events. While libvirt cannot be
 * reached every state is UNKNOWN, never STOPPED.
 */
import { readdir, rm, mkdir } from "node:fs/promises";
import type { Logger } from "pino";
import type { DomainEvent, DomainPowerState, DomainSpec, EventWatch, Hypervisor } from "../../drivers/libvirt/types.js";
import type { Journal } from "../journal.js";
import { parseRecord, type InstanceRecord, type PowerView } from "../model.js";
import type { DataPaths } from "../paths.js";
import { undoQuiesce } from "../disks/copy.js";
import { loadLaunchFailed } from "./provision.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";
import type { InstanceService } from "./service.js";
import type { DiskStore } from "../disks/store.js";

const INSTANCE_NAME = /^ins-[a-z0-9]{8}$/;

/** libvirt lifecycle event → the power state it leaves the domain in (undefined: no change). */
const LIFECYCLE_TO_POWER: Readonly<Record<string, DomainPowerState | undefined>> = Object.freeze({
  Started: "running",
  Resumed: "running",
  Suspended: "paused",
  Stopped: "shut off",
  Crashed: "crashed",
  PMSuspended: "pmsuspended",
  // "Shutdown" means the guest finished shutting down; "Stopped" follows when QEMU is gone.
  Shutdown: undefined,
  Defined: undefined,
});

export class InstanceSync {
  private watch: EventWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;

  constructor(
    private readonly o: {
      hypervisor: Hypervisor;
      registry: InstanceRegistry;
      journal: Journal;
      paths: DataPaths;
      service: InstanceService;
      logger: Logger;
      reconcileIntervalMs: number;
      /** This agent's host ID: domains whose record names another host are not adopted. */
      hostId: string;
      disks: DiskStore;
      /** Makes the domain's data disks match the disk store (an attach or detach cut short by a crash). */
      healDisks?: (instanceId: string, spec: DomainSpec, state: DomainPowerState) => Promise<void>;
    },
  ) {}

  /** Reads libvirt and the journal, and finishes every operation a crash interrupted. */
  async recover(): Promise<void> {
    const { hypervisor, registry, journal, paths, service, logger } = this.o;
    await mkdir(paths.instancesDir, { recursive: true, mode: 0o711 });
    await rm(paths.tmpDir, { recursive: true, force: true });
    await mkdir(paths.tmpDir, { recursive: true, mode: 0o700 });

    const names = (await hypervisor.listDomains()).map((d) => d.name).filter((n) => INSTANCE_NAME.test(n));
    const domains = await hypervisor.getDomains(names);
    for (const name of names) {
      const details = domains.get(name);
      if (!details?.spec.metadata) {
        logger.warn({ domain: name }, "domain has an instance-like name but no cdh-agent record; leaving it alone");
        continue;
      }
      const record = parseRecord(details.spec.metadata);
      if (record.hostId !== undefined && record.hostId !== this.o.hostId) {
        logger.debug({ domain: name, owner: record.hostId }, "domain belongs to another host's agent; not adopted");
        continue;
      }
      registry.add(newEntry(record, details.state));
      // A disk copy a crash cut short may have left the guest paused or frozen.
      await undoQuiesce({ hypervisor, logger, instanceId: record.instanceId, marker: paths.quiesceMarker(record.instanceId), power: details.state });
      await this.o.healDisks?.(record.instanceId, details.spec, details.state).catch((error: unknown) =>
        logger.error({ instanceId: record.instanceId, err: error }, "could not bring the domain's data disks in line with the disk records"),
      );
    }
    for (const record of await loadLaunchFailed(paths)) {
      if (!registry.has(record.instanceId)) registry.add({ ...newEntry(record, "absent"), launchFailed: true });
    }

    const { entries, unreadable } = await journal.readAll();
    for (const name of unreadable) logger.error({ file: name }, "journal entry unreadable; left in place for the operator");
    for (const j of entries) {
      const ctx = { requestId: j.requestId };
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
        service.resume(entry, "create", ctx);
      } else if (j.kind === "reset") {
        if (!entry) {
          logger.error({ instanceId: j.instanceId }, "a reinstall was interrupted but its domain is gone; removing the new disk");
          await this.o.service.dropOrphanReset(j);
          continue;
        }
        const definedOnNew = entry.record.systemDisk.path === j.record.systemDisk.path;
        logger.info({ instanceId: j.instanceId, definedOnNew }, "finishing a reinstall interrupted by a restart");
        await service.resumeReset(entry, j, definedOnNew);
      } else {
        if (!entry) {
          entry = newEntry(j.record, "absent");
          registry.add(entry);
        }
        logger.info({ instanceId: j.instanceId }, "finishing a termination interrupted by a restart");
        service.resume(entry, "terminate", ctx);
      }
    }
    // Records libvirt kept with an operation OPERATING that no journal entry resumes:
    // the restart came before the outcome reached libvirt (it is saved after the work).
    for (const entry of registry.all()) {
      if (entry.record.latestOperation?.state === "OPERATING" && !entry.transition && !entry.launchFailed) service.settleInterrupted(entry);
    }

    // Instance directories nobody owns any more (a crash between teardown steps).
    const journaled = new Set(entries.map((e) => e.instanceId));
    for (const name of await readdir(paths.instancesDir)) {
      if (registry.has(name) || journaled.has(name)) continue;
      logger.warn({ dir: paths.instanceDir(name) }, "removing an orphaned instance directory");
      await rm(paths.instanceDir(name), { recursive: true, force: true });
    }
  }

  start(): void {
    this.watch = this.o.hypervisor.watchEvents({
      onEvent: (event) => this.handleEvent(event),
      onConnected: () => {
        this.o.registry.setConnected(true);
        void this.reconcile();
      },
      onDisconnected: (reason) => {
        this.o.logger.warn({ reason }, "lost libvirt's event stream; states are UNKNOWN until it is back");
        this.o.registry.setConnected(false);
      },
    });
    this.timer = setInterval(() => void this.reconcile(), this.o.reconcileIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.watch?.stop();
    clearInterval(this.timer);
  }

  handleEvent(event: DomainEvent): void {
    const { registry } = this.o;
    if (!registry.has(event.domain)) return;
    if (event.kind === "reboot") {
      registry.noteReboot(event.domain);
      return;
    }
    if (event.kind !== "lifecycle") return;
    if (event.event === "Undefined") {
      const entry = registry.get(event.domain);
      if (entry && !entry.transition) registry.setPower(event.domain, "absent");
      return;
    }
    const power = LIFECYCLE_TO_POWER[event.event];
    if (power) registry.setPower(event.domain, power);
  }

  async refreshPower(instanceId: string): Promise<void> {
    const state = await this.o.hypervisor.domainState(instanceId);
    this.o.registry.setPower(instanceId, state ?? "absent");
  }

  /** One full pass over libvirt's domains. Concurrent calls share one pass. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileOnce().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const { hypervisor, registry, logger } = this.o;
    let domains;
    try {
      domains = await hypervisor.listDomains();
    } catch (error) {
      logger.warn({ err: error }, "reconcile: libvirt did not answer");
      registry.setConnected(false);
      return;
    }
    registry.setConnected(true);
    const seen = new Map(domains.map((d) => [d.name, d.state] as const));
    for (const entry of [...registry.all()]) {
      const id = entry.record.instanceId;
      if (entry.launchFailed) continue;
      const state = seen.get(id);
      if (state) registry.setPower(id, state);
      else if (!entry.transition) registry.setPower(id, "absent");
    }
  }
}

function newEntry(record: InstanceRecord, power: PowerView): InstanceEntry {
  return { record, power, launchFailed: false, reboots: 0 };
}
