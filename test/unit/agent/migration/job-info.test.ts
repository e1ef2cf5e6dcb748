import { describe, expect, it } from "vitest";
import { parseJobInfo } from "../../../../agent/migration/libvirt-job.js";

describe("parseJobInfo", () => {
  it("reads an active migration job's raw figures from virsh domjobinfo --rawstats", () => {
    const text = [
      "Job type:         Unbounded",
      "Operation:        Outgoing migration",
      "",
      "time_elapsed: 4021",
      "data_total: 1090519040",
      "data_remaining: 52428800",
      "memory_remaining: 41943040",
      "disk_remaining: 10485760",
      "memory_dirty_rate: 2500",
      "memory_page_size: 4096",
      "memory_iteration: 3",
      "downtime: 240",
      "auto_converge_throttle: 20",
    ].join("\n");
    expect(parseJobInfo(text)).toEqual({
      active: true,
      timeElapsedMs: 4021,
      dataTotalBytes: 1090519040,
      dataRemainingBytes: 52428800,
      memoryRemainingBytes: 41943040,
      diskRemainingBytes: 10485760,
      dirtyRateBps: 2500 * 4096,
      iteration: 3,
      downtimeMs: 240,
      autoConvergeThrottle: 20,
    });
  });

  it("says inactive when no job runs", () => {
    expect(parseJobInfo("Job type:         None\n")).toEqual({ active: false });
  });
});
