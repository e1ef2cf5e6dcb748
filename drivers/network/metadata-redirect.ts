/**
 * Brings guest traffic for the metadata addresses (169.254.169.254 and
 * 169.254.0.23, TCP port 80) to the metadata server.
 *
 * The agent's metadata server listens on each guest network's gateway address
 * (which lives on that network's bridge) at one port. An nftables table of our
 * own, `cdh_metadata`, DNATs what arrives on bridge B for the two addresses,
 * port 80, to B's gateway:port. After the DNAT the connection's local address is
 * B's gateway, so the server knows which network the request came in on, and the
 * source address (made unforgeable by the bridge's anti-spoofing filter) says
 * which guest. The same table drops packets that reach the metadata port on
 * bridge B but are addressed to another network's gateway, so a guest cannot ask
 * in the name of another network.
 *
 * Kernel notes:
 * - DNAT to an address of the host itself is delivered locally (INPUT) and needs
 *   no `route_localnet` (that sysctl is only for 127.0.0.0/8 destinations) and no
 *   IP forwarding.
 * - A guest that routes 169.254.0.0/16 through its gateway needs nothing more. A
 *   guest with an on-link route for 169.254.0.0/16 (Windows' APIPA route, the
 *   seed's `route add -net 169.254.0.0/16 dev eth0`, zeroconf) ARPs for the
 *   metadata address itself; nobody would answer. With `answerArp` (default on)
 *   both addresses are added to each bridge as /32 `scope link`, so the host
 *   answers that ARP; the DNAT still runs first (prerouting), so the local
 *   address seen by the server is the gateway's either way.
 *
 * Replacing the table is atomic: one `nft -f -` transaction declares, deletes and
 * recreates it, so there is never a moment without the rules, and no other table
 * is touched.
 */
import { isIPv4 } from "node:net";
import type { CommandRunner } from "../exec/runner.js";

export const METADATA_ADDRESSES = ["169.254.169.254", "169.254.0.23"] as const;
export const METADATA_GUEST_PORT = 80;
export const DEFAULT_TABLE = "cdh_metadata";

export interface MetadataBridge {
  /** The bridge device, e.g. `br-vpc1`. */
  readonly bridge: string;
  /** The network's gateway address on that bridge, where the metadata server listens. */
  readonly gateway: string;
}

export interface EnsureMetadataRedirectOptions {
  runner: CommandRunner;
  bridges: readonly MetadataBridge[];
  /** The port the metadata server listens on at every gateway address. */
  port: number;
  /** Add the metadata addresses to each bridge so on-link guests get ARP answers. Default true. */
  answerArp?: boolean;
  /** nftables table name (ip family). Default `cdh_metadata`; tests use their own. */
  table?: string;
  /** Timeout of each command, ms. Default the runner's. */
  timeoutMs?: number;
}

export interface RemoveMetadataRedirectOptions {
  runner: CommandRunner;
  /** Bridges whose metadata addresses (added by `answerArp`) are removed too. */
  bridges?: readonly Pick<MetadataBridge, "bridge">[];
  table?: string;
  timeoutMs?: number;
}

const BRIDGE_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const TABLE_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** The nft script that replaces the table (pure; exported for tests and for the operator's eyes). */
export function renderMetadataRuleset(options: { bridges: readonly MetadataBridge[]; port: number; table?: string }): string {
  const table = checkTable(options.table ?? DEFAULT_TABLE);
  const port = options.port;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`invalid metadata port: ${port}`);
  const seen = new Set<string>();
  for (const b of options.bridges) {
    checkBridge(b.bridge);
    if (!isIPv4(b.gateway)) throw new TypeError(`invalid gateway address for bridge ${b.bridge}: ${JSON.stringify(b.gateway)}`);
    if (seen.has(b.bridge)) throw new TypeError(`bridge ${b.bridge} is listed twice`);
    seen.add(b.bridge);
  }
  const targets = `{ ${METADATA_ADDRESSES.join(", ")} }`;
  const lines = [
    `table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    `  chain prerouting {`,
    `    type nat hook prerouting priority dstnat; policy accept;`,
    ...options.bridges.map(
      (b) => `    iifname "${b.bridge}" ip daddr ${targets} tcp dport ${METADATA_GUEST_PORT} dnat to ${b.gateway}:${port}`,
    ),
    `  }`,
    `  chain input {`,
    `    type filter hook input priority filter; policy accept;`,
    ...options.bridges.map((b) => `    iifname "${b.bridge}" tcp dport ${port} ip daddr != ${b.gateway} drop`),
    `  }`,
    `}`,
  ];
  return `${lines.join("\n")}\n`;
}

/** Installs (or replaces, atomically) the redirect for exactly these bridges. Idempotent. */
export async function ensureMetadataRedirect(options: EnsureMetadataRedirectOptions): Promise<void> {
  const script = renderMetadataRuleset(options);
  const timeout = options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {};
  if (options.answerArp ?? true) {
    for (const b of options.bridges) {
      for (const address of METADATA_ADDRESSES) {
        // `replace` is idempotent: it adds the address or leaves the existing one as it is.
        await options.runner.run(["ip", "-4", "addr", "replace", `${address}/32`, "dev", b.bridge, "scope", "link"], timeout);
      }
    }
  }
  await options.runner.run(["nft", "-f", "-"], { ...timeout, input: script });
}

/** Removes the table (and the bridges' metadata addresses, when bridges are given). Idempotent. */
export async function removeMetadataRedirect(options: RemoveMetadataRedirectOptions): Promise<void> {
  const table = checkTable(options.table ?? DEFAULT_TABLE);
  const timeout = options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {};
  // Declaring first makes the delete succeed when the table is already gone.
  await options.runner.run(["nft", "-f", "-"], { ...timeout, input: `table ip ${table}\ndelete table ip ${table}\n` });
  for (const b of options.bridges ?? []) {
    checkBridge(b.bridge);
    for (const address of METADATA_ADDRESSES) {
      // The bridge or the address may already be gone: not an error.
      await options.runner.run(["ip", "-4", "addr", "del", `${address}/32`, "dev", b.bridge], { ...timeout, allowFailure: true });
    }
  }
}

function checkBridge(name: string): string {
  if (!BRIDGE_RE.test(name)) throw new TypeError(`invalid bridge name: ${JSON.stringify(name)}`);
  return name;
}

function checkTable(name: string): string {
  if (!TABLE_RE.test(name)) throw new TypeError(`invalid nftables table name: ${JSON.stringify(name)}`);
  return name;
}
