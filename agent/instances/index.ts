/**
 * The instance operations, one file each, built from named dependencies. Each operation
 * takes only what it uses; they share the operations core (agent/core/operations.ts: one
 * lock per instance, validate → begin → settle → finish) and the power primitives.
 */
import type { Logger } from "pino";
import type { Hypervisor, VirtType } from "../../drivers/libvirt/types.js";
import type { ImageTool } from "../../drivers/storage/types.js";
import type { HostResource } from "../capacity.js";
import type { Operations } from "../core/operations.js";
import type { DiskStore } from "../disks/store.js";
import type { ImageCatalog } from "../images/catalog.js";
import type { Journal } from "../journal.js";
import type { KeyPairStore } from "../logins/keypairs.js";
import type { InstanceRecord } from "../model.js";
import type { Subnet } from "../network/subnets.js";
import type { DataPaths } from "../paths.js";
import type { Storage } from "../storage/storage.js";
import { AttributeOperations } from "./attributes.js";
import { ImageCapture } from "./capture.js";
import type { HotplugHeadroom, IoLimits } from "./domain-spec.js";
import { IsoOperations } from "./iso.js";
import { Launcher } from "./launch.js";
import { LaunchQueue } from "./launch-queue.js";
import { LoginOperations } from "./logins.js";
import { PowerControl, PowerOperations } from "./power.js";
import { PowerIntents, PowerRestore } from "./power-restore.js";
import { DomainSpecs, Provisioner, type Checkpoint, type ConfigDrives, type DiskDeletionListener } from "./provision.js";
import { Recovery } from "./recovery.js";
import type { InstanceRegistry } from "./registry.js";
import { Reinstaller } from "./reinstall.js";
import { RescueOperations } from "./rescue.js";
import { ResizeOperation } from "./resize.js";
import { Retyper } from "./reset-type.js";
import { Terminator } from "./terminate.js";
import { VpcAttributeOperation } from "./vpc-attribute.js";

export interface InstanceOperations {
  ops: Operations;
  power: PowerControl;
  launch: Launcher;
  powerOps: PowerOperations;
  logins: LoginOperations;
  resize: ResizeOperation;
  /** ResetInstancesType and DescribeInstancesModification. */
  retype: Retyper;
  /** ModifyInstancesVpcAttribute: a new primary address (and subnet). */
  vpcAttribute: VpcAttributeOperation;
  reinstall: Reinstaller;
  rescue: RescueOperations;
  iso: IsoOperations;
  capture: ImageCapture;
  terminate: Terminator;
  /** ModifyInstancesAttribute's record-only attributes (name, termination protection). */
  attributes: AttributeOperations;
  recovery: Recovery;
  /** The owner's wanted power state, and the start-up restore that follows it (power-restore.ts). */
  intents: PowerIntents;
  powerRestore: PowerRestore;
  /** The domain spec the agent writes for an instance (the firewall's NIC migration redefines old domains with it). */
  specs: DomainSpecs;
}

export interface InstanceOperationsOptions {
  ops: Operations;
  registry: InstanceRegistry;
  journal: Journal;
  paths: DataPaths;
  hypervisor: Hypervisor;
  imageTool: ImageTool;
  images: ImageCatalog;
  storage: Storage;
  disks: DiskStore;
  keyPairs: KeyPairStore;
  /** The guests' config drives (GuestDocumentsService). */
  drives: ConfigDrives;
  /** Told when a disk file is destroyed (SnapshotService). */
  snapshots: DiskDeletionListener;
  subnets: readonly Subnet[];
  hostResource: () => HostResource;
  /** Written into every record: the agent adopts only its own host's domains. */
  hostId: string;
  virtType: VirtType;
  agentVersion: string;
  ioLimits: (pool: string | undefined) => IoLimits | undefined;
  rescue?: { kernel: string; initrd: string };
  /** Hot-plug headroom written into every definition (config hotplug_*; absent: none). */
  hotplug?: HotplugHeadroom;
  softStopTimeoutMs: number;
  softStopRetryMs: number;
  /** Launches under way at once on this host (launch-queue.ts; config launch_concurrency resolved). */
  launchConcurrency: number;
  /** Start-up power restore (config restore_power_on_start, restore_power_concurrency). */
  powerRestore: { enabled: boolean; concurrency: number };
  /** Recovery: makes a domain's data disks match the disk store (DiskService.heal). */
  healDisks?: ConstructorParameters<typeof Recovery>[0]["healDisks"];
  onAdopted?: ConstructorParameters<typeof Recovery>[0]["onAdopted"];
  checkpoint: Checkpoint;
  logger: Logger;
  /** The security groups' firewall: synced before a new domain starts and after an instance is gone. */
  firewallHooks?: { beforeStart(record: InstanceRecord): Promise<void>; afterGone(instanceId: string): Promise<void> };
  /** ENIs (agent/network/enis): the subnets' address books, primary ENI IDs, and a terminated instance's ENIs going back to the store. */
  nics?: { addressesInUse(subnetId: string): Set<string>; newEniId(): string; beforeGone(record: InstanceRecord): Promise<void> };
}

export function createInstanceOperations(o: InstanceOperationsOptions): InstanceOperations {
  const { ops, registry, journal, paths, hypervisor, imageTool, images, storage, disks, keyPairs, drives, checkpoint, logger } = o;
  const specs = new DomainSpecs({
    virtType: o.virtType,
    paths,
    agentVersion: o.agentVersion,
    disks,
    images,
    ioLimits: o.ioLimits,
    ...(o.rescue ? { rescue: o.rescue } : {}),
    subnetOf: (subnetId) => o.subnets.find((s) => s.subnetId === subnetId),
    ...(o.hotplug ? { hotplug: o.hotplug } : {}),
  });
  const power = new PowerControl({ hypervisor, registry, softStopTimeoutMs: o.softStopTimeoutMs, softStopRetryMs: o.softStopRetryMs });
  const hooks = o.firewallHooks;
  const vpcAttribute = new VpcAttributeOperation({
    ops, registry, journal, hypervisor, specs, power, drives, subnets: o.subnets, checkpoint,
    ...(o.nics ? { addressesInUse: (subnetId: string) => o.nics!.addressesInUse(subnetId) } : {}),
    ...(hooks ? { nicsChanged: (record: InstanceRecord) => hooks.beforeStart(record) } : {}),
  });
  /** The address books with the addresses a primary address change holds (launches allocate from these). */
  const addressesInUse = (subnetId: string): Set<string> => {
    const used = o.nics!.addressesInUse(subnetId);
    for (const ip of vpcAttribute.reserved(subnetId)) used.add(ip);
    return used;
  };
  const provisioner = new Provisioner({
    hypervisor, imageTool, images, paths, storage, disks, specs, drives, snapshots: o.snapshots, checkpoint, logger,
    ...(hooks ? { beforeStart: (record: InstanceRecord) => hooks.beforeStart(record) } : {}),
  });
  const launch = new Launcher({
    ops,
    registry,
    journal,
    paths,
    images,
    storage,
    disks,
    subnets: o.subnets,
    hostResource: o.hostResource,
    hostId: o.hostId,
    keyPairs,
    provisioner,
    power,
    queue: new LaunchQueue({ concurrency: o.launchConcurrency, logger }),
    checkpoint,
    logger,
    ...(o.nics ? { addressesInUse, newEniId: () => o.nics!.newEniId() } : {}),
  });
  logger.info({ concurrency: o.launchConcurrency }, "launch queue");
  const terminate = new Terminator({
    ops,
    registry,
    journal,
    keyPairs,
    provisioner,
    checkpoint,
    logger,
    ...(hooks ? { afterGone: (id: string) => hooks.afterGone(id) } : {}),
    ...(o.nics ? { beforeGone: (record: InstanceRecord) => o.nics!.beforeGone(record) } : {}),
  });
  const retype = new Retyper({ ops, registry, journal, hypervisor, specs, power, hostResource: o.hostResource, checkpoint });
  const reinstall = new Reinstaller({ ops, registry, journal, paths, images, keyPairs, storage, hypervisor, imageTool, specs, drives, power, checkpoint });
  const intents = new PowerIntents({ ops, registry, logger });
  return {
    ops,
    power,
    launch,
    intents,
    powerRestore: new PowerRestore({ ops, registry, power, enabled: o.powerRestore.enabled, concurrency: o.powerRestore.concurrency, logger }),
    powerOps: new PowerOperations({ ops, power, intents }),
    logins: new LoginOperations({ ops, paths, keyPairs, hypervisor, drives, power, logger }),
    resize: new ResizeOperation({ ops, disks, storage, hypervisor, imageTool, power }),
    retype,
    vpcAttribute,
    reinstall,
    specs,
    rescue: new RescueOperations({ ops, registry, hypervisor, specs, power }),
    iso: new IsoOperations({ ops, hypervisor, specs, power }),
    capture: new ImageCapture({ ops, paths, images, hypervisor, imageTool, power, checkpoint, logger }),
    terminate,
    attributes: new AttributeOperations({ ops, registry, paths }),
    recovery: new Recovery({
      hypervisor,
      registry,
      journal,
      paths,
      disks,
      ops,
      launcher: launch,
      terminator: terminate,
      reinstaller: reinstall,
      retyper: retype,
      vpcAttribute,
      hostId: o.hostId,
      ...(o.healDisks ? { healDisks: o.healDisks } : {}),
      ...(o.onAdopted ? { onAdopted: o.onAdopted } : {}),
      logger,
    }),
  };
}
