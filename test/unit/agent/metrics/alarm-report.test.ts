import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../../../agent/log.js";
import { AlarmEngine } from "../../../../agent/metrics/alarms.js";
import { METRIC_COUNT, METRIC_INDEX } from "../../../../agent/monitor/metrics.js";
import { Reporter, type Report } from "../../../../agent/reporter.js";

const quiet = createLogger({ level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function cpuSample(at: number, value: number) {
  const values = new Float64Array(METRIC_COUNT).fill(Number.NaN);
  values[METRIC_INDEX.CPUUsage] = value;
  return { at, instances: new Map([["ins-aaaaaaaa", { instanceId: "ins-aaaaaaaa", at, state: 1, values, counters: { name: "ins-aaaaaaaa", nics: [], blocks: [] } }]]) };
}

describe("alarm events in the reports", () => {
  it("are carried by every report until one is delivered; a failed attempt keeps them", async () => {
    const engine = new AlarmEngine({ rules: [{ metric: "CPUUsage", operator: "GT", threshold: 50, continuePeriod: 1 }] });
    const bodies: Report[] = [];
    let fail = true;
    const reporter = new Reporter({
      controllerUrl: "http://controller.invalid/report",
      schedule: "0 0 1 1 *",
      timeoutMs: 1000,
      hostId: "host-aaaaaaaa",
      epoch: "e",
      logger: quiet,
      backoff: { initialMs: 10, maxMs: 10 },
      snapshot: () => ({ HostResource: {}, Instances: [], ...(engine.pendingEvents().length ? { Alarms: engine.pendingEvents().map((e) => ({ ...e })) } : {}) }),
      onDelivered: (report) => {
        const last = (report.Alarms as Array<{ Sequence: number }> | undefined)?.at(-1);
        if (last) engine.acknowledge(last.Sequence);
      },
      fetchImpl: async (_url, init) => {
        bodies.push(JSON.parse(String(init?.body)) as Report);
        if (fail) {
          fail = false;
          return new Response("down", { status: 503 });
        }
        return new Response("{}", { status: 200 });
      },
    });
    try {
      engine.evaluate(cpuSample(1_000, 90));
      reporter.trigger("alarm");
      for (let i = 0; i < 100 && reporter.stats().sent < 1; i++) await new Promise((r) => setTimeout(r, 10));
      expect(bodies.map((b) => (b.Alarms as Array<{ State: string }> | undefined)?.map((e) => e.State))).toEqual([["FIRING"], ["FIRING"]]);
      expect(engine.pendingEvents()).toEqual([]);
      reporter.trigger("later");
      for (let i = 0; i < 100 && reporter.stats().sent < 2; i++) await new Promise((r) => setTimeout(r, 10));
      expect(bodies.at(-1)!.Alarms).toBeUndefined();
    } finally {
      await reporter.stop();
    }
  });
});
