import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configDriveFiles, OPENSTACK_VERSION } from "../../../cloud-init/config-drive.js";
import { netmaskOf, renderGuestDocuments } from "../../../cloud-init/documents.js";
import type { GuestDocuments } from "../../../cloud-init/types.js";
import {
  ALICE_KEY,
  BOB_KEY,
  LINUX_HASH,
  LINUX_PLAIN_PASSWORD,
  USER_DATA,
  WINDOWS_PASSWORD,
  linuxConfig,
  windowsConfig,
} from "./guest-configs.js";

/** Every byte a guest can read, per channel, as text. */
function everyDocument(docs: GuestDocuments): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [path, content] of configDriveFiles(docs)) out[`config-2:${path}`] = content.toString("utf8");
  for (const [path, content] of configDriveFiles(docs, { nocloud: true })) out[`cidata:${path}`] = content.toString("utf8");
  out["ec2.metaData"] = JSON.stringify(docs.ec2.metaData);
  return out;
}

function cloudConfigOf(docs: GuestDocuments): string {
  const text = docs.openstack.vendorData["cloud-init"];
  if (typeof text !== "string") throw new Error("vendor data has no cloud-init text");
  return text;
}

describe("renderGuestDocuments", () => {
  it("puts the uuid, name, hostname, zone, launch index and keys into meta_data.json as Nova does", () => {
    const md = renderGuestDocuments(linuxConfig()).openstack.metaData;
    expect(md).toMatchObject({
      uuid: "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b",
      name: "web server 1",
      hostname: "web-1",
      availability_zone: "ap-guangzhou-3",
      launch_index: 1,
      public_keys: { alice: ALICE_KEY, bob: BOB_KEY },
      keys: [
        { name: "alice", type: "ssh", data: ALICE_KEY },
        { name: "bob", type: "ssh", data: BOB_KEY },
      ],
      meta: { instance_id: "ins-7k2m9xqa", generation: "3" },
    });
    expect(md).not.toHaveProperty("project_id");
    // Nova's meta values are strings; cloud-init treats meta.dsmode specially.
    for (const value of Object.values(md.meta as Record<string, unknown>)) expect(typeof value).toBe("string");
    expect(md.meta).not.toHaveProperty("dsmode");
  });

  it("renders identical documents and files for the same config, and different ones when the generation changes", () => {
    const a = configDriveFiles(renderGuestDocuments(linuxConfig()));
    const b = configDriveFiles(renderGuestDocuments(linuxConfig()));
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [path, content] of a) expect(content.equals(b.get(path)!), path).toBe(true);

    const c = configDriveFiles(renderGuestDocuments(linuxConfig({ generation: 4 })));
    expect(c.get("openstack/latest/meta_data.json")!.equals(a.get("openstack/latest/meta_data.json")!)).toBe(false);
  });

  it("never writes a Linux password in plain text, even when a Windows password is set by mistake", () => {
    const docs = renderGuestDocuments(linuxConfig({ windowsPassword: LINUX_PLAIN_PASSWORD }));
    const all = everyDocument(docs);
    for (const [where, text] of Object.entries(all)) {
      expect(text, where).not.toContain(LINUX_PLAIN_PASSWORD);
      expect(text, where).not.toContain("admin_pass");
    }
    // The hash is there for the readers that set the password.
    expect(cloudConfigOf(docs)).toContain(LINUX_HASH);
    expect(docs.tencentOsConf).toContain(LINUX_HASH);
  });

  it("refuses a Linux password that is not a crypt hash", () => {
    expect(() => renderGuestDocuments(linuxConfig({ passwordHash: LINUX_PLAIN_PASSWORD }))).toThrow(/crypt/);
  });

  it("gives a Windows guest its password as admin_pass in meta_data.json and nowhere else", () => {
    const docs = renderGuestDocuments(windowsConfig());
    expect(docs.openstack.metaData.admin_pass).toBe(WINDOWS_PASSWORD);
    expect(docs.openstack.metaData.meta).toMatchObject({ admin_username: "Administrator" });
    const holders = Object.entries(everyDocument(docs))
      .filter(([, text]) => text.includes(JSON.stringify(WINDOWS_PASSWORD).slice(1, -1)) || text.includes(WINDOWS_PASSWORD))
      .map(([where]) => where);
    expect(holders).toEqual([`config-2:openstack/latest/meta_data.json`, `config-2:openstack/${OPENSTACK_VERSION}/meta_data.json`]);
    expect(docs.tencentOsConf).not.toMatch(/^password=/m);
  });

  it("describes eth0 in network_data.json with its MAC, static address, routes and DNS", () => {
    const nd = renderGuestDocuments(linuxConfig()).openstack.networkData;
    expect(nd).toEqual({
      links: [{ id: "eth0", name: "eth0", type: "phy", ethernet_mac_address: "52:54:00:ab:cd:ef", mtu: null }],
      networks: [
        {
          id: "network0",
          type: "ipv4",
          link: "eth0",
          ip_address: "10.20.30.40",
          netmask: "255.255.255.0",
          routes: [
            { network: "0.0.0.0", netmask: "0.0.0.0", gateway: "10.20.30.1" },
            { network: "169.254.0.0", netmask: "255.255.0.0", gateway: "10.20.30.1" },
          ],
          network_id: "subnet-ja82n9op",
          services: [
            { type: "dns", address: "10.20.0.2" },
            { type: "dns", address: "10.20.0.3" },
          ],
          dns_nameservers: ["10.20.0.2", "10.20.0.3"],
        },
      ],
      services: [
        { type: "dns", address: "10.20.0.2" },
        { type: "dns", address: "10.20.0.3" },
      ],
    });
  });

  it("names a second NIC eth1 and gives it no default route", () => {
    const cfg = linuxConfig();
    const nd = renderGuestDocuments({
      ...cfg,
      nics: [...cfg.nics, { mac: "52:54:00:00:00:02", ipv4: "192.168.7.9", prefixLength: 20, gateway: "192.168.0.1", vpcId: "v", subnetId: "s2", mtu: 1450 }],
    }).openstack.networkData as { links: { id: string; mtu: number | null }[]; networks: { link: string; netmask: string; routes: unknown[] }[] };
    expect(nd.links.map((l) => [l.id, l.mtu])).toEqual([
      ["eth0", null],
      ["eth1", 1450],
    ]);
    expect(nd.networks[1]).toMatchObject({ link: "eth1", netmask: "255.255.240.0", routes: [] });
  });

  it("hands cloud-init its settings as a #cloud-config under vendor data's cloud-init key", () => {
    const docs = renderGuestDocuments(linuxConfig());
    expect(Object.keys(docs.openstack.vendorData)).toEqual(["cloud-init"]);
    const text = cloudConfigOf(docs);
    expect(text.startsWith("#cloud-config\n")).toBe(true);
    expect(text).toContain('hostname: "web-1"\n');
    expect(text).toContain("disable_root: false\n");
    expect(text).toContain("ssh_pwauth: true\n");
    // cloud-init 22.4 matches the type case-sensitively: "hash", not "HASH".
    expect(text).toContain(`chpasswd:\n  expire: false\n  users:\n    - name: "root"\n      password: "${LINUX_HASH}"\n      type: "hash"\n`);
    expect(text).toContain(`ssh_authorized_keys:\n  - "${ALICE_KEY}"\n  - "${BOB_KEY}"\n`);
    expect(text).toContain('resolv_conf:\n  nameservers:\n    - "10.20.0.2"\n    - "10.20.0.3"\n');
    expect(text).toContain('ntp:\n  enabled: true\n  servers:\n    - "ntp.example.internal"\n');
    expect(text).toContain('content: "PermitRootLogin yes\\n"');
  });

  it("turns password login off in sshd once keys are bound", () => {
    const text = cloudConfigOf(renderGuestDocuments(linuxConfig({ passwordLogin: false, passwordHash: undefined })));
    expect(text).toContain("ssh_pwauth: false\n");
    expect(text).toContain('content: "PermitRootLogin prohibit-password\\n"');
    expect(text).not.toContain("chpasswd");
  });

  it("sets no login at all for KeepImageLogin: the image's own password, keys and sshd settings stay", () => {
    const docs = renderGuestDocuments(linuxConfig({ keepImageLogin: true, passwordHash: undefined, publicKeys: [] }));
    const text = cloudConfigOf(docs);
    expect(text).toContain('hostname: "web-1"\n');
    for (const key of ["disable_root", "ssh_pwauth", "chpasswd", "ssh_authorized_keys", "PermitRootLogin", "60-cdh-agent-root-login"]) expect(text).not.toContain(key);
    expect(docs.tencentOsConf).not.toContain("password=");
    // Without the flag, the same config does manage the login.
    expect(cloudConfigOf(renderGuestDocuments(linuxConfig({ passwordHash: undefined, publicKeys: [] })))).toContain("ssh_pwauth: true\n");
  });

  it("uses the UUID as the EC2 instance-id and lists keys the way Nova's EC2 tree does", () => {
    const ec2 = renderGuestDocuments(linuxConfig()).ec2;
    expect(ec2.metaData).toEqual({
      "ami-id": "img-pmqg1cw7",
      "ami-launch-index": 1,
      hostname: "web-1",
      "instance-id": "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b",
      "instance-type": "S2.MEDIUM4",
      "local-hostname": "web-1",
      "local-ipv4": "10.20.30.40",
      mac: "52:54:00:ab:cd:ef",
      placement: { "availability-zone": "ap-guangzhou-3" },
      "public-keys": {
        "0": { _name: "0=alice", "openssh-key": ALICE_KEY },
        "1": { _name: "1=bob", "openssh-key": BOB_KEY },
      },
    });
    expect(ec2.userData?.equals(USER_DATA)).toBe(true);
  });

  it("writes an os.conf that sh can source back into the same values", () => {
    const conf = renderGuestDocuments(linuxConfig()).tencentOsConf;
    const dir = mkdtempSync(join(tmpdir(), "osconf-"));
    try {
      writeFileSync(join(dir, "os.conf"), conf);
      const script = `. ./os.conf; printf '%s\\n' "$hostname" "$password" "$eth0_ip_addr" "$eth0_mac_addr" "$eth0_netmask" "$eth0_gateway" "$dns_nameserver"`;
      const out = execFileSync("/bin/sh", ["-c", script], { cwd: dir, encoding: "utf8" });
      expect(out.split("\n").slice(0, 7)).toEqual([
        "web-1",
        LINUX_HASH,
        "10.20.30.40",
        "52:54:00:AB:CD:EF",
        "255.255.255.0",
        "10.20.30.1",
        "10.20.0.2 10.20.0.3",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("gives NoCloud the instance-id and hostname, the user data, the vendor settings and a v1 network config", () => {
    const docs = renderGuestDocuments(linuxConfig());
    expect(docs.nocloud.metaData).toBe('instance-id: "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b"\nlocal-hostname: "web-1"\n');
    expect(docs.nocloud.userData.equals(USER_DATA)).toBe(true);
    expect(docs.nocloud.vendorData).toBe(cloudConfigOf(docs));
    expect(docs.nocloud.networkConfig).toContain('name: "eth0"\n    mac_address: "52:54:00:ab:cd:ef"\n');
    expect(docs.nocloud.networkConfig).toContain('address: "10.20.30.40"\n        netmask: "255.255.255.0"\n');
  });

  it("puts the vendor settings into NoCloud user-data when there is no user data", () => {
    const docs = renderGuestDocuments(linuxConfig({ userData: undefined }));
    expect(docs.nocloud.userData.toString()).toBe(cloudConfigOf(docs));
    expect(docs.openstack.userData).toBeUndefined();
    expect(configDriveFiles(docs).has("openstack/latest/user_data")).toBe(false);
  });
});

describe("configDriveFiles", () => {
  it("lays out openstack/latest, the dated version, ec2/latest and qcloud_action", () => {
    expect([...configDriveFiles(renderGuestDocuments(linuxConfig())).keys()].sort()).toEqual([
      "ec2/latest/meta-data.json",
      "ec2/latest/user-data",
      `openstack/${OPENSTACK_VERSION}/meta_data.json`,
      `openstack/${OPENSTACK_VERSION}/network_data.json`,
      `openstack/${OPENSTACK_VERSION}/user_data`,
      `openstack/${OPENSTACK_VERSION}/vendor_data.json`,
      "openstack/latest/meta_data.json",
      "openstack/latest/network_data.json",
      "openstack/latest/user_data",
      "openstack/latest/vendor_data.json",
      "qcloud_action/os.conf",
    ]);
  });

  it("lays out the NoCloud seed files at the root", () => {
    expect([...configDriveFiles(renderGuestDocuments(linuxConfig()), { nocloud: true }).keys()].sort()).toEqual([
      "meta-data",
      "network-config",
      "user-data",
      "vendor-data",
    ]);
  });

  it("keeps user data bytes as given, binary included", () => {
    const binary = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x80]);
    const files = configDriveFiles(renderGuestDocuments(linuxConfig({ userData: binary })));
    expect(files.get("openstack/latest/user_data")!.equals(binary)).toBe(true);
    expect(files.get("ec2/latest/user-data")!.equals(binary)).toBe(true);
  });
});

describe("netmaskOf", () => {
  it("turns prefix lengths into dotted netmasks", () => {
    expect([0, 1, 8, 20, 24, 31, 32].map(netmaskOf)).toEqual([
      "0.0.0.0",
      "128.0.0.0",
      "255.0.0.0",
      "255.255.240.0",
      "255.255.255.0",
      "255.255.255.254",
      "255.255.255.255",
    ]);
    expect(() => netmaskOf(33)).toThrow();
  });
});
