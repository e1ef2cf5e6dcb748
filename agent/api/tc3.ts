/**
 * TC3-HMAC-SHA256, the CVM API's signature v3 (reference/seeds-cvm-api.md §4.6).
 * Pure functions: no clock, no I/O; the caller passes `now` and a secret lookup.
 *
 * What the official Node SDK (tencentcloud-sdk-nodejs-common, sign.js) does and
 * what the verifier therefore accepts:
 * - It signs `content-type;host`, with the Content-Type value as sent (not
 *   lower-cased) and the host WITHOUT its port (URL.hostname), while the Host
 *   header it sends carries the port. The Go SDK adds `x-tc-action` with a
 *   lower-cased value. The verifier therefore tries the canonical headers with the
 *   values as received and with the values lower-cased (the seed's rule), each
 *   with the Host header as received and with its port removed: at most four
 *   HMACs, every one compared in constant time.
 * - The credential scope's service is the first label of the endpoint host
 *   (`127` for 127.0.0.1); any service is accepted because it only enters the
 *   key derivation, but the scope date must be the UTC date of X-TC-Timestamp.
 * - TC3 does not sign X-TC-Action unless the client chooses to: a replay within
 *   the skew window could change the action. Binding the signature to the action
 *   would break the SDK (which signs only content-type and host): two requests with
 *   the same body in the same second, such as `DescribeInstances {}` and
 *   `DescribeHosts {}`, carry the same signature. TLS (api_tls_cert) is the answer to
 *   capture and replay (README, "TLS").
 * - checkTc3Head runs before the body is read; checkTc3Signature needs the body.
 */
import { timingSafeEqual } from "node:crypto";
import { ApiError } from "../errors.js";
import { TC3_ALGORITHM, canonicalRequest, sha256Hex, stringToSign, tc3Signature, utcDate } from "../core/tc3-sign.js";

// The signing half lives in agent/core/tc3-sign.ts (the CLI and the migration peer client sign too).
export { TC3_ALGORITHM, canonicalRequest, sha256Hex, signTc3, stringToSign, tc3Signature, utcDate, type CanonicalParts, type SignTc3Options } from "../core/tc3-sign.js";


type HeaderValue = string | string[] | undefined;

export interface VerifyTc3Options {
  method: string;
  /** Request headers with lower-case names (as node:http gives them). */
  headers: Readonly<Record<string, HeaderValue>>;
  body: Buffer;
  lookupSecret: (secretId: string) => string | undefined;
  /** Current time, seconds since the epoch. */
  now: number;
  /** Default 300. */
  maxSkewSeconds?: number;
  /** The URL's query string without `?` (empty for the SDK's POST requests). */
  query?: string;
}

export interface VerifiedTc3 {
  secretId: string;
  service: string;
}

export interface ParsedAuthorization {
  secretId: string;
  date: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

const AUTH_RE =
  /^TC3-HMAC-SHA256\s+Credential=([^/\s,]+)\/(\d{4}-\d{2}-\d{2})\/([^/\s,]+)\/tc3_request\s*,\s*SignedHeaders=([a-z0-9;_-]+)\s*,\s*Signature=([0-9a-f]{64})\s*$/;

/** Parses an Authorization header; throws AuthFailure.SignatureFailure when it cannot. */
export function parseAuthorization(header: string): ParsedAuthorization {
  const m = AUTH_RE.exec(header.trim());
  if (!m) {
    throw new ApiError(
      "AuthFailure.SignatureFailure",
      "Authorization is not `TC3-HMAC-SHA256 Credential=<SecretId>/<date>/<service>/tc3_request, SignedHeaders=<headers>, Signature=<64 hex>`",
    );
  }
  const [, secretId, date, service, signed, signature] = m as unknown as [string, string, string, string, string, string];
  const signedHeaders = signed.split(";");
  if (signedHeaders.some((h) => h === "") || new Set(signedHeaders).size !== signedHeaders.length) {
    throw new ApiError("AuthFailure.SignatureFailure", "SignedHeaders has an empty or repeated header name");
  }
  for (const required of ["content-type", "host"]) {
    if (!signedHeaders.includes(required)) {
      throw new ApiError("AuthFailure.SignatureFailure", `SignedHeaders must include ${required}`);
    }
  }
  return { secretId, date, service, signedHeaders, signature };
}

function single(value: HeaderValue): string | undefined {
  return Array.isArray(value) ? value.join(",") : value;
}

/** What the head alone proves: a parsable Authorization, a fresh timestamp and a known SecretId. */
export interface Tc3Head {
  readonly auth: ParsedAuthorization;
  readonly timestamp: number;
  readonly secretKey: string;
}

/**
 * The checks that need no body (so that the edge reads no body for a stranger):
 * Authorization present and parsable, X-TC-Timestamp within the window, the SecretId
 * known, the scope date that of the timestamp. Throws ApiError.
 */
export function checkTc3Head(options: Omit<VerifyTc3Options, "body" | "method" | "query">): Tc3Head {
  const maxSkew = options.maxSkewSeconds ?? 300;
  const authorization = single(options.headers["authorization"]);
  if (authorization === undefined || authorization === "") {
    throw new ApiError("MissingParameter", "missing header Authorization");
  }
  const rawTimestamp = single(options.headers["x-tc-timestamp"]);
  if (rawTimestamp === undefined || rawTimestamp.trim() === "") {
    throw new ApiError("MissingParameter", "missing header X-TC-Timestamp");
  }
  if (!/^\d{1,12}$/.test(rawTimestamp.trim())) {
    throw new ApiError("InvalidParameter", "X-TC-Timestamp must be a UNIX timestamp in seconds");
  }
  const timestamp = Number(rawTimestamp.trim());
  const auth = parseAuthorization(authorization);
  if (Math.abs(options.now - timestamp) > maxSkew) {
    throw new ApiError(
      "AuthFailure.SignatureExpire",
      `X-TC-Timestamp ${timestamp} is more than ${maxSkew} s away from the host's clock`,
    );
  }
  const secretKey = options.lookupSecret(auth.secretId);
  if (secretKey === undefined) {
    throw new ApiError("AuthFailure.SecretIdNotFound", "the SecretId in the credential is not configured on this host");
  }
  if (auth.date !== utcDate(timestamp)) {
    throw new ApiError(
      "AuthFailure.SignatureFailure",
      `credential date ${auth.date} is not the UTC date of X-TC-Timestamp (${utcDate(timestamp)})`,
    );
  }
  for (const name of auth.signedHeaders) {
    if (single(options.headers[name]) === undefined) {
      throw new ApiError("AuthFailure.SignatureFailure", `signed header ${name} is not in the request`);
    }
  }
  return { auth, timestamp, secretKey };
}

/** The signature itself, over the head checked by checkTc3Head and the body. Throws ApiError. */
export function checkTc3Signature(
  head: Tc3Head,
  options: Pick<VerifyTc3Options, "method" | "headers" | "body" | "query">,
): VerifiedTc3 {
  const { auth, timestamp, secretKey } = head;
  const values = auth.signedHeaders.map((name) => (single(options.headers[name]) ?? "").trim());
  const scope = `${auth.date}/${auth.service}/tc3_request`;
  const payloadHash = sha256Hex(options.body);
  const method = options.method.toUpperCase();
  const query = options.query ?? "";
  const provided = Buffer.from(auth.signature, "hex");
  let matched = false;
  for (const candidate of candidateHeaderSets(auth.signedHeaders, values)) {
    const canonical = canonicalRequest({ method, query, headers: candidate, payloadHash });
    const expected = Buffer.from(
      tc3Signature(secretKey, auth.date, auth.service, stringToSign(timestamp, scope, canonical)),
      "hex",
    );
    // Evaluate every candidate (no early exit) so timing does not tell which one matched.
    if (expected.length === provided.length && timingSafeEqual(expected, provided)) matched = true;
  }
  if (!matched) {
    throw new ApiError("AuthFailure.SignatureFailure", "the request signature does not match; check the SecretKey and the signing steps");
  }
  return { secretId: auth.secretId, service: auth.service };
}

/** Verifies a request's TC3 signature (head checks, then the signature). Returns the caller's SecretId or throws ApiError. */
export function verifyTc3(options: VerifyTc3Options): VerifiedTc3 {
  return checkTc3Signature(checkTc3Head(options), options);
}

/** Values as received / lower-cased, each with the host as received / without its port. */
function candidateHeaderSets(names: string[], values: string[]): Array<Array<readonly [string, string]>> {
  const seen = new Set<string>();
  const out: Array<Array<readonly [string, string]>> = [];
  for (const lower of [false, true]) {
    for (const stripPort of [false, true]) {
      const set = names.map((name, i) => {
        let v = values[i] ?? "";
        if (name === "host" && stripPort) v = v.replace(/:\d+$/, "");
        if (lower) v = v.toLowerCase();
        return [name, v] as const;
      });
      const key = JSON.stringify(set);
      if (!seen.has(key)) {
        seen.add(key);
        out.push(set);
      }
    }
  }
  return out;
}
