/**
 * Instance record → what its guest should know (GuestConfig), purely. The config
 * drive and every metadata tree are rendered from this one value.
 */
import type { GuestConfig, GuestKey, GuestNic, GuestSecurityGroup } from "../../cloud-init/types.js";
import type { Subnet } from "../network/subnets.js";
import type { InstanceRecord, NicRecord } from "../model.js";
import { intranetCap, type IntranetRule } from "../network/bandwidth/rule.js";

export interface GuestHostSettings {
  subnets: readonly Subnet[];
  hostId: string;
  zone: string;
  region: string;
  ntpServers: readonly string[];
  /** The intranet cap rule when caps are enforced (agent/network/bandwidth/rule.ts); absent: none shown. */
  intranetRule?: IntranetRule;
}

export function guestConfigOf(options: {
  record: InstanceRecord;
  host: GuestHostSettings;
  keys: readonly GuestKey[];
  /** Windows only: the plain password, from its root-only file. */
  windowsPassword?: string;
  /** The instance's security groups, in priority order. */
  securityGroups?: readonly GuestSecurityGroup[];
  /** A NIC's own security groups (NicRecord.securityGroupIds, named), for a NIC that has its own. */
  nicSecurityGroups?: (nic: NicRecord) => readonly GuestSecurityGroup[];
}): GuestConfig {
  const { record, host } = options;
  const windows = record.osType === "windows";
  // Every NIC of the record, in its order (the primary first), with its secondary addresses;
  // a NIC on a subnet this host does not have, or without an address, is not the guest's to configure.
  const nics = record.nics.flatMap((nic, index): GuestNic[] => {
    const subnet = host.subnets.find((s) => s.subnetId === nic.subnetId);
    if (!subnet || !nic.ipv4) return [];
    // The primary NIC always follows the instance's groups (agent/model.ts).
    const ownGroups = index > 0 && nic.securityGroupIds !== undefined ? options.nicSecurityGroups?.(nic) : undefined;
    return [
      {
        mac: nic.mac,
        ipv4: nic.ipv4,
        prefixLength: subnet.prefixLength,
        gateway: subnet.gateway,
        vpcId: subnet.vpcId,
        subnetId: subnet.subnetId,
        deviceNumber: nic.slot ?? index,
        ...(nic.secondaryIpv4s?.length ? { secondaryIpv4s: [...nic.secondaryIpv4s] } : {}),
        ...(nic.eniId ? { eniId: nic.eniId } : {}),
        ...(ownGroups ? { securityGroups: ownGroups } : {}),
      },
    ];
  });
  const primary = host.subnets.find((s) => s.subnetId === record.nics[0]?.subnetId);
  const keyIds = record.login?.keyIds ?? [];
  return {
    instanceId: record.instanceId,
    uuid: record.uuid,
    instanceName: record.instanceName,
    hostname: record.hostName ?? record.instanceId,
    osType: windows ? "windows" : "linux",
    availabilityZone: host.zone,
    region: host.region,
    hostId: host.hostId,
    instanceType: record.instanceType,
    imageId: record.imageId,
    launchIndex: record.launchIndex,
    generation: record.configGeneration ?? 1,
    createdTime: record.createdTime,
    nics,
    nameservers: primary?.dns ?? [],
    ntpServers: host.ntpServers,
    publicKeys: options.keys.filter((k) => keyIds.includes(k.keyId)),
    ...(!windows && record.login?.passwordHash ? { passwordHash: record.login.passwordHash } : {}),
    ...(windows && options.windowsPassword ? { windowsPassword: options.windowsPassword } : {}),
    loginUser: windows ? "Administrator" : "root",
    passwordLogin: keyIds.length === 0,
    ...(record.login?.keepImage ? { keepImageLogin: true } : {}),
    ...(record.userData ? { userData: Buffer.from(record.userData, "base64") } : {}),
    ...(options.securityGroups?.length ? { securityGroups: options.securityGroups } : {}),
    ...(host.intranetRule ? { bandwidthLimitKbit: kbitOf(intranetCap(record.cpu, host.intranetRule).mbps) } : {}),
  };
}

/** The same cap both ways (the seeds give one intranet figure), in the metadata's Kbit/s. */
function kbitOf(mbps: number): { egress: number; ingress: number } {
  return { egress: mbps * 1000, ingress: mbps * 1000 };
}
