/**
 * A test's own line to a running domain's serial port, wherever its definition puts it:
 * the unix socket QEMU listens on (`<serial type='unix'><source mode='bind' path=…/>`, what
 * the agent defines: one client at a time, so a test holding it keeps the agent's serial
 * console out and the other way round), or the pty of definitions made without one.
 *
 * Everything the guest prints is read for as long as the link is open (QEMU stops the
 * guest's serial output when a connected client does not read). libvirt's console log keeps
 * its own copy (test/support/serial.ts).
 */
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { ReadStream } from "node:tty";
import { execa } from "execa";

export type SerialEndpoint = { kind: "unix"; path: string } | { kind: "pty"; path: string };

/** Where the running domain's serial port is, from `virsh dumpxml`. */
export async function serialEndpoint(domain: string, uri = "qemu:///system"): Promise<SerialEndpoint> {
  const { stdout } = await execa("virsh", ["-c", uri, "dumpxml", domain], { timeout: 30_000 });
  const unix = /<serial type='unix'>\s*<source [^>]*path='([^']+)'/.exec(stdout);
  if (unix) return { kind: "unix", path: unix[1]! };
  const pty = /<serial type='pty'>\s*<source path='([^']+)'/.exec(stdout);
  if (pty) return { kind: "pty", path: pty[1]! };
  throw new Error(`${domain}: no serial socket or pty in its live XML`);
}

export class SerialLink {
  private readonly listeners: Array<(text: string) => void> = [];
  private readonly closers: Array<() => void> = [];
  private closed = false;

  private constructor(
    private readonly what: string,
    private readonly socket?: Socket,
    private readonly pty?: { fd: number; stream: ReadStream },
  ) {
    const readable = socket ?? pty!.stream;
    readable.setEncoding("utf8");
    readable.on("data", (chunk: string) => {
      for (const l of this.listeners) l(chunk);
    });
    // EIO / a reset once the domain is gone: nothing more will come.
    readable.on("error", () => this.close());
    readable.on("end", () => this.close());
    readable.on("close", () => this.close());
  }

  /** Opens the running domain's serial port (its socket or pty). */
  static async open(domain: string, uri?: string): Promise<SerialLink> {
    const ep = await serialEndpoint(domain, uri);
    if (ep.kind === "unix") {
      const socket = await new Promise<Socket>((resolve, reject) => {
        const s = createConnection(ep.path);
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
        s.once("error", reject);
      });
      return new SerialLink(`${domain} (${ep.path})`, socket);
    }
    const fd = openSync(ep.path, constants.O_RDWR | constants.O_NOCTTY);
    const stream = new ReadStream(fd);
    stream.setRawMode(true);
    return new SerialLink(`${domain} (${ep.path})`, undefined, { fd, stream });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onData(listener: (text: string) => void): void {
    this.listeners.push(listener);
  }

  onClose(listener: () => void): void {
    this.closers.push(listener);
  }

  write(text: string): void {
    if (this.closed) throw new Error(`${this.what}: the serial link is closed`);
    if (this.socket) {
      this.socket.write(text);
      return;
    }
    // The pty shares libuv's non-blocking file description: a full buffer is retried, briefly.
    const data = Buffer.from(text);
    let off = 0;
    const deadline = Date.now() + 5_000;
    while (off < data.length) {
      try {
        off += writeSync(this.pty!.fd, data, off);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EAGAIN" || Date.now() > deadline) throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.socket) this.socket.destroy();
    else {
      this.pty!.stream.destroy();
      try {
        closeSync(this.pty!.fd);
      } catch {
        // ReadStream's handle may have closed it already.
      }
    }
    for (const c of this.closers) c();
  }
}
