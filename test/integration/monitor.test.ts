/**
 * The host monitor through the official Monitor SDK (`tencentcloud-sdk-nodejs`'s
 * monitor.v20180724.Client, X-TC-Version 2018-07-24 on the agent's endpoint), with three
 * tiny guests and a 2 s collection interval: CPUUsage rises while a guest burns CPU and
 * falls when it stops; disk and NIC series move with the guest's writes and pings; balloon
 * memory is present; points come at the requested period inside the requested window; a
 * hung domain (its QEMU stopped with SIGSTOP) does not stall collection for the others;
 * the series survive an agent restart.
 */
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { GuestConsole } from "../support/guest-console.js";
import { parseTinyNet, TINY_NET_PATTERN } from "../support/guest-net.js";
import { monitorClient, type MonitorClient } from "../support/monitor-client.js";
import { waitForSerial } from "../support/serial.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

const nowS = () => Math.floor(Date.now() / 1000);
const iso = (s: number) => new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, "+00:00");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Points {
  ts: number[];
  values: number[];
}

async function qemuPid(domain: string): Promise<number> {
  const r = await execa("pgrep", ["-f", `guest=${domain},`], { reject: false });
  const pids = r.stdout.split("\n").filter(Boolean).map(Number);
  expect(pids, `one QEMU process for ${domain}`).toHaveLength(1);
  return pids[0]!;
}

describe("the host monitor through the Monitor SDK", () => {
  let agent: AgentProcess;
  let ids: string[] = [];
  let mon: MonitorClient;
  let consoles: GuestConsole[] = [];
  let ipB = "";

  async function series(id: string, metric: string, period: number, start: number, end = nowS()): Promise<Points> {
    const r = await mon.GetMonitorData({
      Namespace: "QCE/CVM",
      MetricName: metric,
      Period: period,
      StartTime: iso(start),
      EndTime: iso(end),
      Instances: [{ Dimensions: [{ Name: "InstanceId", Value: id }] }],
    });
    const dp = r.DataPoints![0]!;
    return { ts: dp.Timestamps ?? [], values: dp.Values ?? [] };
  }

  /** Polls a 10 s series until a point at or after `from` satisfies `ok`; returns it. */
  async function waitForPoint(id: string, metric: string, from: number, ok: (v: number) => boolean, timeoutMs = 45_000): Promise<{ ts: number; value: number; all: Points }> {
    const deadline = Date.now() + timeoutMs;
    let last: Points = { ts: [], values: [] };
    while (Date.now() < deadline) {
      // A window that starts in the future is refused (EndTime before StartTime): wait for it.
      if (nowS() < from) {
        await sleep(1_000);
        continue;
      }
      last = await series(id, metric, 10, from - 10);
      const i = last.ts.findIndex((t, k) => t >= from && ok(last.values[k]!));
      if (i >= 0) return { ts: last.ts[i]!, value: last.values[i]!, all: last };
      await sleep(2_000);
    }
    throw new Error(`${id}: no ${metric} point from ${from} as wanted within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
  }

  beforeAll(async () => {
    ({ agent, ids } = await agentWithTinyGuests({ repoRoot: inject("repoRoot"), imageName: "monitor", count: 3, env: { CDH_AGENT_MONITOR_INTERVAL_S: "2" } }));
    mon = monitorClient(agent.port);
    const netB = parseTinyNet((await waitForSerial(`${agent.dataDir}/instances/${ids[1]}/console.log`, TINY_NET_PATTERN, { timeoutMs: 90_000 }))[0]);
    ipB = netB.nics[0]!.ip;
    consoles = await Promise.all(ids.slice(0, 2).map((id) => GuestConsole.open(id)));
  });

  afterAll(async () => {
    for (const c of consoles) c.close();
    await agent?.shutdown();
  });

  it("lists the CVM metrics with their periods (DescribeBaseMetrics), and refuses what it does not compute naming the field", async () => {
    const r = await mon.DescribeBaseMetrics({ Namespace: "QCE/CVM" });
    const names = r.MetricSet!.map((m) => m.MetricName);
    for (const n of ["CPUUsage", "MemUsage", "MemUsed", "LanOuttraffic", "LanIntraffic", "LanOutpkg", "LanInpkg", "WanOuttraffic", "WanIntraffic", "BaseCpuUsage", "DiskWriteTraffic", "DiskIoAwait"]) {
      expect(names).toContain(n);
    }
    expect(r.MetricSet!.find((m) => m.MetricName === "CPUUsage")!.Period).toEqual([10, 60, 300, 3600, 86400]);
    await expect(mon.GetMonitorData({ Namespace: "QCE/CVM", MetricName: "CpuLoadavg", Instances: [{ Dimensions: [{ Name: "InstanceId", Value: ids[0]! }] }] })).rejects.toMatchObject({
      code: "InvalidParameterValue",
      message: expect.stringContaining("`MetricName`"),
    });
    await expect(mon.GetMonitorData({ Namespace: "QCE/CVM", MetricName: "CPUUsage", Period: 7, Instances: [{ Dimensions: [{ Name: "InstanceId", Value: ids[0]! }] }] })).rejects.toMatchObject({
      code: "InvalidParameterValue",
      message: expect.stringContaining("`Period`"),
    });
  });

  it("shows CPUUsage rising while the guest burns CPU and falling when it stops", async () => {
    const [a] = ids as [string];
    const idle = await waitForPoint(a, "CPUUsage", nowS() - 20, (v) => v >= 0);
    const burnFrom = nowS();
    const out = await consoles[0]!.run("while :; do :; done >/dev/null 2>&1 & echo CDH-BURN=$!");
    const pid = /CDH-BURN=(\d+)/.exec(out)?.[1];
    expect(pid, out).toBeDefined();
    const high = await waitForPoint(a, "CPUUsage", Math.ceil(burnFrom / 10) * 10, (v) => v >= 50);
    expect(high.value).toBeGreaterThan(idle.value + 20);
    const stopFrom = nowS();
    await consoles[0]!.run(`kill ${pid}`);
    const low = await waitForPoint(a, "CPUUsage", Math.ceil(stopFrom / 10) * 10 + 10, (v) => v < 30);
    expect(low.value).toBeLessThan(high.value / 2);
    // The snake_case name of the seeds reads the same series (the burning bucket, complete by now).
    const read = (name: string) =>
      mon.GetMonitorData({ Namespace: "QCE/CVM", MetricName: name, Period: 10, StartTime: iso(high.ts), EndTime: iso(high.ts), Instances: [{ Dimensions: [{ Name: "InstanceId", Value: a }] }] });
    const [snake, camel] = [await read("cpu_usage"), await read("CPUUsage")];
    expect(snake.MetricName).toBe("cpu_usage");
    // The same bucket through both names (its value may have moved since the wait saw it: the
    // bucket was still filling then; on a loaded host the "idle" guest may still be busy booting).
    expect(snake.DataPoints![0]!.Values).toHaveLength(1);
    expect(snake.DataPoints![0]!.Values).toEqual(camel.DataPoints![0]!.Values);
  });

  it("moves the disk series with the guest's writes and the NIC series with its pings", async () => {
    const [a, b] = ids as [string, string];
    const from = Math.ceil(nowS() / 10) * 10;
    // Past the tiny image's 64 MiB: the system disk is 1 GiB, the guest runs from RAM.
    await consoles[0]!.run("dd if=/dev/zero of=/dev/vda bs=1048576 seek=512 count=48 conv=fsync 2>/dev/null", 60_000);
    for (let k = 0; k < 4; k++) await consoles[0]!.run(`ping -c 12 -s 4000 ${ipB} >/dev/null 2>&1 &`);
    const wrote = await waitForPoint(a, "DiskWriteTraffic", from - 10, (v) => v > 500);
    expect(wrote.value).toBeGreaterThan(500); // KB/s: 48 MiB in a few 10 s buckets
    const written = wrote.all.values.reduce((s, v) => s + v * 10, 0);
    expect(written).toBeGreaterThan(30 * 1024); // KB, of the 48 MiB
    expect((await waitForPoint(a, "DiskWriteIops", from - 10, (v) => v > 0)).value).toBeGreaterThan(0);
    const out = await waitForPoint(a, "LanOutpkg", from, (v) => v >= 3);
    expect(out.value).toBeGreaterThanOrEqual(3);
    expect((await waitForPoint(b, "LanInpkg", from, (v) => v >= 3)).value).toBeGreaterThanOrEqual(3);
    expect((await waitForPoint(a, "LanOuttraffic", from, (v) => v > 0.01)).value).toBeGreaterThan(0.01);
    // All traffic is intranet: the Wan series are 0 where Lan has points.
    const wan = await series(a, "WanOuttraffic", 10, from);
    expect(wan.ts.length).toBeGreaterThan(0);
    expect(wan.values.every((v) => v === 0)).toBe(true);
  });

  it("has balloon memory: MemUsed and MemUsage from the guest's statistics", async () => {
    const a = ids[0]!;
    const usage = await waitForPoint(a, "MemUsage", nowS() - 60, (v) => v > 0, 60_000);
    expect(usage.value).toBeLessThan(100);
    const used = await waitForPoint(a, "MemUsed", nowS() - 60, (v) => v > 0);
    expect(used.value).toBeLessThan(1024); // MB, of a 1 GiB guest
  });

  it("answers points at the requested period inside the requested window, aligned as the API defines", async () => {
    const a = ids[0]!;
    const end = nowS();
    const start = end - 95;
    for (const period of [10, 60]) {
      const r = await mon.GetMonitorData({ Namespace: "QCE/CVM", MetricName: "BaseCpuUsage", Period: period, StartTime: iso(start), EndTime: iso(end), Instances: [{ Dimensions: [{ Name: "InstanceId", Value: a }] }] });
      const alignedStart = Math.floor(start / period) * period;
      const alignedEnd = Math.floor(end / period) * period;
      expect(r.Period).toBe(period);
      expect(r.StartTime).toBe(iso(alignedStart));
      expect(r.EndTime).toBe(iso(alignedEnd));
      const ts = r.DataPoints![0]!.Timestamps!;
      expect(ts.length).toBeGreaterThan(0);
      expect(ts.every((t) => t % period === 0 && t >= alignedStart && t <= alignedEnd)).toBe(true);
      expect(ts).toEqual([...ts].sort((x, y) => x - y));
      // 95 s at 10 s is up to 10 points; a sample missed under load (its domstats call over its
      // deadline) is a gap, never an invented point, so only most of them are required.
      expect(ts.length).toBeGreaterThanOrEqual(period === 10 ? 3 : 1);
    }
    // Two instances in one request: one DataPoint each, in request order.
    const two = await mon.GetMonitorData({ Namespace: "QCE/CVM", MetricName: "CPUUsage", Period: 10, StartTime: iso(start), EndTime: iso(end), Instances: [ids[1]!, ids[0]!].map((id) => ({ Dimensions: [{ Name: "InstanceId", Value: id }] })) });
    expect(two.DataPoints!.map((d) => d.Dimensions![0]!.Value)).toEqual([ids[1], ids[0]]);
  });

  it("keeps collecting the other instances while one domain's QEMU is stopped (SIGSTOP)", async () => {
    const [a, b, c] = ids as [string, string, string];
    const pid = await qemuPid(c);
    process.kill(pid, "SIGSTOP");
    try {
      const from = Math.ceil(nowS() / 10) * 10;
      await sleep(25_000);
      for (const id of [a, b]) {
        const s = await series(id, "BaseCpuUsage", 10, from);
        expect(s.ts.filter((t) => t >= from).length, `${id} points since the stop`).toBeGreaterThanOrEqual(2);
      }
      // The stopped QEMU uses no CPU: where it still has points, they say so.
      const stopped = await series(c, "BaseCpuUsage", 10, from + 10);
      expect(stopped.values.every((v) => v < 5)).toBe(true);
    } finally {
      process.kill(pid, "SIGCONT");
    }
  });

  it("keeps its series across an agent restart and goes on collecting", async () => {
    const a = ids[0]!;
    const before = await series(a, "BaseCpuUsage", 10, nowS() - 120);
    expect(before.ts.length).toBeGreaterThan(5);
    await agent.kill("SIGKILL");
    agent = await agent.restart();
    mon = monitorClient(agent.port);
    const after = await series(a, "BaseCpuUsage", 10, before.ts[0]!, before.ts.at(-1)!);
    expect(after.ts).toEqual(before.ts);
    const restartedAt = nowS();
    const fresh = await waitForPoint(a, "BaseCpuUsage", Math.ceil(restartedAt / 10) * 10, (v) => v >= 0);
    expect(fresh.ts).toBeGreaterThan(before.ts.at(-1)!);
  });
});
