/**
 * A request body in the chunked transfer coding (RFC 9112 §7.1), decoded as it
 * arrives, in any pieces. Some clients send every body this way (node's http client
 * without a Content-Length, Go's with a body of unknown length).
 *
 * Strict and bounded: a chunk-size line is 1–8 hex digits, optionally followed by
 * chunk extensions (ignored), and CRLF, in at most MAX_LINE bytes; chunk data must
 * be followed by CRLF; the decoded body may not exceed `maxBody`; trailer fields are
 * checked for form and dropped, MAX_TRAILER bytes at most. Anything else fails the
 * request (400).
 */
import { CR, LF, TCHAR, VALUE_CHAR } from "./http1-head.js";

const MAX_LINE = 256;
const MAX_TRAILER = 1024;
const MAX_SIZE_DIGITS = 8;

const SIZE = 0;
const DATA = 1;
const DATA_END = 2;
const TRAILER = 3;
const DONE = 4;
const FAILED = 5;

const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX["0123456789abcdef".charCodeAt(i)] = i;
  HEX["0123456789ABCDEF".charCodeAt(i)] = i;
}
const SEMICOLON = 0x3b;

export class ChunkedDecoder {
  private phase = SIZE;
  private remaining = 0;
  private size = 0;
  private trailerBytes = 0;
  private readonly parts: Buffer[] = [];

  constructor(private readonly maxBody: number) {}

  get done(): boolean {
    return this.phase === DONE;
  }

  get failed(): boolean {
    return this.phase === FAILED;
  }

  /** The decoded body, once done. */
  body(): Buffer {
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
  }

  /**
   * Decodes from `buf[pos…]` and returns where it stopped: at the end of the body when
   * done, at the end of `buf`, or at the start of a line that has not fully arrived yet
   * (those bytes must be offered again with what follows). Check `failed` after.
   */
  feed(buf: Buffer, pos: number): number {
    while (pos < buf.length && this.phase < DONE) {
      switch (this.phase) {
        case SIZE: {
          const eol = lineEnd(buf, pos);
          if (eol === -1) return this.fail(pos);
          if (eol === -2) return buf.length - pos > MAX_LINE ? this.fail(pos) : pos;
          if (eol - pos > MAX_LINE) return this.fail(pos);
          const size = chunkSize(buf, pos, eol);
          if (size < 0 || this.size + size > this.maxBody) return this.fail(pos);
          pos = eol + 2;
          if (size === 0) this.phase = TRAILER;
          else {
            this.remaining = size;
            this.phase = DATA;
          }
          break;
        }
        case DATA: {
          const take = Math.min(this.remaining, buf.length - pos);
          this.parts.push(Buffer.from(buf.subarray(pos, pos + take)));
          this.size += take;
          this.remaining -= take;
          pos += take;
          if (this.remaining === 0) this.phase = DATA_END;
          break;
        }
        case DATA_END:
          if (buf[pos] !== CR) return this.fail(pos);
          if (pos + 1 === buf.length) return pos;
          if (buf[pos + 1] !== LF) return this.fail(pos);
          pos += 2;
          this.phase = SIZE;
          break;
        case TRAILER: {
          const eol = lineEnd(buf, pos);
          if (eol === -1) return this.fail(pos);
          if (eol === -2) return this.trailerBytes + buf.length - pos > MAX_TRAILER ? this.fail(pos) : pos;
          this.trailerBytes += eol + 2 - pos;
          if (this.trailerBytes > MAX_TRAILER || (eol > pos && !trailerField(buf, pos, eol))) return this.fail(pos);
          if (eol === pos) this.phase = DONE;
          pos = eol + 2;
          break;
        }
      }
    }
    return pos;
  }

  private fail(pos: number): number {
    this.phase = FAILED;
    return pos;
  }
}

/** Index of the CR of the CRLF ending the line at `pos`; -2 when it has not arrived, -1 for a bare CR or LF. */
function lineEnd(buf: Buffer, pos: number): number {
  const cr = buf.indexOf(CR, pos);
  const lf = buf.indexOf(LF, pos);
  if (lf !== -1 && (cr === -1 || lf < cr)) return -1;
  if (cr === -1 || cr + 1 === buf.length) return -2;
  return buf[cr + 1] === LF ? cr : -1;
}

/** `1*HEXDIG [ BWS ";" chunk-ext ]` in `buf[pos, eol)`; -1 when malformed. */
function chunkSize(buf: Buffer, pos: number, eol: number): number {
  let size = 0;
  let i = pos;
  for (; i < eol && HEX[buf[i]!]! >= 0; i++) {
    if (i - pos >= MAX_SIZE_DIGITS) return -1;
    size = size * 16 + HEX[buf[i]!]!;
  }
  if (i === pos) return -1;
  if (i === eol) return size;
  while (i < eol && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
  if (buf[i] !== SEMICOLON) return -1;
  for (; i < eol; i++) if (VALUE_CHAR[buf[i]!] !== 1) return -1;
  return size;
}

/** `name: value` with a token name and no control characters; the field itself is dropped. */
function trailerField(buf: Buffer, pos: number, eol: number): boolean {
  const colon = buf.indexOf(0x3a, pos);
  if (colon <= pos || colon >= eol) return false;
  for (let i = pos; i < colon; i++) if (TCHAR[buf[i]!] !== 1) return false;
  for (let i = colon + 1; i < eol; i++) if (VALUE_CHAR[buf[i]!] !== 1) return false;
  return true;
}
