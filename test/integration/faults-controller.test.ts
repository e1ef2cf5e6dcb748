/**
 * Fault battery: the controller unreachable (a local server that accepts and never
 * answers) and then slow (answers after a delay). Operations go on at their usual pace,
 * the agent holds at most one report request open at a time, its memory does not grow
 * with the reports it could not send, and once reports get through they account for
 * every report dropped meanwhile (Superseded; README: Reports).
 */
import { execa } from "execa";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort, importImage, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { ensureTinyImages } from "../support/tiny-image.js";

interface Received {
  Sequence: number;
  Superseded: number;
  Reason: string;
  answered: boolean;
}

/** A controller that can hang (never answer) or be slow (answer 200 after delayMs). */
class FakeController {
  mode: "hang" | "slow" = "hang";
  delayMs = 300;
  readonly received: Received[] = [];
  open = 0;
  maxOpen = 0;
  private readonly sockets = new Set<Socket>();
  private server!: Server;
  port = 0;

  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      this.open += 1;
      this.maxOpen = Math.max(this.maxOpen, this.open);
      s.on("close", () => {
        this.sockets.delete(s);
        this.open -= 1;
      });
    });
    await new Promise<void>((r) => this.server.listen(this.port, "127.0.0.1", r));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Received;
      const entry: Received = { Sequence: body.Sequence, Superseded: body.Superseded, Reason: body.Reason, answered: false };
      this.received.push(entry);
      if (this.mode === "hang") return; // never answers; the agent's timeout ends it
      setTimeout(() => {
        entry.answered = true;
        res.end("{}");
      }, this.delayMs);
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

async function agentPid(port: number): Promise<number> {
  const out = (await execa("ss", ["-Hltnp", `sport = :${port}`])).stdout;
  const m = /pid=(\d+)/.exec(out);
  expect(m, `a process listening on ${port}`).not.toBeNull();
  return Number(m![1]);
}

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

describe("the controller unreachable, then slow", () => {
  const controller = new FakeController();
  let agent: AgentProcess;
  let imageId: string;

  beforeAll(async () => {
    await controller.start();
    const images = await ensureTinyImages();
    agent = await startAgentProcess({
      repoRoot: inject("repoRoot"),
      env: {
        CDH_AGENT_CONTROLLER_URL: `http://127.0.0.1:${controller.port}/report`,
        CDH_AGENT_REPORT_TIMEOUT_MS: "1000",
        CDH_AGENT_REPORT_SCHEDULE: "* * * * * *",
      },
    });
    imageId = await importImage(agent.client, images.raw.normal, "faults-controller");
  });

  afterAll(async () => {
    await agent?.shutdown();
    await controller.close();
  });

  /** An API call, answered within 3 s (the reports never hold a request up). */
  async function quick<T>(call: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    const value = await call();
    expect(Date.now() - t0).toBeLessThan(3_000);
    return value;
  }

  /**
   * A launch, hard stops, starts and a termination: each call answered at once, each
   * state reached within libvirt's own time (libvirt alone takes tens of seconds per
   * start on a loaded 2-core host, so the waits are generous; the calls are not).
   */
  async function lifecycle(rounds: number): Promise<void> {
    const r = await quick(() => agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, InstanceCount: 2 }));
    const ids = r.InstanceIdSet!;
    for (const id of ids) await waitForState(agent.client, id, "RUNNING", 120_000);
    for (let round = 0; round < rounds; round++) {
      await quick(() => agent.client.StopInstances({ InstanceIds: ids, StopType: "HARD" }));
      for (const id of ids) await waitForState(agent.client, id, "STOPPED", 90_000);
      await quick(() => agent.client.StartInstances({ InstanceIds: ids }));
      for (const id of ids) await waitForState(agent.client, id, "RUNNING", 120_000);
      // A read is answered at once, whatever the reports are doing.
      const t2 = Date.now();
      await agent.client.DescribeInstances({ InstanceIds: ids });
      expect(Date.now() - t2).toBeLessThan(1_000);
    }
    await quick(() => agent.client.TerminateInstances({ InstanceIds: ids }));
    const deadline = Date.now() + 120_000;
    while ((await agent.client.DescribeInstances({ InstanceIds: ids })).TotalCount !== 0) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  it("keeps operating with bounded reports while the controller never answers", async () => {
    const pid = await agentPid(agent.port);
    const rssBefore = await rssKiB(pid);
    await lifecycle(2);
    // Reports were attempted (and timed out), never more than one connection at a time.
    expect(controller.received.length).toBeGreaterThan(3);
    expect(controller.received.every((r) => !r.answered)).toBe(true);
    expect(controller.maxOpen).toBeLessThanOrEqual(2);
    // Each attempt was cut at report_timeout_ms: no connection is left hanging.
    await new Promise((res) => setTimeout(res, 1_500));
    expect(controller.open).toBeLessThanOrEqual(1);
    const rssAfter = await rssKiB(pid);
    expect(rssAfter - rssBefore, `VmRSS ${rssBefore} -> ${rssAfter} KiB`).toBeLessThan(40 * 1024);
    const log = await readFile(agent.logFile, "utf8");
    expect(log).toMatch(/report to the controller failed; retrying/);
  });

  it("once the controller answers (slowly), the reports account for every one dropped", async () => {
    controller.mode = "slow";
    const hangCount = controller.received.length;
    await lifecycle(1);
    // Wait for a few answered reports (the schedule sends one a second at least).
    const deadline = Date.now() + 60_000;
    while (controller.received.filter((r) => r.answered).length < 3) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((res) => setTimeout(res, 200));
    }
    const slow = controller.received.slice(hangCount);
    const last = [...controller.received].reverse().find((r) => r.answered)!;
    // Every report built before the last one was either delivered or dropped and counted.
    const deliveredBefore = new Set(controller.received.filter((r) => r.answered && r.Sequence < last.Sequence).map((r) => r.Sequence));
    expect(last.Sequence - 1).toBe(deliveredBefore.size + last.Superseded);
    // Reports were dropped while the controller was away, and sequences only go up.
    expect(last.Superseded).toBeGreaterThan(0);
    const seqs = slow.map((r) => r.Sequence);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(controller.maxOpen).toBeLessThanOrEqual(2);
  });
});
