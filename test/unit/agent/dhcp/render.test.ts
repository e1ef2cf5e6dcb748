import { describe, expect, it } from "vitest";
import type { InstanceRecord, NicRecord } from "../../../../agent/model.js";
import {
  classlessRoutes,
  dhcpHostname,
  dhcpHosts,
  dnsmasqArgs,
  dnsmasqFiles,
  needsRestart,
  parseHostsFile,
  renderHostsFile,
  renderOptsFile,
  type DhcpSubnet,
} from "../../../../agent/network/dhcp/render.js";

const subnet: DhcpSubnet = {
  subnetId: "subnet-a",
  network: "net-a",
  bridge: "br-a",
  address: "10.9.0.0",
  prefixLength: 24,
  gateway: "10.9.0.1",
  dns: ["10.9.0.1", "10.0.0.53"],
};

function record(instanceId: string, nics: NicRecord[], hostName?: string): InstanceRecord {
  return { instanceId, nics, ...(hostName !== undefined ? { hostName } : {}) } as unknown as InstanceRecord;
}

const nic = (mac: string, ipv4: string | undefined, more: Partial<NicRecord> = {}): NicRecord => ({
  mac,
  network: "net-a",
  subnetId: "subnet-a",
  ...(ipv4 !== undefined ? { ipv4 } : {}),
  ...more,
});

describe("dhcpHosts", () => {
  it("gives one lease per NIC on the subnet, its primary address, the host name on the first NIC only", () => {
    const { hosts, skipped } = dhcpHosts(
      [
        record("ins-b", [nic("52:54:00:00:00:0B", "10.9.0.20")]),
        record("ins-a", [nic("52:54:00:00:00:0a", "10.9.0.10", { secondaryIpv4s: ["10.9.0.11"] }), nic("52:54:00:00:00:0c", "10.9.0.12", { eniId: "eni-1" })], "web.example.com"),
      ],
      subnet,
    );
    expect(skipped).toEqual([]);
    expect(hosts).toEqual([
      { mac: "52:54:00:00:00:0a", ip: "10.9.0.10", hostname: "web", instanceId: "ins-a" },
      { mac: "52:54:00:00:00:0c", ip: "10.9.0.12", instanceId: "ins-a" },
      { mac: "52:54:00:00:00:0b", ip: "10.9.0.20", hostname: "ins-b", instanceId: "ins-b" },
    ]);
  });

  it("leaves out NICs of other subnets; a NIC of a record from before subnets is matched by its network", () => {
    const { hosts } = dhcpHosts(
      [
        record("ins-a", [nic("52:54:00:00:00:01", "10.8.0.5", { subnetId: "subnet-b", network: "net-b" })]),
        record("ins-b", [{ mac: "52:54:00:00:00:02", network: "net-a", ipv4: "10.9.0.7" }]),
      ],
      subnet,
    );
    expect(hosts.map((h) => h.ip)).toEqual(["10.9.0.7"]);
  });

  it("gives no lease to a malformed MAC, a NIC without address, an address outside the subnet or the gateway, nor twice", () => {
    const { hosts, skipped } = dhcpHosts(
      [
        record("ins-a", [nic("52:54:00:00:00:01", "10.9.0.5")]),
        record("ins-b", [nic("52:54:00:00:00:01", "10.9.0.6")]),
        record("ins-c", [nic("52:54:00:00:00:03", "10.9.0.5")]),
        record("ins-d", [nic("not-a-mac", "10.9.0.8"), nic("52:54:00:00:00:04", undefined)]),
        record("ins-e", [nic("52:54:00:00:00:05", "10.9.1.5"), nic("52:54:00:00:00:06", "10.9.0.1"), nic("52:54:00:00:00:07", "10.9.0.255")]),
      ],
      subnet,
    );
    expect(hosts).toEqual([{ mac: "52:54:00:00:00:01", ip: "10.9.0.5", hostname: "ins-a", instanceId: "ins-a" }]);
    expect(skipped.map((s) => `${s.instanceId} ${s.reason}`)).toEqual([
      "ins-b MAC already leased to another NIC",
      "ins-c 10.9.0.5 already leased to another NIC",
      "ins-d malformed MAC",
      "ins-d no address",
      "ins-e 10.9.1.5 is not a host address of 10.9.0.0/24",
      "ins-e 10.9.0.1 is not a host address of 10.9.0.0/24",
      "ins-e 10.9.0.255 is not a host address of 10.9.0.0/24",
    ]);
  });
});

describe("dhcpHostname", () => {
  it("is the first label, lower case, when it is a DNS label", () => {
    expect(dhcpHostname("Guest-One")).toBe("guest-one");
    expect(dhcpHostname("db01.internal.example")).toBe("db01");
    expect(dhcpHostname("-bad")).toBeUndefined();
    expect(dhcpHostname("under_score")).toBeUndefined();
    expect(dhcpHostname("x".repeat(64))).toBeUndefined();
    expect(dhcpHostname(undefined)).toBeUndefined();
  });
});

describe("the hosts file", () => {
  it("has one dhcp-host line a NIC, matched by MAC whatever client ID, and reads back", () => {
    const text = renderHostsFile([
      { mac: "52:54:00:00:00:0a", ip: "10.9.0.10", hostname: "web", instanceId: "ins-a" },
      { mac: "52:54:00:00:00:0c", ip: "10.9.0.12", instanceId: "ins-a" },
    ]);
    expect(text.split("\n").filter((l) => !l.startsWith("#"))).toEqual(["52:54:00:00:00:0a,id:*,10.9.0.10,web", "52:54:00:00:00:0c,id:*,10.9.0.12", ""]);
    expect([...parseHostsFile(text)]).toEqual([
      ["52:54:00:00:00:0a", "10.9.0.10"],
      ["52:54:00:00:00:0c", "10.9.0.12"],
    ]);
    expect(renderHostsFile([]).split("\n").filter((l) => l && !l.startsWith("#"))).toEqual([]);
  });

  it("needs a restart of dnsmasq when a lease went away or moved, not when one was added", () => {
    const before = parseHostsFile("52:54:00:00:00:0a,id:*,10.9.0.10,web\n");
    const a = { mac: "52:54:00:00:00:0a", ip: "10.9.0.10", instanceId: "ins-a" };
    expect(needsRestart(before, [a, { mac: "52:54:00:00:00:0b", ip: "10.9.0.11", instanceId: "ins-b" }])).toBe(false);
    expect(needsRestart(before, [])).toBe(true);
    expect(needsRestart(before, [{ ...a, ip: "10.9.0.99" }])).toBe(true);
    expect(needsRestart(new Map(), [a])).toBe(false);
  });
});

describe("the options file", () => {
  it("gives the router, the DNS servers and the classless routes (121 and 249) to the metadata addresses and the default route", () => {
    expect(renderOptsFile(subnet).split("\n").filter((l) => !l.startsWith("#"))).toEqual([
      "option:router,10.9.0.1",
      "option:dns-server,10.9.0.1,10.0.0.53",
      "option:classless-static-route,169.254.169.254/32,10.9.0.1,169.254.0.23/32,10.9.0.1,0.0.0.0/0,10.9.0.1",
      "249,169.254.169.254/32,10.9.0.1,169.254.0.23/32,10.9.0.1,0.0.0.0/0,10.9.0.1",
      "",
    ]);
  });

  it("has no DNS line when the subnet has no DNS servers", () => {
    expect(renderOptsFile({ ...subnet, dns: [] })).not.toContain("dns-server");
  });

  it("routes every metadata address through the gateway, the default route last", () => {
    expect(classlessRoutes("10.1.0.1", ["169.254.169.254"])).toEqual(["169.254.169.254/32,10.1.0.1", "0.0.0.0/0,10.1.0.1"]);
  });
});

describe("dnsmasq's command line", () => {
  it("is DHCP only, on the subnet's bridge only, static leases only, unknown MACs ignored, no lease file", () => {
    const args = dnsmasqArgs(subnet, dnsmasqFiles("/var/lib/cdh-agent/dhcp/subnet-a"), 3600);
    expect(args).toEqual([
      "--conf-file=/dev/null",
      "--port=0",
      "--interface=br-a",
      "--except-interface=lo",
      "--bind-dynamic",
      "--pid-file=/var/lib/cdh-agent/dhcp/subnet-a/cdh-dhcp.pid",
      "--dhcp-range=10.9.0.0,static,255.255.255.0,3600s",
      "--dhcp-hostsfile=/var/lib/cdh-agent/dhcp/subnet-a/hosts",
      "--dhcp-optsfile=/var/lib/cdh-agent/dhcp/subnet-a/opts",
      "--dhcp-ignore=tag:!known",
      "--dhcp-authoritative",
      "--leasefile-ro",
      "--log-facility=/var/lib/cdh-agent/dhcp/subnet-a/dnsmasq.log",
    ]);
  });

  it("refuses a lease time under two minutes and a bridge name that is not one", () => {
    expect(() => dnsmasqArgs(subnet, dnsmasqFiles("/d"), 60)).toThrow(RangeError);
    expect(() => dnsmasqArgs({ ...subnet, bridge: "br a;x" }, dnsmasqFiles("/d"), 3600)).toThrow(TypeError);
  });
});
