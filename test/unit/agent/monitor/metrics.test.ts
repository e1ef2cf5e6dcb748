import { describe, expect, it } from "vitest";
import type { DomainCounters } from "../../../../drivers/libvirt/domstats.js";
import { computeValues, findMetric, memoryValues, METRIC_INDEX, METRICS, STORED_METRICS } from "../../../../agent/monitor/metrics.js";

const base = (over: Partial<DomainCounters> = {}): DomainCounters => ({
  name: "ins-aaaaaaaa",
  state: 1,
  cpuTimeNs: 0,
  vcpus: 2,
  vcpuTimeNs: 0,
  vcpuDelayNs: 0,
  nics: [{ name: "tap0", rxBytes: 0, rxPkts: 0, rxErrs: 0, rxDrop: 0, txBytes: 0, txPkts: 0, txErrs: 0, txDrop: 0 }],
  blocks: [{ name: "vda", rdReqs: 0, rdBytes: 0, rdTimesNs: 0, wrReqs: 0, wrBytes: 0, wrTimesNs: 0, flReqs: 0, flTimesNs: 0 }],
  ...over,
});

describe("computeValues", () => {
  it("turns counter deltas over 10 s into the API's units", () => {
    const prev = { at: 0, counters: base() };
    const cur = {
      at: 10_000,
      counters: base({
        cpuTimeNs: 12e9, // 12 s of host CPU over 10 s × 2 vCPUs = 60 %
        vcpuTimeNs: 10e9, // 50 %
        vcpuDelayNs: 1e9, // 5 %
        balloonAvailableKiB: 1_048_576,
        balloonUsableKiB: 786_432,
        nics: [{ name: "tap0", rxBytes: 12_500_000, rxPkts: 1000, rxErrs: 1, rxDrop: 9, txBytes: 1_250_000, txPkts: 100, txErrs: 0, txDrop: 0 }],
        blocks: [{ name: "vda", rdReqs: 100, rdBytes: 1_024_000, rdTimesNs: 100e6, wrReqs: 50, wrBytes: 512_000, wrTimesNs: 100e6, flReqs: 50, flTimesNs: 0 }],
      }),
    };
    const v = computeValues(prev, cur);
    expect(v[METRIC_INDEX.BaseCpuUsage]).toBeCloseTo(60);
    expect(v[METRIC_INDEX.CPUUsage]).toBeCloseTo(50);
    expect(v[METRIC_INDEX.CpuDelay]).toBeCloseTo(5);
    expect(v[METRIC_INDEX.MemUsed]).toBeCloseTo(256);
    expect(v[METRIC_INDEX.MemUsage]).toBeCloseTo(25);
    expect(v[METRIC_INDEX.LanIntraffic]).toBeCloseTo(10); // 1.25 MB/s = 10 Mbps
    expect(v[METRIC_INDEX.LanOuttraffic]).toBeCloseTo(1);
    expect(v[METRIC_INDEX.LanInpkg]).toBeCloseTo(100);
    expect(v[METRIC_INDEX.LanOutpkg]).toBeCloseTo(10);
    expect(v[METRIC_INDEX.LanInerrpkg]).toBeCloseTo(1);
    expect(v[METRIC_INDEX.DiskReadTraffic]).toBeCloseTo(100);
    expect(v[METRIC_INDEX.DiskWriteTraffic]).toBeCloseTo(50);
    expect(v[METRIC_INDEX.DiskReadIops]).toBeCloseTo(10);
    expect(v[METRIC_INDEX.DiskWriteIops]).toBeCloseTo(5);
    expect(v[METRIC_INDEX.DiskIoAwait]).toBeCloseTo(1); // 200 ms over 200 requests
  });

  it("leaves a value out (NaN) when a counter went backwards, as after a QEMU restart", () => {
    const v = computeValues({ at: 0, counters: base({ cpuTimeNs: 5e9, vcpuTimeNs: 5e9 }) }, { at: 10_000, counters: base({ cpuTimeNs: 1e9, vcpuTimeNs: 1e9 }) });
    expect(v[METRIC_INDEX.CPUUsage]).toBeNaN();
    expect(v[METRIC_INDEX.BaseCpuUsage]).toBeNaN();
  });

  it("has no memory values when the guest's balloon driver reports nothing", () => {
    expect(memoryValues(base()).usedMB).toBeNaN();
    const v = computeValues({ at: 0, counters: base() }, { at: 10_000, counters: base() });
    expect(v[METRIC_INDEX.MemUsage]).toBeNaN();
    expect(v[METRIC_INDEX.CPUUsage]).toBe(0);
  });

  it("caps CPU at 100 % and computes nothing over no time", () => {
    const v = computeValues({ at: 0, counters: base() }, { at: 1000, counters: base({ vcpuTimeNs: 9e9 }) });
    expect(v[METRIC_INDEX.CPUUsage]).toBe(100);
    expect([...computeValues({ at: 5, counters: base() }, { at: 5, counters: base() })].every(Number.isNaN)).toBe(true);
  });

  it("skips a NIC or disk that appeared meanwhile (hot-plug)", () => {
    const cur = base({ blocks: [...base().blocks, { name: "vdb", rdReqs: 1e6, rdBytes: 1e9, rdTimesNs: 0, wrReqs: 0, wrBytes: 0, wrTimesNs: 0, flReqs: 0, flTimesNs: 0 }] });
    const v = computeValues({ at: 0, counters: base() }, { at: 10_000, counters: cur });
    expect(v[METRIC_INDEX.DiskReadTraffic]).toBe(0);
  });
});

describe("findMetric", () => {
  it("finds the API's names case-insensitively and the seeds' snake_case names", () => {
    expect(findMetric("CPUUsage")?.name).toBe("CPUUsage");
    expect(findMetric("CpuUsage")?.name).toBe("CPUUsage");
    expect(findMetric("cpu_usage")?.name).toBe("CPUUsage");
    expect(findMetric("mem_usage")?.name).toBe("MemUsage");
    expect(findMetric("lan_outtraffic")?.name).toBe("LanOuttraffic");
    expect(findMetric("wan_intraffic")?.name).toBe("WanIntraffic");
    expect(findMetric("disk_io_await")?.name).toBe("DiskIoAwait");
  });

  it("knows nothing of metrics that need an agent inside the guest", () => {
    expect(findMetric("CpuLoadavg")).toBeUndefined();
    expect(findMetric("TimeOffset")).toBeUndefined();
    expect(findMetric("TcpCurrEstab")).toBeUndefined();
  });

  it("lists every stored metric in the catalogue", () => {
    expect(STORED_METRICS.filter((m) => !METRICS.some((x) => x.name === m))).toEqual([]);
  });
});
