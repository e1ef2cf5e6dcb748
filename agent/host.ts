/** This host as the CVM API's HostItem (seed API §2.4), for DescribeHosts and reports. */
import type { HostResource } from "./capacity.js";

export interface HostIdentity {
  hostId: string;
  hostName: string;
  hostIp: string;
  zone: string;
  createdTime: string;
  hostType: string;
}

export function toHostItem(options: {
  identity: HostIdentity;
  resource: HostResource;
  instanceIds: string[];
  state: "RUNNING" | "UNKNOWN";
}): Record<string, unknown> {
  const { identity } = options;
  return {
    Placement: { Zone: identity.zone, ProjectId: 0, HostId: identity.hostId },
    HostId: identity.hostId,
    HostType: identity.hostType,
    HostName: identity.hostName,
    HostChargeType: "POSTPAID_BY_HOUR",
    RenewFlag: "NOTIFY_AND_MANUAL_RENEW",
    CreatedTime: identity.createdTime,
    ExpiredTime: null,
    InstanceIds: options.instanceIds,
    HostState: options.state,
    HostIp: identity.hostIp,
    HostResource: options.resource,
    CageId: "",
    Tags: [],
  };
}

const HOST_FILTERS: Record<string, (identity: HostIdentity, state: string) => string> = {
  "host-id": (i) => i.hostId,
  zone: (i) => i.zone,
  "host-name": (i) => i.hostName,
  "host-state": (_i, s) => s,
};

/** Whether this host passes DescribeHosts' filters (ANDed; values ORed). */
export function hostMatches(identity: HostIdentity, state: string, filters: Array<{ Name: string; Values: string[] }> | undefined): boolean {
  return (filters ?? []).every((f) => {
    const get = HOST_FILTERS[f.Name];
    return !get || f.Values.includes(get(identity, state));
  });
}
