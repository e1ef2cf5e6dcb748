/**
 * A real Debian 12 guest with cloud-init, started through the official SDK: it comes up
 * with its hostname, static address, DNS, key and user data from the agent's config
 * drive; it reads its own ID from the metadata endpoint at 169.254.0.23; a password
 * reset reaches it live through qemu-guest-agent without changing its host keys; and
 * it cannot speak as another address, nor read a second guest's data.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { verifySha512Crypt } from "../../agent/logins/password.js";
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { monitorClient } from "../support/monitor-client.js";
import { ensureDebianImage } from "../support/debian-image.js";
import { generateGuestKeyPair, sshExec, waitForSsh } from "../support/guest-ssh.js";
import { ensureTinyImages } from "../support/tiny-image.js";
import { NetGuest } from "../support/guest-net.js";

/** The first line a TCP server sends, or undefined when it sends none within 3 s. */
function firstLine(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = connect(port, host);
    let buf = "";
    const done = (v: string | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), 3000);
    sock.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      if (buf.includes("\n")) done(buf.split("\n")[0]);
    });
    sock.on("error", () => done(undefined));
  });
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: nothing within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

const USER_DATA = "#!/bin/sh\necho cdh-user-data-ran > /root/user-data-marker\n";

describe("a Debian guest configured by the agent", () => {
  let agent: AgentProcess;
  let id: string;
  let ip: string;
  const key = generateGuestKeyPair("guest-config-test");
  const ssh = (command: string, timeoutMs = 60_000) => sshExec({ host: ip, port: 22, privateKey: key.privateKey, command, timeoutMs });

  /** Imports the public key and runs one instance with it and the user data; its ID. */
  const runWithKey = async (o: { imageId: string; instanceType: string; diskGiB: number; hostName: string; keyName: string; publicKey: string; userData: string }) => {
    const kp = await agent.client.ImportKeyPair({ KeyName: o.keyName, ProjectId: 0, PublicKey: o.publicKey });
    const run = await agent.client.RunInstances({
      InstanceType: o.instanceType,
      ImageId: o.imageId,
      SystemDisk: { DiskSize: o.diskGiB },
      HostName: o.hostName,
      LoginSettings: { KeyIds: [kp.KeyId!] },
      UserData: Buffer.from(o.userData).toString("base64"),
    });
    return run.InstanceIdSet![0]!;
  };
  /** Waits for RUNNING; the instance's private address. */
  const addressWhenRunning = async (instanceId: string) => {
    await waitForState(agent.client, instanceId, "RUNNING", 120_000);
    return (await agent.client.DescribeInstances({ InstanceIds: [instanceId] })).InstanceSet![0]!.PrivateIpAddresses![0]!;
  };

  beforeAll(async () => {
    const image = await ensureDebianImage();
    // The guest filesystem usage every 5 s (default 60): the last case reads it without a long wait.
    agent = await startAgentProcess({ repoRoot: inject("repoRoot"), env: { CDH_AGENT_MONITOR_GUEST_FS_INTERVAL_S: "5" } });
    const imported = await agent.client.ImportImage({
      ImageUrl: `file://${image.qcow2}`,
      ImageName: "debian12-cloud",
      OsType: "Debian",
      OsVersion: "12",
      Architecture: "x86_64",
    });
    const imageId = imported.ImageId!;
    for (let i = 0; i < 600; i++) {
      const d = await agent.client.DescribeImages({ ImageIds: [imageId] });
      if (d.ImageSet?.[0]?.ImageState === "NORMAL") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    id = await runWithKey({ imageId, instanceType: "CDH_2C2G", diskGiB: 4, hostName: "guest-one", keyName: "guest_config_test", publicKey: key.publicKey, userData: USER_DATA });
    ip = await addressWhenRunning(id);
    await waitForSsh({ host: ip, port: 22, privateKey: key.privateKey, timeoutMs: 300_000, command: "cloud-init status --wait >/dev/null; true" });
  }, 600_000);

  afterAll(async () => {
    await agent?.shutdown();
  }, 180_000);

  it("shows the address and key binding in DescribeInstances", async () => {
    const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(d.PrivateIpAddresses).toEqual([ip]);
    expect(ip).toMatch(/^10\.201\.0\.\d+$/);
    expect(d.LoginSettings?.KeyIds).toHaveLength(1);
    expect(d.VirtualPrivateCloud).toMatchObject({ VpcId: "vpc-default", SubnetId: "subnet-default" });
  });

  it("comes up with its hostname, user data, static address and DNS from the config drive", async () => {
    expect((await ssh("hostname")).stdout.trim()).toBe("guest-one");
    expect((await ssh("cat /root/user-data-marker")).stdout.trim()).toBe("cdh-user-data-ran");
    expect((await ssh("ip -4 -o addr show dev eth0")).stdout).toContain(`inet ${ip}/24`);
    expect((await ssh("ip -4 route show default")).stdout).toContain("via 10.201.0.1 dev eth0");
    const dns = (await ssh("cat /etc/systemd/network/*.network /run/systemd/network/*.network 2>/dev/null; cat /etc/resolv.conf")).stdout;
    expect(dns).toMatch(/DNS=10\.201\.0\.1|nameserver 10\.201\.0\.1/);
    // cloud-init names the datasource it used: the drive, read from the IDE CD-ROM.
    expect((await ssh("cat /run/cloud-init/result.json")).stdout).toMatch(/DataSourceConfigDrive.*source=\/dev\/sr0/);
  });

  it("reads its own instance ID from the metadata endpoint at 169.254.0.23", async () => {
    const out = await ssh("curl -s --max-time 10 http://169.254.0.23/latest/meta-data/instance-id");
    expect(out.stdout.trim()).toBe(id);
    const uuid = (await ssh("curl -s --max-time 10 http://169.254.169.254/openstack/latest/meta_data.json")).stdout;
    expect(JSON.parse(uuid)).toMatchObject({ hostname: "guest-one" });
  });

  it("serves cloud-init's own OpenStack and EC2 crawlers, run in the guest against the live endpoint", async () => {
    const script = [
      "import json",
      "from cloudinit.sources.helpers import openstack, ec2",
      "os_md = openstack.MetadataReader('http://169.254.169.254').read_v2()",
      "ec2_md = ec2.get_instance_metadata(api_version='2009-04-04', metadata_address='http://169.254.169.254')",
      "print(json.dumps({'os_uuid': os_md['metadata'].get('uuid'), 'os_host': os_md['metadata'].get('hostname'), 'ec2_id': ec2_md.get('instance-id'), 'ec2_ip': ec2_md.get('local-ipv4')}))",
    ].join("\n");
    const out = await ssh(`python3 - <<'PY'\n${script}\nPY`, 120_000);
    const read = JSON.parse(out.stdout.trim().split("\n").pop()!) as Record<string, string>;
    const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    // The EC2 tree names the instance by its UUID, as the OpenStack tree and the drive do (one
    // instance-id for cloud-init whichever datasource it reads); the Tencent tree by its ins- ID.
    expect(read).toEqual({ os_uuid: d.Uuid, os_host: "guest-one", ec2_id: d.Uuid, ec2_ip: ip });
  });

  it("answers bad requests from the guest with 4xx and keeps serving", async () => {
    const code = async (args: string) => (await ssh(`curl -s -o /dev/null -w '%{http_code}' --max-time 10 ${args}`)).stdout.trim();
    expect(await code("--path-as-is http://169.254.169.254/latest/meta-data/../../../etc/passwd")).toMatch(/^4\d\d$/);
    expect(await code("-X DELETE http://169.254.169.254/latest/meta-data/instance-id")).toBe("405");
    expect(await code("-X PATCH http://169.254.169.254/openstack/latest/meta_data.json")).toBe("405");
    const huge = "x".repeat(20_000);
    expect(await code(`-H 'X-Junk: ${huge}' http://169.254.169.254/latest/meta-data/instance-id`)).toMatch(/^4\d\d$/);
    expect(await code("http://169.254.169.254/latest/meta-data/no-such-key")).toBe("404");
    expect((await ssh("curl -s --max-time 10 http://169.254.169.254/latest/meta-data/instance-id")).stdout.trim()).toBe(id);
  });

  it("takes a new password live through the guest agent, keeping its host keys", async () => {
    const hostKey = (await ssh("cat /etc/ssh/ssh_host_ed25519_key.pub")).stdout;
    const before = (await ssh("getent shadow root | cut -d: -f2")).stdout.trim();
    await agent.client.ResetInstancesPassword({ InstanceIds: [id], Password: "Cdh-Agent-Pass1" });
    let after = before;
    for (let i = 0; i < 60 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      after = (await ssh("getent shadow root | cut -d: -f2")).stdout.trim();
    }
    expect(verifySha512Crypt("Cdh-Agent-Pass1", after)).toBe(true);
    expect(verifySha512Crypt("Cdh-Agent-Pass1", before)).toBe(false);
    await waitForState(agent.client, id, "RUNNING", 10_000);
    const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(d).toMatchObject({ LatestOperation: "ResetInstancesPassword", LatestOperationState: "SUCCESS" });
    expect((await ssh("cat /etc/ssh/ssh_host_ed25519_key.pub")).stdout).toBe(hostKey);
    expect((await ssh("cat /proc/uptime")).stdout).not.toBe(""); // still the same boot: ssh answered without a restart

    // The password itself logs in. Keys are bound, so the agent has turned sshd's password
    // login off (the seed's rule); the test turns it back on by hand to try the password.
    await ssh("printf 'PermitRootLogin yes\\nPasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/00-cdh-test.conf && systemctl reload ssh");
    try {
      const login = await waitForSsh({ host: ip, port: 22, password: "Cdh-Agent-Pass1", command: "id -un", timeoutMs: 30_000 });
      expect(login.stdout.trim()).toBe("root");
      await expect(sshExec({ host: ip, port: 22, password: "Not-The-Pass-1", command: "true", timeoutMs: 20_000 })).rejects.toThrow(/authentication/i);
    } finally {
      await ssh("rm -f /etc/ssh/sshd_config.d/00-cdh-test.conf && systemctl reload ssh");
      // sshd re-executes itself on reload: its port is closed for a moment.
      await waitForSsh({ host: ip, port: 22, privateKey: key.privateKey, timeoutMs: 30_000, intervalMs: 500 });
    }
  });

  it("cannot reach the metadata endpoint as another address", async () => {
    // The guest claims a second address; clean-traffic drops what it sends from it.
    const other = ip.replace(/\d+$/, (n) => String((Number(n) % 200) + 20));
    // The guest's own follower (cdh-netsync) keeps exactly the drive's addresses on its NICs and
    // would remove the forged one within a minute: it is paused while the guest forges.
    await ssh(`systemctl stop cdh-netsync && ip addr add ${other}/24 dev eth0`);
    try {
      const forged = await ssh(`curl -s --max-time 5 --interface ${other} http://169.254.0.23/latest/meta-data/instance-id; echo rc=$?`);
      expect(forged.stdout).not.toContain(id);
      expect(forged.stdout).toMatch(/rc=(7|28)\b/);
    } finally {
      await ssh(`ip addr del ${other}/24 dev eth0; systemctl start cdh-netsync`);
    }
  });

  it("cannot read a second guest's user data or keys, asking as itself or claiming that guest's address", async () => {
    const images = await ensureTinyImages();
    const tinyImage = await importImage(agent.client, images.raw.normal, "tiny-second-guest");
    const secret = `second-guest-secret-${randomBytes(6).toString("hex")}`;
    const otherKey = generateGuestKeyPair("second-guest");
    const second = await runWithKey({
      imageId: tinyImage,
      instanceType: "CDH_1C1G",
      diskGiB: 10,
      hostName: "guest-two",
      keyName: "second_guest",
      publicKey: otherKey.publicKey,
      userData: `#!/bin/sh\necho ${secret}\n`,
    });
    try {
      const secondIp = await addressWhenRunning(second);
      expect(secondIp).not.toBe(ip);
      // The data is there to be had: the second guest's own drive carries it.
      expect((await readFile(`${agent.dataDir}/instances/${second}/config.iso`)).includes(secret)).toBe(true);
      const keyBody = otherKey.publicKey.split(" ")[1]!;
      const paths = ["/latest/user-data", "/openstack/latest/user_data", "/openstack/latest/meta_data.json", "/latest/meta-data/public-keys/0/openssh-key", "/latest/meta-data/instance-id"];
      const fetchAll = (iface: string) => paths.map((p) => `curl -s --max-time 5 ${iface} http://169.254.0.23${p}; rc=$?; echo; echo rc=$rc`).join("; ");

      // Asking as itself, the first guest gets its own documents only.
      const own = await ssh(fetchAll(""));
      expect(own.stdout).toContain(id);
      expect(own.stdout).toContain("cdh-user-data-ran");
      expect(own.stdout).not.toContain(secret);
      expect(own.stdout).not.toContain(keyBody);
      expect(own.stdout).not.toContain(second);
      expect(own.stdout.match(/rc=0\b/g) ?? []).toHaveLength(paths.length);

      // Claiming the second guest's address: clean-traffic drops what it sends from it.
      // The follower is paused, as above, so the forged address stays for the whole check.
      await ssh(`systemctl stop cdh-netsync && ip addr add ${secondIp}/32 dev eth0`);
      try {
        const forged = await ssh(fetchAll(`--interface ${secondIp}`), 120_000);
        expect(forged.stdout).not.toContain(secret);
        expect(forged.stdout).not.toContain(keyBody);
        expect(forged.stdout).not.toContain(second);
        expect(forged.stdout.match(/rc=(7|28)\b/g) ?? []).toHaveLength(paths.length);
      } finally {
        await ssh(`ip addr del ${secondIp}/32 dev eth0; systemctl start cdh-netsync`);
      }
    } finally {
      await agent.client.TerminateInstances({ InstanceIds: [second] });
    }
  }, 300_000);

  it("in the default group, answers TCP 22 from a tiny guest on its subnet and not another port it listens on", async () => {
    // A server on 7001 that greets with a line; from the host (whose traffic to guests is not
    // filtered) it answers, so the tiny guest's refusal below is the default group's.
    await ssh(
      "cat >/root/greet.py <<'PY'\nimport socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" +
        "s.bind(('', 7001))\ns.listen(8)\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'CDH-TCP port=7001 id=debian\\n')\n    c.close()\nPY\n" +
        "setsid nohup python3 /root/greet.py >/dev/null 2>&1 </dev/null &",
    );
    const greeting = await waitFor("the greeting on 7001 from the host", 20_000, () => firstLine(ip, 7001));
    expect(greeting).toBe("CDH-TCP port=7001 id=debian");

    const images = await ensureTinyImages();
    const tinyImage = await importImage(agent.client, images.raw.normal, "tiny-sg-probe");
    const tiny = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: tinyImage, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
    let guest: NetGuest | undefined;
    try {
      await waitForState(agent.client, tiny, "RUNNING", 120_000);
      const set = (await agent.client.DescribeInstances({ InstanceIds: [id, tiny] })).InstanceSet!;
      // Both in the host's default group (the seeds' first template: inbound TCP 22, 80, 443, 3389, ICMP).
      const groupsOf = (instanceId: string) => set.find((i) => i.InstanceId === instanceId)!.SecurityGroupIds;
      expect(groupsOf(id)).toHaveLength(1);
      expect(groupsOf(tiny)).toEqual(groupsOf(id));
      guest = await NetGuest.open({ instanceId: tiny, consoleLog: `${agent.dataDir}/instances/${tiny}/console.log` });
      const ssh22 = await guest.probe({ proto: "tcp", to: ip, port: 22, timeoutMs: 2000 });
      expect(ssh22.ok).toBe(true);
      expect(ssh22.reply).toMatch(/^SSH-2\.0-OpenSSH/);
      // Dropped by the group (no answer at all), not refused by the guest.
      expect(await guest.probe({ proto: "tcp", to: ip, port: 7001, timeoutMs: 2000 })).toMatchObject({ ok: false, why: expect.stringMatching(/^why=timeout/) });
      expect((await guest.probe({ proto: "icmp", to: ip, timeoutMs: 2000 })).ok).toBe(true);
    } finally {
      guest?.close();
      await ssh("pkill -f /root/greet.py; true");
      await agent.client.TerminateInstances({ InstanceIds: [tiny] });
    }
  }, 300_000);

  it("makes an image with its logs and shell history cleared by the guest agent and its filesystems frozen for the copy", async () => {
    await ssh("echo 'secret-command --token x' > /root/.bash_history; echo cdh-log-line > /var/log/cdh-image-test.log; gzip -c /etc/hostname > /var/log/cdh-old.1.gz; sync");
    const made = await agent.client.CreateImage({ InstanceId: id, ImageName: "debian-cleaned", Sysprep: "TRUE" });
    const imageId = made.ImageId!;
    let state = "";
    for (let i = 0; i < 600 && state !== "NORMAL"; i++) {
      state = (await agent.client.DescribeImages({ ImageIds: [imageId] })).ImageSet![0]!.ImageState!;
      if (state === "CREATEFAILED") throw new Error("CreateImage failed");
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(state).toBe("NORMAL");
    // Cleared in the guest (the image is copied after the clean-up)...
    expect((await ssh("test -e /root/.bash_history && echo present || echo gone")).stdout.trim()).toBe("gone");
    expect((await ssh("stat -c %s /var/log/cdh-image-test.log")).stdout.trim()).toBe("0");
    expect((await ssh("test -e /var/log/cdh-old.1.gz && echo present || echo gone")).stdout.trim()).toBe("gone");
    // ...copied with the filesystems frozen by the guest agent, and thawed after: the guest writes again.
    const log = await readFile(agent.logFile, "utf8");
    expect(log).toMatch(new RegExp(`"imageId":"${imageId}","quiesce":"fsfreeze"`));
    expect((await ssh("touch /root/after-image && echo written", 20_000)).stdout.trim()).toBe("written");
    const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(d).toMatchObject({ InstanceState: "RUNNING", LatestOperation: "CreateImage", LatestOperationState: "SUCCESS" });
  });

  it("grows its system disk online; the guest sees the size at once and cloud-init's growpart grows the root filesystem at the next boot", async () => {
    const rootBefore = Number((await ssh("df -B1 --output=size / | tail -1")).stdout.trim());
    expect(rootBefore).toBeLessThan(5 * 1024 ** 3);
    await agent.client.ResizeInstanceDisks({ InstanceId: id, SystemDisk: { DiskSize: 14 }, ResizeOnline: true });
    let size = 0;
    for (let i = 0; i < 60 && size !== 14 * 1024 ** 3; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      size = Number((await ssh("lsblk -bdno SIZE /dev/vda")).stdout.trim());
    }
    expect(size).toBe(14 * 1024 ** 3); // the running guest's disk, without a reboot
    await agent.client.RebootInstances({ InstanceIds: [id] });
    await waitForState(agent.client, id, "RUNNING", 120_000);
    await waitForSsh({ host: ip, port: 22, privateKey: key.privateKey, timeoutMs: 300_000, command: "cloud-init status --wait >/dev/null; true" });
    const rootAfter = Number((await ssh("df -B1 --output=size / | tail -1")).stdout.trim());
    expect(rootAfter).toBeGreaterThan(12 * 1024 ** 3);
    const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
    expect(d.SystemDisk).toMatchObject({ DiskSize: 14 });
  }, 600_000);

  it("reports the guest's filesystem usage from its guest agent through GetMonitorData (CvmDiskUsage, CvmDiskUsageMax), following what the guest writes", async () => {
    const mon = monitorClient(agent.port);
    /** What df says in the guest: used over used + available of its block-device filesystems, each device once; and the fullest. */
    const dfUsage = async () => {
      const out = (await ssh("df -B1 --output=source,used,avail | tail -n +2")).stdout;
      const byDevice = new Map<string, [number, number]>();
      for (const line of out.trim().split("\n")) {
        const [source, used, avail] = line.trim().split(/\s+/);
        if (source?.startsWith("/dev/")) byDevice.set(source, [Number(used), Number(avail)]);
      }
      const all = [...byDevice.values()];
      const used = all.reduce((a, [u]) => a + u, 0);
      const total = all.reduce((a, [u, f]) => a + u + f, 0);
      return { usage: (used / total) * 100, fullest: Math.max(...all.map(([u, f]) => (u / (u + f)) * 100)) };
    };
    const latest = async (metric: string) => {
      const end = Math.floor(Date.now() / 1000);
      const r = await mon.GetMonitorData({
        Namespace: "QCE/CVM",
        MetricName: metric,
        Period: 10,
        StartTime: new Date((end - 60) * 1000).toISOString().replace(/\.\d{3}Z$/, "+00:00"),
        EndTime: new Date(end * 1000).toISOString().replace(/\.\d{3}Z$/, "+00:00"),
        Instances: [{ Dimensions: [{ Name: "InstanceId", Value: id }] }],
      });
      return r.DataPoints![0]!.Values!.at(-1);
    };
    /** Waits until the agent's latest points match df within 0.3 percentage points. */
    const matchesDf = async (what: string) => {
      let last = "";
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 2_000))) {
        const want = await dfUsage();
        const got = { usage: await latest("CvmDiskUsage"), fullest: await latest("CvmDiskUsageMax") };
        last = JSON.stringify({ want, got });
        if (got.usage !== undefined && got.fullest !== undefined && Math.abs(got.usage - want.usage) < 0.3 && Math.abs(got.fullest - want.fullest) < 0.3) return { want, got };
      }
      throw new Error(`${what}: CvmDiskUsage/CvmDiskUsageMax never matched df within 60 s; last ${last}`);
    };
    const before = await matchesDf("before");
    await ssh("fallocate -l 2G /root/cdh-fs-fill && sync");
    try {
      const after = await matchesDf("after a 2 GiB file");
      // 2 GiB of the 4 GiB disk (alone) or of the 14 GiB one (after the growpart case above).
      expect(after.got.usage! - before.got.usage!).toBeGreaterThan(10);
      // The seeds' name answers the same series.
      expect(await latest("disk_usage")).toBeCloseTo(after.got.usage!, 0);
    } finally {
      await ssh("rm -f /root/cdh-fs-fill");
    }
  }, 180_000);
});
