/**
 * The API edge under hostile or careless clients, over raw sockets: paths other than
 * /, clients that leave mid-body, slow bodies, connection caps, the order in which
 * the head is checked before any body byte is read, the unverified-body budget, and
 * idle connections.
 */
import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createApiServer, type ApiLimits, type ApiServer } from "../../../agent/api/server.js";
import { signTc3 } from "../../../agent/api/tc3.js";
import { recordingLogger, type LogLine } from "../../support/log-capture.js";

const SECRET_ID = "AKIDtestagent0001";
const SECRET_KEY = "test-secret-key-0001";


let api: ApiServer | undefined;
let port = 0;
let logs: LogLine[] = [];
let dispatched = 0;
let dispatchDelayMs = 0;
const sockets: Socket[] = [];

async function start(limits: Partial<ApiLimits> = {}): Promise<void> {
  logs = [];
  dispatched = 0;
  dispatchDelayMs = 0;
  api = createApiServer({
    listen: { host: "127.0.0.1", port: 0 },
    credentials: [{ secretId: SECRET_ID, secretKey: SECRET_KEY }],
    dispatch: async (command) => {
      dispatched++;
      if (dispatchDelayMs > 0) await new Promise((r) => setTimeout(r, dispatchDelayMs));
      return { Echo: command.action };
    },
    logger: recordingLogger(logs),
    limits,
  });
  port = (await api.listen()).port;
}

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await api?.close();
  api = undefined;
});

function open(localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, ...(localAddress ? { localAddress } : {}) }, () => resolve(s));
    s.on("error", reject);
    sockets.push(s);
  });
}

interface Reply {
  text: string;
  closed: boolean;
}

/** Collects what the server sends until it closes or `ms` pass. */
function collect(s: Socket, ms = 3000): Promise<Reply> {
  return new Promise((resolve) => {
    let text = "";
    s.on("data", (d: Buffer) => (text += d.toString("latin1")));
    const timer = setTimeout(() => resolve({ text, closed: false }), ms);
    s.once("close", () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
  });
}

/** Waits until the server has sent a whole envelope on `s`. */
function firstAnswer(s: Socket, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms; got ${JSON.stringify(text)}`)), ms);
    s.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      const m = /content-length: (\d+)\r\n/i.exec(text);
      const end = text.indexOf("\r\n\r\n");
      if (m && end >= 0 && text.length >= end + 4 + Number(m[1])) {
        clearTimeout(timer);
        resolve(text);
      }
    });
  });
}

function codeOf(answer: string): string | undefined {
  const body = answer.slice(answer.indexOf("\r\n\r\n") + 4);
  const json = JSON.parse(body) as { Response: { Error?: { Code: string } } };
  return json.Response.Error?.Code;
}

/** A signed request head for `body` (Content-Length may be overridden). */
function head(body: string, o: { path?: string; secretId?: string; timestamp?: number; contentLength?: number | null } = {}): string {
  const timestamp = o.timestamp ?? Math.floor(Date.now() / 1000);
  const auth = signTc3({
    secretId: o.secretId ?? SECRET_ID,
    secretKey: SECRET_KEY,
    service: "127",
    host: "127.0.0.1",
    timestamp,
    payload: body,
    contentType: "application/json",
  });
  const lines = [
    `POST ${o.path ?? "/"} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    "Content-Type: application/json",
    "X-TC-Action: DescribeInstances",
    "X-TC-Version: 2017-03-12",
    `X-TC-Timestamp: ${timestamp}`,
    `Authorization: ${auth}`,
  ];
  if (o.contentLength === null) lines.push("Transfer-Encoding: chunked");
  else lines.push(`Content-Length: ${o.contentLength ?? Buffer.byteLength(body)}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

const errorsLogged = () => logs.filter((l) => l.level === "error");
const internalErrors = () => logs.filter((l) => l.obj["code"] === "InternalError");

describe("paths other than /", () => {
  it.each(["//", "///", "/x", "//x/../", "/?a=b/../"])("POST %s is InvalidAction (404), never InternalError", async (path) => {
    await start();
    const s = await open();
    const answer = firstAnswer(s);
    s.write(head("{}", { path: path === "/?a=b/../" ? "/x?a=b" : path }) + "{}");
    const text = await answer;
    expect(text.startsWith("HTTP/1.1 404")).toBe(true);
    expect(codeOf(text)).toBe("InvalidAction");
    expect(errorsLogged()).toEqual([]);
    expect(internalErrors()).toEqual([]);
    expect(dispatched).toBe(0);
  });
});

describe("clients that leave", () => {
  it("a client that disconnects mid-body is a debug line, not an error nor InternalError", async () => {
    await start();
    const body = JSON.stringify({ Limit: 5, Filters: [{ Name: "instance-name", Values: ["x".repeat(5000)] }] });
    const s = await open();
    s.write(head(body) + body.slice(0, 100));
    await new Promise((r) => setTimeout(r, 100));
    s.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(errorsLogged()).toEqual([]);
    expect(internalErrors()).toEqual([]);
    expect(logs.some((l) => l.level === "debug" && l.msg === "the client left before its request was read")).toBe(true);
    expect(dispatched).toBe(0);
  });

  it("a slow body that hits the request timeout is a client event (408), not InternalError", async () => {
    await start({ requestTimeoutMs: 400, headersTimeoutMs: 400 });
    const body = JSON.stringify({ Limit: 5 });
    const s = await open();
    const reply = collect(s, 4000);
    s.write(head(body) + body.slice(0, 3));
    const { text, closed } = await reply;
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(errorsLogged()).toEqual([]);
    expect(internalErrors()).toEqual([]);
    expect(dispatched).toBe(0);
  });
});

describe("the head is checked before any body byte is read", () => {
  it.each([
    ["an unknown SecretId", { secretId: "AKIDnobody" }, "AuthFailure.SecretIdNotFound"],
    ["a stale timestamp", { timestamp: Math.floor(Date.now() / 1000) - 900 }, "AuthFailure.SignatureExpire"],
    ["no Content-Length (chunked)", { contentLength: null }, "MissingParameter"],
    ["a Content-Length over the limit", { contentLength: 2 * 1024 * 1024 }, "InvalidParameter"],
  ] as const)("%s is answered at once and the connection closed, the body unread", async (_what, o, code) => {
    await start();
    const s = await open();
    const reply = collect(s, 3000);
    // 1 MiB declared, 10 bytes sent: an answer can only come from the head.
    s.write(head("{}", { contentLength: 1_000_000, ...o }) + "0123456789");
    const { text, closed } = await reply;
    expect(codeOf(text)).toBe(code);
    expect(text.toLowerCase()).toContain("connection: close");
    expect(closed).toBe(true);
    expect(dispatched).toBe(0);
  });

  it("caps the bytes of unverified bodies held at once (RequestLimitExceeded), and frees them", async () => {
    await start({ unverifiedBodyBudgetBytes: 100_000 });
    const body = JSON.stringify({ Limit: 5, Filters: [{ Name: "instance-name", Values: ["x".repeat(70_000)] }] });
    const first = await open();
    const firstAnswerP = firstAnswer(first, 5000);
    first.write(head(body) + body.slice(0, 1000));
    await new Promise((r) => setTimeout(r, 150));
    const second = await open();
    const secondReply = collect(second, 3000);
    second.write(head(body) + body.slice(0, 1000));
    const refused = await secondReply;
    expect(codeOf(refused.text)).toBe("RequestLimitExceeded");
    expect(refused.text).toContain("Retry-After: 1");
    expect(refused.closed).toBe(true);
    first.write(body.slice(1000));
    // The first is answered: its parameters are checked (a filter value over 60 characters).
    const firstText = await firstAnswerP;
    expect(codeOf(firstText)).not.toBe("RequestLimitExceeded");
    expect(codeOf(firstText)).not.toBe("InternalError");
    // The budget is free again.
    const third = await open();
    const thirdAnswer = firstAnswer(third);
    third.write(head("{}") + "{}");
    expect(codeOf(await thirdAnswer)).toBeUndefined();
  });
});

describe("connection caps", () => {
  it("refuses connections over the overall cap with RequestLimitExceeded and closes them", async () => {
    await start({ maxConnections: 3, maxConnectionsPerSource: 10 });
    const held = [await open(), await open(), await open()];
    await new Promise((r) => setTimeout(r, 50));
    expect(api!.connectionCount).toBe(3);
    const extra = await open();
    const reply = collect(extra);
    extra.write(head("{}") + "{}");
    const { text, closed } = await reply;
    expect(codeOf(text)).toBe("RequestLimitExceeded");
    expect(closed).toBe(true);
    expect(dispatched).toBe(0);
    // One of the held connections still works, and a freed slot is usable again.
    const answer = firstAnswer(held[0]!);
    held[0]!.write(head("{}") + "{}");
    expect(codeOf(await answer)).toBeUndefined();
    held[1]!.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const again = await open();
    const againAnswer = firstAnswer(again);
    again.write(head("{}") + "{}");
    expect(codeOf(await againAnswer)).toBeUndefined();
  });

  it("refuses connections over the per-source cap while other sources get in", async () => {
    await start({ maxConnections: 100, maxConnectionsPerSource: 2 });
    await open("127.0.0.1");
    await open("127.0.0.1");
    const third = await open("127.0.0.1");
    const reply = collect(third);
    third.write(head("{}") + "{}");
    expect(codeOf((await reply).text)).toBe("RequestLimitExceeded");
    const other = await open("127.0.0.2");
    const answer = firstAnswer(other);
    other.write(head("{}") + "{}");
    expect(codeOf(await answer)).toBeUndefined();
  });

  it("closes a refused connection that never sends a request after the grace period", async () => {
    await start({ maxConnections: 1, refusalGraceMs: 200 });
    await open();
    const extra = await open();
    const { closed } = await collect(extra, 2000);
    expect(closed).toBe(true);
  });
});

describe("timeouts", () => {
  it("closes a connection that sends nothing after the idle timeout", async () => {
    await start({ idleTimeoutMs: 300, headersTimeoutMs: 5000 });
    const s = await open();
    const started = Date.now();
    const { closed } = await collect(s, 3000);
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("keeps a connection whose request is being dispatched past the idle timeout", async () => {
    await start({ idleTimeoutMs: 300 });
    dispatchDelayMs = 900;
    const s = await open();
    const answer = firstAnswer(s, 4000);
    s.write(head("{}") + "{}");
    const text = await answer;
    expect(text.startsWith("HTTP/1.1 200")).toBe(true);
    expect(codeOf(text)).toBeUndefined();
  });
});
