/**
 * Hand-made guests for the metadata tests (GuestDocuments are built here by hand,
 * not by cloud-init/documents.ts, so these tests pin the server alone), a
 * resolver keyed by the remote address, and a small HTTP client that can choose
 * its source address on loopback (127.0.0.x) and send raw request text.
 */
import { request } from "node:http";
import { connect } from "node:net";
import pino from "pino";
import type { GuestConfig, GuestDocuments } from "../../../cloud-init/types.js";
import type { GuestView } from "../../../agent/metadata/server.js";

export const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5YQ alice@example";
export const KEY_B = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDtest bob@example";

export function guestConfig(overrides: Partial<GuestConfig> = {}): GuestConfig {
  return {
    instanceId: "ins-3g445roi",
    uuid: "cfac763a-7094-446b-a8a9-b995e638471a",
    instanceName: "web-1",
    hostname: "web-1",
    osType: "linux",
    availabilityZone: "ap-cityA-3",
    region: "ap-cityA",
    hostId: "host-abcd1234",
    instanceType: "CDH_2C4G",
    imageId: "img-abcd1234",
    launchIndex: 0,
    generation: 1,
    createdTime: "2018-09-18T11:27:33Z",
    nics: [
      {
        mac: "52:54:00:bf:b3:51",
        ipv4: "10.104.13.59",
        prefixLength: 18,
        gateway: "10.104.0.1",
        vpcId: "vpc-ja82n9op",
        subnetId: "subnet-ja82n9op",
      },
    ],
    nameservers: ["10.104.0.1"],
    ntpServers: ["ntp1.example", "ntp2.example"],
    publicKeys: [
      { keyId: "skey-aaaa1111", keyName: "alice", publicKey: KEY_A },
      { keyId: "skey-bbbb2222", keyName: "bob", publicKey: KEY_B },
    ],
    loginUser: "root",
    passwordLogin: false,
    userData: Buffer.from("#!/bin/sh\necho 179, client, cityS\n"),
    ...overrides,
  };
}

export function guestDocuments(cfg: GuestConfig): GuestDocuments {
  const ud = cfg.userData;
  return {
    openstack: {
      metaData: {
        uuid: cfg.uuid,
        name: cfg.instanceName,
        hostname: cfg.hostname,
        availability_zone: cfg.availabilityZone,
        launch_index: cfg.launchIndex,
        public_keys: Object.fromEntries(cfg.publicKeys.map((k) => [k.keyName, k.publicKey])),
        keys: cfg.publicKeys.map((k) => ({ name: k.keyName, type: "ssh", data: k.publicKey })),
        meta: {},
      },
      vendorData: {},
      networkData: {
        links: cfg.nics.map((n, i) => ({ id: `interface${i}`, type: "phy", ethernet_mac_address: n.mac, mtu: 1500 })),
        networks: cfg.nics.map((n, i) => ({
          id: `network${i}`,
          type: "ipv4",
          link: `interface${i}`,
          ip_address: n.ipv4,
          netmask: "255.255.192.0",
          routes: [{ network: "0.0.0.0", netmask: "0.0.0.0", gateway: n.gateway }],
        })),
        services: cfg.nameservers.map((a) => ({ type: "dns", address: a })),
      },
      ...(ud ? { userData: ud } : {}),
    },
    ec2: {
      metaData: {
        // Like cloud-init/documents.ts: the EC2 document names the instance by its UUID.
        "instance-id": cfg.uuid,
        "reservation-id": "r-00000001",
        "security-groups": ["default", "web"],
        "block-device-mapping": { ami: "vda", root: "/dev/vda" },
        // The tree renders public keys from the config; this shape must not leak into it.
        "public-keys": { "0": { _name: "0=ignored", "openssh-key": "ignored" } },
      },
      ...(ud ? { userData: ud } : {}),
    },
    tencentOsConf: "",
    nocloud: { metaData: "", userData: ud ?? Buffer.alloc(0), networkConfig: "" },
  };
}

/** A guest as the server sees it, with a password slot that keeps the first POST. */
export function guestView(cfg: GuestConfig = guestConfig()): GuestView & { password: Buffer | undefined } {
  const docs = guestDocuments(cfg);
  const view = {
    config: cfg,
    docs,
    password: undefined as Buffer | undefined,
    postPassword(data: Buffer) {
      if (view.password !== undefined) return "conflict" as const;
      view.password = Buffer.from(data);
      return "stored" as const;
    },
    readPassword() {
      return view.password;
    },
  };
  return view;
}

export const silentLogger = () => pino({ level: "silent" });

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

export interface Call {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Source address on loopback, e.g. 127.0.0.2. Default 127.0.0.1. */
  from?: string;
}

export function call(port: number, c: Call): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: c.method ?? "GET",
        path: c.path,
        headers: c.headers,
        localAddress: c.from ?? "127.0.0.1",
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString("utf8") });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (c.body !== undefined) req.write(c.body);
    req.end();
  });
}

/** Sends raw bytes and returns everything the server wrote until it closed or went quiet. */
export function raw(port: number, text: string, from = "127.0.0.1"): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, localAddress: from });
    const chunks: Buffer[] = [];
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString("latin1"));
    };
    const timer = setTimeout(finish, 1500);
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("end", finish);
    socket.on("close", finish);
    socket.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" || e.code === "EPIPE" ? finish() : reject(e)));
    socket.write(text);
  });
}
