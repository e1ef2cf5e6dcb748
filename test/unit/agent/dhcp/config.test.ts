import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../../agent/config.js";

const MACHINE_ID = "0123456789abcdef0123456789abcdef\n";
const load = (env: Record<string, string>) => loadConfig({ env, readFile: () => undefined, machineId: MACHINE_ID });

describe("DHCP settings", () => {
  it("are on by default, one hour leases; a subnet entry can turn DHCP off for itself", () => {
    const cfg = load({
      CDH_AGENT_SUBNETS: JSON.stringify([
        { subnet_id: "subnet-a", vpc_id: "vpc-a", network: "net-a", bridge: "br-a", cidr: "10.1.0.0/24" },
        { subnet_id: "subnet-b", vpc_id: "vpc-a", network: "net-b", bridge: "br-b", cidr: "10.2.0.0/24", dhcp: false },
      ]),
    });
    expect(cfg.dhcpEnabled).toBe(true);
    expect(cfg.dhcpLeaseTimeS).toBe(3600);
    expect(cfg.subnets.map((s) => [s.subnetId, s.dhcp])).toEqual([
      ["subnet-a", undefined],
      ["subnet-b", false],
    ]);
  });

  it("can be turned off for the host, and refuse a lease under two minutes", () => {
    expect(load({ CDH_AGENT_DHCP_ENABLED: "false" }).dhcpEnabled).toBe(false);
    expect(load({ CDH_AGENT_DHCP_LEASE_TIME_S: "600" }).dhcpLeaseTimeS).toBe(600);
    expect(() => load({ CDH_AGENT_DHCP_LEASE_TIME_S: "60" })).toThrow(ConfigError);
  });
});
