/**
 * The VNC console route (`/vnc?s=<token>`): a WebSocket carrying the RFB protocol, bridged byte
 * for byte to the domain's VNC server, which listens on a unix socket under the data directory
 * (`<data_dir>/instances/<id>/vnc.sock`, the domain XML's `<listen type='socket'>`), never on a
 * TCP port. Nothing between the browser and QEMU parses RFB: noVNC speaks it end to end, key
 * combinations (Ctrl-Alt-Del, …) included, as RFB KeyEvent messages.
 *
 * The unix socket is the protection between the proxy and the VNC server that Nova lacked
 * (its proxy reaches VNC over TCP, where anyone on the host or its network can too): the
 * socket file is QEMU's, in a directory only root and QEMU can enter.
 */
import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import { connectUnixSocket } from "./unix-socket.js";
import { CLOSE_CONSOLE_GONE, ConsoleUnavailable, type ConsoleLogger, type ConsoleRoute, type ConsoleSession, type PreparedSession } from "./gateway.js";

export interface VncRouteOptions {
  /** The domain's VNC socket. */
  readonly socketPath: (instanceId: string) => string;
  /** Why an instance's console cannot be opened now (not running, gone), or undefined when it can. */
  readonly unavailable: (instanceId: string) => string | undefined;
  readonly logger: ConsoleLogger;
  /** Until the VNC socket answers, ms. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /** Bytes queued toward the browser before the VNC socket is paused. Default 4 MiB. */
  readonly highWaterBytes?: number;
}

export function vncRoute(o: VncRouteOptions): ConsoleRoute {
  const connectTimeoutMs = o.connectTimeoutMs ?? 5_000;
  const highWater = o.highWaterBytes ?? 4 * 1024 * 1024;
  return {
    path: "/vnc",
    kind: "vnc",
    async prepare(session: ConsoleSession): Promise<PreparedSession> {
      const why = o.unavailable(session.instanceId);
      if (why !== undefined) throw new ConsoleUnavailable(why);
      const vnc = await connectVnc(o.socketPath(session.instanceId), connectTimeoutMs);
      return {
        attach: (ws) => bridge(ws, vnc, highWater, session, o.logger),
        abort: () => vnc.destroy(),
      };
    },
  };
}

async function connectVnc(path: string, timeoutMs: number): Promise<Socket> {
  try {
    return await connectUnixSocket(path, timeoutMs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ENOENT: no socket — the domain was defined before the console (VNC on a TCP port, or
    // none) and takes the socket at its next start, or QEMU is not running.
    throw new ConsoleUnavailable(
      code === "ENOENT" || code === "ECONNREFUSED"
        ? "the instance has no VNC console now (an instance defined before the console gets one when it next starts)"
        : code === "ETIMEDOUT"
          ? "the instance's VNC server did not answer"
          : `the instance's VNC server cannot be reached (${code ?? "error"})`,
    );
  }
}

/** Bytes both ways until either side closes; the other side follows. Backpressure both ways. */
function bridge(ws: WebSocket, vnc: Socket, highWater: number, session: ConsoleSession, logger: ConsoleLogger): void {
  vnc.setNoDelay(true);
  let queued = 0;
  let paused = false;
  let ended = false;
  const end = (why: string) => {
    if (ended) return;
    ended = true;
    vnc.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(CLOSE_CONSOLE_GONE, why);
    logger.debug?.({ instanceId: session.instanceId, why }, "vnc bridge ended");
  };
  vnc.on("data", (chunk: Buffer) => {
    queued += chunk.length;
    ws.send(chunk, { binary: true }, () => {
      queued -= chunk.length;
      if (paused && queued < highWater / 2) {
        paused = false;
        vnc.resume();
      }
    });
    if (!paused && queued >= highWater) {
      paused = true;
      vnc.pause();
    }
  });
  ws.on("message", (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
    if (!isBinary) return end("text frames are not RFB");
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (!vnc.write(buf)) {
      ws.pause();
      vnc.once("drain", () => ws.resume());
    }
  });
  vnc.once("close", () => end("the VNC server closed the connection"));
  vnc.on("error", () => end("the VNC connection failed"));
  ws.once("close", () => end("the browser closed the session"));
  ws.on("error", () => end("the WebSocket failed"));
}
