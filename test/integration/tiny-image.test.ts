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
import { ensureTinyImages, type TinyImages, type TinyMode } from "../support/tiny-image.js";
import { parseTinyReady, serialLogSize, TINY_READY_PATTERN, waitForSerial } from "../support/serial.js";

const URI = "qemu:///system";
const PREFIX = "tinytest-";

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

function domainXml(g: Guest, disk: string): string {
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
    work = await mkdtemp(join(tmpdir(), "tinytest-"));
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
  async function boot(mode: TinyMode) {
    const g: Guest = {
      name: `${PREFIX}${mode}-${runId}`,
      uuid: randomUUID(),
      serial: `SN-${mode}-${runId}`,
      log: join(work, `${mode}-console.log`),
    };
    const disk = join(work, `${mode}.raw`);
    await copyFile(images.raw[mode], disk);
    await chmod(disk, 0o644);
    const xmlPath = join(work, `${mode}.xml`);
    await writeFile(xmlPath, domainXml(g, disk));
    await virsh("define", xmlPath);
    defined.push(g.name);
    const started = Date.now();
    await virsh("start", g.name);
    const match = await waitForSerial(g.log, TINY_READY_PATTERN, { timeoutMs: 90_000 });
    const bootMs = Date.now() - started;
    console.log(`tiny ${mode} guest: READY ${bootMs} ms after virsh start`);
    return { g, ready: parseTinyReady(match[0]), bootMs };
  }

  it("parses a READY line and rejects anything else", () => {
    const r = parseTinyReady(
      "CDH-TINY-READY mode=normal vcpus=2 memtotal_kb=223376 uuid=abc serial=SN-1 disks=vda:131072,vdb:20971520",
    );
    expect(r).toEqual({
      mode: "normal", vcpus: 2, memtotalKb: 223376, uuid: "abc", serial: "SN-1",
      disks: { vda: 131072, vdb: 20971520 },
    });
    expect(parseTinyReady("CDH-TINY-READY mode=noacpi vcpus=1 memtotal_kb=1 uuid= serial= disks=").disks).toEqual({});
    expect(() => parseTinyReady("CDH-TINY-POWEROFF")).toThrow(/not a CDH-TINY-READY line/);
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
});
