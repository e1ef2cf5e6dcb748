/**
 * Everything the bench creates, so that the end of the run (also after a failure or
 * Ctrl-C) removes exactly that and nothing else: the agent's instances it made, the
 * domains it defined itself, the processes it started, its directories.
 */
import { rm } from "node:fs/promises";
import { terminateAll, type Agent } from "./agent.js";
import { removeDomains, removeNetwork } from "./host.js";

export class Tracker {
  /** Instance IDs made through (or adopted by) the bench's agent. */
  readonly instances = new Set<string>();
  /** Domains the bench defined with virsh (baselines, clones not yet adopted). */
  readonly domains = new Set<string>();
  readonly dirs = new Set<string>();
  /** libvirt networks the bench's agent defined (destroyed and undefined once it is stopped). */
  readonly networks = new Set<string>();
  /** Child processes to stop (the agent, nginx). */
  readonly stoppers = new Map<string, () => Promise<void>>();
  /** The running agent, used to terminate instances through the API. */
  agent: Agent | undefined;

  async cleanup(log: (line: string) => void): Promise<void> {
    if (this.instances.size && this.agent?.alive()) {
      try {
        await terminateAll(this.agent.client, [...this.instances], 300_000);
        this.instances.clear();
      } catch (error) {
        log(`cleanup: terminating through the agent failed (${(error as Error).message}); removing the domains with virsh`);
      }
    }
    for (const [name, stop] of [...this.stoppers].reverse()) {
      await stop().catch((e: unknown) => log(`cleanup: stopping ${name} failed: ${(e as Error).message}`));
      this.stoppers.delete(name);
    }
    // Whatever the agent could not remove (it died, or a step failed), and our own domains.
    const leftovers = [...this.instances, ...this.domains];
    if (leftovers.length) log(`cleanup: removing ${leftovers.length} domain(s) with virsh`);
    await removeDomains(leftovers);
    this.instances.clear();
    this.domains.clear();
    for (const net of this.networks) await removeNetwork(net);
    this.networks.clear();
    for (const dir of this.dirs) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    this.dirs.clear();
  }
}
