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
 * Before any request: a connection over the caps (overall, per guest address) gets 503
 * (http1.ts). Order of checks for a known caller: rate limit (429) → path (404) → method
 * (405) → IMDSv2 token (401; 403/400 on the token PUT) → resource (404).
 *
 * HTTP/1.1 is spoken by our own small server on node:net (http1.ts, http1-head.ts:
 * strict framing, its limits and timeouts are described there), not node:http: the
 * endpoint must keep up with nginx on the same documents.
 *
 * Hot path: the whole site of a guest (every path, body and header object) is
 * rendered once per GuestDocuments object and cached by identity (a WeakMap); the
 * answer for a path (status line, headers and body in one Buffer) is made on its
 * first request and kept beside it. A GET is then: parse the head, a resolver call,
 * a bucket update, a Map lookup and one socket write.
 */
import type { Socket } from "node:net";
import type { GuestConfig, GuestDocuments } from "../../cloud-init/types.js";
import { rateLimited, type Logger, type RateLimitedLogger } from "../log.js";
import { Http1Response, Http1Server, type Http1Request } from "./http1.js";
import { canonicalPath } from "./paths.js";
import { RateLimiter, type RateLimit } from "./rate-limit.js";
import { parseTtl, TokenStore } from "./tokens.js";
import { buildSite, OPENSTACK_VERSIONS, type Site } from "./tree.js";

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
  /** Open connections per listener; more get 503. Default DEFAULT_HTTP1_LIMITS.maxConnections. */
  maxConnections?: number;
  /** Open connections per listener from one guest address; more get 503. */
  maxConnectionsPerSource?: number;
  /** Live IMDSv2 tokens, all guests together; past it a token PUT gets 503. Default DEFAULT_MAX_TOKENS. */
  maxTokens?: number;
  /** Called once per answered request (Prometheus: requests by tree and status). */
  onAnswered?: (target: string, status: number) => void;
}

export interface MetadataServer {
  listen(): Promise<void>;
  close(): Promise<void>;
  /** The bound addresses (ports resolved when 0 was asked for). */
  addresses(): Array<{ host: string; port: number }>;
}

/** A cloud-init crawl is about 60 requests; this leaves room for several at once. */
export const DEFAULT_RATE_LIMIT: RateLimit = Object.freeze({ perSecond: 100, burst: 200 });
/** Larger request heads (request line, headers, blank line) are refused with 431 and the connection closed. */
export const MAX_HEADER_BYTES = 8 * 1024;
/** Nova's limit for a posted password: 4 × 255 bytes (stored in four metadata items). */
export const MAX_PASSWORD_BYTES = 1020;
export const TOKEN_PATH = "/latest/api/token";
/**
 * Request bodies are read whole, whatever the method (only the password POST uses
 * one); a larger Content-Length is refused with 400 before anything else is checked.
 */
const MAX_BODY_BYTES = 4 * 1024;
const TOKEN_HEADER = "x-aws-ec2-metadata-token";
const TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds";
const PASSWORD_PATHS = new Set(OPENSTACK_VERSIONS.map((v) => `/openstack/${v}/password`));
/** Request targets whose canonical path is remembered (the map is emptied when full). */
const PATH_MEMO_SIZE = 1024;

const fixed = (status: number, text: string, extra: Record<string, string> = {}, close = false): Http1Response =>
  Http1Response.of(status, { "content-type": "text/plain", ...extra }, text, { close });

const NOT_FOUND = fixed(404, "Not Found");
const BAD_REQUEST = fixed(400, "Bad Request");
const UNAUTHORIZED = fixed(401, "Unauthorized");
const FORBIDDEN = fixed(403, "Forbidden");
const CONFLICT = fixed(409, "Conflict");
const TOO_LARGE = fixed(400, "Bad Request", {}, true);
const TOO_MANY = fixed(429, "Too Many Requests", { "retry-after": "1" });
const INTERNAL = fixed(500, "Internal Server Error");
const TOKENS_FULL = fixed(503, "Service Unavailable", { "retry-after": "1" });
const NOT_ALLOWED = fixed(405, "Method Not Allowed", { allow: "GET, HEAD" });
const NOT_ALLOWED_TOKEN = fixed(405, "Method Not Allowed", { allow: "PUT" });
const NOT_ALLOWED_PASSWORD = fixed(405, "Method Not Allowed", { allow: "GET, HEAD, POST" });
const EMPTY = fixed(200, "");

interface CachedSite {
  readonly config: GuestConfig;
  readonly site: Site;
  /** Path → its rendered 200 answer, made on first request. */
  readonly answers: Map<string, Http1Response>;
}

/** Who is at the other end of a connection: fixed for its lifetime. */
interface Peer {
  readonly local: string | undefined;
  readonly remote: string | undefined;
  /** Rate-limit and token key. */
  readonly caller: string;
}

export function createMetadataServer(options: MetadataServerOptions): MetadataServer {
  const now = options.now ?? Date.now;
  const requireToken = options.requireToken ?? false;
  const limit = options.rateLimit === undefined ? DEFAULT_RATE_LIMIT : options.rateLimit;
  const limiter = limit === false ? undefined : new RateLimiter(limit, now);
  const tokens = new TokenStore({ now, ...(options.maxTokens !== undefined ? { maxTokens: options.maxTokens } : {}) });
  const sites = new WeakMap<GuestDocuments, CachedSite>();
  const paths = new Map<string, string | null>();
  const log = options.logger.child({ component: "metadata" });
  // Everything below can be triggered by a guest: rate-limited so no guest floods the journal.
  const guestLog: RateLimitedLogger = rateLimited(log, { perMinute: 60 });
  const servers: Array<Http1Server<Peer>> = [];

  /** The 200 answer for `path` from the guest's site, or undefined when the site has no such path. */
  const answerOf = (view: GuestView, path: string): Http1Response | undefined => {
    let cached = sites.get(view.docs);
    if (!cached || cached.config !== view.config) {
      cached = { config: view.config, site: buildSite(view.config, view.docs), answers: new Map() };
      sites.set(view.docs, cached);
    }
    const ready = cached.answers.get(path);
    if (ready) return ready;
    const resource = cached.site.get(path);
    if (!resource) return undefined;
    const answer = Http1Response.of(200, resource.headers, resource.body);
    cached.answers.set(path, answer);
    return answer;
  };

  const pathOf = (target: string): string | undefined => {
    const known = paths.get(target);
    if (known !== undefined) return known ?? undefined;
    const path = canonicalPath(target);
    if (paths.size >= PATH_MEMO_SIZE) paths.clear();
    paths.set(target, path ?? null);
    return path;
  };

  const handle = (req: Http1Request, peer: Peer): Http1Response => {
    const { local, remote, caller } = peer;
    if (local === undefined || remote === undefined) return NOT_FOUND;
    let view: GuestView | undefined;
    try {
      view = options.resolve(local, remote);
    } catch (error) {
      guestLog.error({ err: error, local, remote }, "metadata resolver failed");
      return INTERNAL;
    }
    if (view === undefined) return NOT_FOUND;
    if (limiter && !limiter.take(caller)) {
      guestLog.warn({ local, remote }, "metadata request over the rate limit");
      return TOO_MANY;
    }
    const path = pathOf(req.target);
    if (path === undefined) return NOT_FOUND;

    switch (req.method) {
      case "GET":
      case "HEAD": {
        if (path === TOKEN_PATH) return NOT_ALLOWED_TOKEN;
        if (!tokenOk(req, caller, requireToken)) return UNAUTHORIZED;
        const answer = answerOf(view, path);
        if (answer) return answer;
        if (PASSWORD_PATHS.has(path)) return sendPassword(view);
        return NOT_FOUND;
      }
      case "PUT":
        if (path !== TOKEN_PATH) return PASSWORD_PATHS.has(path) ? NOT_ALLOWED_PASSWORD : NOT_ALLOWED;
        return issueToken(req, caller);
      case "POST":
        if (!PASSWORD_PATHS.has(path)) return path === TOKEN_PATH ? NOT_ALLOWED_TOKEN : NOT_ALLOWED;
        if (!tokenOk(req, caller, false)) return UNAUTHORIZED;
        return receivePassword(req, view, { local, remote });
      default:
        return path === TOKEN_PATH ? NOT_ALLOWED_TOKEN : PASSWORD_PATHS.has(path) ? NOT_ALLOWED_PASSWORD : NOT_ALLOWED;
    }
  };

  /** A token, when sent, must be valid for this caller; without one, only `required` refuses. */
  const tokenOk = (req: Http1Request, caller: string, required: boolean): boolean => {
    const token = req.header(TOKEN_HEADER);
    if (token === undefined) return !required;
    return tokens.check(caller, token);
  };

  const issueToken = (req: Http1Request, caller: string): Http1Response => {
    // A PUT relayed by a proxy carries X-Forwarded-For: refuse it (IMDSv2's SSRF defence).
    if (req.header("x-forwarded-for") !== undefined) return FORBIDDEN;
    const ttl = parseTtl(req.header(TTL_HEADER));
    if (ttl === undefined) return BAD_REQUEST;
    const token = tokens.issue(caller, ttl);
    if (token === undefined) {
      guestLog.warn({ caller, live: tokens.size }, "IMDSv2 token store full; token request refused (503)");
      return TOKENS_FULL;
    }
    return Http1Response.of(200, { "content-type": "text/plain", [TTL_HEADER]: String(ttl) }, token);
  };

  const sendPassword = (view: GuestView): Http1Response => {
    let stored: Buffer | undefined;
    try {
      stored = view.readPassword?.();
    } catch (error) {
      guestLog.error({ err: error }, "reading the posted password failed");
      return INTERNAL;
    }
    if (!stored || stored.length === 0) return EMPTY;
    return Http1Response.of(200, { "content-type": "text/plain" }, stored);
  };

  /** The body is complete here (the framing reads it, up to MAX_BODY_BYTES, before calling us). */
  const receivePassword = (req: Http1Request, view: GuestView, who: { local: string; remote: string }): Http1Response => {
    const data = req.body;
    if (data.length > MAX_PASSWORD_BYTES) return TOO_LARGE;
    let outcome: "stored" | "conflict";
    try {
      outcome = view.postPassword(data);
    } catch (error) {
      guestLog.error({ err: error, ...who }, "storing the posted password failed");
      return INTERNAL;
    }
    // Never log the password itself.
    guestLog.info({ ...who, bytes: data.length, outcome }, "guest posted its password");
    return outcome === "stored" ? EMPTY : CONFLICT;
  };

  const connect = (socket: Socket): Peer => {
    const local = plainAddress(socket.localAddress);
    const remote = plainAddress(socket.remoteAddress);
    return { local, remote, caller: `${local}|${remote}` };
  };

  const newServer = (): Http1Server<Peer> =>
    new Http1Server<Peer>({
      connect,
      handle: options.onAnswered
        ? (req, peer) => {
            const answer = handle(req, peer);
            // The status line is "HTTP/1.1 NNN …": the code is bytes 9..12 of the head.
            options.onAnswered!(req.target, Number(answer.head.toString("latin1", 9, 12)));
            return answer;
          }
        : handle,
      limits: {
        maxHeaderBytes: MAX_HEADER_BYTES,
        maxBodyBytes: MAX_BODY_BYTES,
        ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
        ...(options.maxConnectionsPerSource !== undefined ? { maxConnectionsPerSource: options.maxConnectionsPerSource } : {}),
      },
      onOverCap: (remote, open, fromSource) =>
        guestLog.warn({ remote: plainAddress(remote), open, fromSource }, "metadata connection over the cap refused (503)"),
      onRefused: (status, peer) => guestLog.debug({ status, remote: peer.remote }, "malformed metadata request refused"),
      onError: (error) => guestLog.error({ err: error }, "metadata server failed"),
    });

  return {
    async listen() {
      if (servers.length > 0) throw new Error("metadata server is already listening");
      try {
        for (const { host, port } of options.listen) {
          const server = newServer();
          servers.push(server);
          await server.listen(host, port);
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
        return a ? [a] : [];
      });
    },
  };
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) → `10.0.0.1`. */
function plainAddress(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

async function closeAll(servers: ReadonlyArray<Http1Server<unknown>>): Promise<void> {
  await Promise.all(servers.map((s) => s.close()));
}
