/**
 * The serial console route (`/serial?s=<token>`): a WebSocket text session on the instance's
 * serial port, so that a guest that never brings its network up can still be reached.
 *
 * The port is a unix socket QEMU listens on (`<data_dir>/instances/<id>/serial.sock`, the
 * domain XML's `<serial type='unix'>` with its `<log>`): QEMU serves one client at a time and
 * writes every byte to the console log whether a client is there or not. A session:
 *
 * 1. takes the port over: the instance's previous session (the gateway closes its WebSocket
 *    with 4001) lets go of the socket first, so QEMU accepts the new client at once;
 * 2. sends the history: the console log's last `historyBytes` (from a line start), read a
 *    moment after connecting, so that what the guest printed before is there and what it
 *    prints from now on comes live (bytes seen in both are sent once). The terminal queries in
 *    it are left out (a shell's cursor-position request, ESC[6n): they are stale, and the
 *    client's terminal would answer them into the guest's input;
 * 3. bridges: what the guest prints goes out as text frames (UTF-8; a character split across
 *    reads is kept whole; bytes that are not UTF-8 become U+FFFD), what the client sends (text
 *    or binary frames) goes to the port as bytes.
 *
 * What is typed may be a password and what the guest prints may be a secret: nothing here
 * logs session content, only that a session opened or closed, and its byte counts.
 */
import { open, stat } from "node:fs/promises";
import type { Socket } from "node:net";
import { StringDecoder } from "node:string_decoder";
import type { WebSocket } from "ws";
import { CLOSE_CONSOLE_GONE, ConsoleUnavailable, type ConsoleLogger, type ConsoleRoute, type ConsoleSession, type PreparedSession } from "./gateway.js";
import { connectUnixSocket } from "./unix-socket.js";

export interface SerialRouteOptions {
  /** The domain's serial socket (DataPaths.serialSocket). */
  readonly socketPath: (instanceId: string) => string;
  /** The console log libvirt writes (DataPaths.consoleLog). */
  readonly consoleLogPath: (instanceId: string) => string;
  /** Why an instance's console cannot be opened now (not running, gone), or undefined when it can. */
  readonly unavailable: (instanceId: string) => string | undefined;
  readonly logger: ConsoleLogger;
  /** The console log's tail sent first, bytes. Default 64 KiB. */
  readonly historyBytes?: number;
  /** After connecting, before the history is read: QEMU accepts the client in this time. Default 150 ms. */
  readonly settleMs?: number;
  /** Until the serial socket answers, ms. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /** Bytes queued toward the client before the serial socket is paused. Default 1 MiB. */
  readonly highWaterBytes?: number;
}

/** Overlaps shorter than this between the history's end and the first live bytes are kept twice rather than risk dropping bytes. */
const MIN_OVERLAP = 16;

export function serialRoute(o: SerialRouteOptions): ConsoleRoute {
  const historyBytes = o.historyBytes ?? 64 * 1024;
  const settleMs = o.settleMs ?? 150;
  const connectTimeoutMs = o.connectTimeoutMs ?? 5_000;
  const highWater = o.highWaterBytes ?? 1024 * 1024;
  /** instanceId → the serial socket its current session holds. */
  const held = new Map<string, Socket>();

  return {
    path: "/serial",
    kind: "serial",
    async prepare(session: ConsoleSession): Promise<PreparedSession> {
      const why = o.unavailable(session.instanceId);
      if (why !== undefined) throw new ConsoleUnavailable(why);
      const path = o.socketPath(session.instanceId);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isSocket()) {
        // A definition from before the serial console has a pty instead (it gets the socket when it is defined again).
        throw new ConsoleUnavailable("the instance has no serial console socket (not running, or defined before the serial console)");
      }
      let aborted = false;
      return {
        attach: (ws) => {
          if (aborted) return;
          // The older session lets go of the port first: QEMU then accepts this one at once.
          held.get(session.instanceId)?.destroy();
          // What the client sends while the port is being connected waits for it (run() resumes).
          ws.pause();
          void run(ws, session, path).catch((error: unknown) => {
            o.logger.warn({ err: error, instanceId: session.instanceId, remote: session.remote }, "serial console session failed");
            ws.resume();
            ws.close(CLOSE_CONSOLE_GONE, "the instance's serial port cannot be reached");
          });
        },
        abort: () => {
          aborted = true;
        },
      };
    },
  };

  async function run(ws: WebSocket, session: ConsoleSession, path: string): Promise<void> {
    const { instanceId } = session;
    const socket = await connectSerial(path, connectTimeoutMs);
    if (ws.readyState !== ws.OPEN) {
      socket.destroy();
      ws.resume();
      return;
    }
    held.set(instanceId, socket);
    const decoder = new StringDecoder("utf8");
    let toClient = 0;
    let toGuest = 0;
    let early: Buffer[] | undefined = [];
    const send = (bytes: Buffer) => {
      const text = decoder.write(bytes);
      if (text === "" || ws.readyState !== ws.OPEN) return;
      toClient += bytes.length;
      ws.send(text, () => {
        if (socket.isPaused() && ws.bufferedAmount < highWater / 2) socket.resume();
      });
      if (ws.bufferedAmount >= highWater) socket.pause();
    };
    socket.on("data", (chunk: Buffer) => {
      if (early) early.push(chunk);
      else send(chunk);
    });
    const ended = () => {
      if (held.get(instanceId) === socket) held.delete(instanceId);
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(CLOSE_CONSOLE_GONE, "the instance's serial port closed");
    };
    socket.once("close", ended);
    socket.on("error", () => socket.destroy());
    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[]) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (bytes.length === 0 || socket.destroyed) return;
      toGuest += bytes.length;
      if (!socket.write(bytes)) {
        ws.pause();
        socket.once("drain", () => ws.resume());
      }
    });
    ws.resume();
    ws.once("close", (code: number) => {
      socket.off("close", ended);
      socket.destroy();
      if (held.get(instanceId) === socket) held.delete(instanceId);
      // Byte counts only: the content may hold a password.
      o.logger.info({ instanceId, remote: session.remote, code, bytesToClient: toClient, bytesToGuest: toGuest }, "serial console session ended");
    });

    // QEMU accepts the client once the older one is gone; what the guest printed until then is in the log.
    await new Promise((r) => setTimeout(r, settleMs));
    const history = await readHistory(o.consoleLogPath(instanceId), historyBytes);
    const live = Buffer.concat(early);
    early = undefined;
    if (ws.readyState !== ws.OPEN) return;
    if (history.length > 0) {
      const text = withoutTerminalQueries(new StringDecoder("utf8").end(history));
      toClient += history.length;
      if (text) ws.send(text);
    }
    const overlap = overlapLength(history, live);
    if (live.length > overlap) send(live.subarray(overlap));
  }
}

/** Device status and attributes requests (CSI … n, CSI … c): a terminal answers them on its input. */
const TERMINAL_QUERY = /\x1b\[[0-9;?>=]*[nc]/g;

export function withoutTerminalQueries(text: string): string {
  return text.replace(TERMINAL_QUERY, "");
}

async function connectSerial(path: string, timeoutMs: number): Promise<Socket> {
  try {
    return await connectUnixSocket(path, timeoutMs);
  } catch (error) {
    throw new Error(`the serial socket cannot be reached (${(error as NodeJS.ErrnoException).code ?? "error"})`);
  }
}

/** The log's last `max` bytes, from the first line start in them (the whole log when it is smaller). */
export async function readHistory(path: string, max: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return Buffer.alloc(0);
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const start = Math.max(0, size - max);
    const buf = Buffer.alloc(size - start);
    const { bytesRead } = await handle.read(buf, 0, buf.length, start);
    const tail = buf.subarray(0, bytesRead);
    if (start === 0) return tail;
    const nl = tail.indexOf(0x0a);
    return nl < 0 ? tail : tail.subarray(nl + 1);
  } finally {
    await handle.close();
  }
}

/**
 * How many of the first live bytes the history already ends with (QEMU wrote them to the log
 * and to this client alike): the longest such overlap of at least MIN_OVERLAP bytes (or of
 * all the live bytes), else 0.
 */
export function overlapLength(history: Buffer, live: Buffer): number {
  const most = Math.min(history.length, live.length, 4096);
  for (let k = most; k > 0; k--) {
    if (k < MIN_OVERLAP && k < live.length) return 0;
    if (history.subarray(history.length - k).equals(live.subarray(0, k))) return k;
  }
  return 0;
}
