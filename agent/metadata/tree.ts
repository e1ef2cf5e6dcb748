/**
 * The metadata site of one guest: every path the metadata endpoint answers, with
 * its body and headers, rendered once per (config, documents) pair. Pure: no I/O.
 *
 * Three trees share one site:
 * - Tencent (seeds-cvm-manual-1 §5): `/` lists `1.0`, `2017-09-19`, `latest`,
 *   `meta-data`; under each, `meta-data/…` with the seed's paths and formats.
 * - EC2 (cloud-init's Ec2 datasource reads `/2009-04-04/meta-data/`,
 *   cloudbase-init's EC2Service reads `/latest/meta-data/`): the same meta-data
 *   folder, a union of the EC2 and Tencent keys.
 * - OpenStack: `/openstack/<version>/{meta_data.json,user_data,vendor_data.json,
 *   network_data.json}` straight from GuestDocuments (`password` is dynamic and
 *   answered by the server, not here).
 *
 * Listing rules (Tencent and EC2 agree): one entry per line, sorted, folders end
 * with `/`, no final newline. A folder answers with or without its final `/`.
 *
 * MAC case: the seed prints MACs in uppercase; EC2 and cloud-init use lowercase
 * (cloud-init looks `network/interfaces/macs/<mac>` up by the lowercase MAC the
 * guest kernel reports). The Tencent-only versions (`1.0`, `2017-09-19`, the
 * versionless `meta-data`) therefore list uppercase MACs, `latest` and
 * `2009-04-04` (shared with EC2) list lowercase ones; every tree also answers the
 * other case and the seed's singular `network/interfaces/mac/…` spelling, unlisted.
 */
import type { GuestConfig, GuestDocuments } from "../../cloud-init/types.js";

export interface Resource {
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, string | number>>;
}

/** Path (canonical, leading `/`) → what it answers. */
export type Site = ReadonlyMap<string, Resource>;

/** The Tencent version roots, in the seed's order (GET / answers exactly these). */
export const TENCENT_VERSIONS = ["1.0", "2017-09-19", "latest", "meta-data"] as const;
/** The EC2 version cloud-init's Ec2 and OpenStack datasources fall back to. */
export const EC2_VERSION = "2009-04-04";
/**
 * OpenStack versions listed at `/openstack`. All serve the same documents. cloud-init
 * picks the newest one it knows from this list; cloudbase-init posts its password
 * to `2013-04-04`.
 */
export const OPENSTACK_VERSIONS = [
  "2012-08-10",
  "2013-04-04",
  "2013-10-17",
  "2015-10-15",
  "2016-06-30",
  "2018-08-27",
  "latest",
] as const;

/** What `payment/charge-type` answers: sub-instances of a dedicated host. */
export const CHARGE_TYPE = "CDHPAID";

const TEXT = "text/plain";
const JSON_TYPE = "application/json";
const BINARY = "application/octet-stream";

type Node = string | Folder;

class Folder {
  readonly children = new Map<string, Node>();
  /** Replaces the generated listing (EC2's `public-keys/` lists `0=name`). */
  listing?: string;

  folder(name: string): Folder {
    const existing = this.children.get(name);
    if (existing instanceof Folder) return existing;
    const created = new Folder();
    this.children.set(name, created);
    return created;
  }

  leaf(name: string, value: string | undefined): void {
    if (value !== undefined && value !== "") this.children.set(name, value);
  }

  render(): string {
    if (this.listing !== undefined) return this.listing;
    return [...this.children.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, node]) => (node instanceof Folder ? `${name}/` : name))
      .join("\n");
  }
}

class SiteBuilder {
  readonly map = new Map<string, Resource>();

  add(path: string, body: string | Buffer, contentType: string): void {
    const buf = typeof body === "string" ? Buffer.from(body, "utf8") : body;
    this.map.set(path, {
      body: buf,
      headers: Object.freeze({ "content-type": contentType, "content-length": buf.length }),
    });
  }

  /** Writes a folder (as `path/` and `path`) and everything below it. */
  folder(path: string, folder: Folder): void {
    const listing = folder.render();
    this.add(`${path}/`, listing, TEXT);
    if (path !== "") this.add(path, listing, TEXT);
    for (const [name, node] of folder.children) {
      if (node instanceof Folder) this.folder(`${path}/${name}`, node);
      else this.add(`${path}/${name}`, node, TEXT);
    }
  }
}

/** Renders the whole site of one guest. */
export function buildSite(config: GuestConfig, docs: GuestDocuments): Site {
  const site = new SiteBuilder();
  const userData = docs.ec2.userData ?? docs.openstack.userData ?? config.userData;

  // Tencent and EC2.
  site.add("/", TENCENT_VERSIONS.join("\n"), TEXT);
  const versions: Array<[string, "upper" | "lower", Flavour]> = [
    ["1.0", "upper", "tencent"],
    ["2017-09-19", "upper", "tencent"],
    ["latest", "lower", "tencent"],
    [EC2_VERSION, "lower", "ec2"],
  ];
  const hasUserData = userData !== undefined && userData.length > 0;
  const versionListing = hasUserData ? "meta-data/\nuser-data" : "meta-data/";
  for (const [version, macCase, flavour] of versions) {
    site.add(`/${version}`, versionListing, TEXT);
    site.add(`/${version}/`, versionListing, TEXT);
    site.folder(`/${version}/meta-data`, metaData(config, docs, macCase, flavour));
    addMacAliases(site, `/${version}/meta-data`, config, macCase, flavour);
    if (hasUserData) site.add(`/${version}/user-data`, userData, BINARY);
  }
  // The versionless form (`/meta-data/local-ipv4`, the seed's legacy URLs) is 1.0.
  site.folder("/meta-data", metaData(config, docs, "upper", "tencent"));
  addMacAliases(site, "/meta-data", config, "upper", "tencent");

  // OpenStack.
  site.add("/openstack", OPENSTACK_VERSIONS.join("\n"), TEXT);
  site.add("/openstack/", OPENSTACK_VERSIONS.join("\n"), TEXT);
  const osUserData = docs.openstack.userData ?? userData;
  const files: Array<[string, string | Buffer, string]> = [
    ["meta_data.json", JSON.stringify(docs.openstack.metaData), JSON_TYPE],
    ["vendor_data.json", JSON.stringify(docs.openstack.vendorData), JSON_TYPE],
    ["network_data.json", JSON.stringify(docs.openstack.networkData), JSON_TYPE],
  ];
  if (osUserData && osUserData.length > 0) files.push(["user_data", osUserData, BINARY]);
  const listing = [...files.map(([name]) => name), "password"].sort().join("\n");
  for (const version of OPENSTACK_VERSIONS) {
    site.add(`/openstack/${version}`, listing, TEXT);
    site.add(`/openstack/${version}/`, listing, TEXT);
    for (const [name, body, type] of files) site.add(`/openstack/${version}/${name}`, body, type);
  }
  return site.map;
}

/**
 * Which document wins where the two disagree. Only `instance-id` does today: the seed's
 * Tencent tree answers the `ins-` ID, the EC2 document (cloud-init/documents.ts) the
 * UUID, so that cloud-init falling back from the config drive to the EC2 datasource
 * keeps the instance's identity. `2009-04-04` is read only by EC2 clients (cloud-init's
 * Ec2 and OpenStack datasources), so it follows the EC2 document; the Tencent versions
 * and `latest` follow the seed.
 */
type Flavour = "tencent" | "ec2";

/** Keys of the EC2 document the tree renders itself (from the config). */
const RENDERED_FROM_CONFIG = new Set(["public-keys", "network", "user-data", "mac", "meta-data", "security-groups"]);

/** The meta-data folder: EC2 keys from the documents, overlaid with what the config says. */
function metaData(config: GuestConfig, docs: GuestDocuments, macCase: "upper" | "lower", flavour: Flavour): Folder {
  const md = new Folder();
  importJson(md, docs.ec2.metaData, RENDERED_FROM_CONFIG);
  const mac = (m: string) => (macCase === "upper" ? m.toUpperCase() : m.toLowerCase());
  const primary = config.nics[0];

  md.leaf("instance-id", config.instanceId);
  md.leaf("uuid", config.uuid);
  md.leaf("instance-name", config.instanceName);
  md.leaf("hostname", config.hostname);
  md.leaf("local-hostname", config.hostname);
  md.leaf("instance-type", config.instanceType);
  md.leaf("ami-id", config.imageId);
  md.leaf("ami-launch-index", String(config.launchIndex));
  if (primary) {
    md.leaf("local-ipv4", primary.ipv4);
    md.leaf("mac", mac(primary.mac));
  }

  const placement = md.folder("placement");
  placement.leaf("availability-zone", config.availabilityZone);
  placement.leaf("region", config.region);
  placement.leaf("zone", config.availabilityZone);

  const instance = md.folder("instance");
  instance.leaf("instance-type", config.instanceType);
  instance.leaf("image-id", config.imageId);
  // Security groups, in priority order: EC2's `security-groups` (names), Tencent's
  // `instance/security-group` (the seed names the path, not its format: the IDs, one a line).
  const groups = config.securityGroups ?? [];
  if (groups.length > 0) {
    md.leaf("security-groups", groups.map((g) => oneLine(g.name) || g.id).join("\n"));
    instance.leaf("security-group", groups.map((g) => g.id).join("\n"));
  }

  // The seed's intranet caps (§5.1: Kbit/s), from the host's rule (agent/network/bandwidth/rule.ts).
  if (config.bandwidthLimitKbit) {
    instance.leaf("bandwidth-limit-egress", String(config.bandwidthLimitKbit.egress));
    instance.leaf("bandwidth-limit-ingress", String(config.bandwidthLimitKbit.ingress));
  }

  const payment = md.folder("payment");
  payment.leaf("charge-type", CHARGE_TYPE);
  payment.leaf("create-time", tencentTime(config.createdTime));

  if (config.ntpServers.length > 0) md.folder("ntp").leaf("servers", config.ntpServers.join("\n"));

  if (config.nics.length > 0) {
    const macs = md.folder("network").folder("interfaces").folder("macs");
    config.nics.forEach((nic, index) => macs.children.set(mac(nic.mac), nicFolder(nic, index, mac, config.securityGroups, flavour)));
  }

  if (config.publicKeys.length > 0) {
    const keys = md.folder("public-keys");
    config.publicKeys.forEach((key, index) => keys.folder(String(index)).leaf("openssh-key", oneLine(key.publicKey)));
    keys.listing = config.publicKeys.map((key, index) => `${index}=${oneLine(key.keyName)}`).join("\n");
  }
  if (flavour === "ec2") importJson(md, docs.ec2.metaData, RENDERED_FROM_CONFIG);
  return md;
}

/**
 * One NIC's folder. Both trees: `mac`, `device-number` (its slot), `interface-id` (its ENI),
 * `primary-local-ipv4`, `vpc-id`, `subnet-id`, `subnet-ipv4-cidr-block`, its own security
 * groups (`security-group-ids`, `security-groups`). `local-ipv4s` lists every address of the
 * NIC, the primary first: the Tencent versions make it a folder with a folder per address
 * (gateway, local-ipv4, subnet-mask; seeds-cvm-manual-1 §5.3), EC2's `2009-04-04` a leaf with
 * one address a line, as EC2 serves it and cloud-init's Ec2 datasource reads it.
 */
function nicFolder(
  nic: GuestConfig["nics"][number],
  index: number,
  mac: (m: string) => string,
  instanceGroups: GuestConfig["securityGroups"] = [],
  flavour: Flavour = "tencent",
): Folder {
  const f = new Folder();
  const groups = nic.securityGroups ?? instanceGroups;
  const addresses = [...new Set([nic.ipv4, ...(nic.secondaryIpv4s ?? [])])];
  f.leaf("mac", mac(nic.mac));
  f.leaf("security-group-ids", groups.map((g) => g.id).join("\n"));
  f.leaf("security-groups", groups.map((g) => oneLine(g.name) || g.id).join("\n"));
  f.leaf("device-number", String(nic.deviceNumber ?? index));
  f.leaf("interface-id", nic.eniId);
  f.leaf("primary-local-ipv4", nic.ipv4);
  f.leaf("vpc-id", nic.vpcId);
  f.leaf("subnet-id", nic.subnetId);
  const cidr = networkCidr(nic.ipv4, nic.prefixLength);
  f.leaf("subnet-ipv4-cidr-block", cidr);
  if (flavour === "ec2") {
    f.leaf("local-ipv4s", addresses.join("\n"));
    return f;
  }
  const ips = f.folder("local-ipv4s");
  for (const address of addresses) {
    const ip = ips.folder(address);
    ip.leaf("gateway", nic.gateway);
    ip.leaf("local-ipv4", address);
    ip.leaf("subnet-mask", prefixToMask(nic.prefixLength));
  }
  return f;
}

/** Unlisted aliases: the other MAC case, and the seed's singular `interfaces/mac/`. */
function addMacAliases(site: SiteBuilder, metaPath: string, config: GuestConfig, listed: "upper" | "lower", flavour: Flavour): void {
  const other = listed === "upper" ? (m: string) => m.toLowerCase() : (m: string) => m.toUpperCase();
  const same = listed === "upper" ? (m: string) => m.toUpperCase() : (m: string) => m.toLowerCase();
  const singular = new Folder();
  config.nics.forEach((nic, index) => {
    site.folder(`${metaPath}/network/interfaces/macs/${other(nic.mac)}`, nicFolder(nic, index, same, config.securityGroups, flavour));
    singular.children.set(same(nic.mac), nicFolder(nic, index, same, config.securityGroups, flavour));
  });
  if (config.nics.length === 0) return;
  site.folder(`${metaPath}/network/interfaces/mac`, singular);
  config.nics.forEach((nic, index) => {
    site.folder(`${metaPath}/network/interfaces/mac/${other(nic.mac)}`, nicFolder(nic, index, same, config.securityGroups, flavour));
  });
}

/** Copies a JSON object into a folder: objects become folders, scalars leaves, scalar arrays lines. */
function importJson(into: Folder, value: Record<string, unknown>, skip: ReadonlySet<string>): void {
  for (const [key, v] of Object.entries(value)) {
    if (skip.has(key) || !safeName(key)) continue;
    if (v === null || v === undefined) continue;
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
      into.leaf(key, String(v));
    } else if (Array.isArray(v)) {
      if (v.every((x) => typeof x === "string" || typeof x === "number")) into.leaf(key, v.join("\n"));
    } else if (typeof v === "object") {
      importJson(into.folder(key), v as Record<string, unknown>, new Set());
    }
  }
}

function safeName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.startsWith("_") && !/[/\\\s\x00-\x1f\x7f]/.test(name);
}

/** A listing or leaf never spans lines it does not own. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").trim();
}

/** "2018-09-18T11:27:33Z" → "2018-09-18 11:27:33" (the seed's format; UTC). */
export function tencentTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]}` : iso;
}

export function prefixToMask(prefix: number): string {
  const bits = prefix <= 0 ? 0 : prefix >= 32 ? 0xffffffff : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join(".");
}

function networkCidr(ipv4: string, prefix: number): string | undefined {
  const parts = ipv4.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined;
  const mask = prefix <= 0 ? 0 : prefix >= 32 ? 0xffffffff : (0xffffffff << (32 - prefix)) >>> 0;
  const addr = (((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0) & mask;
  return `${[24, 16, 8, 0].map((s) => ((addr >>> 0) >>> s) & 0xff).join(".")}/${prefix}`;
}
