/**
 * VirshHypervisor against the real libvirtd (qemu:///system, TCG guests).
 * Everything created here is named drvtest-* and removed at the end.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { access, chmod, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRunner } from "../../drivers/exec/local.js";
import { VirshHypervisor } from "../../drivers/libvirt/virsh.js";
import {
  DomainNotFoundError,
  LibvirtUnavailableError,
  type DomainEvent,
  type DomainSpec,
  type EventWatch,
} from "../../drivers/libvirt/types.js";
import { QemuImg } from "../../drivers/storage/qemu-img.js";

const URI = "qemu:///system";
const NETWORK = "drvtest-net";
const runner = new LocalRunner({ defaultTimeoutMs: 60_000 });
const virsh = (...args: string[]) => runner.run(["virsh", "-c", URI, ...args], { allowFailure: true });

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const mac = () => `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;

describe("VirshHypervisor with the real libvirtd", () => {
  let dir: string;
  let hv: VirshHypervisor;
  let watch: EventWatch | undefined;
  const events: DomainEvent[] = [];
  let connected = 0;
  let spec: DomainSpec;
  const suffix = randomBytes(4).toString("hex");
  const name = `drvtest-${suffix}`;

  const seen = (domain: string, event: string, detail?: string) =>
    waitFor(`${domain} ${event} ${detail ?? ""}`, () =>
      events.find((e) => e.domain === domain && e.kind === "lifecycle" && e.event === event && (detail === undefined || e.detail === detail)),
    );

  beforeAll(async () => {
    dir = await mkdtemp("/var/tmp/drvtest-");
    await chmod(dir, 0o755); // QEMU runs as libvirt-qemu and must reach the disk
    hv = new VirshHypervisor({ runner, uri: URI, tmpDir: dir });
    const netXml = join(dir, "net.xml");
    await writeFile(netXml, `<network><name>${NETWORK}</name><bridge name='drvtestbr0'/></network>\n`);
    await virsh("net-destroy", NETWORK); // left over by an interrupted run
    const created = await virsh("net-create", netXml);
    expect(created.exitCode, created.stderr).toBe(0);

    const disk = join(dir, "disk.qcow2");
    await new QemuImg({ runner }).create({ target: disk, format: "qcow2", sizeBytes: 16 * 1024 * 1024 });
    spec = {
      name,
      uuid: randomUUID(),
      virtType: "qemu",
      vcpus: 1,
      memoryMiB: 128,
      firmware: "bios",
      disks: [
        { device: "disk", target: "vda", bus: "virtio", path: disk, format: "qcow2", serial: `disk-${suffix}`, bootOrder: 1 },
        { device: "cdrom", target: "sda", bus: "sata", format: "raw", readonly: true },
      ],
      nics: [{ mac: mac(), source: { network: NETWORK }, targetDev: `drvt-${suffix}` }],
      consoleLogPath: join(dir, "console.log"),
      guestAgent: true,
      // No graphics: QEMU binds the VNC socket itself, in a directory of its own (test/integration/vnc-console.test.ts).
      vnc: false,
      smbios: { manufacturer: "cdh-agent tests", product: "CVM", version: "1", serial: `serial-${suffix}`, family: "CDH" },
      metadata: JSON.stringify({ instanceId: name, note: `quotes " and <xml> & ampersands` }),
    };
    watch = hv.watchEvents({
      onEvent: (e) => events.push(e),
      onConnected: () => {
        connected += 1;
      },
      onDisconnected: () => {},
    });
    await waitFor("event stream connected", () => connected > 0);
  });

  afterAll(async () => {
    watch?.stop();
    for (const d of [name, `${name}-uefi`]) {
      await virsh("destroy", d);
      await virsh("undefine", d, "--nvram");
    }
    await virsh("net-destroy", NETWORK);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers a ping, and a hypervisor on a dead socket does not", async () => {
    expect(await hv.ping()).toBe(true);
    const dead = new VirshHypervisor({ runner, uri: "qemu+unix:///system?socket=/nonexistent/sock", tmpDir: dir });
    expect(await dead.ping()).toBe(false);
    await expect(dead.listDomains()).rejects.toBeInstanceOf(LibvirtUnavailableError);
  });

  it("defines a domain whose spec comes back unchanged through libvirt", async () => {
    await hv.defineDomain(spec);
    expect(await hv.getDomain(name)).toEqual({ spec, state: "shut off" });
    await seen(name, "Defined", "Added");
    expect((await readdir(dir)).filter((f) => f.startsWith("domain-"))).toEqual([]);
  });

  it("replaces the metadata record, and virsh reads the same record back", async () => {
    const record = JSON.stringify({ instanceId: name, generation: 2, odd: "</cdh:record> &amp;" });
    await hv.setMetadata(name, record);
    expect((await hv.getDomain(name))?.spec.metadata).toBe(record);
    const raw = await virsh("metadata", name, "--uri", "https://cdh-agent.dev/xmlns/instance/1", "--config");
    expect(raw.stdout).toContain("&lt;/cdh:record&gt; &amp;amp;");
    spec = { ...spec, metadata: record };
  });

  it("starts the domain; listDomains and the event stream both see it running", async () => {
    await hv.start(name);
    await seen(name, "Started", "Booted");
    const listed = await hv.listDomains();
    expect(listed).toContainEqual({ name, uuid: spec.uuid, state: "running", persistent: true });
    expect(await hv.domainState(name)).toBe("running");
    // The persistent definition is unchanged by the live additions.
    expect(await hv.getDomain(name)).toEqual({ spec, state: "running" });
    // Many at once: the same details, and a domain that does not exist is left out.
    const many = await hv.getDomains([name, "ins-nothere0", "odd name"]);
    expect([...many.keys()]).toEqual([name]);
    expect(many.get(name)).toEqual({ spec, state: "running" });
  });

  it("updates the metadata of a running domain live and in its config", async () => {
    const record = JSON.stringify({ instanceId: name, generation: 3 });
    await hv.setMetadata(name, record);
    const live = await virsh("metadata", name, "--uri", "https://cdh-agent.dev/xmlns/instance/1", "--live");
    expect(live.stdout).toContain('"generation":3');
    expect((await hv.getDomain(name))?.spec.metadata).toBe(record);
  });

  it("reads the disk of the running domain with qemu-img (force-share)", async () => {
    const info = await new QemuImg({ runner }).info(spec.disks[0]!.path!);
    expect(info).toMatchObject({ format: "qcow2", virtualSizeBytes: 16 * 1024 * 1024 });
  });

  it("refuses to start a running domain with a state error", async () => {
    await expect(hv.start(name)).rejects.toMatchObject({ name: "DomainStateError" });
  });

  it("destroys the domain, seen as Stopped Destroyed; a second destroy is not an error", async () => {
    await hv.destroy(name);
    await seen(name, "Stopped", "Destroyed");
    expect(await hv.domainState(name)).toBe("shut off");
    await expect(hv.destroy(name)).resolves.toBeUndefined();
  });

  it("undefines the domain, seen as Undefined; then it is gone", async () => {
    await hv.undefine(name);
    await seen(name, "Undefined", "Removed");
    expect(await hv.getDomain(name)).toBeNull();
    expect(await hv.domainState(name)).toBeNull();
    expect((await hv.listDomains()).map((d) => d.name)).not.toContain(name);
    await expect(hv.undefine(name)).resolves.toBeUndefined();
  });

  it("says DomainNotFoundError for every operation on a missing domain", async () => {
    const missing = `drvtest-missing-${suffix}`;
    for (const op of [
      () => hv.start(missing),
      () => hv.shutdown(missing),
      () => hv.destroy(missing),
      () => hv.reboot(missing),
      () => hv.reset(missing),
      () => hv.setMetadata(missing, "{}"),
    ]) {
      const error = await op().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DomainNotFoundError);
      expect((error as DomainNotFoundError).domain).toBe(missing);
    }
  });

  it("runs a uefi domain on OVMF and removes its NVRAM on undefine", async () => {
    const uefi: DomainSpec = {
      ...spec,
      name: `${name}-uefi`,
      uuid: randomUUID(),
      firmware: "uefi",
      nvramPath: join(dir, "nvram.fd"),
      disks: [],
      nics: [],
      vnc: false,
      guestAgent: false,
      consoleLogPath: join(dir, "uefi-console.log"),
    };
    await hv.defineDomain(uefi);
    expect((await hv.getDomain(uefi.name))?.spec).toEqual(uefi);
    await hv.start(uefi.name);
    await access(uefi.nvramPath!);
    await hv.destroy(uefi.name);
    await hv.undefine(uefi.name);
    await expect(access(uefi.nvramPath!)).rejects.toThrow();
  });
});
