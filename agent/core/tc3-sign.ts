/**
 * The signing half of TC3-HMAC-SHA256 (agent/api/tc3.ts verifies; its header comment says
 * what the official SDKs sign). Pure: no clock, no I/O. Here, below the API edge, because
 * the agent signs too: the operator command line and the migration peer client.
 */
import { createHash, createHmac } from "node:crypto";

export const TC3_ALGORITHM = "TC3-HMAC-SHA256";

export interface SignTc3Options {
  secretId: string;
  secretKey: string;
  /** Credential-scope service, e.g. `cvm` or `127`. */
  service: string;
  /** The host value that is signed (the SDK signs the host name without port). */
  host: string;
  /** X-TC-Timestamp, seconds since the epoch. */
  timestamp: number;
  payload: string | Buffer;
  contentType: string;
  /** When given, `x-tc-action` is signed too (as the Go SDK does). */
  action?: string;
  /** More headers to sign: lower-case name → value. */
  extraSignedHeaders?: Readonly<Record<string, string>>;
  /** Default POST. */
  method?: string;
  /** Canonical query string (without `?`); default empty, as for POST. */
  query?: string;
}

export function sha256Hex(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

/** The UTC date (YYYY-MM-DD) of a timestamp in seconds. */
export function utcDate(timestamp: number): string {
  return new Date(timestamp * 1000).toISOString().slice(0, 10);
}

export interface CanonicalParts {
  method: string;
  query: string;
  /** Signed headers in signing order: [lower-case name, canonical value]. */
  headers: ReadonlyArray<readonly [string, string]>;
  payloadHash: string;
}

export function canonicalRequest(parts: CanonicalParts): string {
  const canonicalHeaders = parts.headers.map(([k, v]) => `${k}:${v}\n`).join("");
  const signedHeaders = parts.headers.map(([k]) => k).join(";");
  return [parts.method.toUpperCase(), "/", parts.query, canonicalHeaders, signedHeaders, parts.payloadHash].join("\n");
}

export function stringToSign(timestamp: number | string, scope: string, canonical: string): string {
  return `${TC3_ALGORITHM}\n${timestamp}\n${scope}\n${sha256Hex(canonical)}`;
}

/** Hex signature for a string to sign, with the key derived from date and service. */
export function tc3Signature(secretKey: string, date: string, service: string, toSign: string): string {
  const kDate = hmac(`TC3${secretKey}`, date);
  const kService = hmac(kDate, service);
  const kSigning = hmac(kService, "tc3_request");
  return createHmac("sha256", kSigning).update(toSign, "utf8").digest("hex");
}

/** Builds the Authorization header for a request (tests and our own tooling). */
export function signTc3(options: SignTc3Options): string {
  const headerMap = new Map<string, string>();
  headerMap.set("content-type", options.contentType.trim().toLowerCase());
  headerMap.set("host", options.host.trim().toLowerCase());
  if (options.action !== undefined) headerMap.set("x-tc-action", options.action.trim().toLowerCase());
  for (const [name, value] of Object.entries(options.extraSignedHeaders ?? {})) {
    headerMap.set(name.trim().toLowerCase(), value.trim().toLowerCase());
  }
  const headers = [...headerMap.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const canonical = canonicalRequest({
    method: options.method ?? "POST",
    query: options.query ?? "",
    headers,
    payloadHash: sha256Hex(options.payload),
  });
  const date = utcDate(options.timestamp);
  const scope = `${date}/${options.service}/tc3_request`;
  const signature = tc3Signature(options.secretKey, date, options.service, stringToSign(options.timestamp, scope, canonical));
  const signedHeaders = headers.map(([k]) => k).join(";");
  return `${TC3_ALGORITHM} Credential=${options.secretId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
}

