import { describe, expect, it } from "vitest";
import { GuestFsCollector, guestFsUsage, parseGuestFsInfo } from "../../../../agent/monitor/guest-fs.js";
import { findMetric, METRIC_COUNT, METRIC_INDEX } from "../../../../agent/monitor/metrics.js";

/** guest-get-fsinfo's `return` as qemu-guest-agent 7.2 gives it in a Debian 12 cloud guest (disk details shortened). */
const DEBIAN = [
  { name: "vda1", "total-bytes": 2_040_373_248, mountpoint: "/", disk: [{ "bus-type": "virtio", dev: "/dev/vda1" }], "used-bytes": 1_020_186_624, type: "ext4" },
  { name: "vda15", "total-bytes": 129_718_272, mountpoint: "/boot/efi", disk: [{ "bus-type": "virtio", dev: "/dev/vda15" }], "used-bytes": 6_291_456, type: "vfat" },
  // A bind mount of the root filesystem: the same device again.
  { name: "vda1", "total-bytes": 2_040_373_248, mountpoint: "/var/lib/something", disk: [], "used-bytes": 1_020_186_624, type: "ext4" },
  // A data disk nearly full.
  { name: "vdb", "total-bytes": 1_000_000_000, mountpoint: "/data", disk: [], "used-bytes": 950_000_000, type: "xfs" },
  // Without sizes (an older agent, or statvfs failed): left out.
  { name: "vdc", mountpoint: "/old", disk: [], type: "ext4" },
];

const logger = { info: () => undefined, debug: () => undefined };

describe("parseGuestFsInfo / guestFsUsage", () => {
  it("keeps the filesystems with sizes and counts each device once, at its shortest mount point", () => {
    const list = parseGuestFsInfo(DEBIAN);
    expect(list.map((f) => f.mountpoint)).toEqual(["/", "/boot/efi", "/var/lib/something", "/data"]);
    const u = guestFsUsage(list)!;
    expect(u.filesystems).toBe(3);
    expect(u.usedBytes).toBe(1_020_186_624 + 6_291_456 + 950_000_000);
    expect(u.totalBytes).toBe(2_040_373_248 + 129_718_272 + 1_000_000_000);
    expect(u.usage).toBeCloseTo((u.usedBytes / u.totalBytes) * 100, 6);
    expect(u.fullest).toBeCloseTo(95, 6);
    expect(u.fullestMountpoint).toBe("/data");
  });

  it("refuses an answer that is not a list, skips odd items, and has no usage without sizes", () => {
    expect(() => parseGuestFsInfo({ error: "x" })).toThrow(/not a list/);
    expect(() => parseGuestFsInfo(null)).toThrow(/null/);
    expect(parseGuestFsInfo([null, 3, "x", { name: "a", "used-bytes": -1, "total-bytes": 10 }, { name: "b", "used-bytes": 1, "total-bytes": 0 }])).toEqual([]);
    expect(guestFsUsage([])).toBeUndefined();
    // Windows: drive letters, no device name.
    const win = parseGuestFsInfo([{ name: "", mountpoint: "C:\\", type: "NTFS", "used-bytes": 30, "total-bytes": 120 }]);
    expect(win).toEqual([{ name: "C:\\", mountpoint: "C:\\", type: "NTFS", usedBytes: 30, totalBytes: 120 }]);
    expect(guestFsUsage(win)!.usage).toBe(25);
  });

  it("names the metrics: CvmDiskUsage, the seeds' disk_usage and the older DiskUsage for it, CvmDiskUsageMax", () => {
    expect(findMetric("disk_usage")?.name).toBe("CvmDiskUsage");
    expect(findMetric("DiskUsage")?.name).toBe("CvmDiskUsage");
    expect(findMetric("CvmDiskUsage")?.unit).toBe("%");
    expect(findMetric("CvmDiskUsageMax")?.name).toBe("CvmDiskUsageMax");
  });
});

describe("GuestFsCollector", () => {
  const make = (answers: Map<string, () => Promise<unknown>>, running: string[], now: { t: number }) => {
    const asked: string[] = [];
    const c = new GuestFsCollector({
      query: (id, timeoutS) => {
        asked.push(`${id}:${timeoutS}`);
        const a = answers.get(id);
        return a ? a() : Promise.reject(new Error("Guest agent is not responding: QEMU guest agent is not connected"));
      },
      running: () => running,
      intervalMs: 60_000,
      timeoutS: 1,
      retryMs: 300_000,
      logger,
      now: () => now.t,
    });
    return { c, asked };
  };
  const values = () => new Float64Array(METRIC_COUNT).fill(Number.NaN);

  it("fills the sample's values from a fresh reading, holds it between rounds, and drops it when stale", async () => {
    const now = { t: 1_000_000 };
    const { c, asked } = make(new Map([["ins-a", async () => DEBIAN]]), ["ins-a"], now);
    await c.runRound();
    expect(asked).toEqual(["ins-a:1"]);
    const v = values();
    c.fill("ins-a", v);
    expect(v[METRIC_INDEX.CvmDiskUsageMax]).toBeCloseTo(95, 6);
    expect(v[METRIC_INDEX.CvmDiskUsage]).toBeGreaterThan(50);
    expect(Number.isNaN(v[METRIC_INDEX.CPUUsage]!)).toBe(true);
    // Held for two rounds and a deadline, then gone.
    now.t += 120_000 + 1_000;
    expect(c.latest("ins-a")).toBeDefined();
    now.t += 1;
    const w = values();
    c.fill("ins-a", w);
    expect(Number.isNaN(w[METRIC_INDEX.CvmDiskUsage]!)).toBe(true);
  });

  it("asks a guest whose agent did not answer again only after retryMs, or at once when its agent connects", async () => {
    const now = { t: 1_000_000 };
    const answers = new Map<string, () => Promise<unknown>>();
    const { c, asked } = make(answers, ["ins-a", "ins-b"], now);
    answers.set("ins-b", async () => DEBIAN);
    await c.runRound();
    expect(asked.sort()).toEqual(["ins-a:1", "ins-b:1"]);
    expect(c.counts).toEqual({ calls: 2, answered: 1, failed: 1 });
    expect(c.latest("ins-a")).toBeUndefined();
    now.t += 60_000;
    await c.runRound();
    expect(asked.filter((x) => x.startsWith("ins-a"))).toHaveLength(1);
    expect(asked.filter((x) => x.startsWith("ins-b"))).toHaveLength(2);
    // libvirt's agent-lifecycle event: connected → asked at the next round.
    answers.set("ins-a", async () => DEBIAN);
    c.onEvent({ domain: "ins-a", kind: "agent-lifecycle", event: "connected" });
    now.t += 60_000;
    await c.runRound();
    expect(asked.filter((x) => x.startsWith("ins-a"))).toHaveLength(2);
    expect(c.latest("ins-a")?.fullest).toBeCloseTo(95, 6);
    // Disconnected: the reading goes at once.
    c.onEvent({ domain: "ins-a", kind: "agent-lifecycle", event: "disconnected" });
    expect(c.latest("ins-a")).toBeUndefined();
  });

  it("gives up on a call past its deadline (a hung agent delays nobody) and forgets instances no longer running", async () => {
    const now = { t: 1_000_000 };
    const running = ["ins-a", "ins-b"];
    const { c } = make(new Map([["ins-a", () => new Promise(() => undefined)], ["ins-b", async () => DEBIAN]]), running, now);
    const started = Date.now();
    await c.runRound();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(c.latest("ins-a")).toBeUndefined();
    expect(c.latest("ins-b")).toBeDefined();
    running.splice(1, 1);
    await c.runRound();
    expect(c.latest("ins-b")).toBeUndefined();
  });
});
