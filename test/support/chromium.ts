/**
 * Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol with the
 * `ws` client: open a page, evaluate JavaScript in it, take a screenshot. Enough for tests
 * that need a real browser (the VNC console page), without a browser-automation dependency.
 */
import { execa, type ResultPromise } from "execa";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocket } from "ws";

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

export class Chromium {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(
    private readonly child: ResultPromise,
    private readonly ws: WebSocket,
    private readonly profile: string,
  ) {
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as { id?: number; result?: Record<string, unknown>; error?: { message: string } };
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`DevTools: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
    });
    ws.on("close", () => {
      for (const p of this.pending.values()) p.reject(new Error("DevTools connection closed"));
      this.pending.clear();
    });
  }

  /** Starts a headless Chromium with a throw-away profile; resolves once DevTools answers. */
  static async launch(timeoutMs = 30_000): Promise<Chromium> {
    const profile = await mkdtemp(join(tmpdir(), "cdh-chromium-"));
    const child = execa(
      "chromium",
      [
        "--headless=new",
        // Running as root (the test host) needs it; the page is the agent's own.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--window-size=1024,768",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      { reject: false, stdin: "ignore", stdout: "ignore", stderr: "pipe", cleanup: true },
    );
    const endpoint = await new Promise<string>((resolve, reject) => {
      let seen = "";
      const timer = setTimeout(() => reject(new Error(`chromium did not start within ${timeoutMs} ms: ${seen.slice(-2000)}`)), timeoutMs);
      child.stderr!.on("data", (chunk: Buffer) => {
        seen += chunk.toString();
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(seen);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      void child.then((r) => {
        clearTimeout(timer);
        reject(new Error(`chromium exited (${r.exitCode ?? r.signal}): ${seen.slice(-2000)}`));
      });
    });
    const ws = new WebSocket(endpoint, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    return new Chromium(child, ws, profile);
  }

  /** One DevTools command (on a page's session when sessionId is given). */
  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /** Opens a URL in a new tab. */
  async open(url: string): Promise<ChromiumPage> {
    const { targetId } = (await this.send("Target.createTarget", { url })) as { targetId: string };
    const { sessionId } = (await this.send("Target.attachToTarget", { targetId, flatten: true })) as { sessionId: string };
    return new ChromiumPage(this, sessionId, targetId);
  }

  async close(): Promise<void> {
    this.ws.close();
    this.child.kill("SIGTERM");
    const killer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await this.child;
    clearTimeout(killer);
    await rm(this.profile, { recursive: true, force: true });
  }
}

export class ChromiumPage {
  constructor(
    private readonly browser: Chromium,
    private readonly sessionId: string,
    readonly targetId: string,
  ) {}

  /** Evaluates an expression (awaiting a promise) and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.browser.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, this.sessionId)) as {
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  }

  /** A PNG of the page as it is shown. */
  async screenshot(): Promise<Buffer> {
    const { data } = (await this.browser.send("Page.captureScreenshot", { format: "png" }, this.sessionId)) as { data: string };
    return Buffer.from(data, "base64");
  }

  async close(): Promise<void> {
    await this.browser.send("Target.closeTarget", { targetId: this.targetId });
  }
}
