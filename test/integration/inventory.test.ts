/**
 * The inventory sweep against the real agent, libvirtd and qemu-img: a disk file no one
 * owns, an instance directory of no instance and a domain with this host's record that
 * the agent does not know are each reported, quarantined and deleted after the grace
 * period; what the agent knows is never touched.
 */
import { execa } from "execa";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { waitUntil } from "../support/wait.js";
import { commonClient, makeDataDir, startAgentProcess, type AgentProcess } from "../support/agent-process.js";

const virsh = (...args: string[]) => execa("virsh", ["-c", "qemu:///system", ...args], { reject: false });
const ORPHAN_DOMAIN = "ins-orphan01";


describe("the inventory sweep", () => {
  let agent: AgentProcess;
  let pool: string;

  beforeAll(async () => {
    const dataDir = await makeDataDir();
    pool = `${dataDir}/pools/local`;
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      dataDir,
      env: { CDH_AGENT_INVENTORY_SWEEP_SCHEDULE: "*/2 * * * * *", CDH_AGENT_ORPHAN_GRACE_PERIOD_S: "6" },
    });
  });

  afterAll(async () => {
    await virsh("destroy", ORPHAN_DOMAIN);
    await virsh("undefine", ORPHAN_DOMAIN);
    await agent?.shutdown();
  });

  it("quarantines and then deletes orphans, and leaves what it knows alone", async () => {
    const cbs = commonClient(agent.port);
    const known = ((await cbs.request("CreateDisks", { DiskType: "LOCAL_BASIC", DiskSize: 10 })) as { DiskIdSet: string[] }).DiskIdSet[0]!;
    const knownFile = join(pool, `${known}.qcow2`);
    // Old enough not to look like a copy in progress.
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(knownFile, hourAgo, hourAgo);

    const stray = join(pool, "disk-zzzzzzzz.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", stray, "1G"]);
    await utimes(stray, hourAgo, hourAgo);
    const fresh = join(pool, "disk-yyyyyyyy.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", fresh, "1G"]);

    const strayDir = join(agent.dataDir, "instances", "ins-zzzzzzzz");
    await mkdir(strayDir, { recursive: true });
    await writeFile(join(strayDir, "console.log"), "left behind\n");

    // A whole record (one that fails its schema is left alone, as start-up recovery leaves it).
    const record = JSON.stringify({
      version: 1, instanceId: ORPHAN_DOMAIN, uuid: "6f1c2d1e-0000-4000-8000-000000000001", hostId: agent.hostId,
      instanceName: "orphan", instanceType: "CDH_1C1G", cpu: 1, memoryGiB: 1, imageId: "img-orphan01",
      systemDisk: { diskType: "LOCAL_BASIC", sizeGiB: 1, path: join(pool, "ins-orphan01-system.qcow2") },
      nics: [], createdTime: new Date().toISOString(), launchIndex: 0,
    });
    const xml = `<domain type="qemu"><name>${ORPHAN_DOMAIN}</name><memory unit="MiB">64</memory><os><type arch="x86_64" machine="pc">hvm</type></os>
      <metadata><cdh:instance xmlns:cdh="https://cdh-agent.dev/xmlns/instance/1"><cdh:record format="json">${record.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</cdh:record></cdh:instance></metadata></domain>`;
    const xmlFile = join(agent.dataDir, "..", "orphan.xml");
    await writeFile(xmlFile, xml);
    expect((await virsh("define", xmlFile)).exitCode).toBe(0);

    // Quarantined: the stray file leaves its name for the quarantine folder.
    await waitUntil(async () => !existsSync(stray));
    const quarantined = await readdir(join(pool, "quarantine"));
    expect(quarantined.some((n) => n.endsWith(".disk-zzzzzzzz.qcow2"))).toBe(true);
    // Each is reported (the same sweep goes on to domains and directories after the files).
    await waitUntil(async () => {
      const log = await readFile(agent.logFile, "utf8");
      return log.includes("orphaned disk file") && log.includes(`"name":"${ORPHAN_DOMAIN}"`) && log.includes("instances/ins-zzzzzzzz");
    });

    // After the grace period: all three are gone.
    await waitUntil(async () => (await readdir(join(pool, "quarantine"))).length === 0);
    await waitUntil(async () => !existsSync(strayDir));
    await waitUntil(async () => (await virsh("dominfo", ORPHAN_DOMAIN)).exitCode !== 0);

    // What the agent knows, and the file too young to judge, are untouched.
    expect(existsSync(knownFile)).toBe(true);
    expect(existsSync(fresh)).toBe(true);
    const d = (await cbs.request("DescribeDisks", { DiskIds: [known] })) as { TotalCount: number };
    expect(d.TotalCount).toBe(1);
    await cbs.request("TerminateDisks", { DiskIds: [known] });
  });
});
