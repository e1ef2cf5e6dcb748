/**
 * A DHCP request's chaddr held to the NIC of the tap it came in on (agent/network/dhcp/chaddr.ts):
 * the table's text, and the DHCP service loading it with the leases (a recording runner that
 * fails closed: dnsmasq "fails to start", anything but nft and dnsmasq throws). That the kernel
 * drops by it was checked on a scratch bridge (`unshare -n`) with busybox udhcpc (own MAC: passes;
 * another NIC's MAC from the same port: dropped); no integration test yet.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CommandRunner, RunOptions } from "../../../../drivers/exec/runner.js";
import { chaddrRemoval, chaddrRuleset, tapMacs } from "../../../../agent/network/dhcp/chaddr.js";
import { DhcpService } from "../../../../agent/network/dhcp/service.js";
import type { InstanceRecord, NicRecord } from "../../../../agent/model.js";
import type { Subnet } from "../../../../agent/network/subnets.js";

const subnet: Subnet = { subnetId: "subnet-a", vpcId: "vpc-a", network: "net-a", bridge: "br-a", address: "10.9.0.0", prefixLength: 24, gateway: "10.9.0.1", dns: [] };

function rec(instanceId: string, nics: NicRecord[]): InstanceRecord {
  return { instanceId, nics } as unknown as InstanceRecord;
}

describe("the chaddr table", () => {
  it("pairs every NIC's tap (by its slot) with its MAC, lower case; a malformed MAC or ID gets no pair", () => {
    const records = [
      rec("ins-bbbb0002", [{ mac: "52:54:00:AA:BB:CC", network: "net-a", ipv4: "10.9.0.3" }]),
      rec("ins-aaaa0001", [
        { mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.9.0.2" },
        { mac: "52:54:00:00:00:09", network: "net-a", ipv4: "10.9.0.9", slot: 3 },
        { mac: "not-a-mac", network: "net-a" },
      ]),
      rec("ins-BAD", [{ mac: "52:54:00:00:00:05", network: "net-a" }]),
    ];
    expect(tapMacs(records)).toEqual([
      { tap: "cdhaaaa00010", mac: "52:54:00:00:00:01" },
      { tap: "cdhaaaa00013", mac: "52:54:00:00:00:09" },
      { tap: "cdhbbbb00020", mac: "52:54:00:aa:bb:cc" },
    ]);
  });

  it("drops, on the agent's taps, a DHCP request whose chaddr (@th,288,48) is not the MAC of its tap's NIC", () => {
    expect(chaddrRuleset("cdh_filter_dhcp", [{ tap: "cdhaaaa00010", mac: "52:54:00:00:00:01" }, { tap: "cdhbbbb00020", mac: "52:54:00:aa:bb:cc" }])).toBe(
      [
        "table bridge cdh_filter_dhcp",
        "delete table bridge cdh_filter_dhcp",
        "table bridge cdh_filter_dhcp {",
        "  set agent_taps {",
        "    typeof iifname",
        '    elements = { "cdhaaaa00010", "cdhbbbb00020" }',
        "  }",
        "  set nic_macs {",
        "    typeof iifname . @th,288,48",
        '    elements = { "cdhaaaa00010" . 0x525400000001, "cdhbbbb00020" . 0x525400aabbcc }',
        "  }",
        "  chain dhcp_requests {",
        "    type filter hook prerouting priority -260; policy accept;",
        "    iifname @agent_taps udp sport 68 udp dport 67 iifname . @th,288,48 != @nic_macs counter drop",
        "  }",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("checks only the taps this agent lists (a table another agent left touches none of them); with no NIC, none", () => {
    const text = chaddrRuleset("t", []);
    expect(text).not.toContain("elements");
    expect(text).toContain("iifname @agent_taps udp sport 68 udp dport 67 iifname . @th,288,48 != @nic_macs counter drop");
    expect(text).not.toContain("cdh*");
    expect(chaddrRemoval("t")).toBe("table bridge t\ndelete table bridge t\n");
  });

  it("refuses names that would change the ruleset's meaning", () => {
    expect(() => chaddrRuleset("t; flush ruleset", [])).toThrow(/bad nftables table name/);
    expect(() => chaddrRuleset("t", [{ tap: 'x" accept', mac: "52:54:00:00:00:01" }])).toThrow(/bad tap name/);
    expect(() => chaddrRuleset("t", [{ tap: "cdhx0", mac: "52:54:00:00:00" }])).toThrow(/bad MAC/);
  });
});

describe("the DHCP service loads the chaddr table with the leases", () => {
  let dir: string;
  let nft: string[];
  let failNft: boolean;
  let records: InstanceRecord[];

  const runner: CommandRunner = {
    description: "recording",
    async run(argv: readonly string[], options?: RunOptions) {
      if (argv[0] === "nft" && argv[1] === "-f" && argv[2] === "-") {
        if (failNft) throw new Error("nft: Could not process rule");
        nft.push(String(options?.input));
        return { command: argv, exitCode: 0, stdout: "", stderr: "", durationMs: 1 };
      }
      if (/dnsmasq$/.test(argv[0]!)) return { command: argv, exitCode: 1, stdout: "", stderr: "not in a unit test", durationMs: 1 };
      throw new Error(`unexpected command ${argv.join(" ")}`);
    },
    stream() {
      throw new Error("unexpected stream");
    },
    async close() {},
  };

  const service = (subnets: Subnet[]) =>
    new DhcpService({ runner, dir, subnets, leaseTimeS: 3600, records: () => records, logger: pino({ level: "silent" }), list: async () => [], nftTable: "cdh_filter_dhcp", superviseIntervalMs: 3_600_000 });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "dhcp-chaddr-"));
    nft = [];
    failNft = false;
    records = [rec("ins-aaaa0001", [{ mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.9.0.2", subnetId: "subnet-a" }])];
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("at start and after each NIC change, only when the pairs changed; a failed load is retried at the next pass", async () => {
    const svc = service([subnet]);
    await svc.start();
    expect(nft).toHaveLength(1);
    expect(nft[0]).toContain('elements = { "cdhaaaa00010" . 0x525400000001 }');
    await svc.sync();
    expect(nft).toHaveLength(1); // nothing changed: not loaded again
    records = [...records, rec("ins-bbbb0002", [{ mac: "52:54:00:00:00:02", network: "net-a", ipv4: "10.9.0.3", subnetId: "subnet-a" }])];
    failNft = true;
    await svc.sync();
    expect(nft).toHaveLength(1);
    failNft = false;
    await svc.sync();
    expect(nft).toHaveLength(2);
    expect(nft[1]).toContain('elements = { "cdhaaaa00010" . 0x525400000001, "cdhbbbb00020" . 0x525400000002 }');
    await svc.close();
  });

  it("guardNow (the ENI actions' call, with the firewall's sync before a hot-plug) loads the new NIC's pair at once; the NIC change's sync after it has nothing left to load", async () => {
    const svc = service([subnet]);
    await svc.start();
    records = [...records, rec("ins-cccc0003", [{ mac: "52:54:00:00:00:03", network: "net-a", ipv4: "10.9.0.4", subnetId: "subnet-a", slot: 0 }])];
    await svc.guardNow();
    expect(nft).toHaveLength(2);
    expect(nft[1]).toContain('"cdhcccc00030" . 0x525400000003');
    await svc.sync();
    expect(nft).toHaveLength(2);
    await svc.close();
  });

  it("with DHCP served on no subnet, removes a table a previous agent left", async () => {
    const svc = service([]);
    await svc.start();
    expect(nft).toEqual(["table bridge cdh_filter_dhcp\ndelete table bridge cdh_filter_dhcp\n"]);
    await svc.close();
  });
});
