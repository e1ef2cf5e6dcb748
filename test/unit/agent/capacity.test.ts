import { describe, expect, it } from "vitest";
import { admissionShortfall, computeHostResource } from "../../../agent/capacity.js";

const GiB = 1024 ** 3;
const totals = { cpus: 56, memoryBytes: 224 * GiB, disk: { totalGiB: 1000, availableGiB: 650, diskType: "LOCAL_SSD" as const } };
const noReserve = { reservedCpu: 0, reservedMemoryGiB: 0, cpuAllocationRatio: 1, memoryAllocationRatio: 1 };

describe("host capacity", () => {
  it("fits seven 8C32G sub-instances on an idle HS20, as the seed's example says, and not an eighth", () => {
    const allocations = Array.from({ length: 7 }, () => ({ cpu: 8, memoryGiB: 32 }));
    for (let n = 0; n < 7; n++) {
      const r = computeHostResource(totals, noReserve, allocations.slice(0, n));
      expect(admissionShortfall(r, { cpu: 8, memoryGiB: 32 }, 1)).toBeNull();
    }
    const full = computeHostResource(totals, noReserve, allocations);
    expect(full).toMatchObject({ CpuTotal: 56, CpuAvailable: 0, MemTotal: 224, MemAvailable: 0, DiskTotal: 1000, DiskAvailable: 650 });
    expect(admissionShortfall(full, { cpu: 8, memoryGiB: 32 }, 1)).toMatch(/8 vCPU requested, 0 available/);
  });

  it("subtracts the host reservation and applies allocation ratios", () => {
    const r = computeHostResource(totals, { reservedCpu: 2, reservedMemoryGiB: 4, cpuAllocationRatio: 2, memoryAllocationRatio: 1 }, []);
    expect(r).toEqual({ CpuTotal: 112, CpuAvailable: 110, MemTotal: 224, MemAvailable: 220, DiskTotal: 1000, DiskAvailable: 650, DiskType: "LOCAL_SSD" });
  });

  it("counts a batch as a whole", () => {
    const r = computeHostResource(totals, noReserve, []);
    expect(admissionShortfall(r, { cpu: 8, memoryGiB: 32 }, 7)).toBeNull();
    expect(admissionShortfall(r, { cpu: 8, memoryGiB: 32 }, 8)).toMatch(/64 vCPU requested, 56 available/);
  });

  it("never reports negative availability", () => {
    const r = computeHostResource({ ...totals, cpus: 2 }, noReserve, [{ cpu: 4, memoryGiB: 1 }]);
    expect(r.CpuAvailable).toBe(0);
  });
});
