import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ChunkedDecoder } from "../../../agent/metadata/http1-chunked.js";
import { parseHead } from "../../../agent/metadata/http1-head.js";
import { Http1Request, Http1Response, Http1Server, type Http1Limits } from "../../../agent/metadata/http1.js";
import { createMetadataServer } from "../../../agent/metadata/server.js";
import { guestView, silentLogger } from "./fixture.js";

const servers: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Echo {
  server: Http1Server<string>;
  port: number;
  seen: Http1Request[];
  refused: number[];
}

/** A server that answers every request with `METHOD target <body length> body`. */
async function echo(o: { limits?: Partial<Http1Limits>; handle?: (r: Http1Request) => Http1Response } = {}): Promise<Echo> {
  const seen: Http1Request[] = [];
  const refused: number[] = [];
  const server = new Http1Server<string>({
    connect: (socket) => socket.remoteAddress ?? "?",
    handle: (request) => {
      seen.push(request);
      if (o.handle) return o.handle(request);
      const body = request.body.toString("latin1");
      return Http1Response.of(200, { "content-type": "text/plain" }, `${request.method} ${request.target} ${body.length} ${body}`);
    },
    limits: o.limits,
    onRefused: (status) => refused.push(status),
  });
  await server.listen("127.0.0.1", 0);
  servers.push(server);
  return { server, port: server.address()!.port, seen, refused };
}

/** A raw TCP client: what it received so far, and whether the server closed. */
class Raw {
  readonly socket: Socket;
  received = Buffer.alloc(0);
  /** Bytes received, kept or not. */
  count = 0;
  closed = false;
  /** Keep what is received (false: only count it). */
  keep = true;
  private waiters: Array<() => void> = [];

  constructor(port: number, from = "127.0.0.1") {
    this.socket = connect({ host: "127.0.0.1", port, localAddress: from });
    this.socket.setNoDelay(true);
    this.socket.on("data", (d: Buffer) => {
      this.count += d.length;
      if (this.keep) this.received = Buffer.concat([this.received, d]);
      this.wake();
    });
    this.socket.on("error", () => undefined);
    this.socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    servers.push({ close: async () => void this.socket.destroy() });
  }

  get text(): string {
    return this.received.toString("latin1");
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Sends each byte in its own write, waiting between them so that they arrive apart. */
  async trickle(data: string): Promise<void> {
    for (const ch of data) {
      this.socket.write(ch);
      await sleep(2);
    }
  }

  /** Waits until `until` holds (or the server closes, or `ms` pass). */
  async wait(until: (r: Raw) => boolean, ms = 2000): Promise<this> {
    const deadline = Date.now() + ms;
    while (!until(this) && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
    return this;
  }

  answers(): number {
    return (this.text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** One `date:` line (RFC 9110 IMF-fixdate) right after each status line. */
const DATE_LINE = /date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/g;
/** The text with each answer's date line checked (one per status line, within 2 s of now) and removed. */
function undated(text: string): string {
  const statusLines = text.match(/HTTP\/1\.1 \d{3} [^\r]*\r\n/g) ?? [];
  const dates = [...text.matchAll(/HTTP\/1\.1 \d{3} [^\r]*\r\ndate: ([^\r]*)\r\n/g)].map((m) => m[1]!);
  expect(dates).toHaveLength(statusLines.length);
  for (const d of dates) expect(Math.abs(Date.parse(d) - Date.now())).toBeLessThan(2500);
  return text.replace(DATE_LINE, "");
}
const GET = (target: string, extra = "") => `GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

describe("Http1Server framing", () => {
  it("answers pipelined requests in one TCP segment in order, and keeps the connection open", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    c.send(GET("/a") + GET("/b") + GET("/c"));
    await c.wait((r) => r.answers() === 3);
    expect(c.text.match(/GET \/[abc]/g)).toEqual(["GET /a", "GET /b", "GET /c"]);
    expect(c.closed).toBe(false);
    c.send(GET("/d"));
    await c.wait((r) => r.answers() === 4);
    expect(c.text).toContain("GET /d");
  });

  it("puts a request together from bytes that arrive one at a time", async () => {
    const { port, seen } = await echo();
    const c = new Raw(port);
    await c.trickle("POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    await c.wait((r) => r.answers() === 1);
    expect(c.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(c.text.endsWith("POST /split 5 hello")).toBe(true);
    expect(seen).toHaveLength(1);
  });

  it("reads a POST body that arrives in several pieces, and one that follows in the same segment as the next request", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
    await sleep(30);
    c.send("567");
    await sleep(30);
    c.send("89" + GET("/after"));
    await c.wait((r) => r.answers() === 2);
    expect(c.text).toContain("POST /p 10 0123456789");
    expect(c.text).toContain("GET /after 0");
  });

  it("decodes a chunked body split anywhere, extensions and trailers included", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    await c.trickle("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n");
    await c.wait((r) => r.answers() === 1);
    expect(c.text).toContain("POST /c 5 abcde");
    expect(c.closed).toBe(false);
  });

  it("closes after answering HTTP/1.0, unless it asks for keep-alive, which is echoed", async () => {
    const { port } = await echo();
    const a = new Raw(port);
    a.send("GET /old HTTP/1.0\r\n\r\n");
    await a.wait((r) => r.closed);
    expect(a.closed).toBe(true);
    expect(a.text).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n/);

    const b = new Raw(port);
    b.send("GET /old HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    await b.wait((r) => r.answers() === 1);
    expect(b.text).toContain("connection: keep-alive\r\n");
    b.send("GET /again HTTP/1.0\r\n\r\n");
    await b.wait((r) => r.closed);
    expect(b.answers()).toBe(2);
  });

  it("closes after answering a request with Connection: close, and answers nothing pipelined after it", async () => {
    const { port, seen } = await echo();
    const c = new Raw(port);
    c.send(GET("/last", "Connection: close\r\n") + GET("/ignored"));
    await c.wait((r) => r.closed);
    expect(c.closed).toBe(true);
    expect(c.answers()).toBe(1);
    expect(c.text).toContain("connection: close\r\n");
    expect(seen.map((r) => r.target)).toEqual(["/last"]);
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    c.send(`HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n${GET("/g")}`);
    await c.wait((r) => r.answers() === 2);
    const [head, get] = undated(c.text).split(/(?=HTTP\/1\.1 200)/);
    expect(head).toBe("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\n");
    expect(get).toContain("GET /g 0 ");
  });

  it("refuses a head larger than maxHeaderBytes with 431 and closes, whether or not its end has arrived", async () => {
    const { port, seen } = await echo({ limits: { maxHeaderBytes: 1024 } });
    for (const head of [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(2000)}`, `${GET("/", `X-Big: ${"a".repeat(1000)}\r\n`)}`]) {
      const c = new Raw(port);
      c.send(head);
      await c.wait((r) => r.closed);
      expect(undated(c.text)).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n$/);
    }
    const ok = new Raw(port);
    ok.send(GET("/", `X-Fits: ${"a".repeat(900)}\r\n`));
    await ok.wait((r) => r.answers() === 1);
    expect(ok.text).toMatch(/^HTTP\/1\.1 200/);
    expect(seen).toHaveLength(1);
  });

  it("refuses malformed heads with 400 and closes", async () => {
    const { port, seen, refused } = await echo();
    const bad = [
      "NOT HTTP AT ALL\r\n\r\n",
      "GET /\r\nHost: x\r\n\r\n",
      "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
      "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
      "GET / http/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1\nHost: x\n\n",
      "GET / HTTP/1.1\r\nHost: x\n\r\n",
      "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
      "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
    ];
    for (const text of bad) {
      const c = new Raw(port);
      c.send(Buffer.from(text, "latin1"));
      await c.wait((r) => r.closed);
      expect([JSON.stringify(text), c.text.slice(0, 24), c.closed]).toEqual([JSON.stringify(text), "HTTP/1.1 400 Bad Request", true]);
    }
    expect(seen).toHaveLength(0);
    expect(refused).toEqual(bad.map(() => 400));
  });

  it("skips empty lines before a request line", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    c.send(`\r\n\r\n${GET("/x")}`);
    await c.wait((r) => r.answers() === 1);
    expect(c.text).toContain("GET /x 0");
  });

  it("refuses Transfer-Encoding other than a lone chunked on HTTP/1.1 without Content-Length", async () => {
    const { port, seen } = await echo();
    const cases: Array<[string, string]> = [
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "400"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "400"],
      ["POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "400"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", "400"],
      ["POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", "400"],
    ];
    for (const [text, status] of cases) {
      const c = new Raw(port);
      c.send(text);
      await c.wait((r) => r.closed);
      expect([text, c.text.slice(9, 12), c.closed]).toEqual([text, status, true]);
    }
    expect(seen).toHaveLength(0);
  });

  it("refuses Content-Length that repeats with another value or is not plain digits; accepts a repeated equal one", async () => {
    const { port } = await echo();
    for (const cl of ["Content-Length: 3\r\nContent-Length: 4\r\n", "Content-Length: +3\r\n", "Content-Length: 3, 3\r\n", "Content-Length: 0x3\r\n", "Content-Length: \r\n"]) {
      const c = new Raw(port);
      c.send(`POST / HTTP/1.1\r\nHost: x\r\n${cl}\r\nabc`);
      await c.wait((r) => r.closed);
      expect([cl, c.text.slice(0, 12)]).toEqual([cl, "HTTP/1.1 400"]);
    }
    const ok = new Raw(port);
    ok.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc");
    await ok.wait((r) => r.answers() === 1);
    expect(ok.text).toContain("POST / 3 abc");
  });

  it("refuses a body over maxBodyBytes, declared or chunked, with 400 and closes", async () => {
    const { port, seen } = await echo({ limits: { maxBodyBytes: 8 } });
    const declared = new Raw(port);
    declared.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n123456789");
    await declared.wait((r) => r.closed);
    expect(declared.text.slice(0, 12)).toBe("HTTP/1.1 400");
    const chunked = new Raw(port);
    chunked.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n4\r\n6789\r\n0\r\n\r\n");
    await chunked.wait((r) => r.closed);
    expect(chunked.text.slice(0, 12)).toBe("HTTP/1.1 400");
    const fits = new Raw(port);
    fits.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678");
    await fits.wait((r) => r.answers() === 1);
    expect(seen.map((r) => r.body.toString())).toEqual(["12345678"]);
  });

  it("answers Expect: 100-continue before reading the body, and 417 to any other expectation", async () => {
    const { port } = await echo();
    const c = new Raw(port);
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    await c.wait((r) => r.answers() === 1);
    expect(c.text).toBe("HTTP/1.1 100 Continue\r\n\r\n");
    c.send("ok");
    await c.wait((r) => r.answers() === 2);
    expect(c.text).toContain("POST / 2 ok");
    const d = new Raw(port);
    d.send("GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n");
    await d.wait((r) => r.closed);
    expect(d.text.slice(0, 12)).toBe("HTTP/1.1 417");
  });

  it("answers 408 and closes when a head or a body does not arrive in time, and closes idle connections quietly", async () => {
    const limits = { headersTimeoutMs: 150, requestTimeoutMs: 300, idleTimeoutMs: 200, lingerMs: 100 };
    const { port, refused } = await echo({ limits });
    const head = new Raw(port);
    const t0 = Date.now();
    head.send("GET / HTTP/1.1\r\nHost:");
    await head.wait((r) => r.closed);
    expect(head.text).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(Date.now() - t0).toBeLessThan(1000);

    // A trickling head does not reset the clock.
    const slow = new Raw(port);
    const t1 = Date.now();
    for (let i = 0; i < 20 && !slow.closed; i++) {
      slow.send(i === 0 ? "GET / HTTP/1.1\r\n" : "X-A: 1\r\n");
      await sleep(25);
    }
    await slow.wait((r) => r.closed);
    expect(slow.text.slice(0, 12)).toBe("HTTP/1.1 408");
    expect(Date.now() - t1).toBeLessThan(400);

    const body = new Raw(port);
    body.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab");
    await body.wait((r) => r.closed);
    expect(body.text.slice(0, 12)).toBe("HTTP/1.1 408");

    const idle = new Raw(port);
    idle.send(GET("/"));
    await idle.wait((r) => r.answers() === 1);
    await idle.wait((r) => r.closed);
    expect(idle.closed).toBe(true);
    expect(idle.answers()).toBe(1);

    const silent = new Raw(port);
    await silent.wait((r) => r.closed);
    expect([silent.closed, silent.text]).toEqual([true, ""]);
    expect(refused).toEqual([408, 408, 408]);
  });

  it("answers 500 and closes when the handler throws", async () => {
    const errors: unknown[] = [];
    const server = new Http1Server<null>({
      connect: () => null,
      handle: () => {
        throw new Error("boom");
      },
      onError: (e) => errors.push(e),
    });
    await server.listen("127.0.0.1", 0);
    servers.push(server);
    const c = new Raw(server.address()!.port);
    c.send(GET("/"));
    await c.wait((r) => r.closed);
    expect(c.text.slice(0, 12)).toBe("HTTP/1.1 500");
    expect(errors).toHaveLength(1);
  });

  it("stops parsing pipelined requests while a client does not read its answers", async () => {
    const big = Http1Response.of(200, {}, Buffer.alloc(60 * 1024, 0x61));
    const { port, seen } = await echo({ handle: () => big });
    const c = new Raw(port);
    c.keep = false;
    c.socket.pause();
    c.send(GET("/").repeat(1000));
    await sleep(300);
    expect(seen.length).toBeLessThan(1000);
    c.socket.resume();
    await c.wait(() => c.count >= 1000 * (big.headOnly.length + big.body.length), 10_000);
    expect(seen).toHaveLength(1000);
  });

  it("close() ends every open connection and resolves", async () => {
    const { server, port } = await echo();
    const a = new Raw(port);
    const b = new Raw(port);
    a.send(GET("/"));
    b.send("GET / HTTP/1.1\r\n");
    await a.wait((r) => r.answers() === 1);
    await sleep(20);
    expect(server.connectionCount).toBe(2);
    await server.close();
    await a.wait((r) => r.closed);
    await b.wait((r) => r.closed);
    expect([a.closed, b.closed, server.connectionCount]).toEqual([true, true, 0]);
    expect(server.address()).toBeUndefined();
  });
});

describe("parseHead()", () => {
  const parse = (text: string) => {
    const buf = Buffer.from(text, "latin1");
    return parseHead(buf, 0, buf.length - 2);
  };

  it("reads method, target, version, headers (case-insensitive, repeated ones joined) and keep-alive", () => {
    const r = parse("PATCH /a%20b HTTP/1.1\r\nHOST: x\r\nX-Token:  t1 \r\nx-token: t2\r\n\r\n");
    expect(r).toBeInstanceOf(Http1Request);
    const req = r as Http1Request;
    expect([req.method, req.target, req.minor, req.keepAlive]).toEqual(["PATCH", "/a%20b", 1, true]);
    expect(req.header("x-token")).toBe("t1, t2");
    expect(req.header("host")).toBe("x");
    expect(req.header("missing")).toBeUndefined();
  });

  it("keeps HTTP/1.1 open unless Connection says close, among other tokens", () => {
    expect((parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n") as Http1Request).keepAlive).toBe(false);
    expect((parse("GET / HTTP/1.0\r\n\r\n") as Http1Request).keepAlive).toBe(false);
    expect((parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") as Http1Request).keepAlive).toBe(true);
  });
});

describe("ChunkedDecoder", () => {
  it("decodes whatever way the bytes are cut", () => {
    const wire = "4\r\nWiki\r\n5;a=b\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nNEXT";
    for (let cut = 1; cut < wire.length; cut++) {
      const d = new ChunkedDecoder(100);
      let pending = Buffer.alloc(0);
      let rest = "";
      for (const piece of [wire.slice(0, cut), wire.slice(cut)]) {
        if (d.done) {
          rest += piece;
          continue;
        }
        pending = Buffer.concat([pending, Buffer.from(piece, "latin1")]);
        const pos = d.feed(pending, 0);
        expect(d.failed).toBe(false);
        pending = pending.subarray(pos);
        if (d.done) rest += pending.toString("latin1");
      }
      expect([cut, d.done, d.body().toString(), rest]).toEqual([cut, true, "Wikipedia in\r\n\r\nchunks.", "NEXT"]);
    }
  });

  it("fails on a body over its limit and on a size with too many digits", () => {
    const over = new ChunkedDecoder(4);
    over.feed(Buffer.from("5\r\n12345\r\n0\r\n\r\n"), 0);
    expect(over.failed).toBe(true);
    const digits = new ChunkedDecoder(1 << 30);
    digits.feed(Buffer.from("000000001\r\nx\r\n0\r\n\r\n"), 0);
    expect(digits.failed).toBe(true);
  });
});

describe("the metadata server on its own framing", () => {
  async function start() {
    const view = guestView();
    const server = createMetadataServer({
      listen: [{ host: "127.0.0.1", port: 0 }],
      resolve: (_local, remote) => (remote === "127.0.0.1" ? view : undefined),
      logger: silentLogger(),
      rateLimit: false,
    });
    await server.listen();
    servers.push(server);
    return server.addresses()[0]!.port;
  }

  it("answers a request from an unknown address 404, on raw bytes too", async () => {
    const port = await start();
    const c = new Raw(port, "127.0.0.2");
    c.send(GET("/latest/meta-data/instance-id"));
    await c.wait((r) => r.answers() === 1);
    expect(undated(c.text)).toBe("HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nNot Found");
  });

  it("answers a known guest's pipelined GET and HEAD from the same ready answer", async () => {
    const port = await start();
    const c = new Raw(port);
    c.send(GET("/latest/meta-data/instance-id") + "HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n" + GET("/latest/meta-data/instance-id", "Connection: close\r\n"));
    await c.wait((r) => r.closed);
    const head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n";
    expect(undated(c.text)).toBe(`${head}\r\nins-3g445roi${head}\r\n${head}connection: close\r\n\r\nins-3g445roi`);
  });

  it("refuses a password POST over MAX_PASSWORD_BYTES with 400 and Connection: close", async () => {
    const port = await start();
    const c = new Raw(port);
    c.send(`POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nContent-Length: 1021\r\n\r\n${"p".repeat(1021)}`);
    await c.wait((r) => r.closed);
    expect(c.text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[^]*connection: close\r\n/);
  });
});
