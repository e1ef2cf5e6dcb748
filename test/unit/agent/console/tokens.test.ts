import { describe, expect, it } from "vitest";
import { ConsoleTokens } from "../../../../agent/console/tokens.js";
import { normalizeOrigin, originAllowed } from "../../../../agent/console/gateway.js";

function store(start = 1_000_000) {
  let now = start;
  const registered: string[] = [];
  const tokens = new ConsoleTokens({ now: () => now, registerSecret: (t) => registered.push(t) });
  return { tokens, registered, advance: (ms: number) => (now += ms) };
}

describe("ConsoleTokens", () => {
  it("a token opens one session of its kind on its instance, once", () => {
    const { tokens } = store();
    const { token } = tokens.issue("vnc", "ins-aaaaaaaa");
    expect(tokens.consume(token, "vnc")).toEqual({ ok: true, instanceId: "ins-aaaaaaaa" });
    expect(tokens.consume(token, "vnc")).toEqual({ ok: false, reason: "unknown" });
  });

  it("a token expires 15 s after it was issued", () => {
    const { tokens, advance } = store();
    const a = tokens.issue("vnc", "ins-aaaaaaaa");
    const b = tokens.issue("vnc", "ins-aaaaaaaa");
    advance(14_999);
    expect(tokens.consume(a.token, "vnc").ok).toBe(true);
    advance(1);
    expect(tokens.consume(b.token, "vnc")).toEqual({ ok: false, reason: "expired" });
  });

  it("a token for another kind or instance is refused and spent", () => {
    const { tokens } = store();
    const a = tokens.issue("vnc", "ins-aaaaaaaa");
    expect(tokens.consume(a.token, "serial")).toEqual({ ok: false, reason: "wrong-kind" });
    expect(tokens.consume(a.token, "vnc")).toEqual({ ok: false, reason: "unknown" });
    const b = tokens.issue("serial", "ins-aaaaaaaa");
    expect(tokens.consume(b.token, "serial", "ins-bbbbbbbb")).toEqual({ ok: false, reason: "wrong-instance" });
    expect(tokens.consume(b.token, "serial", "ins-aaaaaaaa")).toEqual({ ok: false, reason: "unknown" });
  });

  it("tokens are 43 base64url characters, unique, and registered as secrets", () => {
    const { tokens, registered } = store();
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(tokens.issue("vnc", "ins-aaaaaaaa").token);
    expect(seen.size).toBe(200);
    for (const t of seen) expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(registered.sort()).toEqual([...seen].sort());
  });

  it("garbage is refused without a lookup", () => {
    const { tokens } = store();
    expect(tokens.consume("", "vnc")).toEqual({ ok: false, reason: "unknown" });
    expect(tokens.consume("x".repeat(5000), "vnc")).toEqual({ ok: false, reason: "unknown" });
  });

  it("the store is bounded and forgets expired tokens", () => {
    let now = 0;
    const tokens = new ConsoleTokens({ now: () => now, maxOutstanding: 3, registerSecret: () => {} });
    const first = tokens.issue("vnc", "ins-aaaaaaaa");
    for (let i = 0; i < 3; i++) tokens.issue("vnc", "ins-aaaaaaaa");
    expect(tokens.outstanding).toBe(3);
    expect(tokens.consume(first.token, "vnc").ok).toBe(false);
    now += 15_000;
    expect(tokens.outstanding).toBe(0);
  });

  it("revokeInstance drops an instance's outstanding tokens only", () => {
    const { tokens } = store();
    const a = tokens.issue("vnc", "ins-aaaaaaaa");
    const b = tokens.issue("vnc", "ins-bbbbbbbb");
    tokens.revokeInstance("ins-aaaaaaaa");
    expect(tokens.consume(a.token, "vnc").ok).toBe(false);
    expect(tokens.consume(b.token, "vnc").ok).toBe(true);
  });
});

describe("the console's Origin rule", () => {
  const none = new Set<string>();
  it("allows the URL's own origin (https when TLS), default ports and case normalized", () => {
    expect(originAllowed("https://Agent.example:443", "agent.example", true, none)).toBe(true);
    expect(originAllowed("http://127.0.0.1:8443", "127.0.0.1:8443", false, none)).toBe(true);
  });
  it("refuses another host, port or scheme", () => {
    expect(originAllowed("https://evil.example", "agent.example", true, none)).toBe(false);
    expect(originAllowed("http://agent.example", "agent.example", true, none)).toBe(false);
    expect(originAllowed("http://127.0.0.1:9000", "127.0.0.1:8443", false, none)).toBe(false);
    expect(originAllowed("null", "127.0.0.1:8443", false, none)).toBe(false);
  });
  it("allows configured extra origins", () => {
    const extra = new Set([normalizeOrigin("https://panel.example")!]);
    expect(originAllowed("https://panel.example", "agent.example", true, extra)).toBe(true);
  });
  it("lets a handshake without Origin (not a browser) through to the token check", () => {
    expect(originAllowed(undefined, "agent.example", true, none)).toBe(true);
  });
});
