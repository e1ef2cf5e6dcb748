import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../agent/log.js";
import { Reporter, type Report, type ReporterOptions } from "../../agent/reporter.js";

interface Received {
  at: number;
  contentType: string | undefined;
  body: Report;
}

/** A real controller stand-in on 127.0.0.1: fails the first `failFirst` requests with 503. */
async function startController(options: { failFirst?: number; delayMs?: number; status?: number } = {}) {
  const received: Received[] = [];
  let count = 0;
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      count += 1;
      const n = count;
      received.push({
        at: Date.now(),
        contentType: req.headers["content-type"],
        body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Report,
      });
      const reply = () => {
        const fail = n <= (options.failFirst ?? 0);
        res.statusCode = fail ? (options.status ?? 503) : 200;
        res.end(fail ? "unavailable" : "{}");
      };
      if (options.delayMs) setTimeout(reply, options.delayMs);
      else reply();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/report`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function logSink() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: createLogger({ level: "debug", destination }) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(5);
  }
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function makeReporter(overrides: Partial<ReporterOptions> & { controllerUrl: string }) {
  let snapshots = 0;
  const { logger, lines } = logSink();
  const reporter = new Reporter({
    schedule: "0 0 0 1 1 *", // effectively never during a test
    timeoutMs: 2000,
    hostId: "host-abcd1234",
    epoch: "epoch-1",
    snapshot: () => {
      snapshots += 1;
      return { HostResource: { CpuTotal: 8, CpuAvailable: 8 - snapshots }, Instances: [{ InstanceId: "ins-a", InstanceState: "RUNNING" }] };
    },
    logger,
    backoff: { initialMs: 40, maxMs: 200 },
    random: () => 0.5,
    ...overrides,
  });
  cleanups.push(() => reporter.stop());
  return { reporter, lines, snapshots: () => snapshots };
}

describe("Reporter", () => {
  it("POSTs JSON reports whose sequence increases by one while the epoch stays", async () => {
    const ctl = await startController();
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 1);
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 2);
    reporter.trigger("scheduled");
    await waitFor(() => ctl.received.length === 3);

    const bodies = ctl.received.map((r) => r.body);
    expect(bodies.map((b) => b.Sequence)).toEqual([1, 2, 3]);
    expect(new Set(bodies.map((b) => b.Epoch))).toEqual(new Set(["epoch-1"]));
    expect(ctl.received[0]!.contentType).toBe("application/json");
    expect(bodies[0]).toMatchObject({
      HostId: "host-abcd1234",
      Reason: "state-change",
      HostResource: { CpuTotal: 8, CpuAvailable: 7 },
      Instances: [{ InstanceId: "ins-a", InstanceState: "RUNNING" }],
    });
    expect(new Date(bodies[0]!.Timestamp).toISOString()).toBe(bodies[0]!.Timestamp);
    expect(reporter.stats()).toMatchObject({ built: 3, sent: 3, failedAttempts: 0, lastSentSequence: 3 });
  });

  it("returns from trigger() at once, before any request is made", async () => {
    const ctl = await startController();
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url });
    reporter.trigger("state-change");
    expect(ctl.received).toHaveLength(0);
    await waitFor(() => ctl.received.length === 1);
  });

  it("retries a failed report with growing delays until the controller accepts it", async () => {
    const ctl = await startController({ failFirst: 3 });
    cleanups.push(ctl.close);
    const { reporter, lines } = makeReporter({ controllerUrl: ctl.url });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 4);
    await waitFor(() => reporter.stats().sent === 1);

    // The same report (same sequence) is retried; nothing newer was asked for.
    expect(ctl.received.map((r) => r.body.Sequence)).toEqual([1, 1, 1, 1]);
    // With random() = 0.5 the delays are 0.75 × 40, 80, 160 ms: each gap is longer than the one before.
    const gaps = ctl.received.slice(1).map((r, i) => r.at - ctl.received[i]!.at);
    expect(gaps[0]!).toBeGreaterThanOrEqual(25);
    expect(gaps[1]!).toBeGreaterThanOrEqual(55);
    expect(gaps[2]!).toBeGreaterThanOrEqual(115);
    expect(gaps[2]!).toBeGreaterThan(gaps[0]!);
    expect(reporter.stats()).toMatchObject({ failedAttempts: 3, sent: 1, lastError: null });
    // A failure streak is logged once at warn, then at debug.
    expect(lines.filter((l) => l.level === "warn")).toHaveLength(1);
    expect(lines.some((l) => l.msg === "controller reachable again")).toBe(true);
  });

  it("caps the retry delay at backoff.maxMs", async () => {
    const ctl = await startController({ failFirst: 6 });
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url, backoff: { initialMs: 20, maxMs: 40 }, random: () => 0.999 });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 7);
    const gaps = ctl.received.slice(1).map((r, i) => r.at - ctl.received[i]!.at);
    // 20 × 2^5 would be 640 ms without the cap.
    expect(Math.max(...gaps)).toBeLessThan(200);
  });

  it("sends a newer report instead of retrying a superseded one", async () => {
    const ctl = await startController({ failFirst: 1 });
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url, backoff: { initialMs: 150, maxMs: 150 } });
    reporter.trigger("first");
    await waitFor(() => ctl.received.length === 1);
    await waitFor(() => reporter.stats().failedAttempts === 1);
    reporter.trigger("second"); // arrives while report 1 waits for its retry
    await waitFor(() => reporter.stats().sent === 1);
    await sleep(300);

    expect(ctl.received.map((r) => [r.body.Sequence, r.body.Reason])).toEqual([
      [1, "first"],
      [2, "second"],
    ]);
    // The dropped report 1 is counted in the report that replaced it.
    expect(ctl.received.map((r) => r.body.Superseded)).toEqual([0, 1]);
    expect(reporter.stats()).toMatchObject({ superseded: 1, sent: 1, lastSentSequence: 2 });
  });

  it("coalesces a burst into one report now and one newest report after it", async () => {
    const ctl = await startController({ delayMs: 100 });
    cleanups.push(ctl.close);
    const { reporter, snapshots } = makeReporter({ controllerUrl: ctl.url });
    for (let i = 1; i <= 5; i++) reporter.trigger(`burst-a-${i}`); // same tick: one report
    await waitFor(() => ctl.received.length === 1);
    for (let i = 1; i <= 5; i++) reporter.trigger(`burst-b-${i}`); // while one is in flight
    await waitFor(() => reporter.stats().sent === 2);
    await sleep(200);

    expect(ctl.received.map((r) => [r.body.Sequence, r.body.Reason])).toEqual([
      [1, "burst-a-5"],
      [2, "burst-b-5"],
    ]);
    expect(snapshots()).toBe(2);
  });

  it("stop() cancels pending retries", async () => {
    const ctl = await startController({ failFirst: 100 });
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url, backoff: { initialMs: 60, maxMs: 60 } });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 2);
    await reporter.stop();
    const after = ctl.received.length;
    reporter.trigger("after-stop");
    await sleep(300);
    expect(ctl.received.length).toBe(after);
  });

  it("stop() aborts a request in flight and resolves", async () => {
    const ctl = await startController({ delayMs: 1000 });
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 1);
    const t0 = Date.now();
    await reporter.stop();
    expect(Date.now() - t0).toBeLessThan(500);
    expect(reporter.stats().sent).toBe(0);
  });

  it("treats a request that exceeds timeoutMs as failed and retries it", async () => {
    const ctl = await startController({ delayMs: 300 });
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url, timeoutMs: 50 });
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length >= 2);
    expect(reporter.stats().lastError).toContain("timed out");
    expect(reporter.stats().sent).toBe(0);
  });

  it("retries after a network error (nothing listening)", async () => {
    const ctl = await startController();
    const url = ctl.url;
    await ctl.close();
    const { reporter } = makeReporter({ controllerUrl: url });
    reporter.trigger("state-change");
    await waitFor(() => reporter.stats().failedAttempts >= 2);
    expect(reporter.stats().sent).toBe(0);
  });

  it("with no controller URL makes no request, logs each report and counts it as sent", async () => {
    let fetchCalls = 0;
    const { reporter, lines } = makeReporter({
      controllerUrl: "",
      fetchImpl: async () => {
        fetchCalls += 1;
        return new Response("{}");
      },
    });
    reporter.trigger("scheduled");
    await waitFor(() => reporter.stats().sent === 1);
    reporter.trigger("state-change");
    await waitFor(() => reporter.stats().sent === 2);

    expect(fetchCalls).toBe(0);
    const reports = lines.filter((l) => l.msg === "report (no controller configured)");
    expect(reports.map((l) => [l.level, (l.report as Report).Sequence, (l.report as Report).Reason])).toEqual([
      ["debug", 1, "scheduled"],
      ["info", 2, "state-change"],
    ]);
    // Only the scheduled one carries the instance list; the other counts it.
    expect(reports.map((l) => [(l.report as Report).Instances === undefined, (l.report as Record<string, unknown>).InstanceCount])).toEqual([
      [false, undefined],
      [true, 1],
    ]);
  });

  it("start() sends a startup report and then reports on the cron schedule", async () => {
    const ctl = await startController();
    cleanups.push(ctl.close);
    const { reporter } = makeReporter({ controllerUrl: ctl.url, schedule: "* * * * * *" });
    reporter.start();
    await waitFor(() => ctl.received.filter((r) => r.body.Reason === "scheduled").length >= 2, 4000);
    expect(ctl.received[0]!.body.Reason).toBe("startup");
    const seqs = ctl.received.map((r) => r.body.Sequence);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  });

  it("skips a report whose snapshot throws, without throwing to the caller", async () => {
    const ctl = await startController();
    cleanups.push(ctl.close);
    let fail = true;
    const { reporter } = makeReporter({
      controllerUrl: ctl.url,
      snapshot: () => {
        if (fail) throw new Error("libvirt unreachable");
        return { HostResource: {}, Instances: [] };
      },
    });
    expect(() => reporter.trigger("state-change")).not.toThrow();
    await sleep(50);
    fail = false;
    reporter.trigger("state-change");
    await waitFor(() => ctl.received.length === 1);
    expect(ctl.received[0]!.body.Sequence).toBe(1);
  });
});
