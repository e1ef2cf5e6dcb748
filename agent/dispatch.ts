/**
 * The one dispatcher: every parsed API command is routed here by one exhaustive
 * switch. HTTP (and, later, the command line or scheduled jobs) only build commands.
 */
import { storedOsFamily } from "./os-family.js";
import { randomUUID } from "node:crypto";
import type { Command } from "./api/commands.js";
import type { Dispatch } from "./api/server.js";
import type { HostResource } from "./capacity.js";
import { ApiError } from "./errors.js";
import { toApiError } from "./api/error-map.js";
import { DomainError, dryRunStop } from "./core/errors.js";
import { hostMatches, toHostItem, type HostIdentity, type HostNameStore } from "./host.js";
import type { ImageCatalog } from "./images/catalog.js";
import type { ImageRecord } from "./images/model.js";
import { imageFilterField, toCvmImage } from "./images/views.js";
import type { InstanceRegistry } from "./instances/registry.js";
import type { InstanceOperations } from "./instances/index.js";
import type { RunRequest } from "./instances/launch.js";
import type { KeyPairStore } from "./logins/keypairs.js";
import { checkPassword, type OsType } from "./logins/password.js";
import { selectInstances, toCvmInstance } from "./instances/views.js";
import { expandInstanceNames } from "./api/commands.js";
import type { DiskStore } from "./disks/store.js";
import type { DiskService } from "./disks/service.js";
import type { SnapshotService } from "./disks/snapshots.js";
import type { DataPaths } from "./paths.js";
import { checkIsoUrl, fetchIso } from "./instances/iso.js";
import type { SecurityGroupService } from "./network/security-groups/service.js";
import type { EniService } from "./network/enis/service.js";
import { checkPlacement } from "./api/placement.js";
import { resolveWindow } from "./api/schemas-monitor.js";
import type { MonitorReader } from "./monitor/monitor.js";
import type { AlarmService } from "./metrics/alarm-service.js";
import type { DiagnosticsService } from "./metrics/diagnostics.js";
import { describeBaseMetrics, getMonitorData } from "./api/monitor-views.js";
import type { MigrationService } from "./migration/service.js";
import type { ConsoleAccess } from "./console/access.js";
import { readSerialLog } from "./console/serial-log.js";

export interface DispatcherDeps {
  instances: InstanceOperations;
  images: ImageCatalog;
  registry: InstanceRegistry;
  identity: HostIdentity;
  /** Keeps the host name ModifyHostsAttribute sets (agent/host.ts); identity.hostName follows it. */
  hostNames?: Pick<HostNameStore, "save">;
  hostResource: () => HostResource;
  libvirtConnected: () => boolean;
  keyPairs: KeyPairStore;
  disks: DiskStore;
  diskService: DiskService;
  snapshots: SnapshotService;
  /** Security groups: the VPC actions and the CVM bindings. */
  securityGroups: SecurityGroupService;
  /** Elastic network interfaces (the VPC ENI actions); absent, they answer UnsupportedOperation. */
  enis?: EniService;
  /** The host monitor's series (GetMonitorData); Date.now() seconds by default as its clock. */
  monitor: Pick<MonitorReader, "query">;
  /** Alarms and the self-check (agent/metrics); absent, their actions answer UnsupportedOperation. */
  alarms?: AlarmService;
  diagnostics?: DiagnosticsService;
  nowS?: () => number;
  paths: DataPaths;
  /** The consoles' one-time URLs (agent/console/access.ts); absent: DescribeInstanceVncUrl answers UnsupportedOperation. */
  consoles?: Pick<ConsoleAccess, "issueUrl">;
  /** Migration (agent/migration); absent, its actions answer UnsupportedOperation. */
  migration?: MigrationService;
  /** ISO limits (InstanceAttachISO). */
  maxIsoBytes: number;
  downloadTimeoutMs: number;
  /** ResetInstancesInternetMaxBandwidth (agent/network/bandwidth/reset.ts); absent: UnsupportedOperation. */
  resetInternetMaxBandwidth?: (instanceIds: readonly string[], mbps: number) => Promise<void>;
}

/** Mutating actions answer with a TaskId at once; progress shows in the instances' states. */
function task(): { TaskId: string } {
  return { TaskId: randomUUID() };
}

function dryRun(flag: boolean): void {
  if (flag) throw dryRunStop();
}

/** The image's OS family, as DescribeImages shows it in OsType. */
function osTypeOf(image: ImageRecord): OsType {
  return storedOsFamily(image.osType);
}

type RunParams = Extract<Command, { action: "RunInstances" }>["params"];

/**
 * VirtualPrivateCloud → RunRequest.vpc. The service takes at most one address (the
 * primary NIC's, for a single instance; a batch gets addresses from the subnet), so
 * PrivateIpAddresses may name at most one. The public gateway and IPv6 do not exist on
 * this host and are refused rather than ignored.
 */
function toVpc(vpc: NonNullable<RunParams["virtualPrivateCloud"]>): NonNullable<RunRequest["vpc"]> {
  const ips = vpc.privateIpAddresses ?? [];
  if (ips.length > 1) {
    throw new ApiError(
      "InvalidParameterValue",
      `\`VirtualPrivateCloud.PrivateIpAddresses\` names ${ips.length} addresses; at most one (the primary NIC's) is supported`,
    );
  }
  if (vpc.asVpcGateway) throw new ApiError("InvalidParameterValue", "`VirtualPrivateCloud.AsVpcGateway` is not supported: there is no public network on this host");
  if (vpc.ipv6AddressCount) throw new ApiError("InvalidParameterValue", "`VirtualPrivateCloud.Ipv6AddressCount` is not supported: guests get IPv4 only");
  return { vpcId: vpc.vpcId, subnetId: vpc.subnetId, ...(ips[0] !== undefined ? { privateIpAddress: ips[0] } : {}) };
}

export function createDispatcher(deps: DispatcherDeps): Dispatch {
  const { instances, images, registry, identity, keyPairs } = deps;
  const sg = deps.securityGroups;
  const host = {
    hostId: identity.hostId,
    zone: identity.zone,
    get defaultSecurityGroupId(): string {
      return sg.defaultGroupId;
    },
  };

  /** Every key ID names a key pair of this host, or InvalidKeyPairId.NotFound naming the field. */
  async function requireKeyPairs(keyIds: readonly string[], field: string): Promise<void> {
    for (const [i, keyId] of keyIds.entries()) {
      if (!(await keyPairs.get(keyId))) throw new ApiError("InvalidKeyPairId.NotFound", `\`${field}.${i}\` key pair ${keyId} does not exist`);
    }
  }

  /** RunInstances' LoginSettings, checked against the image's OS and the key pair store. */
  async function toLogin(p: RunParams): Promise<RunRequest["login"]> {
    const login = p.loginSettings;
    if (!login) return undefined;
    // An unknown image is the service's InvalidImageId.NotFound; it re-checks the password then.
    const image = images.get(p.imageId);
    const osType = image ? osTypeOf(image) : undefined;
    if (login.password !== undefined && osType) checkPassword(login.password, osType, { field: "LoginSettings.Password" });
    if (login.keyIds?.length) {
      if (osType === "windows") {
        throw new ApiError("InvalidParameterValue.KeyPairNotSupported", `\`LoginSettings.KeyIds\` image ${p.imageId} is Windows, which logs in with a password only`);
      }
      await requireKeyPairs(login.keyIds, "LoginSettings.KeyIds");
    }
    return {
      ...(login.password !== undefined ? { password: login.password } : {}),
      ...(login.keyIds ? { keyIds: [...login.keyIds] } : {}),
      keepImageLogin: login.keepImageLogin,
    };
  }

  function enis(): EniService {
    if (!deps.enis) throw new ApiError("UnsupportedOperation", "elastic network interfaces are not served by this agent");
    return deps.enis;
  }

  // Every answer passes the error map: the domain's errors become CVM codes in one table.
  return async (command: Command, context) => {
    try {
      return await handle(command, { requestId: context.requestId, ...(context.host !== undefined ? { host: context.host } : {}) });
    } catch (error) {
      throw toApiError(error);
    }
  };

  async function handle(command: Command, ctx: { requestId: string; host?: string }): Promise<Record<string, unknown>> {
    switch (command.action) {
      case "RunInstances": {
        const p = command.params;
        checkPlacement(p.placement, host);
        const dataDisks = p.dataDisks.map((d, i) => {
          if (d.diskId !== undefined) throw new ApiError("InvalidParameterValue", `\`DataDisks.${i}.DiskId\` cannot be chosen: local disks get their ID when they are made`);
          if (d.snapshotId !== undefined) throw new ApiError("InvalidParameterValue", `\`DataDisks.${i}.SnapshotId\` is not supported: make the disk, then ApplySnapshot`);
          return { diskType: d.diskType, sizeGiB: d.diskSizeGiB, deleteWithInstance: d.deleteWithInstance };
        });
        const vpc = p.virtualPrivateCloud ? toVpc(p.virtualPrivateCloud) : undefined;
        const login = await toLogin(p);
        const names = p.instanceName ? expandInstanceNames(p.instanceName, p.instanceCount) : Array.from({ length: p.instanceCount }, () => "");
        const ids = await instances.launch.run(
          {
            instanceType: p.instanceType,
            cpu: p.cpu,
            memoryGiB: p.memoryGiB,
            imageId: p.imageId,
            systemDisk: { diskType: p.systemDisk.diskType, sizeGiB: p.systemDisk.diskSizeGiB },
            names,
            ...(p.hostName ? { hostName: p.hostName } : {}),
            ...(p.userData ? { userData: p.userData } : {}),
            ...(p.clientToken ? { clientToken: p.clientToken } : {}),
            ...(login ? { login } : {}),
            ...(vpc ? { vpc } : {}),
            ...(dataDisks.length ? { dataDisks } : {}),
            ...(p.disableApiTermination ? { disableApiTermination: true } : {}),
            ...(p.tags.length ? { tags: p.tags } : {}),
            securityGroupIds: sg.launchGroups(p.securityGroupIds),
            ...(p.internetMaxBandwidthOut ? { internetMaxBandwidthOut: p.internetMaxBandwidthOut } : {}),
            dryRun: p.dryRun,
          },
          ctx,
        );
        return { InstanceIdSet: ids };
      }
      case "DescribeInstances": {
        const p = command.params;
        const { total, page } = selectInstances({
          registry,
          host,
          ...(p.instanceIds ? { instanceIds: p.instanceIds } : {}),
          filters: p.filters.map((f) => ({ Name: f.name, Values: f.values })),
          offset: p.offset,
          limit: p.limit,
        });
        return { TotalCount: total, InstanceSet: page.map((r) => toCvmInstance(r.entry, r.state, host, deps.disks.attachedTo(r.entry.record.instanceId))) };
      }
      case "DescribeInstancesStatus": {
        const p = command.params;
        const { total, page } = selectInstances({ registry, host, ...(p.instanceIds ? { instanceIds: p.instanceIds } : {}), offset: p.offset, limit: p.limit });
        return { TotalCount: total, InstanceStatusSet: page.map((r) => ({ InstanceId: r.entry.record.instanceId, InstanceState: r.state })) };
      }
      case "StartInstances":
        instances.powerOps.start(command.params.instanceIds, ctx);
        return task();
      case "StopInstances": {
        const p = command.params;
        if (p.dryRun) {
          instances.ops.validate(p.instanceIds, p.stopType === "HARD" ? "StopInstancesHard" : "StopInstances");
          dryRun(true);
        }
        instances.powerOps.stop(p.instanceIds, p.stopType, ctx);
        return task();
      }
      case "RebootInstances":
        instances.powerOps.reboot(command.params.instanceIds, command.params.mode, ctx);
        return task();
      case "TerminateInstances": {
        const p = command.params;
        if (p.dryRun) {
          instances.terminate.check(p.instanceIds);
          dryRun(true);
        }
        await instances.terminate.terminate(p.instanceIds, ctx);
        return task();
      }
      case "ModifyInstancesAttribute": {
        const p = command.params;
        if (p.securityGroups) {
          // The firewall takes the new groups before the answer; LatestOperation shows the change.
          await sg.replaceGroups(p.securityGroups, p.instanceIds, ctx);
          return {};
        }
        await instances.attributes.modify(p.instanceIds, {
          ...(p.instanceName !== undefined ? { instanceName: p.instanceName } : {}),
          ...(p.disableApiTermination !== undefined ? { disableApiTermination: p.disableApiTermination } : {}),
        });
        return {};
      }
      case "ImportImage": {
        const p = command.params;
        if (p.dryRun) {
          await images.checkImport({ ImageName: p.imageName, ImageUrl: p.imageUrl });
          dryRun(true);
        }
        const imageId = await images.startImport({
          ImageUrl: p.imageUrl,
          ImageName: p.imageName,
          ImageDescription: p.imageDescription,
          OsType: p.osType,
          OsVersion: p.osVersion,
          Architecture: p.architecture,
          BootMode: p.bootMode,
          Tags: p.tags,
        });
        return { ImageId: imageId, ...task() };
      }
      case "DescribeImages": {
        const p = command.params;
        let rows = p.imageIds ? p.imageIds.flatMap((id) => images.get(id) ?? []) : images.list();
        for (const f of p.filters) {
          const values = new Set(f.values);
          rows = rows.filter((r) => values.has(imageFilterField(r, f.name)));
        }
        return { TotalCount: rows.length, ImageSet: rows.slice(p.offset, p.offset + p.limit).map(toCvmImage) };
      }
      case "DeleteImages": {
        const p = command.params;
        if (p.dryRun) {
          images.checkDelete(p.imageIds);
          dryRun(true);
        }
        await images.delete(p.imageIds);
        return {};
      }
      case "DescribeHosts": {
        const p = command.params;
        const state = deps.libvirtConnected() ? "RUNNING" : "UNKNOWN";
        const matches = hostMatches(identity, state, p.filters.map((f) => ({ Name: f.name, Values: f.values })));
        const items = matches
          ? [toHostItem({ identity, resource: deps.hostResource(), instanceIds: [...registry.all()].map((e) => e.record.instanceId), state })]
          : [];
        return { TotalCount: items.length, HostSet: items.slice(p.offset, p.offset + p.limit) };
      }
      case "ModifyHostsAttribute": {
        const p = command.params;
        const others = p.hostIds.filter((id) => id !== identity.hostId);
        if (others.length) throw new DomainError("HostNotFound", `HostIds: ${others.join(", ")} ${others.length > 1 ? "are" : "is"} not this host (${identity.hostId})`);
        if (p.hostName !== undefined && p.hostName !== identity.hostName) {
          if (!deps.hostNames) throw new Error("ModifyHostsAttribute: no host name store is wired");
          await deps.hostNames.save(p.hostName);
          identity.hostName = p.hostName;
        }
        return {};
      }
      case "ImportKeyPair": {
        const p = command.params;
        const keyPair = await keyPairs.importKeyPair({ keyName: p.keyName, projectId: p.projectId, publicKey: p.publicKey });
        return { KeyId: keyPair.KeyId };
      }
      case "CreateKeyPair": {
        // The private key is in this answer only; the store keeps the public half.
        const p = command.params;
        return { KeyPair: await keyPairs.createKeyPair({ keyName: p.keyName, projectId: p.projectId }) };
      }
      case "DescribeKeyPairs": {
        const p = command.params;
        const { totalCount, keyPairSet } = await keyPairs.describeKeyPairs({
          ...(p.keyIds ? { keyIds: p.keyIds } : {}),
          filters: p.filters,
          offset: p.offset,
          limit: p.limit,
        });
        return { TotalCount: totalCount, KeyPairSet: keyPairSet };
      }
      case "DeleteKeyPairs":
        await keyPairs.deleteKeyPairs(command.params.keyIds);
        return {};
      case "AssociateInstancesKeyPairs": {
        const p = command.params;
        await requireKeyPairs(p.keyIds, "KeyIds");
        await instances.logins.associateKeyPairs({ instanceIds: p.instanceIds, keyIds: p.keyIds, forceStop: p.forceStop }, ctx);
        return {};
      }
      case "DisassociateInstancesKeyPairs": {
        const p = command.params;
        await requireKeyPairs(p.keyIds, "KeyIds");
        await instances.logins.disassociateKeyPairs({ instanceIds: p.instanceIds, keyIds: p.keyIds, forceStop: p.forceStop }, ctx);
        return {};
      }
      case "ResetInstancesPassword": {
        const p = command.params;
        // The request does not say the OS: the Linux rule is the looser one, so nothing a
        // Windows instance would take is refused here; the service re-checks per instance.
        checkPassword(p.password, "linux", { field: "Password" });
        await instances.logins.resetPassword(
          { instanceIds: p.instanceIds, password: p.password, forceStop: p.forceStop, ...(p.userName !== undefined ? { userName: p.userName } : {}) },
          ctx,
        );
        return {};
      }
      case "ResetInstance": {
        const p = command.params;
        // SystemDisk.DiskType and DiskId may only name the disk the instance has (a reinstall keeps it).
        const sd = registry.get(p.instanceId)?.record.systemDisk;
        if (sd && p.systemDiskType !== undefined && p.systemDiskType !== sd.diskType) {
          throw new ApiError("InvalidParameterValue", `\`SystemDisk.DiskType\` cannot change on a reinstall: ${p.instanceId}'s system disk is ${sd.diskType}`);
        }
        if (sd && p.systemDiskId !== undefined && p.systemDiskId !== sd.diskId) {
          throw new ApiError("InvalidParameterValue", `\`SystemDisk.DiskId\` ${p.systemDiskId} is not ${p.instanceId}'s system disk (${sd.diskId ?? "none"})`);
        }
        const l = p.loginSettings;
        if (l?.keyIds?.length) await requireKeyPairs(l.keyIds, "LoginSettings.KeyIds");
        await instances.reinstall.reset(
          {
            instanceId: p.instanceId,
            ...(p.imageId !== undefined ? { imageId: p.imageId } : {}),
            ...(p.systemDiskGiB !== undefined ? { systemDiskGiB: p.systemDiskGiB } : {}),
            ...(l ? { login: l } : {}),
            ...(p.hostName !== undefined ? { hostName: p.hostName } : {}),
            ...(p.userData !== undefined ? { userData: p.userData } : {}),
            dryRun: p.dryRun,
          },
          ctx,
        );
        return task();
      }
      case "CreateImage": {
        const p = command.params;
        const { imageId } = await instances.capture.createImage(
          { instanceId: p.instanceId, imageName: p.imageName, ...(p.imageDescription !== undefined ? { imageDescription: p.imageDescription } : {}), cleanGuest: p.cleanGuest, dryRun: p.dryRun },
          ctx,
        );
        return { ImageId: imageId };
      }
      case "CloneInstance": {
        // A whole-machine image of the source, then new instances from it with the source's
        // size and subnet (unless the request says otherwise). Answers once the image is made.
        const p = command.params;
        checkPlacement({ zone: p.zone, hostId: p.hostId, hostIds: p.hostIds }, host);
        // ClientToken: a repeated request answers with the instances the first one made, before any image is made again.
        const earlier = p.clientToken
          ? [...registry.all()].filter((e) => e.record.clientToken === p.clientToken).sort((a, b) => a.record.launchIndex - b.record.launchIndex)
          : [];
        if (earlier.length) return { InstanceIdSet: earlier.map((e) => e.record.instanceId) };
        const source = registry.get(p.instanceId);
        if (!source) throw new ApiError("InvalidInstanceId.NotFound", `no such instance on this host: ${p.instanceId}`);
        if (p.dataDiskIds.length || deps.disks.attachedTo(p.instanceId).length) {
          throw new ApiError("UnsupportedOperation.InvalidDataDisk", `instance ${p.instanceId} has data disks; a clone is made of instances without data disks (detach them first)`);
        }
        const l = p.loginSettings;
        if (l?.keyIds?.length) await requireKeyPairs(l.keyIds, "LoginSettings.KeyIds");
        const rec = source.record;
        const nic = rec.nics[0];
        const vpc = p.virtualPrivateCloud
          ? toVpc(p.virtualPrivateCloud)
          : nic?.subnetId && nic.vpcId ? { vpcId: nic.vpcId, subnetId: nic.subnetId } : undefined;
        const { imageId, done } = await instances.capture.createImage({ instanceId: p.instanceId, imageName: `clone-${p.instanceId}-${Date.now()}` }, ctx);
        await done;
        const names = p.instanceName ? expandInstanceNames(p.instanceName, p.instanceCount) : Array.from({ length: p.instanceCount }, () => "");
        const ids = await instances.launch.run(
          {
            instanceType: p.type?.name ?? rec.instanceType,
            cpu: p.type?.cpu ?? rec.cpu,
            memoryGiB: p.type?.memoryGiB ?? rec.memoryGiB,
            imageId,
            systemDisk: { diskType: p.systemDiskType ?? rec.systemDisk.diskType, sizeGiB: p.systemDiskGiB ?? rec.systemDisk.sizeGiB },
            names,
            ...(p.hostName ? { hostName: p.hostName } : {}),
            ...(p.userData ? { userData: p.userData } : {}),
            ...(p.clientToken ? { clientToken: p.clientToken } : {}),
            ...(l ? { login: l } : {}),
            ...(vpc ? { vpc } : {}),
            ...(p.disableApiTermination ? { disableApiTermination: true } : {}),
            securityGroupIds: sg.launchGroups(p.securityGroupIds ?? [...sg.groupsOf(rec)]),
          },
          ctx,
        );
        return { InstanceIdSet: ids };
      }
      case "EnterRescueMode":
        instances.rescue.enterRescue(command.params, ctx);
        return {};
      case "ExitRescueMode":
        instances.rescue.exitRescue(command.params, ctx);
        return {};
      case "InstanceAttachISO": {
        const p = command.params;
        instances.ops.validate([p.instanceId], "InstanceAttachISO");
        await checkIsoUrl(p.imageUrl);
        dryRun(p.dryRun);
        await fetchIso(p.imageUrl, deps.paths.attachedIso(p.instanceId), { maxBytes: deps.maxIsoBytes, timeoutMs: deps.downloadTimeoutMs });
        await instances.iso.attachIso({ instanceId: p.instanceId, file: deps.paths.attachedIso(p.instanceId), url: p.imageUrl }, ctx);
        return {};
      }
      case "InstanceDetachISO":
        await instances.iso.detachIso(command.params, ctx);
        return {};
      case "ResetInstancesType":
        await instances.retype.retype(command.params, ctx);
        return {};
      case "ModifyInstancesVpcAttribute":
        await instances.vpcAttribute.modify(command.params, ctx);
        return {};
      case "ResetInstancesInternetMaxBandwidth": {
        if (!deps.resetInternetMaxBandwidth) throw new ApiError("UnsupportedOperation", "this agent enforces no bandwidth caps");
        await deps.resetInternetMaxBandwidth(command.params.instanceIds, command.params.internetMaxBandwidthOut);
        return {};
      }
      case "DescribeInstancesModification": {
        const p = command.params;
        const set = (await instances.retype.modification(p.instanceIds))
          .filter((m) => !p.statuses || p.statuses.includes(m.status))
          .map((m) => ({
            Status: m.status,
            Message: m.message,
            InstanceTypeConfig: {
              Zone: identity.zone,
              InstanceType: `CDH_${m.size.cpu}C${m.size.memoryGiB}G`,
              InstanceFamily: "CDH",
              GPU: 0,
              CPU: m.size.cpu,
              Memory: m.size.memoryGiB,
              FPGA: 0,
            },
          }));
        return { TotalCount: set.length, InstanceTypeConfigStatusSet: set };
      }
      case "CreateDisks": {
        checkPlacement({ zone: command.params.zone }, host);
        const ids = await deps.diskService.create(command.params);
        return { DiskIdSet: ids };
      }
      case "AttachDisks":
        await deps.diskService.attach(command.params);
        return {};
      case "DetachDisks":
        await deps.diskService.detach(command.params);
        return {};
      case "DescribeDisks": {
        const { total, disks } = deps.diskService.describe(command.params);
        // ReturnBindAutoSnapshotPolicy: no disk here is bound to an automatic snapshot policy.
        return { TotalCount: total, DiskSet: command.params.withAutoSnapshotPolicies ? disks.map((d) => ({ ...d, AutoSnapshotPolicyIds: [] })) : disks };
      }
      case "TerminateDisks":
        await deps.diskService.terminate(command.params.diskIds);
        return {};
      case "ResizeInstanceDisks": {
        const p = command.params;
        // DiskType and DiskId may only restate the disks' own (a resize changes sizes only).
        const sd = registry.get(p.instanceId)?.record.systemDisk;
        if (sd && p.systemDiskType !== undefined && p.systemDiskType !== sd.diskType) {
          throw new ApiError("InvalidParameterValue", `\`SystemDisk.DiskType\` cannot change: ${p.instanceId}'s system disk is ${sd.diskType}`);
        }
        if (sd && p.systemDiskId !== undefined && p.systemDiskId !== sd.diskId) {
          throw new ApiError("InvalidParameterValue", `\`SystemDisk.DiskId\` ${p.systemDiskId} is not ${p.instanceId}'s system disk (${sd.diskId ?? "none"})`);
        }
        p.dataDisks.forEach((d, i) => {
          const own = deps.disks.get(d.diskId)?.diskType;
          if (d.diskType !== undefined && own !== undefined && d.diskType !== own) {
            throw new ApiError("InvalidParameterValue", `\`DataDisks.${i}.DiskType\` cannot change: disk ${d.diskId} is ${own}`);
          }
        });
        instances.resize.resizeDisks(
          { instanceId: p.instanceId, ...(p.systemDiskGiB !== undefined ? { systemDiskGiB: p.systemDiskGiB } : {}), dataDisks: p.dataDisks, resizeOnline: p.resizeOnline, forceStop: p.forceStop, dryRun: p.dryRun },
          ctx,
        );
        return task();
      }
      case "CreateSnapshot":
        return { SnapshotId: await deps.snapshots.create(command.params) };
      case "DescribeSnapshots": {
        const { total, snapshots } = deps.snapshots.describe(command.params);
        return { TotalCount: total, SnapshotSet: snapshots };
      }
      case "DeleteSnapshots":
        await deps.snapshots.delete(command.params.snapshotIds);
        return {};
      case "ApplySnapshot":
        await deps.snapshots.apply(command.params);
        return {};
      case "CreateSecurityGroup":
      case "CreateSecurityGroupWithPolicies": {
        const p = command.params;
        return { SecurityGroup: await sg.createGroup(p) };
      }
      case "DescribeSecurityGroups":
        return sg.describeGroups(command.params);
      case "DeleteSecurityGroup":
        await sg.deleteGroup(command.params.securityGroupId);
        return {};
      case "CreateSecurityGroupPolicies":
        await sg.createPolicies(command.params.securityGroupId, command.params.policySet);
        return {};
      case "DescribeSecurityGroupPolicies":
        return { SecurityGroupPolicySet: sg.describePolicies(command.params.securityGroupId, command.params.filters) };
      case "ModifySecurityGroupPolicies": {
        const p = command.params;
        await sg.modifyPolicies(p.securityGroupId, p.policySet, p.sortPolicys);
        return {};
      }
      case "ReplaceSecurityGroupPolicy": {
        const p = command.params;
        await sg.replacePolicy(p.securityGroupId, p.policySet, p.original);
        return {};
      }
      case "DeleteSecurityGroupPolicies":
        await sg.deletePolicies(command.params.securityGroupId, command.params.policySet);
        return {};
      case "DescribeSecurityGroupAssociationStatistics":
        return { SecurityGroupAssociationStatisticsSet: sg.associationStatistics(command.params.securityGroupIds) };
      case "DescribeSecurityGroupLimits":
        return { SecurityGroupLimitSet: sg.limits() };
      case "AssociateSecurityGroups":
        await sg.associate(command.params.securityGroupId, command.params.instanceIds, ctx);
        return {};
      case "DisassociateSecurityGroups":
        await sg.disassociate(command.params.securityGroupId, command.params.instanceIds, ctx);
        return {};
      case "CreateNetworkInterface":
        return { NetworkInterface: await enis().create(command.params, ctx) };
      case "DescribeNetworkInterfaces":
        return enis().describe(command.params);
      case "AttachNetworkInterface":
        await enis().attach(command.params, ctx);
        return {};
      case "DetachNetworkInterface":
        await enis().detach(command.params, ctx);
        return {};
      case "DeleteNetworkInterface":
        await enis().delete(command.params.eniId, ctx);
        return {};
      case "AssignPrivateIpAddresses":
        return { PrivateIpAddressSet: await enis().assign(command.params, ctx) };
      case "UnassignPrivateIpAddresses":
        await enis().unassign(command.params, ctx);
        return {};
      case "MigratePrivateIpAddress":
        await enis().migrate(command.params, ctx);
        return {};
      case "ModifyNetworkInterfaceAttribute":
        await enis().modify(command.params, ctx);
        return {};
      case "DescribeVpcTaskResult":
        return enis().taskResult(command.params.taskId);
      case "GetMonitorData": {
        const p = command.params;
        return getMonitorData(deps.monitor, p, resolveWindow(p, deps.nowS?.() ?? Math.floor(Date.now() / 1000)));
      }
      case "DescribeBaseMetrics":
        return describeBaseMetrics(command.params);
      case "ModifyAlarmPolicies":
        if (!deps.alarms) throw new ApiError("UnsupportedOperation", "alarms are not served by this agent");
        deps.alarms.setPolicies(command.params.rules);
        return {};
      case "DescribeAlarmPolicies":
        if (!deps.alarms) throw new ApiError("UnsupportedOperation", "alarms are not served by this agent");
        return deps.alarms.describe();
      case "CreateInstanceDiagnosticReports": {
        if (!deps.diagnostics) throw new ApiError("UnsupportedOperation", "the self-check is not served by this agent");
        const reports = await deps.diagnostics.create(command.params.instanceIds);
        return { ReportIds: reports.map((r) => r.ReportId), DiagnosticReportSet: reports };
      }
      case "DescribeInstanceDiagnosticReports": {
        if (!deps.diagnostics) throw new ApiError("UnsupportedOperation", "the self-check is not served by this agent");
        const set = deps.diagnostics.describe(command.params);
        return { TotalCount: set.length, DiagnosticReportSet: set };
      }
      case "DescribeInstanceVncUrl":
        if (!deps.consoles) throw new ApiError("UnsupportedOperation", "the console is not served by this agent");
        return { InstanceVncUrl: deps.consoles.issueUrl("vnc", command.params.instanceId, ctx.host) };
      case "DescribeInstanceSerialConsoleUrl":
        if (!deps.consoles) throw new ApiError("UnsupportedOperation", "the console is not served by this agent");
        return { InstanceSerialConsoleUrl: deps.consoles.issueUrl("serial", command.params.instanceId, ctx.host) };
      case "DescribeInstanceSerialLog": {
        const p = command.params;
        if (!registry.get(p.instanceId)) throw new DomainError("InstanceNotFound", `no such instance on this host: ${p.instanceId}`);
        const piece = await readSerialLog(deps.paths.consoleLog(p.instanceId), p.offset, p.limit);
        return { InstanceId: p.instanceId, Log: piece.text, Offset: piece.offset, NextOffset: piece.nextOffset, Size: piece.size };
      }
      case "MigrateInstances":
        if (!deps.migration) throw new ApiError("UnsupportedOperation", "migration is not served by this agent");
        deps.migration.migrate(command.params, ctx);
        return {};
      case "CancelMigrateInstances":
        if (!deps.migration) throw new ApiError("UnsupportedOperation", "migration is not served by this agent");
        deps.migration.cancel(command.params.instanceIds);
        return {};
      case "MigrationPeerStep":
        if (!deps.migration) throw new ApiError("UnsupportedOperation", "migration is not served by this agent");
        return deps.migration.peerStep(command.params);
      default: {
        const unreachable: never = command;
        throw new ApiError("InvalidAction", `action ${(unreachable as { action: string }).action} is not handled`);
      }
    }
  }
}
