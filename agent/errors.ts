/**
 * The error catalogue: every code the agent can return on its controller API,
 * with a one-line description. The codes are the CVM API 2017-03-12 ones
 * (reference/seeds-cvm-api.md §3, §4.3) so that SDK users can switch on them.
 *
 * Choices worth knowing:
 * - An Authorization header that cannot be parsed is answered with
 *   AuthFailure.SignatureFailure (CVM has no dedicated code for it); a missing
 *   Authorization or X-TC-Timestamp header is MissingParameter.
 * - Import failures (format, partition table, URL) happen after ImportImage has
 *   answered: they are shown on the image (DescribeImages ErrorCode, the seed's
 *   import codes), not returned by a call.
 */

export const ERROR_CODES = Object.freeze({
  // Authentication (signature v3)
  "AuthFailure.SignatureFailure": "The request signature is wrong or the Authorization header cannot be parsed.",
  "AuthFailure.SignatureExpire": "X-TC-Timestamp is more than 5 minutes away from the host's clock.",
  "AuthFailure.SecretIdNotFound": "The SecretId in the credential is not configured on this host.",
  // Protocol and common parameters
  InvalidAction: "The action does not exist, or the request was not sent to POST /.",
  NoSuchVersion: "The API version is not the action's: 2017-03-12 (CVM, VPC) or 2018-07-24 (Monitor).",
  UnsupportedProtocol: "The HTTP method is not supported; use POST.",
  MissingParameter: "A required parameter or header is missing.",
  InvalidParameter: "A parameter is unknown, has the wrong JSON type, or the request body is unusable.",
  InvalidParameterValue: "A parameter value breaks a rule.",
  "InvalidParameterValue.LimitExceeded": "A list parameter has more items than allowed.",
  "InvalidParameterValue.Range": "A numeric parameter is outside its allowed range.",
  "InvalidParameterValue.TooLong": "A string parameter is longer than allowed.",
  InvalidParameterCombination: "Two parameters were given together that cannot be combined.",
  InvalidFilter: "A filter name is not supported by this action.",
  // Identifiers and names
  "InvalidInstanceId.Malformed": "An instance ID is not `ins-` followed by 8 lowercase letters or digits.",
  "InvalidInstanceId.NotFound": "No instance with this ID exists on this host.",
  "InvalidImageId.Malformed": "An image ID is not `img-` followed by 8 lowercase letters or digits.",
  "InvalidImageId.NotFound": "No image with this ID exists on this host.",
  "InvalidImageId.IncorrectState": "The image's state does not allow this operation.",
  "InvalidImageName.Duplicate": "An image with this name already exists on this host.",
  "InvalidHostId.Malformed": "A host ID is not `host-` followed by 8 lowercase letters or digits.",
  "InvalidHostId.NotFound": "The host ID is not this host's ID.",
  "InvalidKeyPairId.Malformed": "A key ID is not `skey-` followed by 8 lowercase letters or digits.",
  "InvalidKeyPairId.NotFound": "No key pair with this ID exists.",
  // Key pairs (seed §1.11, §3.2; where the seed spells a code two ways, ImportKeyPair's
  // `InvalidKeyPairNameDuplicate`, `InvalidPublicKeyMalformed`, … the catalogue's
  // spelling is used for every action, so a client switches on one code)
  InvalidKeyPairNameEmpty: "KeyName is empty.",
  InvalidKeyPairNameTooLong: "KeyName is longer than 25 characters.",
  InvalidKeyPairNameIncludeIllegalChar: "KeyName contains a character other than letters, digits and underscore.",
  "InvalidKeyPairName.Duplicate": "A key pair with this name already exists on this host.",
  "InvalidPublicKey.Malformed": "PublicKey is not a single OpenSSH public key line of a supported type and size.",
  "InvalidPublicKey.Duplicate": "A key pair with this public key already exists on this host.",
  "InvalidKeyPair.LimitExceeded": "The host already holds the maximum number of key pairs.",
  "InvalidParameterValue.KeyPairNotSupported": "The key pair does not allow this operation (e.g. it is bound to an instance).",
  "InvalidProjectId.NotFound": "The project does not exist; this host knows only project 0.",
  "InvalidInstanceType.Malformed": "InstanceType is not of the form CDH_<cores>C<GiB>G.",
  "InvalidInstanceName.TooLong": "InstanceName is longer than 60 characters.",
  "InvalidClientToken.TooLong": "ClientToken is longer than 64 ASCII characters.",
  InvalidPassword: "The password does not meet the complexity rules.",
  // Images
  "InvalidParameter.InvalidParameterUrlError": "ImageUrl is not a file:// absolute path or an http(s):// URL.",
  "InvalidParameter.UrlError": "ImageUrl could not be read.",
  "InvalidImageOsType.Unsupported": "The image's OsType is not supported.",
  "InvalidImageOsVersion.Unsupported": "The image's OsVersion is not supported.",
  // Networks (VirtualPrivateCloud of RunInstances; the VPC API's codes)
  "InvalidParameter.InvalidIpFormat": "An IP address is not a dotted IPv4 address.",
  "InvalidParameterValue.SubnetNotExist": "No subnet with this ID is configured on this host.",
  "InvalidParameterValue.SubnetIdMalformed": "ModifyInstancesVpcAttribute: a subnet ID is not `subnet-` followed by lowercase letters or digits.",
  "InvalidParameterValue.VpcIdMalformed": "ModifyInstancesVpcAttribute: a VPC ID is not `vpc-` followed by lowercase letters or digits.",
  "InvalidParameterValue.IPAddressMalformed": "ModifyInstancesVpcAttribute: a private address is not an IPv4 address.",
  "UnsupportedOperation.IPv6NotSupportVpcMigrate": "ModifyInstancesVpcAttribute: IPv6 addresses were asked for; this host's subnets have none.",
  "InvalidParameterValue.VpcIdSubnetIdNotMatch": "The subnet does not belong to the VPC named.",
  VpcAddrNotInSubNet: "The private IP address is not inside the subnet (or is its network, gateway or broadcast address).",
  VpcIpIsUsed: "The private IP address is already used by another instance.",
  EniNotAllowedChangeSubnet: "ModifyInstancesVpcAttribute: the instance cannot move to another subnet while ENIs or secondary addresses are attached.",
  // Resources and state
  "ResourceInsufficient.SpecifiedInstanceType": "The host has not enough CPU, memory or disk left for the request.",
  ResourceInsufficient: "The host has not enough resources left.",
  ResourceInUse: "The resource is in use.",
  ResourceNotFound: "The resource does not exist.",
  "UnsupportedOperation.InstanceStateRunning": "The operation is not allowed while the instance is RUNNING.",
  "UnsupportedOperation.InstanceStateStopped": "The operation is not allowed while the instance is STOPPED.",
  "UnsupportedOperation.InstanceStateStopping": "The operation is not allowed while the instance is STOPPING.",
  "UnsupportedOperation.InstanceStateStarting": "The operation is not allowed while the instance is STARTING.",
  "UnsupportedOperation.InstanceStateRebooting": "The operation is not allowed while the instance is REBOOTING.",
  "UnsupportedOperation.InstanceStatePending": "The operation is not allowed while the instance is PENDING.",
  "UnsupportedOperation.InstanceStateTerminating": "The operation is not allowed while the instance is TERMINATING.",
  "UnsupportedOperation.InstanceStateResetting": "The operation is not allowed while the instance is RESETTING.",
  "UnsupportedOperation.InstanceStateLaunchFailed": "The operation is not allowed while the instance is LAUNCH_FAILED.",
  UnsupportedOperation: "The operation is not supported.",
  InvalidInstanceState: "The instance's current state does not allow this operation.",
  "MutexOperation.TaskRunning": "Another operation on the same resource is still running.",
  // Disks and snapshots (the CBS API 2017-03-12 codes, at host scope)
  "InvalidDiskId.NotFound": "No disk with this ID exists on this host.",
  "InvalidDiskId.Malformed": "A disk ID is not `disk-` followed by 8 lowercase letters or digits.",
  "InvalidDisk.Busy": "Another operation on the disk is still running.",
  "InvalidDisk.NotSupported": "The disk does not allow this operation (e.g. it is a system disk).",
  "ResourceUnavailable.Attached": "The disk is already attached to an instance.",
  "ResourceUnavailable.NotAttached": "The disk is not attached (to this instance).",
  "LimitExceeded.InstanceAttachedDisk": "The instance already has as many data disks as it can hold.",
  "InvalidSnapshotId.NotFound": "No snapshot with this ID exists on this host.",
  "InvalidSnapshotId.Malformed": "A snapshot ID is not `snap-` followed by 8 lowercase letters or digits.",
  "InvalidSnapshot.NotSupported": "The snapshot does not allow this operation (e.g. it belongs to another disk).",
  "UnsupportedOperation.InstanceNotStopped": "The operation needs the instance to be STOPPED.",
  "InvalidParameterValue.DiskSizeNotMultipleOfStep": "A disk size change is not a whole multiple of 10 GB.",
  "InvalidParameterValue.DiskShrink": "A disk cannot be made smaller.",
  // Rescue mode and ISO
  "UnsupportedOperation.InstanceStateRescueMode": "The instance is in rescue mode: only ExitRescueMode is allowed.",
  "UnsupportedOperation.NotInRescueMode": "The instance is not in rescue mode.",
  "UnsupportedOperation.InvalidDataDisk": "The instance has data disks, which this operation does not allow.",
  // Instance attributes: termination protection, tags, placement (issue 10 part 4)
  "UnsupportedOperation.InstancesProtected": "The instance has DisableApiTermination set: clear it with ModifyInstancesAttribute first.",
  "InvalidZone.MismatchRegion": "The zone is not this host's zone.",
  "FailedOperation.IllegalTagKey": "A tag key is empty, longer than 127 characters or holds a control character.",
  "FailedOperation.IllegalTagValue": "A tag value is longer than 255 characters or holds a control character.",
  "FailedOperation.TagKeyReserved": "A tag key starts with a prefix the platform reserves (qcloud:, tencent:, project).",
  "InvalidParameterValue.DuplicateTags": "A tag key is given twice.",
  "InvalidParameterValue.TagQuotaLimitExceeded": "More than 50 tags on one resource.",
  // Security groups (the VPC API's codes; the CVM binding actions use the CVM ones)
  "InvalidParameter.Coexist": "Two parameters (or kinds of rule fields) were given together that exclude each other.",
  "InvalidParameter.FilterInvalidKey": "A filter name is not one the action knows.",
  "InvalidParameterValue.Malformed": "A value is malformed (a security group ID, an Offset or Limit that is no number).",
  "InvalidParameterValue.Empty": "A required value or list is empty.",
  "InvalidParameterValue.Duplicate": "A value that must be unique is given twice.",
  LimitExceeded: "A quota is reached: security groups on the host (security_group_limit), NICs of an instance, addresses of a NIC, or the PCI slots of its definition (ENIs).",
  "LimitExceeded.SecurityGroupPolicySet": "A direction of a security group would hold more than 100 rules.",
  "UnsupportedOperation.VersionMismatch": "The SecurityGroupPolicySet.Version given is not the group's current version.",
  "UnsupportedOperation.DuplicatePolicy": "The rule already exists in that direction of the group (or is given twice).",
  "InternalError.ModuleError": "The firewall refused the change; nothing was changed.",
  "InvalidSecurityGroupId.NotFound": "A security group named by a CVM action does not exist.",
  "InvalidSgId.Malformed": "A security group ID in a CVM action is not `sg-` followed by 8 lowercase letters or digits.",
  "LimitExceeded.AssociateUSGLimitExceeded": "An instance would be bound to more than 5 security groups.",
  "FailedOperation.SecurityGroupActionFailed": "The firewall refused the binding change; nothing was changed.",
  // Elastic network interfaces (the VPC API's codes)
  "ResourceInsufficient.Subnet": "The subnet has no free address left.",
  "InvalidParameterValue.Reserved": "The address is the subnet's network, broadcast or gateway address.",
  "InvalidParameterValue.DuplicatePara": "An address is given twice in one request.",
  "UnsupportedOperation.AttachmentAlreadyExists": "The ENI is already attached to an instance.",
  "UnsupportedOperation.AttachmentNotFound": "The ENI is not attached to the instance named.",
  "UnsupportedOperation.InvalidState": "The ENI is busy with another change, the instance's state does not allow it, or the guest did not release the NIC in time.",
  "UnsupportedOperation.PrimaryIp": "A primary address cannot be released or moved.",
  "UnsupportedOperation.ResourceMismatch": "The subnet is not in the VPC named, or the two ENIs are in different subnets.",
  // Monitor 2018-07-24 (GetMonitorData, DescribeBaseMetrics)
  "LimitExceeded.LimitedAccess": "GetMonitorData names more than 10 instances.",
  // Outcomes
  DryRunOperation: "The request would have succeeded; DryRun was set so nothing was done.",
  RequestLimitExceeded: "Too many requests; retry later.",
  InternalError: "Internal error on the host agent.",
  FailedOperation: "The operation failed.",
} as const);

export type ErrorCode = keyof typeof ERROR_CODES;

export function isKnownCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** An error that reaches the controller as `{"Error": {"Code", "Message"}}`. */
export class ApiError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ApiError";
    this.code = code;
  }
}
