/**
 * The firewall's pure parts: the compiled ruleset (golden files, reviewed like the domain
 * XML ones; test/integration/firewall.test.ts has nft -c accept them and the kernel
 * enforce them), the difference between two states as one transaction, and the model that
 * advances only when nft took the transaction. `UPDATE_GOLDEN=1` rewrites the golden files.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { compileFirewall, compileRule, FirewallStateError } from "../../../../agent/network/firewall-compile.js";
import { NftFirewall, planTransaction } from "../../../../agent/network/firewall.js";
import type { FirewallNic, FirewallState, SgRule, SgRuleSet } from "../../../../agent/network/firewall-types.js";
import { parseKernelTable, renderRule } from "../../../../drivers/network/nft.js";
import { RecordingRunner } from "../../../support/recording-runner.js";
import { APP, EMPTY, OPTIONS, STATE, WEB } from "./fixture.js";

const goldenPath = (name: string) => fileURLToPath(new URL(`../../../golden/${name}`, import.meta.url));
function golden(name: string, actual: string): string {
  if (process.env.UPDATE_GOLDEN === "1") writeFileSync(goldenPath(name), actual);
  return readFileSync(goldenPath(name), "utf8");
}
const text = (commands: readonly string[]) => `${commands.join("\n")}\n`;
const compile = (state: FirewallState) => compileFirewall(state, OPTIONS);

/** The fixture after a typical change: a rule inserted at the top of WEB, NIC b leaves APP for EMPTY, NIC c terminated. */
const CHANGED: FirewallState = {
  groups: [{ ...WEB, ingress: [{ action: "DROP", protocol: "UDP", ports: "ALL", peer: { cidr: "10.201.0.0/24" } }, ...WEB.ingress] }, APP, EMPTY],
  nics: [STATE.nics[0]!, { ...STATE.nics[1]!, securityGroupIds: ["sg-empty003"] }],
};

describe("the compiled firewall", () => {
  it("renders a fresh start's whole transaction exactly as the golden file", () => {
    const actual = text(planTransaction(undefined, compile(STATE)));
    expect(actual).toBe(golden("nft-firewall-full.nft", actual));
  });

  it("renders a change (a rule, a binding, a termination) as the golden file: only what differs", () => {
    const actual = text(planTransaction(compile(STATE), compile(CHANGED)));
    expect(actual).toBe(golden("nft-firewall-change.nft", actual));
  });

  it("has nothing to do when the state did not change", () => {
    expect(planTransaction(compile(STATE), compile(STATE))).toEqual([]);
  });

  it("starts with a whole replacement of both tables in one batch: declared, deleted, rebuilt", () => {
    const plan = planTransaction(undefined, compile(STATE));
    expect(plan.slice(0, 3)).toEqual(["add table bridge cdh_filter", "delete table bridge cdh_filter", "add table bridge cdh_filter"]);
    expect(plan).toContain("delete table inet cdh_filter");
    expect(plan.filter((c) => c.startsWith("delete table"))).toHaveLength(2);
  });

  it("a change to a 100-rule group bound to 50 NICs rewrites that group's one chain and nothing else", () => {
    const rules = (first: number): SgRule[] => Array.from({ length: 100 }, (_, i) => ({ action: "ACCEPT", protocol: "TCP", ports: [first + i], peer: { cidr: "0.0.0.0/0" } }) as SgRule);
    const nics: FirewallNic[] = Array.from({ length: 50 }, (_, i) => ({
      tap: `cdhbench${String(i).padStart(3, "0")}0`,
      bridge: "cdhtbr0",
      mac: `52:54:00:00:01:${i.toString(16).padStart(2, "0")}`,
      addresses: [`10.201.0.${10 + i}`],
      gateway: "10.201.0.1",
      securityGroupIds: ["sg-big00001"],
      instanceId: `ins-bench${String(i).padStart(3, "0")}`,
    }));
    const before = compile({ groups: [{ securityGroupId: "sg-big00001", ingress: rules(1000), egress: [] }], nics });
    const after = compile({ groups: [{ securityGroupId: "sg-big00001", ingress: rules(2000), egress: [] }], nics });
    const plan = planTransaction(before, after);
    expect(plan[0]).toBe("flush chain inet cdh_filter sg_big00001_in");
    expect(plan.slice(1).every((c) => c.startsWith("add rule inet cdh_filter sg_big00001_in tcp dport "))).toBe(true);
    expect(plan).toHaveLength(101);
  });

  it("a NIC joining a group adds its address to the group's set and rewrites only its own chains", () => {
    const joined: FirewallState = { ...STATE, nics: [STATE.nics[0]!, STATE.nics[1]!, { ...STATE.nics[2]!, securityGroupIds: ["sg-web00001"] }] };
    const plan = planTransaction(compile(STATE), compile(joined));
    expect(plan).toContain("add element inet cdh_filter sg_web00001_members { 10.202.0.10 }");
    const chains = new Set(plan.filter((c) => c.includes(" rule ") || c.startsWith("flush")).map((c) => c.split(" ")[4]));
    expect([...chains].sort()).toEqual(["nic_cdhcccc00030_in", "nic_cdhcccc00030_out"]);
  });

  it("a terminated NIC's elements go, then its chains are flushed and deleted once nothing jumps to them", () => {
    const plan = planTransaction(compile(STATE), compile({ ...STATE, nics: STATE.nics.slice(0, 2) }));
    const at = (cmd: string) => {
      const i = plan.indexOf(cmd);
      expect(i, cmd).toBeGreaterThanOrEqual(0);
      return i;
    };
    expect(at("delete element bridge cdh_filter from_tap { \"cdhcccc00030\" }")).toBeLessThan(at("delete chain bridge cdh_filter from_cdhcccc00030"));
    expect(at('delete element inet cdh_filter nic_in { "cdhbr1" . 10.202.0.10 }')).toBeLessThan(at("delete chain inet cdh_filter nic_cdhcccc00030_in"));
    expect(at("flush chain inet cdh_filter nic_cdhcccc00030_in")).toBeLessThan(at("delete chain inet cdh_filter nic_cdhcccc00030_in"));
    expect(plan).toContain('delete element inet cdh_filter agent_bridges { "cdhbr1" }');
    expect(plan.join("\n")).not.toMatch(/cdhaaaa|cdhbbbb/);
  });

  it("an address that moves from one NIC to another re-points its map entries in the same transaction", () => {
    const moved: FirewallState = {
      ...STATE,
      nics: [{ ...STATE.nics[0]!, addresses: ["10.201.0.10", "10.201.0.12"] }, { ...STATE.nics[1]!, addresses: ["10.201.0.11"] }, STATE.nics[2]!],
    };
    const plan = planTransaction(compile(STATE), compile(moved));
    const del = plan.indexOf('delete element inet cdh_filter nic_out { "cdhtbr0" . 10.201.0.12 }');
    const add = plan.findIndex((c) => c.startsWith("add element inet cdh_filter nic_out") && c.includes('"cdhtbr0" . 10.201.0.12 : jump nic_cdhaaaa00010_out'));
    expect(del).toBeGreaterThanOrEqual(0);
    expect(add).toBeGreaterThan(del);
  });

  it("refuses a state that cannot be right, before anything runs", () => {
    const nic = STATE.nics[0]!;
    expect(() => compile({ ...STATE, nics: [{ ...nic, tap: "tap;drop" }] })).toThrow(FirewallStateError);
    expect(() => compile({ ...STATE, nics: [nic, { ...STATE.nics[1]!, addresses: ["10.201.0.10"] }] })).toThrow(/two NICs/);
    expect(() => compile({ ...STATE, nics: [{ ...nic, securityGroupIds: ["sg-nothere1"] }] })).toThrow(/unknown security group/);
    expect(() => compile({ ...STATE, nics: [{ ...nic, mac: "52:54:00:zz:00:01" }] })).toThrow(/MAC/);
    expect(() => compile({ ...STATE, nics: [{ ...nic, addresses: ["10.201.0.300"] }] })).toThrow(/IPv4/);
  });
});

describe("one security group rule", () => {
  const known = new Set(["sg-web00001"]);
  const r = (rule: Partial<SgRule>): SgRule => ({ action: "ACCEPT", protocol: "ALL", ports: "ALL", peer: { cidr: "0.0.0.0/0" }, ...rule });
  const one = (rule: SgRule, dir: "in" | "out" = "in") => compileRule(rule, dir, known).map(renderRule);

  it("matches the peer as the sender inbound and as the receiver outbound", () => {
    expect(one(r({ peer: { cidr: "10.1.2.3" } }))).toEqual(["ip saddr 10.1.2.3 accept"]);
    expect(one(r({ peer: { cidr: "10.1.2.3/32" } }), "out")).toEqual(["ip daddr 10.1.2.3 accept"]);
    expect(one(r({ peer: { securityGroupId: "sg-web00001" } }), "out")).toEqual(["ip daddr @sg_web00001_members accept"]);
  });

  it("normalizes a prefix with host bits and leaves 0.0.0.0/0 unmatched", () => {
    expect(one(r({ peer: { cidr: "10.1.2.3/16" }, action: "DROP" }))).toEqual(["ip saddr 10.1.0.0/16 drop"]);
    expect(one(r({}))).toEqual(["accept"]);
  });

  it("writes ports as one value, a set of values and ranges, or the protocol alone", () => {
    expect(one(r({ protocol: "TCP", ports: [22] }))).toEqual(["tcp dport 22 accept"]);
    expect(one(r({ protocol: "UDP", ports: [53, [1000, 2000], [7, 7]] }))).toEqual(["udp dport { 53, 1000-2000, 7 } accept"]);
    expect(one(r({ protocol: "TCP", ports: "ALL" }))).toEqual(["meta l4proto tcp accept"]);
    expect(one(r({ protocol: "ICMP" }))).toEqual(["meta l4proto icmp accept"]);
    expect(one(r({ protocol: "GRE" }))).toEqual(["meta l4proto gre accept"]);
  });

  it("leaves out what can match nothing here: ICMPv6 (guests have no IPv6) and a peer group that does not exist", () => {
    expect(one(r({ protocol: "ICMPV6" }))).toEqual([]);
    expect(one(r({ peer: { securityGroupId: "sg-gone0001" } }))).toEqual([]);
  });
});

describe("NftFirewall", () => {
  const group: SgRuleSet = { securityGroupId: "sg-web00001", ingress: [], egress: [] };
  const state = (ids: string[]): FirewallState => ({ groups: [group], nics: [{ ...STATE.nics[0]!, securityGroupIds: ids }] });
  const nftCalls = (runner: RecordingRunner) => runner.runs.filter((c) => c.argv[0] === "nft").map((c) => String(c.options?.input ?? ""));

  it("hands each change to one nft process with a deadline, and only the difference after the first", async () => {
    const runner = new RecordingRunner();
    runner.on(["nft", "-f", "-"], {});
    const fw = new NftFirewall({ runner, table: "cdh_filter", metadataPort: 8775, timeoutMs: 5000 });
    await fw.sync(state([]));
    await fw.sync(state(["sg-web00001"]));
    await fw.sync(state(["sg-web00001"]));
    const inputs = nftCalls(runner);
    expect(inputs).toHaveLength(2);
    expect(inputs[0]).toContain("delete table inet cdh_filter");
    expect(inputs[1]).not.toContain("table");
    expect(runner.runs.every((c) => c.options?.timeoutMs === 5000)).toBe(true);
  });

  it("keeps its model when nft refuses: the next sync starts from what the kernel still has", async () => {
    const runner = new RecordingRunner();
    let refuse = 0;
    runner.on(["nft", "-f", "-"], () => (refuse-- > 0 ? { exitCode: 1, stderr: "Error: Could not process rule" } : {}));
    const fw = new NftFirewall({ runner, table: "cdh_filter", metadataPort: 8775 });
    await fw.sync(state([]));
    refuse = 2;
    await expect(fw.sync(state(["sg-web00001"]))).rejects.toThrow(/Could not process rule/);
    const inputs = nftCalls(runner);
    // The refused edit, then the whole replacement it fell back to (refused too).
    expect(inputs).toHaveLength(3);
    expect(inputs[1]).not.toContain("delete table");
    expect(inputs[2]).toContain("delete table inet cdh_filter");
    // Nothing is known to be applied any more: the next sync replaces the tables whole.
    await fw.sync(state(["sg-web00001"]));
    expect(nftCalls(runner)[3]).toContain("delete table inet cdh_filter");
  });

  it("replaces the tables whole after forget() (a libvirtd restart)", async () => {
    const runner = new RecordingRunner();
    runner.on(["nft", "-f", "-"], {});
    const fw = new NftFirewall({ runner, table: "cdh_filter", metadataPort: 8775 });
    await fw.sync(state([]));
    fw.forget();
    await fw.sync(state([]));
    expect(nftCalls(runner).map((i) => i.includes("delete table"))).toEqual([true, true]);
  });
});

describe("reading the kernel's table back", () => {
  it("parses nft -j output into chains and element keys rendered as the model renders them", () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: "1.0.6" } },
        { table: { family: "inet", name: "t" } },
        { set: { family: "inet", name: "s", table: "t", type: "ipv4_addr", elem: ["10.0.0.1", "10.0.0.2"] } },
        { map: { family: "inet", name: "m", table: "t", type: ["ifname", "ipv4_addr"], map: "verdict", elem: [[{ concat: ["br0", "10.0.0.1"] }, { jump: { target: "c1" } }]] } },
        { chain: { family: "inet", table: "t", name: "c1" } },
        { rule: { family: "inet", table: "t", chain: "c1", expr: [{ accept: null }] } },
      ],
    });
    const table = parseKernelTable(json);
    expect(table.chains).toEqual(["c1"]);
    expect([...table.sets]).toEqual([
      ["s", ["10.0.0.1", "10.0.0.2"]],
      ["m", ['"br0" . 10.0.0.1']],
    ]);
    // The same key the compiler puts in its model.
    const compiled = compile(STATE).inet.sets.get("nic_out")!;
    expect([...compiled.elements.keys()]).toContain('"cdhtbr0" . 10.201.0.10');
  });
});
