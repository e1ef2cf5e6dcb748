/**
 * What a guest learns of its NICs: the tiny guest follows its hot-swapped config drive
 * (scripts/lib/tiny-net.sh: a re-read every second, and hot-plugged NICs), and the agent's
 * drive and metadata trees list exactly the instance's current NICs and addresses after each
 * change. Probes and state come over the guest's serial console (test/support/guest-net.ts).
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { NetGuest, openNetGuests, type TinyNics } from "../support/guest-net.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

const URI = "qemu:///system";

/** The files of an ISO 9660 image, extracted by xorriso into a new directory. */
async function extractIso(iso: string, into: string): Promise<void> {
  await execa("xorriso", ["-osirrox", "on", "-indev", iso, "-extract", "/", into], { timeout: 60_000 });
  await execa("chmod", ["-R", "u+w", into]);
}

async function makeIso(dir: string, out: string, label: string): Promise<void> {
  await execa("xorriso", ["-as", "mkisofs", "-quiet", "-o", out, "-V", label, "-J", "-R", dir], { timeout: 60_000 });
}

const addressesOf = (n: TinyNics, mac: string) => n.nics.find((x) => x.mac === mac)?.addresses ?? [];

describe("the guest's view of its NICs (tiny guests)", () => {
  let agent: AgentProcess;
  let guest: NetGuest;
  let work: string;
  const root = inject("repoRoot");

  beforeAll(async () => {
    const started = await agentWithTinyGuests({ repoRoot: root, imageName: "guest-nics", count: 1 });
    agent = started.agent;
    [guest] = (await openNetGuests(started.ids.map((id) => ({ instanceId: id, consoleLog: `${agent.dataDir}/instances/${id}/console.log` })))) as [NetGuest];
    work = await mkdtemp(join(tmpdir(), "guest-nics-"));
    await chmod(work, 0o755); // QEMU opens the ISOs made here
  });

  afterAll(async () => {
    guest?.close();
    await agent?.shutdown();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the tiny guest reports its NIC with exactly the address DescribeInstances gives", async () => {
    const d = await agent.client.DescribeInstances({ InstanceIds: [guest.instanceId] });
    const ips = d.InstanceSet![0]!.PrivateIpAddresses!;
    const now = await guest.nics();
    expect(now.nics.map((n) => ({ mac: n.mac, ips: n.addresses.map((a) => a.split("/")[0]) }))).toEqual([{ mac: guest.mac, ips }]);
  });

  it("the tiny guest follows a hot-swapped drive by itself: an address added to network_data.json comes up, and goes when it is gone", async () => {
    const drive = `${agent.dataDir}/instances/${guest.instanceId}/config.iso`;
    const dir = join(work, "drive");
    await extractIso(drive, dir);
    const path = join(dir, "openstack/latest/network_data.json");
    const original = await readFile(path, "utf8");
    const nd = JSON.parse(original) as { networks: Array<Record<string, unknown>> };
    const extra = guest.ip.replace(/\.\d+$/, ".250");
    nd.networks.push({ id: "network-extra", type: "ipv4", link: "eth0", ip_address: extra, netmask: "255.255.255.0", routes: [], network_id: "x" });
    await writeFile(path, JSON.stringify(nd));
    await makeIso(dir, join(work, "changed.iso"), "config-2");
    await execa("virsh", ["-c", URI, "change-media", guest.instanceId, "hdc", join(work, "changed.iso"), "--live"], { timeout: 30_000 });
    const t0 = Date.now();
    await guest.waitNics((n) => addressesOf(n, guest.mac).includes(`${extra}/24`), { timeoutMs: 20_000, what: `with ${extra}` });
    const upMs = Date.now() - t0;
    expect(addressesOf(await guest.nics(), guest.mac)).toEqual([`${guest.ip}/24`, `${extra}/24`]);

    await execa("virsh", ["-c", URI, "change-media", guest.instanceId, "hdc", drive, "--live"], { timeout: 30_000 });
    await guest.waitNics((n) => !addressesOf(n, guest.mac).includes(`${extra}/24`), { timeoutMs: 20_000, what: `without ${extra}` });
    expect(addressesOf(await guest.nics(), guest.mac)).toEqual([`${guest.ip}/24`]);
    console.log(`guest-nics: a secondary address came up ${upMs} ms after the drive swap`);
  });
});
