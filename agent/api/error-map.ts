/**
 * The one table from the domain's errors (agent/core/errors.ts) to the CVM codes the API
 * answers with. The dispatcher passes every error of a call through toApiError; the
 * operations core uses cvmCodeOf for LatestOperation's code.
 */
import { DomainError, type DomainErrorKind } from "../core/errors.js";
import { ApiError, type ErrorCode } from "../errors.js";
import { SgError, type SgErrorKind } from "../network/security-groups/errors.js";
import { EniError, type EniErrorKind } from "../network/enis/errors.js";
import type { InstanceState } from "../model.js";

/** The CVM code for "this action is not allowed in that state". */
const STATE_CODE: Readonly<Record<InstanceState, ErrorCode>> = Object.freeze({
  PENDING: "UnsupportedOperation.InstanceStatePending",
  LAUNCH_FAILED: "UnsupportedOperation.InstanceStateLaunchFailed",
  RUNNING: "UnsupportedOperation.InstanceStateRunning",
  STOPPED: "UnsupportedOperation.InstanceStateStopped",
  STARTING: "UnsupportedOperation.InstanceStateStarting",
  STOPPING: "UnsupportedOperation.InstanceStateStopping",
  REBOOTING: "UnsupportedOperation.InstanceStateRebooting",
  SHUTDOWN: "InvalidInstanceState",
  TERMINATING: "UnsupportedOperation.InstanceStateTerminating",
  RESETTING: "UnsupportedOperation.InstanceStateResetting",
  ENTER_RESCUE_MODE: "UnsupportedOperation.InstanceStateRescueMode",
  RESCUE_MODE: "UnsupportedOperation.InstanceStateRescueMode",
  EXIT_RESCUE_MODE: "UnsupportedOperation.InstanceStateRescueMode",
  MIGRATING: "InvalidInstanceState",
  UNKNOWN: "InvalidInstanceState",
});

export const CVM_CODE_OF: Readonly<Record<Exclude<DomainErrorKind, "InstanceState">, ErrorCode>> = Object.freeze({
  InstanceNotFound: "InvalidInstanceId.NotFound",
  InstanceRunning: "UnsupportedOperation.InstanceStateRunning",
  BadValue: "InvalidParameterValue",
  AddressMalformed: "InvalidParameter.InvalidIpFormat",
  AddressNotInSubnet: "VpcAddrNotInSubNet",
  AddressInUse: "VpcIpIsUsed",
  SubnetNotFound: "InvalidParameterValue.SubnetNotExist",
  SubnetNotInVpc: "InvalidParameterValue.VpcIdSubnetIdNotMatch",
  TooMany: "InvalidParameterValue.LimitExceeded",
  NoRoom: "ResourceInsufficient.SpecifiedInstanceType",
  DryRun: "DryRunOperation",
  GuestDidNotComply: "FailedOperation",
  NotFound: "ResourceNotFound",
  BadUrl: "InvalidParameter.InvalidParameterUrlError",
  DiskShrink: "InvalidParameterValue.DiskShrink",
  DiskStep: "InvalidParameterValue.DiskSizeNotMultipleOfStep",
  KeyPairNotSupported: "InvalidParameterValue.KeyPairNotSupported",
  Unsupported: "UnsupportedOperation",
  NotInRescue: "UnsupportedOperation.NotInRescueMode",
  DiskNotFound: "InvalidDiskId.NotFound",
  DiskNotAttached: "ResourceUnavailable.NotAttached",
  DiskBusy: "InvalidDisk.Busy",
  ImageNotFound: "InvalidImageId.NotFound",
  ImageNotUsable: "InvalidImageId.IncorrectState",
  ImageNameTaken: "InvalidImageName.Duplicate",
  HostNotFound: "InvalidHostId.NotFound",
  DiskAttached: "ResourceUnavailable.Attached",
  DiskSlotsFull: "LimitExceeded.InstanceAttachedDisk",
  DiskNotSupported: "InvalidDisk.NotSupported",
  InstanceNotAtRest: "InvalidInstanceState",
  InstanceNotStopped: "UnsupportedOperation.InstanceNotStopped",
  SnapshotNotFound: "InvalidSnapshotId.NotFound",
  SnapshotNotSupported: "InvalidSnapshot.NotSupported",
  PoolFull: "ResourceInsufficient",
  HostFailure: "InternalError",
  BadPassword: "InvalidPassword",
  KeyPairNotFound: "InvalidKeyPairId.NotFound",
  KeyPairNameTaken: "InvalidKeyPairName.Duplicate",
  KeyNameEmpty: "InvalidKeyPairNameEmpty",
  KeyNameTooLong: "InvalidKeyPairNameTooLong",
  KeyNameBadChar: "InvalidKeyPairNameIncludeIllegalChar",
  PublicKeyMalformed: "InvalidPublicKey.Malformed",
  PublicKeyTaken: "InvalidPublicKey.Duplicate",
  KeyPairLimit: "InvalidKeyPair.LimitExceeded",
  ProjectNotFound: "InvalidProjectId.NotFound",
  BadFilter: "InvalidFilter",
  MissingValue: "MissingParameter",
  BadCombination: "InvalidParameterCombination",
  TooLong: "InvalidParameterValue.TooLong",
  KeyPairIdMalformed: "InvalidKeyPairId.Malformed",
  InstanceIdMalformed: "InvalidInstanceId.Malformed",
  TerminationProtected: "UnsupportedOperation.InstancesProtected",
  EniBlocksSubnetChange: "EniNotAllowedChangeSubnet",
});

/** The CVM code of a domain error. */
export function codeOfDomainError(error: DomainError): ErrorCode {
  if (error.kind === "InstanceState") return STATE_CODE[error.detail.state ?? "UNKNOWN"];
  return CVM_CODE_OF[error.kind];
}

/** The security-group domain's errors: the VPC API's codes, the CVM ones for the binding actions (`satisfies`: no kind missing, none extra). */
export const SG_CODE_OF: Readonly<Record<SgErrorKind, ErrorCode>> = Object.freeze({
  GroupIdMalformed: "InvalidParameterValue.Malformed",
  GroupNotFound: "ResourceNotFound",
  Coexist: "InvalidParameter.Coexist",
  BadValue: "InvalidParameterValue",
  Empty: "InvalidParameterValue.Empty",
  Range: "InvalidParameterValue.Range",
  TooLong: "InvalidParameterValue.TooLong",
  Duplicate: "InvalidParameterValue.Duplicate",
  ListTooLong: "InvalidParameterValue.LimitExceeded",
  GroupQuota: "LimitExceeded",
  PolicyQuota: "LimitExceeded.SecurityGroupPolicySet",
  VersionMismatch: "UnsupportedOperation.VersionMismatch",
  DuplicatePolicy: "UnsupportedOperation.DuplicatePolicy",
  InUse: "ResourceInUse",
  DefaultGroup: "UnsupportedOperation",
  FilterInvalidKey: "InvalidParameter.FilterInvalidKey",
  FirewallFailed: "InternalError.ModuleError",
  BindGroupIdMalformed: "InvalidSgId.Malformed",
  BindGroupNotFound: "InvalidSecurityGroupId.NotFound",
  InstanceGroupLimit: "LimitExceeded.AssociateUSGLimitExceeded",
  BindFailed: "FailedOperation.SecurityGroupActionFailed",
} satisfies Record<SgErrorKind, ErrorCode>);

/** The ENI domain's errors: the VPC API's codes (reference/tencent-api-next.md §B.2). */
export const ENI_CODE_OF: Readonly<Record<EniErrorKind, ErrorCode>> = Object.freeze({
  NotFound: "ResourceNotFound",
  BadValue: "InvalidParameterValue",
  Duplicate: "InvalidParameterValue.DuplicatePara",
  Reserved: "InvalidParameterValue.Reserved",
  AddressInUse: "ResourceInUse",
  InUse: "ResourceInUse",
  SubnetFull: "ResourceInsufficient.Subnet",
  Limit: "LimitExceeded",
  ListTooLong: "InvalidParameterValue.LimitExceeded",
  Attached: "UnsupportedOperation.AttachmentAlreadyExists",
  NotAttached: "UnsupportedOperation.AttachmentNotFound",
  InvalidState: "UnsupportedOperation.InvalidState",
  PrimaryNic: "UnsupportedOperation",
  PrimaryIp: "UnsupportedOperation.PrimaryIp",
  Mismatch: "UnsupportedOperation.ResourceMismatch",
  FilterInvalidKey: "InvalidParameter.FilterInvalidKey",
  Coexist: "InvalidParameter.Coexist",
  HostFailure: "InternalError.ModuleError",
} satisfies Record<EniErrorKind, ErrorCode>);

/** The CVM code an error is answered with: a domain error's by the table, an ApiError's own, anything else InternalError. */
export function cvmCodeOf(error: unknown): ErrorCode {
  if (error instanceof DomainError) return codeOfDomainError(error);
  if (error instanceof SgError) return SG_CODE_OF[error.kind];
  if (error instanceof EniError) return ENI_CODE_OF[error.kind];
  if (error instanceof ApiError) return error.code;
  return "InternalError";
}

/** A domain error as the ApiError the edge answers with; anything else unchanged. */
export function toApiError(error: unknown): unknown {
  if (error instanceof SgError) return new ApiError(SG_CODE_OF[error.kind], error.message, { cause: error });
  if (error instanceof EniError) return new ApiError(ENI_CODE_OF[error.kind], error.message, { cause: error });
  return error instanceof DomainError ? new ApiError(codeOfDomainError(error), error.message, { cause: error }) : error;
}
