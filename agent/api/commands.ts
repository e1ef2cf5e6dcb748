/**
 * The command union: every API action parsed into one typed command. HTTP (and
 * any other front end) only builds commands; one dispatcher handles them with a
 * switch on `action` ending in an exhaustiveness check.
 */
import { addSecret } from "../../drivers/exec/sanitize.js";
import { ApiError } from "../errors.js";
import { parseDeleteImages, parseDescribeHosts, parseDescribeImages, parseImportImage, parseModifyHostsAttribute } from "./schemas-images.js";
import type { DeleteImagesParams, DescribeHostsParams, DescribeImagesParams, ImportImageParams, ModifyHostsAttributeParams } from "./schemas-images.js";
import {
  parseEnterRescueMode,
  parseExitRescueMode,
  parseInstanceAttachIso,
  parseInstanceDetachIso,
  parseModifyInstancesAttribute,
  parseDescribeInstances,
  parseDescribeInstancesStatus,
  parseRebootInstances,
  parseStartInstances,
  parseStopInstances,
  parseTerminateInstances,
} from "./schemas-instances.js";
import type {
  EnterRescueModeParams,
  InstanceAttachIsoParams,
  InstanceIdParams,
  ModifyInstancesAttributeParams,
  DescribeInstancesParams,
  DescribeInstancesStatusParams,
  RebootInstancesParams,
  StartInstancesParams,
  StopInstancesParams,
  TerminateInstancesParams,
} from "./schemas-instances.js";
import {
  parseAssociateInstancesKeyPairs,
  parseCreateKeyPair,
  parseDeleteKeyPairs,
  parseDescribeKeyPairs,
  parseDisassociateInstancesKeyPairs,
  parseImportKeyPair,
  parseResetInstancesPassword,
} from "./schemas-logins.js";
import type {
  CreateKeyPairParams,
  DeleteKeyPairsParams,
  DescribeKeyPairsParams,
  ImportKeyPairParams,
  KeyBindingParams,
  ResetInstancesPasswordParams,
} from "./schemas-logins.js";
import { parseCloneInstance, parseCreateImage, parseResetInstance, parseRunInstances } from "./schemas-run.js";
import { parseDescribeInstancesModification, parseResetInstancesType } from "./schemas-retype.js";
import { parseModifyInstancesVpcAttribute } from "./schemas-vpc-attribute.js";
import type { VpcAttributeRequest } from "../instances/vpc-attribute.js";
import { parseCancelMigrateInstances, parseMigrateInstances, parseMigrationPeerStep } from "./schemas-migration.js";
import type { MigrateRequest } from "../migration/source.js";
import type { PeerStepParams } from "../migration/service.js";
import type { DescribeInstancesModificationParams, ResetInstancesTypeParams } from "./schemas-retype.js";
import { parseResetInstancesInternetMaxBandwidth, type ResetInstancesInternetMaxBandwidthParams } from "./schemas-bandwidth.js";
import type { CloneInstanceParams, CreateImageParams, ResetInstanceParams, RunInstancesParams } from "./schemas-run.js";
import {
  parseApplySnapshot,
  parseAttachDisks,
  parseCreateDisks,
  parseCreateSnapshot,
  parseDeleteSnapshots,
  parseDescribeDisks,
  parseDescribeSnapshots,
  parseDetachDisks,
  parseResizeInstanceDisks,
  parseTerminateDisks,
} from "./schemas-disks.js";
import type {
  ApplySnapshotParams,
  AttachDisksParams,
  CreateDisksParams,
  CreateSnapshotParams,
  DeleteSnapshotsParams,
  DescribeDisksParams,
  DescribeSnapshotsParams,
  DetachDisksParams,
  ResizeInstanceDisksParams,
  TerminateDisksParams,
} from "./schemas-disks.js";
import {
  parseAssociateSecurityGroups,
  parseCreateSecurityGroup,
  parseCreateSecurityGroupPolicies,
  parseCreateSecurityGroupWithPolicies,
  parseDeleteSecurityGroup,
  parseDeleteSecurityGroupPolicies,
  parseDescribeSecurityGroupAssociationStatistics,
  parseDescribeSecurityGroupLimits,
  parseDescribeSecurityGroupPolicies,
  parseDescribeSecurityGroups,
  parseDisassociateSecurityGroups,
  parseModifySecurityGroupPolicies,
  parseReplaceSecurityGroupPolicy,
} from "./schemas-vpc.js";
import type {
  CreateSecurityGroupParams,
  DescribeSecurityGroupPoliciesParams,
  DescribeSecurityGroupsParams,
  ModifySecurityGroupPoliciesParams,
  NoParams,
  PolicySetParams,
  ReplaceSecurityGroupPolicyParams,
  SecurityGroupBindingParams,
  SecurityGroupIdParams,
  SecurityGroupIdsParams,
} from "./schemas-vpc.js";
import {
  parseAssignPrivateIpAddresses,
  parseAttachNetworkInterface,
  parseCreateNetworkInterface,
  parseDeleteNetworkInterface,
  parseDescribeNetworkInterfaces,
  parseDescribeVpcTaskResult,
  parseDetachNetworkInterface,
  parseMigratePrivateIpAddress,
  parseModifyNetworkInterfaceAttribute,
  parseUnassignPrivateIpAddresses,
} from "./schemas-eni.js";
import type {
  AssignPrivateIpAddressesParams,
  CreateNetworkInterfaceParams,
  DescribeNetworkInterfacesParams,
  DescribeVpcTaskResultParams,
  EniAttachmentParams,
  EniIdParams,
  MigratePrivateIpAddressParams,
  ModifyNetworkInterfaceAttributeParams,
  UnassignPrivateIpAddressesParams,
} from "./schemas-eni.js";

import { parseDescribeBaseMetrics, parseGetMonitorData } from "./schemas-monitor.js";
import { parseDescribeInstanceVncUrl, type DescribeInstanceVncUrlParams } from "./schemas-console.js";
import { parseDescribeInstanceSerialConsoleUrl, parseDescribeInstanceSerialLog } from "./schemas-serial.js";
import type { DescribeInstanceSerialConsoleUrlParams, DescribeInstanceSerialLogParams } from "./schemas-serial.js";
import type { DescribeBaseMetricsParams, GetMonitorDataParams } from "./schemas-monitor.js";
import {
  parseCreateInstanceDiagnosticReports,
  parseDescribeAlarmPolicies,
  parseDescribeInstanceDiagnosticReports,
  parseModifyAlarmPolicies,
  type CreateDiagnosticReportsParams,
  type DescribeDiagnosticReportsParams,
  type ModifyAlarmPoliciesParams,
} from "./schemas-monitor-ops.js";

export type * from "./schemas-vpc.js";
export type * from "./schemas-images.js";
export type * from "./schemas-instances.js";
export type * from "./schemas-logins.js";
export type { CreateDisksParams, AttachDisksParams, DetachDisksParams, DescribeDisksParams, TerminateDisksParams, ResizeInstanceDisksParams } from "./schemas-disks.js";
export type { DataDiskParams, LocalDiskType, RunInstancesParams } from "./schemas-run.js";
export type { Filter, Paging } from "./schemas.js";
export { expandInstanceNames, hostNameProblem, parseInstanceType, MAX_USER_DATA_BYTES } from "./schemas-run.js";

export type Command =
  | { action: "RunInstances"; params: RunInstancesParams }
  | { action: "DescribeInstances"; params: DescribeInstancesParams }
  | { action: "DescribeInstancesStatus"; params: DescribeInstancesStatusParams }
  | { action: "StartInstances"; params: StartInstancesParams }
  | { action: "StopInstances"; params: StopInstancesParams }
  | { action: "RebootInstances"; params: RebootInstancesParams }
  | { action: "TerminateInstances"; params: TerminateInstancesParams }
  | { action: "ModifyInstancesAttribute"; params: ModifyInstancesAttributeParams }
  | { action: "ImportImage"; params: ImportImageParams }
  | { action: "DescribeImages"; params: DescribeImagesParams }
  | { action: "DeleteImages"; params: DeleteImagesParams }
  | { action: "DescribeHosts"; params: DescribeHostsParams }
  | { action: "ModifyHostsAttribute"; params: ModifyHostsAttributeParams }
  | { action: "ImportKeyPair"; params: ImportKeyPairParams }
  | { action: "CreateKeyPair"; params: CreateKeyPairParams }
  | { action: "DescribeKeyPairs"; params: DescribeKeyPairsParams }
  | { action: "DeleteKeyPairs"; params: DeleteKeyPairsParams }
  | { action: "AssociateInstancesKeyPairs"; params: KeyBindingParams }
  | { action: "DisassociateInstancesKeyPairs"; params: KeyBindingParams }
  | { action: "ResetInstancesPassword"; params: ResetInstancesPasswordParams }
  | { action: "CreateDisks"; params: CreateDisksParams }
  | { action: "AttachDisks"; params: AttachDisksParams }
  | { action: "DetachDisks"; params: DetachDisksParams }
  | { action: "DescribeDisks"; params: DescribeDisksParams }
  | { action: "TerminateDisks"; params: TerminateDisksParams }
  | { action: "ResizeInstanceDisks"; params: ResizeInstanceDisksParams }
  | { action: "CreateSnapshot"; params: CreateSnapshotParams }
  | { action: "DescribeSnapshots"; params: DescribeSnapshotsParams }
  | { action: "DeleteSnapshots"; params: DeleteSnapshotsParams }
  | { action: "ApplySnapshot"; params: ApplySnapshotParams }
  | { action: "ResetInstance"; params: ResetInstanceParams }
  | { action: "CreateImage"; params: CreateImageParams }
  | { action: "CloneInstance"; params: CloneInstanceParams }
  | { action: "EnterRescueMode"; params: EnterRescueModeParams }
  | { action: "ExitRescueMode"; params: InstanceIdParams }
  | { action: "InstanceAttachISO"; params: InstanceAttachIsoParams }
  | { action: "InstanceDetachISO"; params: InstanceIdParams }
  | { action: "ResetInstancesType"; params: ResetInstancesTypeParams }
  | { action: "ModifyInstancesVpcAttribute"; params: VpcAttributeRequest }
  | { action: "ResetInstancesInternetMaxBandwidth"; params: ResetInstancesInternetMaxBandwidthParams }
  | { action: "DescribeInstancesModification"; params: DescribeInstancesModificationParams }
  // VPC 2017-03-12: security groups (the same endpoint; action names are unique across the APIs)
  | { action: "CreateSecurityGroup"; params: CreateSecurityGroupParams }
  | { action: "CreateSecurityGroupWithPolicies"; params: CreateSecurityGroupParams }
  | { action: "DescribeSecurityGroups"; params: DescribeSecurityGroupsParams }
  | { action: "DeleteSecurityGroup"; params: SecurityGroupIdParams }
  | { action: "CreateSecurityGroupPolicies"; params: PolicySetParams }
  | { action: "DescribeSecurityGroupPolicies"; params: DescribeSecurityGroupPoliciesParams }
  | { action: "ModifySecurityGroupPolicies"; params: ModifySecurityGroupPoliciesParams }
  | { action: "ReplaceSecurityGroupPolicy"; params: ReplaceSecurityGroupPolicyParams }
  | { action: "DeleteSecurityGroupPolicies"; params: PolicySetParams }
  | { action: "DescribeSecurityGroupAssociationStatistics"; params: SecurityGroupIdsParams }
  | { action: "DescribeSecurityGroupLimits"; params: NoParams }
  // CVM: binding groups to instances
  | { action: "AssociateSecurityGroups"; params: SecurityGroupBindingParams }
  | { action: "DisassociateSecurityGroups"; params: SecurityGroupBindingParams }
  // VPC 2017-03-12: elastic network interfaces (schemas-eni.ts)
  | { action: "CreateNetworkInterface"; params: CreateNetworkInterfaceParams }
  | { action: "DescribeNetworkInterfaces"; params: DescribeNetworkInterfacesParams }
  | { action: "AttachNetworkInterface"; params: EniAttachmentParams }
  | { action: "DetachNetworkInterface"; params: EniAttachmentParams }
  | { action: "DeleteNetworkInterface"; params: EniIdParams }
  | { action: "AssignPrivateIpAddresses"; params: AssignPrivateIpAddressesParams }
  | { action: "UnassignPrivateIpAddresses"; params: UnassignPrivateIpAddressesParams }
  | { action: "MigratePrivateIpAddress"; params: MigratePrivateIpAddressParams }
  | { action: "ModifyNetworkInterfaceAttribute"; params: ModifyNetworkInterfaceAttributeParams }
  | { action: "DescribeVpcTaskResult"; params: DescribeVpcTaskResultParams }
  // Monitor 2018-07-24 (X-TC-Version 2018-07-24; server.ts MONITOR_ACTIONS)
  | { action: "GetMonitorData"; params: GetMonitorDataParams }
  | { action: "DescribeBaseMetrics"; params: DescribeBaseMetricsParams }
  // This agent's extensions (schemas-monitor-ops.ts): alarms and the instance self-check
  | { action: "ModifyAlarmPolicies"; params: ModifyAlarmPoliciesParams }
  | { action: "DescribeAlarmPolicies"; params: Record<string, never> }
  | { action: "CreateInstanceDiagnosticReports"; params: CreateDiagnosticReportsParams }
  | { action: "DescribeInstanceDiagnosticReports"; params: DescribeDiagnosticReportsParams }
  // This agent's extension (agent/migration): moving instances between hosts
  | { action: "MigrateInstances"; params: MigrateRequest }
  | { action: "CancelMigrateInstances"; params: { instanceIds: string[] } }
  | { action: "MigrationPeerStep"; params: PeerStepParams }
  // The console (agent/console): a one-time URL of the instance's VNC session
  | { action: "DescribeInstanceVncUrl"; params: DescribeInstanceVncUrlParams }
  // This agent's extensions (schemas-serial.ts): the serial console's one-time URL and its log
  | { action: "DescribeInstanceSerialConsoleUrl"; params: DescribeInstanceSerialConsoleUrlParams }
  | { action: "DescribeInstanceSerialLog"; params: DescribeInstanceSerialLogParams };

export type Action = Command["action"];

type ParamsOf<A extends Action> = Extract<Command, { action: A }>["params"];

/**
 * A new action: its request schema goes into its file's *_REQUEST_SCHEMAS map and the fate of each
 * of its fields into test/unit/api/fields.test.ts (nothing accepted and ignored; that test fails otherwise).
 */
const PARSERS: { readonly [A in Action]: (body: unknown) => ParamsOf<A> } = {
  RunInstances: parseRunInstances,
  DescribeInstances: parseDescribeInstances,
  DescribeInstancesStatus: parseDescribeInstancesStatus,
  StartInstances: parseStartInstances,
  StopInstances: parseStopInstances,
  RebootInstances: parseRebootInstances,
  TerminateInstances: parseTerminateInstances,
  ModifyInstancesAttribute: parseModifyInstancesAttribute,
  ImportImage: parseImportImage,
  DescribeImages: parseDescribeImages,
  DeleteImages: parseDeleteImages,
  DescribeHosts: parseDescribeHosts,
  ModifyHostsAttribute: parseModifyHostsAttribute,
  ImportKeyPair: parseImportKeyPair,
  CreateKeyPair: parseCreateKeyPair,
  DescribeKeyPairs: parseDescribeKeyPairs,
  DeleteKeyPairs: parseDeleteKeyPairs,
  AssociateInstancesKeyPairs: parseAssociateInstancesKeyPairs,
  DisassociateInstancesKeyPairs: parseDisassociateInstancesKeyPairs,
  ResetInstancesPassword: parseResetInstancesPassword,
  CreateDisks: parseCreateDisks,
  AttachDisks: parseAttachDisks,
  DetachDisks: parseDetachDisks,
  DescribeDisks: parseDescribeDisks,
  TerminateDisks: parseTerminateDisks,
  ResizeInstanceDisks: parseResizeInstanceDisks,
  CreateSnapshot: parseCreateSnapshot,
  DescribeSnapshots: parseDescribeSnapshots,
  DeleteSnapshots: parseDeleteSnapshots,
  ApplySnapshot: parseApplySnapshot,
  ResetInstance: parseResetInstance,
  CreateImage: parseCreateImage,
  CloneInstance: parseCloneInstance,
  EnterRescueMode: parseEnterRescueMode,
  ExitRescueMode: parseExitRescueMode,
  InstanceAttachISO: parseInstanceAttachIso,
  InstanceDetachISO: parseInstanceDetachIso,
  ResetInstancesType: parseResetInstancesType,
  ModifyInstancesVpcAttribute: parseModifyInstancesVpcAttribute,
  ResetInstancesInternetMaxBandwidth: parseResetInstancesInternetMaxBandwidth,
  DescribeInstancesModification: parseDescribeInstancesModification,
  CreateSecurityGroup: parseCreateSecurityGroup,
  CreateSecurityGroupWithPolicies: parseCreateSecurityGroupWithPolicies,
  DescribeSecurityGroups: parseDescribeSecurityGroups,
  DeleteSecurityGroup: parseDeleteSecurityGroup,
  CreateSecurityGroupPolicies: parseCreateSecurityGroupPolicies,
  DescribeSecurityGroupPolicies: parseDescribeSecurityGroupPolicies,
  ModifySecurityGroupPolicies: parseModifySecurityGroupPolicies,
  ReplaceSecurityGroupPolicy: parseReplaceSecurityGroupPolicy,
  DeleteSecurityGroupPolicies: parseDeleteSecurityGroupPolicies,
  DescribeSecurityGroupAssociationStatistics: parseDescribeSecurityGroupAssociationStatistics,
  DescribeSecurityGroupLimits: parseDescribeSecurityGroupLimits,
  AssociateSecurityGroups: parseAssociateSecurityGroups,
  DisassociateSecurityGroups: parseDisassociateSecurityGroups,
  CreateNetworkInterface: parseCreateNetworkInterface,
  DescribeNetworkInterfaces: parseDescribeNetworkInterfaces,
  AttachNetworkInterface: parseAttachNetworkInterface,
  DetachNetworkInterface: parseDetachNetworkInterface,
  DeleteNetworkInterface: parseDeleteNetworkInterface,
  AssignPrivateIpAddresses: parseAssignPrivateIpAddresses,
  UnassignPrivateIpAddresses: parseUnassignPrivateIpAddresses,
  MigratePrivateIpAddress: parseMigratePrivateIpAddress,
  ModifyNetworkInterfaceAttribute: parseModifyNetworkInterfaceAttribute,
  DescribeVpcTaskResult: parseDescribeVpcTaskResult,
  GetMonitorData: parseGetMonitorData,
  DescribeBaseMetrics: parseDescribeBaseMetrics,
  ModifyAlarmPolicies: parseModifyAlarmPolicies,
  DescribeAlarmPolicies: parseDescribeAlarmPolicies,
  CreateInstanceDiagnosticReports: parseCreateInstanceDiagnosticReports,
  DescribeInstanceDiagnosticReports: parseDescribeInstanceDiagnosticReports,
  MigrateInstances: parseMigrateInstances,
  CancelMigrateInstances: parseCancelMigrateInstances,
  MigrationPeerStep: parseMigrationPeerStep,
  DescribeInstanceVncUrl: parseDescribeInstanceVncUrl,
  DescribeInstanceSerialConsoleUrl: parseDescribeInstanceSerialConsoleUrl,
  DescribeInstanceSerialLog: parseDescribeInstanceSerialLog,
};

export const ACTIONS: readonly Action[] = Object.freeze(Object.keys(PARSERS) as Action[]);

export function isAction(name: string): name is Action {
  return Object.prototype.hasOwnProperty.call(PARSERS, name);
}

/** Request fields whose values are secrets, at any depth (LoginSettings.Password, UserData, …). */
const SECRET_FIELD = /password|userdata|secret|privatekey/i;

/**
 * Registers every secret a request carries with the agent's sanitizer (drivers/exec/sanitize.ts),
 * before anything else reads the request: from here on no log line or command error shows it.
 * User data is registered as sent (base64) and decoded.
 */
export function registerRequestSecrets(body: unknown, depth = 0): void {
  if (depth > 8 || body === null || typeof body !== "object") return;
  for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
    if (typeof value === "string" && SECRET_FIELD.test(key)) {
      addSecret(value);
      if (/userdata/i.test(key)) addSecret(Buffer.from(value, "base64").toString("utf8"));
    } else if (typeof value === "object") {
      registerRequestSecrets(value, depth + 1);
    }
  }
}

/** Parses a request body for an action; throws ApiError (InvalidAction, MissingParameter, InvalidParameter…). */
export function parseCommand(action: string, body: unknown): Command {
  registerRequestSecrets(body);
  if (!isAction(action)) {
    throw new ApiError("InvalidAction", `action ${JSON.stringify(action)} does not exist on this host agent`);
  }
  const parse = PARSERS[action] as (body: unknown) => Command["params"];
  return { action, params: parse(body) } as Command;
}
