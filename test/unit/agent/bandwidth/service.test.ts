import pino from "pino";
import { describe, expect, it } from "vitest";
import { BandwidthCaps, nicCapsOf } from "../../../../agent/network/bandwidth/service.js";
import { SEED_INTRANET_RULE } from "../../../../agent/network/bandwidth/rule.js";
import type { InstanceRecord } from "../../../../agent/model.js";
import type { Subnet } from "../../../../agent/network/subnets.js";
import { RecordingRunner } from "../../../support/recording-runner.js";

const SUBNETS: Subnet[] = [
  { subnetId: "subnet-a", vpcId: "vpc-1", network: "net-a", bridge: "bra", address: "10.201.0.0", prefixLength: 24, gateway: "10.201.0.1", dns: [], internetRoute: true },
  { subnetId: "subnet-b", vpcId: "vpc-1", network: "net-b", bridge: "brb", address: "10.202.0.0", prefixLength: 24, gateway: "10.202.0.1", dns: [] },
  { subnetId: "subnet-c", vpcId: "vpc-2", network: "net-c", bridge: "brc", address: "10.203.0.0", prefixLength: 24, gateway: "10.203.0.1", dns: [] },
];

function record(o: Partial<InstanceRecord> & { instanceId: string }): InstanceRecord {
  return {
    cpu: 1,
    nics: [{ mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.201.0.5", subnetId: "subnet-a", vpcId: "vpc-1" }],
    ...o,
  } as InstanceRecord;
}

const links = (...names: Array<[string, number]>) => ({ stdout: names.map(([n, i]) => `${i}: ${n}: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc htb state UP\\    link/ether 52:54:00:00:00:01`).join("\n") });

describe("nicCapsOf", () => {
  it("caps the traffic leaving the VPC only on NICs whose subnet has a route out, the VPC being all its subnets", () => {
    const r = record({
      instanceId: "ins-abcd1234",
      cpu: 2,
      internetMaxBandwidthOut: 5,
      nics: [
        { mac: "52:54:00:00:00:01", network: "net-a", ipv4: "10.201.0.5", subnetId: "subnet-a", vpcId: "vpc-1" },
        { mac: "52:54:00:00:00:02", network: "net-b", ipv4: "10.202.0.5", subnetId: "subnet-b", vpcId: "vpc-1", slot: 3 },
      ],
    });
    expect(nicCapsOf(r, SUBNETS, SEED_INTRANET_RULE)).toEqual([
      { tap: "cdhabcd12340", intranetMbps: 1500, intranetPps: 100_000, internet: { outMbps: 5, inMbps: 10 }, vpcCidrs: ["10.201.0.0/24", "10.202.0.0/24"] },
      { tap: "cdhabcd12343", intranetMbps: 1500, intranetPps: 100_000, vpcCidrs: ["10.201.0.0/24", "10.202.0.0/24"] },
    ]);
  });
});

describe("BandwidthCaps", () => {
  function setup(records: InstanceRecord[], enabled = true) {
    const runner = new RecordingRunner();
    const caps = new BandwidthCaps({ runner, records: () => records, subnets: SUBNETS, rule: SEED_INTRANET_RULE, table: "t_caps", enabled, logger: pino({ level: "silent" }) });
    return { runner, caps };
  }

  it("puts the packet table and a running tap's tc tree on the host, and nothing again while nothing changed", async () => {
    const { runner, caps } = setup([record({ instanceId: "ins-abcd1234" })]);
    runner.on(["nft", "-f", "-"], {}).on(["ip", "-o", "link", "show"], links(["lo", 1], ["cdhabcd12340", 7]));
    runner.on((a) => a[0] === "ip" && a[1] === "link", {}).on((a) => a[0] === "tc", {});
    await caps.sync();
    expect(runner.commands).toEqual([
      ["nft", "-f", "-"],
      ["ip", "-o", "link", "show"],
      ["ip", "link", "add", "cbwabcd12340", "type", "ifb"],
      ["ip", "link", "set", "cbwabcd12340", "up"],
      ["tc", "-force", "-batch", "-"],
      ["tc", "-batch", "-"],
    ]);
    expect(String(runner.runs[0]!.options?.input)).toContain('iifname "cdhabcd12340" limit rate over 100000/second');
    expect(String(runner.runs[5]!.options?.input)).toContain("class add dev cbwabcd12340 parent 1: classid 1:1 htb rate 1500000kbit");
    runner.runs.length = 0;
    await caps.sync();
    expect(runner.commands).toEqual([["ip", "-o", "link", "show"]]);
  });

  it("does a tap again when it was made anew (another ifindex: the domain restarted)", async () => {
    const { runner, caps } = setup([record({ instanceId: "ins-abcd1234" })]);
    runner.on(["nft", "-f", "-"], {});
    runner.once(["ip", "-o", "link", "show"], links(["cdhabcd12340", 7], ["cbwabcd12340", 8]));
    runner.once(["ip", "-o", "link", "show"], links(["cdhabcd12340", 9], ["cbwabcd12340", 8]));
    runner.on((a) => a[0] === "ip" && a[1] === "link", {}).on((a) => a[0] === "tc", {});
    await caps.sync();
    runner.runs.length = 0;
    await caps.sync();
    expect(runner.commands).toEqual([
      ["ip", "-o", "link", "show"],
      ["ip", "link", "set", "cbwabcd12340", "up"],
      ["tc", "-force", "-batch", "-"],
      ["tc", "-batch", "-"],
    ]);
  });

  it("changes a tap's tree when its record's cap changes, and removes the IFB device of a tap that is gone", async () => {
    const r = record({ instanceId: "ins-abcd1234" });
    const { runner, caps } = setup([r]);
    runner.on(["nft", "-f", "-"], {});
    runner.once(["ip", "-o", "link", "show"], links(["cdhabcd12340", 7], ["cbwabcd12340", 8]));
    runner.once(["ip", "-o", "link", "show"], links(["cdhabcd12340", 7], ["cbwabcd12340", 8]));
    runner.once(["ip", "-o", "link", "show"], links(["cbwabcd12340", 8]));
    runner.on((a) => a[0] === "ip" && a[1] === "link", {}).on((a) => a[0] === "tc", {});
    await caps.sync();
    r.internetMaxBandwidthOut = 20;
    runner.runs.length = 0;
    await caps.sync();
    expect(runner.commands.map((c) => c.join(" "))).toEqual(["ip -o link show", "ip link set cbwabcd12340 up", "tc -force -batch -", "tc -batch -"]);
    expect(String(runner.runs[3]!.options?.input)).toContain("classid 1:20 htb rate 20000kbit");
    runner.runs.length = 0;
    await caps.sync();
    expect(runner.commands.map((c) => c.join(" "))).toEqual(["ip -o link show", "ip link del cbwabcd12340"]);
  });

  it("runs one pass at a time, and one more for what was asked while it ran", async () => {
    const { runner, caps } = setup([]);
    let passes = 0;
    runner.on(["nft", "-f", "-"], {}).on(["ip", "-o", "link", "show"], async () => {
      passes += 1;
      await new Promise((r) => setTimeout(r, 20));
      return { stdout: "" };
    });
    await Promise.all([caps.sync(), caps.sync(), caps.sync()]);
    expect(passes).toBe(2);
  });

  it("puts nothing on the host when bandwidth_caps is off", async () => {
    const { runner, caps } = setup([record({ instanceId: "ins-abcd1234" })], false);
    await caps.sync();
    expect(runner.commands).toEqual([]);
  });

  it("refuses an internet cap for an instance with no NIC on a subnet with a route out", () => {
    const { caps } = setup([]);
    expect(() => caps.checkInternet(record({ instanceId: "ins-abcd1234" }), "F")).not.toThrow();
    const inside = record({ instanceId: "ins-abcd1235", nics: [{ mac: "52:54:00:00:00:03", network: "net-b", ipv4: "10.202.0.9", subnetId: "subnet-b", vpcId: "vpc-1" }] });
    expect(() => caps.checkInternet(inside, "F")).toThrow(/no NIC on a subnet with a route out/);
  });
});
