/**
 * libvirt networks the agent attaches NICs to. For now one isolated network (no
 * forwarding, no DHCP): guests on it reach each other and the host's bridge only.
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
   * name with another bridge or address is redefined.
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
    `  <bridge name='${escapeXml(options.bridge)}' stp='off' delay='0'/>`,
    ...(options.ip ? [`  <ip address='${escapeXml(options.ip.address)}' prefix='${options.ip.prefixLength}'/>`] : []),
    "</network>",
    "",
  ].join("\n");
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

  async ensureIsolated(options: IsolatedNetwork): Promise<void> {
    let info = await this.virsh("net-info", options.name);
    if (info.exitCode === 0) {
      const xml = await this.virsh("net-dumpxml", "--inactive", options.name);
      if (xml.exitCode === 0 && !matches(xml.stdout, options)) {
        await this.virsh("net-destroy", options.name);
        await this.virsh("net-undefine", options.name);
        info = await this.virsh("net-info", options.name);
      }
    }
    if (info.exitCode !== 0) {
      const file = join(this.o.tmpDir, `net-${randomBytes(4).toString("hex")}.xml`);
      await writeFile(file, isolatedNetworkXml(options), { mode: 0o600 });
      try {
        const def = await this.virsh("net-define", file);
        if (def.exitCode !== 0) throw new ExecError({ command: def.command, exitCode: def.exitCode, stdout: def.stdout, stderr: def.stderr, failure: "exit" });
      } finally {
        await rm(file, { force: true });
      }
      await this.virsh("net-autostart", options.name);
    }
    const again = await this.virsh("net-info", options.name);
    if (/^Active:\s+no/m.test(again.stdout)) {
      const start = await this.virsh("net-start", options.name);
      if (start.exitCode !== 0 && !/already active/.test(start.stderr)) {
        throw new ExecError({ command: start.command, exitCode: start.exitCode, stdout: start.stdout, stderr: start.stderr, failure: "exit" });
      }
    }
  }
}
