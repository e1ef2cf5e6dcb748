/**
 * The metadata endpoint guests reach at 169.254.169.254 / 169.254.0.23 port 80
 * (drivers/network/metadata-redirect.ts brings that traffic to the gateway
 * address of the guest's network, where this server listens).
 *
 * Who is asking is decided ONLY by the socket: the local address the connection
 * arrived on (which network) and the remote address (which guest; anti-spoofing
 * on the bridge makes it unforgeable). No header is ever trusted for identity. A
 * caller the resolver does not know gets the same 404 as a path that does not
 * exist, whatever it asked.
 *
 * Order of checks for a known caller: rate limit (429) → path (404) → method
 * (405) → IMDSv2 token (401; 403/400 on the token PUT) → resource (404).
 *
 * Hot path: the whole site of a guest (every path, body and header object) is
 * rendered once per GuestDocuments object and cached by identity (a WeakMap), so
 * a GET is a resolver call, a bucket update, a Map lookup and a write.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { GuestConfig, GuestDocuments } from "../../cloud-init/types.js";
import { rateLimited, type Logger, type RateLimitedLogger } from "../log.js";
import { canonicalPath } from "./paths.js";
import { RateLimiter, type RateLimit } from "./rate-limit.js";
import { parseTtl, TokenStore } from "./tokens.js";
import { buildSite, OPENSTACK_VERSIONS, type Resource, type Site } from "./tree.js";

/** What the server needs to know about one guest. */
export interface GuestView {
  readonly config: GuestConfig;
  readonly docs: GuestDocuments;
  /** Stores what the guest POSTs to /openstack/<version>/password; only the first POST is kept. */
  postPassword(data: Buffer): "stored" | "conflict";
  /** What GET /openstack/<version>/password answers; absent or undefined = empty body. */
  readPassword?(): Buffer | undefined;
}

/** Finds the guest behind a connection: the address it arrived on, and where it came from. */
export type ResolveGuest = (localAddress: string, remoteAddress: string) => GuestView | undefined;

export interface MetadataServerOptions {
  /** One HTTP listener per address (normally each guest network's gateway). */
  listen: ReadonlyArray<{ host: string; port: number }>;
  resolve: ResolveGuest;
  logger: Logger;
  /** Every GET/HEAD must carry a valid IMDSv2 token (EC2 `HttpTokens=required`). Default false. */
  requireToken?: boolean;
  /** Per-caller token bucket. Default DEFAULT_RATE_LIMIT; `false` turns it off (benchmarks). */
  rateLimit?: RateLimit | false;
  /** Clock in milliseconds since the epoch (token expiry, rate limit). Default Date.now. */
  now?: () => number;
}

export interface MetadataServer {
  listen(): Promise<void>;
  close(): Promise<void>;
  /** The bound addresses (ports resolved when 0 was asked for). */
  addresses(): Array<{ host: string; port: number }>;
}

/** A cloud-init crawl is about 60 requests; this leaves room for several at once. */
export const DEFAULT_RATE_LIMIT: RateLimit = Object.freeze({ perSecond: 100, burst: 200 });
/** Node refuses larger request heads with 431 and closes the connection. */
export const MAX_HEADER_BYTES = 8 * 1024;
/** Nova's limit for a posted password: 4 × 255 bytes (stored in four metadata items). */
export const MAX_PASSWORD_BYTES = 1020;
export const TOKEN_PATH = "/latest/api/token";
const TOKEN_HEADER = "x-aws-ec2-metadata-token";
const TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds";
const PASSWORD_PATHS = new Set(OPENSTACK_VERSIONS.map((v) => `/openstack/${v}/password`));
/** Sweep expired tokens once the store holds this many. */
const TOKEN_SWEEP_ABOVE = 10_000;

function fixed(status: number, text: string, extra: Record<string, string> = {}): { status: number; resource: Resource } {
  const body = Buffer.from(text, "utf8");
  return {
    status,
    resource: {
      body,
      headers: Object.freeze({ "content-type": "text/plain", "content-length": body.length, ...extra }),
    },
  };
}

const NOT_FOUND = fixed(404, "Not Found");
const BAD_REQUEST = fixed(400, "Bad Request");
const UNAUTHORIZED = fixed(401, "Unauthorized");
const FORBIDDEN = fixed(403, "Forbidden");
const CONFLICT = fixed(409, "Conflict");
const TOO_LARGE = fixed(400, "Bad Request", { connection: "close" });
const TOO_MANY = fixed(429, "Too Many Requests", { "retry-after": "1" });
const INTERNAL = fixed(500, "Internal Server Error");
const NOT_ALLOWED = fixed(405, "Method Not Allowed", { allow: "GET, HEAD" });
const NOT_ALLOWED_TOKEN = fixed(405, "Method Not Allowed", { allow: "PUT" });
const NOT_ALLOWED_PASSWORD = fixed(405, "Method Not Allowed", { allow: "GET, HEAD, POST" });
const EMPTY = fixed(200, "");

interface CachedSite {
  readonly config: GuestConfig;
  readonly site: Site;
}

export function createMetadataServer(options: MetadataServerOptions): MetadataServer {
  const now = options.now ?? Date.now;
  const requireToken = options.requireToken ?? false;
  const limit = options.rateLimit === undefined ? DEFAULT_RATE_LIMIT : options.rateLimit;
  const limiter = limit === false ? undefined : new RateLimiter(limit, now);
  const tokens = new TokenStore({ now });
  const sites = new WeakMap<GuestDocuments, CachedSite>();
  const log = options.logger.child({ component: "metadata" });
  // Everything below can be triggered by a guest: rate-limited so no guest floods the journal.
  const guestLog: RateLimitedLogger = rateLimited(log, { perMinute: 60 });
  const servers: Server[] = [];

  const siteOf = (view: GuestView): Site => {
    const cached = sites.get(view.docs);
    if (cached && cached.config === view.config) return cached.site;
    const site = buildSite(view.config, view.docs);
    sites.set(view.docs, { config: view.config, site });
    return site;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const local = plainAddress(req.socket.localAddress);
    const remote = plainAddress(req.socket.remoteAddress);
    if (local === undefined || remote === undefined) return send(req, res, NOT_FOUND);
    let view: GuestView | undefined;
    try {
      view = options.resolve(local, remote);
    } catch (error) {
      guestLog.error({ err: error, local, remote }, "metadata resolver failed");
      return send(req, res, INTERNAL);
    }
    if (view === undefined) return send(req, res, NOT_FOUND);
    const caller = `${local}|${remote}`;
    if (limiter && !limiter.take(caller)) {
      guestLog.warn({ local, remote }, "metadata request over the rate limit");
      return send(req, res, TOO_MANY);
    }
    const path = canonicalPath(req.url);
    if (path === undefined) return send(req, res, NOT_FOUND);

    switch (req.method) {
      case "GET":
      case "HEAD": {
        if (path === TOKEN_PATH) return send(req, res, NOT_ALLOWED_TOKEN);
        if (!tokenOk(req, caller, requireToken)) return send(req, res, UNAUTHORIZED);
        const resource = siteOf(view).get(path);
        if (resource) return write(req, res, 200, resource);
        if (PASSWORD_PATHS.has(path)) return sendPassword(req, res, view);
        return send(req, res, NOT_FOUND);
      }
      case "PUT":
        if (path !== TOKEN_PATH) return send(req, res, PASSWORD_PATHS.has(path) ? NOT_ALLOWED_PASSWORD : NOT_ALLOWED);
        return issueToken(req, res, caller);
      case "POST":
        if (!PASSWORD_PATHS.has(path)) return send(req, res, path === TOKEN_PATH ? NOT_ALLOWED_TOKEN : NOT_ALLOWED);
        if (!tokenOk(req, caller, false)) return send(req, res, UNAUTHORIZED);
        return receivePassword(req, res, view, { local, remote });
      default:
        return send(req, res, path === TOKEN_PATH ? NOT_ALLOWED_TOKEN : PASSWORD_PATHS.has(path) ? NOT_ALLOWED_PASSWORD : NOT_ALLOWED);
    }
  };

  /** A token, when sent, must be valid for this caller; without one, only `required` refuses. */
  const tokenOk = (req: IncomingMessage, caller: string, required: boolean): boolean => {
    const token = req.headers[TOKEN_HEADER];
    if (token === undefined) return !required;
    return tokens.check(caller, token);
  };

  const issueToken = (req: IncomingMessage, res: ServerResponse, caller: string): void => {
    // A PUT relayed by a proxy carries X-Forwarded-For: refuse it (IMDSv2's SSRF defence).
    if (req.headers["x-forwarded-for"] !== undefined) return send(req, res, FORBIDDEN);
    const ttl = parseTtl(req.headers[TTL_HEADER]);
    if (ttl === undefined) return send(req, res, BAD_REQUEST);
    if (tokens.size > TOKEN_SWEEP_ABOVE) tokens.sweep();
    const token = tokens.issue(caller, ttl);
    res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(token), [TTL_HEADER]: String(ttl) });
    res.end(token);
  };

  const sendPassword = (req: IncomingMessage, res: ServerResponse, view: GuestView): void => {
    let stored: Buffer | undefined;
    try {
      stored = view.readPassword?.();
    } catch (error) {
      guestLog.error({ err: error }, "reading the posted password failed");
      return send(req, res, INTERNAL);
    }
    if (!stored || stored.length === 0) return send(req, res, EMPTY);
    write(req, res, 200, { body: stored, headers: { "content-type": "text/plain", "content-length": stored.length } });
  };

  const receivePassword = (
    req: IncomingMessage,
    res: ServerResponse,
    view: GuestView,
    who: { local: string; remote: string },
  ): void => {
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > MAX_PASSWORD_BYTES) return send(req, res, TOO_LARGE);
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > MAX_PASSWORD_BYTES) {
        done = true;
        send(req, res, TOO_LARGE);
        req.pause();
        return;
      }
      chunks.push(chunk);
    });
    req.on("error", () => {
      done = true;
    });
    req.on("end", () => {
      if (done) return;
      done = true;
      let outcome: "stored" | "conflict";
      try {
        outcome = view.postPassword(Buffer.concat(chunks, size));
      } catch (error) {
        guestLog.error({ err: error, ...who }, "storing the posted password failed");
        return send(req, res, INTERNAL);
      }
      // Never log the password itself.
      guestLog.info({ ...who, bytes: size, outcome }, "guest posted its password");
      send(req, res, outcome === "stored" ? EMPTY : CONFLICT);
    });
  };

  const onClientError = (error: NodeJS.ErrnoException, socket: Socket): void => {
    if (error.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const status =
      error.code === "HPE_HEADER_OVERFLOW"
        ? "431 Request Header Fields Too Large"
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "408 Request Timeout"
          : "400 Bad Request";
    guestLog.debug({ code: error.code, remote: socket.remoteAddress }, "malformed metadata request refused");
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  };

  return {
    async listen() {
      if (servers.length > 0) throw new Error("metadata server is already listening");
      try {
        for (const { host, port } of options.listen) {
          const server = createServer(
            { maxHeaderSize: MAX_HEADER_BYTES, keepAlive: true, noDelay: true, requestTimeout: 10_000, headersTimeout: 5_000 },
            handle,
          );
          server.keepAliveTimeout = 5_000;
          server.on("clientError", onClientError);
          servers.push(server);
          await new Promise<void>((resolve, reject) => {
            server.once("error", reject);
            server.listen({ host, port }, () => {
              server.off("error", reject);
              resolve();
            });
          });
          server.on("error", (error) => log.error({ err: error, host, port }, "metadata listener failed"));
        }
      } catch (error) {
        await closeAll(servers.splice(0));
        throw error;
      }
      log.info({ addresses: this.addresses() }, "metadata server listening");
    },
    async close() {
      await closeAll(servers.splice(0));
    },
    addresses() {
      return servers.flatMap((s) => {
        const a = s.address();
        return a && typeof a === "object" ? [{ host: (a as AddressInfo).address, port: (a as AddressInfo).port }] : [];
      });
    },
  };
}

function write(req: IncomingMessage, res: ServerResponse, status: number, resource: Resource): void {
  res.writeHead(status, resource.headers);
  if (req.method === "HEAD") res.end();
  else res.end(resource.body);
}

function send(req: IncomingMessage, res: ServerResponse, answer: { status: number; resource: Resource }): void {
  if (res.headersSent) return;
  write(req, res, answer.status, answer.resource);
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) → `10.0.0.1`. */
function plainAddress(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

async function closeAll(servers: Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (!s.listening) return resolve();
          s.close(() => resolve());
          s.closeAllConnections();
        }),
    ),
  );
}
