import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../../agent/config.js";

const MACHINE_ID = "0123456789abcdef0123456789abcdef\n";
const load = (env: Record<string, string>) => loadConfig({ env, readFile: () => undefined, machineId: MACHINE_ID });

describe("the caps' settings", () => {
  it("mark a subnet with a route out of the VPC (internet_route), and no other", () => {
    const cfg = load({
      CDH_AGENT_SUBNETS: JSON.stringify([
        { subnet_id: "subnet-out", vpc_id: "vpc-a", network: "n1", bridge: "b1", cidr: "10.1.0.0/24", internet_route: true },
        { subnet_id: "subnet-in", vpc_id: "vpc-a", network: "n2", bridge: "b2", cidr: "10.2.0.0/24" },
      ]),
    });
    expect(cfg.subnets.map((s) => [s.subnetId, s.internetRoute === true])).toEqual([
      ["subnet-out", true],
      ["subnet-in", false],
    ]);
  });

  it("override the seeds' rule field by field", () => {
    const cfg = load({ CDH_AGENT_INTRANET_CAPS: '{"mbps_per_vcpu":10,"min_mbps":1}', CDH_AGENT_BANDWIDTH_CAPS: "false" });
    expect(cfg.bandwidthCaps).toBe(false);
    expect(cfg.intranetRule).toEqual({ mbpsPerVcpu: 10, minMbps: 1, maxMbps: 25_000, ppsPerVcpu: 50_000, minPps: 100_000, maxPps: 400_000 });
  });

  it("refuse a floor above the ceiling, naming the key", () => {
    let error: unknown;
    try {
      load({ CDH_AGENT_INTRANET_CAPS: '{"min_pps":500000}' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(String((error as Error).message)).toContain("intranet_caps: min_pps 500000 is above max_pps 400000");
  });
});
