/**
 * (a) RunInstances → RUNNING for one tiny guest, against the same steps done by hand:
 * `qemu-img create` of the overlay, `virsh define` of an equivalent domain (the
 * agent's own XML, renamed and re-identified), `virsh start`, and `virsh domstate`
 * until it says running. Files the agent's domain uses besides its disk (the config
 * drive) are copied for the baseline before its clock starts: the agent's time
 * includes making them, the baseline's does not. Runs alternate (agent, baseline, agent, …) so drift hits
 * both alike; every guest is removed before the next run starts. From the agent's debug
 * log (every command with its duration) the bench prints where the agent's time went,
 * step by step beside the baseline's own steps (see timeline.ts).
 */
import { randomUUID, randomBytes } from "node:crypto";
import { copyFile, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { imagePath, terminateAll, waitForStates, type Agent } from "./agent.js";
import { removeDomain, run, virsh } from "./host.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import { agentCommands, attribute, renderBreakdown, StepClock, type Breakdown } from "./timeline.js";
import type { Tracker } from "./tracker.js";

export interface LaunchOptions {
  agent: Agent;
  dataDir: string;
  imageId: string;
  /** Where the baseline's overlays and XML go. */
  workDir: string;
  runs: number;
  /** The agent's log (at debug level, for the time line of its commands). */
  agentLog: string;
  tracker: Tracker;
  log: (line: string) => void;
}

/**
 * How often both sides look at the state (the API and virsh domstate alike). Not faster:
 * on a 2-core host the agent's answers (and the SDK's signing) take CPU from the QEMU
 * start they wait for, which the baseline's one synchronous `virsh start` does not.
 */
const POLL_MS = 25;

export async function benchLaunch(o: LaunchOptions): Promise<Row[]> {
  const { agent, tracker } = o;
  const ours: number[] = [];
  const base: number[] = [];
  const ourSteps: Breakdown[] = [];
  const baseSteps: Breakdown[] = [];
  let template: { xml: string; instanceDir: string; instanceId: string; systemDisk: string; extras: string } | undefined;

  for (let i = 0; i < o.runs; i++) {
    // The agent: from the RunInstances call to DescribeInstancesStatus saying RUNNING.
    const t0 = performance.now();
    const wall0 = Date.now();
    const r = await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: `bench-a-${i}` });
    const id = r.InstanceIdSet![0]!;
    tracker.instances.add(id);
    await waitForStates(agent.client, [id], "RUNNING", { pollMs: POLL_MS, timeoutMs: 60_000 });
    ours.push(performance.now() - t0);
    const wall1 = Date.now();
    if (!template) {
      const xml = (await virsh(["dumpxml", "--inactive", id])).stdout;
      const instanceDir = join(o.dataDir, "instances", id);
      // Other files the domain uses (the config drive): the baseline gets copies, made before its clock starts.
      const extras = join(o.workDir, "template-files");
      await mkdir(extras, { recursive: true });
      for (const name of await readdir(instanceDir)) {
        if (name === "system.qcow2" || name === "console.log") continue;
        if (xml.includes(join(instanceDir, name))) await copyFile(join(instanceDir, name), join(extras, name));
      }
      template = { xml, instanceDir, instanceId: id, systemDisk: systemDiskOf(xml), extras };
    }
    await terminateAll(agent.client, [id]);
    tracker.instances.delete(id);
    ourSteps.push(attribute(await agentCommands(o.agentLog, wall0, wall1), wall0, wall1));

    // The baseline: the same three commands by hand, then domstate until running.
    const name = `cdhbench-base-${process.pid}-${i}`;
    const dir = join(o.workDir, name);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    for (const name of await readdir(template.extras)) await copyFile(join(template.extras, name), join(dir, name));
    const overlay = join(dir, "system.qcow2");
    const xmlFile = join(dir, "domain.xml");
    await writeFile(xmlFile, baselineXml(template.xml, { from: template, name, dir, overlay }));
    tracker.domains.add(name);
    const backing = imagePath(o.dataDir, o.imageId);
    const clock = new StepClock();
    const t1 = performance.now();
    await clock.step("qemu-img create", () => run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay, "1G"]));
    await clock.step("virsh define", () => virsh(["define", xmlFile]));
    await clock.step("virsh start", () => virsh(["start", name]));
    for (;;) {
      const s = (await clock.step("virsh domstate", () => virsh(["domstate", name]))).stdout.trim();
      if (s === "running") break;
      if (performance.now() - t1 > 60_000) throw new Error(`baseline domain ${name} did not run (state ${s})`);
      await clock.step("baseline: sleep between polls", () => sleep(POLL_MS));
    }
    base.push(performance.now() - t1);
    baseSteps.push(clock.steps);
    await removeDomain(name);
    tracker.domains.delete(name);
    await rm(dir, { recursive: true, force: true });
    o.log(`  (a) run ${i + 1}/${o.runs}: agent ${ours[i]!.toFixed(0)} ms, baseline ${base[i]!.toFixed(0)} ms (load average ${loadavg()[0]!.toFixed(2)})`);
  }
  o.log(renderBreakdown("(a) where the time goes, RunInstances → RUNNING", ourSteps, baseSteps));
  return [
    ratioRow({
      part: "(a)",
      what: `RunInstances → RUNNING, 1 tiny guest (median of ${o.runs})`,
      ours: median(ours),
      baseline: median(base),
      unit: "ms",
      max: 1.05,
    }),
  ];
}

/**
 * The agent's domain XML as the baseline's: another name, UUID and MAC, the disk and
 * console log in the baseline's directory, and without the agent's record (so no
 * agent ever takes the domain for one of its instances).
 */
/** The file behind the domain's `vda` (the system disk lives in a storage pool, not the instance directory). */
export function systemDiskOf(xml: string): string {
  for (const disk of xml.match(/<disk\b[\s\S]*?<\/disk>/g) ?? []) {
    if (!/<target dev='vda'/.test(disk)) continue;
    const source = /<source file='([^']+)'/.exec(disk);
    if (source) return source[1]!;
  }
  throw new Error("the agent's domain has no vda file");
}

export function baselineXml(xml: string, o: { from: { instanceDir: string; instanceId: string; systemDisk: string }; name: string; dir: string; overlay: string }): string {
  const uuid = randomUUID();
  const mac = `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  return xml
    .replace(/<metadata>[\s\S]*?<\/metadata>\s*/, "")
    .replaceAll(o.from.systemDisk, o.overlay)
    .replaceAll(o.from.instanceDir, o.dir)
    .replaceAll(o.from.instanceId, o.name)
    .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuid}</uuid>`)
    .replace(/(<entry name='(?:serial|uuid)'>)[^<]*(<\/entry>)/g, `$1${uuid}$2`)
    .replace(/<mac address='[^']*'\/>/, `<mac address='${mac}'/>`);
}
