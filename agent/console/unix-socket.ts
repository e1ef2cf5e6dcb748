/**
 * Connecting to a QEMU-side unix socket (the VNC server, the serial port) with a deadline: the
 * consoles' one way in. Rejects with the connect error (its `code` kept: ENOENT, ECONNREFUSED, …)
 * or with an ETIMEDOUT error after `timeoutMs`.
 */
import { connect, type Socket } from "node:net";

export function connectUnixSocket(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`${path} did not answer within ${timeoutMs} ms`), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
