/**
 * The agent's instance model: the record it keeps in each domain's <metadata>,
 * the CVM instance states, and the pure rules that connect them.
 */
import { addSecret } from "../drivers/exec/sanitize.js";
import { randomBytes } from "node:crypto";
import type { DomainPowerState } from "../drivers/libvirt/types.js";
import { checkInstanceRecord } from "./core/records.js";

/** CVM instance states (seed API §2.1), plus UNKNOWN while libvirt cannot be asked. */
export type InstanceState =
  | "PENDING"
  | "LAUNCH_FAILED"
  | "RUNNING"
  | "STOPPED"
  | "STARTING"
  | "STOPPING"
  | "REBOOTING"
  | "SHUTDOWN"
  | "TERMINATING"
  | "RESETTING"
  | "ENTER_RESCUE_MODE"
  | "RESCUE_MODE"
  | "EXIT_RESCUE_MODE"
  /** Moving to another host (MigrateInstances, this agent's extension: agent/migration). */
  | "MIGRATING"
  | "UNKNOWN";

/** States an operation in progress shows. */
export type TransitionState =
  | "PENDING"
  | "STARTING"
  | "STOPPING"
  | "REBOOTING"
  | "TERMINATING"
  | "RESETTING"
  | "ENTER_RESCUE_MODE"
  | "EXIT_RESCUE_MODE"
  | "MIGRATING"
  | "UPDATING";

export type OperationState = "OPERATING" | "SUCCESS" | "FAILED";

export interface LatestOperation {
  action: string;
  state: OperationState;
  requestId: string;
  /** Set when state is FAILED. */
  errorCode?: string;
  errorMessage?: string;
}

export interface SystemDiskRecord {
  diskType: "LOCAL_BASIC" | "LOCAL_SSD";
  sizeGiB: number;
  /** Absolute path of the qcow2 overlay. */
  path: string;
  /** disk-…; records written before storage pools have none. */
  diskId?: string;
  /** The storage pool holding the file; absent in records written before storage pools. */
  pool?: string;
}

export interface NicRecord {
  mac: string;
  /** libvirt network name. */
  network: string;
  /** Static IPv4 address (records written before subnets have none). */
  ipv4?: string;
  subnetId?: string;
  vpcId?: string;
  /**
   * The elastic network interface this NIC is (eni-…). Absent in records written before
   * ENIs: the primary NIC then has no ENI of its own until one is recorded for it.
   */
  eniId?: string;
  /** Secondary private IPv4 addresses of this NIC (AssignPrivateIpAddresses), in assignment order. */
  secondaryIpv4s?: string[];
  /**
   * This NIC's security groups in priority order. Absent: the instance's groups
   * (InstanceRecord.securityGroupIds); the primary NIC always follows the instance's.
   */
  securityGroupIds?: string[];
  /**
   * The NIC's fixed slot: its tap name (tapName(instanceId, slot)) and PCI slot derive from
   * it, so detaching one NIC never renames another. Absent: its index in `nics`.
   */
  slot?: number;
}

/** What the guest applies at login; never a plain password (a Windows one lives in a root-only file). */
export interface LoginRecord {
  /** SHA-512 crypt of the Linux login user's password. */
  passwordHash?: string;
  /** Bound key pairs (skey-…), in binding order. */
  keyIds: string[];
  /**
   * LoginSettings.KeepImageLogin TRUE: the agent sets no login at all (no password, no
   * keys, no sshd or root-login settings); the image's own stay. Dropped by the next
   * password reset or key binding, which hand the login to the platform.
   */
  keepImage?: true;
}

/**
 * What the agent knows about an instance, stored in its domain's <metadata>.
 * Version it: a newer agent must read records an older one wrote.
 */
export interface InstanceRecord {
  version: 1;
  instanceId: string;
  uuid: string;
  /** The host (agent) that made the instance; an agent adopts only its own domains. Absent in early records. */
  hostId?: string;
  instanceName: string;
  hostName?: string;
  instanceType: string;
  cpu: number;
  memoryGiB: number;
  imageId: string;
  osName?: string;
  systemDisk: SystemDiskRecord;
  nics: NicRecord[];
  /** ISO 8601, seconds precision, UTC. */
  createdTime: string;
  clientToken?: string;
  /** Position within its RunInstances batch (0-based), as cloud-init's launch_index. */
  launchIndex: number;
  /** Base64 as the API received it; for the guest (config drive, metadata). */
  userData?: string;
  latestOperation?: LatestOperation;
  /** From the image: decides where passwords go (cloud-init vs cloudbase-init). */
  osType?: "linux" | "windows";
  /**
   * From the image's cdh:config-drive tag: a NoCloud (`cidata`) drive instead of `config-2`,
   * or no drive at all (`none`: the CD-ROM stays empty; DHCP and the metadata endpoint only).
   */
  configDrive?: "nocloud" | "none";
  login?: LoginRecord;
  /** Bumped with every change the guest should apply (password, keys, hostname, network). */
  configGeneration?: number;
  /** Set while the instance is in rescue mode: it boots the rescue system with this root password. */
  rescue?: { passwordHash: string; since: string };
  /** An ISO in the instance's second CD-ROM (InstanceAttachISO): the file and where it came from. */
  iso?: { path: string; url: string };
  /** Bound security groups (sg-…) in priority order; absent in records written before security groups: the host's default group. */
  securityGroupIds?: string[];
  /** DisableApiTermination: TerminateInstances refuses the instance while true. Absent (older records) means false. */
  disableApiTermination?: boolean;
  /** The instance's tags (RunInstances TagSpecification), in the order given; absent means none. */
  tags?: InstanceTag[];
  /**
   * The power state the owner wants (agent/instances/power-restore.ts): "off" once the owner
   * stopped it (StopInstances, or a power-off the agent saw with no operation of its own), "on"
   * once started again. Saved before the stop or start is issued. Absent: on, unless the last
   * operation was a successful StopInstances (records written before this field).
   */
  powerIntent?: "on" | "off";
  /**
   * InternetAccessible.InternetMaxBandwidthOut in Mbit/s (only on a subnet with a route out
   * of the VPC); absent: no internet cap (and none accepted).
   */
  internetMaxBandwidthOut?: number;
}

/** A tag of an instance (CVM's Tag: Key and Value). */
export interface InstanceTag {
  key: string;
  value: string;
}

/** libvirt's view of the domain, as the agent last saw it. */
export type PowerView = DomainPowerState | "unknown" | "absent";

/**
 * libvirt state → CVM state, when no agent operation is in progress.
 * - running, blocked (waiting on a resource), in shutdown (guest still finishing)
 *   and paused (QEMU paused it, e.g. on an I/O error; still holds its resources)
 *   are all RUNNING from the controller's point of view.
 * - shut off and crashed (with on_crash=destroy QEMU is gone) are STOPPED.
 * - pmsuspended is a guest that suspended itself to RAM; it wakes on input: RUNNING.
 * - "no state" and "unknown" (libvirt unreachable) are UNKNOWN: never report STOPPED
 *   for a machine we cannot see.
 */
export const POWER_TO_STATE: Readonly<Record<PowerView, InstanceState>> = Object.freeze({
  running: "RUNNING",
  blocked: "RUNNING",
  paused: "RUNNING",
  "in shutdown": "RUNNING",
  pmsuspended: "RUNNING",
  "shut off": "STOPPED",
  crashed: "STOPPED",
  "no state": "UNKNOWN",
  unknown: "UNKNOWN",
  absent: "UNKNOWN",
});

export function deriveState(input: {
  launchFailed: boolean;
  transition: TransitionState | undefined;
  power: PowerView;
  rescue?: boolean;
}): InstanceState {
  if (input.launchFailed) return "LAUNCH_FAILED";
  // UPDATING (a login change being applied) keeps the state the instance shows.
  if (input.transition && input.transition !== "UPDATING") return input.transition;
  // In rescue mode whatever the rescue system does: only ExitRescueMode is allowed.
  if (input.rescue && input.power !== "unknown") return "RESCUE_MODE";
  return POWER_TO_STATE[input.power];
}

export function isPoweredOn(power: PowerView): boolean {
  return POWER_TO_STATE[power] === "RUNNING";
}

export type InstanceAction =
  | "StartInstances"
  | "StopInstances"
  | "StopInstancesHard"
  | "RebootInstances"
  | "TerminateInstances"
  | "AssociateInstancesKeyPairs"
  | "DisassociateInstancesKeyPairs"
  | "ResetInstancesPassword"
  | "ResizeInstanceDisks"
  | "ResetInstance"
  | "CreateImage"
  | "EnterRescueMode"
  | "ExitRescueMode"
  | "InstanceAttachISO"
  | "InstanceDetachISO"
  | "ModifyInstancesAttribute"
  | "ResetInstancesType"
  | "MigrateInstances"
  | "ResetInstancesInternetMaxBandwidth"
  | "ModifyInstancesVpcAttribute";

/** Login changes apply to an instance at rest in either power state (live, or at its next boot). */
const LOGIN_STATES = new Set<InstanceState>(["RUNNING", "STOPPED"]);

/**
 * The states each action is allowed from (seed API §1.10). A hard stop is accepted at
 * any moment the machine may be on, also while a soft stop, a start or a reboot is
 * under way: it pre-empts them. Terminate likewise pre-empts those operations.
 */
export const ALLOWED_FROM: Readonly<Record<InstanceAction, ReadonlySet<InstanceState>>> = Object.freeze({
  StartInstances: new Set<InstanceState>(["STOPPED"]),
  StopInstances: new Set<InstanceState>(["RUNNING"]),
  StopInstancesHard: new Set<InstanceState>(["RUNNING", "STOPPING", "STARTING", "REBOOTING"]),
  RebootInstances: new Set<InstanceState>(["RUNNING"]),
  TerminateInstances: new Set<InstanceState>([
    "RUNNING",
    "STOPPED",
    "LAUNCH_FAILED",
    "STARTING",
    "STOPPING",
    "REBOOTING",
    "SHUTDOWN",
    "UNKNOWN",
  ]),
  AssociateInstancesKeyPairs: LOGIN_STATES,
  DisassociateInstancesKeyPairs: LOGIN_STATES,
  ResetInstancesPassword: LOGIN_STATES,
  ResizeInstanceDisks: LOGIN_STATES,
  ResetInstance: LOGIN_STATES,
  CreateImage: LOGIN_STATES,
  EnterRescueMode: LOGIN_STATES,
  ExitRescueMode: new Set<InstanceState>(["RESCUE_MODE"]),
  InstanceAttachISO: LOGIN_STATES,
  // Stopped; running too (live within the hot-plug headroom, or with ForceStop): agent/instances/reset-type.ts.
  ResetInstancesType: LOGIN_STATES,
  // A new primary address: a running instance is stopped and started again (agent/instances/vpc-attribute.ts).
  ModifyInstancesVpcAttribute: LOGIN_STATES,
  // A record change and the host's tc classes (agent/network/bandwidth): at rest or on the way to it.
  ResetInstancesInternetMaxBandwidth: new Set<InstanceState>(["RUNNING", "STOPPED", "STARTING", "STOPPING", "REBOOTING"]),
  // The seed: detaching needs the instance not running.
  InstanceDetachISO: new Set<InstanceState>(["STOPPED"]),
  // agent/migration: live from RUNNING, cold from RUNNING (stopped first) or STOPPED.
  MigrateInstances: new Set<InstanceState>(["RUNNING", "STOPPED"]),
  // A record-only change (name, termination protection): any state but PENDING (no domain yet
  // to save it in) and TERMINATING; a LAUNCH_FAILED tombstone too, so its protection can be cleared.
  ModifyInstancesAttribute: new Set<InstanceState>([
    "RUNNING",
    "STOPPED",
    "LAUNCH_FAILED",
    "STARTING",
    "STOPPING",
    "REBOOTING",
    "SHUTDOWN",
    "RESETTING",
    "ENTER_RESCUE_MODE",
    "RESCUE_MODE",
    "EXIT_RESCUE_MODE",
    "UNKNOWN",
  ]),
});

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** A CVM-shaped ID: prefix, a dash, 8 lowercase alphanumerics. */
export function newId(prefix: "ins" | "img" | "disk" | "skey" | "snap"): string {
  const bytes = randomBytes(8);
  let out = "";
  for (const b of bytes) out += ID_ALPHABET[b % 36];
  return `${prefix}-${out}`;
}

/** A locally administered MAC in QEMU's 52:54:00 range. */
export function newMac(taken: ReadonlySet<string>): string {
  for (;;) {
    const b = randomBytes(3);
    const mac = `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, "0")).join(":")}`;
    if (!taken.has(mac)) return mac;
  }
}

export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function parseRecord(json: string): InstanceRecord {
  // Checked where it is read back: a record libvirt hands back may be old, damaged or edited.
  const value = checkInstanceRecord(JSON.parse(json));
  // A record read back from libvirt brings its secrets into the agent: scrub them (sanitize.ts).
  addSecret(value.userData);
  if (value.userData) addSecret(Buffer.from(value.userData, "base64").toString("utf8"));
  addSecret(value.login?.passwordHash);
  addSecret(value.rescue?.passwordHash);
  return value;
}
