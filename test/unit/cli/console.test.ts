/**
 * `cdh-agent console`: the URL's path and query taken from the agent's percent-encoded answer,
 * and the session against a real WebSocket server standing in for the agent's /serial route:
 * output to the terminal, input to the server, Ctrl-] leaves with 0 (what came before it is
 * sent), the agent closing the session exits 1 with the reason.
 */
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { EXIT } from "../../../agent/cli/args.js";
import type { ApiClient } from "../../../agent/cli/client.js";
import { consolePath, runConsole } from "../../../agent/cli/console.js";

let server: WebSocketServer;
let port = 0;
let onSession: (ws: WebSocket, url: string) => void = () => {};

beforeEach(async () => {
  server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  server.on("connection", (ws, req) => onSession(ws, req.url ?? ""));
  await new Promise<void>((r) => server.once("listening", () => r()));
  port = (server.address() as { port: number }).port;
});

afterEach(async () => {
  for (const c of server.clients) c.terminate();
  await new Promise((r) => server.close(r));
});

function client(): ApiClient {
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async call(action, params) {
      expect(action).toBe("DescribeInstanceSerialConsoleUrl");
      expect(params).toEqual({ InstanceId: "ins-abcd1234" });
      return { InstanceSerialConsoleUrl: encodeURIComponent("ws://203.0.113.9:8443/serial?s=tok_en-1"), RequestId: "r" };
    },
    openWebSocket: (path) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
        ws.once("open", () => {
          ws.pause(); // as client.ts hands it over
          resolve(ws);
        });
        ws.once("error", reject);
      }),
  };
}

function terminal() {
  const input = new PassThrough();
  const output = new PassThrough();
  let shown = "";
  let status = "";
  output.on("data", (d: Buffer) => (shown += d.toString()));
  return { term: { input, output, err: (t: string) => void (status += t) }, input, shown: () => shown, status: () => status };
}

describe("console", () => {
  it("takes the path and query of the percent-encoded URL (the API's own endpoint is used)", () => {
    expect(consolePath(encodeURIComponent("wss://agent.example:8443/serial?s=abc"))).toBe("/serial?s=abc");
    expect(() => consolePath(encodeURIComponent("https://x/serial"))).toThrow(/not a WebSocket URL/);
  });

  it("shows what the guest prints, types what is typed, and leaves on Ctrl-] with 0", async () => {
    const typed: string[] = [];
    let url = "";
    onSession = (ws, u) => {
      url = u;
      ws.send("history\r\nlogin: ");
      ws.on("message", (d: Buffer) => typed.push(d.toString()));
    };
    const t = terminal();
    const done = runConsole(client(), "ins-abcd1234", t.term);
    while (!t.shown().includes("login: ")) await new Promise((r) => setTimeout(r, 10));
    t.input.write("root\r");
    t.input.write(Buffer.from([0x61, 0x1d, 0x62])); // "a", Ctrl-], "b": only "a" goes
    expect(await done).toBe(EXIT.OK);
    expect(url).toBe("/serial?s=tok_en-1");
    expect(t.shown()).toBe("history\r\nlogin: ");
    await new Promise((r) => setTimeout(r, 50));
    expect(typed.join("")).toBe("root\ra");
    expect(t.status()).toMatch(/Ctrl-\] leaves[\s\S]*Left ins-abcd1234's serial console/);
  });

  it("exits 1 with the reason when the agent closes the session (another session was opened)", async () => {
    onSession = (ws) => setTimeout(() => ws.close(4001, "another console session was opened for this instance"), 20);
    const t = terminal();
    expect(await runConsole(client(), "ins-abcd1234", t.term)).toBe(EXIT.API_ERROR);
    expect(t.status()).toMatch(/the agent closed the session: another console session was opened for this instance/);
  });
});
