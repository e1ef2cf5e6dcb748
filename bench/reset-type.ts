/**
 * (k) ResetInstancesType of a stopped instance, from the call until DescribeInstances shows
 * it STOPPED with the new size and the operation SUCCESS, against the same change made by
 * hand on an equivalent stopped domain: `virsh setvcpus --config`, `virsh setmaxmem --config`
 * and `virsh setmem --config` (the baseline domain is the agent's own definition, renamed,
 * re-identified and without the agent's record, with `<vcpu current>` below its maximum so
 * that setvcpus alone can move the count). Sizes alternate CDH_1C1G ↔ CDH_2C2G; runs
 * alternate agent, baseline, agent, … so drift hits both alike.
 */
import { randomUUID } from "node:crypto";
import { readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { waitForStates, type Agent } from "./agent.js";
import { removeDomain, virsh } from "./host.js";
import { median, ratioRow, sleep, timeMs, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

/** How often the agent's side looks (the baseline's virsh calls are synchronous). */
const POLL_MS = 10;

export async function benchResetType(o: { agent: Agent; imageId: string; workDir: string; runs: number; tracker: Tracker; log: (line: string) => void }): Promise<Row[]> {
  const { agent, tracker } = o;
  await mkdir(o.workDir, { recursive: true });
  const id = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: "bench-k" })).InstanceIdSet![0]!;
  tracker.instances.add(id);
  await waitForStates(agent.client, [id], "RUNNING", { timeoutMs: 120_000 });
  await agent.client.StopInstances({ InstanceIds: [id], StopType: "HARD" });
  await waitForStates(agent.client, [id], "STOPPED", { timeoutMs: 60_000 });

  // The baseline's domain: the agent's definition, another name and UUID, no record, one MAC changed.
  const name = `cdhbench-k-${process.pid}`;
  const xml = (await virsh(["dumpxml", "--inactive", id])).stdout
    .replace(/<name>[^<]*<\/name>/, `<name>${name}</name>`)
    .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${randomUUID()}</uuid>`)
    .replace(/<entry name='uuid'>[^<]*<\/entry>/, "")
    .replace(/<metadata>[\s\S]*?<\/metadata>/, "")
    // Never started: its MAC and tap name may stay the instance's.
    .replace(/<vcpu([^>]*)>\d+<\/vcpu>/, "<vcpu placement='static' current='1'>2</vcpu>");
  const xmlFile = join(o.workDir, "k.xml");
  await writeFile(xmlFile, xml);
  tracker.domains.add(name);
  await virsh(["define", xmlFile]);

  const ours: number[] = [];
  const base: number[] = [];
  try {
    for (let i = 0; i < o.runs; i++) {
      const up = i % 2 === 0;
      const [cpu, gib] = up ? [2, 2] : [1, 1];
      ours.push(
        await timeMs(async () => {
          await agent.client.ResetInstancesType({ InstanceIds: [id], InstanceType: `CDH_${cpu}C${gib}G` });
          for (;;) {
            const x = (await agent.client.DescribeInstances({ InstanceIds: [id] })).InstanceSet![0]!;
            if (x.LatestOperation === "ResetInstancesType" && x.LatestOperationState === "FAILED") throw new Error(`ResetInstancesType failed: ${x.LatestOperationErrorMsg ?? ""}`);
            if (x.InstanceState === "STOPPED" && x.CPU === cpu && x.Memory === gib && x.LatestOperationState === "SUCCESS") return;
            await sleep(POLL_MS);
          }
        }),
      );
      const kib = String(gib * 1024 * 1024);
      base.push(
        await timeMs(async () => {
          await virsh(["setvcpus", name, String(cpu), "--config"]);
          // Growing: the maximum first; shrinking: the current size first.
          if (up) {
            await virsh(["setmaxmem", name, kib, "--config"]);
            await virsh(["setmem", name, kib, "--config"]);
          } else {
            await virsh(["setmem", name, kib, "--config"]);
            await virsh(["setmaxmem", name, kib, "--config"]);
          }
        }),
      );
      o.log(`  (k) run ${i + 1}/${o.runs} → CDH_${cpu}C${gib}G: agent ${ours[i]!.toFixed(0)} ms, baseline ${base[i]!.toFixed(0)} ms (load average ${loadavg()[0]!.toFixed(2)})`);
    }
    // Both ended where they should: the same size in both definitions.
    const check = async (dom: string) => {
      const x = (await virsh(["dumpxml", "--inactive", dom])).stdout;
      const vcpu = /<vcpu([^>]*)>(\d+)</.exec(x);
      return [/current='(\d+)'/.exec(vcpu?.[1] ?? "")?.[1] ?? vcpu?.[2], /<memory unit='KiB'>(\d+)</.exec(x)?.[1]];
    };
    const [a, b] = [await check(id), await check(name)];
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`(k) the sizes differ at the end: agent ${a.join("/")}, baseline ${b.join("/")}`);
  } finally {
    await removeDomain(name);
    tracker.domains.delete(name);
  }
  const boot = await bootCost({ agent, id, workDir: o.workDir, runs: 5, tracker, log: o.log });
  return [
    boot,
    ratioRow({
      part: "(k)",
      what: `ResetInstancesType of a stopped instance → STOPPED with the new size (median of ${o.runs}) vs virsh setvcpus + setmaxmem + setmem --config`,
      ours: median(ours),
      baseline: median(base),
      unit: "ms",
      max: 1.2,
    }),
  ];
}

/**
 * The cost of the hot-plug headroom at boot: `virsh start` until the tiny guest prints READY,
 * for the instance's definition as it is (1 vCPU, 1 GiB, no headroom) and with headroom
 * (`<vcpu current='1'>4`, `<maxMemory slots='8'>` 8 GiB and one NUMA cell), both without
 * NICs, alternating. No target: the figure is for the README.
 */
async function bootCost(o: { agent: Agent; id: string; workDir: string; runs: number; tracker: Tracker; log: (line: string) => void }): Promise<Row> {
  await o.agent.client.ResetInstancesType({ InstanceIds: [o.id], InstanceType: "CDH_1C1G" }).catch(() => undefined);
  for (let i = 0; i < 300; i++) {
    const x = (await o.agent.client.DescribeInstances({ InstanceIds: [o.id] })).InstanceSet![0]!;
    if (x.CPU === 1 && x.Memory === 1 && x.LatestOperationState !== "OPERATING") break;
    await sleep(50);
  }
  const source = (await virsh(["dumpxml", "--inactive", o.id])).stdout;
  const variant = (name: string, headroom: boolean, log: string) => {
    let xml = source
      .replace(/<name>[^<]*<\/name>/, `<name>${name}</name>`)
      .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${randomUUID()}</uuid>`)
      .replace(/<entry name='uuid'>[^<]*<\/entry>/, "")
      .replace(/<metadata>[\s\S]*?<\/metadata>/, "")
      .replace(/<interface\b[\s\S]*?<\/interface>/g, "")
      .replace(/<log file='[^']*'/, `<log file='${log}'`);
    if (headroom) {
      xml = xml
        .replace(/<vcpu([^>]*)>\d+<\/vcpu>/, "<maxMemory slots='8' unit='GiB'>8</maxMemory><vcpu placement='static' current='1'>4</vcpu>")
        .replace(/<\/features>/, "</features><cpu><numa><cell id='0' cpus='0-3' memory='1' unit='GiB'/></numa></cpu>");
    }
    return xml;
  };
  const times: Record<"plain" | "headroom", number[]> = { plain: [], headroom: [] };
  for (let i = 0; i < o.runs; i++) {
    for (const kind of ["plain", "headroom"] as const) {
      const name = `cdhbench-kb-${kind}-${process.pid}`;
      const log = join(o.workDir, `${name}.log`);
      await rm(log, { force: true });
      const file = join(o.workDir, `${name}.xml`);
      await writeFile(file, variant(name, kind === "headroom", log));
      o.tracker.domains.add(name);
      await virsh(["define", file]);
      try {
        times[kind].push(
          await timeMs(async () => {
            await virsh(["start", name]);
            for (let t = 0; ; t++) {
              const text = await readFile(log, "utf8").catch(() => "");
              if (text.includes("CDH-TINY-READY")) return;
              if (t > 6000) throw new Error(`(k) ${name} printed no READY line within 60 s`);
              await sleep(10);
            }
          }),
        );
      } finally {
        await removeDomain(name);
        o.tracker.domains.delete(name);
      }
    }
    o.log(`  (k) boot to READY ${i + 1}/${o.runs}: plain ${times.plain[i]!.toFixed(0)} ms, with headroom ${times.headroom[i]!.toFixed(0)} ms`);
  }
  return ratioRow({
    part: "(k)",
    what: `boot to READY with hot-plug headroom (4 vCPUs, 8 GiB, 8 slots) vs without, tiny guest 1C1G (median of ${o.runs})`,
    ours: median(times.headroom),
    baseline: median(times.plain),
    unit: "ms",
  });
}
