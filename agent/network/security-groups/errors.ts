/**
 * The security-group domain's errors: what went wrong, in the domain's words. The API
 * edge maps each kind to the VPC (or, for the CVM binding actions, the CVM) code in one
 * table (agent/api/error-map.ts), so the codes a client sees are decided there.
 */

export type SgErrorKind =
  /** A security group ID that is not `sg-` + 8 lowercase letters or digits. */
  | "GroupIdMalformed"
  /** No group with this ID on this host. */
  | "GroupNotFound"
  /** Two fields (or kinds of fields) that exclude each other were given together. */
  | "Coexist"
  /** A value breaks a rule (a port, a CIDR, a protocol, a field this host cannot enforce). */
  | "BadValue"
  /** A required value or list is empty. */
  | "Empty"
  /** A number (a PolicyIndex, an Offset) is outside its range. */
  | "Range"
  | "TooLong"
  /** A value that must be unique is not (a tag key given twice). */
  | "Duplicate"
  /** A list has more items than one request may carry. */
  | "ListTooLong"
  /** The host holds as many groups as it may (security_group_limit). */
  | "GroupQuota"
  /** A direction of a group would hold more than 100 rules. */
  | "PolicyQuota"
  /** The request's Version is not the group's current one. */
  | "VersionMismatch"
  /** A rule that already exists in that direction (or twice in the request). */
  | "DuplicatePolicy"
  /** The group is bound to an instance or named by another group's rule. */
  | "InUse"
  /** The default group cannot be deleted. */
  | "DefaultGroup"
  /** A filter name the action does not know. */
  | "FilterInvalidKey"
  /** The firewall refused the change (nothing changed). */
  | "FirewallFailed"
  // The CVM binding actions (AssociateSecurityGroups, …) use the CVM codes:
  /** A bound group ID that is malformed (CVM InvalidSgId.Malformed). */
  | "BindGroupIdMalformed"
  /** A bound group that does not exist (CVM InvalidSecurityGroupId.NotFound). */
  | "BindGroupNotFound"
  /** An instance would have more than 5 groups. */
  | "InstanceGroupLimit"
  /** The binding change could not be enforced (nothing changed). */
  | "BindFailed";

export class SgError extends Error {
  override name = "SgError";
  constructor(
    readonly kind: SgErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function sgError(kind: SgErrorKind, message: string, options?: { cause?: unknown }): SgError {
  return new SgError(kind, message, options);
}
