/**
 * The config drive as cloud-init itself reads it: built with the real xorriso, then
 * opened with the datasource code of Debian 12's `cloud-init` package (22.4), run by
 * Debian's /usr/bin/python3 — the code a guest runs, minus the guest.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildConfigDrive, configDriveFiles, type ConfigDriveLabel } from "../../cloud-init/config-drive.js";
import { renderGuestDocuments } from "../../cloud-init/documents.js";
import type { GuestDocuments } from "../../cloud-init/types.js";
import { LocalRunner } from "../../drivers/exec/local.js";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import {
  ALICE_KEY,
  BOB_KEY,
  LINUX_HASH,
  USER_DATA,
  WINDOWS_PASSWORD,
  linuxConfig,
  windowsConfig,
} from "../unit/cloud-init/guest-configs.js";

const runner = new LocalRunner({ defaultTimeoutMs: 60_000 });
const PYTHON = "/usr/bin/python3";

/**
 * Reads a config drive directory (kind "configdrive") or NoCloud seed directory (kind
 * "nocloud") through cloud-init's datasource classes, and prints what cloud-init got.
 */
const READER = String.raw`
import base64, json, os, shutil, sys, tempfile
from cloudinit import distros, helpers, settings, util
from cloudinit.config import schema
from cloudinit.net import eni, netplan, network_state, networkd
from cloudinit.sources import DataSourceConfigDrive, DataSourceNoCloud

kind, src = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp()
try:
    paths = helpers.Paths({"cloud_dir": os.path.join(work, "cloud"), "run_dir": os.path.join(work, "run")})
    distro = distros.fetch("debian")("debian", {}, paths)
    sys_cfg = dict(settings.CFG_BUILTIN)
    seed = os.path.join(paths.seed_dir, "config_drive" if kind == "configdrive" else "nocloud")
    os.makedirs(paths.seed_dir, exist_ok=True)
    shutil.copytree(src, seed)
    if kind == "configdrive":
        ds = DataSourceConfigDrive.DataSourceConfigDrive(sys_cfg, distro, paths)
    else:
        # Read the seed directory only, never this host's block devices.
        sys_cfg["datasource"] = {"NoCloud": {"fs_label": None}}
        ds = DataSourceNoCloud.DataSourceNoCloud(sys_cfg, distro, paths)
        ds.seed_dirs = [seed + "/"]
    claimed = ds.get_data()
    netcfg = ds.network_config
    ns = network_state.parse_net_config_data(netcfg)
    vendor = ds.get_vendordata_raw()
    if isinstance(vendor, bytes):
        vendor = vendor.decode()
    vendor_cfg = util.load_yaml(vendor) if vendor else None
    try:
        schema.validate_cloudconfig_schema(vendor_cfg, schema.get_schema(), strict=True)
        schema_error = None
    except Exception as e:
        schema_error = str(e)
    ud = ds.get_userdata_raw()
    print(json.dumps({
        "claimed": claimed,
        "dsname": ds.dsname,
        "instance_id": ds.get_instance_id(),
        "hostname": ds.get_hostname().hostname,
        "public_keys": ds.get_public_ssh_keys(),
        "userdata_b64": base64.b64encode(ud if isinstance(ud, bytes) else ud.encode()).decode(),
        "vendor_text": vendor,
        "vendor_cfg": vendor_cfg,
        "schema_error": schema_error,
        "network_config": netcfg,
        "eni": eni.Renderer()._render_interfaces(ns),
        "netplan": netplan.Renderer()._render_content(ns),
        "networkd": networkd.Renderer()._render_content(ns),
        "metadata": json.loads(json.dumps(ds.metadata, default=str)),
        "ec2_metadata": getattr(ds, "ec2_metadata", None),
    }))
finally:
    shutil.rmtree(work, ignore_errors=True)
`;

/** cloudbase-init's path: the raw OpenStack reader (meta_data.json with admin_pass, user_data). */
const RAW_READER = String.raw`
import base64, json, sys
from cloudinit.sources.helpers import openstack
r = openstack.ConfigDriveReader(sys.argv[1]).read_v2()
print(json.dumps({"metadata": r["metadata"], "userdata_b64": base64.b64encode(r["userdata"]).decode(),
                  "networkdata": r.get("networkdata"), "vendordata": r.get("vendordata")}, default=str))
`;

interface CloudInitView {
  claimed: boolean;
  dsname: string;
  instance_id: string;
  hostname: string;
  public_keys: string[];
  userdata_b64: string;
  vendor_text: string;
  vendor_cfg: Record<string, unknown>;
  schema_error: string | null;
  network_config: Record<string, unknown>;
  eni: string;
  netplan: string;
  /** Interface name → the .network file cloud-init writes for systemd-networkd. */
  networkd: Record<string, string>;
  metadata: Record<string, unknown>;
  ec2_metadata: Record<string, unknown> | null;
}

describe("the config drive, read by cloud-init 22.4's own datasource code", () => {
  let dir: string;
  let n = 0;
  const path = (name: string) => join(dir, name);

  beforeAll(async () => {
    dir = await mkdtemp("/var/tmp/cdtest-config-drive-");
    const probe = await runner.run([PYTHON, "-c", "import cloudinit.version as v; print(v.version_string())"], { allowFailure: true });
    if (probe.exitCode !== 0) {
      throw new Error(`Debian's cloud-init is not importable by ${PYTHON} (apt-get install --no-install-recommends cloud-init): ${probe.stderr}`);
    }
    await writeFile(path("reader.py"), READER);
    await writeFile(path("raw-reader.py"), RAW_READER);
  });
  afterAll(async () => {
    if (!dir) return;
    // Extracted trees are read-only, as on the ISO.
    await runner.run(["chmod", "-R", "u+w", dir], { allowFailure: true });
    await rm(dir, { recursive: true, force: true });
  });

  async function build(docs: GuestDocuments, label: ConfigDriveLabel, name = `drive-${++n}.iso`) {
    const outPath = path(name);
    const built = await buildConfigDrive({
      runner,
      files: configDriveFiles(docs, { nocloud: label === "cidata" }),
      outPath,
      label,
      tmpDir: path("tmp"),
    });
    return { outPath, built };
  }

  async function extract(iso: string): Promise<string> {
    const target = path(`tree-${++n}`);
    await runner.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", target]);
    return target;
  }

  async function readWithCloudInit(kind: "configdrive" | "nocloud", tree: string): Promise<CloudInitView> {
    const result = await runner.run([PYTHON, path("reader.py"), kind, tree]);
    return JSON.parse(result.stdout) as CloudInitView;
  }

  it("builds byte-identical images from the same documents, at different times and from different staging directories", async () => {
    const docs = renderGuestDocuments(linuxConfig());
    const first = await build(docs, "config-2");
    await sleep(1_100);
    const second = await buildConfigDrive({
      runner,
      files: configDriveFiles(renderGuestDocuments(linuxConfig())),
      outPath: path("again.iso"),
      label: "config-2",
      tmpDir: path("other-tmp"),
    });
    expect(second.sha256).toBe(first.built.sha256);
    expect((await readFile(second.path)).equals(await readFile(first.outPath))).toBe(true);

    const changed = await build(renderGuestDocuments(linuxConfig({ hostname: "web-2" })), "config-2");
    expect(changed.built.sha256).not.toBe(first.built.sha256);
  });

  it("writes the image with mode 0600 and leaves no staging or temporary files behind", async () => {
    const { outPath, built } = await build(renderGuestDocuments(windowsConfig()), "config-2", "windows.iso");
    const info = await stat(outPath);
    expect(info.mode & 0o777).toBe(0o600);
    expect(info.size).toBe(built.sizeBytes);
    expect(await readdir(path("tmp"))).toEqual([]);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("labels the image config-2 (cidata for NoCloud), with Joliet and Rock Ridge", async () => {
    const { outPath } = await build(renderGuestDocuments(linuxConfig()), "config-2");
    const iso = (await runner.run(["isoinfo", "-d", "-i", outPath])).stdout;
    expect(iso).toMatch(/^Volume id: config-2$/m);
    expect(iso).toMatch(/^Joliet with UCS level 3 found$/m);
    expect(iso).toMatch(/^Rock Ridge signatures version 1 found$/m);
    expect((await runner.run(["blkid", "-o", "value", "-s", "LABEL", outPath])).stdout.trim()).toBe("config-2");
    expect((await runner.run(["blkid", "-o", "value", "-s", "TYPE", outPath])).stdout.trim()).toBe("iso9660");

    const nocloud = await build(renderGuestDocuments(linuxConfig()), "cidata");
    expect((await runner.run(["blkid", "-o", "value", "-s", "LABEL", nocloud.outPath])).stdout.trim()).toBe("cidata");
  });

  it("gives cloud-init's ConfigDrive datasource the hostname, instance-id, keys, user data and vendor settings", async () => {
    const docs = renderGuestDocuments(linuxConfig());
    const view = await readWithCloudInit("configdrive", await extract((await build(docs, "config-2")).outPath));
    expect(view.claimed).toBe(true);
    expect(view.dsname).toBe("ConfigDrive");
    expect(view.instance_id).toBe("3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b");
    expect(view.hostname).toBe("web-1");
    expect(view.public_keys.sort()).toEqual([ALICE_KEY, BOB_KEY].sort());
    expect(Buffer.from(view.userdata_b64, "base64").equals(USER_DATA)).toBe(true);
    expect(view.metadata).toMatchObject({ "availability_zone": "ap-guangzhou-3", launch_index: 1, meta: { instance_id: "ins-7k2m9xqa" } });
    expect(view.ec2_metadata).toMatchObject({ "instance-id": "3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b", "local-ipv4": "10.20.30.40" });

    // The vendor cloud-config, as cloud-init will apply it, passes its strict schema.
    expect(view.vendor_text.startsWith("#cloud-config\n")).toBe(true);
    expect(view.schema_error).toBeNull();
    expect(view.vendor_cfg).toMatchObject({
      hostname: "web-1",
      disable_root: false,
      ssh_pwauth: true,
      chpasswd: { expire: false, users: [{ name: "root", password: LINUX_HASH, type: "hash" }] },
      ssh_authorized_keys: [ALICE_KEY, BOB_KEY],
      manage_resolv_conf: true,
      resolv_conf: { nameservers: ["10.20.0.2", "10.20.0.3"] },
      ntp: { enabled: true, servers: ["ntp.example.internal"] },
    });
  });

  it("gives cloud-init a static eth0 with its address, default gateway, link-local route and DNS", async () => {
    const view = await readWithCloudInit("configdrive", await extract((await build(renderGuestDocuments(linuxConfig()), "config-2")).outPath));
    expect(view.network_config).toMatchObject({
      version: 1,
      config: [
        {
          type: "physical",
          name: "eth0",
          mac_address: "52:54:00:ab:cd:ef",
          subnets: [{ type: "static", address: "10.20.30.40", netmask: "255.255.255.0" }],
        },
        { type: "nameserver", address: "10.20.0.2" },
        { type: "nameserver", address: "10.20.0.3" },
      ],
    });
    // What images rendering for ifupdown, netplan and systemd-networkd get written.
    expect(view.eni).toContain("auto eth0\niface eth0 inet static\n    address 10.20.30.40/24\n");
    expect(view.eni).toContain("dns-nameservers 10.20.0.2 10.20.0.3");
    expect(view.eni).toContain("route add default gw 10.20.30.1");
    expect(view.eni).toContain("route add -net 169.254.0.0/16 gw 10.20.30.1");
    expect(view.netplan).toMatch(/set-name: eth0/);
    expect(view.netplan).toMatch(/macaddress: 52:54:00:ab:cd:ef/);
    expect(view.netplan).toMatch(/- 10\.20\.30\.40\/24/);
    expect(Object.keys(view.networkd)).toEqual(["eth0"]);
    const unit = view.networkd.eth0!;
    for (const line of ["MACAddress=52:54:00:ab:cd:ef", "Name=eth0", "Address=10.20.30.40/24", "DHCP=no", "Destination=0.0.0.0/0", "Destination=169.254.0.0/16", "Gateway=10.20.30.1"]) {
      expect(unit.split("\n")).toContain(line);
    }
    expect(unit).toMatch(/^DNS=10\.20\.0\.2 10\.20\.0\.3$/m);
  });

  it("carries os.conf for images without cloud-init, exactly as rendered", async () => {
    const docs = renderGuestDocuments(linuxConfig());
    const tree = await extract((await build(docs, "config-2")).outPath);
    expect(await readFile(join(tree, "qcloud_action", "os.conf"), "utf8")).toBe(docs.tencentOsConf);
    expect(await readdir(join(tree, "openstack"))).toEqual(["2018-08-27", "latest"]);
  });

  it("gives cloud-init's NoCloud datasource the same identity, user data, vendor settings and eth0", async () => {
    const docs = renderGuestDocuments(linuxConfig());
    const view = await readWithCloudInit("nocloud", await extract((await build(docs, "cidata")).outPath));
    expect(view.claimed).toBe(true);
    expect(view.dsname).toBe("NoCloud");
    expect(view.instance_id).toBe("3f2b8c1e-5d4a-4e6f-9a0b-1c2d3e4f5a6b");
    expect(view.hostname).toBe("web-1");
    expect(Buffer.from(view.userdata_b64, "base64").equals(USER_DATA)).toBe(true);
    expect(view.schema_error).toBeNull();
    expect(view.vendor_cfg).toMatchObject({ chpasswd: { users: [{ name: "root", password: LINUX_HASH, type: "hash" }] } });
    expect(view.eni).toContain("auto eth0\niface eth0 inet static\n    address 10.20.30.40/24\n");
    expect(view.eni).toContain("route add default gw 10.20.30.1");
    expect(view.eni).toContain("dns-nameservers 10.20.0.2 10.20.0.3");
    // cloud-init 22.4 renders a v2 nameservers block as this bogus line; v1 avoids it.
    expect(view.eni).not.toMatch(/^\s*dns \{/m);
  });

  it("gives NoCloud the vendor settings as user data when the instance has none", async () => {
    const view = await readWithCloudInit("nocloud", await extract((await build(renderGuestDocuments(linuxConfig({ userData: undefined })), "cidata")).outPath));
    expect(Buffer.from(view.userdata_b64, "base64").toString()).toBe(view.vendor_text);
  });

  it("gives a Windows guest's reader admin_pass, admin_username and the PowerShell user data", async () => {
    const docs = renderGuestDocuments(windowsConfig());
    const tree = await extract((await build(docs, "config-2")).outPath);
    const raw = JSON.parse((await runner.run([PYTHON, path("raw-reader.py"), tree])).stdout) as {
      metadata: Record<string, unknown>;
      userdata_b64: string;
      networkdata: { networks: { routes: unknown[]; services: unknown[] }[] };
    };
    expect(raw.metadata).toMatchObject({ uuid: "9a8b7c6d-1111-4222-8333-444455556666", admin_pass: WINDOWS_PASSWORD, meta: { admin_username: "Administrator" } });
    expect(Buffer.from(raw.userdata_b64, "base64").toString()).toMatch(/^<powershell>/);
    // cloudbase-init takes the gateway from the 0.0.0.0/0 route and DNS from the network's services.
    expect(raw.networkdata.networks[0]!.routes).toContainEqual({ network: "0.0.0.0", netmask: "0.0.0.0", gateway: "10.20.30.1" });
    expect(raw.networkdata.networks[0]!.services).toContainEqual({ type: "dns", address: "10.20.0.2" });
  });

  it("leaves the existing image untouched and cleans up when xorriso fails", async () => {
    const { outPath } = await build(renderGuestDocuments(linuxConfig()), "config-2", "kept.iso");
    const before = await readFile(outPath);
    // xorriso itself fails: an option it does not know is added to its command line.
    const failing: CommandRunner = {
      description: "failing",
      run: (argv, options) => runner.run([...argv.slice(0, -1), "-no-such-option", ...argv.slice(-1)], options),
      stream: (argv, options) => runner.stream(argv, options),
      close: () => runner.close(),
    };
    await expect(
      buildConfigDrive({
        runner: failing,
        files: configDriveFiles(renderGuestDocuments(linuxConfig({ hostname: "web-9" }))),
        outPath,
        label: "config-2",
        tmpDir: path("tmp"),
      }),
    ).rejects.toThrow(/xorriso/);
    expect((await readFile(outPath)).equals(before)).toBe(true);
    expect(await readdir(path("tmp"))).toEqual([]);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});
