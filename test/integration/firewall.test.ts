/**
 * The firewall against the real kernel: a throwaway bridge in the test namespace (the
 * host side), "guests" in throwaway network namespaces behind veth pairs whose host ends
 * play the taps, small TCP/UDP responders in each, and probes from one to another. No
 * traffic leaves the namespaces this file creates (and the one it runs in). Names carry a
 * random suffix, and the tables are this run's own (the `table` option), so runs and
 * other agents' tables in the namespace do not meet. The full guest + SDK traffic tests
 * are test/integration/sg-traffic.test.ts.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createServer, type Server } from "node:net";
import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../drivers/exec/local.js";
import type { CommandRunner, RunOptions, RunResult } from "../../drivers/exec/runner.js";
import { NftFirewall } from "../../agent/network/firewall.js";
import type { FirewallNic, FirewallState, SgRule, SgRuleSet } from "../../agent/network/firewall-types.js";
import { planTransaction } from "../../agent/network/firewall.js";
import { compileFirewall } from "../../agent/network/firewall-compile.js";
import { STATE as GOLDEN_STATE, OPTIONS as GOLDEN_OPTIONS } from "../unit/agent/firewall/fixture.js";

const runner = new LocalRunner({ defaultTimeoutMs: 20_000 });
const isRoot = process.getuid?.() === 0;
const rand = randomBytes(3).toString("hex");
const octet = 1 + (randomBytes(1)[0]! % 250);
const subnet = `10.234.${octet}`;
const gateway = `${subnet}.1`;
const bridge = `cdhfwb${rand}`;
const otherBridge = `cdhfwo${rand}`;
const table = `cdhtest_fw_${rand}`;
const metadataPort = 18_000 + (randomBytes(2).readUInt16BE() % 2000);
const PROBE_MS = 700;

interface Guest {
  name: "a" | "b" | "c";
  ns: string;
  tap: string;
  mac: string;
  ip: string;
}
const guests: Record<"a" | "b" | "c", Guest> = {
  a: { name: "a", ns: `cdhfw-${rand}-a`, tap: `cdhfw${rand}a`, mac: "52:54:00:fa:00:0a", ip: `${subnet}.10` },
  b: { name: "b", ns: `cdhfw-${rand}-b`, tap: `cdhfw${rand}b`, mac: "52:54:00:fa:00:0b", ip: `${subnet}.11` },
  c: { name: "c", ns: `cdhfw-${rand}-c`, tap: `cdhfw${rand}c`, mac: "52:54:00:fa:00:0c", ip: `${subnet}.12` },
};
/** Two namespaces on a bridge the agent does not know: their traffic must pass untouched. */
const strangers = { d: { ns: `cdhfw-${rand}-d`, veth: `vfw${rand}d`, ip: "10.235.0.4" }, e: { ns: `cdhfw-${rand}-e`, veth: `vfw${rand}e`, ip: "10.235.0.5" } };

const sh = (...argv: string[]) => runner.run(argv);
const quiet = (...argv: string[]) => runner.run(argv, { allowFailure: true });

// Responders in a guest: TCP ports answer "ok" and close; UDP ports echo "ok".
const SERVER = `
const net = require("net"), dgram = require("dgram");
for (const p of [22, 80, 81]) net.createServer((s) => s.end("ok\\n")).listen(p, "0.0.0.0");
for (const p of [53, 5000]) { const u = dgram.createSocket("udp4"); u.on("message", (m, r) => u.send("ok", r.port, r.address)); u.bind(p, "0.0.0.0"); }
setInterval(() => {}, 1 << 30);
`;
// One probe: prints "open" when the other side answered, else why not.
const PROBE = `
const [proto, host, port, ms, from] = process.argv.slice(1);
const done = (r) => { console.log(r); process.exit(0); };
setTimeout(() => done("timeout"), Number(ms));
if (proto === "tcp") {
  const s = require("net").connect({ host, port: Number(port), ...(from ? { localAddress: from } : {}) });
  s.on("data", () => done("open")); s.on("error", (e) => done(e.code));
} else {
  const u = require("dgram").createSocket("udp4");
  u.on("message", () => done("open")); u.on("error", (e) => done(e.code));
  u.bind({ port: 0, ...(from ? { address: from } : {}) }, () => u.send("x", Number(port), host));
}
`;

async function probe(from: string, proto: "tcp" | "udp", host: string, port: number, localAddress?: string): Promise<string> {
  const r = await runner.run(["ip", "netns", "exec", from, process.execPath, "-e", PROBE, proto, host, String(port), String(PROBE_MS), ...(localAddress ? [localAddress] : [])], {
    allowFailure: true,
  });
  return r.stdout.trim() || `failed: ${r.stderr.trim()}`;
}
const tcp = (from: Guest, to: Guest | string, port: number) => probe(from.ns, "tcp", typeof to === "string" ? to : to.ip, port);
const udp = (from: Guest, to: Guest | string, port: number) => probe(from.ns, "udp", typeof to === "string" ? to : to.ip, port);

const rule = (action: SgRule["action"], protocol: SgRule["protocol"], ports: SgRule["ports"], peer: SgRule["peer"] = { cidr: "0.0.0.0/0" }): SgRule => ({
  action,
  protocol,
  ports,
  peer,
});
const ALLOW_ALL = rule("ACCEPT", "ALL", "ALL");
const group = (id: string, ingress: SgRule[], egress: SgRule[] = [ALLOW_ALL]): SgRuleSet => ({ securityGroupId: id, ingress, egress });
const nic = (g: Guest, securityGroupIds: string[], addresses = [g.ip]): FirewallNic => ({
  tap: g.tap,
  bridge,
  mac: g.mac,
  addresses,
  gateway,
  securityGroupIds,
  instanceId: `ins-fw${rand}${g.name}`,
});

async function addGuest(g: Guest): Promise<void> {
  await sh("ip", "netns", "add", g.ns);
  await sh("ip", "link", "add", g.tap, "type", "veth", "peer", "name", `${g.tap}p`);
  await sh("ip", "link", "set", `${g.tap}p`, "netns", g.ns);
  await sh("ip", "link", "set", g.tap, "master", bridge, "up");
  await sh("ip", "-n", g.ns, "link", "set", `${g.tap}p`, "name", "eth0");
  await sh("ip", "-n", g.ns, "link", "set", "eth0", "address", g.mac);
  await sh("ip", "-n", g.ns, "link", "set", "lo", "up");
  await sh("ip", "-n", g.ns, "addr", "add", `${g.ip}/24`, "dev", "eth0");
  await sh("ip", "-n", g.ns, "link", "set", "eth0", "up");
}

const servers: { kill(): void }[] = [];
function startResponders(ns: string): void {
  servers.push(runner.stream(["ip", "netns", "exec", ns, process.execPath, "-e", SERVER], { onLine: () => {}, onExit: () => {} }));
}

/** A runner that slips a command nft refuses into the middle of every transaction. */
class RefusingRunner implements CommandRunner {
  readonly description = "refusing";
  refuse = false;
  refused = 0;
  constructor(private readonly inner: CommandRunner) {}
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (this.refuse && argv.includes("-f") && typeof options?.input === "string") {
      this.refused++;
      const lines = options.input.trimEnd().split("\n");
      lines.splice(Math.floor(lines.length / 2), 0, `add rule inet ${table} no_such_chain accept`);
      return this.inner.run(argv, { ...options, input: `${lines.join("\n")}\n` });
    }
    return this.inner.run(argv, options);
  }
  stream: CommandRunner["stream"] = (argv, options) => this.inner.stream(argv, options);
  close = () => this.inner.close();
}

const listTables = async () => (await sh("nft", "list", "table", "inet", table)).stdout + (await sh("nft", "list", "table", "bridge", table)).stdout;

describe.skipIf(!isRoot)("firewall (nftables, real kernel, veth guests on a scratch bridge)", () => {
  const firewall = new NftFirewall({ runner, table, metadataPort });
  let hostTcp: Server[] = [];
  let hostUdp: Socket | undefined;

  beforeAll(async () => {
    expect((await sh("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")).stdout.trim()).toBe("1");
    await sh("ip", "link", "add", bridge, "type", "bridge");
    await sh("ip", "addr", "add", `${gateway}/24`, "dev", bridge);
    await sh("ip", "link", "set", bridge, "up");
    for (const g of Object.values(guests)) {
      await addGuest(g);
      startResponders(g.ns);
    }
    await sh("ip", "link", "add", otherBridge, "type", "bridge");
    await sh("ip", "link", "set", otherBridge, "up");
    for (const s of Object.values(strangers)) {
      await sh("ip", "netns", "add", s.ns);
      await sh("ip", "link", "add", s.veth, "type", "veth", "peer", "name", `${s.veth}p`);
      await sh("ip", "link", "set", `${s.veth}p`, "netns", s.ns);
      await sh("ip", "link", "set", s.veth, "master", otherBridge, "up");
      await sh("ip", "-n", s.ns, "link", "set", `${s.veth}p`, "name", "eth0");
      await sh("ip", "-n", s.ns, "addr", "add", `${s.ip}/24`, "dev", "eth0");
      await sh("ip", "-n", s.ns, "link", "set", "eth0", "up");
      startResponders(s.ns);
    }
    // The host's side: the metadata port and DNS at the gateway (boot essentials), and a port that is neither.
    for (const port of [metadataPort, metadataPort + 1]) {
      const srv = createServer((s) => s.end("ok\n"));
      await new Promise<void>((resolve) => srv.listen(port, gateway, resolve));
      hostTcp.push(srv);
    }
    hostUdp = createSocket("udp4");
    hostUdp.on("message", (_m, r) => hostUdp!.send("ok", r.port, r.address));
    await new Promise<void>((resolve) => hostUdp!.bind(53, gateway, resolve));
    // Responders up, and everything reachable before any rule.
    for (let i = 0; i < 50 && (await tcp(guests.a, guests.b, 80)) !== "open"; i++) await new Promise((r) => setTimeout(r, 100));
  }, 60_000);

  afterAll(async () => {
    for (const s of servers) s.kill();
    for (const s of hostTcp) s.close();
    hostUdp?.close();
    await firewall.remove().catch(() => undefined);
    for (const ns of [...Object.values(guests).map((g) => g.ns), ...Object.values(strangers).map((s) => s.ns)]) await quiet("ip", "netns", "del", ns);
    await quiet("ip", "link", "del", bridge);
    await quiet("ip", "link", "del", otherBridge);
  }, 30_000);

  it("nft -c accepts the golden rulesets: a fresh start's whole transaction, and a change after it", async () => {
    const full = readFileSync(fileURLToPath(new URL("../golden/nft-firewall-full.nft", import.meta.url)), "utf8");
    const change = readFileSync(fileURLToPath(new URL("../golden/nft-firewall-change.nft", import.meta.url)), "utf8");
    expect(full).toBe(`${planTransaction(undefined, compileFirewall(GOLDEN_STATE, GOLDEN_OPTIONS)).join("\n")}\n`);
    await runner.run(["nft", "-c", "-f", "-"], { input: full });
    await runner.run(["nft", "-c", "-f", "-"], { input: full + change });
    // And nft -c does refuse: the change alone names chains that do not exist.
    const alone = await runner.run(["nft", "-c", "-f", "-"], { input: change.replaceAll("cdh_filter", table), allowFailure: true });
    expect(alone.exitCode).not.toBe(0);
  });

  it("an empty group denies everything both ways; the boot essentials at the gateway still pass", async () => {
    await firewall.sync({ groups: [group("sg-empty001", [], [])], nics: [nic(guests.a, ["sg-empty001"]), nic(guests.b, ["sg-empty001"])] });
    const [ab, ba, bau, dns, metadata, other] = await Promise.all([
      tcp(guests.a, guests.b, 80),
      tcp(guests.b, guests.a, 22),
      udp(guests.b, guests.a, 5000),
      udp(guests.a, gateway, 53),
      tcp(guests.a, gateway, metadataPort),
      tcp(guests.a, gateway, metadataPort + 1),
    ]);
    expect({ ab, ba, bau, dns, metadata, other }).toEqual({ ab: "timeout", ba: "timeout", bau: "timeout", dns: "open", metadata: "open", other: "timeout" });
  });

  it("a NIC without groups is denied too, and interfaces that are not the agent's pass untouched", async () => {
    await firewall.sync({ groups: [], nics: [nic(guests.a, []), nic(guests.b, [])] });
    const d = { ...guests.a, ns: strangers.d.ns };
    expect(await Promise.all([tcp(guests.a, guests.b, 80), tcp(d, strangers.e.ip, 80)])).toEqual(["timeout", "open"]);
  });

  it("TCP to an allowed port passes and to another port does not; the first matching rule wins, top down", async () => {
    const web = group("sg-web00001", [rule("DROP", "TCP", [81]), rule("ACCEPT", "TCP", [80, 81, [20, 23]]), rule("ACCEPT", "UDP", [5000])]);
    const open = group("sg-open0001", [ALLOW_ALL]);
    const state: FirewallState = { groups: [web, open], nics: [nic(guests.a, ["sg-web00001"]), nic(guests.b, ["sg-open0001"])] };
    await firewall.sync(state);
    expect(await Promise.all([tcp(guests.b, guests.a, 80), tcp(guests.b, guests.a, 22), tcp(guests.b, guests.a, 81), udp(guests.b, guests.a, 5000), udp(guests.b, guests.a, 53)])).toEqual([
      "open",
      "open",
      "timeout",
      "open",
      "timeout",
    ]);
    // Removing the DROP above the ACCEPT restores access.
    await firewall.sync({ ...state, groups: [group("sg-web00001", web.ingress.slice(1)), open] });
    expect(await tcp(guests.b, guests.a, 81)).toBe("open");
  });

  it("a NIC's groups apply in their bound order", async () => {
    const deny80 = group("sg-deny0080", [rule("DROP", "TCP", [80])]);
    const allow = group("sg-allow001", [ALLOW_ALL]);
    const open = group("sg-open0001", [ALLOW_ALL]);
    const nicB = nic(guests.b, ["sg-open0001"]);
    await firewall.sync({ groups: [deny80, allow, open], nics: [nic(guests.a, ["sg-deny0080", "sg-allow001"]), nicB] });
    expect(await Promise.all([tcp(guests.b, guests.a, 80), tcp(guests.b, guests.a, 81)])).toEqual(["timeout", "open"]);
    await firewall.sync({ groups: [deny80, allow, open], nics: [nic(guests.a, ["sg-allow001", "sg-deny0080"]), nicB] });
    expect(await tcp(guests.b, guests.a, 80)).toBe("open");
  });

  it("replies of an allowed flow pass although the initiator's inbound rules allow nothing (state)", async () => {
    const closed = group("sg-closed01", [], [ALLOW_ALL]);
    const web = group("sg-web00001", [rule("ACCEPT", "TCP", [80]), rule("ACCEPT", "UDP", [5000])], []);
    await firewall.sync({ groups: [closed, web], nics: [nic(guests.a, ["sg-closed01"]), nic(guests.b, ["sg-web00001"])] });
    expect(await Promise.all([tcp(guests.a, guests.b, 80), udp(guests.a, guests.b, 5000), tcp(guests.b, guests.a, 80)])).toEqual(["open", "open", "timeout"]);
  });

  it("a group peer follows membership: joining gains access, leaving loses it", async () => {
    const db = group("sg-db000001", [rule("ACCEPT", "TCP", "ALL", { securityGroupId: "sg-app00001" })]);
    const app = group("sg-app00001", []);
    const other = group("sg-other001", []);
    const groups = [db, app, other];
    await firewall.sync({ groups, nics: [nic(guests.a, ["sg-db000001"]), nic(guests.b, ["sg-other001"]), nic(guests.c, ["sg-other001"])] });
    expect(await Promise.all([tcp(guests.b, guests.a, 80), tcp(guests.c, guests.a, 80)])).toEqual(["timeout", "timeout"]);
    const joined: FirewallState = { groups, nics: [nic(guests.a, ["sg-db000001"]), nic(guests.b, ["sg-other001", "sg-app00001"]), nic(guests.c, ["sg-other001"])] };
    // Joining: one member added to the group's set, and the joining NIC's own chains; no group chain is rewritten.
    const plan = firewall.plan(joined);
    expect(plan).toContain(`add element inet ${table} sg_app00001_members { ${guests.b.ip} }`);
    expect(plan.filter((c) => / chain inet \S+ sg_/.test(c))).toEqual([]);
    await firewall.sync(joined);
    expect(await Promise.all([tcp(guests.b, guests.a, 80), tcp(guests.c, guests.a, 80)])).toEqual(["open", "timeout"]);
    await firewall.sync({ groups, nics: [nic(guests.a, ["sg-db000001"]), nic(guests.b, ["sg-other001"]), nic(guests.c, ["sg-other001"])] });
    expect(await tcp(guests.b, guests.a, 80)).toBe("timeout");
  });

  it("a guest that forges its source IP or MAC gets nothing through", async () => {
    const open = group("sg-open0001", [ALLOW_ALL]);
    await firewall.sync({ groups: [open], nics: [nic(guests.a, ["sg-open0001"]), nic(guests.b, ["sg-open0001"]), nic(guests.c, ["sg-open0001"])] });
    expect(await tcp(guests.c, guests.a, 80)).toBe("open");
    // Another address on c's NIC (b's, then a free one): what c sends from it is dropped.
    const forged = `${subnet}.99`;
    await sh("ip", "-n", guests.c.ns, "addr", "add", `${forged}/24`, "dev", "eth0");
    try {
      expect(await probe(guests.c.ns, "tcp", guests.a.ip, 80, forged)).toBe("timeout");
      expect(await probe(guests.c.ns, "udp", guests.a.ip, 5000, forged)).toBe("timeout");
    } finally {
      await sh("ip", "-n", guests.c.ns, "addr", "del", `${forged}/24`, "dev", "eth0");
    }
    // Another MAC: nothing passes, not even its ARP.
    await sh("ip", "-n", guests.c.ns, "link", "set", "eth0", "address", "52:54:00:fa:00:99");
    // Everyone forgets c's old MAC, so that a reply to c needs c's ARP answer (from its new MAC) to get through.
    for (const g of Object.values(guests)) await sh("ip", "-n", g.ns, "neigh", "flush", "all");
    try {
      expect(await tcp(guests.c, guests.a, 80)).toBe("timeout");
    } finally {
      await sh("ip", "-n", guests.c.ns, "link", "set", "eth0", "address", guests.c.mac);
    }
    expect(await tcp(guests.c, guests.a, 80)).toBe("open");
  });

  it("a refused transaction leaves the previous rules in force, and the next one applies", async () => {
    const open = group("sg-open0001", [ALLOW_ALL]);
    const before: FirewallState = { groups: [open], nics: [nic(guests.a, ["sg-open0001"]), nic(guests.b, ["sg-open0001"])] };
    const after: FirewallState = { groups: [open, group("sg-closed01", [])], nics: [nic(guests.a, ["sg-closed01"]), nic(guests.b, ["sg-open0001"])] };
    const refusing = new RefusingRunner(runner);
    const tracking = new NftFirewall({ runner: refusing, table, metadataPort });
    await tracking.sync(before);
    const listed = await listTables();
    refusing.refuse = true;
    // The incremental change is refused, then the whole replacement it falls back to.
    await expect(tracking.sync(after)).rejects.toThrow(/no_such_chain/);
    expect(refusing.refused).toBe(2);
    expect(await listTables()).toBe(listed);
    expect(await tcp(guests.b, guests.a, 80)).toBe("open");
    // A fresh process's first transaction (a whole replacement) refused: the same.
    await expect(new NftFirewall({ runner: refusing, table, metadataPort }).sync(after)).rejects.toThrow(/no_such_chain/);
    expect(await listTables()).toBe(listed);
    refusing.refuse = false;
    await tracking.sync(after);
    expect(await tcp(guests.b, guests.a, 80)).toBe("timeout");
    firewall.forget(); // another instance changed the tables: the shared one's next sync replaces them whole
  });

  it("strays: nothing when the kernel matches the state; a NIC's leftovers and foreign chains are named", async () => {
    const open = group("sg-open0001", [ALLOW_ALL]);
    const both: FirewallState = { groups: [open], nics: [nic(guests.a, ["sg-open0001"]), nic(guests.b, ["sg-open0001"])] };
    await firewall.sync(both);
    expect(await firewall.strays(both)).toEqual([]);
    const onlyA: FirewallState = { groups: [open], nics: [nic(guests.a, ["sg-open0001"])] };
    const strays = await firewall.strays(onlyA);
    expect(strays).toEqual(
      expect.arrayContaining([
        `inet ${table} chain nic_${guests.b.tap}_in`,
        `inet ${table} set nic_out element "${bridge}" . ${guests.b.ip}`,
        `inet ${table} set sg_open0001_members element ${guests.b.ip}`,
        `bridge ${table} chain from_${guests.b.tap}`,
        `bridge ${table} set from_tap element "${guests.b.tap}"`,
      ]),
    );
    await sh("nft", "add", "chain", "inet", table, "leftover");
    expect(await firewall.strays(both)).toEqual([`inet ${table} chain leftover`]);
    await sh("nft", "delete", "chain", "inet", table, "leftover");
  });

  it("terminating removes the NIC's chains and set elements", async () => {
    const open = group("sg-open0001", [ALLOW_ALL]);
    await firewall.sync({ groups: [open], nics: [nic(guests.a, ["sg-open0001"]), nic(guests.b, ["sg-open0001"])] });
    await firewall.sync({ groups: [open], nics: [nic(guests.a, ["sg-open0001"])] });
    const listed = await listTables();
    expect(listed).not.toContain(guests.b.tap);
    expect(listed).not.toContain(guests.b.ip);
    expect(listed).toContain(guests.a.tap);
    expect(await firewall.strays({ groups: [open], nics: [nic(guests.a, ["sg-open0001"])] })).toEqual([]);
  });
});
