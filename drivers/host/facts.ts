/**
 * What the host has: CPUs, memory, the disk under the data directory, its name
 * and address, and whether KVM is there. Read on demand (never at import time).
 */
import { existsSync } from "node:fs";
import { readFile, statfs } from "node:fs/promises";
import { cpus, hostname, networkInterfaces, totalmem } from "node:os";
import { dirname, resolve } from "node:path";

export interface HostFacts {
  /** Logical CPUs (hardware threads) of the host. */
  cpuCount: number;
  /** CPU model name, e.g. "AMD EPYC 7763"; "" when unknown. */
  cpuModel: string;
  /** Total memory, bytes (MemTotal). */
  memoryBytes: number;
  hostname: string;
  /** IPv4 of the default-route interface, else of the first non-internal interface; "" if none. */
  primaryIpv4: string;
  /** The existing directory that was measured (dataDir or its nearest existing parent). */
  diskPath: string;
  /** Size of the filesystem holding dataDir, bytes. */
  diskTotalBytes: number;
  /** Bytes free for use on that filesystem (like df's "Avail"). */
  diskFreeBytes: number;
  /** /dev/kvm exists. */
  kvmAvailable: boolean;
}

export interface HostFactsOptions {
  dataDir: string;
  /** Device whose presence means KVM is usable. Default /dev/kvm. */
  kvmDevice?: string;
}

/** dataDir itself, or its nearest ancestor that exists (the data dir may not be created yet). */
export function nearestExisting(path: string): string {
  let p = resolve(path);
  while (!existsSync(p)) {
    const parent = dirname(p);
    if (parent === p) break;
    p = parent;
  }
  return p;
}

/**
 * The host's IPv4 address: the default route's interface's, else the first other one,
 * link-local (169.254/16) addresses last. The addresses come from Node's list of this
 * network namespace, which (like libuv's) leaves out links that are down or without carrier.
 */
async function primaryIpv4(): Promise<string> {
  const defaultIface = await defaultRouteInterface();
  const candidates = Object.entries(networkInterfaces())
    .flatMap(([iface, addresses]) => (addresses ?? []).filter((a) => a.family === "IPv4" && !a.internal).map((a) => ({ iface, ip4: a.address })))
    .sort((a, b) => Number(a.ip4.startsWith("169.254.")) - Number(b.ip4.startsWith("169.254.")));
  const preferred = candidates.find((c) => c.iface === defaultIface) ?? candidates[0];
  return preferred?.ip4 ?? "";
}

/**
 * The interface of the IPv4 default route with the lowest metric (/proc/net/route, this
 * network namespace's), or "" when there is none.
 */
async function defaultRouteInterface(): Promise<string> {
  const table = await readFile("/proc/net/route", "utf8").catch(() => "");
  let best: { iface: string; metric: number } | undefined;
  for (const line of table.split("\n").slice(1)) {
    const [iface, destination, , , , , metric, mask] = line.trim().split(/\s+/);
    if (!iface || destination !== "00000000" || mask !== "00000000") continue;
    const m = Number(metric);
    if (!best || m < best.metric) best = { iface, metric: m };
  }
  return best?.iface ?? "";
}

/**
 * Node's own views of the CPUs (libuv: every CPU the kernel lists) and of MemTotal: no
 * library (systeminformation cost the agent about 10 MiB of memory and 150 ms of start-up
 * for these three figures).
 */
export async function getHostFacts(options: HostFactsOptions): Promise<HostFacts> {
  const diskPath = nearestExisting(options.dataDir);
  const [ip, fsStats] = await Promise.all([primaryIpv4(), statfs(diskPath)]);
  const cpuList = cpus();
  const cpuModel = (cpuList[0]?.model ?? "").trim();
  return {
    cpuCount: cpuList.length,
    cpuModel,
    memoryBytes: totalmem(),
    hostname: hostname(),
    primaryIpv4: ip,
    diskPath,
    diskTotalBytes: fsStats.blocks * fsStats.bsize,
    diskFreeBytes: fsStats.bavail * fsStats.bsize,
    kvmAvailable: existsSync(options.kvmDevice ?? "/dev/kvm"),
  };
}
