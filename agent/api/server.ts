/**
 * The controller API's HTTP edge: CVM API 2017-03-12 over node:http.
 *
 * Order of checks: method (POST) → path (/) → body size → Content-Type →
 * X-TC-Action present → X-TC-Version → TC3 signature → JSON → command schema →
 * dispatch. The signature is verified before the command is parsed.
 *
 * Every answer to POST / is HTTP 200 with the CVM envelope. This matters for the
 * official SDK: tencentcloud-sdk-nodejs-common's parseResponse() turns any
 * non-200 status into a TencentCloudSDKHttpException carrying only the HTTP
 * status text (no code), while a 200 whose `Response.Error` is set becomes a
 * TencentCloudSDKHttpException with `.code = Error.Code`, the message and
 * `.requestId`. Only requests outside the API (a path other than /) get a 404,
 * still with the envelope (code InvalidAction) for humans with curl.
 * The SDK reads the `X-TC-TraceId` response header; the request's value is echoed.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ApiError, type ErrorCode } from "../errors.js";
import { parseCommand, type Command } from "./commands.js";
import { verifyTc3 } from "./tc3.js";

export const API_VERSION = "2017-03-12";

export interface ApiLogger {
  child(bindings: Record<string, unknown>): ApiLogger;
  info(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
}

export interface DispatchContext {
  requestId: string;
  secretId: string;
}

export type Dispatch = (command: Command, context: DispatchContext) => Promise<Record<string, unknown>>;

export interface ApiServerOptions {
  listen: { host: string; port: number };
  credentials: ReadonlyArray<{ secretId: string; secretKey: string }>;
  dispatch: Dispatch;
  logger: ApiLogger;
  /** Largest accepted request body, bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Largest accepted distance between X-TC-Timestamp and now, seconds. Default 300. */
  maxSkewSeconds?: number;
  /** Clock, seconds since the epoch. Default Date.now()/1000. */
  now?: () => number;
}

export interface ApiServer {
  listen(): Promise<{ port: number }>;
  close(): Promise<void>;
  readonly server: Server;
}

const CONTENT_TYPE_RE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

class BodyTooLarge extends Error {}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(header(req, "content-length") ?? "0");
    if (declared > limit) {
      reject(new BodyTooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData);
        req.pause();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

export function createApiServer(options: ApiServerOptions): ApiServer {
  const maxBodyBytes = options.maxBodyBytes ?? 1_048_576;
  const maxSkewSeconds = options.maxSkewSeconds ?? 300;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const secrets = new Map(options.credentials.map((c) => [c.secretId, c.secretKey]));
  const logger = options.logger.child({ component: "api" });

  interface Outcome {
    status: number;
    response: Record<string, unknown>;
    action?: string;
    secretId?: string;
    code?: string;
    closeConnection?: boolean;
  }

  async function handle(req: IncomingMessage, requestId: string, note: Partial<Outcome>): Promise<Outcome> {
    const error = (code: ErrorCode, message: string, status = 200): Outcome => ({
      status,
      response: { Error: { Code: code, Message: message } },
      code,
    });
    if (req.method !== "POST") {
      return error("UnsupportedProtocol", `HTTP method ${req.method ?? "?"} is not supported; send POST /`);
    }
    const url = new URL(req.url ?? "/", "http://agent.invalid");
    if (url.pathname !== "/") return error("InvalidAction", `no API at ${url.pathname}; send POST /`, 404);
    let body: Buffer;
    try {
      body = await readBody(req, maxBodyBytes);
    } catch (e) {
      if (e instanceof BodyTooLarge) {
        return { ...error("InvalidParameter", `request body exceeds ${maxBodyBytes} bytes`), closeConnection: true };
      }
      throw e;
    }
    const contentType = header(req, "content-type") ?? "";
    if (!CONTENT_TYPE_RE.test(contentType.trim())) {
      return error("InvalidParameter", `Content-Type must be application/json, got ${JSON.stringify(contentType)}`);
    }
    const action = header(req, "x-tc-action");
    if (action === undefined || action === "") return error("MissingParameter", "missing header X-TC-Action");
    note.action = action;
    const version = header(req, "x-tc-version");
    if (version === undefined || version === "") return error("MissingParameter", "missing header X-TC-Version");
    if (version !== API_VERSION) {
      return error("NoSuchVersion", `API version ${JSON.stringify(version)} does not exist; use ${API_VERSION}`);
    }
    const { secretId } = verifyTc3({
      method: "POST",
      headers: req.headers,
      body,
      query: url.search.replace(/^\?/, ""),
      lookupSecret: (id) => secrets.get(id),
      now: now(),
      maxSkewSeconds,
    });
    note.secretId = secretId;
    let json: unknown;
    try {
      json = body.length === 0 ? {} : JSON.parse(body.toString("utf8"));
    } catch {
      return error("InvalidParameter", "the request body is not valid JSON");
    }
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      return error("InvalidParameter", "the request body must be a JSON object");
    }
    const command = parseCommand(action, json);
    const result = await options.dispatch(command, { requestId, secretId });
    return { status: 200, response: { ...result } };
  }

  function send(res: ServerResponse, req: IncomingMessage, outcome: Outcome, requestId: string): void {
    const payload = JSON.stringify({ Response: { ...outcome.response, RequestId: requestId } });
    const headers: Record<string, string | number> = {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(payload),
    };
    const traceId = header(req, "x-tc-traceid");
    if (traceId && /^[\w.:-]{1,128}$/.test(traceId)) headers["X-TC-TraceId"] = traceId;
    if (outcome.closeConnection) headers["Connection"] = "close";
    res.writeHead(outcome.status, headers);
    res.end(payload, () => {
      // The rest of an oversized body is never read: drop the connection.
      if (outcome.closeConnection) req.socket.destroy();
    });
  }

  const server = createServer((req, res) => {
    const started = process.hrtime.bigint();
    const requestId = randomUUID();
    const note: Partial<Outcome> = {};
    handle(req, requestId, note)
      .catch((e: unknown): Outcome => {
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
        send(res, req, outcome, requestId);
        const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
        logger.info(
          {
            requestId,
            action: note.action,
            secretId: note.secretId,
            code: outcome.code ?? "Success",
            status: outcome.status,
            durationMs: Math.round(durationMs * 10) / 10,
          },
          "api request",
        );
      })
      .catch((e: unknown) => {
        logger.error({ err: e, requestId }, "could not send the response");
        res.destroy();
      });
  });
  server.requestTimeout = 60_000;
  server.headersTimeout = 30_000;

  return {
    server,
    listen: () =>
      new Promise((resolve, reject) => {
        const onError = (e: Error) => reject(e);
        server.once("error", onError);
        server.listen(options.listen.port, options.listen.host, () => {
          server.off("error", onError);
          resolve({ port: (server.address() as AddressInfo).port });
        });
      }),
    close: () =>
      new Promise((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      }),
  };
}
