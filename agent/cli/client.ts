/**
 * The operator command line's API client: one TC3-signed POST per call to the local agent's
 * own API (the same requests a controller sends; nothing behind the API), signed with the
 * agent's own TC3 code (agent/api/tc3.ts), no SDK.
 *
 * TLS: when the agent serves HTTPS (api_tls_cert), the client trusts exactly the certificate
 * in that file: the server's leaf certificate must be the file's first certificate (pinned by
 * its SHA-256 fingerprint), whatever names it carries, since the CLI connects to a loopback
 * address the certificate need not name. Mutual TLS (api_tls_client_ca) is not supported by
 * the command line (there is no client certificate to present).
 *
 * Failures are typed: ApiCallError (the API answered with an error: its Code and Message as
 * they came), AgentUnreachableError (no connection, TLS refused, timeout, or an answer that is
 * not the API's envelope).
 */
import { X509Certificate } from "node:crypto";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { isIP } from "node:net";
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from "node:tls";
import WebSocket from "ws";
import { signTc3 } from "../core/tc3-sign.js";

export const API_VERSION = "2017-03-12";
/** The Monitor actions answer under their own version (agent/api/server.ts). */
const MONITOR_ACTIONS = new Set(["GetMonitorData", "DescribeBaseMetrics"]);

export interface ClientOptions {
  host: string;
  port: number;
  secretId: string;
  secretKey: string;
  /** PEM text of the agent's certificate (api_tls_cert): HTTPS pinned to it. Absent = HTTP. */
  pinnedCertPem?: string;
  /** Per request, ms. Default 30 000. */
  timeoutMs?: number;
  /** Clock, seconds since the epoch (tests). */
  now?: () => number;
}

/** The API answered with Response.Error. */
export class ApiCallError extends Error {
  override readonly name = "ApiCallError";
  constructor(
    readonly action: string,
    readonly code: string,
    readonly apiMessage: string,
    readonly requestId: string | undefined,
  ) {
    super(`${code}: ${apiMessage}`);
  }
}

/** The agent could not be reached, or what answered is not the agent's API. */
export class AgentUnreachableError extends Error {
  override readonly name = "AgentUnreachableError";
}

export type ApiResponse = Record<string, unknown>;

export interface ApiClient {
  call(action: string, params?: Record<string, unknown>): Promise<ApiResponse>;
  /**
   * A WebSocket to `pathAndQuery` (a console URL's path and query) on the same endpoint as the
   * API calls, over the same pinned TLS: the URL's own host is not used (it is the address the
   * agent saw in the request, which a client on the host need not reach). Resolves once open,
   * paused (nothing the server sends is lost before the caller listens: it calls resume());
   * a refused handshake rejects with ConsoleRefusedError (its HTTP status and the agent's text).
   */
  openWebSocket(pathAndQuery: string): Promise<WebSocket>;
  /** Where it connects, for messages (`https://127.0.0.1:8443`). */
  readonly endpoint: string;
}

/** A wildcard listen address is reached on the loopback address of its family. */
export function connectHost(listenHost: string): string {
  if (listenHost === "0.0.0.0" || listenHost === "") return "127.0.0.1";
  if (listenHost === "::" || listenHost === "[::]") return "::1";
  return listenHost.replace(/^\[(.*)\]$/, "$1");
}

function fingerprintOfPem(pem: string): string {
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch (error) {
    throw new AgentUnreachableError(`the agent's certificate file cannot be parsed: ${(error as Error).message}`);
  }
}

export function createApiClient(options: ClientOptions): ApiClient {
  const host = connectHost(options.host);
  const hostHeader = host.includes(":") ? `[${host}]:${options.port}` : `${host}:${options.port}`;
  const tls = options.pinnedCertPem !== undefined;
  const endpoint = `${tls ? "https" : "http"}://${hostHeader}`;
  const pinned = tls ? fingerprintOfPem(options.pinnedCertPem!) : undefined;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));

  function pinnedConnection(): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host, port: options.port, rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) });
      const timer = setTimeout(() => socket.destroy(new AgentUnreachableError(`${endpoint}: no TLS handshake within ${timeoutMs / 1000} s`)), timeoutMs);
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        const peer: PeerCertificate = socket.getPeerCertificate();
        if (!peer || peer.fingerprint256 !== pinned) {
          socket.destroy();
          reject(new AgentUnreachableError(`${endpoint}: the server's certificate is not the one in the agent's api_tls_cert file`));
        } else resolve(socket);
      });
      socket.once("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(e instanceof AgentUnreachableError ? e : new AgentUnreachableError(`cannot reach the agent at ${endpoint}: ${e.code ?? e.message}`));
      });
    });
  }

  async function call(action: string, params: Record<string, unknown> = {}): Promise<ApiResponse> {
    const body = JSON.stringify(params);
    const timestamp = now();
    const contentType = "application/json";
    const authorization = signTc3({
      secretId: options.secretId,
      secretKey: options.secretKey,
      service: "cvm",
      host: host.includes(":") ? `[${host}]` : host,
      timestamp,
      payload: body,
      contentType,
    });
    const headers = {
      "Content-Type": contentType,
      Host: hostHeader,
      "X-TC-Action": action,
      "X-TC-Version": MONITOR_ACTIONS.has(action) ? "2018-07-24" : API_VERSION,
      "X-TC-Timestamp": String(timestamp),
      Authorization: authorization,
      "Content-Length": String(Buffer.byteLength(body)),
    };
    // Over TLS the connection is made and its certificate checked first: no byte of the
    // signed request goes to a server that is not the pinned one.
    const socket = tls ? await pinnedConnection() : undefined;
    const text = await new Promise<string>((resolve, reject) => {
      const onResponse = (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        res.once("error", (e) => reject(new AgentUnreachableError(`${endpoint}: the answer broke off (${e.message})`)));
      };
      const req = httpRequest(
        { host, port: options.port, method: "POST", path: "/", headers, timeout: timeoutMs, ...(socket ? { createConnection: () => socket } : { agent: false }) },
        onResponse,
      );
      req.once("timeout", () => req.destroy(new AgentUnreachableError(`${endpoint}: no answer within ${timeoutMs / 1000} s`)));
      req.once("error", (e: NodeJS.ErrnoException) => {
        reject(e instanceof AgentUnreachableError ? e : new AgentUnreachableError(`cannot reach the agent at ${endpoint}: ${e.code ?? e.message}`));
      });
      req.end(body);
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new AgentUnreachableError(`${endpoint} answered with something that is not JSON: is the agent listening there?`);
    }
    const response = (parsed as { Response?: unknown }).Response;
    if (typeof response !== "object" || response === null || Array.isArray(response)) {
      throw new AgentUnreachableError(`${endpoint} answered without the API's Response envelope`);
    }
    const r = response as ApiResponse;
    const error = r.Error as { Code?: unknown; Message?: unknown } | undefined;
    if (error !== undefined) {
      throw new ApiCallError(action, String(error.Code ?? "?"), String(error.Message ?? ""), typeof r.RequestId === "string" ? r.RequestId : undefined);
    }
    return r;
  }

  async function openWebSocket(pathAndQuery: string): Promise<WebSocket> {
    if (!pathAndQuery.startsWith("/")) throw new AgentUnreachableError(`not a path: ${JSON.stringify(pathAndQuery.slice(0, 40))}`);
    const socket = tls ? await pinnedConnection() : undefined;
    const url = `${tls ? "wss" : "ws"}://${hostHeader}${pathAndQuery}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        handshakeTimeout: timeoutMs,
        perMessageDeflate: false,
        ...(socket ? { createConnection: () => socket } : {}),
      });
      ws.once("open", () => {
        ws.pause();
        ws.removeAllListeners("error");
        ws.removeAllListeners("unexpected-response");
        resolve(ws);
      });
      ws.once("unexpected-response", (_req, res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.length < 16 && chunks.push(c));
        res.once("end", () => {
          reject(new ConsoleRefusedError(res.statusCode ?? 0, Buffer.concat(chunks).toString("utf8").trim().slice(0, 500)));
          ws.terminate();
        });
      });
      ws.once("error", (e: NodeJS.ErrnoException) => {
        reject(new AgentUnreachableError(`cannot open the console at ${endpoint}: ${e.code ?? e.message}`));
      });
    });
  }

  return { call, endpoint, openWebSocket };
}

/** The agent refused a console handshake (used, expired or wrong token; console not there). */
export class ConsoleRefusedError extends Error {
  override readonly name = "ConsoleRefusedError";
  constructor(
    readonly status: number,
    readonly text: string,
  ) {
    super(`the agent refused the console session (HTTP ${status}): ${text}`);
  }
}
