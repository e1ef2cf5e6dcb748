/**
 * A minimal RFB (VNC) client for tests and benchmarks: protocol 3.8, security type None,
 * 32-bit true colour, Raw encoding, full and incremental FramebufferUpdateRequest, KeyEvent.
 * It runs over any byte stream: a unix socket straight to QEMU's VNC server, or the agent's
 * console WebSocket (`createWebSocketStream`). The framebuffer is kept as RGBA, 4 bytes a pixel.
 */
import { connect } from "node:net";
import type { Duplex } from "node:stream";
import { createWebSocketStream, WebSocket, type ClientOptions } from "ws";

/** Reads exact byte counts from a stream. */
class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failed: Error | undefined;

  constructor(stream: Duplex) {
    stream.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.have += chunk.length;
      this.pump();
    });
    const fail = (e: Error) => {
      this.failed ??= e;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w.reject(this.failed);
      }
    };
    stream.on("error", fail);
    stream.on("close", () => fail(new Error("the RFB stream closed")));
    stream.on("end", () => fail(new Error("the RFB stream ended")));
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error("one read at a time");
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.pump();
      if (this.waiter && this.failed) {
        this.waiter = undefined;
        reject(this.failed);
      }
    });
  }

  private pump(): void {
    const w = this.waiter;
    if (!w || this.have < w.n) return;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, w.n);
    const rest = all.subarray(w.n);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    this.waiter = undefined;
    w.resolve(Buffer.from(out));
  }
}

export interface RfbUpdate {
  /** Rectangles in this update. */
  readonly rects: number;
  /** When the update's first byte had arrived (performance.now()). */
  readonly at: number;
}

export class RfbClient {
  width = 0;
  height = 0;
  name = "";
  /** RGBA, width × height × 4. */
  framebuffer = Buffer.alloc(0);
  /** FramebufferUpdate messages received. */
  updates = 0;
  private readonly reader: ByteReader;
  private updateWaiters: Array<{ resolve: (u: RfbUpdate) => void; reject: (e: Error) => void }> = [];
  private loopError: Error | undefined;
  private closedWaiters: Array<(e: Error) => void> = [];

  private constructor(private readonly stream: Duplex) {
    this.reader = new ByteReader(stream);
  }

  /** Connects to a VNC server's unix socket and shakes hands. */
  static async overUnixSocket(path: string): Promise<RfbClient> {
    const socket = connect({ path });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.setNoDelay(true);
    return RfbClient.handshake(socket);
  }

  /** Opens a WebSocket (e.g. the agent's console URL) and shakes hands over it. */
  static async overWebSocket(url: string, options: ClientOptions = {}, onOpen?: () => void): Promise<{ client: RfbClient; ws: WebSocket }> {
    const ws = new WebSocket(url, options);
    if (onOpen) ws.once("open", onOpen);
    // The stream goes on before the handshake ends: the server's greeting can arrive with the 101.
    const stream = createWebSocketStream(ws);
    const handshake = RfbClient.handshake(stream);
    handshake.catch(() => undefined); // a refused handshake rejects below, from settled()
    await settled(ws);
    return { client: await handshake, ws };
  }

  /** RFB 3.8, security None, ClientInit shared, ServerInit; then 32-bit RGB and Raw. */
  static async handshake(stream: Duplex): Promise<RfbClient> {
    const c = new RfbClient(stream);
    const version = (await c.reader.read(12)).toString("latin1");
    if (!/^RFB \d{3}\.\d{3}\n$/.test(version)) throw new Error(`not an RFB server: ${JSON.stringify(version)}`);
    stream.write("RFB 003.008\n");
    const count = (await c.reader.read(1))[0]!;
    if (count === 0) {
      const len = (await c.reader.read(4)).readUInt32BE(0);
      throw new Error(`RFB server refused: ${(await c.reader.read(len)).toString("utf8")}`);
    }
    const types = [...(await c.reader.read(count))];
    if (!types.includes(1)) throw new Error(`RFB server offers no security type None (offers ${types.join(",")})`);
    stream.write(Buffer.from([1]));
    const result = (await c.reader.read(4)).readUInt32BE(0);
    if (result !== 0) throw new Error(`RFB security handshake failed (${result})`);
    stream.write(Buffer.from([1])); // ClientInit: shared
    const init = await c.reader.read(24);
    c.width = init.readUInt16BE(0);
    c.height = init.readUInt16BE(2);
    const nameLen = init.readUInt32BE(20);
    c.name = (await c.reader.read(nameLen)).toString("utf8");
    c.framebuffer = Buffer.alloc(c.width * c.height * 4);
    // SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, r/g/b max 255, shifts 16/8/0.
    const pf = Buffer.alloc(20);
    pf[0] = 0;
    pf.writeUInt8(32, 4);
    pf.writeUInt8(24, 5);
    pf.writeUInt8(0, 6);
    pf.writeUInt8(1, 7);
    pf.writeUInt16BE(255, 8);
    pf.writeUInt16BE(255, 10);
    pf.writeUInt16BE(255, 12);
    pf.writeUInt8(16, 14);
    pf.writeUInt8(8, 15);
    pf.writeUInt8(0, 16);
    stream.write(pf);
    // SetEncodings: Raw only (with DesktopSize, QEMU answers SetEncodings with an update that holds
    // nothing but the size, which a caller waiting for pixels would take for the screen).
    const enc = Buffer.alloc(4 + 4);
    enc[0] = 2;
    enc.writeUInt16BE(1, 2);
    enc.writeInt32BE(0, 4);
    stream.write(enc);
    void c.loop();
    return c;
  }

  /** Asks for an update; resolves when the next FramebufferUpdate has been read whole. */
  requestUpdate(incremental = false): Promise<RfbUpdate> {
    const p = new Promise<RfbUpdate>((resolve, reject) => {
      if (this.loopError) return reject(this.loopError);
      this.updateWaiters.push({ resolve, reject });
    });
    const msg = Buffer.alloc(10);
    msg[0] = 3;
    msg[1] = incremental ? 1 : 0;
    msg.writeUInt16BE(0, 2);
    msg.writeUInt16BE(0, 4);
    msg.writeUInt16BE(this.width, 6);
    msg.writeUInt16BE(this.height, 8);
    this.stream.write(msg);
    return p;
  }

  /** A KeyEvent (X keysym). */
  key(keysym: number, down: boolean): void {
    const msg = Buffer.alloc(8);
    msg[0] = 4;
    msg[1] = down ? 1 : 0;
    msg.writeUInt32BE(keysym, 4);
    this.stream.write(msg);
  }

  /** Resolves with the reason when the stream ends or fails. */
  closed(): Promise<Error> {
    if (this.loopError) return Promise.resolve(this.loopError);
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  close(): void {
    this.stream.destroy();
  }

  /** The pixel at (x, y) as [r, g, b]. */
  pixel(x: number, y: number): [number, number, number] {
    const i = (y * this.width + x) * 4;
    return [this.framebuffer[i]!, this.framebuffer[i + 1]!, this.framebuffer[i + 2]!];
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const type = (await this.reader.read(1))[0]!;
        if (type === 0) await this.readUpdate();
        else if (type === 1) {
          const head = await this.reader.read(5);
          await this.reader.read(head.readUInt16BE(3) * 6);
        } else if (type === 2) {
          // Bell
        } else if (type === 3) {
          const head = await this.reader.read(7);
          await this.reader.read(head.readUInt32BE(3));
        } else throw new Error(`unknown RFB server message ${type}`);
      }
    } catch (e) {
      this.loopError = e as Error;
      for (const w of this.closedWaiters) w(this.loopError);
      for (const w of this.updateWaiters) w.reject(this.loopError);
      this.closedWaiters = [];
      this.updateWaiters = [];
    }
  }

  private async readUpdate(): Promise<void> {
    const at = performance.now();
    const head = await this.reader.read(3);
    const rects = head.readUInt16BE(1);
    for (let r = 0; r < rects; r++) {
      const h = await this.reader.read(12);
      const x = h.readUInt16BE(0);
      const y = h.readUInt16BE(2);
      const w = h.readUInt16BE(4);
      const hh = h.readUInt16BE(6);
      const encoding = h.readInt32BE(8);
      if (encoding === -223) {
        this.width = w;
        this.height = hh;
        this.framebuffer = Buffer.alloc(w * hh * 4);
        continue;
      }
      if (encoding !== 0) throw new Error(`unexpected RFB encoding ${encoding}`);
      const data = await this.reader.read(w * hh * 4);
      for (let row = 0; row < hh; row++) {
        for (let col = 0; col < w; col++) {
          const s = (row * w + col) * 4;
          const d = ((y + row) * this.width + (x + col)) * 4;
          // Little-endian 0x00RRGGBB: bytes B, G, R, 0.
          this.framebuffer[d] = data[s + 2]!;
          this.framebuffer[d + 1] = data[s + 1]!;
          this.framebuffer[d + 2] = data[s]!;
          this.framebuffer[d + 3] = 255;
        }
      }
    }
    this.updates++;
    this.updateWaiters.shift()?.resolve({ rects, at });
  }
}

/**
 * Opens a WebSocket; rejects with the HTTP status of a refused handshake
 * (`error.status`), or the error.
 */
export async function openWebSocket(url: string, options: ClientOptions = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, options);
  await settled(ws);
  return ws;
}

/** Resolves when the WebSocket is open; rejects with `error.status` when the handshake was refused. */
function settled(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("unexpected-response", (_req, res) => {
      const error = Object.assign(new Error(`handshake refused: HTTP ${res.statusCode}`), { status: res.statusCode });
      res.resume();
      ws.terminate();
      reject(error);
    });
    ws.once("error", reject);
  });
}
