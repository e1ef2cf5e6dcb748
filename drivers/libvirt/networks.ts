/**
 * libvirt networks the agent attaches NICs to: one per subnet, in forward mode 'open'
 * (libvirt adds no rules; the agent's nftables tables keep it isolated), no DHCP.
 */
import { ExecError, type CommandRunner } from "../exec/runner.js";
import { writeFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

export interface IsolatedNetwork {
  name: string;
  bridge: string;
  /** The host's address on the bridge, with its prefix (no DHCP: guests get static addresses). */
  ip?: { address: string; prefixLength: number };
}

export interface NetworkPort {
  /**
   * Defines (persistent, autostart) and starts the network if needed; a network of that
   * name with another bridge or address is redefined. Throws NetworkConflictError, before
   * changing anything, when another network has the same bridge or an overlapping subnet.
   */
  ensureIsolated(options: IsolatedNetwork): Promise<void>;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c]!);
}

export function isolatedNetworkXml(options: IsolatedNetwork): string {
  return [
    "<network>",
    `  <name>${escapeXml(options.name)}</name>`,
    // 'open': libvirt adds no firewall rules of its own for this network; the agent's
    // nftables tables isolate it (agent/network/firewall-compile.ts). An isolated network's
    // rules are re-added one command at a time at every libvirtd restart, a moment in which
    // running guests' traffic was refused (measured: 3 of 1,111 connects; 0 with 'open').
    "  <forward mode='open'/>",
    `  <bridge name='${escapeXml(options.bridge)}' stp='off' delay='0'/>`,
    ...(options.ip ? [`  <ip address='${escapeXml(options.ip.address)}' prefix='${options.ip.prefixLength}'/>`] : []),
    "</network>",
    "",
  ].join("\n");
}

/** What a libvirt network's XML says about where it lives: its bridge and IPv4 addresses. */
export interface NetworkDefinition {
  name: string;
  bridge?: string;
  /** Its IPv4 addresses (the host's side), each with its prefix. */
  ips: { address: string; prefixLength: number }[];
}

function attr(tag: string, name: string): string | undefined {
  return new RegExp(`\\b${name}\\s*=\\s*(?:'([^']*)'|"([^"]*)")`).exec(tag)?.slice(1).find((v) => v !== undefined);
}

function ipv4ToInt(ip: string): number | undefined {
  const parts = ip.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

function prefixOfNetmask(mask: string): number | undefined {
  const n = ipv4ToInt(mask);
  if (n === undefined) return undefined;
  const bits = n.toString(2).padStart(32, "0");
  return /^1*0*$/.test(bits) ? bits.indexOf("0") === -1 ? 32 : bits.indexOf("0") : undefined;
}

/** Reads `virsh net-dumpxml` output (name, bridge, IPv4 addresses; IPv6 ones are left out). */
export function parseNetworkXml(xml: string): NetworkDefinition {
  const name = /<name>([^<]*)<\/name>/.exec(xml)?.[1]?.trim() ?? "";
  const bridgeTag = /<bridge\b[^>]*>/.exec(xml)?.[0];
  const bridge = bridgeTag ? attr(bridgeTag, "name") : undefined;
  const ips: NetworkDefinition["ips"] = [];
  for (const [tag] of xml.matchAll(/<ip\b[^>]*>/g)) {
    const family = attr(tag, "family");
    const address = attr(tag, "address");
    if ((family !== undefined && family !== "ipv4") || address === undefined || ipv4ToInt(address) === undefined) continue;
    const prefix = attr(tag, "prefix");
    const netmask = attr(tag, "netmask");
    const prefixLength = prefix !== undefined ? Number(prefix) : netmask !== undefined ? prefixOfNetmask(netmask) : 32;
    if (prefixLength === undefined || !Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) continue;
    ips.push({ address, prefixLength });
  }
  return { name, ...(bridge ? { bridge } : {}), ips };
}

function block(ip: { address: string; prefixLength: number }): { first: number; last: number } {
  const size = 2 ** (32 - ip.prefixLength);
  const first = Math.floor(ipv4ToInt(ip.address)! / size) * size;
  return { first, last: first + size - 1 };
}

function describe(d: { name: string; bridge?: string; ips: readonly { address: string; prefixLength: number }[] }): string {
  const where = [d.bridge ? `bridge ${d.bridge}` : "no bridge", ...d.ips.map((ip) => `${ip.address}/${ip.prefixLength}`)];
  return `libvirt network ${JSON.stringify(d.name)} (${where.join(", ")})`;
}

export interface NetworkConflict {
  /** The network already defined in libvirt. */
  other: NetworkDefinition;
  /** What they share, e.g. "the same bridge cdhbr0". */
  reason: string;
}

/**
 * The first network among `existing` (another name) that `wanted` would collide with:
 * the same bridge device, or IPv4 ranges that overlap.
 */
export function findNetworkConflict(wanted: IsolatedNetwork, existing: readonly NetworkDefinition[]): NetworkConflict | undefined {
  for (const other of existing) {
    if (other.name === wanted.name) continue;
    if (other.bridge !== undefined && other.bridge === wanted.bridge) return { other, reason: `the same bridge ${wanted.bridge}` };
    if (!wanted.ip) continue;
    const mine = block(wanted.ip);
    for (const ip of other.ips) {
      const theirs = block(ip);
      if (mine.first <= theirs.last && theirs.first <= mine.last) {
        return { other, reason: `overlapping subnets ${intToIpv4(mine.first)}/${wanted.ip.prefixLength} and ${intToIpv4(theirs.first)}/${ip.prefixLength}` };
      }
    }
  }
  return undefined;
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

/** The agent's network collides with one libvirt already has: the agent does not start. */
export class NetworkConflictError extends Error {
  override readonly name = "NetworkConflictError";
  constructor(
    readonly wanted: IsolatedNetwork,
    readonly conflict: NetworkConflict,
  ) {
    super(
      `${describe({ name: wanted.name, bridge: wanted.bridge, ips: wanted.ip ? [wanted.ip] : [] })} conflicts with ${describe(conflict.other)} ` +
        `already defined in libvirt: ${conflict.reason}; give this agent another bridge and subnet (config keys default_network, subnets) or remove ${JSON.stringify(conflict.other.name)}`,
    );
  }
}

/** True when the network's XML has the bridge and address asked for. */
function matches(xml: string, options: IsolatedNetwork): boolean {
  if (!new RegExp(`<bridge name=['"]${options.bridge}['"]`).test(xml)) return false;
  const ip = /<ip address=['"]([\d.]+)['"] prefix=['"](\d+)['"]/.exec(xml);
  if (!options.ip) return ip === null;
  return ip !== null && ip[1] === options.ip.address && Number(ip[2]) === options.ip.prefixLength;
}

export class VirshNetworks implements NetworkPort {
  constructor(private readonly o: { runner: CommandRunner; uri: string; tmpDir: string }) {}

  private virsh(...args: string[]) {
    return this.o.runner.run(["virsh", "-c", this.o.uri, ...args], { allowFailure: true });
  }

  /** Every network libvirt has (defined or only running), as its inactive definition says. */
  async definitions(): Promise<NetworkDefinition[]> {
    return (await this.definitionsWithXml()).map((d) => d.definition);
  }

  /** The definitions with their XML, read at once (one virsh per network, side by side: start-up waits on this). */
  private async definitionsWithXml(): Promise<Array<{ definition: NetworkDefinition; xml: string }>> {
    const list = await this.virsh("net-list", "--all", "--name");
    if (list.exitCode !== 0) throw new ExecError({ command: list.command, exitCode: list.exitCode, stdout: list.stdout, stderr: list.stderr, failure: "exit" });
    const names = list.stdout.split("\n").map((l) => l.trim()).filter(Boolean);
    const xmls = await Promise.all(names.map((name) => this.virsh("net-dumpxml", "--inactive", name)));
    // A network removed meanwhile is no conflict.
    return names.flatMap((name, i) => (xmls[i]!.exitCode === 0 ? [{ definition: { ...parseNetworkXml(xmls[i]!.stdout), name }, xml: xmls[i]!.stdout }] : []));
  }

  private async define(options: IsolatedNetwork): Promise<void> {
    const file = join(this.o.tmpDir, `net-${randomBytes(4).toString("hex")}.xml`);
    await writeFile(file, isolatedNetworkXml(options), { mode: 0o600 });
    try {
      const def = await this.virsh("net-define", file);
      if (def.exitCode !== 0) throw new ExecError({ command: def.command, exitCode: def.exitCode, stdout: def.stdout, stderr: def.stderr, failure: "exit" });
    } finally {
      await rm(file, { force: true });
    }
  }

  async ensureIsolated(options: IsolatedNetwork): Promise<void> {
    // Before anything is defined or redefined: another network on the same bridge or subnet
    // would make libvirt refuse ours, or worse, route the guests' traffic to the wrong bridge.
    const known = await this.definitionsWithXml();
    const conflict = findNetworkConflict(options, known.map((d) => d.definition));
    if (conflict) throw new NetworkConflictError(options, conflict);
    let info = await this.virsh("net-info", options.name);
    let changed = false;
    if (info.exitCode === 0) {
      // The inactive definition as just read (the network was there before the list and the info).
      const xml = known.find((d) => d.definition.name === options.name)?.xml;
      if (xml !== undefined && !matches(xml, options)) {
        await this.virsh("net-destroy", options.name);
        await this.virsh("net-undefine", options.name);
        info = await this.virsh("net-info", options.name);
        changed = true;
      } else if (xml !== undefined && !/<forward mode=['"]open['"]/.test(xml)) {
        // Defined by an older agent as isolated: the definition is updated in place, and the
        // running network (with its guests' taps) keeps libvirt's rules until it next starts.
        await this.define(options);
      }
    }
    if (info.exitCode !== 0) {
      await this.define(options);
      await this.virsh("net-autostart", options.name);
      changed = true;
    }
    // Asked again only when it was (re)defined here; otherwise the first answer stands.
    const again = changed ? await this.virsh("net-info", options.name) : info;
    if (/^Active:\s+no/m.test(again.stdout)) {
      const start = await this.virsh("net-start", options.name);
      if (start.exitCode !== 0 && !/already active/.test(start.stderr)) {
        throw new ExecError({ command: start.command, exitCode: start.exitCode, stdout: start.stdout, stderr: start.stderr, failure: "exit" });
      }
    }
  }
}
