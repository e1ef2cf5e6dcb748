/**
 * The operator commands' behaviour and exit codes over a scripted API client (fails closed:
 * an action the script does not expect throws): paging, the tables, --json as the API gave it,
 * the API's error printed as it came (exit 1), an unreachable agent (3), the import's progress
 * and deadline (5), waits on an operation's RequestId, and logs paged through DescribeInstanceSerialLog.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT, parseOperatorArgs } from "../../../agent/cli/args.js";
import { AgentUnreachableError, ApiCallError, type ApiClient, type ApiResponse } from "../../../agent/cli/client.js";
import { runOperator } from "../../../agent/cli/run.js";

type Step = { action: string; params?: Record<string, unknown>; answer: ApiResponse | Error };

/** Answers the expected calls in order; anything else fails the test. */
function scripted(steps: Step[]): ApiClient & { left: () => number } {
  const queue = [...steps];
  return {
    endpoint: "http://127.0.0.1:1",
    left: () => queue.length,
    async call(action, params = {}) {
      const step = queue.shift();
      if (!step || step.action !== action) throw new Error(`unexpected call ${action} ${JSON.stringify(params)} (expected ${step?.action ?? "none"})`);
      if (step.params) expect(params).toEqual(step.params);
      if (step.answer instanceof Error) throw step.answer;
      return { RequestId: "req-1", ...step.answer };
    },
    async openWebSocket(path) {
      throw new Error(`unexpected WebSocket ${path}`);
    },
  };
}

let dataDir = "";
beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "cdh-cli-run-"));
});
afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

async function cli(argv: string[], steps: Step[], o: { tty?: boolean; outTty?: boolean; signal?: AbortSignal; onSleep?: () => void } = {}) {
  const client = scripted(steps);
  const out: string[] = [];
  const err: string[] = [];
  let clock = 0;
  const code = await runOperator(parseOperatorArgs(argv, "/"), {
    client,
    dataDir,
    pollMs: 1000,
    ...(o.signal ? { signal: o.signal } : {}),
    io: {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      errIsTty: o.tty ?? false,
      outIsTty: o.outTty ?? false,
      sleep: async (ms) => {
        clock += ms;
        o.onSleep?.();
      },
      now: () => clock,
    },
  });
  expect(client.left()).toBe(0); // every scripted call was made
  return { code, out: out.join(""), err: err.join("") };
}

const ins = (id: string, extra: Record<string, unknown> = {}) => ({ InstanceId: id, InstanceName: `n-${id}`, InstanceState: "RUNNING", InstanceType: "CDH_1C1G", CPU: 1, Memory: 1, PrivateIpAddresses: ["10.201.0.5"], ImageId: "img-aaaaaaaa", ...extra });

describe("runOperator", () => {
  it("instances: pages through DescribeInstances and prints a table; --json merges the pages into the first Response", async () => {
    const page1 = Array.from({ length: 100 }, (_, i) => ins(`ins-${String(i).padStart(8, "0")}`));
    const steps = (): Step[] => [
      { action: "DescribeInstances", params: { Offset: 0, Limit: 100 }, answer: { TotalCount: 101, InstanceSet: page1 } },
      { action: "DescribeInstances", params: { Offset: 100, Limit: 100 }, answer: { TotalCount: 101, InstanceSet: [ins("ins-zzzzzzzz")] } },
    ];
    const human = await cli(["instances"], steps());
    expect(human.code).toBe(EXIT.OK);
    const lines = human.out.trimEnd().split("\n");
    expect(lines).toHaveLength(102);
    expect(lines[0]).toMatch(/^ID\s+NAME\s+STATE\s+TYPE\s+CPU\s+MEM\s+IP\s+IMAGE\s+LAST OPERATION$/);
    expect(lines[101]).toMatch(/^ins-zzzzzzzz\s+n-ins-zzzzzzzz\s+RUNNING\s+CDH_1C1G\s+1\s+1G\s+10\.201\.0\.5\s+img-aaaaaaaa\s+-$/);
    const json = await cli(["instances", "--json"], steps());
    const parsed = JSON.parse(json.out) as { TotalCount: number; InstanceSet: unknown[]; RequestId: string };
    expect(parsed.TotalCount).toBe(101);
    expect(parsed.InstanceSet).toHaveLength(101);
    expect(parsed.RequestId).toBe("req-1");
  });

  it("instance: every field, and exit 1 when the host has no such instance", async () => {
    const found = await cli(["instance", "ins-abcd1234"], [{ action: "DescribeInstances", params: { InstanceIds: ["ins-abcd1234"] }, answer: { TotalCount: 1, InstanceSet: [ins("ins-abcd1234", { Placement: { Zone: "z1" } })] } }]);
    expect(found.code).toBe(EXIT.OK);
    expect(found.out).toMatch(/^Placement\.Zone:\s+z1$/m);
    const missing = await cli(["instance", "ins-abcd1234"], [{ action: "DescribeInstances", answer: { TotalCount: 0, InstanceSet: [] } }]);
    expect(missing.code).toBe(EXIT.API_ERROR);
    expect(missing.err).toMatch(/no instance ins-abcd1234/);
  });

  it("prints the API's error code and message as they came, with exit 1", async () => {
    const r = await cli(["start", "ins-abcd1234"], [{ action: "StartInstances", answer: new ApiCallError("StartInstances", "InvalidInstanceId.NotFound", "ins-abcd1234 does not exist", "req-9") }]);
    expect(r.code).toBe(EXIT.API_ERROR);
    expect(r.err).toBe("cdh-agent: StartInstances: InvalidInstanceId.NotFound: ins-abcd1234 does not exist (RequestId req-9)\n");
  });

  it("exits 3 when the agent cannot be reached", async () => {
    const r = await cli(["host"], [{ action: "DescribeHosts", answer: new AgentUnreachableError("cannot reach the agent at http://127.0.0.1:1: ECONNREFUSED") }]);
    expect(r.code).toBe(EXIT.UNREACHABLE);
    expect(r.err).toMatch(/ECONNREFUSED/);
  });

  it("stop --hard --wait sends StopType HARD and waits for its own RequestId to settle", async () => {
    const r = await cli(
      ["stop", "ins-abcd1234", "--hard", "--wait"],
      [
        { action: "StopInstances", params: { InstanceIds: ["ins-abcd1234"], StopType: "HARD" }, answer: { RequestId: "req-stop" } },
        { action: "DescribeInstances", answer: { InstanceSet: [ins("ins-abcd1234", { InstanceState: "RUNNING", LatestOperationRequestId: "req-old", LatestOperationState: "SUCCESS" })] } },
        { action: "DescribeInstances", answer: { InstanceSet: [ins("ins-abcd1234", { InstanceState: "STOPPING", LatestOperationRequestId: "req-stop", LatestOperationState: "OPERATING" })] } },
        { action: "DescribeInstances", answer: { InstanceSet: [ins("ins-abcd1234", { InstanceState: "STOPPED", LatestOperationRequestId: "req-stop", LatestOperationState: "SUCCESS" })] } },
      ],
    );
    expect(r.code).toBe(EXIT.OK);
    expect(r.out).toMatch(/StopInstances: accepted for ins-abcd1234 \(RequestId req-stop\)/);
    expect(r.err).toBe("ins-abcd1234: STOPPED\n");
  });

  it("a failed operation under --wait prints its code and exits 1; a wait past its deadline exits 5", async () => {
    const failed = await cli(
      ["start", "ins-abcd1234", "--wait"],
      [
        { action: "StartInstances", answer: { RequestId: "req-s" } },
        { action: "DescribeInstances", answer: { InstanceSet: [ins("ins-abcd1234", { InstanceState: "STOPPED", LatestOperation: "StartInstances", LatestOperationRequestId: "req-s", LatestOperationState: "FAILED", LatestOperationCode: "ResourceInsufficient", LatestOperationErrorMsg: "no memory" })] } },
      ],
    );
    expect(failed.code).toBe(EXIT.API_ERROR);
    expect(failed.err).toMatch(/StartInstances failed: ResourceInsufficient: no memory/);
    const operating = { InstanceSet: [ins("ins-abcd1234", { LatestOperationRequestId: "req-t", LatestOperationState: "SUCCESS" })] };
    const late = await cli(
      ["terminate", "ins-abcd1234", "--wait", "--timeout", "2"],
      [{ action: "TerminateInstances", answer: { RequestId: "req-t" } }, ...Array.from({ length: 3 }, () => ({ action: "DescribeInstances", answer: operating }))],
    );
    expect(late.code).toBe(EXIT.TIMEOUT);
    expect(late.err).toMatch(/still waiting after 2 s for ins-abcd1234/);
    const gone = await cli(["terminate", "ins-abcd1234", "--wait"], [{ action: "TerminateInstances", answer: { RequestId: "req-t" } }, { action: "DescribeInstances", answer: { InstanceSet: [] } }]);
    expect(gone.code).toBe(EXIT.OK);
  });

  it("import: ImportImage with a file:// URL, a progress line per change, NORMAL ends it", async () => {
    const image = (p: number, state = "IMPORTING") => ({ ImageSet: [{ ImageId: "img-12345678", ImageState: state, SyncPercent: p }] });
    const r = await cli(
      ["import", "/srv/tiny.qcow2", "--name", "tiny"],
      [
        { action: "ImportImage", params: { ImageUrl: "file:///srv/tiny.qcow2", ImageName: "tiny", OsType: "Linux", OsVersion: "unknown", Architecture: "x86_64" }, answer: { ImageId: "img-12345678" } },
        { action: "DescribeImages", params: { ImageIds: ["img-12345678"] }, answer: image(0) },
        { action: "DescribeImages", answer: image(0) },
        { action: "DescribeImages", answer: image(60) },
        { action: "DescribeImages", answer: image(100, "NORMAL") },
      ],
    );
    expect(r.code).toBe(EXIT.OK);
    expect(r.err.split("\n").filter(Boolean)).toEqual([
      "img-12345678 [..............................]   0% IMPORTING",
      "img-12345678 [##################............]  60% IMPORTING",
      "img-12345678 [##############################] 100% NORMAL",
    ]);
    expect(r.out).toBe("ImportImage: img-12345678\nimg-12345678 NORMAL\n");
  });

  it("import: a failed import exits 1 with the image's error; the deadline exits 5; --json gives the last DescribeImages", async () => {
    const failed = await cli(["import", "/x.raw"], [{ action: "ImportImage", answer: { ImageId: "img-1" } }, { action: "DescribeImages", answer: { ImageSet: [{ ImageId: "img-1", ImageState: "IMPORTFAILED", SyncPercent: 10, ErrorCode: "InvalidImage", ErrorMessage: "not an image" }] } }]);
    expect(failed.code).toBe(EXIT.API_ERROR);
    expect(failed.err).toMatch(/ended IMPORTFAILED: InvalidImage: not an image/);
    const importing = { ImageSet: [{ ImageId: "img-1", ImageState: "IMPORTING", SyncPercent: 5 }] };
    const late = await cli(["import", "/x.raw", "--timeout", "1"], [{ action: "ImportImage", answer: { ImageId: "img-1" } }, ...Array.from({ length: 3 }, () => ({ action: "DescribeImages", answer: importing }))]);
    expect(late.code).toBe(EXIT.TIMEOUT);
    const json = await cli(["import", "/x.raw", "--json"], [{ action: "ImportImage", answer: { ImageId: "img-1" } }, { action: "DescribeImages", answer: { ImageSet: [{ ImageId: "img-1", ImageState: "NORMAL", SyncPercent: 100 }] } }]);
    expect(JSON.parse(json.out)).toMatchObject({ ImageSet: [{ ImageId: "img-1", ImageState: "NORMAL" }], RequestId: "req-1" });
  });

  it("host: DescribeHosts' capacity as a table", async () => {
    const r = await cli(["host"], [{ action: "DescribeHosts", params: {}, answer: { TotalCount: 1, HostSet: [{ HostId: "host-1", HostName: "h", HostState: "RUNNING", InstanceIds: ["a", "b"], HostResource: { CpuTotal: 32, CpuAvailable: 30, MemTotal: 60, MemAvailable: 58, DiskTotal: 400, DiskAvailable: 380, DiskType: "LOCAL_SSD" } }] } }]);
    expect(r.code).toBe(EXIT.OK);
    expect(r.out).toMatch(/^Instances:\s+2$/m);
    expect(r.out).toMatch(/^CPU\s+32\s+30\s+vCPU$/m);
    expect(r.out).toMatch(/^disk\s+400\s+380\s+GiB LOCAL_SSD$/m);
  });

  it("top: the running instances' latest GetMonitorData points, batched by 10; --count rounds; --json as the API gave them", async () => {
    const ids = Array.from({ length: 11 }, (_, i) => `ins-${String(i).padStart(8, "0")}`);
    const metrics = ["CPUUsage", "MemUsage", "DiskReadTraffic", "DiskWriteTraffic", "LanIntraffic", "LanOuttraffic"];
    const monitorSteps = (start = "1969-12-31T23:58:00Z"): Step[] =>
      metrics.flatMap((metric, k) =>
        [ids.slice(0, 10), ids.slice(10)].map((batch) => ({
          action: "GetMonitorData",
          params: { Namespace: "QCE/CVM", MetricName: metric, Period: 10, StartTime: start, Instances: batch.map((id) => ({ Dimensions: [{ Name: "InstanceId", Value: id }] })) },
          answer: { MetricName: metric, DataPoints: batch.map((id) => ({ Dimensions: [{ Name: "InstanceId", Value: id }], Timestamps: [1, 2], Values: id === ids[10] ? [] : [0, k + 0.25] })) },
        })),
      );
    const describe: Step = { action: "DescribeInstances", params: { Filters: [{ Name: "instance-state", Values: ["RUNNING"] }], Offset: 0, Limit: 100 }, answer: { TotalCount: 11, InstanceSet: ids.map((id) => ins(id)) } };
    const r = await cli(["top", "--count", "2", "--interval", "5"], [describe, ...monitorSteps(), describe, ...monitorSteps("1969-12-31T23:58:05Z")]);
    expect(r.code).toBe(EXIT.OK);
    const lines = r.out.trimEnd().split("\n");
    expect(lines).toHaveLength(24); // two rounds of a header and 11 rows (not a terminal: no screen clearing)
    expect(lines[0]).toMatch(/^ID\s+NAME\s+CPU%\s+MEM%\s+DISK R KB\/s\s+DISK W KB\/s\s+NET IN Mbps\s+NET OUT Mbps$/);
    expect(lines[1]).toMatch(/^ins-00000000\s+n-ins-00000000\s+0\.3\s+1\.3\s+2\.3\s+3\.3\s+4\.250\s+5\.250$/);
    expect(lines[11]).toMatch(/^ins-00000010\s+n-ins-00000010(\s+-){6}$/); // no point yet
    const json = await cli(["top", "--json"], [describe, ...monitorSteps()]);
    const parsed = JSON.parse(json.out) as { DescribeInstances: { TotalCount: number }; GetMonitorData: unknown[] };
    expect(parsed.DescribeInstances.TotalCount).toBe(11);
    expect(parsed.GetMonitorData).toHaveLength(12);
  });

  it("logs: pages through DescribeInstanceSerialLog, --tail, --json, and an unknown instance", async () => {
    const id = "ins-abcd1234";
    const piece = (offset: number, log: string, size: number, limit = 1024 * 1024): Step => ({
      action: "DescribeInstanceSerialLog",
      params: { InstanceId: id, Offset: offset, Limit: limit },
      answer: { InstanceId: id, Log: log, Offset: offset, NextOffset: offset + Buffer.byteLength(log), Size: size },
    });
    expect((await cli(["logs", id], [piece(0, "one\ntwo\n", 14), piece(8, "three\n", 14)])).out).toBe("one\ntwo\nthree\n");
    expect((await cli(["logs", id, "--tail", "2"], [piece(0, "o", 14, 1), piece(0, "one\ntwo\nthree\n", 14)])).out).toBe("two\nthree\n");
    const json = JSON.parse((await cli(["logs", id, "--json"], [piece(0, "one\ntwo\nthree\n", 14)])).out) as { Log: string; NextOffset: number };
    expect(json).toMatchObject({ Log: "one\ntwo\nthree\n", NextOffset: 14 });
    const notFound = new ApiCallError("DescribeInstanceSerialLog", "InvalidInstanceId.NotFound", "no such instance on this host: ins-abcd9999", "r-9");
    const missing = await cli(["logs", "ins-abcd9999"], [{ action: "DescribeInstanceSerialLog", answer: notFound }]);
    expect(missing.code).toBe(EXIT.API_ERROR);
    expect(missing.err).toMatch(/InvalidInstanceId\.NotFound: no such instance on this host: ins-abcd9999/);
  });

  it("logs -f prints what came after each second until interrupted; a terminal sees guest escapes as text", async () => {
    const id = "ins-abcd1234";
    const piece = (offset: number, log: string, size: number): Step => ({
      action: "DescribeInstanceSerialLog",
      params: { InstanceId: id, Offset: offset, Limit: 1024 * 1024 },
      answer: { Log: log, NextOffset: offset + Buffer.byteLength(log), Size: size },
    });
    const stop = new AbortController();
    let sleeps = 0;
    const r = await cli(["logs", id, "-f"], [piece(0, "boot\r\n", 6), piece(6, "", 6), piece(6, "\u001b[2Jlogin: ", 21)], {
      outTty: true,
      signal: stop.signal,
      onSleep: () => {
        if (++sleeps === 3) stop.abort();
      },
    });
    expect(r.code).toBe(EXIT.OK);
    expect(r.out).toBe("boot\n\\x1b[2Jlogin: ");
  });
});
