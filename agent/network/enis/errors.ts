/**
 * The ENI domain's errors, in the domain's words. The API edge maps each kind to the VPC
 * code the API documents for it (agent/api/error-map.ts, ENI_CODE_OF).
 */

export type EniErrorKind =
  /** No ENI (or no instance) with this ID on this host. */
  | "NotFound"
  /** A value breaks a rule (an address outside the subnet, the network address, …). */
  | "BadValue"
  /** An address or ID was given twice in one request. */
  | "Duplicate"
  /** The gateway, network or broadcast address of the subnet. */
  | "Reserved"
  /** The address is held by another NIC or ENI. */
  | "AddressInUse"
  /** The subnet has no free address left. */
  | "SubnetFull"
  /** More NICs on the instance, or addresses on the NIC, than its size allows; no PCI slot left. */
  | "Limit"
  /** More items in one request than allowed. */
  | "ListTooLong"
  /** The ENI is attached (AttachNetworkInterface of an attached one). */
  | "Attached"
  /** The ENI is attached, so it cannot be deleted. */
  | "InUse"
  /** The ENI is attached elsewhere or not at all (DetachNetworkInterface, …). */
  | "NotAttached"
  /** The ENI is busy with another operation, or the instance's state does not allow it. */
  | "InvalidState"
  /** The primary NIC (its instance's first) cannot be detached or attached. */
  | "PrimaryNic"
  /** A primary address cannot be released or moved. */
  | "PrimaryIp"
  /** Things that must belong together do not (a subnet of another VPC, two ENIs of a move in different subnets). */
  | "Mismatch"
  /** A filter name DescribeNetworkInterfaces does not know. */
  | "FilterInvalidKey"
  /** NetworkInterfaceIds and Filters together. */
  | "Coexist"
  /** The host failed doing it (libvirt, the firewall); what was done is undone. */
  | "HostFailure";

export class EniError extends Error {
  override name = "EniError";
  constructor(
    readonly kind: EniErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function eniError(kind: EniErrorKind, message: string, options?: { cause?: unknown }): EniError {
  return new EniError(kind, message, options);
}
