/**
 * The agent's view of libvirt: a narrow port that speaks the agent's own types.
 * Only drivers/libvirt reads virsh's text or XML; everything above sees these.
 */

export type VirtType = "kvm" | "qemu";

/** libvirt's domain states, as `virsh domstate` names them. */
export type DomainPowerState =
  | "running"
  | "blocked"
  | "paused"
  | "in shutdown"
  | "shut off"
  | "crashed"
  | "pmsuspended"
  | "no state";

export interface DomainDiskSpec {
  /** "disk" for block devices, "cdrom" for ISO images (config drive, ISO mount, rescue). */
  device: "disk" | "cdrom";
  /**
   * Target device name: vda, vdb, … for virtio disks; hdc for the IDE CD-ROM (machine
   * pc: Debian's cloud kernel has no AHCI driver, but ata_piix); sda, … for SATA.
   */
  target: string;
  bus: "virtio" | "sata" | "ide";
  /** Absolute path of the image file; absent for an empty CD-ROM tray. */
  path?: string;
  format: "qcow2" | "raw";
  /** Serial number the guest sees (/dev/disk/by-id/virtio-<serial>). */
  serial?: string;
  readonly?: boolean;
  /** Boot order (1 = first); omitted = not bootable. */
  bootOrder?: number;
  /** IO limits (libvirt <iotune>): total IOPS and total bytes per second; 0 or absent = none. */
  iotune?: { totalIopsSec: number; totalBytesSec: number };
}

export interface DomainNicSpec {
  /** 52:54:00:xx:xx:xx */
  mac: string;
  /** libvirt network name, or a host bridge name. */
  source: { network: string } | { bridge: string };
  /**
   * An nwfilter reference with its parameters, as definitions made before the agent's own
   * firewall carry (libvirt's clean-traffic). Read only: the builder refuses it.
   */
  filter?: { name: string; parameters: Record<string, string> };
  /** Host-side tap device name (the agent's: tapName(), fixed before the guest starts); libvirt picks one when absent. */
  targetDev?: string;
}

export interface DomainSpec {
  /** The domain name; the agent uses the instance ID (ins-xxxxxxxx). */
  name: string;
  /** The domain UUID; the instance's Uuid. Also the SMBIOS system UUID. */
  uuid: string;
  virtType: VirtType;
  /** The vCPUs the guest has (with hot-plug headroom: the current count, up to hotplug.maxVcpus). */
  vcpus: number;
  /** The guest's memory (with DIMMs hot-plugged into a running domain: their sum with the base). */
  memoryMiB: number;
  /**
   * Hot-plug headroom (ResetInstancesType, agent/instances/reset-type.ts): `<vcpu current=vcpus>maxVcpus`
   * and, for memory, `<maxMemory slots>` with one NUMA cell, so that a running guest can take
   * more vCPUs (setvcpus --live) and DIMMs (attach-device) up to these. Absent: neither.
   */
  hotplug?: { maxVcpus: number; maxMemoryMiB: number; memorySlots: number };
  /** "bios" (SeaBIOS) or "uefi" (OVMF). */
  firmware: "bios" | "uefi";
  /** For uefi: the per-domain NVRAM file. */
  nvramPath?: string;
  /** Direct kernel boot (the rescue system): the kernel, initramfs and command line on the host. */
  directBoot?: { kernel: string; initrd: string; cmdline: string };
  disks: DomainDiskSpec[];
  nics: DomainNicSpec[];
  /** The serial console is written to this file (a log under the data dir). */
  consoleLogPath: string;
  /**
   * The serial port as a unix socket QEMU listens on (one client at a time: the agent's serial
   * console); absent, a pty as in definitions made before the serial console.
   */
  serialSocketPath?: string;
  /** Adds the org.qemu.guest_agent.0 virtio-serial channel. */
  guestAgent: boolean;
  /**
   * A graphics console: VNC on the unix socket vncSocketPath (never a TCP port; the agent's
   * console bridges to it, agent/console/vnc.ts) and a standard VGA display. True needs
   * vncSocketPath. A definition whose VNC listens elsewhere (older agents: 127.0.0.1, automatic
   * port) reads back as false.
   */
  vnc: boolean;
  /** The VNC server's unix socket (with vnc). */
  vncSocketPath?: string;
  smbios: {
    manufacturer: string;
    product: string;
    version: string;
    serial: string;
    family: string;
  };
  /** The agent's own record, stored under <metadata> in the agent's namespace. Opaque JSON text. */
  metadata: string;
}

/** A running domain's size now and how far its definition lets it grow live. */
export interface LiveDomainSize {
  vcpus: number;
  memoryMiB: number;
  maxVcpus: number;
  maxMemoryMiB: number;
  /** DIMM slots of <maxMemory> not taken by a hot-plugged DIMM. */
  freeSlots: number;
}

export interface DomainSummary {
  name: string;
  uuid: string;
  state: DomainPowerState;
  /** True for a domain with a persistent definition. */
  persistent: boolean;
}

export interface DomainDetails {
  spec: DomainSpec;
  state: DomainPowerState;
}

/** One line of `virsh event --all --loop`, parsed. */
export interface DomainEvent {
  domain: string;
  /** The event family: "lifecycle", "reboot", "agent-lifecycle", "device-removed", … */
  kind: string;
  /** For lifecycle: "Started", "Stopped", "Suspended", "Resumed", "Shutdown", "Defined", "Undefined", "Crashed", "PMSuspended". */
  event: string;
  /** libvirt's detail text, e.g. "Booted", "Shutdown", "Destroyed", "Finished", "Failed". */
  detail: string;
  at: Date;
}

export interface EventWatch {
  stop(): void;
}

export interface EventHandlers {
  onEvent: (event: DomainEvent) => void;
  /** Called when the event stream is (re)established: the caller should reconcile. */
  onConnected: () => void;
  /** Called when the stream broke (libvirtd gone?); it is restarted with backoff. */
  onDisconnected: (reason: string) => void;
}

export interface Hypervisor {
  /** True when libvirtd answers (within timeoutMs, when given; the call is then killed). */
  ping(timeoutMs?: number): Promise<boolean>;
  /** Host capabilities the agent cares about. */
  capabilities(): Promise<{ kvmUsable: boolean }>;
  defineDomain(spec: DomainSpec): Promise<void>;
  /** Domain details (spec parsed back from its XML), or null when no such domain exists. */
  getDomain(name: string): Promise<DomainDetails | null>;
  /**
   * getDomain for many domains at once (a few virsh processes, not two per domain).
   * Domains that do not exist (or vanish meanwhile) are left out of the map. `knownStates`:
   * states just read for some of them (listDomains' domstats), not asked again.
   */
  getDomains(names: readonly string[], knownStates?: ReadonlyMap<string, DomainPowerState>): Promise<Map<string, DomainDetails>>;
  listDomains(): Promise<DomainSummary[]>;
  domainState(name: string): Promise<DomainPowerState | null>;
  start(name: string): Promise<void>;
  /** ACPI power button. */
  shutdown(name: string): Promise<void>;
  /** Pulls the plug. A domain already off is not an error. */
  destroy(name: string): Promise<void>;
  /** ACPI reboot request. */
  reboot(name: string): Promise<void>;
  /** Pauses the guest's vCPUs (virsh suspend); resume() lets it go on. */
  suspend(name: string): Promise<void>;
  resume(name: string): Promise<void>;
  /** Hard reset (power cycle without stopping QEMU). */
  reset(name: string): Promise<void>;
  /** Removes the definition (and its NVRAM). A missing domain is not an error. */
  undefine(name: string): Promise<void>;
  /** Replaces the agent's record in <metadata> (persistent config, and live when running). */
  setMetadata(name: string, metadata: string): Promise<void>;
  /** Puts another image into a CD-ROM (live when running, and in the persistent config). */
  changeMedia(name: string, target: string, path: string): Promise<void>;
  /** Empties a CD-ROM tray (live when running, and in the persistent config). */
  ejectMedia(name: string, target: string): Promise<void>;
  /**
   * Runs a qemu-guest-agent command (a JSON object such as {"execute":"guest-ping"})
   * and returns its "return" value; throws GuestAgentError when the agent does not answer.
   */
  guestAgent(name: string, command: Record<string, unknown>, timeoutS?: number): Promise<unknown>;
  /**
   * Adds a disk to the persistent definition and, when `live`, hot-plugs it into the
   * running guest (virsh attach-device).
   */
  attachDisk(name: string, disk: DomainDiskSpec, live: boolean): Promise<void>;
  /**
   * Removes the disk at `target` from the persistent definition and, when `live`, unplugs it
   * from the running guest, waiting (up to timeoutMs) until QEMU has let it go.
   */
  detachDisk(name: string, target: string, live: boolean, timeoutMs?: number): Promise<void>;
  /** Grows a disk of a running domain; the guest sees the new size at once (virsh blockresize). */
  blockResize(name: string, target: string, sizeBytes: number): Promise<void>;
  /** Sets a running domain's vCPU count, live and in its persistent definition (virsh setvcpus --live --config). */
  setVcpusLive(name: string, count: number): Promise<void>;
  /** Hot-plugs a DIMM of sizeMiB into NUMA node 0 of a running domain, live and in its persistent definition. */
  attachMemoryLive(name: string, sizeMiB: number): Promise<void>;
  /** The running domain's vCPUs and memory now (live XML), or null when it is not running. */
  liveSize(name: string): Promise<LiveDomainSize | null>;
  /** Targets of the disks the running domain has now (live XML), or null when it is not running. */
  liveDiskTargets(name: string): Promise<string[] | null>;
  /**
   * Adds a NIC to the persistent definition and, when `live`, hot-plugs it into the running
   * guest (virsh attach-device --live --config): a virtio NIC with the spec's MAC and tap.
   */
  attachNic(name: string, nic: DomainNicSpec, live: boolean): Promise<void>;
  /**
   * Removes the NIC with `mac` from the persistent definition and, when `live`, unplugs it
   * from the running guest, waiting (up to timeoutMs) until QEMU has let it go.
   */
  detachNic(name: string, mac: string, live: boolean, timeoutMs?: number): Promise<void>;
  /** The NICs the running domain has now (live XML), or null when it is not running. */
  liveNics(name: string): Promise<DomainNicSpec[] | null>;
  /** Starts one supervised `virsh event --all --loop` child, restarted if it dies. */
  watchEvents(handlers: EventHandlers): EventWatch;
}

/** Typed failures; only drivers/libvirt maps virsh's stderr to these. */
export class LibvirtError extends Error {
  override name = "LibvirtError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
export class DomainNotFoundError extends LibvirtError {
  override name = "DomainNotFoundError";
  constructor(readonly domain: string, options?: { cause?: unknown }) {
    super(`domain ${domain} does not exist`, options);
  }
}
/** The guest's qemu-guest-agent is absent, not connected, or did not answer in time. */
export class GuestAgentError extends LibvirtError {
  constructor(readonly domain: string, message: string, options?: { cause?: unknown }) {
    super(`guest agent of ${domain}: ${message}`, options);
  }
}

/** The operation does not fit the domain's current state (e.g. start of a running domain). */
export class DomainStateError extends LibvirtError {
  override name = "DomainStateError";
}
/** libvirtd could not be reached. */
export class LibvirtUnavailableError extends LibvirtError {
  override name = "LibvirtUnavailableError";
}
