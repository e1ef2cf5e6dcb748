/**
 * The rescue system against the real libvirtd and QEMU (TCG): booted by direct kernel
 * boot with an instance's disks attached, it reports the disks and their first bytes,
 * takes root's password from the hash on the kernel command line (made by the agent's
 * own sha512Crypt) and lets root log in on the serial console with it, and no other.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha512Crypt } from "../../agent/logins/password.js";
import { ensureRescueImage, rescueCmdline, type RescueImage } from "../support/rescue-image.js";
import {
  markerText, parseRescueData, parseRescueReady, RESCUE_READY_PATTERN, waitForRescueData, waitForSerial,
} from "../support/serial.js";
import { ensureTinyImages, readDiskHead, writeDiskMarker } from "../support/tiny-image.js";

const URI = "qemu:///system";
const PREFIX = "cdhtest-rescue-";

function virsh(...args: string[]) {
  return execa("virsh", ["-c", URI, ...args], { timeout: 60_000 });
}

interface Disk {
  path: string;
  format: "raw" | "qcow2";
  target: string;
  serial: string;
}

function domainXml(o: { name: string; kernel: string; initrd: string; cmdline: string; disks: Disk[]; log: string; sock: string }): string {
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/'/g, "&apos;");
  return `<domain type='qemu'>
  <name>${o.name}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${esc(o.kernel)}</kernel>
    <initrd>${esc(o.initrd)}</initrd>
    <cmdline>${esc(o.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    ${o.disks
      .map(
        (d) => `<disk type='file' device='disk'>
      <driver name='qemu' type='${d.format}'/>
      <source file='${esc(d.path)}'/>
      <target dev='${d.target}' bus='virtio'/>
      <serial>${d.serial}</serial>
    </disk>`,
      )
      .join("\n    ")}
    <serial type='unix'>
      <source mode='bind' path='${esc(o.sock)}'/>
      <log file='${esc(o.log)}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='unix'><source mode='bind' path='${esc(o.sock)}'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** A line-oriented conversation with the guest's serial console over QEMU's unix socket. */
class SerialConsole {
  private buf = "";
  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (this.buf += chunk));
  }
  static async open(path: string): Promise<SerialConsole> {
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
    return new SerialConsole(socket);
  }
  /** Waits until the output since the last expect matches `pattern`; consumes through the match. */
  async expect(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.buf.match(pattern);
      if (m) {
        this.buf = this.buf.slice((m.index ?? 0) + m[0].length);
        return m;
      }
      if (Date.now() > deadline) throw new Error(`console: no ${String(pattern)} within ${timeoutMs} ms; got ${JSON.stringify(this.buf.slice(-600))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  send(text: string): void {
    this.socket.write(text);
  }
  close(): void {
    this.socket.destroy();
  }
}

describe("the rescue system", () => {
  let rescue: RescueImage;
  let work: string;
  let systemDisk: string;
  const defined: string[] = [];
  const runId = randomUUID().slice(0, 8);

  beforeAll(async () => {
    rescue = await ensureRescueImage();
    const tiny = await ensureTinyImages();
    work = await mkdtemp(join(tmpdir(), "cdhtest-rescue-"));
    await chmod(work, 0o777); // QEMU runs as libvirt-qemu and binds the console socket here
    // The instance's system disk: a bootable tiny image (MBR first), as an instance would have.
    systemDisk = join(work, "system.qcow2");
    await copyFile(tiny.qcow2Normal, systemDisk);
    await chmod(systemDisk, 0o666);
  });

  afterAll(async () => {
    for (const name of defined) {
      await virsh("destroy", name).catch(() => undefined);
      await virsh("undefine", name).catch(() => undefined);
    }
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function boot(tag: string, cmdline: string, disks: Disk[]) {
    const name = `${PREFIX}${tag}-${runId}`;
    const log = join(work, `${tag}-console.log`);
    const sock = join(work, `${tag}.sock`);
    const xml = join(work, `${tag}.xml`);
    await writeFile(xml, domainXml({ name, kernel: rescue.kernel, initrd: rescue.initrd, cmdline, disks, log, sock }));
    await virsh("define", xml);
    defined.push(name);
    const started = Date.now();
    await virsh("start", name);
    const ready = parseRescueReady((await waitForSerial(log, RESCUE_READY_PATTERN, { timeoutMs: 120_000 }))[0]);
    console.log(`rescue ${tag}: READY ${Date.now() - started} ms after virsh start`);
    return { name, log, sock, ready };
  }

  it("parses its READY and DATA lines and builds the command line it reads", () => {
    expect(parseRescueReady("CDH-RESCUE-READY disks=vda:131072:disk-sys,vdb:16:hex:20 root_password=set")).toEqual({
      list: [
        { name: "vda", sectors: 131072, serial: "disk-sys" },
        { name: "vdb", sectors: 16, serial: " " },
      ],
      disks: { vda: 131072, vdb: 16 },
      serials: { vda: "disk-sys", vdb: " " },
      rootPassword: "set",
    });
    expect(() => parseRescueReady("CDH-RESCUE-READY disks= root_password=maybe")).toThrow(/not a CDH-RESCUE-READY/);
    expect(parseRescueData("CDH-RESCUE-DATA vdb=hex:41420a").text).toBe("AB\n");
    expect(rescueCmdline({ rootHash: "$6$s$h", ip: "10.0.0.5/24", gateway: "10.0.0.1", dns: ["1.1.1.1", "8.8.8.8"] })).toBe(
      "console=tty1 console=ttyS0 quiet cdh.rescue_hash=$6$s$h cdh.ip=10.0.0.5/24 cdh.gw=10.0.0.1 cdh.dns=1.1.1.1,8.8.8.8",
    );
    expect(() => rescueCmdline({ rootHash: "$6$a b" })).toThrow();
  });

  it("boots with the instance's disks, shows their serials and first bytes, mounts nothing, and lets root in with the rescue password only", async () => {
    const data: Disk = { path: join(work, "data.qcow2"), format: "qcow2", target: "vdb", serial: `disk-r${runId}` };
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", data.path, "64M"]);
    const marker = `CDH-RESCUE-MARK-${runId}`;
    await writeDiskMarker(data.path, marker);
    await chmod(data.path, 0o666);
    const password = `Rz-${randomBytes(6).toString("base64url")}`;
    const hash = sha512Crypt(password);
    expect(hash).toMatch(/^\$6\$/);
    // Read on the host before QEMU locks the image: its MBR up to the first NUL.
    const vdaHead = markerText(await readDiskHead(systemDisk));
    expect(vdaHead.length).toBeGreaterThan(0);

    const g = await boot("main", rescueCmdline({ rootHash: hash }), [
      { path: systemDisk, format: "qcow2", target: "vda", serial: "disk-system" },
      data,
    ]);
    // The cmdline reached the guest with its '$' intact: the hash was accepted.
    expect(g.ready.rootPassword).toBe("set");
    expect(g.ready.serials).toEqual({ vda: "disk-system", vdb: data.serial });
    expect(g.ready.disks).toEqual({ vda: (64 << 20) / 512, vdb: (64 << 20) / 512 });
    expect(await waitForRescueData(g.log, "vdb", { timeoutMs: 10_000 })).toBe(marker);
    // The system disk reads the same in the guest as on the host.
    expect(await waitForRescueData(g.log, "vda", { timeoutMs: 10_000 })).toBe(vdaHead);

    const con = await SerialConsole.open(g.sock);
    try {
      con.send("\n");
      await con.expect(/login: $/m, 30_000);
      con.send("root\n");
      await con.expect(/Password: ?$/m);
      con.send("not-the-password\n");
      await con.expect(/Login incorrect/, 30_000);
      await con.expect(/login: $/m, 30_000);
      con.send("root\n");
      await con.expect(/Password: ?$/m);
      con.send(`${password}\n`);
      await con.expect(/rescue:.*# /, 30_000);
      con.send("echo CDH-LOGIN-$((6*7)) uid=$(id -u) vdmounts=$(grep -c '^/dev/vd' /proc/mounts)\n");
      const m = await con.expect(/CDH-LOGIN-42 uid=(\d+) vdmounts=(\d+)/);
      expect(m[1]).toBe("0");
      expect(m[2]).toBe("0"); // the rescue system mounts none of the instance's disks
      // The instance's filesystems are mountable by hand (FAT here; ext4 is built in, xfs/btrfs are modules).
      con.send("mount -o ro /dev/vda1 /mnt && ls /mnt && umount /mnt && echo CDH-MOUNT-OK\n");
      const listing = await con.expect(/CDH-MOUNT-OK/, 30_000);
      expect(listing.input).toContain("syslinux.cfg");
    } finally {
      con.close();
    }
    // virsh shutdown (ACPI) powers it off cleanly.
    await virsh("shutdown", g.name);
    const deadline = Date.now() + 30_000;
    while ((await virsh("domstate", g.name)).stdout.trim() !== "shut off") {
      if (Date.now() > deadline) throw new Error("rescue system ignored virsh shutdown for 30 s");
      await new Promise((r) => setTimeout(r, 300));
    }
  });

  it("without a valid sha512-crypt hash root stays locked and the guest says so", async () => {
    const disk = join(work, "nohash.qcow2");
    await copyFile(systemDisk, disk);
    await chmod(disk, 0o666);
    const g = await boot("nohash", rescueCmdline({ rootHash: "$1$md5salt$notsha512" }), [
      { path: disk, format: "qcow2", target: "vda", serial: "disk-system" },
    ]);
    expect(g.ready.rootPassword).toBe("unset");
    await waitForSerial(g.log, /CDH-RESCUE-WARNING cdh.rescue_hash is not a sha512-crypt hash/, { timeoutMs: 1_000 });
    expect((await readFile(g.log, "utf8")).includes("notsha512")).toBe(false); // the hash is not echoed
    await virsh("destroy", g.name);
  });
});
