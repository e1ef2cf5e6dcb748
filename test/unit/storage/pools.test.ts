import { describe, expect, it } from "vitest";
import { placeDisks, poolAvailable, type PoolUsage } from "../../../agent/storage/pools.js";

const GiB = 1024 ** 3;

function pool(name: string, diskType: "LOCAL_BASIC" | "LOCAL_SSD", availableGiB: number): PoolUsage {
  return { name, diskType, capacityBytes: 1000 * GiB, promisedBytes: 0, usedBytes: 0, cacheBytes: 0, fsFreeBytes: 1000 * GiB, availableBytes: availableGiB * GiB };
}

describe("pool availability", () => {
  it("counts every promise in full, not what thin files take so far", () => {
    // 800 GiB promised to sparse disks that hold 10 GiB: 200 GiB left, not 990.
    expect(poolAvailable({ capacity: 1000 * GiB, promised: 800 * GiB, used: 10 * GiB, cache: 0, fsFree: 990 * GiB })).toBe(200 * GiB);
  });

  it("subtracts the image cache when it shares the filesystem", () => {
    expect(poolAvailable({ capacity: 1000 * GiB, promised: 100 * GiB, used: 0, cache: 50 * GiB, fsFree: 1000 * GiB })).toBe(850 * GiB);
  });

  it("never promises more than the filesystem can still write for the disks already promised", () => {
    // Other files filled the filesystem: 300 GiB free, disks may still write 250 GiB.
    expect(poolAvailable({ capacity: 1000 * GiB, promised: 300 * GiB, used: 50 * GiB, cache: 0, fsFree: 300 * GiB })).toBe(50 * GiB);
    expect(poolAvailable({ capacity: 1000 * GiB, promised: 300 * GiB, used: 50 * GiB, cache: 0, fsFree: 300 * GiB, reserved: 40 * GiB })).toBe(10 * GiB);
  });

  it("is never negative", () => {
    expect(poolAvailable({ capacity: 100 * GiB, promised: 500 * GiB, used: 0, cache: 0, fsFree: 10 * GiB })).toBe(0);
  });
});

describe("placing disks", () => {
  it("puts each disk in the first pool of its type with room, counting the earlier disks of the call", () => {
    const usage = [pool("hdd1", "LOCAL_BASIC", 100), pool("hdd2", "LOCAL_BASIC", 500), pool("ssd", "LOCAL_SSD", 200)];
    expect(
      placeDisks(usage, [
        { diskType: "LOCAL_BASIC", sizeGiB: 60 },
        { diskType: "LOCAL_BASIC", sizeGiB: 60 },
        { diskType: "LOCAL_SSD", sizeGiB: 200 },
      ]),
    ).toEqual(["hdd1", "hdd2", "ssd"]);
  });

  it("returns null when one disk does not fit anywhere", () => {
    const usage = [pool("hdd", "LOCAL_BASIC", 100), pool("ssd", "LOCAL_SSD", 10)];
    expect(placeDisks(usage, [{ diskType: "LOCAL_SSD", sizeGiB: 20 }])).toBeNull();
    expect(placeDisks(usage, [{ diskType: "LOCAL_BASIC", sizeGiB: 60 }, { diskType: "LOCAL_BASIC", sizeGiB: 60 }])).toBeNull();
  });
});
