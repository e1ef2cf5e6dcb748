/**
 * `cdh-agent console ID`: the instance's serial console in this terminal. It asks the agent for
 * a one-time URL (DescribeInstanceSerialConsoleUrl), opens that WebSocket on the API's own
 * endpoint (client.ts openWebSocket: the same pinned TLS), and then:
 * - the guest's output (the console log's recent history first) goes to stdout as it comes;
 * - what is typed goes to the guest byte for byte, the terminal in raw mode (Ctrl-C, arrows,
 *   tab reach the guest's shell);
 * - Ctrl-] (0x1d) leaves: the session closes and the command exits 0. Input that is not a
 *   terminal (a pipe) is sent as it is; its end leaves too.
 * The agent closing the session (another session replaced this one, the guest stopped, the
 * agent stops) ends the command with exit 1 and the reason on stderr.
 *
 * Nothing of the session is written anywhere but the terminal: what is typed may be a password.
 */
import type WebSocket from "ws";
import { EXIT } from "./args.js";
import { ConsoleRefusedError, type ApiClient } from "./client.js";

/** Ctrl-], as telnet and virsh console take it. */
export const ESCAPE_BYTE = 0x1d;

export interface ConsoleTerminal {
  readonly input: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  readonly output: NodeJS.WritableStream;
  /** Status lines (not the guest's output). */
  err(text: string): void;
}

/** The WebSocket close codes of agent/console/gateway.ts, as the operator reads them. */
const CLOSE_REASONS: Record<number, string> = {
  4001: "another console session was opened for this instance",
  4002: "the instance's serial console is gone (the guest stopped?)",
  1001: "the agent is stopping",
};

/** The URL's path and query: DescribeInstanceSerialConsoleUrl answers it percent-encoded (as InstanceVncUrl). */
export function consolePath(answer: string): string {
  let url: URL;
  try {
    url = new URL(decodeURIComponent(answer));
  } catch {
    throw new Error("the agent answered a console URL that cannot be read");
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`the console URL is not a WebSocket URL (${url.protocol})`);
  return `${url.pathname}${url.search}`;
}

export async function runConsole(client: ApiClient, instanceId: string, term: ConsoleTerminal): Promise<number> {
  const answer = await client.call("DescribeInstanceSerialConsoleUrl", { InstanceId: instanceId });
  const path = consolePath(String(answer.InstanceSerialConsoleUrl ?? ""));
  let ws: WebSocket;
  try {
    ws = await client.openWebSocket(path);
  } catch (error) {
    if (error instanceof ConsoleRefusedError) {
      term.err(`cdh-agent: console: the agent refused the session (HTTP ${error.status}): ${error.text}\n`);
      return EXIT.API_ERROR;
    }
    throw error;
  }
  const { input, output } = term;
  const raw = input.isTTY === true && typeof input.setRawMode === "function";
  term.err(`Connected to ${instanceId}'s serial console. Ctrl-] leaves.\r\n`);
  if (raw) input.setRawMode!(true);
  return new Promise<number>((resolve) => {
    let done = false;
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      input.off("data", onInput);
      input.off("end", onEnd);
      if (raw) input.setRawMode!(false);
      input.pause();
      if (message) term.err(message);
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000, "the operator left");
      resolve(code);
    };
    const onInput = (chunk: Buffer | string) => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      const at = bytes.indexOf(ESCAPE_BYTE);
      const toSend = at < 0 ? bytes : bytes.subarray(0, at);
      if (toSend.length > 0 && ws.readyState === ws.OPEN) ws.send(toSend);
      if (at >= 0) finish(EXIT.OK, `\r\nLeft ${instanceId}'s serial console.\r\n`);
    };
    const onEnd = () => finish(EXIT.OK);
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      output.write(isBinary ? bytes : bytes.toString("utf8"));
    });
    ws.once("close", (code: number, reason: Buffer) => {
      const why = CLOSE_REASONS[code] ?? (reason.length ? reason.toString("utf8") : `closed (code ${code})`);
      finish(EXIT.API_ERROR, `\r\ncdh-agent: console: the agent closed the session: ${why}\r\n`);
    });
    ws.on("error", (e: Error) => finish(EXIT.UNREACHABLE, `\r\ncdh-agent: console: ${e.message}\r\n`));
    input.on("data", onInput);
    input.once("end", onEnd);
    input.resume();
    ws.resume();
  });
}
