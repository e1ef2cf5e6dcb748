/**
 * A typed model of nftables tables (sets, verdict maps, chains, rules), rendered into
 * nft's own command syntax, the difference between two models as one transaction, and
 * the runner that hands a transaction to one `nft -f -` process.
 *
 * Why the text syntax and not `nft -j`: the golden files of the generated ruleset are
 * reviewed by people, and the command syntax is what `nft list` prints and what an operator
 * types; every value that reaches the text (names, addresses, MACs, ports) is validated
 * here against a strict alphabet, so there is nothing to quote or escape. One `nft -f -`
 * is one netlink batch: the kernel applies all of it or none of it.
 *
 * Pure except for `runNft` and `listTable`. Speaks no agent types.
 */
import { isIPv4 } from "node:net";
import type { CommandRunner } from "../exec/runner.js";

export type NftFamily = "inet" | "bridge";
export type NftHook = "prerouting" | "input" | "forward" | "output" | "postrouting";

/** A base chain's attachment; every base chain here is a filter chain whose policy is accept. */
export interface NftBase {
  readonly hook: NftHook;
  /** Numeric priority (filter = 0 in inet, -200 in bridge). */
  readonly priority: number;
}

export type NftVerdict =
  | { readonly kind: "accept" }
  | { readonly kind: "drop" }
  | { readonly kind: "return" }
  | { readonly kind: "jump"; readonly chain: string }
  /** Look the key up in a verdict map and do what it says (nothing when absent). */
  | { readonly kind: "vmap"; readonly key: readonly NftSelector[]; readonly map: string };

/** What a match or a map key reads from the packet. */
export type NftSelector =
  | "iifname"
  | "oifname"
  | "ether saddr"
  | "ether type"
  | "ip saddr"
  | "ip daddr"
  | "arp saddr ether"
  | "arp saddr ip"
  | "meta l4proto"
  | "tcp dport"
  | "udp dport"
  | "udp sport";

/** A value a selector is compared with. */
export type NftValue =
  | { readonly ifname: string }
  | { readonly mac: string }
  | { readonly ipv4: string }
  /** An IPv4 prefix, "10.0.0.0/24". */
  | { readonly cidr: string }
  | { readonly port: number }
  | { readonly portRange: readonly [number, number] }
  /** An ether type or layer 4 protocol name ("ip", "arp", "tcp", "icmp", …). */
  | { readonly proto: NftProtoName };

export type NftProtoName = "ip" | "ip6" | "arp" | "tcp" | "udp" | "icmp" | "gre";

export type NftMatch =
  | { readonly kind: "ct"; readonly states: readonly ("established" | "related" | "invalid" | "new")[] }
  /** `selector [!=] value` or `selector [!=] { v1, v2 }` (an anonymous set). */
  | { readonly kind: "cmp"; readonly selector: NftSelector; readonly values: readonly NftValue[]; readonly negate?: boolean }
  /** `sel1 . sel2 @set` (a lookup in a named set). */
  | { readonly kind: "lookup"; readonly key: readonly NftSelector[]; readonly set: string };

export interface NftRule {
  readonly match: readonly NftMatch[];
  readonly verdict: NftVerdict;
}

export type NftKeyType = "ifname" | "ipv4_addr";

/** A named set, or (with `verdictMap`) a verdict map. Elements keyed by their rendered key. */
export interface NftSet {
  readonly name: string;
  readonly key: readonly NftKeyType[];
  readonly verdictMap: boolean;
  /** Rendered key → rendered verdict (maps) or "" (sets). */
  readonly elements: ReadonlyMap<string, string>;
}

export interface NftChain {
  readonly name: string;
  readonly base?: NftBase;
  /** Rendered rules, in order. */
  readonly rules: readonly string[];
}

export interface NftTable {
  readonly family: NftFamily;
  readonly name: string;
  readonly sets: ReadonlyMap<string, NftSet>;
  readonly chains: ReadonlyMap<string, NftChain>;
}

const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export class NftModelError extends Error {
  override readonly name = "NftModelError";
}

export function checkName(name: string, what = "name"): string {
  if (!NAME_RE.test(name)) throw new NftModelError(`invalid nftables ${what}: ${JSON.stringify(name)}`);
  return name;
}

export function checkIfname(name: string): string {
  if (!IFNAME_RE.test(name)) throw new NftModelError(`invalid interface name: ${JSON.stringify(name)}`);
  return name;
}

/** "10.0.0.5/24" → "10.0.0.0/24"; a prefix with host bits is normalized, not refused. */
export function normalizeCidr(cidr: string): string {
  const [address, bits, extra] = cidr.split("/");
  const prefix = Number(bits);
  if (extra !== undefined || address === undefined || !isIPv4(address) || !/^\d{1,2}$/.test(bits ?? "") || prefix > 32) {
    throw new NftModelError(`invalid IPv4 prefix: ${JSON.stringify(cidr)}`);
  }
  const n = ipv4ToInt(address);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return `${intToIpv4((n & mask) >>> 0)}/${prefix}`;
}

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((n, p) => n * 256 + Number(p), 0);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

export function renderValue(value: NftValue): string {
  if ("ifname" in value) return `"${checkIfname(value.ifname)}"`;
  if ("mac" in value) {
    if (!MAC_RE.test(value.mac)) throw new NftModelError(`invalid MAC address: ${JSON.stringify(value.mac)}`);
    return value.mac;
  }
  if ("ipv4" in value) {
    if (!isIPv4(value.ipv4)) throw new NftModelError(`invalid IPv4 address: ${JSON.stringify(value.ipv4)}`);
    return value.ipv4;
  }
  if ("cidr" in value) return normalizeCidr(value.cidr);
  if ("port" in value) return String(checkPort(value.port));
  if ("portRange" in value) {
    const [a, b] = value.portRange;
    checkPort(a);
    checkPort(b);
    if (a > b) throw new NftModelError(`invalid port range ${a}-${b}`);
    return a === b ? String(a) : `${a}-${b}`;
  }
  return value.proto;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new NftModelError(`invalid port: ${port}`);
  return port;
}

function renderKey(selectors: readonly NftSelector[]): string {
  return selectors.map((s) => (s === "iifname" || s === "oifname" ? `meta ${s}` : s)).join(" . ");
}

function renderMatch(match: NftMatch): string {
  switch (match.kind) {
    case "ct":
      return `ct state ${match.states.join(",")}`;
    case "lookup":
      return `${renderKey(match.key)} @${checkName(match.set, "set name")}`;
    case "cmp": {
      if (match.values.length === 0) throw new NftModelError(`empty value list for ${match.selector}`);
      const rendered = [...new Set(match.values.map(renderValue))];
      const right = rendered.length === 1 ? rendered[0]! : `{ ${rendered.join(", ")} }`;
      return `${renderKey([match.selector])} ${match.negate ? "!= " : ""}${right}`;
    }
  }
}

export function renderVerdict(verdict: NftVerdict): string {
  switch (verdict.kind) {
    case "accept":
    case "drop":
    case "return":
      return verdict.kind;
    case "jump":
      return `jump ${checkName(verdict.chain, "chain name")}`;
    case "vmap":
      return `${renderKey(verdict.key)} vmap @${checkName(verdict.map, "map name")}`;
  }
}

export function renderRule(rule: NftRule): string {
  return [...rule.match.map(renderMatch), renderVerdict(rule.verdict)].join(" ");
}

/** A set's element key: values joined by " . " (one per key type). */
export function renderElementKey(values: readonly NftValue[]): string {
  return values.map(renderValue).join(" . ");
}

/** Builds tables without mutating shared state (a small builder for the compilers). */
export class NftTableBuilder {
  private readonly sets = new Map<string, NftSet>();
  private readonly chains = new Map<string, NftChain>();

  constructor(
    readonly family: NftFamily,
    readonly name: string,
  ) {
    checkName(name, "table name");
  }

  set(name: string, key: readonly NftKeyType[], elements: Iterable<readonly NftValue[]>): this {
    return this.addSet(name, key, false, [...elements].map((e) => [renderElementKey(e), ""] as const));
  }

  map(name: string, key: readonly NftKeyType[], elements: Iterable<readonly [readonly NftValue[], NftVerdict]>): this {
    return this.addSet(
      name,
      key,
      true,
      [...elements].map(([k, v]) => [renderElementKey(k), renderVerdict(v)] as const),
    );
  }

  chain(name: string, rules: readonly NftRule[], base?: NftBase): this {
    checkName(name, "chain name");
    if (this.chains.has(name)) throw new NftModelError(`chain ${name} defined twice`);
    this.chains.set(name, { name, rules: rules.map(renderRule), ...(base ? { base } : {}) });
    return this;
  }

  build(): NftTable {
    return { family: this.family, name: this.name, sets: new Map(this.sets), chains: new Map(this.chains) };
  }

  private addSet(name: string, key: readonly NftKeyType[], verdictMap: boolean, elements: (readonly [string, string])[]): this {
    checkName(name, "set name");
    if (this.sets.has(name)) throw new NftModelError(`set ${name} defined twice`);
    const map = new Map<string, string>();
    for (const [k, v] of elements) {
      const existing = map.get(k);
      if (existing !== undefined && existing !== v) throw new NftModelError(`set ${name}: element ${k} given two verdicts`);
      map.set(k, v);
    }
    this.sets.set(name, { name, key: [...key], verdictMap, elements: map });
    return this;
  }
}

function setSpec(family: NftFamily, table: string, set: NftSet): string {
  const type = set.key.join(" . ");
  return `add ${set.verdictMap ? "map" : "set"} ${family} ${table} ${set.name} { type ${type}${set.verdictMap ? " : verdict" : ""}; }`;
}

function elementsCommand(op: "add" | "delete", family: NftFamily, table: string, set: NftSet, keys: readonly string[]): string[] {
  if (keys.length === 0) return [];
  const items = keys.map((k) => (set.verdictMap && op === "add" ? `${k} : ${set.elements.get(k)!}` : k));
  return [`${op} element ${family} ${table} ${set.name} { ${items.join(", ")} }`];
}

function chainSpec(family: NftFamily, table: string, chain: NftChain): string {
  const base = chain.base ? ` { type filter hook ${chain.base.hook} priority ${chain.base.priority}; policy accept; }` : "";
  return `add chain ${family} ${table} ${chain.name}${base}`;
}

function sameBase(a: NftBase | undefined, b: NftBase | undefined): boolean {
  return a?.hook === b?.hook && a?.priority === b?.priority;
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}

/**
 * The commands that turn table `from` into `to`, in an order nft accepts in one batch:
 * new sets and chains first, then elements, then rewritten chains, then what goes away
 * (elements, chains once nothing jumps to them, sets once no rule names them).
 * Returns undefined when the change is one an in-place edit cannot make (a base chain's
 * hook, a set's type): the caller replaces the whole table instead.
 */
export function diffTable(from: NftTable, to: NftTable): string[] | undefined {
  if (from.family !== to.family || from.name !== to.name) throw new NftModelError("diffTable: different tables");
  const { family, name: table } = to;
  const out: string[] = [];
  const elementDeletes: string[] = [];
  for (const [name, set] of from.sets) {
    const next = to.sets.get(name);
    if (next && (next.verdictMap !== set.verdictMap || next.key.join() !== set.key.join())) return undefined;
  }
  for (const [name, chain] of from.chains) {
    const next = to.chains.get(name);
    if (next && !sameBase(chain.base, next.base)) return undefined;
  }
  // 1. New sets (empty) and chains (empty), so everything below may name them.
  for (const [name, set] of to.sets) if (!from.sets.has(name)) out.push(setSpec(family, table, set));
  for (const [name, chain] of to.chains) if (!from.chains.has(name)) out.push(chainSpec(family, table, chain));
  // 2. Elements: changed map entries are deleted then added; removed ones go after the rules.
  for (const [name, set] of to.sets) {
    const old = from.sets.get(name);
    const added: string[] = [];
    const changed: string[] = [];
    for (const [k, v] of set.elements) {
      const was = old?.elements.get(k);
      if (was === undefined) added.push(k);
      else if (was !== v) changed.push(k);
    }
    out.push(...elementsCommand("delete", family, table, set, changed));
    out.push(...elementsCommand("add", family, table, set, [...changed, ...added]));
    if (old) {
      const removed = [...old.elements.keys()].filter((k) => !set.elements.has(k));
      elementDeletes.push(...elementsCommand("delete", family, table, old, removed));
    }
  }
  // 3. Chains whose rules change: flushed and refilled (new chains: filled).
  for (const [name, chain] of to.chains) {
    const old = from.chains.get(name);
    if (old && sameRules(old.rules, chain.rules)) continue;
    if (old) out.push(`flush chain ${family} ${table} ${name}`);
    for (const rule of chain.rules) out.push(`add rule ${family} ${table} ${name} ${rule}`);
  }
  // 4. What goes away.
  out.push(...elementDeletes);
  const goneChains = [...from.chains.keys()].filter((n) => !to.chains.has(n));
  for (const name of goneChains) out.push(`flush chain ${family} ${table} ${name}`);
  for (const name of goneChains) out.push(`delete chain ${family} ${table} ${name}`);
  for (const [name, set] of from.sets) if (!to.sets.has(name)) out.push(`delete ${set.verdictMap ? "map" : "set"} ${family} ${table} ${name}`);
  return out;
}

export function emptyTable(family: NftFamily, name: string): NftTable {
  return { family, name: checkName(name, "table name"), sets: new Map(), chains: new Map() };
}

/**
 * The commands that replace a table whole, atomically within the batch: declare it (so
 * the delete cannot fail), delete it, and build it again.
 */
export function replaceTable(to: NftTable): string[] {
  const head = [`add table ${to.family} ${to.name}`, `delete table ${to.family} ${to.name}`, `add table ${to.family} ${to.name}`];
  return [...head, ...diffTable(emptyTable(to.family, to.name), to)!];
}

/** The commands that remove a table if it exists. */
export function removeTable(family: NftFamily, name: string): string[] {
  checkName(name, "table name");
  return [`add table ${family} ${name}`, `delete table ${family} ${name}`];
}

export interface RunNftOptions {
  /** Kill nft after this long, ms. Default 10 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Check only (`nft -c`): nothing is changed. */
  check?: boolean;
}

/** Hands one transaction (a list of commands) to one `nft -f -` process. */
export async function runNft(runner: CommandRunner, commands: readonly string[], options: RunNftOptions = {}): Promise<void> {
  if (commands.length === 0) return;
  await runner.run(["nft", ...(options.check ? ["-c"] : []), "-f", "-"], {
    input: `${commands.join("\n")}\n`,
    timeoutMs: options.timeoutMs ?? 10_000,
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/** What the kernel holds of a table: its chains (names) and its sets and maps with their element keys. */
export interface KernelTable {
  readonly chains: readonly string[];
  readonly sets: ReadonlyMap<string, readonly string[]>;
}

/**
 * Reads a table back with `nft -j list table` (undefined when it does not exist). Element
 * keys are rendered like this module renders them (`"br0" . 10.0.0.5`), so they compare
 * with a model's keys.
 */
export async function listTable(runner: CommandRunner, family: NftFamily, name: string, options: RunNftOptions = {}): Promise<KernelTable | undefined> {
  const result = await runner.run(["nft", "-j", "list", "table", family, checkName(name, "table name")], {
    timeoutMs: options.timeoutMs ?? 10_000,
    allowFailure: true,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  if (result.exitCode !== 0) {
    if (/No such file or directory/.test(result.stderr)) return undefined;
    throw new NftModelError(`nft list table ${family} ${name} failed: ${result.stderr.trim()}`);
  }
  return parseKernelTable(result.stdout);
}

/** Parses `nft -j list table` output (exported for unit tests). */
export function parseKernelTable(json: string): KernelTable {
  const doc = JSON.parse(json) as { nftables?: Array<Record<string, unknown>> };
  const chains: string[] = [];
  const sets = new Map<string, string[]>();
  for (const item of doc.nftables ?? []) {
    const chain = item.chain as { name?: string } | undefined;
    if (chain?.name) chains.push(chain.name);
    const set = (item.set ?? item.map) as { name?: string; type?: string | string[]; elem?: unknown[] } | undefined;
    if (set?.name) {
      const types = Array.isArray(set.type) ? set.type : [set.type ?? ""];
      sets.set(set.name, (set.elem ?? []).map((e) => elementKey(e, types)));
    }
  }
  return { chains, sets };
}

function elementKey(elem: unknown, types: readonly string[]): string {
  // Map elements are [key, verdict]; a concatenated key is {concat: [...]}.
  const key = Array.isArray(elem) ? elem[0] : elem;
  const parts = typeof key === "object" && key !== null && "concat" in key ? (key as { concat: unknown[] }).concat : [key];
  return parts.map((p, i) => (types[i] === "ifname" ? `"${String(p)}"` : String(p))).join(" . ");
}
