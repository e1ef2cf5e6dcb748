/**
 * An agent with tiny guests already booted: the start of every test that needs running
 * instances to break something under (QEMU, libvirtd).
 */
import { importImage, startAgentProcess, waitForState, type AgentProcess } from "./agent-process.js";
import { ensureTinyImages } from "./tiny-image.js";
import { waitForSerial, TINY_READY_PATTERN } from "./serial.js";

/**
 * Starts an agent (no periodic full reconcile: the test sees what events and probes do),
 * imports the tiny image under `imageName` and launches `count` CDH_1C1G instances (`env`:
 * more agent settings),
 * waiting until each is RUNNING and its guest has printed that it is ready.
 */
export async function agentWithTinyGuests(o: { repoRoot: string; imageName: string; count: number; env?: Record<string, string> }): Promise<{ agent: AgentProcess; ids: string[] }> {
  const images = await ensureTinyImages();
  const agent = await startAgentProcess({ repoRoot: o.repoRoot, env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600", ...o.env } });
  const img = await importImage(agent.client, images.raw.normal, o.imageName);
  const ids = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: img, SystemDisk: { DiskSize: 1 }, InstanceCount: o.count })).InstanceIdSet!;
  for (const id of ids) {
    await waitForState(agent.client, id, "RUNNING");
    await waitForSerial(`${agent.dataDir}/instances/${id}/console.log`, TINY_READY_PATTERN, { timeoutMs: 60_000 });
  }
  return { agent, ids };
}
