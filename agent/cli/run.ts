/**
 * Runs one operator command against the agent's API and says how it went as an exit code
 * (args.ts EXIT). Output goes through `io` (tests capture it); nothing here reads
 * process.env or argv (agent/cli.ts does).
 *
 * Human output: tables and key/value lists (render.ts). `--json`: the API's Response object as
 * it came (for listings that take several pages, the first page's Response with the set
 * holding every page's items), pretty-printed, on stdout.
 * Errors: `cdh-agent: <Action>: <Code>: <Message> (RequestId …)` on stderr, as the API gave them.
 */
import { EXIT, type OperatorCommand, type OperatorInvocation } from "./args.js";
import { runConsole, type ConsoleTerminal } from "./console.js";
import { AgentUnreachableError, ApiCallError, type ApiClient, type ApiResponse } from "./client.js";
import { cell, gib, progressBar, renderFields, renderTable, type Column } from "./render.js";

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** stderr is a terminal: progress redraws one line. */
  readonly errIsTty: boolean;
  /** stdout is a terminal: `top` redraws the screen until interrupted. */
  readonly outIsTty?: boolean;
  sleep(ms: number): Promise<void>;
  /** ms since the epoch. */
  now(): number;
}

export interface RunDeps {
  client: ApiClient;
  /** The agent's data directory (config data_dir). */
  dataDir: string;
  io: CliIo;
  /** stdin/stdout for `console` (absent: `console` cannot run). */
  terminal?: ConsoleTerminal;
  /** Ends `logs -f` (Ctrl-C): the command then exits 0. */
  signal?: AbortSignal;
  /** Between polls of a wait, ms. Default 1000. */
  pollMs?: number;
}

type Row = Record<string, unknown>;
const PAGE = 100;

/** Every item of a paged Describe action, with the first page's Response as it came. */
async function describeAll(client: ApiClient, action: string, setKey: string, params: Row = {}): Promise<{ response: ApiResponse; items: Row[] }> {
  const first = await client.call(action, { ...params, Offset: 0, Limit: PAGE });
  const items = [...((first[setKey] as Row[] | undefined) ?? [])];
  const total = typeof first.TotalCount === "number" ? first.TotalCount : items.length;
  while (items.length < total) {
    const next = await client.call(action, { ...params, Offset: items.length, Limit: PAGE });
    const more = (next[setKey] as Row[] | undefined) ?? [];
    if (more.length === 0) break; // the set shrank meanwhile
    items.push(...more);
  }
  return { response: { ...first, [setKey]: items }, items };
}

const INSTANCE_COLUMNS: Column<Row>[] = [
  { header: "ID", value: (r) => r.InstanceId },
  { header: "NAME", value: (r) => r.InstanceName },
  { header: "STATE", value: (r) => r.InstanceState },
  { header: "TYPE", value: (r) => r.InstanceType },
  { header: "CPU", value: (r) => r.CPU, right: true },
  { header: "MEM", value: (r) => (typeof r.Memory === "number" ? `${r.Memory}G` : r.Memory), right: true },
  { header: "IP", value: (r) => r.PrivateIpAddresses },
  { header: "IMAGE", value: (r) => r.ImageId },
  { header: "LAST OPERATION", value: (r) => (r.LatestOperation ? `${String(r.LatestOperation)} ${cell(r.LatestOperationState)}` : "") },
];

const IMAGE_COLUMNS: Column<Row>[] = [
  { header: "ID", value: (r) => r.ImageId },
  { header: "NAME", value: (r) => r.ImageName },
  { header: "STATE", value: (r) => r.ImageState },
  { header: "SIZE", value: (r) => gib(r.ImageSize), right: true },
  { header: "OS", value: (r) => r.OsName },
  { header: "PROGRESS", value: (r) => (r.ImageState === "NORMAL" ? "" : `${cell(r.SyncPercent)}%`), right: true },
  { header: "CREATED", value: (r) => r.CreatedTime },
];

const ACTIONS = { start: "StartInstances", stop: "StopInstances", reboot: "RebootInstances", terminate: "TerminateInstances" } as const;

function print(io: CliIo, json: boolean, response: ApiResponse, human: () => string): void {
  io.out(json ? JSON.stringify(response, null, 2) + "\n" : human());
}

async function instanceOf(client: ApiClient, id: string): Promise<{ response: ApiResponse; instance: Row | undefined }> {
  const response = await client.call("DescribeInstances", { InstanceIds: [id] });
  return { response, instance: ((response.InstanceSet as Row[] | undefined) ?? [])[0] };
}

async function run(command: OperatorCommand, json: boolean, deps: RunDeps): Promise<number> {
  const { client, io } = deps;
  const pollMs = deps.pollMs ?? 1000;
  switch (command.kind) {
    case "instances": {
      const { response, items } = await describeAll(client, "DescribeInstances", "InstanceSet");
      print(io, json, response, () => (items.length ? renderTable(INSTANCE_COLUMNS, items) : "no instances\n"));
      return EXIT.OK;
    }
    case "instance": {
      const { response, instance } = await instanceOf(client, command.id);
      if (!instance) {
        if (json) io.out(JSON.stringify(response, null, 2) + "\n");
        io.err(`cdh-agent: no instance ${command.id} on this host\n`);
        return EXIT.API_ERROR;
      }
      print(io, json, response, () => renderFields(instance));
      return EXIT.OK;
    }
    case "power": {
      const action = ACTIONS[command.action];
      const params: Row = { InstanceIds: command.ids };
      if (command.hard) params.StopType = "HARD";
      const response = await client.call(action, params);
      const requestId = String(response.RequestId ?? "");
      print(io, json, response, () => `${action}: accepted for ${command.ids.join(", ")} (RequestId ${requestId})\n`);
      if (!command.wait) return EXIT.OK;
      return waitForOperation(command, requestId, deps, pollMs);
    }
    case "images": {
      const { response, items } = await describeAll(client, "DescribeImages", "ImageSet");
      print(io, json, response, () => (items.length ? renderTable(IMAGE_COLUMNS, items) : "no images\n"));
      return EXIT.OK;
    }
    case "import": {
      const response = await client.call("ImportImage", {
        ImageUrl: command.imageUrl,
        ImageName: command.imageName,
        OsType: command.osType,
        OsVersion: command.osVersion,
        Architecture: "x86_64",
      });
      const imageId = String(response.ImageId ?? "");
      if (!command.wait) {
        print(io, json, response, () => `ImportImage: ${imageId} importing (RequestId ${cell(response.RequestId)})\n`);
        return EXIT.OK;
      }
      if (!json) io.out(`ImportImage: ${imageId}\n`);
      return waitForImport(imageId, command.timeoutS, json, deps, Math.min(pollMs, 500));
    }
    case "host": {
      const response = await client.call("DescribeHosts", {});
      const hosts = (response.HostSet as Row[] | undefined) ?? [];
      print(io, json, response, () =>
        hosts
          .map((h) => {
            const r = (h.HostResource ?? {}) as Row;
            const ids = (h.InstanceIds as unknown[] | undefined) ?? [];
            return (
              renderFields({ HostId: h.HostId, HostName: h.HostName, HostType: h.HostType, HostState: h.HostState, HostIp: h.HostIp, Zone: (h.Placement as Row | undefined)?.Zone, Instances: ids.length }) +
              "\n" +
              renderTable<[string, unknown, unknown, string]>(
                [
                  { header: "RESOURCE", value: (x) => x[0] },
                  { header: "TOTAL", value: (x) => x[1], right: true },
                  { header: "AVAILABLE", value: (x) => x[2], right: true },
                  { header: "", value: (x) => x[3] },
                ],
                [
                  ["CPU", r.CpuTotal, r.CpuAvailable, "vCPU"],
                  ["memory", r.MemTotal, r.MemAvailable, "GiB"],
                  ["disk", r.DiskTotal, r.DiskAvailable, `GiB ${cell(r.DiskType)}`],
                ],
              )
            );
          })
          .join("\n"),
      );
      return EXIT.OK;
    }
    case "top":
      return top(command, json, deps);
    case "logs":
      return logs(command, json, deps);
    case "console":
      if (!deps.terminal) {
        io.err("cdh-agent: console needs a terminal\n");
        return EXIT.USAGE;
      }
      return runConsole(client, command.id, deps.terminal);
  }
}

/** Largest piece asked for at once; `--tail` looks at the log's last this many bytes. */
const LOG_PIECE = 1024 * 1024;

/**
 * Guest output made safe for a terminal: line ends as `\n`, other control characters shown as
 * `\xNN` (a guest's escape sequences must not move the operator's cursor or retitle the window).
 */
export function terminalSafe(text: string): string {
  return text.replace(/\r\n/g, "\n").replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** `logs`: DescribeInstanceSerialLog piece by piece (whole, or --tail's last lines), then with -f every second what came. */
async function logs(command: Extract<OperatorCommand, { kind: "logs" }>, json: boolean, deps: RunDeps): Promise<number> {
  const { client, io } = deps;
  const read = async (offset: number, limit = LOG_PIECE) => {
    const r = await client.call("DescribeInstanceSerialLog", { InstanceId: command.id, Offset: offset, Limit: limit });
    return { response: r, text: String(r.Log ?? ""), next: Number(r.NextOffset ?? offset), size: Number(r.Size ?? 0) };
  };
  const show = (text: string) => io.out(io.outIsTty ? terminalSafe(text) : text);
  let start = 0;
  if (command.tail !== undefined) start = Math.max(0, (await read(0, 1)).size - LOG_PIECE);
  let text = "";
  let offset = start;
  let first: ApiResponse | undefined;
  for (;;) {
    const piece = await read(offset);
    first ??= piece.response;
    text += piece.text;
    if (piece.next <= offset || piece.next >= piece.size) {
      offset = piece.next;
      break;
    }
    offset = piece.next;
  }
  if (command.tail !== undefined) {
    // From a piece's middle the first line may be partial: it is dropped unless the log starts there.
    const lines = text.split("\n");
    const trailing = text.endsWith("\n") ? 1 : 0;
    const whole = start === 0 ? lines : lines.slice(1);
    text = whole.slice(Math.max(0, whole.length - trailing - command.tail)).join("\n");
  }
  if (json) {
    io.out(JSON.stringify({ ...first, Offset: start, NextOffset: offset, Log: text }, null, 2) + "\n");
    return EXIT.OK;
  }
  show(text);
  if (!command.follow) return EXIT.OK;
  while (!deps.signal?.aborted) {
    await io.sleep(1000);
    if (deps.signal?.aborted) break;
    const piece = await read(offset);
    if (piece.size < offset) {
      io.err(`\ncdh-agent: ${command.id}'s console log was replaced; reading it from its start\n`);
      offset = 0;
      continue;
    }
    if (piece.text) show(piece.text);
    offset = piece.next;
  }
  return EXIT.OK;
}

/** What `top` shows, each the latest point of one Monitor metric (period 10 s). */
const TOP_METRICS = ["CPUUsage", "MemUsage", "DiskReadTraffic", "DiskWriteTraffic", "LanIntraffic", "LanOuttraffic"] as const;
/** GetMonitorData takes at most 10 instances a request. */
const MONITOR_BATCH = 10;

/** The running instances and their latest rates, redrawn every interval (`count` times, or until interrupted on a terminal). */
async function top(command: Extract<OperatorCommand, { kind: "top" }>, json: boolean, deps: RunDeps): Promise<number> {
  const { client, io } = deps;
  const rounds = command.count ?? (io.outIsTty && !json ? Number.POSITIVE_INFINITY : 1);
  for (let round = 0; round < rounds; round++) {
    if (round > 0) await io.sleep(command.intervalS * 1000);
    const { response, items } = await describeAll(client, "DescribeInstances", "InstanceSet", { Filters: [{ Name: "instance-state", Values: ["RUNNING"] }] });
    const ids = items.map((i) => String(i.InstanceId));
    const start = new Date(io.now() - 120_000).toISOString().replace(/\.\d+Z$/, "Z");
    const latest = new Map<string, Record<string, number | undefined>>(ids.map((id) => [id, {}]));
    const monitor: ApiResponse[] = [];
    for (const metric of TOP_METRICS) {
      for (let i = 0; i < ids.length; i += MONITOR_BATCH) {
        const batch = ids.slice(i, i + MONITOR_BATCH);
        const r = await client.call("GetMonitorData", {
          Namespace: "QCE/CVM",
          MetricName: metric,
          Period: 10,
          StartTime: start,
          Instances: batch.map((id) => ({ Dimensions: [{ Name: "InstanceId", Value: id }] })),
        });
        monitor.push(r);
        for (const point of (r.DataPoints as Row[] | undefined) ?? []) {
          const id = String(((point.Dimensions as Row[] | undefined) ?? [])[0]?.Value ?? "");
          const values = (point.Values as unknown[] | undefined) ?? [];
          const last = values[values.length - 1];
          const row = latest.get(id);
          if (row && typeof last === "number") row[metric] = last;
        }
      }
    }
    if (json) {
      io.out(JSON.stringify({ DescribeInstances: response, GetMonitorData: monitor }, null, 2) + "\n");
      continue;
    }
    const rows = items.map((i) => ({ i, m: latest.get(String(i.InstanceId)) ?? {} }));
    const num = (v: number | undefined, digits = 1) => (v === undefined ? "-" : v.toFixed(digits));
    const table = rows.length
      ? renderTable<(typeof rows)[number]>(
          [
            { header: "ID", value: (r) => r.i.InstanceId },
            { header: "NAME", value: (r) => r.i.InstanceName },
            { header: "CPU%", value: (r) => num(r.m.CPUUsage), right: true },
            { header: "MEM%", value: (r) => num(r.m.MemUsage), right: true },
            { header: "DISK R KB/s", value: (r) => num(r.m.DiskReadTraffic), right: true },
            { header: "DISK W KB/s", value: (r) => num(r.m.DiskWriteTraffic), right: true },
            { header: "NET IN Mbps", value: (r) => num(r.m.LanIntraffic, 3), right: true },
            { header: "NET OUT Mbps", value: (r) => num(r.m.LanOuttraffic, 3), right: true },
          ],
          rows,
        )
      : "no running instances\n";
    io.out((rounds > 1 && io.outIsTty ? "\x1b[H\x1b[2J" : "") + table);
  }
  return EXIT.OK;
}

/** Until each instance's latest operation (ours, by RequestId) settled; terminate: until it is gone. */
async function waitForOperation(command: Extract<OperatorCommand, { kind: "power" }>, requestId: string, deps: RunDeps, pollMs: number): Promise<number> {
  const { client, io } = deps;
  const deadline = io.now() + command.timeoutS * 1000;
  const pending = new Set(command.ids);
  let failed = false;
  while (pending.size) {
    const r = await client.call("DescribeInstances", { InstanceIds: [...pending] });
    const seen = new Map(((r.InstanceSet as Row[] | undefined) ?? []).map((i) => [String(i.InstanceId), i]));
    for (const id of [...pending]) {
      const i = seen.get(id);
      if (!i) {
        if (command.action !== "terminate") {
          io.err(`cdh-agent: ${id} is gone\n`);
          failed = true;
        }
        pending.delete(id);
        continue;
      }
      if (i.LatestOperationRequestId !== requestId || i.LatestOperationState === "OPERATING") continue;
      if (command.action === "terminate" && i.LatestOperationState === "SUCCESS") continue; // until it is gone
      pending.delete(id);
      if (i.LatestOperationState === "FAILED") {
        failed = true;
        io.err(`cdh-agent: ${id}: ${cell(i.LatestOperation)} failed: ${cell(i.LatestOperationCode)}: ${cell(i.LatestOperationErrorMsg)}\n`);
      } else {
        io.err(`${id}: ${cell(i.InstanceState)}\n`);
      }
    }
    if (!pending.size) break;
    if (io.now() >= deadline) {
      io.err(`cdh-agent: still waiting after ${command.timeoutS} s for ${[...pending].join(", ")}\n`);
      return EXIT.TIMEOUT;
    }
    await io.sleep(pollMs);
  }
  return failed ? EXIT.API_ERROR : EXIT.OK;
}

/** DescribeImages' SyncPercent as a progress bar (stderr) until NORMAL, a failure or the deadline. */
async function waitForImport(imageId: string, timeoutS: number, json: boolean, deps: RunDeps, pollMs: number): Promise<number> {
  const { client, io } = deps;
  const deadline = io.now() + timeoutS * 1000;
  let shown = -1;
  for (;;) {
    const response = await client.call("DescribeImages", { ImageIds: [imageId] });
    const image = ((response.ImageSet as Row[] | undefined) ?? [])[0];
    if (!image) {
      io.err(`\ncdh-agent: the image ${imageId} is gone\n`);
      return EXIT.API_ERROR;
    }
    const percent = typeof image.SyncPercent === "number" ? image.SyncPercent : 0;
    const state = String(image.ImageState);
    if (percent !== shown || state !== "IMPORTING") {
      shown = percent;
      const bar = `${imageId} ${progressBar(percent)} ${state}`;
      if (io.errIsTty) io.err(`\r${bar}`);
      else if (!json) io.err(`${bar}\n`);
    }
    if (state !== "IMPORTING") {
      if (io.errIsTty) io.err("\n");
      if (json) io.out(JSON.stringify(response, null, 2) + "\n");
      if (state === "NORMAL") {
        if (!json) io.out(`${imageId} NORMAL\n`);
        return EXIT.OK;
      }
      io.err(`cdh-agent: the import of ${imageId} ended ${state}: ${cell(image.ErrorCode)}: ${cell(image.ErrorMessage)}\n`);
      return EXIT.API_ERROR;
    }
    if (io.now() >= deadline) {
      if (io.errIsTty) io.err("\n");
      io.err(`cdh-agent: ${imageId} is still importing after ${timeoutS} s (${percent}%); it goes on in the agent\n`);
      return EXIT.TIMEOUT;
    }
    await io.sleep(pollMs);
  }
}

/** Runs the command; API and connection errors become their message on stderr and their exit code. */
export async function runOperator(invocation: OperatorInvocation, deps: RunDeps): Promise<number> {
  try {
    return await run(invocation.command, invocation.json, deps);
  } catch (error) {
    if (error instanceof ApiCallError) {
      deps.io.err(`cdh-agent: ${error.action}: ${error.code}: ${error.apiMessage}${error.requestId ? ` (RequestId ${error.requestId})` : ""}\n`);
      return EXIT.API_ERROR;
    }
    if (error instanceof AgentUnreachableError) {
      deps.io.err(`cdh-agent: ${error.message}\n`);
      return EXIT.UNREACHABLE;
    }
    throw error;
  }
}
