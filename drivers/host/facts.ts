/**
 * What the host has: CPUs, memory, the disk under the data directory, its name
 * and address, and whether KVM is there. Read on demand (never at import time).
 */
import { existsSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { hostname, networkInterfaces } from "node:os";
import { dirname, resolve } from "node:path";
import si from "systeminformation";

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
  const defaultIface = await si.networkInterfaceDefault().catch(() => "");
  const candidates = Object.entries(networkInterfaces())
    .flatMap(([iface, addresses]) => (addresses ?? []).filter((a) => a.family === "IPv4" && !a.internal).map((a) => ({ iface, ip4: a.address })))
    .sort((a, b) => Number(a.ip4.startsWith("169.254.")) - Number(b.ip4.startsWith("169.254.")));
  const preferred = candidates.find((c) => c.iface === defaultIface) ?? candidates[0];
  return preferred?.ip4 ?? "";
}

export async function getHostFacts(options: HostFactsOptions): Promise<HostFacts> {
  const diskPath = nearestExisting(options.dataDir);
  const [cpu, mem, ip, fsStats] = await Promise.all([si.cpu(), si.mem(), primaryIpv4(), statfs(diskPath)]);
  const cpuModel = [cpu.manufacturer, cpu.brand].filter((s) => s && s.trim() !== "").join(" ").trim();
  return {
    cpuCount: cpu.cores,
    cpuModel,
    memoryBytes: mem.total,
    hostname: hostname(),
    primaryIpv4: ip,
    diskPath,
    diskTotalBytes: fsStats.blocks * fsStats.bsize,
    diskFreeBytes: fsStats.bavail * fsStats.bsize,
    kvmAvailable: existsSync(options.kvmDevice ?? "/dev/kvm"),
  };
}
