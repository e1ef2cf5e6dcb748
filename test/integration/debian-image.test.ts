/**
 * The Debian 12 cloud image on its own, without the agent or libvirt: QEMU (TCG) boots an
 * overlay of it with a config drive (ISO labelled config-2 on the IDE CD-ROM) made here;
 * cloud-init must take the hostname, the SSH key, the user data and the static address
 * from network_data.json, grow the root filesystem, and the guest agent must answer.
 * Networking is QEMU user mode with restrict=on: the guest reaches nothing, and the host
 * reaches only its sshd, through a forward on 127.0.0.1.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDebianImage, type DebianImage } from "../support/debian-image.js";
import { generateGuestKeyPair, sshExec, waitForSsh } from "../support/guest-ssh.js";
import { freePort } from "../support/agent-process.js";

const GUEST_IP = "10.0.2.50";
const GUEST_MAC = "52:54:00:cd:40:01";

/** Sends one QEMU guest agent command over its chardev socket and resolves with the first reply line. */
function qgaCommand(socketPath: string, command: object, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no guest agent reply within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on("connect", () => sock.write(`${JSON.stringify(command)}\n`));
    sock.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      const line = buf.split("\n").find((l) => l.includes('"return"') || l.includes('"error"'));
      if (line === undefined) return;
      clearTimeout(timer);
      sock.destroy();
      resolve(JSON.parse(line));
    });
  });
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${what} not within ${timeoutMs} ms (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

describe("the Debian 12 cloud image", () => {
  let image: DebianImage;
  let dir: string;
  let qemu: ResultPromise | undefined;
  let qemuExited = false;
  let serialLog: string;
  let qgaSocket: string;
  let port: number;
  const keys = generateGuestKeyPair("cdh-debian-image-test");
  const hostname = `cdh-deb-${randomBytes(3).toString("hex")}`;
  const marker = `cdh-marker-${randomUUID()}`;

  beforeAll(async () => {
    const t0 = Date.now();
    image = await ensureDebianImage({ verbose: true });
    console.log(`debian image ready in ${Date.now() - t0} ms (built ${image.manifest.builtAt} in ${image.manifest.buildSeconds} s)`);
    dir = await mkdtemp(join(tmpdir(), "cdh-debian-image-"));
    serialLog = join(dir, "serial.log");
    qgaSocket = join(dir, "qga.sock");
    port = await freePort();
  }, 1_900_000);

  afterAll(async () => {
    if (qemu && !qemuExited) {
      const pid = qemu.pid;
      qemu.kill("SIGKILL");
      if (pid !== undefined) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await Promise.race([qemu.catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
    }
    // CDH_TEST_KEEP_DIR=1 keeps the overlay, config drive and serial log for a post-mortem.
    if (dir && process.env.CDH_TEST_KEEP_DIR !== "1") await rm(dir, { recursive: true, force: true });
    else if (dir) console.log(`kept ${dir}`);
  });

  it("has a manifest that names the build script's hash, the kernel and cloud-init", async () => {
    const script = await readFile(new URL("../../scripts/build-debian-image.sh", import.meta.url));
    const { createHash } = await import("node:crypto");
    expect(image.manifest.inputsSha256).toBe(createHash("sha256").update(script).digest("hex"));
    expect(image.manifest.suite).toBe("bookworm");
    expect(image.manifest.kernelVersion).toMatch(/-cloud-amd64$/);
    expect(image.manifest.cloudInitVersion).toMatch(/^2\d\./);
    expect(image.manifest.files.map((f) => f.name)).toEqual(["debian12-cloud.raw", "debian12-cloud.qcow2"]);
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", image.qcow2])).stdout) as {
      format: string;
      "virtual-size": number;
    };
    expect(info.format).toBe("qcow2");
    expect(info["virtual-size"]).toBe(image.manifest.diskBytes);
  });

  it("boots under TCG, takes the config drive, and lets root in with the key", async () => {
    // Overlay larger than the image: cloud-init's growpart/resizefs must use the rest.
    const overlay = join(dir, "disk.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.qcow2, overlay, "4G"]);

    const drive = join(dir, "config-drive");
    await mkdir(join(drive, "openstack", "latest"), { recursive: true });
    const uuid = randomUUID();
    await writeFile(
      join(drive, "openstack", "latest", "meta_data.json"),
      JSON.stringify({
        uuid,
        name: hostname,
        hostname,
        availability_zone: "test",
        launch_index: 0,
        public_keys: { "cdh-test": keys.publicKey },
        meta: {},
      }),
    );
    await writeFile(
      join(drive, "openstack", "latest", "network_data.json"),
      JSON.stringify({
        links: [{ id: "tap0", type: "phy", ethernet_mac_address: GUEST_MAC, mtu: 1500 }],
        networks: [
          {
            id: "net0",
            type: "ipv4",
            link: "tap0",
            ip_address: GUEST_IP,
            netmask: "255.255.255.0",
            routes: [{ network: "0.0.0.0", netmask: "0.0.0.0", gateway: "10.0.2.2" }],
            network_id: randomUUID(),
          },
        ],
        services: [{ type: "dns", address: "10.0.2.3" }],
      }),
    );
    await writeFile(
      join(drive, "openstack", "latest", "user_data"),
      [
        "#cloud-config",
        "write_files:",
        "  - path: /var/lib/cdh-test/marker",
        "    permissions: '0644'",
        `    content: "${marker}\\n"`,
        "runcmd:",
        "  - [sh, -c, 'echo runcmd-ran > /var/lib/cdh-test/runcmd']",
        "",
      ].join("\n"),
    );
    const iso = join(dir, "config-drive.iso");
    await execa("genisoimage", ["-quiet", "-o", iso, "-V", "config-2", "-J", "-r", drive]);

    const start = Date.now();
    qemu = execa(
      "qemu-system-x86_64",
      [
        "-accel", "tcg",
        "-machine", "pc",
        "-m", "1024",
        "-smp", "2",
        "-nographic",
        "-monitor", "none",
        "-serial", `file:${serialLog}`,
        "-no-reboot",
        "-drive", `file=${overlay},if=virtio,format=qcow2,cache=unsafe`,
        "-drive", `file=${iso},if=ide,media=cdrom,format=raw,readonly=on`,
        "-netdev", `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${port}-${GUEST_IP}:22`,
        "-device", `virtio-net-pci,netdev=n0,mac=${GUEST_MAC}`,
        "-chardev", `socket,id=qga0,path=${qgaSocket},server=on,wait=off`,
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
      ],
      { stdin: "ignore", reject: false },
    );
    void qemu.then(() => {
      qemuExited = true;
    });

    const ready = await waitForSsh({
      host: "127.0.0.1",
      port,
      privateKey: keys.privateKey,
      username: "root",
      timeoutMs: 420_000,
      intervalMs: 2_000,
      // cloud-init may restart sshd while it runs (a connection then resets): wait for it
      // inside the retried login, not in a one-shot command after it.
      command: "cloud-init status --wait >/dev/null 2>&1; true",
      attemptTimeoutMs: 300_000,
      giveUp: () => (qemuExited ? "QEMU exited" : undefined),
    }).catch(async (err: Error) => {
      const tail = (await readFile(serialLog, "utf8").catch(() => "")).split("\n").slice(-60).join("\n");
      throw new Error(`${err.message}\n--- serial log tail ---\n${tail}`);
    });
    const bootToSsh = Date.now() - start;
    console.log(`boot to SSH with cloud-init done, under TCG: ${bootToSsh} ms (${ready.attempts} attempts)`);

    const run = async (command: string, timeoutMs = 60_000) => {
      const r = await sshExec({ host: "127.0.0.1", port, privateKey: keys.privateKey, username: "root", command, timeoutMs });
      expect(r.exitCode, `${command}: ${r.stderr}`).toBe(0);
      return r.stdout.trim();
    };

    const status = await run("cloud-init status --long >/tmp/ci-status; cat /tmp/ci-status", 60_000);
    expect(status).toMatch(/status: done/);
    expect(await run("cat /run/cloud-init/result.json")).toMatch(/DataSourceConfigDrive .*source=\/dev\/sr\d/);
    expect(await run("hostname")).toBe(hostname);
    expect(await run("cat /var/lib/cdh-test/marker")).toBe(marker);
    expect(await run("cat /var/lib/cdh-test/runcmd")).toBe("runcmd-ran");
    expect(await run("cat /etc/machine-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(await run("ls /etc/ssh/ssh_host_ed25519_key.pub")).toContain("ssh_host_ed25519_key.pub");
    expect(await run("passwd -S root | cut -d' ' -f2")).toBe("L");
    // The static address came from network_data.json (the SSH forward targets it, too).
    expect(await run("ip -4 -o addr show dev eth0")).toContain(`${GUEST_IP}/24`);
    expect(await run("ip -4 route show default")).toContain("via 10.0.2.2");
    // growpart + resize2fs took the 4 GiB overlay.
    const rootBytes = Number(await run("df -B1 --output=size / | tail -n 1"));
    expect(rootBytes).toBeGreaterThan(3.5 * 1024 ** 3);
    expect(await run("systemctl is-active qemu-guest-agent")).toBe("active");
    const ping = await waitFor("guest agent reply", 60_000, () => qgaCommand(qgaSocket, { execute: "guest-ping" }));
    expect(ping).toEqual({ return: {} });
    const failed = await run("systemctl --failed --no-legend --plain | cut -d' ' -f1");
    console.log(`failed units: ${failed || "(none)"}`);
    expect(failed).toBe("");
    const analyze = await sshExec({
      host: "127.0.0.1",
      port,
      privateKey: keys.privateKey,
      command: "systemd-analyze; systemd-analyze blame | head -n 12",
      timeoutMs: 60_000,
    });
    console.log(`guest boot timing:\n${analyze.stdout}`);

    const log = await readFile(serialLog, "utf8");
    expect(log).toMatch(/Linux version .*-cloud-amd64/);
    expect(log).toMatch(/DataSourceConfigDrive|Datasource DataSourceConfigDrive|config-2/);

    // Power off from inside; QEMU exits when the guest does.
    await sshExec({
      host: "127.0.0.1",
      port,
      privateKey: keys.privateKey,
      command: "systemd-run --on-active=1 systemctl poweroff",
      timeoutMs: 30_000,
    });
    const offStart = Date.now();
    await waitFor("QEMU exit after poweroff", 120_000, async () => (qemuExited ? true : undefined));
    console.log(`poweroff took ${Date.now() - offStart} ms`);
  }, 900_000);
});
