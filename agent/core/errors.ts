/**
 * The domain's errors: what went wrong, in the domain's words. The domain (instances,
 * images, the operations core) raises these and never a CVM code; the API edge maps each
 * kind to its CVM code in one table (agent/api/error-map.ts), so the codes a client sees
 * are decided in one place.
 */
import type { InstanceState } from "../model.js";

export type DomainErrorKind =
  /** An instance ID names no instance on this host. */
  | "InstanceNotFound"
  /** The instance's state does not allow the action (the state is in `detail.state`). */
  | "InstanceState"
  /** The instance is running and the change needs it stopped (or a flag that allows that). */
  | "InstanceRunning"
  /** A value of the request breaks a rule of the domain. */
  | "BadValue"
  /** Subnets: a requested private address that is not an IPv4 address. */
  | "AddressMalformed"
  /** …one that is not a usable host address of the subnet (outside it, or its gateway). */
  | "AddressNotInSubnet"
  /** …one another NIC of the subnet already has. */
  | "AddressInUse"
  /** A subnet ID this host does not have. */
  | "SubnetNotFound"
  /** A subnet that belongs to another VPC than the one named with it. */
  | "SubnetNotInVpc"
  /** More items than the domain allows (data disks per instance, …). */
  | "TooMany"
  /** The host has no room for the request (CPU, memory, disk, addresses). */
  | "NoRoom"
  /** Every check passed; DryRun stopped before the first change. */
  | "DryRun"
  /** The guest did not do what was asked in time (ACPI ignored, no guest agent, …). */
  | "GuestDidNotComply"
  /** Something the request names does not exist (an attached ISO, …). */
  | "NotFound"
  /** An image URL that cannot be read or is not one the agent reads. */
  | "BadUrl"
  /** A disk would shrink. */
  | "DiskShrink"
  /** A disk grows by a size that is not a whole number of steps. */
  | "DiskStep"
  /** The image's OS takes no key pairs. */
  | "KeyPairNotSupported"
  /** The host cannot do this at all (no rescue system, …). */
  | "Unsupported"
  /** ExitRescueMode of an instance not in rescue mode. */
  | "NotInRescue"
  | "DiskNotFound"
  | "DiskNotAttached"
  | "DiskBusy"
  | "ImageNotFound"
  /** The image exists but is not NORMAL, or is in use, for what was asked. */
  | "ImageNotUsable"
  | "ImageNameTaken"
  /** A host ID that is not this host's. */
  | "HostNotFound"
  | "DiskAttached"
  /** The instance has no free data disk target left. */
  | "DiskSlotsFull"
  /** The disk does not allow this (it is a system disk, …). */
  | "DiskNotSupported"
  /** The instance is not at rest (an operation is running, or its state forbids disk changes). */
  | "InstanceNotAtRest"
  /** The operation needs the instance stopped. */
  | "InstanceNotStopped"
  | "SnapshotNotFound"
  /** The snapshot does not allow this (another disk's, not NORMAL, …). */
  | "SnapshotNotSupported"
  /** A storage pool has not the room asked of it. */
  | "PoolFull"
  /** The host failed doing what was asked (libvirt, qemu-img, the filesystem); the message says how. */
  | "HostFailure"
  /** A password that does not meet the complexity rules. */
  | "BadPassword"
  /** Key pairs (the CVM key pair codes). */
  | "KeyPairNotFound"
  | "KeyPairNameTaken"
  | "KeyNameEmpty"
  | "KeyNameTooLong"
  | "KeyNameBadChar"
  | "PublicKeyMalformed"
  | "PublicKeyTaken"
  | "KeyPairLimit"
  | "ProjectNotFound"
  /** Request-shaped refusals the login store makes itself (filters, lists, lengths). */
  | "BadFilter"
  | "MissingValue"
  | "BadCombination"
  | "TooLong"
  | "KeyPairIdMalformed"
  | "InstanceIdMalformed"
  /** TerminateInstances of an instance whose DisableApiTermination is set. */
  | "TerminationProtected"
  /** ModifyInstancesVpcAttribute: a move to another subnet while ENIs (or secondary addresses) are attached. */
  | "EniBlocksSubnetChange";

export class DomainError extends Error {
  override name = "DomainError";
  constructor(
    readonly kind: DomainErrorKind,
    message: string,
    readonly detail: { state?: InstanceState } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The refusal DryRun ends with: every check passed, nothing was done. */
export function dryRunStop(): DomainError {
  return new DomainError("DryRun", "the request would have succeeded; DryRun was set");
}
