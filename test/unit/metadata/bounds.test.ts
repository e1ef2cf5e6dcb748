/**
 * The metadata endpoint's bounds: connection caps (overall and per guest address) over
 * raw sockets, the IMDSv2 token store's global cap and amortised expiry, and the Date
 * header on the prebuilt answers.
 */
import { connect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Http1Response, httpDate } from "../../../agent/metadata/http1-head.js";
import { createMetadataServer, type MetadataServer } from "../../../agent/metadata/server.js";
import { TokenStore } from "../../../agent/metadata/tokens.js";
import { call, guestView, silentLogger } from "./fixture.js";

const servers: MetadataServer[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(o: { maxConnections?: number; maxConnectionsPerSource?: number; maxTokens?: number } = {}): Promise<number> {
  const view = guestView();
  const server = createMetadataServer({
    listen: [{ host: "127.0.0.1", port: 0 }],
    resolve: (_local, remote) => (remote.startsWith("127.0.0.") ? view : undefined),
    logger: silentLogger(),
    rateLimit: false,
    ...o,
  });
  await server.listen();
  servers.push(server);
  return server.addresses()[0]!.port;
}

function open(port: number, from = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, localAddress: from }, () => resolve(s));
    s.on("error", reject);
    sockets.push(s);
  });
}

/** Sends `text` (if any) and collects the answer until the server closes or `ms` pass. */
function exchange(s: Socket, text: string | undefined, ms = 3000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let got = "";
    s.on("data", (d: Buffer) => (got += d.toString("latin1")));
    const timer = setTimeout(() => resolve({ text: got, closed: false }), ms);
    s.once("close", () => {
      clearTimeout(timer);
      resolve({ text: got, closed: true });
    });
    if (text !== undefined) s.write(text);
  });
}

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
const PUT_TOKEN = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n";

describe("metadata connection caps", () => {
  it("answers a connection over the overall cap 503 (dated, closing) while the held ones keep working", async () => {
    const port = await start({ maxConnections: 3, maxConnectionsPerSource: 100 });
    const held = [await open(port, "127.0.0.1"), await open(port, "127.0.0.2"), await open(port, "127.0.0.3")];
    await new Promise((r) => setTimeout(r, 50));
    const over = await open(port, "127.0.0.4");
    const refused = await exchange(over, undefined);
    expect(refused.closed).toBe(true);
    expect(refused.text).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\ndate: [^\r]+ GMT\r\nretry-after: 1\r\n/);
    expect(refused.text).toContain("connection: close\r\n");
    const ok = await exchange(held[0]!, GET("/latest/meta-data/instance-id", "Connection: close\r\n"));
    expect(ok.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(ok.text.endsWith("ins-3g445roi")).toBe(true);
    // The freed slot takes a new connection.
    await new Promise((r) => setTimeout(r, 50));
    const again = await exchange(await open(port, "127.0.0.4"), GET("/latest/meta-data/instance-id", "Connection: close\r\n"));
    expect(again.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  });

  it("caps the connections of one guest address while another guest gets in", async () => {
    const port = await start({ maxConnections: 100, maxConnectionsPerSource: 2 });
    await open(port, "127.0.0.1");
    await open(port, "127.0.0.1");
    const refused = await exchange(await open(port, "127.0.0.1"), GET("/latest/meta-data/instance-id"));
    expect(refused.text).toMatch(/^HTTP\/1\.1 503 /);
    expect(refused.closed).toBe(true);
    const other = await exchange(await open(port, "127.0.0.2"), GET("/latest/meta-data/instance-id", "Connection: close\r\n"));
    expect(other.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  });

  it("holds no more than the cap at once under a flood from one address", async () => {
    const port = await start({ maxConnections: 1000, maxConnectionsPerSource: 10 });
    const all = await Promise.all(Array.from({ length: 40 }, () => open(port, "127.0.0.5")));
    const answers = await Promise.all(all.map((s) => exchange(s, undefined, 400)));
    const refusals = answers.filter((a) => a.text.startsWith("HTTP/1.1 503"));
    expect(refusals).toHaveLength(30);
    expect(answers.filter((a) => !a.closed)).toHaveLength(10);
  });
});

describe("IMDSv2 token store bounds", () => {
  it("refuses a new caller's token past the global cap (503), and frees the room when tokens expire", async () => {
    let t = 1_000_000;
    const store = new TokenStore({ now: () => t, maxTokens: 3 });
    expect([store.issue("a", 10), store.issue("b", 10), store.issue("c", 100)].every((x) => typeof x === "string")).toBe(true);
    expect(store.issue("d", 10)).toBeUndefined();
    // A caller that already holds tokens may renew within its own quota (its oldest is forgotten only at its cap).
    expect(store.size).toBe(3);
    t += 10_000;
    const d = store.issue("d", 10);
    expect(typeof d).toBe("string");
    expect(store.check("d", d)).toBe(true);
    expect(store.size).toBe(2);
  });

  it("the server answers 503 to a token PUT when the store is full", async () => {
    const port = await start({ maxTokens: 2 });
    const first = await call(port, { method: "PUT", path: "/latest/api/token", headers: { "X-aws-ec2-metadata-token-ttl-seconds": "60" }, from: "127.0.0.1" });
    const second = await call(port, { method: "PUT", path: "/latest/api/token", headers: { "X-aws-ec2-metadata-token-ttl-seconds": "60" }, from: "127.0.0.2" });
    expect([first.status, second.status]).toEqual([200, 200]);
    const third = await exchange(await open(port, "127.0.0.3"), PUT_TOKEN);
    expect(third.text).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
  });

  it("sweeps expired tokens in amortised time: 40,000 live tokens, issue stays cheap and the queue bounded", () => {
    let t = 0;
    const store = new TokenStore({ now: () => t, maxPerCaller: 1, maxTokens: 1_000_000 });
    const started = process.hrtime.bigint();
    // 40,000 callers, each renewing its token (TTLs of 1 s to 6 h) 3 times: stale queue entries pile up.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 40_000; i++) {
        store.issue(`10.0.${i >> 8}.${i & 255}`, 1 + ((i * 7919) % 21_600));
        t += 1;
      }
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    expect(store.size).toBeLessThanOrEqual(40_000);
    expect(store.size).toBeGreaterThan(30_000);
    expect(store.queued).toBeLessThanOrEqual(2 * store.size + 1024);
    // A walk of the whole store per issue (the old sweep above 10,000 tokens) takes minutes here.
    expect(ms).toBeLessThan(15_000);
    // Every token with a TTL under the elapsed time is gone without a sweep() call.
    t += 21_600_000;
    store.issue("late", 60);
    expect(store.size).toBe(1);
  }, 30_000);
});

describe("the Date header", () => {
  it("is an IMF-fixdate, made once a second", () => {
    const a = httpDate(Date.UTC(1994, 10, 6, 8, 49, 37, 10));
    expect(a.toString("latin1")).toBe("Sun, 06 Nov 1994 08:49:37 GMT");
    expect(httpDate(Date.UTC(1994, 10, 6, 8, 49, 37, 900))).toBe(a);
    expect(httpDate(Date.UTC(1994, 10, 6, 8, 49, 38)).toString("latin1")).toBe("Sun, 06 Nov 1994 08:49:38 GMT");
  });

  it("is brought up to date in every prebuilt buffer of an answer when the second changes", () => {
    const r = Http1Response.of(200, { "content-type": "text/plain" }, "hello");
    const t0 = Date.UTC(2026, 11, 7, 8, 0, 0);
    r.stamp(t0);
    for (const b of [r.head, r.headOnly, r.whole!]) expect(b.toString("latin1")).toContain("\r\ndate: Mon, 07 Dec 2026 08:00:00 GMT\r\n");
    r.stamp(t0 + 1500);
    for (const b of [r.head, r.headOnly, r.whole!]) expect(b.toString("latin1")).toContain("\r\ndate: Mon, 07 Dec 2026 08:00:01 GMT\r\n");
    expect(r.whole!.toString("latin1").endsWith("content-length: 5\r\n\r\nhello")).toBe(true);
  });

  it("is on every answer of the server, current, one per answer", async () => {
    const port = await start();
    const c = await open(port);
    const got = await exchange(c, GET("/latest/meta-data/instance-id") + GET("/nope") + GET("/latest/meta-data/instance-id", "Connection: close\r\n"));
    const dates = [...got.text.matchAll(/\r\ndate: ([^\r]+)\r\n/g)].map((m) => Date.parse(m[1]!));
    expect(dates).toHaveLength(3);
    for (const d of dates) expect(Math.abs(d - Date.now())).toBeLessThan(2500);
  });
});
