/**
 * The controller API's HTTP edge: CVM API 2017-03-12 over node:http, or node:https
 * when api_tls_cert/api_tls_key are set (tls.ts; mutual TLS with api_tls_client_ca).
 *
 * Order of checks, and why: path (/) → method (POST) → Content-Length (present, within
 * maxBodyBytes) → Content-Type → X-TC-Action present → X-TC-Version → the head's part
 * of TC3 (Authorization parses, X-TC-Timestamp in the window, SecretId known) → a share
 * of the unverified-body budget → the body → the signature → JSON → command schema →
 * dispatch. No byte of a body is read before the head has passed every check that
 * needs no body, so a stranger cannot make the agent hold bodies; and the bytes of
 * bodies being read but not yet verified are capped across all connections
 * (unverifiedBodyBudgetBytes; past it the answer is RequestLimitExceeded). A refusal
 * that leaves a body unread closes the connection (node would otherwise read and
 * discard it to keep the connection in step).
 *
 * Every answer to POST / is HTTP 200 with the CVM envelope. This matters for the
 * official SDK: tencentcloud-sdk-nodejs-common's parseResponse() turns any
 * non-200 status into a TencentCloudSDKHttpException carrying only the HTTP
 * status text (no code), while a 200 whose `Response.Error` is set becomes a
 * TencentCloudSDKHttpException with `.code = Error.Code`, the message and
 * `.requestId`. Requests outside the API (any path but /, e.g. `//` or `/x`) get a
 * 404, still with the envelope (code InvalidAction) for humans with curl.
 * The SDK reads the `X-TC-TraceId` response header; the request's value is echoed.
 *
 * Bounded resources: at most maxConnections open connections, maxConnectionsPerSource
 * from one remote address (TLS handshakes count); a connection over either cap gets
 * RequestLimitExceeded (with `Connection: close`) to its first request and is closed
 * after refusalGraceMs. A connection with no request under way closes after
 * idleTimeoutMs; a head must be complete headersTimeoutMs after the connection or the
 * previous answer; a whole request within requestTimeoutMs.
 *
 * A client that leaves mid-request (or whose body is too slow and hits the request
 * timeout) is the client's doing: a debug line, no answer, never InternalError.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { sanitize } from "../../drivers/exec/sanitize.js";
import { ApiError, type ErrorCode } from "../errors.js";
import { parseCommand, type Command } from "./commands.js";
import { checkTc3Head, checkTc3Signature } from "./tc3.js";
import { loadTlsContext, type ApiTlsFiles } from "./tls.js";

export const API_VERSION = "2017-03-12";
/**
 * The Monitor API's actions answer on the same endpoint under their own version
 * (reference/tencent-api-next.md §D); every other action is CVM/VPC 2017-03-12.
 */
export const MONITOR_API_VERSION = "2018-07-24";
const MONITOR_ACTIONS: ReadonlySet<string> = new Set(["GetMonitorData", "DescribeBaseMetrics"]);

/** The version an action is served under. */
export function apiVersionOf(action: string): string {
  return MONITOR_ACTIONS.has(action) ? MONITOR_API_VERSION : API_VERSION;
}

export interface ApiLogger {
  child(bindings: Record<string, unknown>): ApiLogger;
  debug?(obj: Record<string, unknown>, msg?: string): void;
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
}

export interface DispatchContext {
  requestId: string;
  secretId: string;
  /** The request's Host header (signed by TC3): the address console URLs are built on. */
  host?: string;
}

export type Dispatch = (command: Command, context: DispatchContext) => Promise<Record<string, unknown>>;

export interface ApiLimits {
  /** Open connections at once, all sources. */
  readonly maxConnections: number;
  /** Open connections at once from one remote address. */
  readonly maxConnectionsPerSource: number;
  /** Bytes of request bodies read but not yet verified, all connections together. */
  readonly unverifiedBodyBudgetBytes: number;
  /** A connection with no request under way is closed after this, ms. */
  readonly idleTimeoutMs: number;
  /** Until a request's head is complete, ms. */
  readonly headersTimeoutMs: number;
  /** Until a whole request (head and body) is in, ms. */
  readonly requestTimeoutMs: number;
  /** A connection over a cap is closed this long after it was refused, ms. */
  readonly refusalGraceMs: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = Object.freeze({
  maxConnections: 256,
  maxConnectionsPerSource: 64,
  unverifiedBodyBudgetBytes: 16 * 1024 * 1024,
  idleTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  refusalGraceMs: 2_000,
});

export interface ApiServerOptions {
  listen: { host: string; port: number };
  credentials: ReadonlyArray<{ secretId: string; secretKey: string }>;
  dispatch: Dispatch;
  logger: ApiLogger;
  /** HTTPS with these PEM files (mutual TLS when clientCaFile is set); absent = plain HTTP. */
  tls?: ApiTlsFiles;
  limits?: Partial<ApiLimits>;
  /** Largest accepted request body, bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Largest accepted distance between X-TC-Timestamp and now, seconds. Default 300. */
  maxSkewSeconds?: number;
  /** Clock, seconds since the epoch. Default Date.now()/1000. */
  now?: () => number;
  /** Called once per answered request (Prometheus: agent/metrics/prom.ts). */
  onAnswered?: (action: string | undefined, code: string, durationMs: number) => void;
  /** Routes beside the API on the same listener (the console: agent/console/gateway.ts, page.ts). */
  sideRoutes?: ApiSideRoutes;
}

/**
 * What the API listener hands to others: WebSocket handshakes (every `upgrade` event) and
 * GET/HEAD requests the side routes answer (e.g. the console page under /console/). Their
 * log lines are their own: the API's request log never sees these URLs (a console URL
 * carries a one-time token).
 */
export interface ApiSideRoutes {
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** True when it answered the request. */
  get(req: IncomingMessage, res: ServerResponse): boolean;
  /** Closes what the routes hold open (upgraded connections); close() calls it first. */
  close(): Promise<void>;
}

export interface ApiServer {
  listen(): Promise<{ port: number }>;
  close(): Promise<void>;
  /**
   * Reads the TLS files again and gives new connections the new context (open ones
   * keep theirs). False without TLS; throws TlsFileError (the old context stays) when
   * the files cannot be used.
   */
  reloadTls(): boolean;
  /** Open connections (tests). */
  readonly connectionCount: number;
  readonly server: Server | HttpsServer;
}

const CONTENT_TYPE_RE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;
/** Connections over a cap that wait for their refusal at once; past this they are closed unanswered. */
const MAX_REFUSING = 64;

/** The client left (or its body timed out) before the request was read. */
class ClientGone extends Error {}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

/** Reads exactly the declared body; rejects with ClientGone when the client leaves first. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let done = false;
    const gone = () => {
      if (done) return;
      done = true;
      reject(new ClientGone());
    };
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.once("end", () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    });
    req.once("aborted", gone);
    req.once("error", gone);
    req.once("close", () => {
      if (!req.complete) gone();
    });
  });
}

/** `::ffff:10.0.0.1` → `10.0.0.1`. */
function sourceOf(address: string | undefined): string {
  if (address === undefined) return "?";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

export function createApiServer(options: ApiServerOptions): ApiServer {
  const maxBodyBytes = options.maxBodyBytes ?? 1_048_576;
  const maxSkewSeconds = options.maxSkewSeconds ?? 300;
  const limits: ApiLimits = Object.freeze({ ...DEFAULT_API_LIMITS, ...options.limits });
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const secrets = new Map(options.credentials.map((c) => [c.secretId, c.secretKey]));
  // main.ts names the component (a second child binding would repeat the key on every line).
  const logger = options.logger;
  const debug = (obj: Record<string, unknown>, msg: string) => logger.debug?.(obj, msg);

  /** Bytes of unverified bodies held now. */
  let unverifiedBytes = 0;
  let openConnections = 0;
  const perSource = new Map<string, number>();
  /** `address|port` of connections over a cap, awaiting their refusal. */
  const refusing = new Set<string>();
  /** Requests under way per socket (the idle timeout spares a socket with one). */
  const busy = new WeakMap<object, number>();

  interface Outcome {
    status: number;
    response: Record<string, unknown>;
    action?: string;
    secretId?: string;
    code?: string;
    closeConnection?: boolean;
    retryAfter?: boolean;
  }

  async function handle(req: IncomingMessage, requestId: string, note: Partial<Outcome>): Promise<Outcome> {
    const declared = header(req, "content-length");
    const unreadBody = declared !== undefined ? declared.trim() !== "0" : header(req, "transfer-encoding") !== undefined;
    // Until the body is read, a refusal closes the connection (the body is never read).
    const error = (code: ErrorCode, message: string, status = 200): Outcome => ({
      status,
      response: { Error: { Code: code, Message: message } },
      code,
      ...(unreadBody ? { closeConnection: true } : {}),
    });
    const target = req.url ?? "/";
    const q = target.indexOf("?");
    const path = q < 0 ? target : target.slice(0, q);
    if (path !== "/") {
      const shown = path.length > 64 ? `${path.slice(0, 64)}…` : path;
      return error("InvalidAction", `no API at ${JSON.stringify(shown)}; send POST /`, 404);
    }
    if (req.method !== "POST") {
      return error("UnsupportedProtocol", `HTTP method ${req.method ?? "?"} is not supported; send POST /`);
    }
    if (declared === undefined) {
      return error("MissingParameter", "missing header Content-Length (a chunked body is not accepted)");
    }
    if (!/^\d{1,15}$/.test(declared.trim())) return error("InvalidParameter", "Content-Length must be a number of bytes");
    const length = Number(declared.trim());
    if (length > maxBodyBytes) return error("InvalidParameter", `request body exceeds ${maxBodyBytes} bytes`);
    const contentType = header(req, "content-type") ?? "";
    if (!CONTENT_TYPE_RE.test(contentType.trim())) {
      return error("InvalidParameter", `Content-Type must be application/json, got ${JSON.stringify(contentType)}`);
    }
    const action = header(req, "x-tc-action");
    if (action === undefined || action === "") return error("MissingParameter", "missing header X-TC-Action");
    note.action = action;
    const version = header(req, "x-tc-version");
    if (version === undefined || version === "") return error("MissingParameter", "missing header X-TC-Version");
    const expectedVersion = apiVersionOf(action);
    if (version !== expectedVersion) {
      return error("NoSuchVersion", `API version ${JSON.stringify(version)} does not exist for ${action.slice(0, 64)}; use ${expectedVersion}`);
    }
    let tc3Head;
    try {
      tc3Head = checkTc3Head({ headers: req.headers, lookupSecret: (id) => secrets.get(id), now: now(), maxSkewSeconds });
    } catch (e) {
      if (e instanceof ApiError) return error(e.code, e.message);
      throw e;
    }
    if (unverifiedBytes + length > limits.unverifiedBodyBudgetBytes) {
      return {
        ...error("RequestLimitExceeded", "too many request bodies are being received at once; retry later"),
        closeConnection: true,
        retryAfter: true,
      };
    }
    unverifiedBytes += length;
    let body: Buffer;
    let secretId: string;
    try {
      body = await readBody(req);
      ({ secretId } = checkTc3Signature(tc3Head, { method: "POST", headers: req.headers, body, query: q < 0 ? "" : target.slice(q + 1) }));
    } finally {
      unverifiedBytes -= length;
    }
    note.secretId = secretId;
    let json: unknown;
    try {
      json = body.length === 0 ? {} : JSON.parse(body.toString("utf8"));
    } catch {
      return { status: 200, response: { Error: { Code: "InvalidParameter", Message: "the request body is not valid JSON" } }, code: "InvalidParameter" };
    }
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      return { status: 200, response: { Error: { Code: "InvalidParameter", Message: "the request body must be a JSON object" } }, code: "InvalidParameter" };
    }
    const command = parseCommand(action, json);
    const host = header(req, "host");
    const result = await options.dispatch(command, { requestId, secretId, ...(host !== undefined ? { host } : {}) });
    return { status: 200, response: { ...result } };
  }

  function send(res: ServerResponse, req: IncomingMessage, outcome: Outcome, requestId: string): void {
    const payload = jsonPieces({ ...scrubbedError(outcome.response), RequestId: requestId });
    const headers: Record<string, string | number> = {
      "Content-Type": "application/json",
      "Content-Length": payload.reduce((n, piece) => n + Buffer.byteLength(piece), 0),
    };
    const traceId = header(req, "x-tc-traceid");
    if (traceId && /^[\w.:-]{1,128}$/.test(traceId)) headers["X-TC-TraceId"] = traceId;
    if (outcome.closeConnection) headers["Connection"] = "close";
    if (outcome.retryAfter) headers["Retry-After"] = "1";
    res.writeHead(outcome.status, headers);
    res.cork();
    for (const piece of payload.slice(0, -1)) res.write(piece);
    res.end(payload.at(-1), () => {
      // The rest of an unread body is never read: drop the connection.
      if (outcome.closeConnection) req.socket.destroy();
    });
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    const requestId = randomUUID();
    const socket = req.socket;
    if (refusing.has(`${socket.remoteAddress}|${socket.remotePort}`)) {
      const outcome: Outcome = {
        status: 200,
        response: { Error: { Code: "RequestLimitExceeded", Message: "too many connections to the API; retry later" } },
        code: "RequestLimitExceeded",
        closeConnection: true,
        retryAfter: true,
      };
      send(res, req, outcome, requestId);
      debug({ requestId, remote: sourceOf(socket.remoteAddress) }, "api connection over the cap refused");
      return;
    }
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    res.once("close", () => busy.set(socket, Math.max(0, (busy.get(socket) ?? 1) - 1)));
    if ((req.method === "GET" || req.method === "HEAD") && options.sideRoutes?.get(req, res)) return;
    const note: Partial<Outcome> = {};
    handle(req, requestId, note)
      .catch((e: unknown): Outcome | undefined => {
        if (e instanceof ClientGone) return undefined;
        if (e instanceof ApiError) {
          return { status: 200, response: { Error: { Code: e.code, Message: e.message } }, code: e.code };
        }
        logger.error({ err: e, requestId, action: note.action }, "request failed with an unexpected error");
        return {
          status: 200,
          response: { Error: { Code: "InternalError", Message: `internal error; quote RequestId ${requestId}` } },
          code: "InternalError",
        };
      })
      .then((outcome) => {
        const durationMs = Math.round((Number(process.hrtime.bigint() - started) / 1e6) * 10) / 10;
        if (outcome === undefined) {
          debug({ requestId, action: note.action, remote: sourceOf(socket.remoteAddress), durationMs }, "the client left before its request was read");
          res.destroy();
          return;
        }
        send(res, req, outcome, requestId);
        options.onAnswered?.(note.action, outcome.code ?? "Success", durationMs);
        logger.info(
          {
            requestId,
            action: note.action,
            secretId: note.secretId,
            code: outcome.code ?? "Success",
            status: outcome.status,
            durationMs,
          },
          "api request",
        );
      })
      .catch((e: unknown) => {
        logger.error({ err: e, requestId }, "could not send the response");
        res.destroy();
      });
  };

  const httpOptions = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
  let server: Server | HttpsServer;
  if (options.tls) {
    const mutual = options.tls.clientCaFile !== undefined;
    server = createHttpsServer(
      {
        ...loadTlsContext(options.tls),
        ...httpOptions,
        requestCert: mutual,
        rejectUnauthorized: mutual,
        handshakeTimeout: limits.headersTimeoutMs,
      },
      onRequest,
    );
  } else {
    server = createServer(httpOptions, onRequest);
  }
  server.keepAliveTimeout = Math.min(5_000, limits.idleTimeoutMs);
  // Node closes a socket idle this long unless a 'timeout' listener decides.
  server.timeout = limits.idleTimeoutMs;
  server.on("timeout", (socket: Socket) => {
    if ((busy.get(socket) ?? 0) === 0) socket.destroy();
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed heads, timeouts, resets, failed handshakes: the client's doing.
    debug({ code: err.code, remote: sourceOf(socket.remoteAddress) }, "api client error");
    if (err.code === "ECONNRESET" || !socket.writable) return void socket.destroy();
    const status = err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  if (options.sideRoutes) {
    const side = options.sideRoutes;
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => side.upgrade(req, socket, head));
  }
  server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    debug({ code: err.code, remote: sourceOf(socket.remoteAddress) }, "api TLS handshake failed");
  });
  server.on("connection", (socket: Socket) => {
    const source = sourceOf(socket.remoteAddress);
    const fromSource = perSource.get(source) ?? 0;
    if (openConnections >= limits.maxConnections || fromSource >= limits.maxConnectionsPerSource) {
      if (refusing.size >= MAX_REFUSING) return void socket.destroy();
      const key = `${socket.remoteAddress}|${socket.remotePort}`;
      refusing.add(key);
      const timer = setTimeout(() => socket.destroy(), limits.refusalGraceMs);
      timer.unref();
      socket.once("close", () => {
        clearTimeout(timer);
        refusing.delete(key);
      });
      debug({ remote: source, open: openConnections, fromSource }, "api connection over the cap");
      return;
    }
    openConnections++;
    perSource.set(source, fromSource + 1);
    socket.once("close", () => {
      openConnections--;
      const left = (perSource.get(source) ?? 1) - 1;
      if (left <= 0) perSource.delete(source);
      else perSource.set(source, left);
    });
  });

  return {
    server,
    get connectionCount() {
      return openConnections;
    },
    reloadTls() {
      if (!options.tls) return false;
      (server as HttpsServer).setSecureContext(loadTlsContext(options.tls));
      return true;
    },
    listen: () =>
      new Promise((resolve, reject) => {
        const onError = (e: Error) => reject(e);
        server.once("error", onError);
        server.listen(options.listen.port, options.listen.host, () => {
          server.off("error", onError);
          resolve({ port: (server.address() as AddressInfo).port });
        });
      }),
    close: async () => {
      await options.sideRoutes?.close();
      await new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}

/** Pieces of a response body are joined up to about this many characters. */
const PIECE_CHARS = 32 * 1024;

/**
 * `{"Response":…}` as JSON.stringify writes it, in pieces of at most about 32 KiB (a
 * top-level array, such as a page of 100 instances, element by element): a body of
 * 100+ KiB as one string is a large object for V8, which costs a few ms to allocate on
 * every answer (bench (b)); the pieces go out corked, in one write.
 */
export function jsonPieces(response: Record<string, unknown>): string[] {
  const pieces: string[] = [];
  let current = '{"Response":{';
  const push = (text: string) => {
    if (current.length + text.length > PIECE_CHARS && current.length > 0) {
      pieces.push(current);
      current = "";
    }
    current += text;
  };
  let first = true;
  for (const [key, value] of Object.entries(response)) {
    const many = Array.isArray(value) && value.length > 1;
    const text = many ? "" : (JSON.stringify(value) as string | undefined);
    if (!many && text === undefined) continue; // left out, as JSON.stringify does (undefined, a function)
    push(`${first ? "" : ","}${JSON.stringify(key)}:`);
    first = false;
    if (many) {
      push("[");
      (value as unknown[]).forEach((element, i) => push(`${i ? "," : ""}${JSON.stringify(element) ?? "null"}`));
      push("]");
    } else {
      push(text!);
    }
  }
  push("}}");
  pieces.push(current);
  return pieces;
}

/**
 * Every error message the edge sends goes through the one secret sanitizer
 * (drivers/exec/sanitize.ts), like every log line: a message that quotes a value a
 * secret was registered for (a password, user data, a key) is scrubbed before it leaves.
 */
function scrubbedError(response: Record<string, unknown>): Record<string, unknown> {
  const error = response.Error as { Code?: unknown; Message?: unknown } | undefined;
  if (error === null || typeof error !== "object" || typeof error.Message !== "string") return response;
  const message = sanitize(error.Message);
  return message === error.Message ? response : { ...response, Error: { ...error, Message: message } };
}
