/**
 * (o) The VNC console's time to the first screen: from DescribeInstanceVncUrl until the first
 * framebuffer update (a full screen, Raw) has arrived over the agent's WebSocket, against a
 * direct RFB connection to the domain's VNC socket until its first update, both with the same
 * RFB client (test/support/rfb.ts), alternating ours and the baseline on one tiny guest.
 * Ours pays the signed API call, the WebSocket handshake (token, Origin, the socket connect)
 * and the bridge's copy of every byte.
 *
 * QEMU decides most of both figures: its VNC server sends updates only on its refresh timer,
 * which a new connection resets to 30 ms and whose first tick, finding no update requested yet,
 * stretches to 80 ms; so a screen comes ~80 ms after the socket connect, unless the connection
 * lands in the ticks left by one that closed just before (then 5–30 ms). Each measurement
 * therefore starts from the same state, QEMU's VNC server idle for IDLE_MS (measured by hand on
 * this QEMU 7.2, a tiny guest run by hand: after 500 ms idle the first update's first byte came
 * 81–86 ms after the connect in 18 of 18 direct connections; back to back, 10 of 12 came in
 * 6–25 ms). Before this, the direct run right after ours' close often got the fast ticks and
 * ours (after a pause) the slow ones: 4.78×.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { RfbClient } from "../test/support/rfb.js";
import { waitForStates, type Agent } from "./agent.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

/** QEMU's VNC server idle before each measurement, ms (the top of this file says why). */
const IDLE_MS = 500;

/** Phase marks of one run (ms since its start): each opener sets what it passes. */
type Marks = Record<string, number>;

async function firstUpdate(open: (mark: (name: string) => void) => Promise<{ client: RfbClient; close: () => void }>, phases?: Marks[]): Promise<number> {
  const t0 = performance.now();
  const marks: Marks = {};
  const { client, close } = await open((name) => (marks[name] = performance.now() - t0));
  marks["rfb handshake"] = performance.now() - t0;
  const update = await client.requestUpdate(false);
  marks["update's first byte"] = update.at - t0;
  const ms = performance.now() - t0;
  close();
  phases?.push(marks);
  return ms;
}

export async function benchVnc(o: { agent: Agent; dataDir: string; imageId: string; runs: number; tracker: Tracker; log: (line: string) => void }): Promise<Row[]> {
  const { agent } = o;
  const id = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: o.imageId, SystemDisk: { DiskSize: 1 }, InstanceName: "bench-o" })).InstanceIdSet![0]!;
  o.tracker.instances.add(id);
  await waitForStates(agent.client, [id], "RUNNING", { timeoutMs: 120_000 });
  const socket = join(o.dataDir, "vnc", `${id}.sock`);
  for (let i = 0; i < 100 && !(await stat(socket).catch(() => undefined)); i++) await sleep(100);
  // Past the firmware's mode changes: the screen's size stays put from here.
  await sleep(3_000);

  const ours: number[] = [];
  const base: number[] = [];
  const phases: Marks[] = [];
  const viaAgent = (keep?: Marks[]) =>
    firstUpdate(async (mark) => {
      const { InstanceVncUrl } = await agent.client.DescribeInstanceVncUrl({ InstanceId: id });
      mark("api");
      const { client, ws } = await RfbClient.overWebSocket(decodeURIComponent(InstanceVncUrl!), {}, () => mark("ws open"));
      return { client, close: () => ws.close() };
    }, keep);
  const basePhases: Marks[] = [];
  const direct = (keep?: Marks[]) =>
    firstUpdate(async () => {
      const client = await RfbClient.overUnixSocket(socket);
      return { client, close: () => client.close() };
    }, keep);
  // One of each first, not counted: JIT, the page cache, QEMU's first encode.
  await viaAgent();
  await sleep(IDLE_MS);
  await direct();
  for (let i = 0; i < o.runs; i++) {
    // Both orders, each measurement after the same idle time (see the top of this file).
    await sleep(IDLE_MS);
    if (i % 2 === 0) ours.push(await viaAgent(phases));
    else base.push(await direct(basePhases));
    await sleep(IDLE_MS);
    if (i % 2 === 0) base.push(await direct(basePhases));
    else ours.push(await viaAgent(phases));
  }
  const phase = (list: Marks[], name: string) => median(list.map((m) => m[name]!)).toFixed(1);
  o.log(
    `bench (o): ours, median ms since the request: API answered ${phase(phases, "api")}, WebSocket open ${phase(phases, "ws open")}, ` +
      `RFB handshake done ${phase(phases, "rfb handshake")}, update's first byte ${phase(phases, "update's first byte")}; ` +
      `direct: RFB handshake done ${phase(basePhases, "rfb handshake")}, update's first byte ${phase(basePhases, "update's first byte")}`,
  );
  o.log(`bench (o): ours ${ours.map((x) => x.toFixed(1)).join(" ")} ms; direct ${base.map((x) => x.toFixed(1)).join(" ")} ms`);
  return [
    ratioRow({
      part: "o",
      what: `DescribeInstanceVncUrl → first framebuffer update over the WebSocket, 720×400 Raw (median of ${o.runs})`,
      ours: median(ours),
      baseline: median(base),
      unit: "ms",
      max: 1.5,
      note: "RFB straight to the VNC socket until its first update",
    }),
  ];
}
