import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMetadataServer, type GuestView, type MetadataServer } from "../../../agent/metadata/server.js";
import { call, guestConfig, guestView, KEY_A, KEY_B, silentLogger } from "./fixture.js";

const A = guestView();
const NO_EXTRAS = guestView(
  guestConfig({ instanceId: "ins-bare0001", userData: undefined, publicKeys: [], ntpServers: [], passwordLogin: true }),
);
const GROUPED = guestView(
  guestConfig({
    instanceId: "ins-grouped1",
    securityGroups: [
      { id: "sg-bbbbbbbb", name: "web" },
      { id: "sg-aaaaaaaa", name: "default" },
    ],
  }),
);
const views = new Map<string, GuestView>([
  ["127.0.0.1", A],
  ["127.0.0.3", NO_EXTRAS],
  ["127.0.0.4", GROUPED],
]);

let server: MetadataServer;
let port: number;
const get = (path: string, from?: string) => call(port, { path, ...(from ? { from } : {}) });

beforeAll(async () => {
  server = createMetadataServer({
    listen: [{ host: "127.0.0.1", port: 0 }],
    resolve: (_local, remote) => views.get(remote),
    logger: silentLogger(),
    rateLimit: false,
  });
  await server.listen();
  port = server.addresses()[0]!.port;
});
afterAll(() => server.close());

describe("the Tencent tree", () => {
  it("GET / lists exactly the seed's version roots, one per line", async () => {
    const r = await get("/");
    expect(r.status).toBe(200);
    expect(r.text).toBe("1.0\n2017-09-19\nlatest\nmeta-data");
    expect(r.headers["content-type"]).toBe("text/plain");
  });

  it("lists /latest/meta-data/ sorted, one entry per line, folders ending in /", async () => {
    const r = await get("/latest/meta-data/");
    expect(r.status).toBe(200);
    expect(r.text.split("\n")).toEqual([
      "ami-id",
      "ami-launch-index",
      "block-device-mapping/",
      "hostname",
      "instance/",
      "instance-id",
      "instance-name",
      "instance-type",
      "local-hostname",
      "local-ipv4",
      "mac",
      "network/",
      "ntp/",
      "payment/",
      "placement/",
      "public-keys/",
      "reservation-id",
      "uuid",
    ]);
    expect(r.text.endsWith("\n")).toBe(false);
    expect((await get("/latest/meta-data")).text).toBe(r.text);
  });

  it("answers the seed's leaves in the seed's formats", async () => {
    const expected: Record<string, string> = {
      "instance-id": "ins-3g445roi",
      uuid: "cfac763a-7094-446b-a8a9-b995e638471a",
      "instance-name": "web-1",
      "local-ipv4": "10.104.13.59",
      "placement/region": "ap-cityA",
      "placement/zone": "ap-cityA-3",
      "payment/charge-type": "CDHPAID",
      "payment/create-time": "2018-09-18 11:27:33",
      "instance/instance-type": "CDH_2C4G",
      "instance/image-id": "img-abcd1234",
      "ntp/servers": "ntp1.example\nntp2.example",
    };
    for (const [path, value] of Object.entries(expected)) {
      for (const version of ["latest", "1.0", "2017-09-19"]) {
        const r = await get(`/${version}/meta-data/${path}`);
        expect([path, version, r.status, r.text]).toEqual([path, version, 200, value]);
      }
    }
    expect((await get("/latest/meta-data/placement/")).text).toBe("availability-zone\nregion\nzone");
  });

  it("serves the versionless legacy form /meta-data/… like 1.0", async () => {
    expect((await get("/meta-data/local-ipv4")).text).toBe("10.104.13.59");
    expect((await get("/meta-data/mac")).text).toBe("52:54:00:BF:B3:51");
  });

  it("prints MACs in uppercase in the Tencent-only versions, as the seed does", async () => {
    expect((await get("/2017-09-19/meta-data/mac")).text).toBe("52:54:00:BF:B3:51");
    expect((await get("/1.0/meta-data/network/interfaces/macs/")).text).toBe("52:54:00:BF:B3:51/");
    const nic = await get("/1.0/meta-data/network/interfaces/macs/52:54:00:BF:B3:51/");
    expect(nic.text.split("\n")).toEqual([
      "device-number",
      "local-ipv4s/",
      "mac",
      "primary-local-ipv4",
      "subnet-id",
      "subnet-ipv4-cidr-block",
      "vpc-id",
    ]);
    const base = "/2017-09-19/meta-data/network/interfaces/macs/52:54:00:BF:B3:51";
    expect((await get(`${base}/mac`)).text).toBe("52:54:00:BF:B3:51");
    expect((await get(`${base}/vpc-id`)).text).toBe("vpc-ja82n9op");
    expect((await get(`${base}/subnet-id`)).text).toBe("subnet-ja82n9op");
    expect((await get(`${base}/primary-local-ipv4`)).text).toBe("10.104.13.59");
    expect((await get(`${base}/subnet-ipv4-cidr-block`)).text).toBe("10.104.0.0/18");
    expect((await get(`${base}/local-ipv4s/`)).text).toBe("10.104.13.59/");
    expect((await get(`${base}/local-ipv4s/10.104.13.59`)).text).toBe("gateway\nlocal-ipv4\nsubnet-mask");
    expect((await get(`${base}/local-ipv4s/10.104.13.59/gateway`)).text).toBe("10.104.0.1");
    expect((await get(`${base}/local-ipv4s/10.104.13.59/local-ipv4`)).text).toBe("10.104.13.59");
    expect((await get(`${base}/local-ipv4s/10.104.13.59/subnet-mask`)).text).toBe("255.255.192.0");
  });

  it("prints MACs in lowercase under latest and 2009-04-04 (what cloud-init matches), and answers both cases everywhere", async () => {
    expect((await get("/latest/meta-data/mac")).text).toBe("52:54:00:bf:b3:51");
    expect((await get("/latest/meta-data/network/interfaces/macs/")).text).toBe("52:54:00:bf:b3:51/");
    expect((await get("/2009-04-04/meta-data/network/interfaces/macs/")).text).toBe("52:54:00:bf:b3:51/");
    expect((await get("/latest/meta-data/network/interfaces/macs/52:54:00:BF:B3:51/vpc-id")).text).toBe("vpc-ja82n9op");
    expect((await get("/1.0/meta-data/network/interfaces/macs/52:54:00:bf:b3:51/mac")).text).toBe("52:54:00:BF:B3:51");
    // The seed's examples also spell the folder `mac/` (singular).
    expect((await get("/1.0/meta-data/network/interfaces/mac/52:54:00:BF:B3:51/vpc-id")).text).toBe("vpc-ja82n9op");
  });

  it("serves the user data as bytes at /latest/user-data and 404 when there is none", async () => {
    const r = await get("/latest/user-data");
    expect(r.status).toBe(200);
    expect(r.body.equals(A.config.userData!)).toBe(true);
    expect(r.headers["content-type"]).toBe("application/octet-stream");
    expect((await get("/latest/")).text).toBe("meta-data/\nuser-data");
    const none = await get("/latest/user-data", "127.0.0.3");
    expect(none.status).toBe(404);
    expect((await get("/latest/", "127.0.0.3")).text).toBe("meta-data/");
  });

  it("leaves out what it has no value for (public-ipv4, app-id, …): 404, as for any unknown path", async () => {
    for (const path of ["public-ipv4", "app-id", "spot/termination-time", "Instance-Id", "instance-id/", "nope"]) {
      expect((await get(`/latest/meta-data/${path}`)).status).toBe(404);
    }
    const bare = await get("/latest/meta-data/", "127.0.0.3");
    expect(bare.text.split("\n")).not.toContain("public-keys/");
    expect(bare.text.split("\n")).not.toContain("ntp/");
  });
});

describe("the EC2 tree", () => {
  it("has what cloud-init's Ec2 datasource reads at 2009-04-04, and 404 for versions it probes first", async () => {
    // 2009-04-04 is read by EC2 clients only: it names the instance as the EC2 document does (the UUID).
    expect((await get("/2009-04-04/meta-data/instance-id")).text).toBe("cfac763a-7094-446b-a8a9-b995e638471a");
    expect((await get("/latest/meta-data/instance-id")).text).toBe("ins-3g445roi");
    expect((await get("/2016-09-02/meta-data/instance-id")).status).toBe(404);
    expect((await get("/2009-04-04/meta-data/hostname")).text).toBe("web-1");
    expect((await get("/2009-04-04/meta-data/local-hostname")).text).toBe("web-1");
    expect((await get("/2009-04-04/meta-data/placement/availability-zone")).text).toBe("ap-cityA-3");
    expect((await get("/2009-04-04/user-data")).body.equals(A.config.userData!)).toBe(true);
  });

  it("lists public keys as index=name, with the key at <index>/openssh-key (with and without the final /)", async () => {
    expect((await get("/latest/meta-data/public-keys/")).text).toBe("0=alice\n1=bob");
    expect((await get("/latest/meta-data/public-keys")).text).toBe("0=alice\n1=bob");
    expect((await get("/latest/meta-data/public-keys/0/")).text).toBe("openssh-key");
    expect((await get("/latest/meta-data/public-keys/0/openssh-key")).text).toBe(KEY_A);
    expect((await get("/2009-04-04/meta-data/public-keys/1/openssh-key")).text).toBe(KEY_B);
    expect((await get("/latest/meta-data/public-keys/2/openssh-key")).status).toBe(404);
  });

  it("carries the extra EC2 keys of the documents (scalars, lists, folders)", async () => {
    expect((await get("/latest/meta-data/reservation-id")).text).toBe("r-00000001");
    expect((await get("/latest/meta-data/block-device-mapping/")).text).toBe("ami\nroot");
    expect((await get("/latest/meta-data/block-device-mapping/root")).text).toBe("/dev/vda");
  });
});

describe("security groups in the metadata trees", () => {
  it("serves the instance's groups in priority order: EC2 security-groups (names), per-MAC security-group-ids, Tencent instance/security-group", async () => {
    const from = "127.0.0.4";
    for (const version of ["latest", "2009-04-04", "1.0"]) {
      expect((await get(`/${version}/meta-data/security-groups`, from)).text).toBe("web\ndefault");
      expect((await get(`/${version}/meta-data/instance/security-group`, from)).text).toBe("sg-bbbbbbbb\nsg-aaaaaaaa");
    }
    expect((await get("/latest/meta-data/network/interfaces/macs/52:54:00:bf:b3:51/security-group-ids", from)).text).toBe("sg-bbbbbbbb\nsg-aaaaaaaa");
    expect((await get("/1.0/meta-data/network/interfaces/macs/52:54:00:BF:B3:51/security-groups", from)).text).toBe("web\ndefault");
    expect((await get("/latest/meta-data/network/interfaces/macs/52:54:00:BF:B3:51/security-group-ids", from)).text).toBe("sg-bbbbbbbb\nsg-aaaaaaaa");
  });

  it("the groups come from the instance, not from the EC2 document; none bound, no such path", async () => {
    // The fixture's EC2 document says security-groups default, web; the config (no groups) wins.
    expect((await get("/latest/meta-data/security-groups")).status).toBe(404);
    expect((await get("/latest/meta-data/instance/security-group")).status).toBe(404);
  });
});

describe("the OpenStack tree", () => {
  it("lists its versions, dated ones and latest", async () => {
    const r = await get("/openstack");
    expect(r.text.split("\n")).toContain("latest");
    expect(r.text.split("\n")).toContain("2013-04-04");
    expect((await get("/openstack/")).text).toBe(r.text);
  });

  it("lists the files of a version, and serves the documents as JSON", async () => {
    expect((await get("/openstack/latest/")).text).toBe(
      "meta_data.json\nnetwork_data.json\npassword\nuser_data\nvendor_data.json",
    );
    const md = await get("/openstack/latest/meta_data.json");
    expect(md.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(md.text)).toEqual(A.docs.openstack.metaData);
    expect(JSON.parse((await get("/openstack/2018-08-27/network_data.json")).text)).toEqual(A.docs.openstack.networkData);
    expect(JSON.parse((await get("/openstack/latest/vendor_data.json")).text)).toEqual({});
    expect((await get("/openstack/latest/user_data")).body.equals(A.config.userData!)).toBe(true);
  });

  it("has no user_data without user data", async () => {
    expect((await get("/openstack/latest/user_data", "127.0.0.3")).status).toBe(404);
    expect((await get("/openstack/latest/", "127.0.0.3")).text).not.toContain("user_data");
  });
});

describe("rendering and caching", () => {
  it("serves new documents as soon as the resolver hands out a view with new documents", async () => {
    const before = await get("/latest/meta-data/hostname");
    const renamed = guestView(guestConfig({ hostname: "web-2", generation: 2 }));
    views.set("127.0.0.1", renamed);
    try {
      expect(before.text).toBe("web-1");
      expect((await get("/latest/meta-data/hostname")).text).toBe("web-2");
    } finally {
      views.set("127.0.0.1", A);
    }
    expect((await get("/latest/meta-data/hostname")).text).toBe("web-1");
  });
});
