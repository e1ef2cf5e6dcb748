/** Instances as the CVM API shows them (Instance, InstanceStatus), with Describe's filters and paging. */
import { DomainError } from "../core/errors.js";
import type { InstanceState } from "../model.js";
import type { InstanceEntry, InstanceRegistry } from "./registry.js";

export interface Filter {
  Name: string;
  Values: string[];
}

export interface HostView {
  hostId: string;
  zone: string;
  /** The host's default security group: the group of records written before security groups. */
  defaultSecurityGroupId?: string;
}

/** The security groups of an instance, in priority order. */
function securityGroupsOf(entry: InstanceEntry, host: HostView): string[] {
  return [...(entry.record.securityGroupIds ?? (host.defaultSecurityGroupId ? [host.defaultSecurityGroupId] : []))];
}

/** A data disk as DescribeInstances shows it. */
export interface DataDiskView {
  diskId: string;
  diskType: string;
  sizeGiB: number;
  deleteWithInstance: boolean;
}

export function toCvmInstance(entry: InstanceEntry, state: InstanceState, host: HostView, dataDisks: readonly DataDiskView[] = []): Record<string, unknown> {
  const r = entry.record;
  const op = r.latestOperation;
  return {
    Placement: { Zone: host.zone, HostId: host.hostId, ProjectId: 0 },
    InstanceId: r.instanceId,
    Uuid: r.uuid,
    InstanceType: r.instanceType,
    CPU: r.cpu,
    Memory: r.memoryGiB,
    InstanceName: r.instanceName,
    InstanceChargeType: "CDHPAID",
    InstanceState: state,
    RestrictState: "NORMAL",
    SystemDisk: { DiskType: r.systemDisk.diskType, DiskSize: r.systemDisk.sizeGiB, DiskId: r.systemDisk.diskId ?? null },
    DataDisks: dataDisks.map((d) => ({ DiskType: d.diskType, DiskId: d.diskId, DiskSize: d.sizeGiB, DeleteWithInstance: d.deleteWithInstance })),
    PrivateIpAddresses: r.nics.flatMap((n) => (n.ipv4 ? [n.ipv4] : [])),
    PublicIpAddresses: [],
    ImageId: r.imageId,
    OsName: r.osName ?? null,
    CreatedTime: r.createdTime,
    LatestOperation: op?.action ?? null,
    LatestOperationState: op?.state ?? null,
    LatestOperationRequestId: op?.requestId ?? null,
    LatestOperationErrorMsg: op?.errorMessage ?? null,
    LatestOperationCode: op?.errorCode ?? null,
    // This agent's extension (README "Migration"): the figures of a migration under way.
    ...(entry.migration ? { MigrationProgress: { ...entry.migration } } : {}),
    StateReason: entry.stateReason && state === "STOPPED" ? { Code: entry.stateReason.code, Message: entry.stateReason.message, Time: entry.stateReason.at } : null,
    LoginSettings: { KeyIds: [...(r.login?.keyIds ?? [])], ...(r.login?.keepImage ? { KeepImageLogin: "TRUE" } : {}) },
    ...(r.nics[0]?.subnetId
      ? { VirtualPrivateCloud: { VpcId: r.nics[0].vpcId ?? null, SubnetId: r.nics[0].subnetId, AsVpcGateway: false, PrivateIpAddresses: r.nics[0].ipv4 ? [r.nics[0].ipv4] : [] } }
      : {}),
    DefaultLoginUser: r.osType === "windows" ? "Administrator" : "root",
    DefaultLoginPort: 22,
    Architecture: "x86_64",
    Hypervisor: 1,
    DisableApiTermination: r.disableApiTermination === true,
    Tags: (r.tags ?? []).map((t) => ({ Key: t.key, Value: t.value })),
    HostName: r.hostName ?? r.instanceId,
    MacAddresses: r.nics.map((n) => n.mac),
    SecurityGroupIds: securityGroupsOf(entry, host),
    // libvirt's default topology: one core per vCPU, one thread per core.
    CpuTopology: { CoreCount: r.cpu, ThreadPerCore: 1 },
    // No public address on a host; the cap on traffic leaving the VPC where a subnet has a route out
    // (README "Bandwidth and packet caps"), charged as CVM's default, TRAFFIC_POSTPAID_BY_HOUR.
    InternetAccessible: {
      InternetChargeType: r.internetMaxBandwidthOut ? "TRAFFIC_POSTPAID_BY_HOUR" : null,
      InternetMaxBandwidthOut: r.internetMaxBandwidthOut ?? 0,
      PublicIpAssigned: false,
    },
    IPv6Addresses: null,
    PublicIPv6Addresses: null,
    EnableJumboFrame: false,
    IsolatedSource: "NOTISOLATED",
    StopChargingMode: "NOT_APPLICABLE",
    // What cannot be true on one host (README "Instance fields"): billed with the host, no CAM,
    // no HPC/RDMA/CDC/GPU, no placement groups, no custom metadata.
    RenewFlag: null,
    ExpiredTime: null,
    CamRoleName: null,
    HpcClusterId: null,
    RdmaIpAddresses: null,
    DedicatedClusterId: null,
    DisasterRecoverGroupId: null,
    DisasterRecoverGroupIds: null,
    GPUInfo: null,
    LicenseType: null,
    Metadata: null,
    PartitionNumber: null,
  };
}

const FILTERS: Record<string, (entry: InstanceEntry, state: InstanceState, host: HostView) => string> = {
  zone: (_e, _s, h) => h.zone,
  "project-id": () => "0",
  uuid: (e) => e.record.uuid,
  "instance-charge-type": () => "CDHPAID",
  "instance-id": (e) => e.record.instanceId,
  "instance-name": (e) => e.record.instanceName,
  "instance-state": (_e, s) => s,
  "image-id": (e) => e.record.imageId,
  "private-ip-address": (e) => e.record.nics[0]?.ipv4 ?? "",
  "vpc-id": (e) => e.record.nics[0]?.vpcId ?? "",
  "subnet-id": (e) => e.record.nics[0]?.subnetId ?? "",
  "host-id": (_e, _s, h) => h.hostId,
};

/**
 * The tag filters: `tag-key` (the instance has a tag with one of these keys), `tag-value` (… with
 * one of these values) and `tag:<key>` (its tag <key> has one of these values); undefined for
 * any other name.
 */
function tagFilter(name: string, values: ReadonlySet<string>): ((entry: InstanceEntry) => boolean) | undefined {
  if (name === "tag-key") return (e) => (e.record.tags ?? []).some((t) => values.has(t.key));
  if (name === "tag-value") return (e) => (e.record.tags ?? []).some((t) => values.has(t.value));
  if (name.startsWith("tag:")) {
    const key = name.slice("tag:".length);
    return (e) => (e.record.tags ?? []).some((t) => t.key === key && values.has(t.value));
  }
  return undefined;
}

/**
 * creation-start-time / creation-end-time (`YYYY-MM-DD hh:mm:ss`, UTC): the instances made at or
 * after (at or before) one of the values; undefined for any other name.
 */
function creationFilter(name: string, values: readonly string[]): ((entry: InstanceEntry) => boolean) | undefined {
  if (name !== "creation-start-time" && name !== "creation-end-time") return undefined;
  const times = values.map((v) => {
    const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})$/.exec(v);
    const t = m ? Date.parse(`${m[1]}T${m[2]}Z`) : NaN;
    if (Number.isNaN(t)) throw new DomainError("BadValue", `Filters ${name}: ${JSON.stringify(v)} is not a time of the form YYYY-MM-DD hh:mm:ss`);
    return t;
  });
  const after = name === "creation-start-time";
  return (e) => {
    const created = Date.parse(e.record.createdTime);
    return times.some((t) => (after ? created >= t : created <= t));
  };
}

/** The registry's entries by creation (time, then launch index), sorted again only when membership changed. */
const creationOrder = new WeakMap<InstanceRegistry, { membership: number; entries: InstanceEntry[] }>();

function inCreationOrder(registry: InstanceRegistry): readonly InstanceEntry[] {
  const cached = creationOrder.get(registry);
  if (cached && cached.membership === registry.membership) return cached.entries;
  const entries = [...registry.all()].sort(
    (a, b) => (a.record.createdTime < b.record.createdTime ? -1 : a.record.createdTime > b.record.createdTime ? 1 : a.record.launchIndex - b.record.launchIndex),
  );
  creationOrder.set(registry, { membership: registry.membership, entries });
  return entries;
}

/** Filters are ANDed; the values within one filter are ORed (seed API §2.4). */
export function selectInstances(options: {
  registry: InstanceRegistry;
  host: HostView;
  instanceIds?: string[];
  filters?: Filter[];
  offset: number;
  limit: number;
}): { total: number; page: Array<{ entry: InstanceEntry; state: InstanceState }> } {
  const { registry, host } = options;
  let rows: Array<{ entry: InstanceEntry; state: InstanceState }>;
  if (options.instanceIds?.length) {
    rows = [...new Set(options.instanceIds)].flatMap((id) => {
      const entry = registry.get(id);
      return entry ? [{ entry, state: registry.stateOf(entry) }] : [];
    });
  } else {
    rows = inCreationOrder(registry).map((entry) => ({ entry, state: registry.stateOf(entry) }));
  }
  for (const f of options.filters ?? []) {
    if (f.Name === "security-group-id") {
      const wanted = new Set(f.Values);
      rows = rows.filter((r) => securityGroupsOf(r.entry, host).some((g) => wanted.has(g)));
      continue;
    }
    const byTag = tagFilter(f.Name, new Set(f.Values)) ?? creationFilter(f.Name, f.Values);
    if (byTag) {
      rows = rows.filter((r) => byTag(r.entry));
      continue;
    }
    const get = FILTERS[f.Name];
    // The API edge refuses names it does not know (InvalidFilter): none reaches here unmatched.
    if (!get) throw new Error(`DescribeInstances: no filter ${f.Name}`);
    const wanted = new Set(f.Values);
    rows = rows.filter((r) => wanted.has(get(r.entry, r.state, host)));
  }
  return { total: rows.length, page: rows.slice(options.offset, options.offset + options.limit) };
}
