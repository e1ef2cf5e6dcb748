/**
 * The tiny guest image against the real libvirtd and QEMU (TCG): it boots, reports what
 * it was given, and each mode reacts to power requests the way tests rely on.
 */
import { randomUUID } from "node:crypto";
import { chmod, copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ensureTinyImages, readDiskMarker, writeDiskMarker, type TinyImages, type TinyMode,
} from "../support/tiny-image.js";
import {
  parseTinyData, parseTinyDisks, parseTinyReady, serialLogSize, TINY_READY_PATTERN,
  waitForDisks, waitForSerial, waitForTinyData,
} from "../support/serial.js";

const URI = "qemu:///system";
const PREFIX = "cdhtest-tiny-";

function virsh(...args: string[]) {
  return execa("virsh", ["-c", URI, ...args], { timeout: 60_000 });
}

async function domState(name: string): Promise<string> {
  return (await virsh("domstate", name)).stdout.trim();
}

async function waitForState(name: string, state: string, timeoutMs: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    if ((await domState(name)) === state) return Date.now() - start;
    if (Date.now() - start > timeoutMs) {
      throw new Error(`${name} did not reach "${state}" within ${timeoutMs} ms (now "${await domState(name)}")`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Guest {
  name: string;
  uuid: string;
  serial: string;
  log: string;
}

interface DataDisk {
  path: string;
  format: "raw" | "qcow2";
  target: string;
  serial: string;
}

function diskXml(d: DataDisk): string {
  return `<disk type='file' device='disk'>
      <driver name='qemu' type='${d.format}'/>
      <source file='${d.path}'/>
      <target dev='${d.target}' bus='virtio'/>
      <serial>${d.serial}</serial>
    </disk>`;
}

function domainXml(g: Guest, disk: string, dataDisks: DataDisk[] = []): string {
  return `<domain type='qemu'>
  <name>${g.name}</name>
  <uuid>${g.uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <sysinfo type='smbios'>
    <system><entry name='serial'>${g.serial}</entry></system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    ${dataDisks.map(diskXml).join("\n    ")}
    <serial type='pty'>
      <log file='${g.log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <input type='keyboard' bus='ps2'/>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

describe("the tiny guest image", () => {
  let images: TinyImages;
  let work: string;
  const defined: string[] = [];
  const runId = randomUUID().slice(0, 8);

  beforeAll(async () => {
    images = await ensureTinyImages();
    work = await mkdtemp(join(tmpdir(), "cdhtest-tiny-"));
    await chmod(work, 0o755); // QEMU runs as libvirt-qemu
  });

  afterAll(async () => {
    for (const name of defined) {
      await virsh("destroy", name).catch(() => undefined);
      await virsh("undefine", name).catch(() => undefined);
    }
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Defines and starts a guest on a private copy of the mode's raw image; returns when READY. */
  async function boot(mode: TinyMode, dataDisks: DataDisk[] = [], tag: string = mode) {
    const g: Guest = {
      name: `${PREFIX}${tag}-${runId}`,
      uuid: randomUUID(),
      serial: `SN-${mode}-${runId}`,
      log: join(work, `${tag}-console.log`),
    };
    const disk = join(work, `${tag}.raw`);
    await copyFile(images.raw[mode], disk);
    await chmod(disk, 0o644);
    const xmlPath = join(work, `${tag}.xml`);
    await writeFile(xmlPath, domainXml(g, disk, dataDisks));
    await virsh("define", xmlPath);
    defined.push(g.name);
    const started = Date.now();
    await virsh("start", g.name);
    const match = await waitForSerial(g.log, TINY_READY_PATTERN, { timeoutMs: 90_000 });
    const bootMs = Date.now() - started;
    console.log(`tiny ${mode} guest: READY ${bootMs} ms after virsh start`);
    return { g, ready: parseTinyReady(match[0]), bootMs };
  }

  it("parses READY, DISKS and DATA lines (old and new disk entries, hex words) and rejects anything else", () => {
    const r = parseTinyReady(
      "CDH-TINY-READY mode=normal vcpus=2 memtotal_kb=223376 uuid=abc serial=SN-1 disks=vda:131072:,vdb:20971520:disk-1a2b",
    );
    expect(r).toEqual({
      mode: "normal", vcpus: 2, memtotalKb: 223376, uuid: "abc", serial: "SN-1",
      disks: { vda: 131072, vdb: 20971520 },
      serials: { vda: "", vdb: "disk-1a2b" },
      list: [
        { name: "vda", sectors: 131072, serial: "" },
        { name: "vdb", sectors: 20971520, serial: "disk-1a2b" },
      ],
    });
    // Entries without a serial (the line before serials were added) still parse.
    expect(parseTinyReady("CDH-TINY-READY mode=noacpi vcpus=1 memtotal_kb=1 uuid= serial= disks=vda:8").serials).toEqual({ vda: "" });
    expect(parseTinyReady("CDH-TINY-READY mode=noacpi vcpus=1 memtotal_kb=1 uuid= serial= disks=").disks).toEqual({});
    expect(() => parseTinyReady("CDH-TINY-POWEROFF")).toThrow(/not a CDH-TINY-READY line/);
    expect(() => parseTinyReady("CDH-TINY-READY mode=n vcpus=1 memtotal_kb=1 uuid= serial= disks=sda:1")).toThrow(/bad disk entry/);
    // The console shell's prompt can precede a line.
    expect(parseTinyDisks("/ # \u001b[6nCDH-TINY-DISKS disks=vda:8:,vdc:16:hex:686f743a78").serials).toEqual({ vda: "", vdc: "hot:x" });
    expect(parseTinyData("CDH-TINY-DATA vdb=CDH-MARK-1 vdc=hex:68656c6c6f20776f726c64 vdd=")).toEqual({
      vdb: "CDH-MARK-1", vdc: "hello world", vdd: "",
    });
    expect(parseTinyData("CDH-TINY-DATA")).toEqual({});
    expect(() => parseTinyData("CDH-TINY-DATA vdb=a b")).toThrow();
    expect(() => parseTinyData("CDH-TINY-DATA vdb=hex:zz")).toThrow(/bad hex word/);
  });

  it("disk markers written with qemu-io read back through qemu-img, in qcow2 and raw", async () => {
    const qcow2 = join(work, "marker.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", qcow2, "8M"]);
    await writeDiskMarker(qcow2, "CDH-MARK-qcow2");
    expect(await readDiskMarker(qcow2)).toBe("CDH-MARK-qcow2");
    const raw = join(work, "marker.raw");
    await writeFile(raw, Buffer.alloc(1 << 20, 0x41));
    await writeDiskMarker(raw, "short");
    expect(await readDiskMarker(raw, { format: "raw" })).toBe("short"); // stops at the NUL, not at the A's
    expect(await readDiskMarker(qcow2.replace("marker", "absent")).catch((e: Error) => e.message)).toMatch(/absent/);
  });

  it("waitForSerial gives up with the end of the log when nothing matches", async () => {
    const log = join(work, "never.log");
    await writeFile(log, "booting\nstill booting\n");
    await expect(waitForSerial(log, /CDH-TINY-READY/, { timeoutMs: 300 })).rejects.toThrow(/still booting/);
    await expect(waitForSerial(join(work, "absent.log"), /x/, { timeoutMs: 200 })).rejects.toThrow(/within 200 ms/);
  });

  it("a normal guest reports its 2 vCPUs, about 256 MiB, its UUID, SMBIOS serial and disk, survives virsh reboot and obeys virsh shutdown within 30 s", async () => {
    const { g, ready } = await boot("normal");
    expect(ready.mode).toBe("normal");
    expect(ready.vcpus).toBe(2);
    expect(ready.memtotalKb).toBeGreaterThan(180 * 1024);
    expect(ready.memtotalKb).toBeLessThanOrEqual(256 * 1024);
    expect(ready.uuid.toLowerCase()).toBe(g.uuid);
    expect(ready.serial).toBe(g.serial);
    expect(ready.disks).toEqual({ vda: (64 * 1024 * 1024) / 512 });
    expect(ready.serials).toEqual({ vda: "" });

    const beforeReboot = await serialLogSize(g.log);
    await virsh("reboot", g.name);
    await waitForSerial(g.log, /CDH-TINY-POWEROFF/, { fromOffset: beforeReboot, timeoutMs: 30_000 });
    await waitForSerial(g.log, TINY_READY_PATTERN, { fromOffset: beforeReboot, timeoutMs: 90_000 });
    expect(await domState(g.name)).toBe("running");

    const beforeShutdown = await serialLogSize(g.log);
    await virsh("shutdown", g.name);
    const ms = await waitForState(g.name, "shut off", 30_000);
    await waitForSerial(g.log, /CDH-TINY-POWEROFF/, { fromOffset: beforeShutdown, timeoutMs: 1_000 });
    console.log(`tiny normal guest: shut off ${ms} ms after virsh shutdown`);
  });

  it("a noacpi guest ignores virsh shutdown for 10 s and powers off on SysRq-O sent as keys", async () => {
    const { g, ready } = await boot("noacpi");
    expect(ready.mode).toBe("noacpi");
    const before = await serialLogSize(g.log);
    await virsh("shutdown", g.name);
    await waitForSerial(g.log, /CDH-TINY-ACPI-IGNORED/, { fromOffset: before, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 10_000));
    expect(await domState(g.name)).toBe("running");

    await virsh("send-key", g.name, "KEY_LEFTALT", "KEY_SYSRQ", "KEY_O");
    const ms = await waitForState(g.name, "shut off", 30_000);
    console.log(`tiny noacpi guest: shut off ${ms} ms after SysRq-O`);
  });

  it("a selfoff guest powers itself off about 15 s after READY", async () => {
    const { g, ready } = await boot("selfoff");
    expect(ready.mode).toBe("selfoff");
    const readyAt = Date.now();
    await waitForSerial(g.log, /CDH-TINY-POWEROFF/, { timeoutMs: 40_000 });
    await waitForState(g.name, "shut off", 15_000);
    expect(Date.now() - readyAt).toBeGreaterThanOrEqual(13_000);
  });

  it("a guest sees its data disk's serial and marker, a hot-attached disk, its online resize and its detach", async () => {
    const vdb: DataDisk = { path: join(work, "vdb.qcow2"), format: "qcow2", target: "vdb", serial: `disk-b${runId}` };
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", vdb.path, "32M"]);
    const markerB = `CDH-MARK-vdb-${runId}`;
    await writeDiskMarker(vdb.path, markerB);
    await chmod(vdb.path, 0o666);
    const vdc: DataDisk = { path: join(work, "vdc.raw"), format: "raw", target: "vdc", serial: `disk-c${runId}` };
    await writeFile(vdc.path, Buffer.alloc(8 << 20));
    const markerC = `hot plugged ${runId}`; // a space: the guest prints it as hex
    await writeDiskMarker(vdc.path, markerC);
    await chmod(vdc.path, 0o666);

    const { g, ready } = await boot("normal", [vdb], "disks");
    expect(ready.disks).toEqual({ vda: (64 << 20) / 512, vdb: (32 << 20) / 512 });
    expect(ready.serials).toEqual({ vda: "", vdb: vdb.serial });
    expect(await waitForTinyData(g.log, () => true, { timeoutMs: 10_000 })).toEqual({ vdb: markerB });

    let before = await serialLogSize(g.log);
    const attachXml = join(work, "vdc.xml");
    await writeFile(attachXml, diskXml(vdc));
    await virsh("attach-device", g.name, attachXml, "--live");
    let t = Date.now();
    const attached = await waitForDisks(g.log, (d) => d.serials.vdc === vdc.serial && d.disks.vdc === (8 << 20) / 512, {
      fromOffset: before, timeoutMs: 60_000,
    });
    console.log(`tiny guest: hot-attached vdc seen after ${Date.now() - t} ms`);
    expect(attached.disks).toEqual({ vda: (64 << 20) / 512, vdb: (32 << 20) / 512, vdc: (8 << 20) / 512 });
    await waitForTinyData(g.log, (d) => d.vdc === markerC && d.vdb === markerB, { fromOffset: before, timeoutMs: 10_000 });

    before = await serialLogSize(g.log);
    await virsh("blockresize", g.name, "vdc", "24M");
    t = Date.now();
    await waitForDisks(g.log, (d) => d.disks.vdc === (24 << 20) / 512, { fromOffset: before, timeoutMs: 30_000 });
    console.log(`tiny guest: online resize of vdc seen after ${Date.now() - t} ms`);

    before = await serialLogSize(g.log);
    await virsh("detach-device", g.name, attachXml, "--live");
    t = Date.now();
    const detached = await waitForDisks(g.log, (d) => !("vdc" in d.disks), { fromOffset: before, timeoutMs: 60_000 });
    console.log(`tiny guest: detach of vdc seen after ${Date.now() - t} ms`);
    expect(detached.serials).toEqual({ vda: "", vdb: vdb.serial });
    // Libvirt agrees once QEMU has reported the device deleted.
    for (let i = 0; i < 50 && (await virsh("domblklist", g.name)).stdout.includes(vdc.path); i++) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await virsh("domblklist", g.name)).stdout).not.toContain(vdc.path);
    await virsh("destroy", g.name);
  });
});
