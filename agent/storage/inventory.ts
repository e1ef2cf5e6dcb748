/**
 * The inventory sweep: compares what is on the host (files in the storage pools,
 * instance directories, libvirt domains) with what the agent knows (instances, data
 * disks, snapshots), and deals with every orphan the same way:
 *   1. it is reported (a warning in the log, and in the next report to the controller);
 *   2. it is quarantined: a file is moved into its pool's quarantine/ folder (so nothing
 *      can use it by its old name), a domain is remembered with the time it was found;
 *   3. after the grace period it is deleted: a file with its data destroyed (the pools'
 *      wipe mode), a domain destroyed and undefined (its disks are files, swept as above).
 * A file younger than a few minutes is never an orphan: it may be a copy in progress.
 * Chains and set elements of the firewall's tables that belong to no NIC or group are
 * reported only (the next full firewall sync, at start or after a libvirtd restart, drops them).
 */
import { readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import type { InstanceRegistry } from "../instances/registry.js";
import { parseRecord } from "../model.js";
import type { DataPaths } from "../paths.js";
import type { Storage } from "./storage.js";

/** A file modified more recently than this is work in progress, not an orphan. */
const SETTLE_MS = 5 * 60 * 1000;

export interface Orphan {
  kind: "file" | "domain" | "instance-dir";
  /** The file's original path, or the domain's name. */
  name: string;
  /** Where it is now (quarantined files). */
  quarantinedAs?: string;
  foundAt: string;
  /** When it will be deleted. */
  deleteAfter: string;
}

export interface SweepResult {
  quarantined: Orphan[];
  deleted: string[];
  /** Instances the agent knows whose domain libvirt does not have (reported only). */
  missingDomains: string[];
  /** Firewall chains and set elements that belong to no NIC or group ("inet cdh_filter chain nic_…_in"; reported only). */
  firewallStrays: string[];
}

export class InventorySweep {
  /** Orphan domains and instance directories, by name, with the time they were first seen. */
  private readonly seen = new Map<string, Orphan>();
  private last: SweepResult = { quarantined: [], deleted: [], missingDomains: [], firewallStrays: [] };
  private running: Promise<SweepResult> | undefined;

  constructor(
    private readonly o: {
      storage: Storage;
      registry: InstanceRegistry;
      hypervisor: Hypervisor;
      paths: DataPaths;
      hostId: string;
      graceMs: number;
      /** Paths in use that the pools' owners do not list (reinstalls in progress, …). */
      busyPaths?: () => Iterable<string>;
      /** The firewall's leftovers (Firewall.strays of the current state). */
      firewallStrays?: () => Promise<string[]>;
      logger: Logger;
      /** Clock, for tests of pure timing. */
      now?: () => number;
    },
  ) {}

  /** The orphans the last sweep knew of (for reports). */
  lastResult(): SweepResult {
    return this.last;
  }

  /** One sweep; concurrent calls share it. */
  sweep(): Promise<SweepResult> {
    this.running ??= this.sweepOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  private async sweepOnce(): Promise<SweepResult> {
    const result: SweepResult = { quarantined: [], deleted: [], missingDomains: [], firewallStrays: [] };
    const known = new Set<string>([...this.o.storage.files()].map((f) => f.path));
    for (const p of this.o.busyPaths?.() ?? []) known.add(p);
    for (const e of this.o.registry.all()) known.add(e.record.systemDisk.path);

    for (const pool of this.o.storage.pools.list()) {
      for (const dir of [pool.path, join(pool.path, "snapshots")]) {
        for (const name of await listFiles(dir)) {
          const path = join(dir, name);
          if (known.has(path)) continue;
          // Partial copies beside a known file belong to work in progress (or a crash recovery cleans them).
          const st = await stat(path).catch(() => undefined);
          if (!st?.isFile() || this.now() - st.mtimeMs < SETTLE_MS) continue;
          const foundAt = this.now();
          const quarantinedAs = join(pool.path, "quarantine", `${foundAt}.${name}`);
          await rename(path, quarantinedAs);
          const orphan: Orphan = { kind: "file", name: path, quarantinedAs, foundAt: new Date(foundAt).toISOString(), deleteAfter: new Date(foundAt + this.o.graceMs).toISOString() };
          this.o.logger.warn({ orphan }, "orphaned disk file: nothing the agent knows uses it; quarantined");
          result.quarantined.push(orphan);
        }
      }
      // Quarantined files whose grace period is over.
      for (const name of await listFiles(join(pool.path, "quarantine"))) {
        const at = Number(/^(\d+)\./.exec(name)?.[1] ?? NaN);
        if (!Number.isFinite(at) || this.now() - at < this.o.graceMs) continue;
        const path = join(pool.path, "quarantine", name);
        await this.o.storage.destroyFile(path);
        this.o.logger.warn({ path }, "orphaned disk file deleted after its grace period");
        result.deleted.push(path);
      }
    }

    // Domains that carry this host's record but are not instances the agent knows.
    // Only instances at rest before the listing can be missing from it: a slow libvirt
    // lists for many seconds, and a launch may define its domain meanwhile.
    const atRest = new Set([...this.o.registry.all()].filter((e) => !e.launchFailed && !e.transition).map((e) => e.record.instanceId));
    const present = new Set<string>();
    for (const d of await this.o.hypervisor.listDomains()) {
      present.add(d.name);
      if (!/^ins-[a-z0-9]{8}$/.test(d.name) || this.o.registry.has(d.name)) continue;
      const details = await this.o.hypervisor.getDomain(d.name).catch(() => null);
      if (!details?.spec.metadata) continue;
      let hostId: string | undefined;
      try {
        hostId = parseRecord(details.spec.metadata).hostId;
      } catch {
        continue;
      }
      if (hostId !== this.o.hostId) continue; // another agent's, or one from before host IDs: not ours to judge
      await this.judge(`domain:${d.name}`, "domain", d.name, result, async () => {
        await this.o.hypervisor.destroy(d.name);
        await this.o.hypervisor.undefine(d.name);
      });
    }
    for (const e of this.o.registry.all()) {
      const id = e.record.instanceId;
      if (atRest.has(id) && !e.launchFailed && !e.transition && !present.has(id)) result.missingDomains.push(id);
    }
    for (const id of result.missingDomains) this.o.logger.warn({ instanceId: id }, "instance has no libvirt domain (state UNKNOWN); left for the operator");

    // Instance directories (config drives, console logs) of no instance.
    for (const name of await listFiles(this.o.paths.instancesDir, true)) {
      if (this.o.registry.has(name)) continue;
      await this.judge(`dir:${name}`, "instance-dir", this.o.paths.instanceDir(name), result, async () => {
        await rm(this.o.paths.instanceDir(name), { recursive: true, force: true });
      });
    }
    if (this.o.firewallStrays) {
      try {
        result.firewallStrays = await this.o.firewallStrays();
        if (result.firewallStrays.length > 0) this.o.logger.warn({ strays: result.firewallStrays }, "firewall chains or set elements that belong to no NIC or group; reported only");
      } catch (error) {
        // The rest of the sweep stands; the next sweep asks again.
        this.o.logger.warn({ err: error }, "could not read the firewall's tables for strays");
      }
    }
    // Forget orphans that went away by themselves.
    for (const [key, orphan] of this.seen) {
      const gone = orphan.kind === "domain" ? !present.has(orphan.name) : orphan.kind === "instance-dir" && this.o.registry.has(orphan.name.split("/").pop()!);
      if (gone) this.seen.delete(key);
    }
    this.last = { ...result, quarantined: [...result.quarantined, ...this.seen.values()] };
    return result;
  }

  /** First sighting: report and remember; after the grace period: delete. */
  private async judge(key: string, kind: Orphan["kind"], name: string, result: SweepResult, remove: () => Promise<void>): Promise<void> {
    const earlier = this.seen.get(key);
    if (!earlier) {
      const foundAt = this.now();
      const orphan: Orphan = { kind, name, foundAt: new Date(foundAt).toISOString(), deleteAfter: new Date(foundAt + this.o.graceMs).toISOString() };
      this.seen.set(key, orphan);
      this.o.logger.warn({ orphan }, `orphaned ${kind}: nothing the agent knows owns it; deleted after the grace period`);
      result.quarantined.push(orphan);
      return;
    }
    if (this.now() < Date.parse(earlier.deleteAfter)) return;
    await remove();
    this.seen.delete(key);
    this.o.logger.warn({ orphan: earlier }, `orphaned ${kind} deleted after its grace period`);
    result.deleted.push(name);
  }
}

async function listFiles(dir: string, directories = false): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => (directories ? e.isDirectory() : e.isFile())).map((e) => e.name);
  } catch {
    return [];
  }
}
