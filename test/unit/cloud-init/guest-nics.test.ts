/**
 * Every NIC and every secondary address of an instance in every guest document: network_data.json
 * (a network per address, as cloud-init 22.4's convert_net_json reads it), NoCloud's network-config,
 * the metadata trees' per-MAC folders (Tencent and EC2), and the guest-side follower the vendor data
 * installs (cloud-init/guest-netsync.ts).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderGuestDocuments } from "../../../cloud-init/documents.js";
import { netsyncCloudConfig, NETWORK_UPDATE_EVENTS } from "../../../cloud-init/guest-netsync.js";
import type { GuestConfig, GuestNic } from "../../../cloud-init/types.js";
import { buildSite } from "../../../agent/metadata/tree.js";
import { guestConfigOf } from "../../../agent/instances/guest.js";
import type { InstanceRecord } from "../../../agent/model.js";
import type { Subnet } from "../../../agent/network/subnets.js";
import { linuxConfig } from "./guest-configs.js";

// guest-configs' eth0 (52:54:00:ab:cd:ef, 10.20.30.40/24 on subnet-ja82n9op), with two secondary addresses.
const ETH0: GuestNic = {
  ...linuxConfig().nics[0]!,
  secondaryIpv4s: ["10.20.30.41", "10.20.30.42"],
  eniId: "eni-prim0001",
  deviceNumber: 0,
};
const ETH2: GuestNic = {
  mac: "52:54:00:00:00:02",
  ipv4: "10.20.31.7",
  prefixLength: 24,
  gateway: "10.20.31.1",
  vpcId: "vpc-ja82n9op",
  subnetId: "subnet-second01",
  secondaryIpv4s: ["10.20.31.8"],
  eniId: "eni-seco0002",
  // Slot 1 was detached: the NIC keeps its name eth2.
  deviceNumber: 2,
  securityGroups: [{ id: "sg-eni00001", name: "eni-only" }],
};
const TWO: GuestConfig = linuxConfig({ nics: [ETH0, ETH2], securityGroups: [{ id: "sg-inst0001", name: "web" }] });

const text = (site: ReturnType<typeof buildSite>, path: string) => site.get(path)?.body.toString("utf8");

describe("network_data.json and NoCloud with every NIC and address", () => {
  it("has a link per NIC named by its device number and a network per address, the primary first, routes and DNS only on eth0's primary", () => {
    const nd = renderGuestDocuments(TWO).openstack.networkData as { links: Array<Record<string, unknown>>; networks: Array<Record<string, unknown>> };
    expect(nd.links.map((l) => [l.id, l.name, l.ethernet_mac_address])).toEqual([
      ["eth0", "eth0", ETH0.mac],
      ["eth2", "eth2", ETH2.mac],
    ]);
    expect(nd.networks.map((n) => [n.id, n.link, n.ip_address, n.netmask, n.network_id])).toEqual([
      ["network0", "eth0", "10.20.30.40", "255.255.255.0", "subnet-ja82n9op"],
      ["network1", "eth0", "10.20.30.41", "255.255.255.0", "subnet-ja82n9op"],
      ["network2", "eth0", "10.20.30.42", "255.255.255.0", "subnet-ja82n9op"],
      ["network3", "eth2", "10.20.31.7", "255.255.255.0", "subnet-second01"],
      ["network4", "eth2", "10.20.31.8", "255.255.255.0", "subnet-second01"],
    ]);
    expect(nd.networks.every((n) => n.type === "ipv4")).toBe(true);
    expect((nd.networks[0]!.routes as unknown[]).length).toBe(2);
    expect(nd.networks.slice(1).map((n) => n.routes)).toEqual([[], [], [], []]);
    expect(nd.networks.filter((n) => "dns_nameservers" in n).map((n) => n.id)).toEqual(["network0"]);
  });

  it("gives NoCloud a static subnet per address on each NIC", () => {
    const nc = renderGuestDocuments(TWO).nocloud.networkConfig;
    expect(nc).toContain('name: "eth2"');
    for (const ip of ["10.20.30.40", "10.20.30.41", "10.20.30.42", "10.20.31.7", "10.20.31.8"]) expect(nc).toContain(`address: "${ip}"`);
    expect(nc.match(/type: "static"/g)?.length).toBe(5);
    expect(nc.match(/gateway:/g)?.length).toBe(2); // eth0's primary: the default route and the metadata route
  });

  it("refuses two NICs with one device number", () => {
    expect(() => renderGuestDocuments(linuxConfig({ nics: [ETH0, { ...ETH2, deviceNumber: 0 }] }))).toThrow(/one device number/);
  });

  it("turns cloud-init's boot and hotplug network events on and installs the follower, for Linux only", () => {
    const cc = renderGuestDocuments(TWO).openstack.vendorData["cloud-init"] as string;
    expect(cc).toContain("updates:\n  network:\n    when:\n");
    for (const e of NETWORK_UPDATE_EVENTS) expect(cc).toContain(`- "${e}"`);
    for (const f of netsyncCloudConfig().files as Array<{ path: string }>) expect(cc).toContain(`path: "${f.path}"`);
    expect(cc).toContain(`path: "/etc/ssh/sshd_config.d/60-cdh-agent-root-login.conf"`);
    expect(cc).toContain('"enable"');
    const win = renderGuestDocuments(linuxConfig({ osType: "windows", passwordHash: undefined, windowsPassword: "x" })).openstack.vendorData["cloud-init"] as string;
    expect(win).not.toContain("cdh-netsync");
  });

  it("ships a follower whose scripts parse (python3, sh)", () => {
    const dir = mkdtempSync(join(tmpdir(), "netsync-"));
    try {
      for (const f of netsyncCloudConfig().files as Array<{ path: string; content: string }>) {
        const out = join(dir, f.path.split("/").pop()!);
        writeFileSync(out, f.content);
        if (f.path.endsWith("/cdh-netsync")) execFileSync("python3", ["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())", out]);
        if (f.path.endsWith("-watch")) execFileSync("sh", ["-n", out]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the metadata trees' per-MAC folders", () => {
  const site = buildSite(TWO, renderGuestDocuments(TWO));

  it("lists every NIC under network/interfaces/macs, in both trees", () => {
    expect(text(site, "/latest/meta-data/network/interfaces/macs/")).toBe(`${ETH2.mac}/\n${ETH0.mac}/`);
    expect(text(site, "/2009-04-04/meta-data/network/interfaces/macs/")).toBe(`${ETH2.mac}/\n${ETH0.mac}/`);
    expect(text(site, "/1.0/meta-data/network/interfaces/macs/")).toBe(`${ETH2.mac.toUpperCase()}/\n${ETH0.mac.toUpperCase()}/`);
  });

  it("has the Tencent local-ipv4s folder with a folder per address, the primary listed as primary-local-ipv4", () => {
    const base = `/latest/meta-data/network/interfaces/macs/${ETH0.mac}`;
    expect(text(site, `${base}/local-ipv4s/`)).toBe("10.20.30.40/\n10.20.30.41/\n10.20.30.42/");
    expect(text(site, `${base}/local-ipv4s/10.20.30.42/local-ipv4`)).toBe("10.20.30.42");
    expect(text(site, `${base}/local-ipv4s/10.20.30.42/gateway`)).toBe("10.20.30.1");
    expect(text(site, `${base}/local-ipv4s/10.20.30.42/subnet-mask`)).toBe("255.255.255.0");
    expect(text(site, `${base}/primary-local-ipv4`)).toBe("10.20.30.40");
    // The top-level local-ipv4 is eth0's primary address.
    expect(text(site, "/latest/meta-data/local-ipv4")).toBe("10.20.30.40");
  });

  it("has EC2's leaves: local-ipv4s one a line, device-number, interface-id, per-NIC groups, subnet and VPC", () => {
    const base = `/2009-04-04/meta-data/network/interfaces/macs/${ETH2.mac}`;
    expect(text(site, `${base}/local-ipv4s`)).toBe("10.20.31.7\n10.20.31.8");
    expect(text(site, `${base}/device-number`)).toBe("2");
    expect(text(site, `${base}/interface-id`)).toBe("eni-seco0002");
    expect(text(site, `${base}/security-group-ids`)).toBe("sg-eni00001");
    expect(text(site, `${base}/subnet-id`)).toBe("subnet-second01");
    expect(text(site, `${base}/vpc-id`)).toBe("vpc-ja82n9op");
    expect(text(site, `${base}/subnet-ipv4-cidr-block`)).toBe("10.20.31.0/24");
    // eth0 follows the instance's groups.
    expect(text(site, `/2009-04-04/meta-data/network/interfaces/macs/${ETH0.mac}/security-group-ids`)).toBe("sg-inst0001");
    expect(text(site, `/2009-04-04/meta-data/network/interfaces/macs/${ETH0.mac}/interface-id`)).toBe("eni-prim0001");
  });

  it("serves nothing of a NIC the config no longer has", () => {
    const one = linuxConfig({ nics: [ETH0] });
    const after = buildSite(one, renderGuestDocuments(one));
    expect(text(after, "/latest/meta-data/network/interfaces/macs/")).toBe(`${ETH0.mac}/`);
    expect([...after.keys()].some((k) => k.toLowerCase().includes(ETH2.mac))).toBe(false);
  });
});

describe("guestConfigOf", () => {
  const subnets: Subnet[] = [
    { subnetId: "subnet-a", vpcId: "vpc-a", network: "net-a", bridge: "br-a", address: "10.1.0.0", prefixLength: 24, gateway: "10.1.0.1", dns: ["10.1.0.1"] },
    { subnetId: "subnet-b", vpcId: "vpc-a", network: "net-b", bridge: "br-b", address: "10.2.0.0", prefixLength: 24, gateway: "10.2.0.1", dns: [] },
  ];
  const record = {
    version: 1,
    instanceId: "ins-abcd1234",
    uuid: "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b",
    instanceName: "a",
    instanceType: "CDH_1C1G",
    cpu: 1,
    memoryGiB: 1,
    imageId: "img-abcd1234",
    systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 1, path: "/x" },
    createdTime: "2026-12-07T00:00:00Z",
    launchIndex: 0,
    nics: [
      { mac: "52:54:00:00:00:10", network: "net-a", ipv4: "10.1.0.5", subnetId: "subnet-a", eniId: "eni-aaaa0001", secondaryIpv4s: ["10.1.0.6"] },
      { mac: "52:54:00:00:00:11", network: "net-b", ipv4: "10.2.0.9", subnetId: "subnet-b", eniId: "eni-bbbb0002", slot: 3, securityGroupIds: ["sg-own00001"] },
    ],
  } as unknown as InstanceRecord;

  it("maps every NIC of the record with its slot, ENI, secondary addresses and own groups", () => {
    const cfg = guestConfigOf({
      record,
      host: { subnets, hostId: "host-abcd1234", zone: "z", region: "r", ntpServers: [] },
      keys: [],
      securityGroups: [{ id: "sg-inst0001", name: "web" }],
      nicSecurityGroups: (nic) => (nic.securityGroupIds ?? []).map((id) => ({ id, name: `n-${id}` })),
    });
    expect(cfg.nics).toEqual([
      { mac: "52:54:00:00:00:10", ipv4: "10.1.0.5", prefixLength: 24, gateway: "10.1.0.1", vpcId: "vpc-a", subnetId: "subnet-a", deviceNumber: 0, secondaryIpv4s: ["10.1.0.6"], eniId: "eni-aaaa0001" },
      {
        mac: "52:54:00:00:00:11",
        ipv4: "10.2.0.9",
        prefixLength: 24,
        gateway: "10.2.0.1",
        vpcId: "vpc-a",
        subnetId: "subnet-b",
        deviceNumber: 3,
        eniId: "eni-bbbb0002",
        securityGroups: [{ id: "sg-own00001", name: "n-sg-own00001" }],
      },
    ]);
  });
});
