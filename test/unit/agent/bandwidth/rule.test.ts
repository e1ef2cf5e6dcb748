import { describe, expect, it } from "vitest";
import { internetIngressMbps, intranetCap, ruleProblems, SEED_INTRANET_RULE } from "../../../../agent/network/bandwidth/rule.js";
import { capsOf } from "../../../../agent/network/bandwidth/service.js";

/** The seeds' S2 table (seeds-cvm-manual-1 §1.3): vCPUs → intranet Gbit/s. */
const S2: Array<[number, number]> = [
  [1, 1.5],
  [2, 1.5],
  [4, 1.5],
  [8, 1.5],
  [12, 2.5],
  [16, 3.0],
  [24, 4.5],
  [32, 6.0],
];

describe("the intranet cap rule", () => {
  it("gives the S2 table's intranet bandwidth for every size but 12 vCPUs, where it gives 2.25 of the table's 2.5 Gbit/s", () => {
    for (const [vcpus, gbps] of S2) {
      const { mbps } = intranetCap(vcpus);
      if (vcpus === 12) expect(mbps).toBe(2250);
      else expect(mbps).toBe(gbps * 1000);
    }
  });

  it("reaches the S2 hardware's 400k packets/s at 8 vCPUs, with a floor of 100k and no more above", () => {
    expect(intranetCap(1).pps).toBe(100_000);
    expect(intranetCap(2).pps).toBe(100_000);
    expect(intranetCap(4).pps).toBe(200_000);
    expect(intranetCap(8).pps).toBe(400_000);
    expect(intranetCap(64).pps).toBe(400_000);
  });

  it("stops at the ceiling", () => {
    expect(intranetCap(256).mbps).toBe(25_000);
  });

  it("follows a host's overrides: a fixed 20 Mbit/s with min = max", () => {
    const rule = { ...SEED_INTRANET_RULE, minMbps: 20, maxMbps: 20 };
    expect(intranetCap(1, rule).mbps).toBe(20);
    expect(intranetCap(32, rule).mbps).toBe(20);
  });

  it("follows a host's overrides: 10 Mbit/s per vCPU without a floor", () => {
    const rule = { ...SEED_INTRANET_RULE, mbpsPerVcpu: 10, minMbps: 1 };
    expect(intranetCap(1, rule).mbps).toBe(10);
    expect(intranetCap(2, rule).mbps).toBe(20);
  });

  it("names a floor above its ceiling", () => {
    expect(ruleProblems({ ...SEED_INTRANET_RULE, minMbps: 30_000 })).toEqual(["min_mbps 30000 is above max_mbps 25000"]);
    expect(ruleProblems(SEED_INTRANET_RULE)).toEqual([]);
  });
});

describe("the internet caps", () => {
  it("follow the seeds' ingress rule: the cap when over 10 Mbit/s, else 10", () => {
    expect(internetIngressMbps(1)).toBe(10);
    expect(internetIngressMbps(10)).toBe(10);
    expect(internetIngressMbps(11)).toBe(11);
    expect(internetIngressMbps(200)).toBe(200);
  });

  it("exist only for an InternetMaxBandwidthOut above 0", () => {
    expect(capsOf({ cpu: 2 }, SEED_INTRANET_RULE)).toEqual({ intranet: { mbps: 1500, pps: 100_000 } });
    expect(capsOf({ cpu: 2, internetMaxBandwidthOut: 5 }, SEED_INTRANET_RULE).internet).toEqual({ outMbps: 5, inMbps: 10 });
    expect(capsOf({ cpu: 2, internetMaxBandwidthOut: 50 }, SEED_INTRANET_RULE).internet).toEqual({ outMbps: 50, inMbps: 50 });
  });
});
