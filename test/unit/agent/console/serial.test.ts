/**
 * The serial console route over a real WebSocket and a real unix socket that stands in for
 * QEMU's serial chardev (one client served at a time, the next waits; what the "guest" prints
 * goes to the log and to the served client), behind the real gateway and tokens. Plus the
 * console log's pieces (DescribeInstanceSerialLog) and the history/live overlap.
 */
import { appendFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { ConsoleGateway } from "../../../../agent/console/gateway.js";
import { incompleteTail, readSerialLog } from "../../../../agent/console/serial-log.js";
import { overlapLength, readHistory, serialRoute, withoutTerminalQueries } from "../../../../agent/console/serial.js";
import { ConsoleTokens } from "../../../../agent/console/tokens.js";

const ID = "ins-abcd1234";
const quiet = { info: () => {}, warn: () => {}, debug: () => {} };

/** QEMU's serial chardev as the agent sees it: one client at a time; the guest echoes a line upper-cased. */
class FakeSerialPort {
  readonly server: Server;
  private active: Socket | undefined;
  private readonly waiting: Socket[] = [];
  constructor(
    readonly path: string,
    readonly log: string,
  ) {
    this.server = createServer((s) => {
      s.on("error", () => {});
      if (this.active) this.waiting.push(s);
      else this.serve(s);
    });
  }
  private serve(s: Socket): void {
    this.active = s;
    s.on("data", (d: Buffer) => this.print(d.toString("utf8").toUpperCase()));
    s.once("close", () => {
      this.active = undefined;
      const next = this.waiting.shift();
      if (next) this.serve(next);
    });
  }
  /** The guest prints: the log always, the served client when there is one. */
  print(text: string): void {
    appendFileSync(this.log, text);
    this.active?.write(text);
  }
  hangUp(): void {
    this.active?.destroy();
  }
  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, r));
  }
}

let dir: string;
let port: FakeSerialPort;
let http: HttpServer;
let tokens: ConsoleTokens;
let base: string;
let state = "RUNNING";

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "cdh-serial-"));
  writeFileSync(join(dir, "console.log"), "SeaBIOS\nCDH-TINY-READY mode=normal\n");
  port = new FakeSerialPort(join(dir, "serial.sock"), join(dir, "console.log"));
  await port.listen();
  tokens = new ConsoleTokens({ registerSecret: () => {} });
  const gateway = new ConsoleGateway({ tokens, logger: quiet, tls: false });
  state = "RUNNING";
  gateway.route(
    serialRoute({
      socketPath: () => port.path,
      consoleLogPath: () => port.log,
      unavailable: (id) => (state === "RUNNING" ? undefined : `instance ${id} is ${state}`),
      logger: quiet,
      settleMs: 50,
    }),
  );
  http = createHttpServer((_req, res) => res.end());
  http.on("upgrade", (req, socket, head) => gateway.handleUpgrade(req, socket, head));
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  base = `ws://127.0.0.1:${(http.address() as { port: number }).port}`;
});

afterEach(async () => {
  http.closeAllConnections();
  await new Promise((r) => http.close(r));
  await new Promise((r) => port.server.close(r));
  await rm(dir, { recursive: true, force: true });
});

/** A client that collects text until it holds `pattern`. */
function session(url: string): Promise<{ ws: WebSocket; text: () => string; until: (p: RegExp) => Promise<string>; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let text = "";
    const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
    ws.on("message", (d: Buffer) => (text += d.toString("utf8")));
    ws.once("unexpected-response", (_q, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once("error", reject);
    ws.once("open", () =>
      resolve({
        ws,
        text: () => text,
        closed,
        until: async (p) => {
          const deadline = Date.now() + 3000;
          while (!p.test(text)) {
            if (Date.now() > deadline) throw new Error(`no ${p} in ${JSON.stringify(text)}`);
            await new Promise((r) => setTimeout(r, 10));
          }
          return text;
        },
      }),
    );
  });
}

describe("serial console route", () => {
  it("sends the console log's history first, then what the guest prints, and types what the client sends", async () => {
    const s = await session(`${base}/serial?s=${tokens.issue("serial", ID).token}`);
    await s.until(/CDH-TINY-READY mode=normal\n/);
    expect(s.text().startsWith("SeaBIOS\nCDH-TINY-READY")).toBe(true);
    s.ws.send("echo hi\n");
    await s.until(/ECHO HI\n/);
    // Printed once, though the log had it by the time it came live.
    expect(s.text().match(/ECHO HI/g)).toHaveLength(1);
    s.ws.close();
  });

  it("refuses a VNC token, a spent token and an instance that is not running", async () => {
    await expect(session(`${base}/serial?s=${tokens.issue("vnc", ID).token}`)).rejects.toThrow(/HTTP 403/);
    const { token } = tokens.issue("serial", ID);
    (await session(`${base}/serial?s=${token}`)).ws.close();
    await expect(session(`${base}/serial?s=${token}`)).rejects.toThrow(/HTTP 403/);
    state = "STOPPED";
    await expect(session(`${base}/serial?s=${tokens.issue("serial", ID).token}`)).rejects.toThrow(/HTTP 503/);
  });

  it("a second session closes the first (4001) and takes the port over", async () => {
    const first = await session(`${base}/serial?s=${tokens.issue("serial", ID).token}`);
    await first.until(/READY/);
    const second = await session(`${base}/serial?s=${tokens.issue("serial", ID).token}`);
    expect(await first.closed).toBe(4001);
    await second.until(/READY/);
    second.ws.send("whoami\n");
    await second.until(/WHOAMI\n/);
    second.ws.close();
  });

  it("closes the session when the guest's port goes away", async () => {
    const s = await session(`${base}/serial?s=${tokens.issue("serial", ID).token}`);
    await s.until(/READY/);
    // The guest stops: QEMU closes its client.
    port.hangUp();
    expect(await s.closed).toBe(4002);
  });
});

describe("console log pieces", () => {
  it("ends a piece at a character boundary and says where the next starts", async () => {
    const log = join(dir, "utf8.log");
    writeFileSync(log, Buffer.concat([Buffer.from("ab"), Buffer.from("é", "utf8").subarray(0, 1)]));
    expect(await readSerialLog(log, 0, 100)).toEqual({ text: "ab", offset: 0, nextOffset: 2, size: 3 });
    appendFileSync(log, Buffer.from("é", "utf8").subarray(1));
    expect(await readSerialLog(log, 2, 100)).toEqual({ text: "é", offset: 2, nextOffset: 4, size: 4 });
    expect(await readSerialLog(log, 9, 100)).toEqual({ text: "", offset: 9, nextOffset: 9, size: 4 });
    expect(await readSerialLog(join(dir, "none.log"), 0, 100)).toEqual({ text: "", offset: 0, nextOffset: 0, size: 0 });
    expect(incompleteTail(Buffer.from("€", "utf8").subarray(0, 2))).toBe(2);
    expect(incompleteTail(Buffer.from("a€", "utf8"))).toBe(0);
  });

  it("history starts at a line start when the log is longer than asked for", async () => {
    const log = join(dir, "long.log");
    writeFileSync(log, "first line\nsecond line\nthird\n");
    expect((await readHistory(log, 10)).toString()).toBe("third\n");
    expect((await readHistory(log, 1000)).toString()).toBe("first line\nsecond line\nthird\n");
  });

  it("leaves the stale terminal queries out of the history (a terminal would answer them into the guest)", () => {
    expect(withoutTerminalQueries("tiny# \x1b[6necho hi\r\nhi\r\n\x1b[1;32mok\x1b[0m \x1b[c\x1b[>0c\x1b[5n")).toBe("tiny# echo hi\r\nhi\r\n\x1b[1;32mok\x1b[0m ");
  });

  it("drops live bytes the history already ends with, only for overlaps long enough to be sure", () => {
    const h = Buffer.from("boot\nlogin: root\nPassword: \nwelcome to tiny\n");
    expect(overlapLength(h, Buffer.from("welcome to tiny\n# "))).toBe(16);
    expect(overlapLength(h, Buffer.from("\n# "))).toBe(0); // one newline in common is not proof
    expect(overlapLength(h, Buffer.from("y\n"))).toBe(2); // all the live bytes are the history's end
    expect(overlapLength(Buffer.alloc(0), Buffer.from("x"))).toBe(0);
  });
});
