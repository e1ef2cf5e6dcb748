/** A fixed FirewallState for the compile/diff tests and the golden files. */
import type { FirewallState, SgRuleSet } from "../../../../agent/network/firewall-types.js";

export const WEB: SgRuleSet = {
  securityGroupId: "sg-web00001",
  ingress: [
    { action: "DROP", protocol: "TCP", ports: [22], peer: { cidr: "10.9.0.0/16" } },
    { action: "ACCEPT", protocol: "TCP", ports: [22, 80, 443, [8000, 8080]], peer: { cidr: "0.0.0.0/0" } },
    { action: "ACCEPT", protocol: "ICMP", ports: "ALL", peer: { cidr: "0.0.0.0/0" } },
    { action: "ACCEPT", protocol: "ALL", ports: "ALL", peer: { securityGroupId: "sg-app00002" } },
  ],
  egress: [{ action: "ACCEPT", protocol: "ALL", ports: "ALL", peer: { cidr: "0.0.0.0/0" } }],
};

export const APP: SgRuleSet = {
  securityGroupId: "sg-app00002",
  ingress: [
    { action: "ACCEPT", protocol: "UDP", ports: [53, [5000, 5010]], peer: { cidr: "10.201.0.7/32" } },
    { action: "ACCEPT", protocol: "TCP", ports: "ALL", peer: { securityGroupId: "sg-web00001" } },
    { action: "ACCEPT", protocol: "ICMPV6", ports: "ALL", peer: { cidr: "0.0.0.0/0" } },
  ],
  egress: [
    { action: "DROP", protocol: "UDP", ports: "ALL", peer: { cidr: "0.0.0.0/0" } },
    { action: "ACCEPT", protocol: "ALL", ports: "ALL", peer: { cidr: "10.201.0.0/24" } },
  ],
};

export const EMPTY: SgRuleSet = { securityGroupId: "sg-empty003", ingress: [], egress: [] };

export const STATE: FirewallState = {
  groups: [WEB, APP, EMPTY],
  nics: [
    {
      tap: "cdhaaaa00010",
      bridge: "cdhtbr0",
      mac: "52:54:00:00:00:01",
      addresses: ["10.201.0.10"],
      gateway: "10.201.0.1",
      securityGroupIds: ["sg-web00001", "sg-app00002"],
      instanceId: "ins-aaaa0001",
    },
    {
      tap: "cdhbbbb00020",
      bridge: "cdhtbr0",
      mac: "52:54:00:00:00:02",
      addresses: ["10.201.0.11", "10.201.0.12"],
      gateway: "10.201.0.1",
      securityGroupIds: ["sg-app00002"],
      instanceId: "ins-bbbb0002",
    },
    {
      tap: "cdhcccc00030",
      bridge: "cdhbr1",
      mac: "52:54:00:00:00:03",
      addresses: ["10.202.0.10"],
      gateway: "10.202.0.1",
      securityGroupIds: [],
      instanceId: "ins-cccc0003",
    },
  ],
};

export const OPTIONS = { table: "cdh_filter", metadataPort: 8775 };
