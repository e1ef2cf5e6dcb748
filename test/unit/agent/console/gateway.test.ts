import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { ConsoleAccess } from "../../../../agent/console/access.js";
import { ConsoleGateway } from "../../../../agent/console/gateway.js";
import { consolePage } from "../../../../agent/console/page.js";
import { ConsoleTokens } from "../../../../agent/console/tokens.js";
import { vncRoute } from "../../../../agent/console/vnc.js";
import { DomainError } from "../../../../agent/core/errors.js";
import type { InstanceEntry } from "../../../../agent/instances/registry.js";
import type { InstanceState } from "../../../../agent/model.js";

const A = "ins-aaaaaaaa";
const B = "ins-bbbbbbbb";
const quiet = { info: () => {}, warn: () => {}, debug: () => {} };

/** A registry of two instances whose states the test sets. */
function registry(states: Record<string, InstanceState>) {
  return {
    get: (id: string) => (id in states ? ({ record: { instanceId: id } } as unknown as InstanceEntry) : undefined),
    stateOf: (e: InstanceEntry) => states[e.record.instanceId]!,
  };
}

function open(url: string, origin?: string): Promise<{ ws: WebSocket } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, origin ? { origin } : {});
    ws.once("open", () => resolve({ ws }));
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.once("error", reject);
  });
}

describe("the console gateway and the VNC route", () => {
  let dir: string;
  let http: Server;
  let vnc: NetServer;
  let port: number;
  let tokens: ConsoleTokens;
  let access: ConsoleAccess;
  let gateway: ConsoleGateway;
  const states: Record<string, InstanceState> = {};
  /** What the fake VNC server received. */
  const received: string[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "cdh-console-"));
    Object.assign(states, { [A]: "RUNNING", [B]: "RUNNING" });
    received.length = 0;
    // A fake VNC server for A (B has none): greets as RFB 3.8, records what it gets.
    vnc = createNetServer((s: Socket) => {
      s.on("data", (d) => received.push(d.toString()));
      s.write("RFB 003.008\n");
    });
    await new Promise<void>((r) => vnc.listen(join(dir, `${A}.sock`), r));
    tokens = new ConsoleTokens({ registerSecret: () => {} });
    access = new ConsoleAccess({ tokens, registry: registry(states), tls: false });
    gateway = new ConsoleGateway({ tokens, logger: quiet, tls: false, extraOrigins: ["https://panel.example"] });
    gateway.route(vncRoute({ socketPath: (id) => join(dir, `${id}.sock`), unavailable: (id) => access.unavailable(id), logger: quiet }));
    const page = consolePage();
    http = createServer((req, res) => {
      if (!page.handle(req, res)) res.writeHead(404).end();
    });
    http.on("upgrade", (req, socket, head) => gateway.handleUpgrade(req, socket, head));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    port = (http.address() as { port: number }).port;
  });

  afterEach(async () => {
    await gateway.close();
    await new Promise((r) => http.close(r));
    await new Promise((r) => vnc.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const url = (id: string) => decodeURIComponent(access.issueUrl("vnc", id, `127.0.0.1:${port}`));

  it("issues percent-encoded ws URLs for RUNNING instances only, wss with TLS or the configured base", () => {
    const raw = access.issueUrl("vnc", A, `127.0.0.1:${port}`);
    expect(raw).not.toContain("/");
    expect(decodeURIComponent(raw)).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${port}/vnc\\?s=[A-Za-z0-9_-]{43}&InstanceId=${A}$`));
    const tls = new ConsoleAccess({ tokens, registry: registry(states), tls: true });
    expect(decodeURIComponent(tls.issueUrl("vnc", A, "agent.example:8620"))).toMatch(/^wss:\/\/agent\.example:8620\/vnc\?s=/);
    const based = new ConsoleAccess({ tokens, registry: registry(states), tls: true, urlBase: "wss://console.example" });
    expect(decodeURIComponent(based.issueUrl("vnc", A, "127.0.0.1:1"))).toMatch(/^wss:\/\/console\.example\/vnc\?s=/);
    states[B] = "STOPPED";
    expect(() => access.issueUrl("vnc", B, "127.0.0.1:1")).toThrow(expect.objectContaining({ kind: "InstanceState", detail: { state: "STOPPED" } }));
    expect(() => access.issueUrl("vnc", "ins-cccccccc", "127.0.0.1:1")).toThrow(DomainError);
    expect(() => access.issueUrl("vnc", A, "evil/host")).toThrow(expect.objectContaining({ kind: "BadValue" }));
  });

  it("bridges bytes both ways between the WebSocket and the VNC socket", async () => {
    // The listener goes on before the handshake ends: the greeting can come with the 101.
    const ws = new WebSocket(url(A));
    const greeting = new Promise<{ text: string; binary: boolean }>((resolve) => ws.once("message", (d, binary) => resolve({ text: String(d), binary })));
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    expect(await greeting).toEqual({ text: "RFB 003.008\n", binary: true });
    ws.send(Buffer.from("RFB 003.008\n"));
    await new Promise((res) => setTimeout(res, 100));
    expect(received.join("")).toBe("RFB 003.008\n");
    ws.close();
  });

  it("refuses an unknown path, a foreign Origin, a spent, wrong or unknown token, and a console that is not there", async () => {
    expect(await open(`ws://127.0.0.1:${port}/other?s=x`)).toEqual({ status: 404 });
    expect(await open(url(A), "https://evil.example")).toEqual({ status: 403 });
    const ok = await open(url(A), `http://127.0.0.1:${port}`);
    expect("ws" in ok).toBe(true);
    if ("ws" in ok) ok.ws.close();
    const panel = await open(url(A), "https://panel.example");
    expect("ws" in panel).toBe(true);
    if ("ws" in panel) panel.ws.close();
    const once = url(A);
    const first = await open(once);
    if ("ws" in first) first.ws.close();
    expect(await open(once)).toEqual({ status: 403 });
    expect(await open(url(A).replace(A, B))).toEqual({ status: 403 });
    expect(await open(`ws://127.0.0.1:${port}/vnc?s=${"x".repeat(43)}`)).toEqual({ status: 403 });
    // B has no VNC socket: the token is spent, the answer is 503.
    expect(await open(url(B))).toEqual({ status: 503 });
    const stale = url(A);
    states[A] = "STOPPED";
    expect(await open(stale)).toEqual({ status: 503 });
  });

  it("closes the older session of an instance when a new one opens (4001)", async () => {
    const one = await open(url(A));
    if (!("ws" in one)) throw new Error("refused");
    const closed = new Promise<number>((resolve) => one.ws.once("close", (code) => resolve(code)));
    const two = await open(url(A));
    expect(await closed).toBe(4001);
    expect(gateway.sessionCount).toBe(1);
    if ("ws" in two) two.ws.close();
  });

  it("serves the page with its security headers, noVNC's modules, and nothing outside them", async () => {
    const get = (path: string) => fetch(`http://127.0.0.1:${port}${path}`);
    const page = await get("/console/vnc.html?InstanceVncUrl=x");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    expect(await page.text()).toContain('src="vnc.js"');
    const rfb = await get("/console/novnc/core/rfb.js");
    expect(rfb.status).toBe(200);
    expect(rfb.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect((await get("/console/novnc/vendor/pako/lib/zlib/inflate.js")).status).toBe(200);
    for (const bad of ["/console/novnc/package.json", "/console/novnc/core/../../../package.json", "/console/novnc/%2e%2e/package.json", "/console/x.html"]) {
      expect((await get(bad)).status, bad).toBe(404);
    }
  });
});

describe("a console session on the API listener", () => {
  it("outlives the API's request and idle timeouts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cdh-console-api-"));
    const vnc = createNetServer((s: Socket) => s.on("data", (d) => s.write(d)));
    await new Promise<void>((r) => vnc.listen(join(dir, `${A}.sock`), r));
    const tokens = new ConsoleTokens({ registerSecret: () => {} });
    const gateway = new ConsoleGateway({ tokens, logger: quiet, tls: false });
    gateway.route(vncRoute({ socketPath: (id) => join(dir, `${id}.sock`), unavailable: () => undefined, logger: quiet }));
    const { createApiServer } = await import("../../../../agent/api/server.js");
    const api = createApiServer({
      listen: { host: "127.0.0.1", port: 0 },
      credentials: [],
      dispatch: async () => ({}),
      logger: { child: () => quiet as never, ...quiet } as never,
      limits: { requestTimeoutMs: 600, headersTimeoutMs: 300, idleTimeoutMs: 300 },
      sideRoutes: { upgrade: (req, socket, head) => gateway.handleUpgrade(req, socket, head), get: () => false, close: () => gateway.close() },
    });
    const { port } = await api.listen();
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/vnc?s=${tokens.issue("vnc", A).token}`);
      await new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("error", reject);
      });
      await new Promise((r) => setTimeout(r, 1_500));
      expect(ws.readyState).toBe(ws.OPEN);
      const echo = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
      ws.send(Buffer.from("still here"));
      expect(await echo).toBe("still here");
      // close() ends the session first, then the listener.
      const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
      await api.close();
      expect(await closed).toBe(1001);
    } finally {
      await new Promise((r) => vnc.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
