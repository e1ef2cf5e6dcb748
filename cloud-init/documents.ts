/**
 * Renders every document a guest reads about itself from one GuestConfig.
 *
 * Pure and deterministic: the same GuestConfig gives byte-identical documents (key
 * order is fixed here; nothing reads the clock, the environment or randomness), so the
 * config drive and every metadata tree can be rebuilt at any time and never disagree.
 *
 * Who reads what (checked against cloud-init 22.4, Debian 12's `cloud-init` package):
 * - `meta_data.json`: cloud-init's ConfigDrive datasource takes `uuid` as instance-id,
 *   `hostname` as local-hostname and `public_keys`; cloudbase-init's ConfigDriveService
 *   also takes `admin_pass` (Windows only) and `meta.admin_username`.
 * - `vendor_data.json`: cloud-init keeps only the value of its "cloud-init" key
 *   (`sources.convert_vendordata`), a `#cloud-config` text: hostname, DNS
 *   (`resolv_conf`), NTP, the password hash (`chpasswd`), SSH keys, `ssh_pwauth`.
 * - `network_data.json`: `openstack.convert_net_json`; a link's `name` is honoured, so
 *   the NIC with that MAC is named `eth0` whatever the kernel called it.
 * - the EC2 document: `ec2/latest/meta-data.json` on the drive and the EC2 tree.
 * - `qcloud_action/os.conf`: the Tencent file for images without cloud-init.
 * - NoCloud (`cidata`): meta-data, user-data, vendor-data, network-config (v1).
 *
 * Secrets: a Linux guest gets only the SHA-512 crypt hash of its password, never the
 * plain text; the Windows plain password appears in exactly one place, `admin_pass`
 * of the OpenStack meta_data.json (cloudbase-init needs it in clear).
 */
import type { GuestConfig, GuestDocuments, GuestNic } from "./types.js";
import { netsyncCloudConfig } from "./guest-netsync.js";
import { renderYaml, type YamlValue } from "./yaml.js";

/** Where the metadata service lives (169.254.0.23, 169.254.169.254): routed via eth0's gateway. */
export const LINK_LOCAL_NETWORK = { network: "169.254.0.0", netmask: "255.255.0.0", prefixLength: 16 } as const;

/** A crypt(3) hash as chpasswd -e and cloud-init's chpasswd accept it ($1$, $5$, $6$, $2a$, $2y$, $y$). */
const CRYPT_HASH = /^\$(1|5|6|2a|2b|2y|y)\$[^\s:]+$/;

export function renderGuestDocuments(cfg: GuestConfig): GuestDocuments {
  checkConfig(cfg);
  const cloudConfig = renderCloudConfig(cfg);
  return {
    openstack: {
      metaData: openstackMetaData(cfg),
      vendorData: { "cloud-init": cloudConfig },
      networkData: openstackNetworkData(cfg),
      ...(cfg.userData ? { userData: Buffer.from(cfg.userData) } : {}),
    },
    ec2: {
      metaData: ec2MetaData(cfg),
      ...(cfg.userData ? { userData: Buffer.from(cfg.userData) } : {}),
    },
    tencentOsConf: tencentOsConf(cfg),
    nocloud: {
      metaData: renderYaml({ "instance-id": cfg.uuid, "local-hostname": cfg.hostname }),
      // Without user data, user-data carries the vendor settings too, for NoCloud
      // readers that ignore vendor-data.
      userData: cfg.userData ? Buffer.from(cfg.userData) : Buffer.from(cloudConfig),
      networkConfig: nocloudNetworkConfig(cfg),
      vendorData: cloudConfig,
    },
  };
}

/** A guest-facing document must never be built from a config that could leak or lock out. */
function checkConfig(cfg: GuestConfig): void {
  if (cfg.osType === "linux" && cfg.passwordHash !== undefined && !CRYPT_HASH.test(cfg.passwordHash)) {
    // A plain password here would be written into vendor data and os.conf.
    throw new Error("GuestConfig.passwordHash is not a crypt(3) hash");
  }
  if (!/^[A-Za-z0-9._-]+$/.test(cfg.loginUser)) throw new Error(`GuestConfig.loginUser ${JSON.stringify(cfg.loginUser)} is not a user name`);
  for (const nic of cfg.nics) {
    if (!(Number.isInteger(nic.prefixLength) && nic.prefixLength >= 0 && nic.prefixLength <= 32)) {
      throw new Error(`GuestConfig: NIC ${nic.mac} has prefix length ${nic.prefixLength}`);
    }
    parseIpv4(nic.ipv4);
    parseIpv4(nic.gateway);
    for (const address of nic.secondaryIpv4s ?? []) parseIpv4(address);
  }
  const names = cfg.nics.map((nic, i) => linkName(nic, i));
  if (new Set(names).size !== names.length) throw new Error(`GuestConfig: two NICs with one device number (${names.join(", ")})`);
}

// ---------------------------------------------------------------------------------------
// OpenStack

function openstackMetaData(cfg: GuestConfig): Record<string, unknown> {
  const windows = cfg.osType === "windows";
  // `meta` is the user metadata of a Nova server: string values only. "dsmode" is
  // reserved by cloud-init and never set here.
  const meta: Record<string, string> = {
    instance_id: cfg.instanceId,
    generation: String(cfg.generation),
    region: cfg.region,
    instance_type: cfg.instanceType,
    image_id: cfg.imageId,
    created_time: cfg.createdTime,
    ...(windows ? { admin_username: cfg.loginUser } : {}),
  };
  return {
    uuid: cfg.uuid,
    name: cfg.instanceName,
    hostname: cfg.hostname,
    availability_zone: cfg.availabilityZone,
    launch_index: cfg.launchIndex,
    public_keys: Object.fromEntries(cfg.publicKeys.map((k) => [k.keyName, k.publicKey])),
    keys: cfg.publicKeys.map((k) => ({ name: k.keyName, type: "ssh", data: k.publicKey })),
    meta,
    ...(windows && cfg.windowsPassword !== undefined ? { admin_pass: cfg.windowsPassword } : {}),
  };
}

/**
 * Nova's network_data.json (links, networks, services). A link per NIC, named `eth<device
 * number>`; a network per address, as Nova writes one per fixed IP: the NIC's primary address
 * first, then its secondary ones, all `ipv4` on the same link (cloud-init 22.4's
 * convert_net_json makes each a static subnet of the link's interface). Only the primary NIC's
 * primary network carries the routes (default and metadata) and the DNS servers.
 */
function openstackNetworkData(cfg: GuestConfig): Record<string, unknown> {
  const links = cfg.nics.map((nic, i) => ({
    id: linkName(nic, i),
    // Not in Nova's schema but honoured by cloud-init: the guest interface's name.
    name: linkName(nic, i),
    type: "phy",
    ethernet_mac_address: nic.mac,
    mtu: nic.mtu ?? null,
  }));
  const networks: Array<Record<string, unknown>> = [];
  cfg.nics.forEach((nic, i) => {
    const primaryNic = i === 0;
    addressesOf(nic).forEach((address, k) => {
      const primary = primaryNic && k === 0;
      networks.push({
        id: `network${networks.length}`,
        type: "ipv4",
        link: linkName(nic, i),
        ip_address: address,
        netmask: netmaskOf(nic.prefixLength),
        routes: primary
          ? [
              { network: "0.0.0.0", netmask: "0.0.0.0", gateway: nic.gateway },
              { network: LINK_LOCAL_NETWORK.network, netmask: LINK_LOCAL_NETWORK.netmask, gateway: nic.gateway },
            ]
          : [],
        network_id: nic.subnetId,
        // Nova's per-network DNS (cloudbase-init), and cloud-init's subnet key for the
        // same servers (convert_net_json copies `dns_nameservers` into the subnet).
        services: primary ? cfg.nameservers.map((address) => ({ type: "dns", address })) : [],
        ...(primary && cfg.nameservers.length > 0 ? { dns_nameservers: [...cfg.nameservers] } : {}),
      });
    });
  });
  return {
    links,
    networks,
    services: cfg.nameservers.map((address) => ({ type: "dns", address })),
  };
}

// ---------------------------------------------------------------------------------------
// cloud-config (vendor data)

/**
 * The `#cloud-config` that carries the platform's settings (the seed's vendor_data.json
 * table): hostname, DNS, NTP, the login user's password hash, its SSH keys, password
 * login on or off.
 *
 * chpasswd: the `users` list with `type: hash` (lowercase: cloud-init 22.4 compares the
 * type case-sensitively and silently skips anything else). cloud-init before 22.3 knows
 * only the deprecated `list` form and ignores `users`; images that old get their password
 * from os.conf instead.
 */
function renderCloudConfig(cfg: GuestConfig): string {
  const linux = cfg.osType === "linux";
  const doc: Record<string, YamlValue> = {
    hostname: cfg.hostname,
    preserve_hostname: false,
    // Updates only the hostname's own line of /etc/hosts, never the whole file.
    manage_etc_hosts: "localhost",
  };
  // KeepImageLogin: the image's own login stays as it is (cloud-init's defaults included).
  const manageLogin = !cfg.keepImageLogin;
  if (manageLogin) {
    doc.disable_root = false;
    doc.ssh_pwauth = cfg.passwordLogin;
  }
  if (linux && cfg.passwordHash !== undefined) {
    doc.chpasswd = { expire: false, users: [{ name: cfg.loginUser, password: cfg.passwordHash, type: "hash" }] };
  }
  if (cfg.publicKeys.length > 0) {
    // Top-level keys go to the image's default user and, with disable_root false, to root.
    doc.ssh_authorized_keys = cfg.publicKeys.map((k) => k.publicKey);
  }
  if (linux && manageLogin && cfg.loginUser === "root") {
    // Debian's sshd refuses root passwords by default (prohibit-password). sshd keeps
    // the first value it reads and Debian includes sshd_config.d/*.conf first.
    doc.write_files = [
      {
        path: "/etc/ssh/sshd_config.d/60-cdh-agent-root-login.conf",
        owner: "root:root",
        permissions: "0644",
        content: `PermitRootLogin ${cfg.passwordLogin ? "yes" : "prohibit-password"}\n`,
      },
    ];
  }
  if (cfg.nameservers.length > 0) {
    // Applied where cc_resolv_conf runs (RHEL-like images, or images listing it in
    // unverified_modules as the platform's do); elsewhere network_data.json's DNS applies.
    doc.manage_resolv_conf = true;
    doc.resolv_conf = { nameservers: [...cfg.nameservers], options: { rotate: true, timeout: 1 } };
  }
  if (cfg.ntpServers.length > 0) {
    doc.ntp = { enabled: true, servers: [...cfg.ntpServers] };
  }
  if (linux) {
    // The guest follows its NICs and addresses by itself (cloud-init/guest-netsync.ts).
    const netsync = netsyncCloudConfig();
    doc.updates = netsync.updates;
    doc.write_files = [...((doc.write_files as YamlValue[] | undefined) ?? []), ...netsync.files];
    doc.runcmd = netsync.runcmd;
  }
  return `#cloud-config\n${renderYaml(doc)}`;
}

// ---------------------------------------------------------------------------------------
// EC2

/**
 * The EC2 meta-data document (Nova's `ec2/latest/meta-data.json` shape).
 *
 * instance-id is the instance's UUID, not its `ins-` ID: cloud-init (Ec2 datasource) and
 * cloudbase-init (EC2Service) treat a changed instance-id as a new instance and re-run
 * their first-boot steps (new SSH host keys, a new random Windows password). With the
 * UUID, a guest that falls back from the config drive to the EC2 tree keeps its
 * identity. The Tencent tree's `/latest/meta-data/instance-id` is a different document
 * and serves the `ins-` ID (seeds-cvm-manual-1 §5.3); the `ins-` ID is also in
 * meta_data.json's `meta.instance_id`.
 *
 * public-keys follows Nova: `{"0": {"_name": "0=<key name>", "openssh-key": …}}`; a
 * tree serving it lists `0=<key name>` and serves `0/openssh-key`.
 */
function ec2MetaData(cfg: GuestConfig): Record<string, unknown> {
  const nic = cfg.nics[0];
  return {
    "ami-id": cfg.imageId,
    "ami-launch-index": cfg.launchIndex,
    hostname: cfg.hostname,
    "instance-id": cfg.uuid,
    "instance-type": cfg.instanceType,
    "local-hostname": cfg.hostname,
    ...(nic ? { "local-ipv4": nic.ipv4, mac: nic.mac } : {}),
    placement: { "availability-zone": cfg.availabilityZone },
    "public-keys": Object.fromEntries(
      cfg.publicKeys.map((k, i) => [String(i), { _name: `${i}=${k.keyName}`, "openssh-key": k.publicKey }]),
    ),
  };
}

// ---------------------------------------------------------------------------------------
// Tencent os.conf

/**
 * `qcloud_action/os.conf` (seeds-cvm-manual-1 §8.2): `key=value` lines that the image's
 * init script *sources* with sh. Values that are not plain words are quoted: the
 * password hash in single quotes (it is full of `$`), the DNS list in double quotes as
 * in the manual's example. `password` is the crypt hash (applied with `chpasswd -e`),
 * Linux only; it is left out when there is none.
 */
function tencentOsConf(cfg: GuestConfig): string {
  const nic = cfg.nics[0];
  const lines: string[] = [`hostname=${shellWord(cfg.hostname)}`];
  if (cfg.osType === "linux" && cfg.passwordHash !== undefined) lines.push(`password=${singleQuoted(cfg.passwordHash)}`);
  if (nic) {
    lines.push(
      `eth0_ip_addr=${shellWord(nic.ipv4)}`,
      `eth0_mac_addr=${shellWord(nic.mac.toUpperCase())}`,
      `eth0_netmask=${shellWord(netmaskOf(nic.prefixLength))}`,
      `eth0_gateway=${shellWord(nic.gateway)}`,
    );
  }
  lines.push(`dns_nameserver="${cfg.nameservers.filter((s) => /^[0-9A-Fa-f.:]+$/.test(s)).join(" ")}"`);
  return `${lines.join("\n")}\n`;
}

function shellWord(value: string): string {
  return /^[A-Za-z0-9._:,+@%\/-]+$/.test(value) ? value : singleQuoted(value);
}

function singleQuoted(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------------------------------
// NoCloud

/**
 * Network config version 1 (the same content cloud-init makes of network_data.json):
 * NIC n matched by MAC and named `eth<device number>`, a static IPv4 subnet per address (the
 * primary first). Version 1 because cloud-init 22.4's ENI renderer (Debian 12) writes a v2
 * `nameservers` block as a bogus `dns {…}` line into /etc/network/interfaces.
 */
function nocloudNetworkConfig(cfg: GuestConfig): string {
  const config: YamlValue[] = cfg.nics.map((nic, i) => {
    const primaryNic = i === 0;
    return {
      type: "physical",
      name: linkName(nic, i),
      mac_address: nic.mac,
      ...(nic.mtu !== undefined ? { mtu: nic.mtu } : {}),
      subnets: addressesOf(nic).map((address, k) => {
        const primary = primaryNic && k === 0;
        return {
          type: "static",
          address,
          netmask: netmaskOf(nic.prefixLength),
          ...(primary
            ? {
                routes: [
                  { network: "0.0.0.0", netmask: "0.0.0.0", gateway: nic.gateway },
                  { network: LINK_LOCAL_NETWORK.network, netmask: LINK_LOCAL_NETWORK.netmask, gateway: nic.gateway },
                ],
              }
            : {}),
          ...(primary && cfg.nameservers.length > 0 ? { dns_nameservers: [...cfg.nameservers] } : {}),
        };
      }),
    };
  });
  if (cfg.nameservers.length > 0) config.push({ type: "nameserver", address: [...cfg.nameservers] });
  return renderYaml({ version: 1, config });
}

// ---------------------------------------------------------------------------------------
// Helpers

/** The guest's name of a NIC: `eth<device number>` (its fixed slot; absent: its index). */
export function linkName(nic: Pick<GuestNic, "deviceNumber">, index: number): string {
  return `eth${nic.deviceNumber ?? index}`;
}

/** A NIC's addresses: the primary first, then the secondary ones (a repeat of one is dropped). */
export function addressesOf(nic: Pick<GuestNic, "ipv4" | "secondaryIpv4s">): string[] {
  return [...new Set([nic.ipv4, ...(nic.secondaryIpv4s ?? [])])];
}

/** 24 → "255.255.255.0". */
export function netmaskOf(prefixLength: number): string {
  if (!(Number.isInteger(prefixLength) && prefixLength >= 0 && prefixLength <= 32)) throw new Error(`bad prefix length ${prefixLength}`);
  const bits = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join(".");
}

function parseIpv4(address: string): void {
  const parts = address.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
    throw new Error(`GuestConfig: ${JSON.stringify(address)} is not an IPv4 address`);
  }
}

