import { describe, expect, it } from "vitest";
import { ifbName, isAgentIfb, ppsRuleset, tcPlan } from "../../../../agent/network/bandwidth/plan.js";

const TAP = "cdhabcd12340";

describe("a NIC's tc plan", () => {
  it("shapes what the guest sends on an IFB device and what it receives on the tap, at the intranet cap", () => {
    const plan = tcPlan({ tap: TAP, intranetMbps: 20, intranetPps: 100_000, vpcCidrs: ["10.201.0.0/24"] });
    expect(plan.ifb).toBe("cbwabcd12340");
    expect(plan.clear).toEqual([`qdisc del dev ${TAP} root`, `qdisc del dev ${TAP} ingress`, "qdisc del dev cbwabcd12340 root"]);
    expect(plan.install).toEqual([
      "qdisc add dev cbwabcd12340 root handle 1: htb default 10",
      "class add dev cbwabcd12340 parent 1: classid 1:1 htb rate 20000kbit ceil 20000kbit quantum 60000",
      "class add dev cbwabcd12340 parent 1:1 classid 1:10 htb rate 20000kbit ceil 20000kbit quantum 60000",
      `qdisc add dev ${TAP} handle ffff: ingress`,
      `filter add dev ${TAP} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev cbwabcd12340`,
      `qdisc add dev ${TAP} root handle 1: htb default 10`,
      `class add dev ${TAP} parent 1: classid 1:1 htb rate 20000kbit ceil 20000kbit quantum 60000`,
      `class add dev ${TAP} parent 1:1 classid 1:10 htb rate 20000kbit ceil 20000kbit quantum 60000`,
    ]);
  });

  it("with an internet cap, sends IPv4 outside the VPC's subnets and the metadata range to a class of its own, each direction with its rate", () => {
    const plan = tcPlan({ tap: TAP, intranetMbps: 1500, intranetPps: 100_000, internet: { outMbps: 5, inMbps: 10 }, vpcCidrs: ["10.202.0.0/24", "10.201.0.0/24"] });
    const ifb = plan.install.filter((l) => l.includes("add dev cbwabcd12340 "));
    expect(ifb).toEqual([
      "qdisc add dev cbwabcd12340 root handle 1: htb default 10",
      "class add dev cbwabcd12340 parent 1: classid 1:1 htb rate 1500000kbit ceil 1500000kbit quantum 60000",
      "class add dev cbwabcd12340 parent 1:1 classid 1:10 htb rate 1500000kbit ceil 1500000kbit quantum 60000",
      "class add dev cbwabcd12340 parent 1:1 classid 1:20 htb rate 5000kbit ceil 5000kbit quantum 60000",
      "filter add dev cbwabcd12340 parent 1: protocol ip prio 1 u32 match ip dst 10.201.0.0/24 flowid 1:10",
      "filter add dev cbwabcd12340 parent 1: protocol ip prio 1 u32 match ip dst 10.202.0.0/24 flowid 1:10",
      "filter add dev cbwabcd12340 parent 1: protocol ip prio 1 u32 match ip dst 169.254.0.0/16 flowid 1:10",
      "filter add dev cbwabcd12340 parent 1: protocol ip prio 2 u32 match u32 0 0 flowid 1:20",
    ]);
    const tapRoot = plan.install.filter((l) => l.includes(`dev ${TAP}`) && !l.includes("ffff:"));
    expect(tapRoot).toContain(`class add dev ${TAP} parent 1:1 classid 1:20 htb rate 10000kbit ceil 10000kbit quantum 60000`);
    expect(tapRoot).toContain(`filter add dev ${TAP} parent 1: protocol ip prio 1 u32 match ip src 10.201.0.0/24 flowid 1:10`);
    expect(tapRoot).toContain(`filter add dev ${TAP} parent 1: protocol ip prio 2 u32 match u32 0 0 flowid 1:20`);
  });

  it("never lets the internet class exceed the intranet cap", () => {
    const plan = tcPlan({ tap: TAP, intranetMbps: 20, intranetPps: 100_000, internet: { outMbps: 100, inMbps: 100 }, vpcCidrs: ["10.201.0.0/24"] });
    expect(plan.install).toContain("class add dev cbwabcd12340 parent 1:1 classid 1:20 htb rate 20000kbit ceil 20000kbit quantum 60000");
  });

  it("names IFB devices after their tap and knows them again", () => {
    expect(ifbName("cdhabcd123415")).toBe("cbwabcd123415");
    expect(isAgentIfb("cbwabcd123415")).toBe(true);
    expect(isAgentIfb("cdhabcd123415")).toBe(false);
    expect(() => ifbName("vnet0")).toThrow(/no IFB name/);
  });
});

describe("the packet-rate table", () => {
  it("replaces the table whole, with one limit per tap and direction, in tap order", () => {
    const text = ppsRuleset("cdh_filter_caps", [
      { tap: "cdhbbbb00000", intranetPps: 200_000 },
      { tap: "cdhaaaa00000", intranetPps: 100_000 },
    ]);
    expect(text).toBe(
      [
        "table bridge cdh_filter_caps",
        "delete table bridge cdh_filter_caps",
        "table bridge cdh_filter_caps {",
        "  chain from_guest {",
        "    type filter hook prerouting priority -250; policy accept;",
        '    iifname "cdhaaaa00000" limit rate over 100000/second burst 10000 packets counter drop',
        '    iifname "cdhbbbb00000" limit rate over 200000/second burst 20000 packets counter drop',
        "  }",
        "  chain to_guest {",
        "    type filter hook postrouting priority -250; policy accept;",
        '    oifname "cdhaaaa00000" limit rate over 100000/second burst 10000 packets counter drop',
        '    oifname "cdhbbbb00000" limit rate over 200000/second burst 20000 packets counter drop',
        "  }",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("refuses names that could break the ruleset", () => {
    expect(() => ppsRuleset("bad name", [])).toThrow();
    expect(() => ppsRuleset("t", [{ tap: 'x" drop', intranetPps: 1 }])).toThrow();
  });
});
