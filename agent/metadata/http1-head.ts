/**
 * HTTP/1.1 message heads for the metadata endpoint's own server (http1.ts): a strict
 * parser of request heads, and responses rendered to bytes once.
 *
 * Accepted (RFC 9112, the strict reading): `METHOD SP request-target SP HTTP/1.x CRLF`,
 * then `name: value CRLF` lines, then CRLF. Refused with 400: bare LF or CR, a method
 * that is not a token (or longer than MAX_METHOD_LENGTH), a target with anything but
 * visible ASCII, a version other than HTTP/1.0 and HTTP/1.1, a header name that is not
 * a token (so whitespace before the colon and obs-fold continuation lines are refused),
 * control characters in a value, an HTTP/1.1 request without exactly one Host,
 * Content-Length that is not digits only or that repeats with another value. The body
 * is framed one way only (no request smuggling): Transfer-Encoding is accepted only as
 * exactly `chunked`, once, on HTTP/1.1, without Content-Length (400 otherwise). Any
 * other coding (gzip, compress, …) gets 501, as RFC 9112 §6.1 has a server answer a
 * coding it does not take: no metadata client compresses its requests. `Expect: 100-continue` is
 * honoured; any other expectation gets 417.
 */

export const CR = 0x0d;
export const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

export const MAX_METHOD_LENGTH = 32;
/** More Content-Length digits than this cannot be a body anyone reads. */
const MAX_LENGTH_DIGITS = 15;

/** tchar (RFC 9110 §5.6.2): what method and header names are made of. */
export const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;
/** field-vchar, SP and HTAB: what a header value may hold (obs-text included, as latin1). */
export const VALUE_CHAR = new Uint8Array(256);
for (let c = 0; c < 256; c++) VALUE_CHAR[c] = c === HTAB || (c >= 0x20 && c !== 0x7f) ? 1 : 0;

/** One request as the server's handler sees it; `body` is complete (empty without one). */
export class Http1Request {
  body: Buffer = EMPTY;

  constructor(
    readonly method: string,
    /** The request-target exactly as sent (visible ASCII only). */
    readonly target: string,
    /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
    readonly minor: 0 | 1,
    /** Lowercase name, value, name, value, … in the order received. */
    private readonly fields: readonly string[],
    /** Whether the connection stays open after the answer, as far as the client is concerned. */
    readonly keepAlive: boolean,
    /** Declared body length; 0 without Content-Length (and when `chunked`). */
    readonly contentLength: number,
    /** The body comes in the chunked coding (http1-chunked.ts). */
    readonly chunked: boolean,
    readonly expectContinue: boolean,
  ) {}

  /** A header's value by lowercase name; repeated headers are joined with ", " (like node:http). */
  header(name: string): string | undefined {
    let found: string | undefined;
    for (let i = 0; i < this.fields.length; i += 2) {
      if (this.fields[i] !== name) continue;
      found = found === undefined ? this.fields[i + 1] : `${found}, ${this.fields[i + 1]}`;
    }
    return found;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Parses the head in `buf[start, end)`: the request line and the header lines, each with
 * its CRLF, without the blank line that ends the head. Returns the request, or the
 * status (400, 417) to refuse it with.
 */
export function parseHead(buf: Buffer, start: number, end: number): Http1Request | number {
  // Request line.
  let i = start;
  while (i < end && TCHAR[buf[i]!] === 1) i++;
  if (i === start || i - start > MAX_METHOD_LENGTH || buf[i] !== SP) return 400;
  const method = methodName(buf, start, i);
  const targetStart = ++i;
  while (i < end && buf[i]! > SP && buf[i]! < 0x7f) i++;
  if (i === targetStart || buf[i] !== SP) return 400;
  const target = buf.toString("latin1", targetStart, i);
  i++;
  if (
    i + 10 > end ||
    buf[i] !== 0x48 || // H
    buf[i + 1] !== 0x54 || // T
    buf[i + 2] !== 0x54 || // T
    buf[i + 3] !== 0x50 || // P
    buf[i + 4] !== 0x2f || // /
    buf[i + 5] !== 0x31 || // 1
    buf[i + 6] !== 0x2e // .
  ) {
    return 400;
  }
  const minorByte = buf[i + 7];
  if ((minorByte !== 0x30 && minorByte !== 0x31) || buf[i + 8] !== CR || buf[i + 9] !== LF) return 400;
  const minor = minorByte === 0x31 ? 1 : 0;
  i += 10;

  // Header lines.
  const fields: string[] = [];
  let hosts = 0;
  let contentLength = -1;
  let close = false;
  let keepAliveToken = false;
  let expectContinue = false;
  let transferEncodings = 0;
  let chunked = false;
  while (i < end) {
    const nameStart = i;
    let upper = false;
    for (let c = buf[i]!; TCHAR[c] === 1; c = buf[++i]!) if (c >= 0x41 && c <= 0x5a) upper = true;
    if (i === nameStart || buf[i] !== COLON) return 400;
    const nameEnd = i++;
    while (buf[i] === SP || buf[i] === HTAB) i++;
    let valueEnd = i;
    let lastNonSpace = i;
    while (VALUE_CHAR[buf[valueEnd]!] === 1) {
      const c = buf[valueEnd]!;
      valueEnd++;
      if (c !== SP && c !== HTAB) lastNonSpace = valueEnd;
    }
    if (buf[valueEnd] !== CR || buf[valueEnd + 1] !== LF || valueEnd + 2 > end) return 400;
    const valueStart = i;
    i = valueEnd + 2;
    const rawName = buf.toString("latin1", nameStart, nameEnd);
    const name = upper ? rawName.toLowerCase() : rawName;
    const value = buf.toString("latin1", valueStart, lastNonSpace);
    fields.push(name, value);
    switch (name) {
      case "host":
        hosts++;
        break;
      case "content-length": {
        const n = parseLength(value);
        if (n < 0 || (contentLength >= 0 && n !== contentLength)) return 400;
        contentLength = n;
        break;
      }
      case "transfer-encoding":
        transferEncodings++;
        chunked = value.toLowerCase() === "chunked";
        break;
      case "connection":
        for (const token of value.toLowerCase().split(",")) {
          const t = token.trim();
          if (t === "close") close = true;
          else if (t === "keep-alive") keepAliveToken = true;
        }
        break;
      case "expect":
        if (value.toLowerCase() !== "100-continue") return 417;
        expectContinue = true;
        break;
    }
  }
  if (minor === 1 ? hosts !== 1 : hosts > 1) return 400;
  if (transferEncodings > 0) {
    if (transferEncodings > 1 || contentLength >= 0 || minor === 0) return 400;
    if (!chunked) return 501;
  }
  const keepAlive = !close && (minor === 1 || keepAliveToken);
  const length = contentLength < 0 ? 0 : contentLength;
  const hasBody = length > 0 || chunked;
  return new Http1Request(method, target, minor, fields, keepAlive, length, chunked, expectContinue && minor === 1 && hasBody);
}

/** The usual methods without allocating a string for them. */
function methodName(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  const a = buf[start];
  if (n === 3 && a === 0x47 && buf[start + 1] === 0x45 && buf[start + 2] === 0x54) return "GET";
  if (n === 4 && a === 0x48 && buf[start + 1] === 0x45 && buf[start + 2] === 0x41 && buf[start + 3] === 0x44) return "HEAD";
  if (n === 3 && a === 0x50 && buf[start + 1] === 0x55 && buf[start + 2] === 0x54) return "PUT";
  if (n === 4 && a === 0x50 && buf[start + 1] === 0x4f && buf[start + 2] === 0x53 && buf[start + 3] === 0x54) return "POST";
  return buf.toString("latin1", start, end);
}

/** Digits only, no sign, no list; -1 when invalid. */
function parseLength(value: string): number {
  if (value.length === 0 || value.length > MAX_LENGTH_DIGITS) return -1;
  for (let k = 0; k < value.length; k++) {
    const c = value.charCodeAt(k);
    if (c < 0x30 || c > 0x39) return -1;
  }
  return Number(value);
}

export const REASONS: Readonly<Record<number, string>> = Object.freeze({
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  413: "Content Too Large",
  417: "Expectation Failed",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
});

/** An IMF-fixdate (RFC 9110 §5.6.7) is always this long: `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE_LENGTH = 29;
const DATE_LINE_PREFIX = "date: ";
let clockSecond = -1;
let clockBytes = Buffer.alloc(IMF_FIXDATE_LENGTH, 0x20);

/** The `Date` value for `nowMs` as bytes: one string made per second, shared by every answer. */
export function httpDate(nowMs: number): Buffer {
  const second = Math.floor(nowMs / 1000);
  if (second !== clockSecond) {
    clockSecond = second;
    clockBytes = Buffer.from(new Date(second * 1000).toUTCString(), "latin1");
  }
  return clockBytes;
}

/** Bodies up to this size are also kept joined to their head, so a hit is one write. */
const JOIN_BODY_BELOW = 16 * 1024;
const HEADER_SAFE = /^[\t\x20-\x7e]*$/;
const CRLF = Buffer.from("\r\n", "latin1");

export interface ResponseOptions {
  /** The connection is closed after this answer (`connection: close` is added). */
  close?: boolean;
}

/**
 * An answer rendered to bytes once: the status line and headers, and the body. The
 * connection adds `connection: close` (or `keep-alive` for HTTP/1.0) itself; for a
 * keep-alive HTTP/1.1 request an answer is a single ready Buffer.
 *
 * Every answer carries `Date` (RFC 9110 §6.6.1) right after the status line, at the
 * same offset in `head`, `headOnly` and `whole`: stamp(now) writes the current date
 * into those bytes when the second has changed since the answer was last stamped, so
 * the prebuilt buffers stay the fast path (one compare per answer, 3 small copies a
 * second at most). A buffer still queued in a socket may get a date a second later
 * than when it was queued; it is never torn (JavaScript and libuv share one thread).
 */
export class Http1Response {
  /** Status line and header lines, each ending CRLF; no blank line. */
  readonly head: Buffer;
  readonly body: Buffer;
  /** head + CRLF: the whole answer to a HEAD request on a kept-alive HTTP/1.1 connection. */
  readonly headOnly: Buffer;
  /** head + CRLF + body, when the body is small: the whole answer to a GET likewise. */
  readonly whole: Buffer | undefined;
  readonly close: boolean;
  /** The epoch second of the date now in the buffers. */
  private stampedSecond = -1;
  private readonly dateAt: number;

  private constructor(head: Buffer, body: Buffer, close: boolean, dateAt: number) {
    this.dateAt = dateAt;
    this.head = head;
    this.body = body;
    this.close = close;
    this.headOnly = Buffer.concat([head, CRLF]);
    this.whole = body.length < JOIN_BODY_BELOW ? Buffer.concat([head, CRLF, body]) : undefined;
  }

  /** Brings the Date header up to `nowMs`'s second (see above). Returns this. */
  stamp(nowMs: number): this {
    const second = Math.floor(nowMs / 1000);
    if (second !== this.stampedSecond) {
      this.stampedSecond = second;
      const date = httpDate(nowMs);
      date.copy(this.head, this.dateAt);
      date.copy(this.headOnly, this.dateAt);
      if (this.whole !== undefined) date.copy(this.whole, this.dateAt);
    }
    return this;
  }

  /** `content-length` is always set from the body; header names are sent as given. */
  static of(
    status: number,
    headers: Readonly<Record<string, string | number>>,
    body: Buffer | string = EMPTY,
    options: ResponseOptions = {},
  ): Http1Response {
    const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : body;
    const reason = REASONS[status];
    if (reason === undefined) throw new RangeError(`no reason phrase for status ${status}`);
    let head = `HTTP/1.1 ${status} ${reason}\r\n`;
    const dateAt = head.length + DATE_LINE_PREFIX.length;
    head += `${DATE_LINE_PREFIX}${" ".repeat(IMF_FIXDATE_LENGTH)}\r\n`;
    for (const [name, value] of Object.entries(headers)) {
      const lower = name.toLowerCase();
      if (lower === "content-length" || lower === "connection" || lower === "transfer-encoding" || lower === "date") continue;
      const text = String(value);
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) || !HEADER_SAFE.test(text)) {
        throw new RangeError(`header ${JSON.stringify(name)} cannot be sent as given`);
      }
      head += `${name}: ${text}\r\n`;
    }
    head += `content-length: ${bytes.length}\r\n`;
    return new Http1Response(Buffer.from(head, "latin1"), bytes, options.close ?? false, dateAt).stamp(Date.now());
  }
}
