/**
 * The metadata redirect end to end, with real nftables and real sockets: a
 * throwaway bridge in the test namespace (its "host" side), guests in throwaway
 * network namespaces behind veth pairs, the redirect installed, the metadata
 * server on the bridge's gateway, and curl inside the guests asking
 * 169.254.169.254 and 169.254.0.23. No traffic leaves the namespaces this file
 * creates (and the one it runs in). Every name carries a random suffix so runs
 * can overlap; the nftables table is a per-run one (the `table` option) for the
 * same reason.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pino from "pino";
import { createMetadataServer, type GuestView, type MetadataServer } from "../../agent/metadata/server.js";
import { LocalRunner } from "../../drivers/exec/local.js";
import { ensureMetadataRedirect, removeMetadataRedirect } from "../../drivers/network/metadata-redirect.js";
import { guestConfig, guestView } from "../unit/metadata/fixture.js";

const runner = new LocalRunner({ defaultTimeoutMs: 20_000 });
const isRoot = process.getuid?.() === 0;
const rand = randomBytes(3).toString("hex");
const octet = 1 + (randomBytes(1)[0]! % 250);
const subnet = `10.233.${octet}`;
const gateway = `${subnet}.1`;
const otherLocal = `${subnet}.2`;
const guestIp = `${subnet}.10`;
const strangerIp = `${subnet}.20`;
const bridge = `cdhmdb${rand}`;
const table = `cdh_md_${rand}`;
const nsGuest = `cdhmd-${rand}-g`;
const nsStranger = `cdhmd-${rand}-s`;
const vethGuest = `vmd${rand}g`;
const vethStranger = `vmd${rand}s`;

const sh = (...argv: string[]) => runner.run(argv);
const inNs = (ns: string, ...argv: string[]) => runner.run(["ip", "netns", "exec", ns, ...argv], { allowFailure: true });

async function curl(ns: string, url: string, extra: string[] = []): Promise<{ code: string; body: string }> {
  const marker = "\n@@code=";
  const r = await inNs(ns, "curl", "-sS", "-m", "5", ...extra, "-w", `${marker}%{http_code}`, url);
  const at = r.stdout.lastIndexOf(marker);
  return at < 0 ? { code: "000", body: r.stdout } : { code: r.stdout.slice(at + marker.length), body: r.stdout.slice(0, at) };
}

async function addGuestNamespace(ns: string, veth: string, ip: string, route: "default" | "on-link"): Promise<void> {
  await sh("ip", "netns", "add", ns);
  await sh("ip", "link", "add", veth, "type", "veth", "peer", "name", `${veth}p`);
  await sh("ip", "link", "set", `${veth}p`, "netns", ns);
  await sh("ip", "link", "set", veth, "master", bridge, "up");
  await sh("ip", "-n", ns, "link", "set", `${veth}p`, "name", "eth0");
  await sh("ip", "-n", ns, "link", "set", "lo", "up");
  await sh("ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0");
  await sh("ip", "-n", ns, "link", "set", "eth0", "up");
  if (route === "default") await sh("ip", "-n", ns, "route", "add", "default", "via", gateway);
  // Like Windows' APIPA route or `route add -net 169.254.0.0/16 dev eth0`: the guest ARPs for the address itself.
  else await sh("ip", "-n", ns, "route", "add", "169.254.0.0/16", "dev", "eth0");
}

describe.skipIf(!isRoot)("metadata redirect (nftables DNAT to the gateway, real sockets)", () => {
  let server: MetadataServer | undefined;
  let port = 0;
  const view: GuestView = guestView(
    guestConfig({
      nics: [{ mac: "52:54:00:12:34:56", ipv4: guestIp, prefixLength: 24, gateway, vpcId: "vpc-test0001", subnetId: "subnet-test0001" }],
    }),
  );

  beforeAll(async () => {
    await sh("ip", "link", "add", bridge, "type", "bridge");
    await sh("ip", "addr", "add", `${gateway}/24`, "dev", bridge);
    await sh("ip", "addr", "add", `${otherLocal}/32`, "dev", bridge);
    await sh("ip", "link", "set", bridge, "up");
    await addGuestNamespace(nsGuest, vethGuest, guestIp, "default");
    await addGuestNamespace(nsStranger, vethStranger, strangerIp, "on-link");

    server = createMetadataServer({
      // The gateway, and a second local address standing for another network's gateway.
      listen: [
        { host: gateway, port: 0 },
        { host: otherLocal, port: 0 },
      ],
      resolve: (local, remote) => (local === gateway && remote === guestIp ? view : undefined),
      logger: pino({ level: "silent" }),
    });
    await server.listen();
    port = server.addresses()[0]!.port;
    // Both listeners must share one port for the fence test; rebind the second one if needed.
    if (server.addresses()[1]!.port !== port) {
      await server.close();
      server = createMetadataServer({
        listen: [
          { host: gateway, port },
          { host: otherLocal, port },
        ],
        resolve: (local, remote) => (local === gateway && remote === guestIp ? view : undefined),
        logger: pino({ level: "silent" }),
      });
      await server.listen();
    }
    await ensureMetadataRedirect({ runner, bridges: [{ bridge, gateway }], port, table });
    // Idempotent: a second call replaces the table, it does not add to it.
    await ensureMetadataRedirect({ runner, bridges: [{ bridge, gateway }], port, table });
  });

  afterAll(async () => {
    await server?.close();
    await removeMetadataRedirect({ runner, table, bridges: [{ bridge }] }).catch(() => undefined);
    for (const ns of [nsGuest, nsStranger]) await runner.run(["ip", "netns", "del", ns], { allowFailure: true });
    for (const link of [vethGuest, vethStranger, bridge]) await runner.run(["ip", "link", "del", link], { allowFailure: true });
  });

  it("installs one DNAT rule per bridge, however often it is ensured", async () => {
    const listing = (await sh("nft", "list", "table", "ip", table)).stdout;
    expect(listing.match(/dnat to/g)).toHaveLength(1);
    expect(listing).toContain(`iifname "${bridge}"`);
    expect(listing).toContain(`dnat to ${gateway}:${port}`);
  });

  it("brings a guest's request for 169.254.169.254 to the server, which knows it by its address", async () => {
    const r = await curl(nsGuest, "http://169.254.169.254/latest/meta-data/local-ipv4");
    expect(r).toEqual({ code: "200", body: guestIp });
  });

  it("does the same for 169.254.0.23", async () => {
    expect(await curl(nsGuest, "http://169.254.0.23/latest/meta-data/instance-id")).toEqual({ code: "200", body: "ins-3g445roi" });
    expect((await curl(nsGuest, "http://169.254.0.23/openstack/latest/meta_data.json")).code).toBe("200");
  });

  it("answers 404 to an address that belongs to no instance (on-link guest, answered ARP)", async () => {
    const a = await curl(nsStranger, "http://169.254.169.254/latest/meta-data/local-ipv4");
    const b = await curl(nsStranger, "http://169.254.0.23/latest/meta-data/instance-id");
    expect([a.code, b.code]).toEqual(["404", "404"]);
    expect(a.body).toBe("Not Found");
  });

  it("drops a guest's direct attempt on the metadata port of another network's address", async () => {
    const direct = await curl(nsGuest, `http://${otherLocal}:${port}/latest/meta-data/local-ipv4`, ["-m", "2"]);
    expect(direct.code).toBe("000");
    // Its own gateway at the metadata port is the same request as through the redirect.
    expect(await curl(nsGuest, `http://${gateway}:${port}/latest/meta-data/local-ipv4`)).toEqual({ code: "200", body: guestIp });
  });

  it("leaves nothing behind when removed", async () => {
    await removeMetadataRedirect({ runner, table, bridges: [{ bridge }] });
    const gone = await runner.run(["nft", "list", "table", "ip", table], { allowFailure: true });
    expect(gone.exitCode).not.toBe(0);
    const addrs = (await sh("ip", "-4", "-o", "addr", "show", "dev", bridge)).stdout;
    expect(addrs).not.toContain("169.254.");
    expect((await curl(nsGuest, "http://169.254.169.254/latest/meta-data/local-ipv4", ["-m", "2"])).code).not.toBe("200");
    // Removing twice is fine.
    await removeMetadataRedirect({ runner, table });
  });
});
