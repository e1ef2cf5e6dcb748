/**
 * What guests see of the agent: each instance's documents (one model, rendered once
 * per configuration generation), its config drive, and the metadata endpoint's view
 * of it. The drive and every metadata tree come from the same GuestDocuments object.
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { Logger } from "pino";
import { buildConfigDrive, configDriveFiles } from "../cloud-init/config-drive.js";
import { renderGuestDocuments } from "../cloud-init/documents.js";
import type { GuestDocuments, GuestKey } from "../cloud-init/types.js";
import type { CommandRunner } from "../drivers/exec/runner.js";
import type { Hypervisor } from "../drivers/libvirt/types.js";
import type { KeyPairStore } from "./logins/keypairs.js";
import type { GuestView } from "./metadata/server.js";
import type { InstanceRecord } from "./model.js";
import type { DataPaths } from "./paths.js";
import type { InstanceRegistry } from "./instances/registry.js";
import { guestConfigOf, type GuestHostSettings } from "./instances/guest.js";

interface Cached {
  key: string;
  view: GuestView;
}

export class GuestDocumentsService {
  private readonly cache = new Map<string, Cached>();
  /** Key pairs as the guest sees them, refreshed on every drive build. */
  private readonly keys = new Map<string, GuestKey[]>();

  constructor(
    private readonly o: {
      runner: CommandRunner;
      hypervisor: Hypervisor;
      paths: DataPaths;
      registry: InstanceRegistry;
      keyPairs: KeyPairStore;
      host: GuestHostSettings;
      logger: Logger;
    },
  ) {}

  private async loadKeys(record: InstanceRecord): Promise<GuestKey[]> {
    const keys = (await this.o.keyPairs.keysOfInstance(record.instanceId)).map((k) => ({ keyId: k.keyId, keyName: k.keyName, publicKey: k.publicKey }));
    this.keys.set(record.instanceId, keys);
    return keys;
  }

  private windowsPassword(record: InstanceRecord): string | undefined {
    if (record.osType !== "windows") return undefined;
    try {
      return readFileSync(this.o.paths.windowsPassword(record.instanceId), "utf8");
    } catch {
      return undefined;
    }
  }

  /** The documents of a record, rendered once per generation and key set. */
  private documents(record: InstanceRecord, keys: readonly GuestKey[]): { docs: GuestDocuments; view: GuestView } {
    const key = JSON.stringify([record.configGeneration ?? 1, record.hostName, record.nics, keys.map((k) => k.keyId), record.login]);
    const cached = this.cache.get(record.instanceId);
    if (cached && cached.key === key) return { docs: cached.view.docs, view: cached.view };
    const windowsPassword = this.windowsPassword(record);
    const config = guestConfigOf({ record, host: this.o.host, keys, ...(windowsPassword !== undefined ? { windowsPassword } : {}) });
    const docs = renderGuestDocuments(config);
    const passwordFile = this.o.paths.postedPassword(record.instanceId);
    const view: GuestView = {
      config,
      docs,
      postPassword(data: Buffer) {
        try {
          writeFileSync(passwordFile, data, { mode: 0o600, flag: "wx" });
          return "stored";
        } catch {
          return "conflict";
        }
      },
      readPassword() {
        try {
          return readFileSync(passwordFile);
        } catch {
          return undefined;
        }
      },
    };
    this.cache.set(record.instanceId, { key, view });
    return { docs, view };
  }

  /** Builds the instance's config drive from its record (atomically, root only). */
  async buildDrive(record: InstanceRecord): Promise<void> {
    const keys = await this.loadKeys(record);
    const { docs } = this.documents(record, keys);
    await buildConfigDrive({
      runner: this.o.runner,
      files: configDriveFiles(docs),
      outPath: this.o.paths.configDrive(record.instanceId),
      label: "config-2",
      tmpDir: this.o.paths.tmpDir,
    });
  }

  /** Rebuilds the drive and swaps it into the domain (live when running), so a change reaches the guest. */
  async refresh(record: InstanceRecord): Promise<void> {
    await this.buildDrive(record);
    await this.o.hypervisor.changeMedia(record.instanceId, "hdc", this.o.paths.configDrive(record.instanceId));
    await this.o.hypervisor.setMetadata(record.instanceId, JSON.stringify(record));
  }

  /** The metadata endpoint's resolver: the gateway the request came in on, and its source address. */
  resolve(localAddress: string, remoteAddress: string): GuestView | undefined {
    const local = stripV4Mapped(localAddress);
    const remote = stripV4Mapped(remoteAddress);
    const subnet = this.o.host.subnets.find((s) => s.gateway === local);
    if (!subnet) return undefined;
    for (const entry of this.o.registry.all()) {
      if (entry.launchFailed) continue;
      const nic = entry.record.nics.find((n) => n.subnetId === subnet.subnetId && n.ipv4 === remote);
      if (!nic) continue;
      const keys = this.keys.get(entry.record.instanceId);
      if (!keys) {
        // Not built in this process yet (an agent restart): load in the background, answer with what is known.
        void this.loadKeys(entry.record).catch((e: unknown) => this.o.logger.warn({ err: e }, "could not load key pairs"));
      }
      return this.documents(entry.record, keys ?? []).view;
    }
    return undefined;
  }

  /** Forgets a removed instance. */
  forget(instanceId: string): void {
    this.cache.delete(instanceId);
    this.keys.delete(instanceId);
  }

  /** Warms the key cache of every known instance (after a restart). */
  async warm(): Promise<void> {
    for (const entry of this.o.registry.all()) {
      if (!entry.launchFailed) await this.loadKeys(entry.record).catch(() => undefined);
    }
  }
}

function stripV4Mapped(address: string): string {
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}
