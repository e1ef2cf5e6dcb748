import { afterEach, describe, expect, it } from "vitest";
import {
  createMetadataServer,
  type GuestView,
  type MetadataServer,
  type MetadataServerOptions,
} from "../../../agent/metadata/server.js";
import { call, guestConfig, guestView, raw, silentLogger } from "./fixture.js";

const started: MetadataServer[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
});

interface Setup {
  port: number;
  views: Map<string, GuestView & { password: Buffer | undefined }>;
  clock: { t: number };
}

async function start(options: Partial<MetadataServerOptions> = {}): Promise<Setup> {
  const views = new Map([
    ["127.0.0.1", guestView()],
    ["127.0.0.3", guestView(guestConfig({ instanceId: "ins-other001", nics: [] }))],
  ]);
  const clock = { t: 1_700_000_000_000 };
  const server = createMetadataServer({
    listen: [{ host: "127.0.0.1", port: 0 }],
    resolve: (_local, remote) => views.get(remote),
    logger: silentLogger(),
    rateLimit: false,
    now: () => clock.t,
    ...options,
  });
  await server.listen();
  started.push(server);
  return { port: server.addresses()[0]!.port, views, clock };
}

const UNKNOWN = "127.0.0.2";

describe("who is asking", () => {
  it("answers an unknown caller 404 with the same body as any 404, whatever it asks", async () => {
    const { port } = await start();
    const missing = await call(port, { path: "/latest/meta-data/no-such-thing" });
    expect(missing.status).toBe(404);
    for (const c of [
      { path: "/latest/meta-data/instance-id" },
      { path: "/" },
      { path: "/latest/api/token", method: "PUT", headers: { "x-aws-ec2-metadata-token-ttl-seconds": "60" } },
      { path: "/openstack/latest/password", method: "POST", body: "x" },
      { path: "/latest/meta-data/", method: "DELETE" },
      { path: "/../../etc/passwd" },
    ]) {
      const r = await call(port, { ...c, from: UNKNOWN });
      expect([c.path, r.status, r.text, r.headers["content-type"]]).toEqual([
        c.path,
        404,
        missing.text,
        missing.headers["content-type"],
      ]);
    }
  });

  it("never takes the caller from a header", async () => {
    const { port } = await start();
    const r = await call(port, {
      path: "/latest/meta-data/instance-id",
      from: UNKNOWN,
      headers: { "x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "x-instance-id": "ins-3g445roi" },
    });
    expect(r.status).toBe(404);
    const other = await call(port, { path: "/latest/meta-data/instance-id", from: "127.0.0.3", headers: { "x-forwarded-for": "127.0.0.1" } });
    expect(other.text).toBe("ins-other001");
  });

  it("passes the local and the remote address to the resolver", async () => {
    const seen: string[] = [];
    const { port } = await start({
      resolve: (local, remote) => {
        seen.push(`${local} ${remote}`);
        return undefined;
      },
    });
    await call(port, { path: "/", from: "127.0.0.9" });
    expect(seen).toEqual(["127.0.0.1 127.0.0.9"]);
  });

  it("answers 500, not 404, when the resolver throws", async () => {
    const { port } = await start({
      resolve: () => {
        throw new Error("boom");
      },
    });
    expect((await call(port, { path: "/" })).status).toBe(500);
  });
});

describe("paths", () => {
  it("refuses traversal, // tricks, encoded separators, queries and absolute-form targets with 404", async () => {
    const { port } = await start();
    for (const target of [
      "/latest/meta-data/../meta-data/instance-id",
      "/latest/meta-data/./instance-id",
      "/latest/meta-data/%2e%2e/meta-data/instance-id",
      "/latest/meta-data/%2E%2E/%2E%2E/etc/passwd",
      "/latest%2fmeta-data/instance-id",
      "/latest/meta-data%5cinstance-id",
      "//latest/meta-data/instance-id",
      "/latest//meta-data/instance-id",
      "/latest/meta-data/instance-id?x=1",
      "/latest/meta-data/instance-id#frag",
      "/latest/meta-data/instance-id%00",
      "/latest/meta-data/%zz",
      "http://169.254.169.254/latest/meta-data/instance-id",
      "*",
    ]) {
      const reply = await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      expect([target, reply.slice(0, 12)]).toEqual([target, "HTTP/1.1 404"]);
    }
  });

  it("decodes harmless percent-escapes", async () => {
    const { port } = await start();
    expect((await call(port, { path: "/latest/meta-data/%69nstance-id" })).text).toBe("ins-3g445roi");
    expect((await call(port, { path: "/latest/meta-data/network/interfaces/macs/52%3A54%3A00%3Abf%3Ab3%3A51/mac" })).text).toBe(
      "52:54:00:bf:b3:51",
    );
  });
});

describe("methods", () => {
  it("answers other methods 405 with Allow", async () => {
    const { port } = await start();
    for (const method of ["DELETE", "PATCH", "OPTIONS", "POST", "PUT"]) {
      const r = await call(port, { path: "/latest/meta-data/", method });
      expect([method, r.status, r.headers.allow]).toEqual([method, 405, "GET, HEAD"]);
    }
    const token = await call(port, { path: "/latest/api/token" });
    expect([token.status, token.headers.allow]).toEqual([405, "PUT"]);
    const pw = await call(port, { path: "/openstack/latest/password", method: "DELETE" });
    expect([pw.status, pw.headers.allow]).toEqual([405, "GET, HEAD, POST"]);
  });

  it("answers HEAD with the headers of GET and no body", async () => {
    const { port } = await start();
    const head = await call(port, { path: "/latest/meta-data/instance-id", method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String("ins-3g445roi".length));
    expect(head.body.length).toBe(0);
  });

  it("keeps connections alive", async () => {
    const { port } = await start();
    const reply = await raw(
      port,
      "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\nGET /latest/meta-data/uuid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    expect(reply.match(/HTTP\/1\.1 200/g)).toHaveLength(2);
    expect(reply).toContain("ins-3g445roi");
    expect(reply).toContain("cfac763a-7094-446b-a8a9-b995e638471a");
  });

  it("refuses a huge request head with 431 and keeps serving", async () => {
    const { port } = await start();
    const reply = await raw(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(16 * 1024)}\r\n\r\n`);
    expect(reply.startsWith("HTTP/1.1 431")).toBe(true);
    expect((await call(port, { path: "/latest/meta-data/instance-id" })).text).toBe("ins-3g445roi");
  });

  it("refuses garbage with 400 and keeps serving", async () => {
    const { port } = await start();
    expect((await raw(port, "NOT HTTP AT ALL\r\n\r\n")).startsWith("HTTP/1.1 400")).toBe(true);
    expect((await call(port, { path: "/" })).status).toBe(200);
  });
});

describe("IMDSv2 tokens", () => {
  const ttl = (s: string) => ({ "x-aws-ec2-metadata-token-ttl-seconds": s });
  const put = (port: number, headers: Record<string, string>, from?: string) =>
    call(port, { path: "/latest/api/token", method: "PUT", headers, ...(from ? { from } : {}) });

  it("issues a token for 1–21600 s, echoing the TTL, and accepts it on GET", async () => {
    const { port } = await start();
    const r = await put(port, ttl("60"));
    expect(r.status).toBe(200);
    expect(r.headers["x-aws-ec2-metadata-token-ttl-seconds"]).toBe("60");
    expect(r.text).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const g = await call(port, { path: "/latest/meta-data/instance-id", headers: { "x-aws-ec2-metadata-token": r.text } });
    expect(g.text).toBe("ins-3g445roi");
    expect((await put(port, ttl("21600"))).status).toBe(200);
    expect((await put(port, ttl("1"))).status).toBe(200);
  });

  it("answers 400 to a missing or bad TTL", async () => {
    const { port } = await start();
    for (const bad of ["0", "21601", "-5", "1.5", "abc", "", "99999999"]) {
      expect([bad, (await put(port, ttl(bad))).status]).toEqual([bad, 400]);
    }
    expect((await put(port, {})).status).toBe(400);
  });

  it("refuses a token PUT that carries X-Forwarded-For with 403", async () => {
    const { port } = await start();
    expect((await put(port, { ...ttl("60"), "x-forwarded-for": "10.0.0.9" })).status).toBe(403);
  });

  it("answers 401 to a wrong token, and to another caller's token", async () => {
    const { port } = await start();
    const mine = (await put(port, ttl("60"))).text;
    expect((await call(port, { path: "/", headers: { "x-aws-ec2-metadata-token": "forged" } })).status).toBe(401);
    expect((await call(port, { path: "/", from: "127.0.0.3", headers: { "x-aws-ec2-metadata-token": mine } })).status).toBe(401);
    expect((await call(port, { path: "/", headers: { "x-aws-ec2-metadata-token": mine } })).status).toBe(200);
  });

  it("answers 401 once the token has expired", async () => {
    const { port, clock } = await start();
    const token = (await put(port, ttl("60"))).text;
    const headers = { "x-aws-ec2-metadata-token": token };
    clock.t += 59_999;
    expect((await call(port, { path: "/latest/meta-data/uuid", headers })).status).toBe(200);
    clock.t += 1;
    expect((await call(port, { path: "/latest/meta-data/uuid", headers })).status).toBe(401);
  });

  it("with requireToken, refuses every GET without a token and serves those with one", async () => {
    const { port } = await start({ requireToken: true });
    expect((await call(port, { path: "/latest/meta-data/instance-id" })).status).toBe(401);
    expect((await call(port, { path: "/openstack/latest/meta_data.json" })).status).toBe(401);
    const token = (await put(port, ttl("300"))).text;
    const r = await call(port, { path: "/latest/meta-data/instance-id", headers: { "x-aws-ec2-metadata-token": token } });
    expect(r.text).toBe("ins-3g445roi");
    expect((await call(port, { path: "/latest/meta-data/instance-id", from: UNKNOWN })).status).toBe(404);
  });
});

describe("rate limit", () => {
  it("answers 429 beyond the burst, per caller, and refills with time", async () => {
    const { port, clock } = await start({ rateLimit: { perSecond: 2, burst: 3 } });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call(port, { path: "/" })).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    const limited = await call(port, { path: "/" });
    expect(limited.headers["retry-after"]).toBe("1");
    expect((await call(port, { path: "/", from: "127.0.0.3" })).status).toBe(200);
    clock.t += 500;
    expect((await call(port, { path: "/" })).status).toBe(200);
    expect((await call(port, { path: "/" })).status).toBe(429);
  });

  it("is on by default", async () => {
    const { port } = await start({ rateLimit: undefined });
    let last = 0;
    for (let i = 0; i < 201 && last !== 429; i++) last = (await call(port, { path: "/" })).status;
    expect(last).toBe(429);
  });
});

describe("the OpenStack password", () => {
  const path = "/openstack/2013-04-04/password";

  it("is empty until posted, accepts one POST, then answers 409", async () => {
    const { port, views } = await start();
    const empty = await call(port, { path });
    expect([empty.status, empty.text]).toEqual([200, ""]);
    expect((await call(port, { path, method: "POST", body: "c2VjcmV0" })).status).toBe(200);
    expect(views.get("127.0.0.1")!.password!.toString()).toBe("c2VjcmV0");
    expect((await call(port, { path: "/openstack/latest/password" })).text).toBe("c2VjcmV0");
    expect((await call(port, { path, method: "POST", body: "again" })).status).toBe(409);
    expect((await call(port, { path })).text).toBe("c2VjcmV0");
    expect((await call(port, { path, from: "127.0.0.3" })).text).toBe("");
  });

  it("accepts 1020 bytes and refuses 1021 with 400, declared or chunked", async () => {
    const { port, views } = await start();
    expect((await call(port, { path, method: "POST", body: "x".repeat(1021) })).status).toBe(400);
    const chunked = await raw(
      port,
      `POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3fd\r\n${"y".repeat(1021)}\r\n0\r\n\r\n`,
    );
    expect(chunked.startsWith("HTTP/1.1 400")).toBe(true);
    expect(views.get("127.0.0.1")!.password).toBeUndefined();
    expect((await call(port, { path, method: "POST", body: "z".repeat(1020) })).status).toBe(200);
    expect(views.get("127.0.0.1")!.password!.length).toBe(1020);
  });
});

describe("listeners", () => {
  it("listens on every address given and closes them all", async () => {
    const server = createMetadataServer({
      listen: [
        { host: "127.0.0.1", port: 0 },
        { host: "127.0.0.1", port: 0 },
      ],
      resolve: () => guestView(),
      logger: silentLogger(),
    });
    await server.listen();
    const addresses = server.addresses();
    expect(addresses).toHaveLength(2);
    for (const a of addresses) expect((await call(a.port, { path: "/latest/meta-data/uuid" })).status).toBe(200);
    await server.close();
    expect(server.addresses()).toEqual([]);
    await expect(call(addresses[0]!.port, { path: "/" })).rejects.toThrow();
  });

  it("fails listen() and releases what it bound when one address cannot be bound", async () => {
    const { port } = await start();
    const server = createMetadataServer({
      listen: [
        { host: "127.0.0.1", port: 0 },
        { host: "127.0.0.1", port },
      ],
      resolve: () => undefined,
      logger: silentLogger(),
    });
    await expect(server.listen()).rejects.toThrow(/EADDRINUSE/);
    expect(server.addresses()).toEqual([]);
  });
});
