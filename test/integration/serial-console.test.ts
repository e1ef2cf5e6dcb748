/**
 * The serial console (issue 14 part 3) against a real agent and two tiny guests: a one-time
 * URL from DescribeInstanceSerialConsoleUrl opens a WebSocket text session on the guest's
 * serial port (the domain's unix socket) that sends the console log's history first, then what
 * the guest prints, and types what the client sends; used, expired, VNC and other-instance
 * tokens open nothing else; a second session closes the first. Then the operator's
 * `cdh-agent console ID` driven in a real terminal (tmux: raw mode, Ctrl-] leaves with 0) and
 * `cdh-agent logs ID` (text, --tail, --json).
 */
import { execa } from "execa";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";
import { commonClient, importImage, SECRET_ID, SECRET_KEY, startAgentProcess, waitForState, type AgentProcess } from "../support/agent-process.js";
import { GuestConsole } from "../support/guest-console.js";
import { TINY_READY_PATTERN, waitForSerial } from "../support/serial.js";
import { ensureTinyImages } from "../support/tiny-image.js";

const repoRoot = inject("repoRoot");
let agent: AgentProcess;
let configFile = "";
/** Two running guests: their IDs and SMBIOS UUIDs (the tiny guest prints its UUID in its READY line). */
const guests: Array<{ id: string; uuid: string }> = [];

const consoleLog = (id: string) => join(agent.dataDir, "instances", id, "console.log");

async function serialUrl(id: string): Promise<string> {
  const r = (await commonClient(agent.port).request("DescribeInstanceSerialConsoleUrl", { InstanceId: id })) as { InstanceSerialConsoleUrl: string };
  return decodeURIComponent(r.InstanceSerialConsoleUrl);
}

interface Session {
  ws: WebSocket;
  /** Every text frame so far, in order. */
  frames: string[];
  text(): string;
  until(pattern: RegExp, timeoutMs?: number): Promise<void>;
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens a console URL; rejects with the HTTP status when the agent refuses the handshake. */
function openSession(url: string): Promise<Session> {
  return new Promise((resolvePromise, reject) => {
    const ws = new WebSocket(url);
    const frames: string[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      expect(isBinary).toBe(false); // a text session
      frames.push(data.toString("utf8"));
    });
    ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once("error", reject);
    ws.once("open", () => {
      const text = () => frames.join("");
      resolvePromise({
        ws,
        frames,
        text,
        closed,
        async until(pattern, timeoutMs = 20_000) {
          const deadline = Date.now() + timeoutMs;
          while (!pattern.test(text())) {
            if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms; the session said ${JSON.stringify(text().slice(-600))}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        },
      });
    });
  });
}

/** Runs the built CLI with only PATH and HOME (the config file says the rest). */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await execa("node", [resolve(repoRoot, "dist/agent/cli.js"), ...args, "--config", configFile], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
    extendEnv: false,
    reject: false,
    timeout: 60_000,
  });
  return { code: r.exitCode ?? -1, out: r.stdout, err: r.stderr };
}

beforeAll(async () => {
  const tiny = (await ensureTinyImages()).raw.normal;
  agent = await startAgentProcess({ repoRoot, env: { CDH_AGENT_RECONCILE_INTERVAL_S: "3600" } });
  await writeFile(join(agent.dataDir, "api-credentials.json"), JSON.stringify({ secret_id: SECRET_ID, secret_key: SECRET_KEY }), { mode: 0o600 });
  configFile = join(agent.dataDir, "..", "serial-cli-config.json");
  await writeFile(configFile, JSON.stringify({ data_dir: agent.dataDir, api_listen: `127.0.0.1:${agent.port}`, host_id: agent.hostId }));
  const imageId = await importImage(agent.client, tiny, "serial-tiny");
  const ids = (await agent.client.RunInstances({ InstanceType: "CDH_1C1G", ImageId: imageId, SystemDisk: { DiskSize: 1 }, InstanceCount: 2, InstanceName: "serial" })).InstanceIdSet!;
  for (const id of ids) {
    await waitForState(agent.client, id, "RUNNING");
    const ready = await waitForSerial(consoleLog(id), TINY_READY_PATTERN, { timeoutMs: 90_000 });
    guests.push({ id, uuid: ready[4]! });
  }
}, 240_000);

afterAll(async () => {
  await agent?.shutdown();
});

describe("the serial console session", () => {
  it("sends the console history first, then what the guest prints, and types what the client sends", async () => {
    const [a] = guests;
    const s = await openSession(await serialUrl(a!.id));
    await s.until(/CDH-TINY-READY/);
    // The first frame is the log's history: the boot's READY line with this guest's UUID.
    expect(s.frames[0]).toMatch(new RegExp(`CDH-TINY-READY mode=normal .*uuid=${a!.uuid} `));
    // The guest's serial reader runs a line in sh; only the guest computes 6*7.
    s.ws.send("echo serial-$((6*7))\n");
    await s.until(/serial-42\r?\n/);
    // The shell mode made for people: echo and a prompt.
    s.ws.send("cdh-shell\n");
    await s.until(/tiny# /);
    s.ws.send("echo shell-$((40+3))\n");
    await s.until(/echo shell-\$\(\(40\+3\)\)\r?\n(?:.|\n)*shell-43\r?\n/);
    s.ws.send("exit\n");
    await s.until(/exit\r?\n/);
    s.ws.close();
    await s.closed;
    // The log has it all too (libvirt's <log>), which is what `logs` reads.
    expect(await readFile(consoleLog(a!.id), "utf8")).toMatch(/shell-43/);
  });

  it("refuses a used, an expired and a VNC token; a token opens only its own instance", async () => {
    const [a, b] = guests;
    const used = await serialUrl(a!.id);
    const first = await openSession(used);
    first.ws.close();
    await first.closed;
    await expect(openSession(used)).rejects.toThrow(/HTTP 403/);

    // A's token in a URL naming B opens nothing (and is spent).
    const forB = new URL(await serialUrl(a!.id));
    expect(forB.searchParams.get("InstanceId")).toBe(a!.id);
    forB.searchParams.set("InstanceId", b!.id);
    await expect(openSession(forB.href)).rejects.toThrow(/HTTP 403/);

    // B's token opens B: B's history, none of A's.
    const other = await openSession(await serialUrl(b!.id));
    await other.until(/CDH-TINY-READY/);
    expect(other.text()).toContain(`uuid=${b!.uuid} `);
    expect(other.text()).not.toContain(a!.uuid);
    other.ws.close();

    // A VNC token is not a serial token.
    const vnc = decodeURIComponent(((await commonClient(agent.port).request("DescribeInstanceVncUrl", { InstanceId: a!.id })) as { InstanceVncUrl: string }).InstanceVncUrl);
    const token = new URL(vnc).searchParams.get("s")!;
    const serialWithVncToken = new URL(await serialUrl(a!.id));
    serialWithVncToken.searchParams.set("s", token);
    await expect(openSession(serialWithVncToken.href)).rejects.toThrow(/HTTP 403/);

    // Unused for 15 s: expired.
    const late = await serialUrl(a!.id);
    await new Promise((r) => setTimeout(r, 15_500));
    await expect(openSession(late)).rejects.toThrow(/HTTP 403/);
  }, 60_000);

  it("a second session on the instance closes the first, and the second has the port", async () => {
    const [a] = guests;
    const first = await openSession(await serialUrl(a!.id));
    await first.until(/CDH-TINY-READY/);
    const second = await openSession(await serialUrl(a!.id));
    const closed = await first.closed;
    expect(closed.code).toBe(4001);
    second.ws.send("echo second-$((50+5))\n");
    await second.until(/second-55\r?\n/);
    expect(first.text()).not.toMatch(/second-55/);
    second.ws.close();
    await second.closed;
    // Between sessions the port is free for the tests' own line to it (test/support/serial-link.ts).
    const own = await GuestConsole.open(a!.id);
    try {
      expect(await own.run("echo link-$((1+1))")).toMatch(/link-2/);
    } finally {
      own.close();
    }
  });
});

describe("cdh-agent console and logs", () => {
  const tmuxSocket = `cdh-serial-${process.pid}`;
  const tmux = (...args: string[]) => execa("tmux", ["-L", tmuxSocket, ...args], { timeout: 10_000 });
  afterAll(async () => {
    await tmux("kill-server").catch(() => undefined);
  });

  async function paneUntil(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let pane = "";
    while (Date.now() < deadline) {
      pane = (await tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", "serial")).stdout;
      if (pattern.test(pane)) return pane;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`no ${pattern} in the tmux pane within ${timeoutMs} ms:\n${pane}`);
  }

  it("console: the guest's serial console in a terminal; typed commands run; Ctrl-] leaves with exit code 0", async () => {
    const [a] = guests;
    const command = `node ${resolve(repoRoot, "dist/agent/cli.js")} console ${a!.id} --config ${configFile}; echo CLI-EXIT=$?; sleep 60`;
    await tmux("new-session", "-d", "-s", "serial", "-x", "160", "-y", "50", command);
    await paneUntil(/Ctrl-\] leaves/);
    await paneUntil(/CDH-TINY-READY/); // the history
    await tmux("send-keys", "-t", "serial", "echo tmux-$((5+5))", "Enter");
    await paneUntil(/^tmux-10\s*$/m);
    await tmux("send-keys", "-t", "serial", "C-]");
    const pane = await paneUntil(/CLI-EXIT=\d+/);
    expect(pane).toMatch(/CLI-EXIT=0/);
  });

  it("logs prints the serial log (text, --tail, --json)", async () => {
    const [a] = guests;
    const text = await cli(["logs", a!.id]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(TINY_READY_PATTERN);
    expect(text.out).toMatch(/^tmux-10\r?$/m);
    const tail = await cli(["logs", a!.id, "--tail", "2"]);
    expect(tail.out.split("\n").filter(Boolean)).toHaveLength(2);
    const json = JSON.parse((await cli(["logs", a!.id, "--json"])).out) as { InstanceId: string; Log: string; NextOffset: number; Size: number };
    // The log only grows: what was printed is its beginning.
    const file = await readFile(consoleLog(a!.id), "utf8");
    expect(file.startsWith(text.out)).toBe(true);
    expect(json.InstanceId).toBe(a!.id);
    expect(file.startsWith(json.Log)).toBe(true);
    expect(json.NextOffset).toBe(Buffer.byteLength(json.Log));
    const missing = await cli(["logs", "ins-00000000"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/InvalidInstanceId\.NotFound/);
  });
});
