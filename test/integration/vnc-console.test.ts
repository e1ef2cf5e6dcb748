/**
 * The VNC console end to end (issue 14 parts 1-2): DescribeInstanceVncUrl's one-time URL, the
 * noVNC page in a real headless Chromium showing the guest's screen (its canvas compared pixel
 * for pixel with a framebuffer fetched straight from QEMU's VNC socket, and a known pattern the
 * guest drew), key combinations from the page's buttons reaching the guest (Ctrl-Alt-F2/F1
 * switch its consoles, Ctrl-Alt-Del reboots it), the token rules (used, expired, another
 * instance's, a foreign Origin: refused), one session per instance, no VNC TCP port, and no
 * token in the agent's log. Two tiny guests.
 */
import { execa } from "execa";
import { readFile, stat, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { Chromium, type ChromiumPage } from "../support/chromium.js";
import { openWebSocket, RfbClient } from "../support/rfb.js";
import { serialLogSize, TINY_READY_PATTERN, waitForSerial } from "../support/serial.js";
import { SerialLink } from "../support/serial-link.js";
import { agentWithTinyGuests } from "../support/tiny-guests.js";

/** VGA text mode: 720 × 400, 9 × 16 character cells; colour 1 is red (#aa0000 in 6-bit DAC steps: 168, 0, 0). */
const isRed = ([r, g, b]: [number, number, number]) => r >= 160 && g === 0 && b === 0;
/**
 * What the guest draws on tty1: the screen cleared, the cursor hidden, ten red cells, a word; and
 * a word on tty2, which opening allocates (the kernel switches only to allocated consoles).
 */
const PATTERN_CMD = String.raw`printf '\033[2J\033[H\033[?25l\033[41m          \033[0m\nCDH-VNC-OK' >/dev/tty1; printf '\033[?25lCDH-VNC-TTY2' >/dev/tty2`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The instance's framebuffer, fetched over RFB straight from QEMU's VNC socket. */
async function directFramebuffer(socketPath: string): Promise<RfbClient> {
  const rfb = await RfbClient.overUnixSocket(socketPath);
  await rfb.requestUpdate(false);
  rfb.close();
  return rfb;
}

/** Whether the guest's pattern is on the screen: the red cells at the top left, black after them, text below. */
function showsPattern(fb: { width: number; height: number; pixel(x: number, y: number): [number, number, number] }): boolean {
  for (const [x, y] of [[0, 0], [45, 8], [89, 15]] as const) if (!isRed(fb.pixel(x, y))) return false;
  if (fb.pixel(95, 8).join() !== "0,0,0") return false;
  let lit = 0;
  for (let y = 16; y < 32; y++) for (let x = 0; x < 90; x++) if (fb.pixel(x, y).some((c) => c > 0)) lit++;
  return lit > 50;
}

/** The page's canvas as RGBA. */
async function pageCanvas(page: ChromiumPage): Promise<{ width: number; height: number; data: Buffer } | null> {
  const r = await page.evaluate<{ w: number; h: number; b64: string } | null>(`(() => {
    const c = document.querySelector("#screen canvas");
    if (!c || !c.width) return null;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let s = "";
    for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
    return { w: c.width, h: c.height, b64: btoa(s) };
  })()`);
  return r && { width: r.w, height: r.h, data: Buffer.from(r.b64, "base64") };
}

function asPixels(img: { width: number; height: number; data: Buffer }) {
  return { width: img.width, height: img.height, pixel: (x: number, y: number) => [img.data[(y * img.width + x) * 4]!, img.data[(y * img.width + x) * 4 + 1]!, img.data[(y * img.width + x) * 4 + 2]!] as [number, number, number] };
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`${what} within ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
}

/** A handshake's refusal status (0 when it was accepted, and then closed). */
async function handshakeStatus(url: string, origin?: string): Promise<number> {
  try {
    const ws = await openWebSocket(url, origin ? { origin } : {});
    ws.close();
    return 0;
  } catch (e) {
    const status = (e as { status?: number }).status;
    if (status === undefined) throw e;
    return status;
  }
}

describe("the VNC console", () => {
  let agent: AgentProcess;
  let ids: string[] = [];
  let browser: Chromium | undefined;
  const tokens: string[] = [];
  /** Issued first, used last: by then more than 15 s old. */
  let stale: { url: string; at: number };

  /** DescribeInstanceVncUrl's answer as it came (percent-encoded). */
  const rawVncUrl = async (instanceId: string): Promise<string> => {
    const { InstanceVncUrl } = await agent.client.DescribeInstanceVncUrl({ InstanceId: instanceId });
    tokens.push(new URL(decodeURIComponent(InstanceVncUrl!)).searchParams.get("s")!);
    return InstanceVncUrl!;
  };
  const vncUrl = async (instanceId: string): Promise<string> => decodeURIComponent(await rawVncUrl(instanceId));
  const socketOf = (id: string) => `${agent.dataDir}/vnc/${id}.sock`;
  const consoleLog = (id: string) => `${agent.dataDir}/instances/${id}/console.log`;

  beforeAll(async () => {
    ({ agent, ids } = await agentWithTinyGuests({ repoRoot: inject("repoRoot"), imageName: "vnc-console", count: 2 }));
    stale = { url: await vncUrl(ids[0]!), at: Date.now() };
    const link = await SerialLink.open(ids[0]!);
    try {
      link.write(`${PATTERN_CMD}\n`);
    } finally {
      await sleep(300);
      link.close();
    }
    browser = await Chromium.launch();
  });

  afterAll(async () => {
    await browser?.close();
    await agent?.shutdown();
  });

  it("listens on a unix socket under the data directory, never on a TCP port", async () => {
    const xml = (await execa("virsh", ["-c", "qemu:///system", "dumpxml", ids[0]!])).stdout;
    const graphics = /<graphics type='vnc'[^>]*>[\s\S]*?<\/graphics>/.exec(xml)?.[0] ?? "";
    expect(graphics).toContain(`<listen type='socket' socket='${socketOf(ids[0]!)}'/>`);
    expect(graphics).not.toMatch(/port=|type='address'/);
    expect(xml).toMatch(/<video>\s*<model type='vga'/);
    const dir = await stat(`${agent.dataDir}/vnc`);
    expect(dir.mode & 0o777).toBe(0o700);
    expect((await stat(socketOf(ids[0]!))).isSocket()).toBe(true);
    // No QEMU (nor anything else on a VNC port) listens on TCP in the test host.
    const listening = (await execa("ss", ["-Hltnp"])).stdout;
    expect(listening).not.toMatch(/qemu/);
    expect(listening).not.toMatch(/:59\d\d\s/);
  });

  it("opens the guest's screen in headless Chromium from one URL: the page shows what QEMU shows", async () => {
    const direct = await waitUntil("the guest's pattern on its screen", async () => {
      const fb = await directFramebuffer(socketOf(ids[0]!));
      return showsPattern(fb) ? fb : undefined;
    });
    expect([direct.width, direct.height]).toEqual([720, 400]);

    const InstanceVncUrl = await rawVncUrl(ids[0]!);
    expect(decodeURIComponent(InstanceVncUrl)).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${agent.port}/vnc\\?s=[A-Za-z0-9_-]{43}&InstanceId=${ids[0]}$`));
    // As the seeds' page takes it: the answer appended as it came.
    const page = await browser!.open(`http://127.0.0.1:${agent.port}/console/vnc.html?InstanceVncUrl=${InstanceVncUrl}`);
    await waitUntil("the page connected", async () => ((await page.evaluate<string>("window.cdhConsole?.state")) === "connected" ? true : undefined));
    // The token left the address bar at once.
    expect(await page.evaluate<string>("location.href")).toBe(`http://127.0.0.1:${agent.port}/console/vnc.html`);
    const shown = await waitUntil("the guest's screen in the page's canvas", async () => {
      const img = await pageCanvas(page);
      return img && showsPattern(asPixels(img)) ? img : undefined;
    });
    expect([shown.width, shown.height]).toEqual([direct.width, direct.height]);
    let differing = 0;
    for (let i = 0; i < shown.data.length; i += 4) {
      if (shown.data[i] !== direct.framebuffer[i] || shown.data[i + 1] !== direct.framebuffer[i + 1] || shown.data[i + 2] !== direct.framebuffer[i + 2]) differing++;
    }
    expect(differing).toBe(0);
    await writeFile(`${agent.dataDir}/../vnc-page.png`, await page.screenshot());

    // Ctrl-Alt-F2 from the page's list shows the guest's (empty) second console, Ctrl-Alt-F1 the first again.
    await page.evaluate(`(() => { const s = document.getElementById("combo"); s.value = "ctrl-alt-f2"; s.dispatchEvent(new Event("change")); })()`);
    await waitUntil("tty2 on the screen after Ctrl-Alt-F2", async () => (showsPattern(await directFramebuffer(socketOf(ids[0]!))) ? undefined : true));
    await page.evaluate(`window.cdhConsole.send("ctrl-alt-f1")`);
    await waitUntil("tty1 back after Ctrl-Alt-F1", async () => (showsPattern(await directFramebuffer(socketOf(ids[0]!))) ? true : undefined));

    // The page's Ctrl-Alt-Del button reaches the guest's kernel, which reboots (its default). First
    // a pause: QEMU keeps one keyboard state for all of a display's VNC clients and releases every
    // held key when any client disconnects (vnc_disconnect_finish: qkbd_state_lift_all_keys); the
    // last direct client above closing while the page's keys arrive put a Ctrl release between
    // Ctrl and Delete (QEMU's trace: 14, F0 14, 11, E0 71 …), and the guest saw no Ctrl-Alt-Del.
    await sleep(1_000);
    const before = await serialLogSize(consoleLog(ids[0]!));
    await page.evaluate(`document.querySelector('button[data-keys="ctrl-alt-del"]').click()`);
    await waitForSerial(consoleLog(ids[0]!), TINY_READY_PATTERN, { fromOffset: before, timeoutMs: 60_000 });
    expect(await page.evaluate<string[]>("window.cdhConsole.combosSent")).toEqual(["ctrl-alt-f2", "ctrl-alt-f1", "ctrl-alt-del"]);
    await page.close();
  });

  it("refuses a used token, a token for another instance and a foreign Origin", async () => {
    const used = await vncUrl(ids[1]!);
    const first = await openWebSocket(used);
    first.close();
    expect(await handshakeStatus(used)).toBe(403);

    const a = await vncUrl(ids[0]!);
    const forB = a.replace(`InstanceId=${ids[0]}`, `InstanceId=${ids[1]}`);
    expect(await handshakeStatus(forB)).toBe(403);
    // Tried for the wrong instance, the token is spent for its own as well.
    expect(await handshakeStatus(a)).toBe(403);

    expect(await handshakeStatus(await vncUrl(ids[1]!), "http://evil.example")).toBe(403);
    expect(await handshakeStatus(await vncUrl(ids[1]!), `http://localhost:${agent.port}`)).toBe(403);
    expect(await handshakeStatus(await vncUrl(ids[1]!), `http://127.0.0.1:${agent.port}`)).toBe(0);
    expect(await handshakeStatus(`ws://127.0.0.1:${agent.port}/vnc?s=${"A".repeat(43)}`)).toBe(403);
  });

  it("gives one session per instance: a new session closes the one before it", async () => {
    const one = await RfbClient.overWebSocket(await vncUrl(ids[1]!));
    await one.client.requestUpdate(false);
    const closedOne = new Promise<number>((resolve) => one.ws.once("close", (code: number) => resolve(code)));
    const two = await RfbClient.overWebSocket(await vncUrl(ids[1]!));
    expect(await closedOne).toBe(4001);
    const update = await two.client.requestUpdate(false);
    expect(update.rects).toBeGreaterThan(0);
    // The other instance's session is not touched by either.
    const other = await RfbClient.overWebSocket(await vncUrl(ids[0]!));
    await other.client.requestUpdate(false);
    expect(two.ws.readyState).toBe(two.ws.OPEN);
    for (const s of [two, other]) s.ws.close();
  });

  it("refuses a token after its 15 seconds", async () => {
    const age = Date.now() - stale.at;
    if (age < 15_500) await sleep(15_500 - age);
    expect(await handshakeStatus(stale.url)).toBe(403);
  });

  it("never writes a token into its log", async () => {
    const log = await readFile(agent.logFile, "utf8");
    expect(tokens.length).toBeGreaterThan(5);
    expect(log).toMatch(/console session opened/);
    for (const t of tokens) expect(log).not.toContain(t);
    expect(log).not.toMatch(/vnc\?s=/);
  });
});
