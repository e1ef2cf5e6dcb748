/** This host as the CVM API's HostItem (seed API §2.4), for DescribeHosts and reports, and its name as an owner set it. */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import type { HostResource } from "./capacity.js";
import { describeIssues } from "./core/records.js";
import { writeFileAtomic } from "./util/atomic-file.js";
import { setAside } from "./util/set-aside.js";

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

/**
 * The host's name as an owner set it (ModifyHostsAttribute HostName), kept in one small file of
 * the data directory (written atomically) so that it holds across agent restarts; without one,
 * DescribeHosts shows the machine's hostname.
 */
export class HostNameStore {
  constructor(private readonly file: string) {}

  /** The name saved, or undefined (none yet, or an unreadable file: set aside, with the reason). */
  async load(onBad: (reason: string) => void): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    const parsed = hostFileSchema.safeParse(safeJson(text));
    if (parsed.success) return parsed.data.hostName;
    onBad(`not a host name file: ${describeIssues(parsed.error)}`);
    await setAside(this.file).catch(() => undefined);
    return undefined;
  }

  /** Saves the name (answered once it is on disk). */
  save(hostName: string): Promise<void> {
    return writeFileAtomic(this.file, `${JSON.stringify({ version: 1, hostName })}\n`, 0o600);
  }
}

const hostFileSchema = z.object({ version: z.literal(1), hostName: z.string().min(1).max(60) }).passthrough();

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
