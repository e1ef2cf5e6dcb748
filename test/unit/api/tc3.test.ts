import { describe, expect, it } from "vitest";
import { canonicalRequest, sha256Hex, signTc3, stringToSign, tc3Signature, utcDate, verifyTc3 } from "../../../agent/api/tc3.js";
import { ApiError } from "../../../agent/errors.js";

const SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
const TS = 1539084154;

/**
 * The seed's worked example (seed 001 ~16570–16760) is a GET of DescribeInstances
 * with Limit=10&Offset=0. Its published signature 5da7a33f… was computed with the
 * host `cvm.tencentcloudapi.com` (the seed's text says cvm.finance.cloud.tencent.com,
 * which gives a different signature), and the seed prints the canonical-request
 * hash with one character missing (…ccc957… for …cccf957…).
 */
describe("TC3 worked example of the seed", () => {
  const host = "cvm.tencentcloudapi.com";
  const canonical = canonicalRequest({
    method: "GET",
    query: "Limit=10&Offset=0",
    headers: [
      ["content-type", "application/x-www-form-urlencoded"],
      ["host", host],
    ],
    payloadHash: sha256Hex(""),
  });

  it("computes the seed's hashed canonical request (with the character the seed dropped)", () => {
    expect(sha256Hex(canonical)).toBe("91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7");
  });

  it("derives the date 2018-10-09 from timestamp 1539084154 in UTC", () => {
    expect(utcDate(TS)).toBe("2018-10-09");
    expect(utcDate(1551113065)).toBe("2019-02-25");
  });

  it("computes the seed's signature 5da7a33f…", () => {
    const sts = stringToSign(TS, "2018-10-09/cvm/tc3_request", canonical);
    expect(tc3Signature(SECRET_KEY, "2018-10-09", "cvm", sts)).toBe(
      "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474",
    );
  });

  it("signTc3 produces the seed's full Authorization header", () => {
    const authorization = signTc3({
      secretId: SECRET_ID,
      secretKey: SECRET_KEY,
      service: "cvm",
      host,
      timestamp: TS,
      payload: "",
      contentType: "application/x-www-form-urlencoded",
      method: "GET",
      query: "Limit=10&Offset=0",
    });
    expect(authorization).toBe(
      "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2018-10-09/cvm/tc3_request, " +
        "SignedHeaders=content-type;host, Signature=5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474",
    );
  });

  it("verifyTc3 accepts the seed's GET request at its own time", () => {
    const verified = verifyTc3({
      method: "GET",
      query: "Limit=10&Offset=0",
      headers: {
        authorization: `TC3-HMAC-SHA256 Credential=${SECRET_ID}/2018-10-09/cvm/tc3_request, SignedHeaders=content-type;host, Signature=5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474`,
        "content-type": "application/x-www-form-urlencoded",
        host,
        "x-tc-timestamp": String(TS),
      },
      body: Buffer.alloc(0),
      lookupSecret: (id) => (id === SECRET_ID ? SECRET_KEY : undefined),
      now: TS + 10,
    });
    expect(verified).toEqual({ secretId: SECRET_ID, service: "cvm" });
  });
});

describe("verifyTc3 on a POST", () => {
  const body = Buffer.from(JSON.stringify({ Limit: 10, Offset: 0 }));
  const lookupSecret = (id: string) => (id === SECRET_ID ? SECRET_KEY : undefined);

  function signed(overrides: { timestamp?: number; host?: string; service?: string; key?: string; action?: string } = {}) {
    const timestamp = overrides.timestamp ?? TS;
    const authorization = signTc3({
      secretId: SECRET_ID,
      secretKey: overrides.key ?? SECRET_KEY,
      service: overrides.service ?? "127",
      host: overrides.host ?? "127.0.0.1",
      timestamp,
      payload: body,
      contentType: "application/json",
      ...(overrides.action ? { action: overrides.action } : {}),
    });
    return {
      authorization,
      "content-type": "application/json",
      host: "127.0.0.1:9000",
      "x-tc-timestamp": String(timestamp),
      "x-tc-action": "DescribeInstances",
    } as Record<string, string>;
  }

  function verify(headers: Record<string, string | undefined>, opts: { body?: Buffer; now?: number } = {}) {
    return verifyTc3({ method: "POST", headers, body: opts.body ?? body, lookupSecret, now: opts.now ?? TS + 1 });
  }

  function codeOf(fn: () => unknown): string {
    try {
      fn();
    } catch (e) {
      if (e instanceof ApiError) return e.code;
      throw e;
    }
    return "no error";
  }

  it("accepts a request signed like the SDK: host without port, any service", () => {
    expect(verify(signed())).toEqual({ secretId: SECRET_ID, service: "127" });
    expect(verify(signed({ service: "cvm" })).service).toBe("cvm");
  });

  it("accepts a request that signs the host with its port and x-tc-action", () => {
    expect(verify(signed({ host: "127.0.0.1:9000", action: "DescribeInstances" })).secretId).toBe(SECRET_ID);
  });

  it("refuses a tampered body", () => {
    expect(codeOf(() => verify(signed(), { body: Buffer.from(JSON.stringify({ Limit: 11, Offset: 0 })) }))).toBe(
      "AuthFailure.SignatureFailure",
    );
  });

  it("refuses a tampered signed header", () => {
    expect(codeOf(() => verify({ ...signed(), "content-type": "application/json; charset=utf-8" }))).toBe(
      "AuthFailure.SignatureFailure",
    );
    expect(codeOf(() => verify({ ...signed({ action: "DescribeInstances" }), "x-tc-action": "TerminateInstances" }))).toBe(
      "AuthFailure.SignatureFailure",
    );
  });

  it("refuses a request signed with the wrong key", () => {
    expect(codeOf(() => verify(signed({ key: "not-the-key" })))).toBe("AuthFailure.SignatureFailure");
  });

  it("refuses a changed X-TC-Timestamp even inside the skew window", () => {
    expect(codeOf(() => verify({ ...signed(), "x-tc-timestamp": String(TS + 1) }))).toBe("AuthFailure.SignatureFailure");
  });

  it("refuses a credential date that is not the UTC date of the timestamp", () => {
    const headers = signed();
    headers.authorization = headers.authorization!.replace("2018-10-09", "2018-10-10");
    expect(codeOf(() => verify(headers))).toBe("AuthFailure.SignatureFailure");
  });

  it("refuses a timestamp more than 300 s away, in either direction", () => {
    expect(codeOf(() => verify(signed(), { now: TS + 301 }))).toBe("AuthFailure.SignatureExpire");
    expect(codeOf(() => verify(signed(), { now: TS - 301 }))).toBe("AuthFailure.SignatureExpire");
    expect(verify(signed(), { now: TS + 300 }).secretId).toBe(SECRET_ID);
  });

  it("answers a missing or non-numeric timestamp with MissingParameter or InvalidParameter", () => {
    expect(codeOf(() => verify({ ...signed(), "x-tc-timestamp": undefined }))).toBe("MissingParameter");
    expect(codeOf(() => verify({ ...signed(), "x-tc-timestamp": "soon" }))).toBe("InvalidParameter");
  });

  it("answers an unknown SecretId with AuthFailure.SecretIdNotFound", () => {
    const headers = signed();
    headers.authorization = headers.authorization!.replace(SECRET_ID, "AKIDunknown");
    expect(codeOf(() => verify(headers))).toBe("AuthFailure.SecretIdNotFound");
  });

  it("answers a missing or unparseable Authorization", () => {
    expect(codeOf(() => verify({ ...signed(), authorization: undefined }))).toBe("MissingParameter");
    expect(codeOf(() => verify({ ...signed(), authorization: "Basic dXNlcjpwYXNz" }))).toBe("AuthFailure.SignatureFailure");
  });

  it("requires content-type and host among the signed headers", () => {
    const headers = signed();
    headers.authorization = headers.authorization!.replace("SignedHeaders=content-type;host", "SignedHeaders=host");
    expect(codeOf(() => verify(headers))).toBe("AuthFailure.SignatureFailure");
  });

  it("refuses a signed header that the request does not carry", () => {
    const authorization = signTc3({
      secretId: SECRET_ID,
      secretKey: SECRET_KEY,
      service: "127",
      host: "127.0.0.1",
      timestamp: TS,
      payload: body,
      contentType: "application/json",
      extraSignedHeaders: { "x-custom": "abc" },
    });
    const headers = { ...signed(), authorization };
    expect(codeOf(() => verify(headers))).toBe("AuthFailure.SignatureFailure");
    expect(verify({ ...headers, "x-custom": "abc" }).secretId).toBe(SECRET_ID);
  });
});
