/**
 * What guests see of the agent: each instance's documents (one model, rendered once
 * per configuration generation), its config drive, and the metadata endpoint's view
 * of it. The drive and every metadata tree come from the same GuestDocuments object.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import type { Logger } from "pino";
import { buildConfigDrive, configDriveFiles } from "../cloud-init/config-drive.js";
import { renderGuestDocuments } from "../cloud-init/documents.js";
import type { GuestDocuments, GuestKey, GuestSecurityGroup } from "../cloud-init/types.js";
import type { CommandRunner } from "../drivers/exec/runner.js";
import type { Hypervisor } from "../drivers/libvirt/types.js";
import type { KeyPairStore } from "./logins/keypairs.js";
import type { GuestView } from "./metadata/server.js";
import type { InstanceRecord, NicRecord } from "./model.js";
import type { DataPaths } from "./paths.js";
import type { InstanceRegistry } from "./instances/registry.js";
import { guestConfigOf, type GuestHostSettings } from "./instances/guest.js";

interface Cached {
  generation: number;
  keys: readonly GuestKey[];
  /** The security groups the view was rendered with ("id=name" joined): a binding change renders anew. */
  groups: string;
  /** The instance name rendered (ModifyInstancesAttribute renames without a new generation: nothing for the guest to apply). */
  name: string;
  /** The NICs rendered (record.nics as JSON): an ENI attached or detached, an address assigned or moved renders anew. */
  nics: string;
  /** The size rendered (instance-type, the bandwidth caps): a live ResetInstancesType renders anew. */
  size: string;
  view: GuestView;
}

const NO_KEYS: readonly GuestKey[] = Object.freeze([]);

export class GuestDocumentsService {
  private readonly cache = new Map<string, Cached>();
  /** Key pairs as the guest sees them, refreshed on every drive build. */
  private readonly keys = new Map<string, readonly GuestKey[]>();
  /** "gateway|address" → instance ID, rebuilt when the registry's membership changes. */
  private callers = new Map<string, string>();
  private callersBuiltAt = -1;

  constructor(
    private readonly o: {
      runner: CommandRunner;
      hypervisor: Hypervisor;
      paths: DataPaths;
      registry: InstanceRegistry;
      keyPairs: KeyPairStore;
      host: GuestHostSettings;
      logger: Logger;
      /** Security groups in priority order (the metadata trees serve them), named: an instance's, or a NIC's own. */
      securityGroupsOf?: (bound: Pick<InstanceRecord, "securityGroupIds">) => readonly GuestSecurityGroup[];
    },
  ) {}

  private async loadKeys(record: InstanceRecord): Promise<readonly GuestKey[]> {
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

  /**
   * The documents of a record, rendered once per configuration generation and key set:
   * every change the guest should see bumps the generation, and a reload of the keys
   * gives a new array, so a metadata request does no rendering and no serialising.
   */
  private documents(record: InstanceRecord, keys: readonly GuestKey[]): { docs: GuestDocuments; view: GuestView } {
    const generation = record.configGeneration ?? 1;
    const securityGroups = this.o.securityGroupsOf?.(record) ?? [];
    const nicSecurityGroups = (nic: NicRecord) => this.o.securityGroupsOf?.({ securityGroupIds: nic.securityGroupIds ?? [] }) ?? [];
    // Every group the documents name (the instance's and each NIC's own), so a rename or a rebinding renders anew.
    const nicGroups = record.nics.slice(1).flatMap((nic) => (nic.securityGroupIds ? [nicSecurityGroups(nic)] : []));
    const groups = [securityGroups, ...nicGroups].map((set) => set.map((g) => `${g.id}=${g.name}`).join("\n")).join("\n\n");
    const nics = JSON.stringify(record.nics);
    const size = `${record.instanceType}/${record.cpu}`;
    const cached = this.cache.get(record.instanceId);
    if (cached && cached.generation === generation && cached.keys === keys && cached.groups === groups && cached.name === record.instanceName && cached.nics === nics && cached.size === size) {
      return { docs: cached.view.docs, view: cached.view };
    }
    const windowsPassword = this.windowsPassword(record);
    const config = guestConfigOf({
      record,
      host: this.o.host,
      keys,
      ...(windowsPassword !== undefined ? { windowsPassword } : {}),
      ...(securityGroups.length ? { securityGroups } : {}),
      nicSecurityGroups,
    });
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
    this.cache.set(record.instanceId, { generation, keys, groups, name: record.instanceName, nics, size, view });
    return { docs, view };
  }

  /** Builds the instance's config drive from its record (atomically, root only). */
  async buildDrive(record: InstanceRecord): Promise<void> {
    // An image tagged cdh:config-drive=none: no drive (a stale one from an earlier image goes).
    if (record.configDrive === "none") return void (await rm(this.o.paths.configDrive(record.instanceId), { force: true }));
    const keys = await this.loadKeys(record);
    const { docs } = this.documents(record, keys);
    const nocloud = record.configDrive === "nocloud";
    await buildConfigDrive({
      runner: this.o.runner,
      files: configDriveFiles(docs, { nocloud }),
      outPath: this.o.paths.configDrive(record.instanceId),
      label: nocloud ? "cidata" : "config-2",
      tmpDir: this.o.paths.tmpDir,
    });
  }

  /**
   * Rebuilds the drive and swaps it into the domain (live when running), so a change
   * reaches the guest. The record itself is saved by the operation that changed it.
   */
  async refresh(record: InstanceRecord): Promise<void> {
    await this.buildDrive(record);
    if (record.configDrive === "none") return;
    // libvirt leaves a running guest's CD-ROM as it is when the new source is the path it
    // already has (the drive is rebuilt in place): the tray is emptied first, so QEMU reopens
    // the file and the guest sees a media change.
    await this.o.hypervisor.ejectMedia(record.instanceId, "hdc");
    await this.o.hypervisor.changeMedia(record.instanceId, "hdc", this.o.paths.configDrive(record.instanceId));
  }

  /** The metadata endpoint's resolver: the gateway the request came in on, and its source address. */
  resolve(localAddress: string, remoteAddress: string): GuestView | undefined {
    const { registry } = this.o;
    if (this.callersBuiltAt !== registry.membership) this.indexCallers();
    const id = this.callers.get(`${stripV4Mapped(localAddress)}|${stripV4Mapped(remoteAddress)}`);
    const entry = id === undefined ? undefined : registry.get(id);
    if (!entry || entry.launchFailed) return undefined;
    let keys = this.keys.get(entry.record.instanceId);
    if (!keys) {
      // Not built in this process yet (an agent restart): load in the background, answer with what is known.
      void this.loadKeys(entry.record).catch((e: unknown) => this.o.logger.warn({ err: e }, "could not load key pairs"));
      keys = NO_KEYS;
    }
    return this.documents(entry.record, keys).view;
  }

  private indexCallers(): void {
    const gateways = new Map(this.o.host.subnets.map((s) => [s.subnetId, s.gateway]));
    const callers = new Map<string, string>();
    for (const entry of this.o.registry.all()) {
      for (const nic of entry.record.nics) {
        const gateway = nic.subnetId === undefined ? undefined : gateways.get(nic.subnetId);
        if (gateway && nic.ipv4) callers.set(`${gateway}|${nic.ipv4}`, entry.record.instanceId);
      }
    }
    this.callers = callers;
    this.callersBuiltAt = this.o.registry.membership;
    // Instances that are gone take their rendered documents with them.
    for (const id of this.cache.keys()) if (!this.o.registry.has(id)) this.forget(id);
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
