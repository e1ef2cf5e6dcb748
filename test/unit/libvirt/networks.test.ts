/**
 * The agent's network against what libvirt already has: one line naming both networks
 * when they share a bridge or a subnet, and nothing defined or destroyed in that case.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CommandRunner, RunOptions, RunResult } from "../../../drivers/exec/runner.js";
import {
  findNetworkConflict,
  NetworkConflictError,
  parseNetworkXml,
  VirshNetworks,
  type IsolatedNetwork,
  type NetworkDefinition,
} from "../../../drivers/libvirt/networks.js";

const AGENT_DEFAULT: IsolatedNetwork = { name: "cdh-default", bridge: "cdhbr0", ip: { address: "10.201.0.1", prefixLength: 24 } };

describe("parseNetworkXml", () => {
  it("reads the name, the bridge and the IPv4 addresses (prefix or netmask), leaving IPv6 out", () => {
    const xml = `<network>
  <name>default</name>
  <uuid>0b0c4d5e-0000-4000-8000-000000000000</uuid>
  <forward mode="nat"/>
  <bridge name="virbr0" stp="on" delay="0"/>
  <ip address="192.168.122.1" netmask="255.255.255.0">
    <dhcp><range start="192.168.122.2" end="192.168.122.254"/></dhcp>
  </ip>
  <ip family='ipv6' address='fd00::1' prefix='64'/>
  <ip address='10.9.0.1' prefix='16'/>
</network>`;
    expect(parseNetworkXml(xml)).toEqual({
      name: "default",
      bridge: "virbr0",
      ips: [
        { address: "192.168.122.1", prefixLength: 24 },
        { address: "10.9.0.1", prefixLength: 16 },
      ],
    });
  });

  it("reads a network without bridge or address", () => {
    expect(parseNetworkXml("<network><name>bare</name></network>")).toEqual({ name: "bare", ips: [] });
  });
});

describe("findNetworkConflict", () => {
  const other = (name: string, bridge: string | undefined, ips: NetworkDefinition["ips"]): NetworkDefinition => ({
    name,
    ...(bridge ? { bridge } : {}),
    ips,
  });

  it("finds another network on the same bridge", () => {
    const conflict = findNetworkConflict(AGENT_DEFAULT, [other("cdhtest-net", "cdhbr0", [{ address: "10.250.0.1", prefixLength: 24 }])]);
    expect(conflict?.other.name).toBe("cdhtest-net");
    expect(conflict?.reason).toBe("the same bridge cdhbr0");
  });

  it("finds another network whose subnet overlaps, larger or smaller", () => {
    const wider = findNetworkConflict(AGENT_DEFAULT, [other("wide", "br9", [{ address: "10.200.0.1", prefixLength: 15 }])]);
    expect(wider?.other.name).toBe("wide");
    expect(wider?.reason).toBe("overlapping subnets 10.201.0.0/24 and 10.200.0.0/15");
    const inside = findNetworkConflict(AGENT_DEFAULT, [other("narrow", "br8", [{ address: "10.201.0.129", prefixLength: 25 }])]);
    expect(inside?.reason).toBe("overlapping subnets 10.201.0.0/24 and 10.201.0.128/25");
  });

  it("ignores the network of the same name, and neighbours that do not overlap", () => {
    const existing = [
      other("cdh-default", "cdhbr0", [{ address: "10.201.0.1", prefixLength: 24 }]),
      other("next-door", "br1", [{ address: "10.201.1.1", prefixLength: 24 }]),
      other("below", "br2", [{ address: "10.200.255.1", prefixLength: 24 }]),
      other("default", "virbr0", [{ address: "192.168.122.1", prefixLength: 24 }]),
      other("no-ip", "br3", []),
    ];
    expect(findNetworkConflict(AGENT_DEFAULT, existing)).toBeUndefined();
  });

  it("checks only the bridge of a network without an address", () => {
    const noIp: IsolatedNetwork = { name: "plain", bridge: "brp" };
    expect(findNetworkConflict(noIp, [other("x", "bry", [{ address: "10.0.0.1", prefixLength: 8 }])])).toBeUndefined();
    expect(findNetworkConflict(noIp, [other("x", "brp", [])])?.reason).toBe("the same bridge brp");
  });

  it("makes one line that names both networks", () => {
    const conflict = findNetworkConflict(AGENT_DEFAULT, [other("cdhtest-net", "cdhbr0", [{ address: "10.201.0.1", prefixLength: 24 }])])!;
    const message = new NetworkConflictError(AGENT_DEFAULT, conflict).message;
    expect(message.split("\n")).toHaveLength(1);
    expect(message).toContain('libvirt network "cdh-default" (bridge cdhbr0, 10.201.0.1/24)');
    expect(message).toContain('libvirt network "cdhtest-net" (bridge cdhbr0, 10.201.0.1/24)');
    expect(message).toContain("the same bridge cdhbr0");
  });
});

/** A virsh that knows a fixed set of networks; any other command fails the test. */
class FakeVirsh implements CommandRunner {
  readonly description = "fake";
  readonly calls: string[][] = [];
  constructor(private readonly networks: Record<string, string>) {}

  async run(argv: readonly string[], _options?: RunOptions): Promise<RunResult> {
    this.calls.push([...argv]);
    const [bin, c, uri, verb, ...rest] = argv;
    if (bin !== "virsh" || c !== "-c" || uri !== "qemu:///system") throw new Error(`unexpected command ${argv.join(" ")}`);
    const ok = (stdout: string): RunResult => ({ command: argv, exitCode: 0, stdout, stderr: "", durationMs: 1 });
    if (verb === "net-list" && rest.join(" ") === "--all --name") return ok(Object.keys(this.networks).join("\n") + "\n\n");
    if (verb === "net-dumpxml" && rest[0] === "--inactive" && this.networks[rest[1]!]) return ok(this.networks[rest[1]!]!);
    throw new Error(`unexpected command ${argv.join(" ")}`);
  }
  stream(): never {
    throw new Error("unexpected stream");
  }
  async close(): Promise<void> {}
}

describe("VirshNetworks.ensureIsolated", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "cdh-net-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses, before defining or destroying anything, a network whose bridge another network has", async () => {
    const runner = new FakeVirsh({
      "cdhtest-net": "<network><name>cdhtest-net</name><bridge name='cdhbr0'/><ip address='10.201.0.1' prefix='24'/></network>",
    });
    const networks = new VirshNetworks({ runner, uri: "qemu:///system", tmpDir: dir });
    const error = await networks.ensureIsolated(AGENT_DEFAULT).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NetworkConflictError);
    expect((error as NetworkConflictError).conflict.other.name).toBe("cdhtest-net");
    // Only reads: no net-define, net-destroy or net-undefine.
    expect(runner.calls.map((c) => c[3])).toEqual(["net-list", "net-dumpxml"]);
  });
});
