import { describe, expect, it } from "vitest";
import { canonicalPath } from "../../../agent/metadata/paths.js";
import { RateLimiter } from "../../../agent/metadata/rate-limit.js";
import { parseTtl, TokenStore } from "../../../agent/metadata/tokens.js";
import { prefixToMask, tencentTime } from "../../../agent/metadata/tree.js";

describe("canonicalPath()", () => {
  it("keeps plain paths as they are, final slash included", () => {
    for (const p of ["/", "/latest/meta-data/", "/latest/meta-data/instance-id", "/openstack/latest/meta_data.json"]) {
      expect(canonicalPath(p)).toBe(p);
    }
  });

  it("decodes harmless escapes", () => {
    expect(canonicalPath("/latest/meta-data/network/interfaces/macs/52%3a54%3A00/")).toBe(
      "/latest/meta-data/network/interfaces/macs/52:54:00/",
    );
  });

  it("refuses everything that is not a plain absolute path", () => {
    for (const p of [
      undefined,
      "",
      "*",
      "latest",
      "http://x/latest",
      "/a/../b",
      "/a/./b",
      "/..",
      "/a/%2e%2E/b",
      "/a/%2e",
      "/a%2Fb",
      "/a%5Cb",
      "/a\\b",
      "//a",
      "/a//b",
      "/a?b",
      "/a#b",
      "/a%00",
      "/a%0a",
      "/a%",
      "/a%g0",
      "/a b",
      `/${"a".repeat(2000)}`,
    ]) {
      expect([p, canonicalPath(p)]).toEqual([p, undefined]);
    }
  });
});

describe("TokenStore", () => {
  it("binds a token to its caller and forgets it at expiry", () => {
    let t = 0;
    const store = new TokenStore({ now: () => t });
    const token = store.issue("a", 10);
    expect(store.check("a", token)).toBe(true);
    expect(store.check("b", token)).toBe(false);
    t = 9_999;
    expect(store.check("a", token)).toBe(true);
    t = 10_000;
    expect(store.check("a", token)).toBe(false);
    expect(store.size).toBe(0);
  });

  it("keeps at most maxPerCaller tokens per caller, dropping the oldest", () => {
    const store = new TokenStore({ now: () => 0, maxPerCaller: 2 });
    const [t1, t2, t3] = [store.issue("a", 60), store.issue("a", 60), store.issue("a", 60)];
    expect([store.check("a", t1), store.check("a", t2), store.check("a", t3)]).toEqual([false, true, true]);
    store.issue("b", 60);
    expect(store.size).toBe(3);
  });

  it("sweep() drops expired tokens", () => {
    let t = 0;
    const store = new TokenStore({ now: () => t });
    store.issue("a", 1);
    store.issue("b", 100);
    t = 5_000;
    store.sweep();
    expect(store.size).toBe(1);
  });

  it("parseTtl() takes integers 1–21600 only", () => {
    expect(["1", "21600", " 60 "].map(parseTtl)).toEqual([1, 21600, 60]);
    expect(["0", "21601", "1e3", "0x10", "-1", "", "1.0"].map(parseTtl)).toEqual(Array(7).fill(undefined));
    expect(parseTtl(undefined)).toBeUndefined();
    expect(parseTtl(["60", "60"])).toBeUndefined();
  });
});

describe("RateLimiter", () => {
  it("lets a burst through, then refills at the rate", () => {
    let t = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 2 }, () => t);
    expect([limiter.take("a"), limiter.take("a"), limiter.take("a")]).toEqual([true, true, false]);
    expect(limiter.take("b")).toBe(true);
    t = 100;
    expect([limiter.take("a"), limiter.take("a")]).toEqual([true, false]);
  });

  it("refuses nonsense limits", () => {
    expect(() => new RateLimiter({ perSecond: 0, burst: 1 }, Date.now)).toThrow(RangeError);
    expect(() => new RateLimiter({ perSecond: 1, burst: 0 }, Date.now)).toThrow(RangeError);
  });
});

describe("formats", () => {
  it("prefixToMask() gives dotted masks", () => {
    expect([0, 8, 18, 24, 32].map(prefixToMask)).toEqual(["0.0.0.0", "255.0.0.0", "255.255.192.0", "255.255.255.0", "255.255.255.255"]);
  });

  it("tencentTime() prints the seed's create-time format", () => {
    expect(tencentTime("2018-09-18T11:27:33Z")).toBe("2018-09-18 11:27:33");
    expect(tencentTime("2018-09-18T11:27:33.123Z")).toBe("2018-09-18 11:27:33");
  });
});
