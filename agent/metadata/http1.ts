/**
 * A small, strict HTTP/1.1 server on node:net: only what the metadata endpoint needs,
 * fast on its hot path (a kept-alive GET of a ready answer is: find the end of the
 * head, parse it, call the handler, one socket.write).
 *
 * What the framing does (the message grammar is in http1-head.ts):
 * - HTTP/1.1 connections stay open unless the request says `Connection: close`;
 *   HTTP/1.0 ones close unless it says `Connection: keep-alive` (echoed back).
 * - Pipelined requests are answered in order; a request may arrive in any number of
 *   pieces. Empty lines before a request line are skipped (RFC 9112 §2.2).
 * - A head (request line, headers, blank line) over `maxHeaderBytes` → 431; a head
 *   that does not parse → 400 (417 for an unknown Expect); a body over `maxBodyBytes`
 *   → 400. Each of these answers closes the connection.
 * - A body (Content-Length only) is read whole before the handler is called, whatever
 *   the method, so that the framing of the next request stays right.
 * - Timeouts: a head must be complete `headersTimeoutMs` after its first byte and a
 *   body `requestTimeoutMs` after it (408 and close); a connection with no request
 *   under way closes after `idleTimeoutMs`. They are checked by one interval per
 *   server, not a timer per request.
 * - A closing answer ends our side and then drains what the client still sends for
 *   up to `lingerMs` (closing with unread input would reset the connection and could
 *   lose the answer), then destroys the socket.
 * - A client that does not read its answers: once `maxQueuedBytes` wait in the socket,
 *   no further pipelined request is parsed (and the socket is paused) until they
 *   drain; a connection stuck like that for `requestTimeoutMs` is destroyed.
 * - Connections: at most `maxConnections` open at once, `maxConnectionsPerSource` from one
 *   remote address; one more gets `503 Service Unavailable` (connection: close,
 *   retry-after: 1) at once, unasked, and is closed after `lingerMs` (at most
 *   MAX_LINGERING_REFUSALS of them linger; past that they are closed unanswered).
 * - Every answer, refusals included, carries `Date` (http1-head.ts).
 * Nothing here throws out of a socket event: a handler that throws answers 500 and
 * closes; a socket error destroys the socket.
 */
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { ChunkedDecoder } from "./http1-chunked.js";
import { CR, LF, Http1Response, parseHead, type Http1Request } from "./http1-head.js";

export { Http1Request, Http1Response, type ResponseOptions } from "./http1-head.js";

export interface Http1Limits {
  /** Request line + headers + the blank line, bytes. */
  readonly maxHeaderBytes: number;
  /** Largest Content-Length read; a larger one is refused with 400. */
  readonly maxBodyBytes: number;
  /** From a request's first byte until its head is complete, ms. */
  readonly headersTimeoutMs: number;
  /** From a request's first byte until its body is complete, ms. */
  readonly requestTimeoutMs: number;
  /** A connection with no request under way is closed after this, ms. */
  readonly idleTimeoutMs: number;
  /** After a closing answer, how long the client's further input is drained, ms. */
  readonly lingerMs: number;
  /** Answer bytes queued in a socket beyond which parsing waits for them to drain. */
  readonly maxQueuedBytes: number;
  /** Open connections at once; more are refused with 503. */
  readonly maxConnections: number;
  /** Open connections at once from one remote address; more are refused with 503. */
  readonly maxConnectionsPerSource: number;
}

export const DEFAULT_HTTP1_LIMITS: Http1Limits = Object.freeze({
  maxHeaderBytes: 8 * 1024,
  maxBodyBytes: 4 * 1024,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 5_000,
  lingerMs: 2_000,
  maxQueuedBytes: 64 * 1024,
  maxConnections: 4096,
  maxConnectionsPerSource: 128,
});

/** Refused connections kept open at once to read their 503; more are closed unanswered. */
const MAX_LINGERING_REFUSALS = 256;

export interface Http1ServerOptions<C> {
  /** Called once per accepted socket; what it returns is handed to every handle() of that connection. */
  connect(socket: Socket): C;
  /** Answers one complete request. Should not throw; if it does, the answer is 500 and the connection closes. */
  handle(request: Http1Request, context: C): Http1Response;
  limits?: Partial<Http1Limits>;
  /** A request the framing refused (400, 408, 417, 431): the client's doing, for a debug line. */
  onRefused?(status: number, context: C): void;
  /** The handler or connect() threw, or the listener failed after it started: our doing. */
  onError?(error: unknown): void;
  /** A connection over a cap was refused (503), for a rate-limited log line. */
  onOverCap?(remote: string, open: number, fromSource: number): void;
}

const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1");
const CLOSE_TAIL = Buffer.from("connection: close\r\n\r\n", "latin1");
const KEEP_ALIVE_TAIL = Buffer.from("connection: keep-alive\r\n\r\n", "latin1");
const CONTINUE = Buffer.from("HTTP/1.1 100 Continue\r\n\r\n", "latin1");
const refusal = (status: number) => Http1Response.of(status, {}, "", { close: true });
const REFUSALS = new Map([400, 408, 417, 431, 500, 501].map((s) => [s, refusal(s)]));
const OVER_CAP = Http1Response.of(503, { "retry-after": "1" }, "", { close: true });
/** A refusal's bytes, dated now. */
const refusalBytes = (response: Http1Response, now: number) => Buffer.concat([response.stamp(now).head, CLOSE_TAIL]);

/** Where a connection is between requests. */
const IDLE = 0;
const HEAD = 1;
const BODY = 2;
/** Our side ended; draining the client's input until it closes or `lingerMs` pass. */
const CLOSING = 3;

class Connection<C> {
  state = IDLE;
  /** When the current state times out (Date.now() ms). */
  deadline: number;
  /** Parsing waits for queued answers to drain. */
  paused = false;
  private pending: Buffer | undefined;
  /** Where the search for the end of the head resumes in `pending`. */
  private scanFrom = 0;
  /** When the current request's first byte arrived. */
  private started = 0;
  private request: Http1Request | undefined;
  private body: Buffer | undefined;
  private bodyFilled = 0;
  private chunked: ChunkedDecoder | undefined;
  private answered = 0;
  private corked = false;

  constructor(
    readonly socket: Socket,
    private readonly owner: Http1Server<C>,
    private readonly limits: Http1Limits,
    private readonly context: C,
    now: number,
  ) {
    this.deadline = now + limits.idleTimeoutMs;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => this.onDrain());
    socket.on("error", () => socket.destroy());
    socket.on("close", () => owner.forget(this));
  }

  /** Called by the server's interval once `deadline` has passed. */
  expire(now: number): void {
    if ((this.state === HEAD || this.state === BODY) && !this.paused) this.refuse(408, now);
    else this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.state === CLOSING) return;
    this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    if (!this.paused) this.process(Date.now());
  }

  private onDrain(): void {
    if (!this.paused || this.state === CLOSING) return;
    this.paused = false;
    this.socket.resume();
    const now = Date.now();
    if (this.state === IDLE) this.deadline = now + this.limits.idleTimeoutMs;
    if (this.pending !== undefined) this.process(now);
  }

  private process(now: number): void {
    const buf = this.pending!;
    this.pending = undefined;
    const L = this.limits;
    let pos = 0;
    this.answered = 0;
    try {
      while (pos < buf.length && this.state !== CLOSING && !this.paused) {
        if (this.state === BODY && this.chunked !== undefined) {
          const decoder = this.chunked;
          const next = decoder.feed(buf, pos);
          if (decoder.failed) return this.refuse(400, now);
          if (!decoder.done) {
            // A line that has not fully arrived stays in `pending`.
            pos = next;
            break;
          }
          pos = next;
          const request = this.request!;
          request.body = decoder.body();
          this.request = undefined;
          this.chunked = undefined;
          this.answer(request, now);
          continue;
        }
        if (this.state === BODY) {
          const body = this.body!;
          const take = Math.min(body.length - this.bodyFilled, buf.length - pos);
          buf.copy(body, this.bodyFilled, pos, pos + take);
          this.bodyFilled += take;
          pos += take;
          if (this.bodyFilled === body.length) {
            const request = this.request!;
            request.body = body;
            this.request = undefined;
            this.body = undefined;
            this.answer(request, now);
          }
          continue;
        }
        // Empty lines before a request line are skipped.
        while (pos + 1 < buf.length && buf[pos] === CR && buf[pos + 1] === LF) pos += 2;
        if (pos >= buf.length) break;
        if (this.state === IDLE) {
          this.state = HEAD;
          this.started = now;
          this.deadline = now + L.headersTimeoutMs;
          this.scanFrom = pos;
        }
        const end = buf.indexOf(CRLFCRLF, Math.max(pos, this.scanFrom));
        if (end < 0) {
          if (buf.length - pos >= L.maxHeaderBytes) return this.refuse(431, now);
          // A head with bare LF line ends would otherwise wait for its timeout.
          if (bareLf(buf, Math.max(pos, this.scanFrom))) return this.refuse(400, now);
          this.scanFrom = Math.max(pos, buf.length - 3);
          break;
        }
        if (end + 4 - pos > L.maxHeaderBytes) return this.refuse(431, now);
        const request = parseHead(buf, pos, end + 2);
        pos = end + 4;
        this.scanFrom = pos;
        if (typeof request === "number") return this.refuse(request, now);
        if (request.contentLength === 0 && !request.chunked) {
          this.answer(request, now);
          continue;
        }
        if (request.contentLength > L.maxBodyBytes) return this.refuse(400, now);
        this.state = BODY;
        this.deadline = this.started + L.requestTimeoutMs;
        this.request = request;
        if (request.chunked) this.chunked = new ChunkedDecoder(L.maxBodyBytes);
        else {
          this.body = Buffer.allocUnsafe(request.contentLength);
          this.bodyFilled = 0;
        }
        if (request.expectContinue && this.socket.writable) this.socket.write(CONTINUE);
      }
      if (pos < buf.length && this.state !== CLOSING) {
        this.pending = pos === 0 ? buf : buf.subarray(pos);
        this.scanFrom = Math.max(0, this.scanFrom - pos);
      } else {
        this.scanFrom = 0;
      }
    } catch (error) {
      // A bug of ours; the connection cannot be trusted to be in step any more.
      this.owner.reportError(error);
      this.socket.destroy();
    } finally {
      if (this.corked) {
        this.corked = false;
        this.socket.uncork();
      }
    }
  }

  private answer(request: Http1Request, now: number): void {
    let response: Http1Response;
    try {
      response = this.owner.handle(request, this.context);
    } catch (error) {
      this.owner.reportError(error);
      return this.refuse(500, now, false);
    }
    const keepAlive = request.keepAlive && !response.close;
    this.write(response, request.method === "HEAD", keepAlive, request.minor, now);
    if (!keepAlive) return this.closeGently(now);
    this.state = IDLE;
    if (this.socket.writableLength > Math.max(this.limits.maxQueuedBytes, this.socket.writableHighWaterMark)) {
      this.paused = true;
      this.socket.pause();
      this.deadline = now + this.limits.requestTimeoutMs;
    } else {
      this.deadline = now + this.limits.idleTimeoutMs;
    }
  }

  private write(response: Http1Response, head: boolean, keepAlive: boolean, minor: 0 | 1, now: number): void {
    const s = this.socket;
    if (!s.writable) return;
    response.stamp(now);
    // Answers to pipelined requests after the first go out together.
    if (++this.answered === 2 && !this.corked) {
      this.corked = true;
      s.cork();
    }
    if (keepAlive && minor === 1) {
      if (head) s.write(response.headOnly);
      else if (response.whole !== undefined) s.write(response.whole);
      else this.writeBoth(response.headOnly, response.body);
      return;
    }
    const tail = keepAlive ? KEEP_ALIVE_TAIL : CLOSE_TAIL;
    if (head) s.write(Buffer.concat([response.head, tail]));
    else this.writeBoth(Buffer.concat([response.head, tail]), response.body);
  }

  private writeBoth(head: Buffer, body: Buffer): void {
    if (this.corked) {
      this.socket.write(head);
      this.socket.write(body);
      return;
    }
    this.socket.cork();
    this.socket.write(head);
    this.socket.write(body);
    this.socket.uncork();
  }

  private refuse(status: number, now: number, report = true): void {
    if (report) this.owner.refused(status, this.context);
    if (this.socket.writable) this.socket.write(refusalBytes(REFUSALS.get(status) ?? REFUSALS.get(400)!, now));
    this.closeGently(now);
  }

  private closeGently(now: number): void {
    this.state = CLOSING;
    this.pending = undefined;
    this.request = undefined;
    this.body = undefined;
    this.chunked = undefined;
    this.deadline = now + this.limits.lingerMs;
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    this.socket.end();
  }
}

/** Whether an LF without a CR before it is in `buf[from…]`. */
function bareLf(buf: Buffer, from: number): boolean {
  for (let i = buf.indexOf(LF, from); i >= 0; i = buf.indexOf(LF, i + 1)) if (i === 0 || buf[i - 1] !== CR) return true;
  return false;
}

/** One listening address and its connections. */
export class Http1Server<C> {
  readonly limits: Http1Limits;
  private readonly server: Server;
  private readonly connections = new Set<Connection<C>>();
  /** Open connections per remote address. */
  private readonly perSource = new Map<string, number>();
  private lingeringRefusals = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: Http1ServerOptions<C>) {
    this.limits = Object.freeze({ ...DEFAULT_HTTP1_LIMITS, ...options.limits });
    this.server = createServer({ allowHalfOpen: false }, (socket) => this.accept(socket));
  }

  listen(host: string, port: number): Promise<void> {
    if (this.closed) return Promise.reject(new Error("this server was closed"));
    return new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen({ host, port }, () => {
        this.server.off("error", reject);
        this.server.on("error", (error) => this.reportError(error));
        this.startSweeper();
        resolve();
      });
    });
  }

  /** The bound address, or undefined when not listening. */
  address(): { host: string; port: number } | undefined {
    const a = this.server.address();
    return a && typeof a === "object" ? { host: (a as AddressInfo).address, port: (a as AddressInfo).port } : undefined;
  }

  /** Open connections (tests). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Stops listening, destroys every open connection, resolves once the listener and they are closed. */
  close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    const closing: Array<Promise<void>> = [...this.connections].map(
      (c) => new Promise<void>((resolve) => (c.socket.closed ? resolve() : c.socket.once("close", () => resolve()))),
    );
    for (const c of this.connections) c.socket.destroy();
    closing.push(
      new Promise<void>((resolve) => {
        if (!this.server.listening) return resolve();
        this.server.close(() => resolve());
      }),
    );
    return Promise.all(closing).then(() => undefined);
  }

  /** @internal */
  handle(request: Http1Request, context: C): Http1Response {
    return this.options.handle(request, context);
  }

  /** @internal */
  refused(status: number, context: C): void {
    try {
      this.options.onRefused?.(status, context);
    } catch (error) {
      this.reportError(error);
    }
  }

  /** @internal */
  reportError(error: unknown): void {
    try {
      this.options.onError?.(error);
    } catch {
      // A failing error reporter must not take a socket handler down with it.
    }
  }

  /** @internal */
  forget(connection: Connection<C>): void {
    if (!this.connections.delete(connection)) return;
    const source = connection.socket.remoteAddress ?? "?";
    const left = (this.perSource.get(source) ?? 1) - 1;
    if (left <= 0) this.perSource.delete(source);
    else this.perSource.set(source, left);
  }

  /** Answers 503 at once and closes after lingerMs, draining what the client sends. */
  private refuseOverCap(socket: Socket, source: string, fromSource: number): void {
    try {
      this.options.onOverCap?.(source, this.connections.size, fromSource);
    } catch (error) {
      this.reportError(error);
    }
    if (this.lingeringRefusals >= MAX_LINGERING_REFUSALS) return void socket.destroy();
    this.lingeringRefusals++;
    const timer = setTimeout(() => socket.destroy(), this.limits.lingerMs);
    timer.unref();
    socket.once("close", () => {
      clearTimeout(timer);
      this.lingeringRefusals--;
    });
    socket.resume();
    socket.end(refusalBytes(OVER_CAP, Date.now()));
  }

  private accept(socket: Socket): void {
    socket.on("error", () => socket.destroy());
    if (this.closed) return void socket.destroy();
    const source = socket.remoteAddress ?? "?";
    const fromSource = this.perSource.get(source) ?? 0;
    if (this.connections.size >= this.limits.maxConnections || fromSource >= this.limits.maxConnectionsPerSource) {
      return this.refuseOverCap(socket, source, fromSource);
    }
    let context: C;
    try {
      socket.setNoDelay(true);
      context = this.options.connect(socket);
    } catch (error) {
      this.reportError(error);
      socket.destroy();
      return;
    }
    this.connections.add(new Connection(socket, this, this.limits, context, Date.now()));
    this.perSource.set(source, fromSource + 1);
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    const L = this.limits;
    const shortest = Math.min(L.headersTimeoutMs, L.requestTimeoutMs, L.idleTimeoutMs, L.lingerMs);
    const every = Math.min(1000, Math.max(5, Math.floor(shortest / 10)));
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const c of this.connections) if (c.deadline <= now) c.expire(now);
    }, every);
    this.sweeper.unref();
  }
}
