/**
 * How big an instance's caps are: the intranet cap from its size, the internet ingress cap
 * from its InternetMaxBandwidthOut. Pure; README "Bandwidth and packet caps" has the table.
 *
 * The intranet rule is modelled on the seeds' S2 table (seeds-cvm-manual-1 §1.3): 1.5 Gbit/s
 * for every size up to 8 vCPUs, then 2.5 (12), 3.0 (16), 4.5 (24) and 6.0 Gbit/s (32): that is
 * 187.5 Mbit/s per vCPU (exact at 8, 16, 24 and 32 vCPUs) with a floor of 1500 Mbit/s. The
 * ceiling (25 Gbit/s: a 25G NIC) is this host's; S2 itself tops out at 6 Gbit/s. Packets: the
 * S2 hardware says "up to 400k pps"; 50,000 pps per vCPU reaches it at 8 vCPUs, with a floor of
 * 100,000. The same caps apply in both directions (the seeds give one figure). A host changes
 * any of the six numbers with the `intranet_caps` setting.
 */

export interface IntranetRule {
  readonly mbpsPerVcpu: number;
  readonly minMbps: number;
  readonly maxMbps: number;
  readonly ppsPerVcpu: number;
  readonly minPps: number;
  readonly maxPps: number;
}

/** The seeds' S2 table as a rule (see above). */
export const SEED_INTRANET_RULE: IntranetRule = Object.freeze({
  mbpsPerVcpu: 187.5,
  minMbps: 1500,
  maxMbps: 25_000,
  ppsPerVcpu: 50_000,
  minPps: 100_000,
  maxPps: 400_000,
});

export interface IntranetCap {
  /** Mbit/s, each direction. */
  readonly mbps: number;
  /** Packets per second, each direction. */
  readonly pps: number;
}

const clamp = (v: number, min: number, max: number) => Math.min(max, Math.max(min, v));

/** The intranet cap of an instance of `vcpus` vCPUs: per vCPU, within [min, max]; whole Mbit/s and packets. */
export function intranetCap(vcpus: number, rule: IntranetRule = SEED_INTRANET_RULE): IntranetCap {
  return {
    mbps: Math.round(clamp(vcpus * rule.mbpsPerVcpu, rule.minMbps, rule.maxMbps)),
    pps: Math.round(clamp(vcpus * rule.ppsPerVcpu, rule.minPps, rule.maxPps)),
  };
}

/** The seeds' ingress rule (§4.4): the purchased egress cap when over 10 Mbit/s, else 10 Mbit/s. */
export function internetIngressMbps(outMbps: number): number {
  return outMbps > 10 ? outMbps : 10;
}

/** The largest InternetMaxBandwidthOut accepted (the seeds' shared-bandwidth-package range, 0–1000 Mbit/s). */
export const MAX_INTERNET_MBPS = 1000;

/** A rule's problems (min above max, …), for the configuration's checks. */
export function ruleProblems(rule: IntranetRule): string[] {
  const problems: string[] = [];
  if (rule.minMbps > rule.maxMbps) problems.push(`min_mbps ${rule.minMbps} is above max_mbps ${rule.maxMbps}`);
  if (rule.minPps > rule.maxPps) problems.push(`min_pps ${rule.minPps} is above max_pps ${rule.maxPps}`);
  return problems;
}
