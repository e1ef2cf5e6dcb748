/**
 * DHCP with fixed leases (README "DHCP", agent/network/dhcp): a tiny guest's DHCP client gets
 * exactly its own address with the gateway, DNS, host name and the classless routes (121 and
 * 249) to the metadata addresses; a MAC the agent does not know gets nothing (a port of the
 * bridge the firewall does not guard, so it is dnsmasq that refuses); the dnsmasq survives a
 * SIGKILL of the agent and is adopted, not doubled, by the next one; a stopped instance's NIC
 * keeps its lease, an ENI attached to it gets one and loses it on detach, and a terminated
 * instance's lease is gone at once. Then the Debian guest, from an image
 * tagged cdh:config-drive=none (no drive at all), is configured by cloud-init's OpenStack
 * datasource over DHCP and the metadata endpoint alone: its address, host name, key and user
 * data.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { listDnsmasq, pidFileOf } from "../../agent/network/dhcp/dnsmasq.js";
import { importImage, startAgentProcess, TEST_BRIDGE, TEST_GATEWAY, vpcClient, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureDebianImage } from "../support/debian-image.js";
import { GuestConsole } from "../support/guest-console.js";
import { generateGuestKeyPair, sshExec, waitForSsh } from "../support/guest-ssh.js";
import { TINY_READY_PATTERN, waitForSerial } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";

/** What a DHCP client was given (busybox udhcpc's script variables), or undefined: no lease. */
interface Lease {
  ip: string;
  mask: string;
  router: string;
  dns: string;
  host: string;
  routes: string;
  ms: string;
}

/** The udhcpc script: on `bound`, one line with what the lease gave. */
const UDHCPC_SCRIPT =
  '#!/bin/sh\ncase "$1" in bound) echo "CDH-DHCP ip=$ip mask=$subnet router=$router dns=$(echo $dns | tr " " ,) host=$hostname routes=$(echo $staticroutes | tr " " ,) ms=$(echo $msstaticroutes | tr " " ,)" ;; esac\nexit 0\n';
const UDHCPC_ARGS = "-f -q -n -t 3 -T 2 -O staticroutes -O msstaticroutes -O hostname";

function parseLease(text: string): Lease | undefined {
  const m = /CDH-DHCP ip=([\d.]+) mask=(\S*) router=(\S*) dns=(\S*) host=(\S*) routes=(\S*) ms=(\S*)/.exec(text);
  if (!m) return undefined;
  return { ip: m[1]!, mask: m[2]!, router: m[3]!, dns: m[4]!, host: m[5]!, routes: m[6]!, ms: m[7]! };
}

/** The routes every lease of the test subnet carries (option 121 and 249 alike). */
const ROUTES = `169.254.169.254/32,${TEST_GATEWAY},169.254.0.23/32,${TEST_GATEWAY},0.0.0.0/0,${TEST_GATEWAY}`;

describe("DHCP with fixed leases", () => {
  let agent: AgentProcess;
  let scratch: string;
  const veth = { bridgeSide: `dhv${process.pid % 10000}a`, clientSide: `dhv${process.pid % 10000}b` };

  const pidFile = () => join(agent.dataDir, "dhcp", "subnet-default", "cdh-dhcp.pid");
  const dnsmasqLog = () => readFile(join(agent.dataDir, "dhcp", "subnet-default", "dnsmasq.log"), "utf8");
  /** Every dnsmasq on the machine started with this agent's subnet pid file. */
  const oursRunning = async () => (await listDnsmasq()).filter((p) => pidFileOf(p.argv) === pidFile()).map((p) => p.pid);

  /** A DHCP client on a veth whose other end is a port of the subnet's bridge, with `mac`. */
  const leaseOnVeth = async (mac: string): Promise<Lease | undefined> => {
    await execa("ip", ["link", "set", veth.clientSide, "down"]);
    await execa("ip", ["link", "set", veth.clientSide, "address", mac]);
    await execa("ip", ["link", "set", veth.clientSide, "up"]);
    const r = await execa("busybox", ["udhcpc", "-i", veth.clientSide, ...UDHCPC_ARGS.split(" "), "-s", join(scratch, "udhcpc.sh")], { reject: false, timeout: 30_000 });
    return parseLease(r.stdout);
  };

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "cdh-dhcp-"));
    await writeFile(join(scratch, "udhcpc.sh"), UDHCPC_SCRIPT);
    await chmod(join(scratch, "udhcpc.sh"), 0o755);
    await execa("ip", ["link", "del", veth.bridgeSide], { reject: false });
    await execa("ip", ["link", "add", veth.bridgeSide, "type", "veth", "peer", "name", veth.clientSide]);
    agent = await startAgentProcess({ repoRoot: inject("repoRoot") });
    await execa("ip", ["link", "set", veth.bridgeSide, "master", TEST_BRIDGE, "up"]);
  }, 120_000);

  afterAll(async () => {
    await execa("ip", ["link", "del", veth.bridgeSide], { reject: false });
    if (agent) {
      const file = pidFile();
      await agent.shutdown();
      // An agent that stops cleanly takes its dnsmasq with it.
      expect((await listDnsmasq()).filter((p) => pidFileOf(p.argv) === file)).toEqual([]);
    }
    await rm(scratch, { recursive: true, force: true });
  }, 240_000);

  describe("a tiny guest and a port the agent does not know", () => {
    let id: string;
    let ip: string;
    let mac: string;

    beforeAll(async () => {
      const images = await ensureTinyImages();
      const img = await importImage(agent.client, images.raw.normal, "tiny-dhcp");
      id = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: img, SystemDisk: { DiskSize: 1 } })).InstanceIdSet![0]!;
      await waitForState(agent.client, id, "RUNNING");
      await waitForSerial(`${agent.dataDir}/instances/${id}/console.log`, TINY_READY_PATTERN, { timeoutMs: 60_000 });
      const d = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
      ip = d.PrivateIpAddresses![0]!;
      const { stdout } = await execa("virsh", ["-c", "qemu:///system", "domiflist", id]);
      mac = /([0-9a-f]{2}(?::[0-9a-f]{2}){5})/.exec(stdout)![1]!;
    }, 180_000);

    it("serves the subnet's bridge only, from one dnsmasq", async () => {
      expect(await oursRunning()).toHaveLength(1);
      expect(await dnsmasqLog()).toContain(`DHCP, sockets bound exclusively to interface ${TEST_BRIDGE}`);
    });

    it("gives the guest exactly its address, the gateway, DNS, its host name and the routes to the metadata addresses", async () => {
      const con = await GuestConsole.open(id);
      try {
        const script = UDHCPC_SCRIPT.replace(/\n/g, "\\n");
        await con.run(`printf '${script}' >/tmp/cdh-dhcp.sh; chmod 755 /tmp/cdh-dhcp.sh`);
        const out = await con.run(`busybox udhcpc -i eth0 ${UDHCPC_ARGS} -s /tmp/cdh-dhcp.sh 2>/dev/null`, 30_000);
        expect(parseLease(out)).toEqual({ ip, mask: "255.255.255.0", router: TEST_GATEWAY, dns: TEST_GATEWAY, host: id, routes: ROUTES, ms: ROUTES });
      } finally {
        con.close();
      }
    }, 60_000);

    it("gives nothing to a MAC it does not know, even past the firewall", async () => {
      const stranger = `52:54:00:${randomBytes(3).toString("hex").match(/../g)!.join(":")}`;
      expect(await leaseOnVeth(stranger)).toBeUndefined();
      expect(await dnsmasqLog()).toMatch(new RegExp(`DHCPDISCOVER\\(${TEST_BRIDGE}\\) ${stranger} ignored`));
    }, 60_000);

    it("keeps serving through a SIGKILL of the agent; the next agent adopts that dnsmasq, no second one", async () => {
      const [before] = await oursRunning();
      expect(before).toBeGreaterThan(0);
      await agent.kill("SIGKILL");
      expect(await oursRunning()).toEqual([before]);
      agent = await agent.restart();
      // The new agent says it adopted it (its DHCP start runs beside the rest of its start-up).
      const deadline = Date.now() + 30_000;
      while (!(await readFile(agent.logFile, "utf8")).includes("DHCP: adopted the running dnsmasq")) {
        if (Date.now() > deadline) throw new Error("the restarted agent did not adopt the running dnsmasq within 30 s");
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(await oursRunning()).toEqual([before]);
      expect(Number((await readFile(pidFile(), "utf8")).trim())).toBe(before);
    }, 120_000);

    it("keeps a stopped instance's lease, follows an ENI attached and detached, drops a terminated instance's at once", async () => {
      await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
      await waitForState(agent.client, id, "STOPPED");
      // The guest's tap is gone; its MAC on another port of the bridge gets its lease.
      expect((await leaseOnVeth(mac))?.ip).toBe(ip);
      // An ENI attached to it (added to its definition) has a lease of its own from then on
      // (no host name: that is the first NIC's), and none once detached.
      const vpc = vpcClient(agent.port);
      const created = (await vpc.CreateNetworkInterface({ VpcId: "vpc-default", SubnetId: "subnet-default", NetworkInterfaceName: "dhcp-eni" })).NetworkInterface!;
      const eni = { id: created.NetworkInterfaceId!, mac: created.MacAddress!.toLowerCase(), ip: created.PrivateIpAddressSet![0]!.PrivateIpAddress! };
      expect(await leaseOnVeth(eni.mac)).toBeUndefined();
      await vpc.AttachNetworkInterface({ NetworkInterfaceId: eni.id, InstanceId: id });
      expect(await leaseOnVeth(eni.mac)).toMatchObject({ ip: eni.ip, host: "", router: TEST_GATEWAY, routes: ROUTES });
      await vpc.DetachNetworkInterface({ NetworkInterfaceId: eni.id, InstanceId: id });
      expect(await leaseOnVeth(eni.mac)).toBeUndefined();
      await vpc.DeleteNetworkInterface({ NetworkInterfaceId: eni.id });
      await agent.client.TerminateInstances({ InstanceIds: [id] });
      const deadline = Date.now() + 120_000;
      while ((await agent.client.DescribeInstances({ InstanceIds: [id] })).TotalCount !== 0) {
        if (Date.now() > deadline) throw new Error(`${id} was not gone within 120 s`);
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(await leaseOnVeth(mac)).toBeUndefined();
      expect(await oursRunning()).toHaveLength(1);
    }, 240_000);
  });

  describe("a Debian guest without a config drive", () => {
    const key = generateGuestKeyPair("dhcp-test");
    let id: string;
    let ip: string;
    const ssh = (command: string) => sshExec({ host: ip, port: 22, privateKey: key.privateKey, command, timeoutMs: 60_000 });

    beforeAll(async () => {
      const image = await ensureDebianImage();
      const imported = await agent.client.ImportImage({
        ImageUrl: `file://${image.qcow2}`,
        ImageName: "debian12-no-drive",
        OsType: "Debian",
        OsVersion: "12",
        Architecture: "x86_64",
        TagSpecification: [{ ResourceType: "image", Tags: [{ Key: "cdh:config-drive", Value: "none" }] }],
      });
      const imageId = imported.ImageId!;
      for (let i = 0; i < 600; i++) {
        const d = await agent.client.DescribeImages({ ImageIds: [imageId] });
        if (d.ImageSet?.[0]?.ImageState === "NORMAL") break;
        await new Promise((r) => setTimeout(r, 500));
      }
      const kp = await agent.client.ImportKeyPair({ KeyName: "dhcp_test", ProjectId: 0, PublicKey: key.publicKey });
      const run = await agent.client.RunInstances({
        InstanceType: "CDH_2C2G",
        ImageId: imageId,
        SystemDisk: { DiskSize: 4 },
        HostName: "dhcp-guest",
        LoginSettings: { KeyIds: [kp.KeyId!] },
        UserData: Buffer.from("#!/bin/sh\necho cdh-dhcp-user-data > /root/user-data-marker\n").toString("base64"),
      });
      id = run.InstanceIdSet![0]!;
      await waitForState(agent.client, id, "RUNNING", 120_000);
      ip = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!.PrivateIpAddresses![0]!;
      try {
        await waitForSsh({ host: ip, port: 22, privateKey: key.privateKey, timeoutMs: 300_000, command: "cloud-init status --wait >/dev/null; true" });
      } catch (error) {
        // What the guest printed says where it stopped (the instance and its log go at shutdown).
        const consoleLog = await readFile(`${agent.dataDir}/instances/${id}/console.log`, "utf8").catch(() => "(no console log)");
        throw new Error(`${(error as Error).message}\n--- the guest's console, last 80 lines ---\n${consoleLog.split("\n").slice(-80).join("\n")}`);
      }
    }, 480_000);

    it("has no config drive: its CD-ROM is empty", async () => {
      const { stdout } = await execa("virsh", ["-c", "qemu:///system", "domblklist", id]);
      expect(stdout).toMatch(/^\s*hdc\s+-\s*$/m);
      expect(await readFile(`${agent.dataDir}/instances/${id}/config.iso`).catch(() => undefined)).toBeUndefined();
    });

    it("took its address by DHCP, from the agent's fixed lease", async () => {
      const { stdout } = await execa("virsh", ["-c", "qemu:///system", "domiflist", id]);
      const mac = /([0-9a-f]{2}(?::[0-9a-f]{2}){5})/.exec(stdout)![1]!;
      expect(await dnsmasqLog()).toMatch(new RegExp(`DHCPACK\\(${TEST_BRIDGE}\\) ${ip.replace(/\./g, "\\.")} ${mac} dhcp-guest`));
      expect((await ssh("ip -4 -o addr show dev eth0")).stdout).toContain(`inet ${ip}/24`);
    });

    it("was configured by cloud-init's OpenStack datasource over HTTP: host name, key, user data", async () => {
      expect((await ssh("cat /run/cloud-init/result.json")).stdout).toMatch(/DataSourceOpenStack/);
      expect((await ssh("cat /run/cloud-init/result.json")).stdout).not.toMatch(/ConfigDrive|NoCloud/);
      expect((await ssh("hostname")).stdout.trim()).toBe("dhcp-guest");
      expect((await ssh("cat /root/user-data-marker")).stdout.trim()).toBe("cdh-dhcp-user-data");
    });
  });
});
