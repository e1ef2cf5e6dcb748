/**
 * The domain XML codec: a pure builder (DomainSpec -> libvirt domain XML) and a
 * parser (XML, e.g. `virsh dumpxml --inactive` -> DomainSpec). This is the only
 * module that imports fast-xml-parser (the builder); XML is read with xml-reader.ts
 * (the same object shape, a tenth of the time). The parser tolerates every element
 * libvirt adds on its own (emulator, controllers, addresses, aliases, inputs, …) and
 * reads only what the builder writes.
 */
import { XMLBuilder } from "fast-xml-parser";
import { readXml } from "./xml-reader.js";
import { LibvirtError, type DomainDiskSpec, type DomainNicSpec, type DomainSpec } from "./types.js";

/** The agent's XML namespace inside <metadata>, and the prefix libvirt gives it. */
export const METADATA_NAMESPACE = "https://cdh-agent.dev/xmlns/instance/1";
export const METADATA_PREFIX = "cdh";

/** Firmware files of Debian's `ovmf` package (4 MiB flash images, no secure boot). */
export const OVMF_CODE_PATH = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS_TEMPLATE_PATH = "/usr/share/OVMF/OVMF_VARS_4M.fd";

const GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0";

/** The domain XML could not be read as a DomainSpec. */
export class DomainXmlError extends LibvirtError {
  override name = "DomainXmlError";
}

type XmlNode = Record<string, unknown>;

/* ------------------------------------------------------------------ build */

/** Escapes character data. Quotes stay readable: they need no escaping in text. */
function escapeText(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Escapes an attribute value (the builder writes attributes in double quotes). */
function escapeAttr(value: string): string {
  return escapeText(value).replace(/"/g, "&quot;");
}

/** An element with attributes (in the given order) and optional text or children. */
function el(attrs: Record<string, string | number | undefined>, content?: string | XmlNode): XmlNode {
  const node: XmlNode = {};
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined) node[`@_${key}`] = escapeAttr(String(value));
  }
  if (typeof content === "string") node["#text"] = escapeText(content);
  else if (content) Object.assign(node, content);
  return node;
}

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  format: true,
  indentBy: "  ",
  suppressEmptyNode: true,
  processEntities: false, // el() escapes, so that JSON quotes stay readable
});

function buildDisk(disk: DomainDiskSpec): XmlNode {
  const isCdrom = disk.device === "cdrom";
  const driver = isCdrom
    ? el({ name: "qemu", type: disk.format })
    : el({ name: "qemu", type: disk.format, cache: "none", io: "native", discard: "unmap" });
  const children: XmlNode = { driver };
  if (disk.path !== undefined) children.source = el({ file: disk.path });
  children.target = el({ dev: disk.target, bus: disk.bus });
  if (disk.serial !== undefined) children.serial = escapeText(disk.serial);
  if (isCdrom || disk.readonly) children.readonly = "";
  if (disk.bootOrder !== undefined) children.boot = el({ order: disk.bootOrder });
  if (disk.iotune && (disk.iotune.totalIopsSec > 0 || disk.iotune.totalBytesSec > 0)) {
    const tune: XmlNode = {};
    if (disk.iotune.totalBytesSec > 0) tune.total_bytes_sec = String(disk.iotune.totalBytesSec);
    if (disk.iotune.totalIopsSec > 0) tune.total_iops_sec = String(disk.iotune.totalIopsSec);
    children.iotune = tune;
  }
  return el({ type: "file", device: disk.device }, children);
}

function buildNic(nic: DomainNicSpec): XmlNode {
  const isNetwork = "network" in nic.source;
  const children: XmlNode = {
    mac: el({ address: nic.mac }),
    source: "network" in nic.source ? el({ network: nic.source.network }) : el({ bridge: nic.source.bridge }),
  };
  if (nic.targetDev !== undefined) children.target = el({ dev: nic.targetDev });
  children.model = el({ type: "virtio" });
  // Anti-spoofing lives in the agent's nftables tables (agent/network/firewall-compile.ts),
  // not in libvirt's nwfilter: a filterref is only ever read, from older definitions.
  if (nic.filter) throw new DomainXmlError(`NIC ${nic.mac}: nwfilter references are not written (filter ${nic.filter.name})`);
  return el({ type: isNetwork ? "network" : "bridge" }, children);
}

function buildOs(spec: DomainSpec): XmlNode {
  const os: XmlNode = { type: el({ arch: "x86_64", machine: "pc" }, "hvm") };
  if (spec.firmware === "uefi") {
    if (!spec.nvramPath) throw new DomainXmlError(`domain ${spec.name}: firmware uefi needs nvramPath`);
    os.loader = el({ readonly: "yes", type: "pflash" }, OVMF_CODE_PATH);
    os.nvram = el({ template: OVMF_VARS_TEMPLATE_PATH }, spec.nvramPath);
  }
  if (spec.directBoot) {
    os.kernel = escapeText(spec.directBoot.kernel);
    os.initrd = escapeText(spec.directBoot.initrd);
    os.cmdline = escapeText(spec.directBoot.cmdline);
  }
  os.smbios = el({ mode: "sysinfo" });
  return os;
}

function buildDevices(spec: DomainSpec): XmlNode {
  const devices: XmlNode = {};
  if (spec.disks.length > 0) devices.disk = spec.disks.map(buildDisk);
  if (spec.nics.length > 0) devices.interface = spec.nics.map(buildNic);
  if (spec.serialSocketPath !== undefined) {
    // QEMU listens on the socket and serves one client at a time (the agent's serial console
    // session, agent/console/serial.ts); the log gets every byte whether a client is there or not.
    const source = el({ mode: "bind", path: spec.serialSocketPath });
    devices.serial = el({ type: "unix" }, { source, log: el({ file: spec.consoleLogPath, append: "on" }), target: el({ port: 0 }) });
    devices.console = el({ type: "unix" }, { source, target: el({ type: "serial", port: 0 }) });
  } else {
    devices.serial = el({ type: "pty" }, { log: el({ file: spec.consoleLogPath, append: "on" }), target: el({ port: 0 }) });
    devices.console = el({ type: "pty" }, { target: el({ type: "serial", port: 0 }) });
  }
  if (spec.guestAgent) {
    devices.channel = el({ type: "unix" }, { target: el({ type: "virtio", name: GUEST_AGENT_CHANNEL }) });
  }
  if (spec.vnc) {
    // VNC on a unix socket only: no TCP port on the host, the agent's console is the way in.
    if (spec.vncSocketPath === undefined) throw new DomainXmlError(`domain ${spec.name}: vnc needs vncSocketPath (VNC never listens on a TCP port)`);
    devices.graphics = el({ type: "vnc" }, { listen: el({ type: "socket", socket: spec.vncSocketPath }) });
    // Standard VGA (QEMU -vga std): legacy text mode for BIOS, boot loaders and the Linux text
    // console, and a linear framebuffer (VBE, bochs-drm) for a cloud image's graphical console.
    // Cirrus, which the seeds name, is QEMU's deprecated legacy device with 4 MiB of VRAM.
    devices.video = { model: el({ type: "vga" }) };
  }
  devices.memballoon = el({ model: "virtio" }, { stats: el({ period: 10 }) });
  devices.rng = el({ model: "virtio" }, { backend: el({ model: "random" }, "/dev/urandom") });
  // pvpanic (ISA): a guest kernel panic reaches libvirt as a Crashed event (the self-check's KERNEL_PANIC).
  devices.panic = el({ model: "isa" });
  return devices;
}

/** The <disk> element alone, for attach-device (hot-plug) and detach-device. */
export function buildDiskXml(disk: DomainDiskSpec): string {
  return builder.build({ disk: buildDisk(disk) }) as string;
}

/** The <interface> element alone, for attach-device (NIC hot-plug) and detach-device. */
export function buildNicXml(nic: DomainNicSpec): string {
  return builder.build({ interface: buildNic(nic) }) as string;
}

/** A DIMM of sizeMiB on NUMA node 0, for attach-device into a domain with hot-plug headroom. */
export function buildDimmXml(sizeMiB: number): string {
  return builder.build({ memory: el({ model: "dimm" }, { target: { size: el({ unit: "MiB" }, String(sizeMiB)), node: "0" } }) }) as string;
}

/** Renders the complete domain XML for a spec. Pure: the same spec gives the same bytes. */
export function buildDomainXml(spec: DomainSpec): string {
  const { smbios } = spec;
  const entries = (
    [
      ["manufacturer", smbios.manufacturer],
      ["product", smbios.product],
      ["version", smbios.version],
      ["serial", smbios.serial],
      ["uuid", spec.uuid],
      ["family", smbios.family],
    ] as const
  ).map(([name, value]) => el({ name }, value));

  const domain: XmlNode = {
    name: escapeText(spec.name),
    uuid: escapeText(spec.uuid),
    metadata: {
      [`${METADATA_PREFIX}:instance`]: el(
        { [`xmlns:${METADATA_PREFIX}`]: METADATA_NAMESPACE },
        { [`${METADATA_PREFIX}:record`]: el({ format: "json" }, spec.metadata) },
      ),
    },
    memory: el({ unit: "MiB" }, String(spec.memoryMiB)),
    currentMemory: el({ unit: "MiB" }, String(spec.memoryMiB)),
    vcpu: el({ placement: "static" }, String(spec.vcpus)),
    sysinfo: el({ type: "smbios" }, { system: { entry: entries } }),
    os: buildOs(spec),
    features: { acpi: "", apic: "" },
  };
  const cpu: XmlNode = spec.virtType === "kvm" ? el({ mode: "host-model" }) : {};
  const hp = spec.hotplug;
  if (hp && hp.maxVcpus > spec.vcpus) domain.vcpu = el({ placement: "static", current: String(spec.vcpus) }, String(hp.maxVcpus));
  if (hp && hp.maxMemoryMiB > spec.memoryMiB && hp.memorySlots > 0) {
    // DIMM hot-plug needs <maxMemory> and a guest NUMA topology (one cell holding every vCPU and the base memory).
    domain.maxMemory = el({ slots: String(hp.memorySlots), unit: "MiB" }, String(hp.maxMemoryMiB));
    cpu.numa = { cell: el({ id: "0", cpus: `0-${Math.max(hp.maxVcpus, spec.vcpus) - 1}`, memory: String(spec.memoryMiB), unit: "MiB" }) };
  }
  if (Object.keys(cpu).length) domain.cpu = cpu;
  Object.assign(domain, {
    clock: el({ offset: "utc" }),
    on_poweroff: "destroy",
    on_reboot: "restart",
    on_crash: "destroy",
    devices: buildDevices(spec),
  });
  return builder.build({ domain: el({ type: spec.virtType }, domain) }) as string;
}

/** The element `virsh metadata --set` takes (libvirt adds the namespace and prefix). */
export function buildMetadataElement(metadata: string): string {
  return `<instance><record format="json">${escapeText(metadata)}</record></instance>`;
}

/* ------------------------------------------------------------------ parse */

const ARRAY_PATHS = new Set([
  "domain.devices.disk",
  "domain.devices.interface",
  "domain.devices.interface.filterref.parameter",
  "domain.devices.serial",
  "domain.devices.channel",
  "domain.devices.graphics",
  "domain.sysinfo",
  "domain.sysinfo.system.entry",
]);

function asNode(value: unknown): XmlNode | undefined {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as XmlNode;
  if (value === "") return {}; // an empty element such as <readonly/>
  return undefined;
}

function list(value: unknown): XmlNode[] {
  if (!Array.isArray(value)) return [];
  return value.map(asNode).filter((n): n is XmlNode => n !== undefined);
}

function text(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number") return String(value);
  const node = asNode(value);
  const t = node?.["#text"];
  return typeof t === "string" || typeof t === "number" ? String(t) : undefined;
}

function attr(node: unknown, name: string): string | undefined {
  const value = asNode(node)?.[`@_${name}`];
  return typeof value === "string" ? value : undefined;
}

const UNIT_BYTES: Record<string, number> = {
  b: 1, bytes: 1, k: 1024, kib: 1024, kb: 1000, m: 1024 ** 2, mib: 1024 ** 2, mb: 1000 ** 2,
  g: 1024 ** 3, gib: 1024 ** 3, gb: 1000 ** 3, t: 1024 ** 4, tib: 1024 ** 4, tb: 1000 ** 4,
};

function memoryMiB(node: unknown): number {
  const value = Number(text(node));
  const unit = (attr(node, "unit") ?? "KiB").toLowerCase();
  const factor = UNIT_BYTES[unit];
  if (!Number.isFinite(value) || factor === undefined) throw new DomainXmlError(`unreadable <memory>: ${text(node)} ${unit}`);
  return Math.round((value * factor) / 1024 ** 2);
}

function parseDisk(node: XmlNode): DomainDiskSpec | undefined {
  const device = attr(node, "device");
  if (device !== "disk" && device !== "cdrom") return undefined;
  const bus = attr(node.target, "bus");
  const disk: DomainDiskSpec = {
    device,
    target: attr(node.target, "dev") ?? "",
    bus: bus === "sata" || bus === "ide" ? bus : "virtio",
    format: attr(node.driver, "type") === "qcow2" ? "qcow2" : "raw",
  };
  const path = attr(node.source, "file") ?? attr(node.source, "dev");
  if (path !== undefined) disk.path = path;
  const serial = text(node.serial);
  if (serial !== undefined) disk.serial = serial;
  if (node.readonly !== undefined) disk.readonly = true;
  const order = attr(node.boot, "order");
  if (order !== undefined) disk.bootOrder = Number(order);
  const tune = asNode(node.iotune);
  if (tune) {
    const iops = Number(text(tune.total_iops_sec) ?? 0);
    const bytes = Number(text(tune.total_bytes_sec) ?? 0);
    if (iops > 0 || bytes > 0) disk.iotune = { totalIopsSec: iops, totalBytesSec: bytes };
  }
  return disk;
}

function parseNic(node: XmlNode): DomainNicSpec | undefined {
  const type = attr(node, "type");
  const network = attr(node.source, "network");
  const bridge = attr(node.source, "bridge");
  let source: DomainNicSpec["source"];
  if (type === "network" && network !== undefined) source = { network };
  else if (type === "bridge" && bridge !== undefined) source = { bridge };
  else return undefined;
  const nic: DomainNicSpec = { mac: attr(node.mac, "address") ?? "", source };
  const targetDev = attr(node.target, "dev");
  if (targetDev !== undefined) nic.targetDev = targetDev;
  const filter = attr(node.filterref, "filter");
  if (filter !== undefined) {
    const parameters: Record<string, string> = {};
    for (const p of list(asNode(node.filterref)?.parameter)) {
      const name = attr(p, "name");
      if (name !== undefined) parameters[name] = attr(p, "value") ?? "";
    }
    nic.filter = { name: filter, parameters };
  }
  return nic;
}

/** The agent's record: the text of <PREFIX:record> inside the element in the agent's namespace. */
function parseMetadata(metadata: unknown): string {
  const node = asNode(metadata);
  if (!node) return "";
  for (const [key, child] of Object.entries(node)) {
    const c = asNode(child);
    if (!c) continue;
    for (const [a, value] of Object.entries(c)) {
      if (value !== METADATA_NAMESPACE) continue;
      if (a === "@_xmlns") return text(c.record) ?? "";
      if (a.startsWith("@_xmlns:")) {
        const prefix = a.slice("@_xmlns:".length);
        if (key === `${prefix}:instance`) return text(c[`${prefix}:record`]) ?? "";
      }
    }
  }
  return "";
}

function parseSmbios(domain: XmlNode): DomainSpec["smbios"] {
  const sysinfo = list(domain.sysinfo).find((s) => attr(s, "type") === "smbios");
  const values: Record<string, string> = {};
  for (const entry of list(asNode(sysinfo?.system)?.entry)) {
    const name = attr(entry, "name");
    if (name !== undefined) values[name] = text(entry) ?? "";
  }
  return {
    manufacturer: values.manufacturer ?? "",
    product: values.product ?? "",
    version: values.version ?? "",
    serial: values.serial ?? "",
    family: values.family ?? "",
  };
}

/** Reads a domain XML (as built here, or as libvirt dumps it) back into a DomainSpec. */
export function parseDomainXml(xml: string): DomainSpec {
  let doc: XmlNode;
  try {
    doc = readXml(xml, ARRAY_PATHS) as XmlNode;
  } catch (error) {
    throw new DomainXmlError("domain XML is not well-formed", { cause: error });
  }
  const domain = asNode(doc.domain);
  if (!domain) throw new DomainXmlError("no <domain> element in the XML");
  const virtType = attr(domain, "type");
  if (virtType !== "kvm" && virtType !== "qemu") throw new DomainXmlError(`unsupported domain type ${String(virtType)}`);
  const os = asNode(domain.os) ?? {};
  const loader = asNode(os.loader);
  const uefi = attr(os, "firmware") === "efi" || attr(loader, "type") === "pflash";
  const devices = asNode(domain.devices) ?? {};
  const serials = list(devices.serial);
  const consoleLog = serials.map((s) => attr(s.log, "file")).find((f) => f !== undefined);
  // The agent's VNC: a <listen type='socket'>; VNC on a TCP port (older definitions) is not it.
  const vncSocket = list(devices.graphics)
    .filter((g) => attr(g, "type") === "vnc")
    .flatMap((g) => (Array.isArray(g.listen) ? list(g.listen) : [asNode(g.listen) ?? {}]))
    .filter((l) => attr(l, "type") === "socket")
    .map((l) => attr(l, "socket"))
    .find((s) => s !== undefined);
  const serialSocket = serials.filter((s) => attr(s, "type") === "unix").map((s) => attr(s.source, "path")).find((f) => f !== undefined);

  const spec: DomainSpec = {
    name: text(domain.name) ?? "",
    uuid: text(domain.uuid) ?? "",
    virtType,
    vcpus: Number(attr(domain.vcpu, "current") ?? text(domain.vcpu)),
    memoryMiB: memoryMiB(domain.memory),
    firmware: uefi ? "uefi" : "bios",
    disks: list(devices.disk).map(parseDisk).filter((d): d is DomainDiskSpec => d !== undefined),
    nics: list(devices.interface).map(parseNic).filter((n): n is DomainNicSpec => n !== undefined),
    consoleLogPath: consoleLog ?? "",
    guestAgent: list(devices.channel).some((c) => attr(c.target, "name") === GUEST_AGENT_CHANNEL),
    vnc: vncSocket !== undefined,
    smbios: parseSmbios(domain),
    metadata: parseMetadata(domain.metadata),
  };
  const maxVcpus = Number(text(domain.vcpu));
  const maxMemory = asNode(domain.maxMemory);
  if (maxVcpus > spec.vcpus || maxMemory) {
    const maxMemoryMiB = maxMemory ? memoryMiB(domain.maxMemory) : spec.memoryMiB;
    spec.hotplug = { maxVcpus, maxMemoryMiB, memorySlots: Number(attr(maxMemory, "slots") ?? 0) };
  }
  if (serialSocket !== undefined) spec.serialSocketPath = serialSocket;
  if (vncSocket !== undefined) spec.vncSocketPath = vncSocket;
  const nvram = text(os.nvram);
  if (uefi && nvram !== undefined) spec.nvramPath = nvram;
  const kernel = text(os.kernel);
  if (kernel !== undefined) spec.directBoot = { kernel, initrd: text(os.initrd) ?? "", cmdline: text(os.cmdline) ?? "" };
  return spec;
}
