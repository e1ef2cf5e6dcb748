import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { METRIC_INDEX } from "../../../../agent/monitor/metrics.js";
import { HostMonitor } from "../../../../agent/monitor/monitor.js";
import { SeriesStore } from "../../../../agent/monitor/store.js";
import { RecordingRunner } from "../../../support/recording-runner.js";

const dom = (name: string, cpuS: number) => `Domain: '${name}'\n  state.state=1\n  cpu.time=${cpuS * 1e9}\n  vcpu.current=1\n  vcpu.maximum=1\n  vcpu.0.time=${cpuS * 1e9}\n  net.count=0\n  block.count=0\n`;

let dir: string;
let store: SeriesStore;
const logs: string[] = [];
const logger = { warn: (_: unknown, m?: string) => void logs.push(`warn ${m}`), info: (_: unknown, m?: string) => void logs.push(`info ${m}`) };
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "cdh-monitor-c-"));
  store = new SeriesStore({ dir });
  logs.length = 0;
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("HostMonitor", () => {
  it("samples every domain in one call, keeps only this agent's instances, and stores from the second sample on", async () => {
    const runner = new RecordingRunner();
    let now = 1_765_065_600_000;
    let cpu = 0;
    runner.on((argv) => argv.includes("domstats"), () => ({ stdout: dom("ins-aaaaaaaa", cpu) + dom("ins-zzzzzzzz", cpu) + dom("other-vm", cpu) }));
    const m = new HostMonitor({ runner, uri: "qemu:///system", store, intervalMs: 10_000, instanceIds: () => new Set(["ins-aaaaaaaa"]), logger, now: () => now });
    await m.sampleOnce();
    expect(store.instances()).toEqual([]);
    now += 10_000;
    cpu = 5;
    const s = await m.sampleOnce();
    expect([...s!.instances.keys()]).toEqual(["ins-aaaaaaaa"]);
    expect(s!.instances.get("ins-aaaaaaaa")!.values[METRIC_INDEX.CPUUsage]).toBeCloseTo(50);
    expect(m.latest()).toBe(s);
    expect(runner.commands).toHaveLength(2);
    const q = m.query({ instanceId: "ins-aaaaaaaa", metric: METRIC_INDEX.CPUUsage, period: 10, start: 1_765_065_600, end: 1_765_065_620 });
    expect(q.timestamps).toEqual([1_765_065_610]);
    expect(q.avg[0]).toBeCloseTo(50);
    expect(store.instances()).toEqual(["ins-aaaaaaaa"]);
  });

  it("counts a failed or killed call as a missed sample, logs once per streak, and goes on", async () => {
    const runner = new RecordingRunner();
    runner.on((argv) => argv.includes("domstats"), { failure: "timeout" }, { times: 2 });
    runner.on((argv) => argv.includes("domstats"), { stdout: dom("ins-aaaaaaaa", 1) });
    const m = new HostMonitor({ runner, uri: "qemu:///system", store, intervalMs: 10_000, instanceIds: () => new Set(["ins-aaaaaaaa"]), logger });
    expect(await m.sampleOnce()).toBeUndefined();
    expect(await m.sampleOnce()).toBeUndefined();
    expect((await m.sampleOnce())?.instances.size).toBe(1);
    expect(m.status()).toMatchObject({ samples: 1, missed: 2, lastError: undefined });
    expect(logs.filter((l) => l.startsWith("warn"))).toHaveLength(1);
    expect(logs.filter((l) => l.startsWith("info"))).toHaveLength(1);
  });

  it("tells its subscribers of each sample", async () => {
    const runner = new RecordingRunner();
    runner.on((argv) => argv.includes("domstats"), { stdout: dom("ins-aaaaaaaa", 1) });
    const m = new HostMonitor({ runner, uri: "qemu:///system", store, intervalMs: 10_000, instanceIds: () => new Set(["ins-aaaaaaaa"]), logger });
    const seen: number[] = [];
    const off = m.subscribe((s) => seen.push(s.instances.size));
    await m.sampleOnce();
    off();
    await m.sampleOnce();
    expect(seen).toEqual([1]);
  });
});
