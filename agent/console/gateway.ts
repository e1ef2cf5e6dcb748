/**
 * The console gateway: the WebSocket upgrade route of the API listener (agent/api/server.ts
 * hands it every `Upgrade: websocket` request). A console URL is `ws(s)://<api host>/<path>?s=<token>&InstanceId=<id>`;
 * each path is a route of one console kind (`/vnc`: agent/console/vnc.ts; `/serial`: serial.ts).
 *
 * Order of checks, all before the WebSocket handshake is answered (a refusal is a plain HTTP
 * status, then the connection closes): the path names a route (404) → the Origin is allowed
 * (403; the rule in `originAllowed`) → the token is spent (consume(): once, unexpired, this
 * route's kind; 403) → the route prepares its session (e.g. connects the VNC socket; 503 when
 * the console is not there) → the handshake → the route's attach().
 *
 * One session per instance and kind: a new session closes the one before it (close code 4001),
 * as the seeds' console is exclusive. Nothing here logs a URL: the token is in it.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { ConsoleKind, ConsoleTokens } from "./tokens.js";

export interface ConsoleLogger {
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  debug?(obj: Record<string, unknown>, msg?: string): void;
}

/** Who opened a session (what a route is told). */
export interface ConsoleSession {
  readonly kind: ConsoleKind;
  readonly instanceId: string;
  /** The client's address (log lines). */
  readonly remote: string;
}

/** A session a route made ready before the handshake: attach() takes the WebSocket, abort() drops it unused. */
export interface PreparedSession {
  attach(ws: WebSocket): void;
  abort(): void;
}

/** A route's reason to refuse a session after the token was spent (the console is not there). */
export class ConsoleUnavailable extends Error {
  override readonly name = "ConsoleUnavailable";
}

export interface ConsoleRoute {
  /** The URL path, e.g. "/vnc". */
  readonly path: string;
  readonly kind: ConsoleKind;
  /** Makes the session ready (throw ConsoleUnavailable to refuse with 503 and its message). */
  prepare(session: ConsoleSession): Promise<PreparedSession>;
}

export interface ConsoleGatewayOptions {
  readonly tokens: ConsoleTokens;
  readonly logger: ConsoleLogger;
  /** Whether the API listener is TLS (the page's origin is then https://, the URL wss://). */
  readonly tls: boolean;
  /** Origins allowed besides the URL's own (config console_allowed_origins), e.g. "https://panel.example". */
  readonly extraOrigins?: readonly string[];
  /** Largest WebSocket message accepted from a client, bytes. Default 1 MiB. */
  readonly maxPayloadBytes?: number;
}

/** Close code sent to a session that a newer one for the same instance replaced. */
export const CLOSE_REPLACED = 4001;
/** Close code when the instance's console went away (VNC server closed, instance stopped). */
export const CLOSE_CONSOLE_GONE = 4002;
/** Close code when the agent stops. */
export const CLOSE_AGENT_STOPPING = 1001;

function sourceOf(address: string | undefined): string {
  if (address === undefined) return "?";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** `https://Host:443` → `https://host`; undefined for anything that is not an http(s) origin. */
export function normalizeOrigin(origin: string): string | undefined {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  return url.origin.toLowerCase();
}

/**
 * The Origin rule. A browser sends Origin on every WebSocket handshake; it must be the origin of
 * the URL's own host (the Host header of the handshake, with https when the API is TLS, http
 * otherwise: the console page the agent serves has exactly that origin) or one of the configured
 * extra origins. A handshake without Origin is not a browser's (a browser always sends one): it
 * is let through to the token check, since the token, not the Origin, is what admits a client;
 * the Origin check stops another site's page from driving a console in the owner's browser.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, tls: boolean, extra: ReadonlySet<string>): boolean {
  if (origin === undefined) return true;
  const normalized = normalizeOrigin(origin);
  if (normalized === undefined) return false;
  if (extra.has(normalized)) return true;
  if (host === undefined || host === "") return false;
  const own = normalizeOrigin(`${tls ? "https" : "http"}://${host}`);
  return own !== undefined && own === normalized;
}

export class ConsoleGateway {
  private readonly wss: WebSocketServer;
  private readonly routes = new Map<string, ConsoleRoute>();
  private readonly extraOrigins: ReadonlySet<string>;
  /** `kind:instanceId` → the open session. */
  private readonly open = new Map<string, WebSocket>();
  private closing = false;

  constructor(private readonly o: ConsoleGatewayOptions) {
    this.extraOrigins = new Set((o.extraOrigins ?? []).map((x) => normalizeOrigin(x) ?? x.toLowerCase()));
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: o.maxPayloadBytes ?? 1024 * 1024,
      perMessageDeflate: false,
      clientTracking: true,
      // noVNC may offer "binary" (older versions) or nothing; the frames are binary either way.
      handleProtocols: (protocols) => (protocols.has("binary") ? "binary" : false),
    });
  }

  /** Adds a route (vnc.ts, serial.ts). */
  route(route: ConsoleRoute): void {
    if (this.routes.has(route.path)) throw new Error(`console route ${route.path} is already taken`);
    this.routes.set(route.path, route);
  }

  /** Sessions open now (tests, metrics). */
  get sessionCount(): number {
    return this.open.size;
  }

  /** The API listener's `upgrade` event. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => socket.destroy());
    void this.upgrade(req, socket, head).catch((error: unknown) => {
      this.o.logger.warn({ err: error, remote: sourceOf(req.socket.remoteAddress) }, "console handshake failed");
      refuse(socket, 500, "internal error");
    });
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const remote = sourceOf(req.socket.remoteAddress);
    const target = req.url ?? "/";
    const q = target.indexOf("?");
    const path = q < 0 ? target : target.slice(0, q);
    const route = this.routes.get(path);
    const log = (reason: string, extra: Record<string, unknown> = {}) =>
      this.o.logger.info({ remote, path: route ? path : "(other)", reason, ...extra }, "console session refused");
    if (this.closing) return refuse(socket, 503, "the agent is stopping");
    if (!route) {
      log("no such console route");
      return refuse(socket, 404, "no console at this path");
    }
    if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket" || req.method !== "GET") {
      log("not a WebSocket handshake");
      return refuse(socket, 400, "a console URL takes a WebSocket handshake");
    }
    const origin = req.headers.origin;
    if (!originAllowed(origin, req.headers.host, this.o.tls, this.extraOrigins)) {
      log("origin not allowed", { origin: origin?.slice(0, 200) });
      return refuse(socket, 403, "origin not allowed");
    }
    const query = new URLSearchParams(q < 0 ? "" : target.slice(q + 1));
    const token = query.get("s") ?? "";
    // InstanceId, when the URL names one (DescribeInstanceVncUrl's do), must be the token's.
    const spent = this.o.tokens.consume(token, route.kind, query.get("InstanceId") ?? undefined);
    if (!spent.ok) {
      log(`token ${spent.reason}`);
      return refuse(socket, 403, "the console URL is not valid (used, expired, or not this console's); ask for a new one");
    }
    const session: ConsoleSession = { kind: route.kind, instanceId: spent.instanceId, remote };
    let prepared: PreparedSession;
    try {
      prepared = await route.prepare(session);
    } catch (error) {
      if (error instanceof ConsoleUnavailable) {
        log("console unavailable", { instanceId: session.instanceId, detail: error.message });
        return refuse(socket, 503, error.message);
      }
      throw error;
    }
    if (this.closing || socket.destroyed) {
      prepared.abort();
      return void socket.destroy();
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const key = `${session.kind}:${session.instanceId}`;
      const before = this.open.get(key);
      this.open.set(key, ws);
      if (before) before.close(CLOSE_REPLACED, "another console session was opened for this instance");
      ws.once("close", () => {
        if (this.open.get(key) === ws) this.open.delete(key);
        this.o.logger.info({ remote, kind: session.kind, instanceId: session.instanceId }, "console session closed");
      });
      this.o.logger.info({ remote, kind: session.kind, instanceId: session.instanceId, replaced: before !== undefined }, "console session opened");
      prepared.attach(ws);
    });
  }

  /** Closes the sessions of an instance (it stopped or was terminated). */
  closeInstance(instanceId: string, reason = "the instance's console is gone"): void {
    for (const [key, ws] of this.open) if (key.endsWith(`:${instanceId}`)) ws.close(CLOSE_CONSOLE_GONE, reason);
  }

  /** Closes every session and refuses new ones (the agent stops; the API listener closes after this). */
  async close(): Promise<void> {
    this.closing = true;
    for (const ws of this.wss.clients) ws.close(CLOSE_AGENT_STOPPING, "the agent is stopping");
    const deadline = Date.now() + 2_000;
    while (this.wss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

const STATUS_TEXT: Record<number, string> = { 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable" };

/** Answers a handshake with a plain HTTP refusal and closes the connection. */
function refuse(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
