/**
 * Differential test of the metadata endpoint's HTTP/1.1 server (agent/metadata/http1*.ts)
 * against node:http: random requests, and the same requests with bytes flipped, inserted
 * and deleted, are sent to both over real loopback sockets, cut into random pieces.
 * Both must complete the same requests (none when one refuses the stream) with the same
 * method, target, header lines and body.
 *
 * Deliberate differences, normalised below:
 * - Methods: node:http knows a fixed list of methods and refuses any other; ours takes any
 *   token and leaves unknown methods to the handler (the metadata server answers 405). A
 *   request ours completes with a method node does not know counts as refused by both.
 * - Request targets: node:http refuses one that is not in origin form ("/…"), absolute
 *   form ("http://…") or "*" (e.g. "latest/meta-data"); ours takes any visible ASCII and
 *   the metadata server answers 404 for what it does not serve. Such a request that ours
 *   completes counts as refused by both.
 * - Transfer codings other than chunked: ours answers 501, node 400: both refuse.
 * - Before a request line, node:http skips any CR and LF bytes; ours skips empty lines,
 *   CRLF pairs (RFC 9112 §2.2), and refuses a bare CR or LF there. Mutated streams with a
 *   bare CR or LF before a request line are left out.
 * - A request line without a version ("GET /x") is HTTP/0.9 to node:http, which takes it
 *   (and the header lines after it); ours speaks HTTP/1.0 and 1.1 only and refuses it. A
 *   request node completes as HTTP/0.9 counts as refused by both.
 * - node:http is run with `requireHostHeader: false`: ours refuses an HTTP/1.1 request
 *   without exactly one Host itself, so the generated requests carry one.
 * Sizes stay under both servers' limits (ours: 8 KiB heads, 4 KiB bodies).
 */
import fc from "fast-check";
import { METHODS, createServer, type IncomingMessage, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Http1Response, Http1Server, type Http1Request } from "../../../agent/metadata/http1.js";

const RUNS = 120;

/** What a server made of one complete request. */
interface Seen {
  method: string;
  target: string;
  /** [lowercase name, value] in the order received. */
  headers: Array<[string, string]>;
  body: string;
}

let ours: Http1Server<null>;
let oursPort: number;
let oursSeen: Seen[] = [];
let node: Server;
let nodePort: number;
let nodeSeen: Seen[] = [];
let nodeAfter09 = false;

beforeAll(async () => {
  ours = new Http1Server<null>({
    connect: () => null,
    handle: (request: Http1Request) => {
      // The header lines as parsed, in order (the request keeps them as name, value, …).
      const fields = (request as unknown as { fields: readonly string[] }).fields;
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < fields.length; i += 2) headers.push([fields[i]!, fields[i + 1]!]);
      oursSeen.push({ method: request.method, target: request.target, headers, body: request.body.toString("latin1") });
      return Http1Response.of(200, { "content-type": "text/plain" }, "ok");
    },
  });
  await ours.listen("127.0.0.1", 0);
  oursPort = ours.address()!.port;

  node = createServer({ requireHostHeader: false }, (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i]!.toLowerCase(), req.rawHeaders[i + 1]!]);
      // HTTP/0.9 (see above): what follows is not compared.
      if (req.httpVersion === "0.9") nodeAfter09 = true;
      if (!nodeAfter09) nodeSeen.push({ method: req.method!, target: req.url!, headers, body: Buffer.concat(chunks).toString("latin1") });
      res.end("ok");
    });
  });
  node.on("clientError", (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => node.listen(0, "127.0.0.1", resolve));
  nodePort = (node.address() as AddressInfo).port;
});

afterAll(async () => {
  await ours.close();
  node.closeAllConnections();
  await new Promise((resolve) => node.close(resolve));
});

/** Sends `pieces` one at a time, then ends our side and waits for the server to close (at most 1.5 s). */
async function send(port: number, pieces: Buffer[]): Promise<void> {
  const socket = connect(port, "127.0.0.1");
  socket.setNoDelay(true);
  socket.on("data", () => undefined);
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  await new Promise<void>((resolve) => socket.on("connect", () => resolve()));
  for (const piece of pieces) {
    if (socket.destroyed) break;
    await new Promise<void>((resolve) => socket.write(piece, () => resolve()));
    await new Promise((r) => setImmediate(r));
  }
  if (!socket.destroyed) socket.end();
  const timer = setTimeout(() => socket.destroy(), 1500);
  await closed;
  clearTimeout(timer);
}

async function both(pieces: Buffer[]): Promise<{ ours: Seen[]; node: Seen[] }> {
  oursSeen = [];
  nodeSeen = [];
  nodeAfter09 = false;
  await Promise.all([send(oursPort, pieces), send(nodePort, pieces)]);
  return { ours: oursSeen, node: nodeSeen };
}

const NODE_TARGET = /^(\/|\*$|[A-Za-z][A-Za-z0-9+.-]*:\/\/)/;

/** Drops, from what ours completed, the first request node:http refuses by design (see above) and all after it. */
function normalise(seen: Seen[]): Seen[] {
  const cut = seen.findIndex((s) => !METHODS.includes(s.method) || !NODE_TARGET.test(s.target));
  return cut < 0 ? seen : seen.slice(0, cut);
}

// ---------------------------------------------------------------------------
// Generators

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const method = fc.constantFrom("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH");
const target = fc.oneof(
  fc.constantFrom("/", "/latest/meta-data/", "/latest/meta-data/instance-id", "/openstack/latest/meta_data.json", "*", "/a?b=c&d=%20e"),
  fc.stringMatching(/^\/[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,40}$/),
);
const fieldValue = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$/);
const extraHeader = fc.tuple(
  token.filter((n) => !["host", "content-length", "transfer-encoding", "expect", "connection", "upgrade"].includes(n.toLowerCase())),
  fieldValue,
  fc.constantFrom("", " ", "  ", "\t"),
);
const body = fc.string({ maxLength: 200 });

/** A well-formed request (or two, pipelined), as bytes. */
const request = fc
  .record({
    method,
    target,
    minor: fc.constantFrom(0, 1, 1, 1),
    hostCase: fc.constantFrom("Host", "host", "HOST"),
    extra: fc.array(extraHeader, { maxLength: 5 }),
    body,
    framing: fc.constantFrom("none", "length", "length", "chunked"),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 4 }),
    close: fc.boolean(),
  })
  .map((r) => {
    const lines = [`${r.method} ${r.target} HTTP/1.${r.minor}`, `${r.hostCase}: 169.254.169.254`];
    for (const [name, value, ows] of r.extra) lines.push(`${name}:${ows}${value}${ows}`);
    if (r.close) lines.push("Connection: close");
    let payload = "";
    if (r.framing === "length" || (r.framing === "chunked" && r.minor === 0)) {
      lines.push(`Content-Length: ${Buffer.byteLength(r.body, "latin1")}`);
      payload = r.body;
    } else if (r.framing === "chunked") {
      lines.push("Transfer-Encoding: chunked");
      let rest = r.body;
      for (const size of r.chunkSizes) {
        if (!rest) break;
        const piece = rest.slice(0, size);
        rest = rest.slice(size);
        payload += `${piece.length.toString(16)}\r\n${piece}\r\n`;
      }
      if (rest) payload += `${rest.length.toString(16)}\r\n${rest}\r\n`;
      payload += "0\r\n\r\n";
    }
    return Buffer.from(`${lines.join("\r\n")}\r\n\r\n${payload}`, "latin1");
  });

const stream = fc.oneof(
  { weight: 3, arbitrary: request },
  { weight: 1, arbitrary: fc.tuple(request, request).map(([a, b]) => Buffer.concat([a, b])) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom("\r\n", "\r\n\r\n"), request).map(([pre, r]) => Buffer.concat([Buffer.from(pre), r])) },
);

/** Bytes that matter to a parser. */
const special = fc.constantFrom(0x0d, 0x0a, 0x20, 0x09, 0x00, 0x3a, 0x7f, 0x80, 0xff, 0x2c, 0x3b, 0x30, 0x41, 0x22);
const mutation = fc.record({ kind: fc.constantFrom("flip", "insert", "delete", "duplicate"), at: fc.double({ min: 0, max: 1, noNaN: true }), byte: fc.oneof(special, fc.integer({ min: 0, max: 255 })), length: fc.integer({ min: 1, max: 8 }) });

function mutate(bytes: Buffer, mutations: Array<{ kind: string; at: number; byte: number; length: number }>): Buffer {
  let b = Buffer.from(bytes);
  for (const m of mutations) {
    const at = Math.min(b.length - 1, Math.floor(m.at * b.length));
    if (at < 0) break;
    if (m.kind === "flip") b[at] = m.byte;
    else if (m.kind === "insert") b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
    else if (m.kind === "delete") b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.length)]);
    else b = Buffer.concat([b.subarray(0, at + m.length), b.subarray(at)]);
  }
  return b;
}

/** Cut points, as fractions of the length. */
const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 });

function fragment(bytes: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.map((f) => Math.floor(f * bytes.length)))].filter((p) => p > 0 && p < bytes.length).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    pieces.push(bytes.subarray(from, p));
    from = p;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

/** A bare CR or LF among the empty lines at the start, or after a head that has no body. */
const BARE_CR_OR_LF_BEFORE_REQUEST = /(^|\r\n\r\n)(\r\n)*(\r(?!\n)|\n)/;

const seed = Number(process.env.CDH_PROPERTY_SEED ?? 0x0cd4);

describe("the metadata HTTP/1.1 server against node:http", () => {
  it("completes the same well-formed requests, cut anywhere", async () => {
    await fc.assert(
      fc.asyncProperty(stream, cuts, async (bytes, at) => {
        const seen = await both(fragment(bytes, at));
        expect(seen.ours.length, "ours completed no request").toBeGreaterThan(0);
        expect(normalise(seen.ours)).toEqual(seen.node);
      }),
      { numRuns: RUNS, seed },
    );
  }, 120_000);

  it("accepts and refuses mutated streams alike, and agrees on what it accepts", async () => {
    await fc.assert(
      fc.asyncProperty(stream, fc.array(mutation, { minLength: 1, maxLength: 3 }), cuts, async (bytes, mutations, at) => {
        const mutated = mutate(bytes, mutations);
        fc.pre(!BARE_CR_OR_LF_BEFORE_REQUEST.test(mutated.toString("latin1")));
        const seen = await both(fragment(mutated, at));
        expect(normalise(seen.ours)).toEqual(seen.node);
      }),
      { numRuns: RUNS * 2, seed },
    );
  }, 120_000);
});
