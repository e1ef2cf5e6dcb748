/**
 * (o) The VNC console's time to the first screen: from DescribeInstanceVncUrl until the first
 * framebuffer update (a full screen, Raw) has arrived over the agent's WebSocket, against a
 * direct RFB connection to the domain's VNC socket until its first update, both with the same
 * RFB client (test/support/rfb.ts), alternating ours and the baseline on one tiny guest.
 * Ours pays the signed API call, the WebSocket handshake (token, Origin, the socket connect)
 * and the bridge's copy of every byte.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { RfbClient } from "../test/support/rfb.js";
import { waitForStates, type Agent } from "./agent.js";
import { median, ratioRow, sleep, type Row } from "./stats.js";
import type { Tracker } from "./tracker.js";

async function firstUpdate(open: () => Promise<{ client: RfbClient; close: () => void }>): Promise<number> {
  const t0 = performance.now();
  const { client, close } = await open();
  await client.requestUpdate(false);
  const ms = performance.now() - t0;
  close();
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
  const viaAgent = () =>
    firstUpdate(async () => {
      const { InstanceVncUrl } = await agent.client.DescribeInstanceVncUrl({ InstanceId: id });
      const { client, ws } = await RfbClient.overWebSocket(decodeURIComponent(InstanceVncUrl!));
      return { client, close: () => ws.close() };
    });
  const direct = () =>
    firstUpdate(async () => {
      const client = await RfbClient.overUnixSocket(socket);
      return { client, close: () => client.close() };
    });
  // One of each first, not counted: JIT, the page cache, QEMU's first encode.
  await viaAgent();
  await direct();
  for (let i = 0; i < o.runs; i++) {
    if (i % 2 === 0) {
      ours.push(await viaAgent());
      base.push(await direct());
    } else {
      base.push(await direct());
      ours.push(await viaAgent());
    }
    await sleep(100);
  }
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
