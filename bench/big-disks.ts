/**
 * (g) RunInstances → RUNNING of one tiny guest with a 50 GB system disk and two 100 GB
 * data disks, against the same work done by hand in the same run:
 *   - like for like (the target): `qemu-img create` of the 50 GB overlay on the cached
 *     image and of two empty 100 GB qcow2, `virsh define` of an equivalent domain (the
 *     agent's own XML, renamed, re-identified, pointing at the baseline's files),
 *     `virsh start`, and `virsh domstate` until it says running — the same end point as
 *     (a). The config drive is copied for the baseline before its clock starts: the
 *     agent's time includes making it, the baseline's does not.
 *   - the three `qemu-img create` calls alone, back to back: against the whole launch (no
 *     target: booting dominates), and against the agent's own disk step (target 1.2×),
 *     the time its log gives for making the same three disks (it makes them at the same
 *     time, beside the config drive). qcow2 creation does not depend on the virtual
 *     size, so 50 and 100 GB cost what 1 GB does.
 * Runs alternate (agent, baseline, agent, …); every guest and file goes before the next run.
 *
 * 250 GB of disks: the agent counts a thin disk's promise in full against what its
 * pool's filesystem has free (agent/storage/pools.ts), and this host's / has less. So
 * the section makes a filesystem that has room: a sparse 400 GiB file, ext4, on a loop
 * device, mounted in this process's mount namespace (where the agent runs) and in
 * libvirtd's and virtlogd's (QEMU opens the disks, virtlogd the console log;
 * `ip netns exec` gives each its own). A second
 * agent (its own data directory, port and host ID) runs there; the baseline's files
 * live there too, so both sides write to the same filesystem.
 */
import { copyFile, mkdir, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { importImage, imagePath, startAgent, terminateAll, waitForStates, type Agent, type AgentOptions } from "./agent.js";
import { removeDomain, run, virsh } from "./host.js";
import { baselineXml } from "./launch.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

export interface BigDisksOptions {
  /** The bench's agent options: (g) runs its own agent like it, on the big filesystem. */
  agentOptions: AgentOptions;
  tinyImage: string;
  workDir: string;
  runs: number;
  tracker: Tracker;
  log: (line: string) => void;
}

const POLL_MS = 10;
const SYSTEM_GB = 50;
const DATA_GB = [100, 100] as const;

/** The domain's disk files in target order (vda, vdb, …), from its XML. */
function diskFiles(xml: string): string[] {
  return [...xml.matchAll(/<disk type='file' device='disk'>[\s\S]*?<source file='([^']+)'[\s\S]*?<\/disk>/g)].map((m) => m[1]!);
}

export async function benchBigDisks(o: BigDisksOptions): Promise<Row[]> {
  const fs = await mountBigFilesystem(o.workDir, o.log);
  o.tracker.stoppers.set("(g) filesystem", () => fs.unmount());
  let agent: Agent | undefined;
  try {
    const dataDir = join(fs.mountpoint, "data");
    await mkdir(dataDir, { mode: 0o711 });
    const agentLog = join(o.workDir, "agent-g.log");
    agent = await startAgent({ ...o.agentOptions, dataDir, logFile: agentLog, env: { ...o.agentOptions.env, CDH_AGENT_HOST_ID: "host-cdhbigdk" } });
    const a = agent;
    o.tracker.stoppers.set("(g) agent", () => a.stop());
    const imageId = await importImage(agent.client, o.tinyImage, `bench-g-tiny-${process.pid}`);
    const instances = new Set<string>();
    try {
      return await measure({ ...o, agent, agentLog, dataDir, imageId, workDir: join(fs.mountpoint, "work"), instances });
    } finally {
      // A failed run may leave a guest: it goes before its filesystem does.
      if (instances.size) await terminateAll(agent.client, [...instances]).catch((e: unknown) => o.log(`  (g) cleanup: ${(e as Error).message}`));
    }
  } finally {
    await agent?.stop();
    o.tracker.stoppers.delete("(g) agent");
    await fs.unmount();
    o.tracker.stoppers.delete("(g) filesystem");
  }
}

/** The agent's `disksMs` for an instance, from its log ("instance disks and config drive made"). */
async function disksMsOf(logFile: string, instanceId: string): Promise<number> {
  for (let i = 0; i < 50; i++) {
    for (const line of (await readFile(logFile, "utf8")).split("\n")) {
      if (!line.includes(instanceId) || !line.includes("instance disks and config drive made")) continue;
      const ms = (JSON.parse(line) as { disksMs?: number }).disksMs;
      if (typeof ms === "number") return ms;
    }
    await sleep(100);
  }
  throw new Error(`the agent logged no disk step for ${instanceId} in ${logFile}`);
}

async function measure(o: BigDisksOptions & { agent: Agent; agentLog: string; dataDir: string; imageId: string; instances: Set<string> }): Promise<Row[]> {
  const { agent } = o;
  // The bench's tracker terminates through the bench's agent, which does not know these instances.
  const tracker = { instances: o.instances, domains: o.tracker.domains };
  const ours: number[] = [];
  const base: number[] = [];
  const create: number[] = [];
  /** The agent's own disk step (its log's disksMs): the three disks, made at the same time. */
  const agentDisks: number[] = [];
  const backing = imagePath(o.dataDir, o.imageId);
  let template: { xml: string; instanceDir: string; instanceId: string; extras: string; disks: string[]; systemDisk: string } | undefined;

  for (let i = 0; i < o.runs; i++) {
    // The agent: from the RunInstances call to DescribeInstancesStatus saying RUNNING.
    const t0 = performance.now();
    const r = await agent.client.RunInstances({
      InstanceType: "CDH_1C1G",
      ImageId: o.imageId,
      SystemDisk: { DiskSize: SYSTEM_GB },
      DataDisks: DATA_GB.map((DiskSize) => ({ DiskSize })),
      InstanceName: `bench-g-${i}`,
    });
    const id = r.InstanceIdSet![0]!;
    tracker.instances.add(id);
    await waitForStates(agent.client, [id], "RUNNING", { pollMs: POLL_MS, timeoutMs: 120_000 });
    ours.push(performance.now() - t0);
    agentDisks.push(await disksMsOf(o.agentLog, id));
    if (!template) {
      const xml = (await virsh(["dumpxml", "--inactive", id])).stdout;
      const disks = diskFiles(xml);
      if (disks.length !== 1 + DATA_GB.length) throw new Error(`expected ${1 + DATA_GB.length} disks in ${id}'s XML, found ${disks.length}`);
      const instanceDir = join(o.dataDir, "instances", id);
      const extras = join(o.workDir, "template-files");
      await mkdir(extras, { recursive: true });
      for (const name of await readdir(instanceDir)) {
        if (name === "console.log") continue;
        if (xml.includes(join(instanceDir, name))) await copyFile(join(instanceDir, name), join(extras, name));
      }
      template = { xml, instanceDir, instanceId: id, extras, disks, systemDisk: disks[0]! };
    }
    await terminateAll(agent.client, [id]);
    tracker.instances.delete(id);

    // Like for like: the three qemu-img creates, define, start, domstate until running.
    const name = `cdhbench-g-${process.pid}-${i}`;
    const dir = join(o.workDir, name);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    for (const f of await readdir(template.extras)) await copyFile(join(template.extras, f), join(dir, f));
    const files = [join(dir, "vda.qcow2"), ...DATA_GB.map((_, k) => join(dir, `vd${String.fromCharCode(98 + k)}.qcow2`))];
    let xml = baselineXml(template.xml, { from: template, name, dir, overlay: files[0]! });
    template.disks.forEach((from, k) => (xml = xml.replaceAll(`'${from}'`, `'${files[k]!}'`)));
    const xmlFile = join(dir, "domain.xml");
    await writeFile(xmlFile, xml);
    tracker.domains.add(name);
    const t1 = performance.now();
    await qemuImgCreates(backing, files);
    await virsh(["define", xmlFile]);
    await virsh(["start", name]);
    for (;;) {
      const s = (await virsh(["domstate", name])).stdout.trim();
      if (s === "running") break;
      if (performance.now() - t1 > 60_000) throw new Error(`baseline domain ${name} did not run (state ${s})`);
      await sleep(POLL_MS);
    }
    base.push(performance.now() - t1);
    await removeDomain(name);
    tracker.domains.delete(name);
    for (const f of files) await rm(f, { force: true });

    // The qemu-img creates alone.
    const t2 = performance.now();
    await qemuImgCreates(backing, files);
    create.push(performance.now() - t2);
    await rm(dir, { recursive: true, force: true });
    o.log(
      `  (g) run ${i + 1}/${o.runs}: agent ${ours[i]!.toFixed(0)} ms (its disks ${agentDisks[i]!.toFixed(0)} ms), qemu-img + define + start ${base[i]!.toFixed(0)} ms, qemu-img ×3 alone ${create[i]!.toFixed(0)} ms`,
    );
  }
  const what = `RunInstances → RUNNING, 50 GB + 2×100 GB disks (median of ${o.runs})`;
  return [
    ratioRow({ part: "(g)", what: `${what} vs qemu-img ×3 + define + start`, ours: median(ours), baseline: median(base), unit: "ms", max: 1.2 }),
    ratioRow({ part: "(g)", what: `${what} vs qemu-img create ×3 alone`, ours: median(ours), baseline: median(create), unit: "ms" }),
    ratioRow({
      part: "(g)",
      what: `the agent's disk step for those three disks (its log) vs the same qemu-img create calls alone (median of ${o.runs})`,
      ours: median(agentDisks),
      baseline: median(create),
      unit: "ms",
      max: 1.2,
    }),
  ];
}

/** The 50 GB overlay on the cached image and the empty 100 GB data disks, one after another. */
async function qemuImgCreates(backing: string, files: string[]): Promise<void> {
  await run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, files[0]!, `${SYSTEM_GB}G`]);
  for (let k = 0; k < DATA_GB.length; k++) await run(["qemu-img", "create", "-q", "-f", "qcow2", files[k + 1]!, `${DATA_GB[k]}G`]);
}

/**
 * A sparse 400 GiB ext4 on a loop device, mounted at the same path here and in
 * libvirtd's mount namespace. unmount() undoes all of it (idempotent).
 */
async function mountBigFilesystem(workDir: string, log: (line: string) => void): Promise<{ mountpoint: string; unmount: () => Promise<void> }> {
  await mkdir(workDir, { recursive: true, mode: 0o755 });
  const file = join(workDir, "big-fs.img");
  const mountpoint = join(workDir, "big");
  await mkdir(mountpoint, { mode: 0o755 });
  await run(["truncate", "-s", "400G", file]);
  await run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-m", "0", file]);
  const loop = (await run(["losetup", "--find", "--show", file])).stdout.trim();
  // libvirtd (QEMU opens the disks) and virtlogd (opens the console log), each in its own mount namespace.
  const daemons: string[] = [];
  const seen = new Set([await readlink("/proc/self/ns/mnt")]);
  // In the test host their pid files are in its private /run/libvirt.
  for (const pidFile of ["/run/libvirt/libvirtd.pid", "/run/libvirt/virtlogd.pid"]) {
    const pid = (await readFile(pidFile, "utf8")).trim();
    const ns = await readlink(`/proc/${pid}/ns/mnt`);
    if (!seen.has(ns)) daemons.push(pid);
    seen.add(ns);
  }
  const steps: Array<() => Promise<unknown>> = [() => run(["losetup", "-d", loop], { check: false }), () => rm(file, { force: true })];
  const unmount = async () => {
    while (steps.length) await steps.pop()!().catch(() => undefined);
  };
  try {
    await run(["mount", loop, mountpoint]);
    steps.push(() => run(["umount", mountpoint], { check: false }));
    for (const pid of daemons) {
      await run(["nsenter", "-t", pid, "-m", "--", "mount", loop, mountpoint]);
      steps.push(() => run(["nsenter", "-t", pid, "-m", "--", "umount", mountpoint], { check: false }));
    }
    await run(["chmod", "0755", mountpoint]);
  } catch (error) {
    await unmount();
    throw error;
  }
  log(`  (g) ${loop} (sparse 400 GiB ext4) mounted at ${mountpoint} here and in libvirtd's and virtlogd's mount namespaces`);
  return { mountpoint, unmount };
}
