/**
 * Network probes from INSIDE a tiny guest, over its serial console, so that what a test
 * learns does not depend on the network it is testing. The tiny guest
 * (scripts/build-tiny-image.sh, scripts/lib/tiny-net.sh) configures its NIC from the config
 * drive, runs responders (TCP 7001 and 7002, UDP 7003, a TCP byte sink on 7004, ping) and
 * reads `cdh-net …` command lines on ttyS0; each answers one line `CDH-NET ID ok|fail …`.
 *
 * The test holds the domain's serial port (its unix socket, or the pty of an older
 * definition: test/support/serial-link.ts) open for as long as it talks to the guest, reading
 * everything the guest prints. libvirt's console log keeps its own copy (test/support/serial.ts).
 */
import { waitForSerial } from "./serial.js";
import { SerialLink } from "./serial-link.js";

export type ProbeProto = "tcp" | "udp" | "icmp";

/** The guest's ports (scripts/lib/tiny-net.sh). */
export const TINY_PORTS = { tcp: 7001, tcp2: 7002, udp: 7003, sink: 7004 } as const;

export const TINY_NET_PATTERN = /CDH-TINY-NET id=(\S+) nics=(\S*) gw=(\S*)/;

export interface TinyNic {
  name: string;
  mac: string;
  ip: string;
  prefixLength: number;
}

export interface TinyNet {
  instanceId: string;
  nics: TinyNic[];
  gateway: string;
}

/** Parses `CDH-TINY-NET id=… nics=eth0:MAC:IP/PREFIX,… gw=…`; throws when the line is not one. */
export function parseTinyNet(line: string): TinyNet {
  const m = TINY_NET_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-TINY-NET line: ${JSON.stringify(line)}`);
  const nics = m[2]!.split(",").filter((s) => s !== "").map((item) => {
    const n = /^(\w+):([0-9a-f:]{17}):([\d.]+)\/(\d+)$/.exec(item);
    if (!n) throw new Error(`bad NIC ${JSON.stringify(item)} in ${JSON.stringify(line)}`);
    return { name: n[1]!, mac: n[2]!, ip: n[3]!, prefixLength: Number(n[4]) };
  });
  return { instanceId: m[1]!, nics, gateway: m[3]! };
}

/** `CDH-TINY-NICS gen=G nics=eth0:MAC:IP/P+IP/P,eth1:MAC:,...`: every NIC the guest has now. */
export const TINY_NICS_PATTERN = /CDH-TINY-NICS gen=(\S*) nics=(\S*)/;

export interface TinyNicState {
  name: string;
  mac: string;
  /** IPv4 addresses with prefix ("10.0.0.5/24"), the primary first. */
  addresses: string[];
}

export interface TinyNics {
  /** The drive's meta.generation the guest applied ("" when it had none). */
  generation: string;
  nics: TinyNicState[];
}

/** Parses a CDH-TINY-NICS line; throws when the line is not one. */
export function parseTinyNics(line: string): TinyNics {
  const m = TINY_NICS_PATTERN.exec(line);
  if (!m) throw new Error(`not a CDH-TINY-NICS line: ${JSON.stringify(line)}`);
  const nics = m[2]!.split(",").filter((s) => s !== "").map((item) => {
    // A NIC the guest's kernel is still bringing in during a hot-plug may show no MAC yet ("eth1::").
    const n = /^(\w+):((?:[0-9a-f]{2}:){5}[0-9a-f]{2})?:((?:[\d.]+\/\d+)(?:\+[\d.]+\/\d+)*)?$/.exec(item);
    if (!n) throw new Error(`bad NIC ${JSON.stringify(item)} in ${JSON.stringify(line)}`);
    return { name: n[1]!, mac: n[2] ?? "", addresses: n[3] ? n[3].split("+") : [] };
  });
  return { generation: m[1]!, nics };
}

export interface ProbeResult {
  ok: boolean;
  /**
   * When ok: the first line the other end sent (`CDH-TCP port=7001 id=ins-…`, `CDH-UDP …`, an
   * SSH banner), or `CDH-ICMP from=…`. A TCP server that sends nothing first is not "reached".
   */
  reply?: string;
  /** When not ok: `why=refused ms=N` (it ended before the bound: a RST or an ICMP error) or `why=timeout ms=N`. */
  why?: string;
  /** For {@link NetGuest.watch}: when the result reached the test (Date.now()). */
  at?: number;
}

const RESULT = /CDH-NET (\S+) (ok|fail)(?: (.*))?$/;

let seq = 0;
const nextId = (prefix: string) => `${prefix}${process.pid.toString(36)}x${(++seq).toString(36)}`;

/** A running tiny guest with a network, and its serial console held open. */
export class NetGuest {
  readonly instanceId: string;
  readonly ip: string;
  readonly mac: string;
  readonly gateway: string;
  readonly net: TinyNet;
  private readonly link: SerialLink;
  private partial = "";
  private closed = false;
  private readonly waiters = new Map<string, (r: { ok: boolean; rest: string }) => void>();
  private readonly watchers = new Map<string, (seqNo: number, ok: boolean, rest: string, at: number) => void>();
  /** The last CDH-TINY-NICS line the guest printed while the console was held. */
  private lastNics: TinyNics | undefined;
  private readonly nicsWaiters = new Set<(n: TinyNics) => void>();

  private constructor(net: TinyNet, link: SerialLink) {
    this.net = net;
    this.instanceId = net.instanceId;
    const eth0 = net.nics[0];
    if (!eth0) throw new Error(`${net.instanceId}: the guest configured no NIC`);
    this.ip = eth0.ip;
    this.mac = eth0.mac;
    this.gateway = net.gateway;
    this.link = link;
    this.link.onData((chunk) => this.onData(chunk));
    // Once the domain is gone nothing more will come.
    this.link.onClose(() => this.close());
  }

  /**
   * Waits for the guest's CDH-TINY-NET line in its console log, then opens its serial pty
   * (found with `virsh dumpxml` of the running domain) and checks that it answers.
   */
  static async open(o: { instanceId: string; consoleLog: string; uri?: string; timeoutMs?: number; fromOffset?: number }): Promise<NetGuest> {
    const timeoutMs = o.timeoutMs ?? 90_000;
    const line = await waitForSerial(o.consoleLog, TINY_NET_PATTERN, { timeoutMs, ...(o.fromOffset !== undefined ? { fromOffset: o.fromOffset } : {}) });
    const net = parseTinyNet(line[0]);
    if (net.instanceId !== o.instanceId) throw new Error(`${o.consoleLog}: the guest says it is ${net.instanceId}, not ${o.instanceId}`);
    const guest = new NetGuest(net, await SerialLink.open(o.instanceId, o.uri));
    try {
      await guest.hello(30_000);
    } catch (err) {
      guest.close();
      throw err;
    }
    return guest;
  }

  private onData(chunk: string): void {
    const lines = (this.partial + chunk).split("\n");
    this.partial = lines.pop() ?? "";
    for (const raw of lines) {
      const line = raw.replace(/\r$/, "");
      if (TINY_NICS_PATTERN.test(line) && !line.includes("CDH-NET ")) {
        // A line the kernel's own console output cut into is skipped: the guest prints the set again on its next change.
        let nics: TinyNics | undefined;
        try {
          nics = parseTinyNics(line);
        } catch {
          nics = undefined;
        }
        if (nics) this.onNics(nics);
        continue;
      }
      const m = RESULT.exec(line);
      if (!m) continue;
      const [, id, verdict, rest] = m as unknown as [string, string, string, string | undefined];
      const waiter = this.waiters.get(id);
      if (waiter) {
        this.waiters.delete(id);
        waiter({ ok: verdict === "ok", rest: rest ?? "" });
        continue;
      }
      const dot = id.lastIndexOf(".");
      const watcher = dot > 0 ? this.watchers.get(id.slice(0, dot)) : undefined;
      if (watcher) watcher(Number(id.slice(dot + 1)), verdict === "ok", rest ?? "", Date.now());
    }
  }

  private onNics(nics: TinyNics): void {
    this.lastNics = nics;
    for (const w of [...this.nicsWaiters]) w(nics);
  }

  /** Asks the guest for its NICs and addresses now (`cdh-net nics`). */
  async nics(): Promise<TinyNics> {
    const r = await this.command("nics", [], 15_000);
    if (!r.ok) throw new Error(`${this.instanceId}: cdh-net nics failed (${r.rest})`);
    const nics = parseTinyNics(r.rest);
    this.lastNics = nics;
    return nics;
  }

  /**
   * GETs a path of the metadata service from inside the guest (http://169.254.169.254/PATH, busybox
   * wget); the body's lines joined by `\n` again. Throws when the request failed (a 404 too).
   */
  async metadata(path: string): Promise<string> {
    const r = await this.command("get", [path.replace(/^\//, "")], 20_000);
    if (!r.ok) throw new Error(`${this.instanceId}: GET http://169.254.169.254/${path} failed in the guest`);
    return r.rest.replace(/\|/g, "\n");
  }

  /**
   * Waits until the guest's NICs satisfy `test`: checked against what it reports by itself
   * (the CDH-TINY-NICS line it prints after applying a changed drive or NIC set) and, every
   * `pollMs` (default 2 s), against an explicit `cdh-net nics`. Throws after `timeoutMs`
   * (default 30 s) with the last state seen.
   */
  async waitNics(test: (n: TinyNics) => boolean, o: { timeoutMs?: number; pollMs?: number; what?: string } = {}): Promise<TinyNics> {
    const timeoutMs = o.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    let seen = this.lastNics;
    let done: ((n: TinyNics) => void) | undefined;
    const pushed = new Promise<TinyNics>((resolve) => {
      done = (n) => {
        seen = n;
        if (test(n)) resolve(n);
      };
      this.nicsWaiters.add(done);
    });
    try {
      if (seen && test(seen)) return seen;
      for (;;) {
        const now = await this.nics().catch(() => undefined);
        if (now) seen = now;
        if (now && test(now)) return now;
        const left = deadline - Date.now();
        if (left <= 0) break;
        const winner = await Promise.race([pushed, new Promise<undefined>((r) => setTimeout(() => r(undefined), Math.min(left, o.pollMs ?? 2_000)))]);
        if (winner) return winner;
      }
    } finally {
      if (done) this.nicsWaiters.delete(done);
    }
    throw new Error(`${this.instanceId}: the guest's NICs did not become ${o.what ?? "as expected"} within ${timeoutMs} ms; last seen ${JSON.stringify(seen)}`);
  }

  private send(line: string): void {
    if (this.closed) throw new Error(`${this.instanceId}: its serial console is closed`);
    if (!/^[\w .:/,=-]+$/.test(line)) throw new Error(`unsafe guest command ${JSON.stringify(line)}`);
    this.write(`${line}\n`);
  }

  private write(text: string): void {
    this.link.write(text);
  }

  /** Sends `cdh-net CMD ID ARGS…` and waits for its result line. */
  private async command(cmd: string, args: Array<string | number>, waitMs: number, id = nextId(cmd.slice(0, 2))): Promise<{ ok: boolean; rest: string }> {
    const result = new Promise<{ ok: boolean; rest: string }>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`${this.instanceId}: no answer to "cdh-net ${cmd} ${id} ${args.join(" ")}" within ${waitMs} ms`));
      }, waitMs);
      this.waiters.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
    this.send(["cdh-net", cmd, id, ...args].join(" "));
    return result;
  }

  private async hello(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    // QEMU notices a connected pty within a second (a line sent before may be lost or half);
    // a socket client of a port another client holds waits until that one leaves.
    for (;;) {
      try {
        this.write("\n");
        const r = await this.command("stop", [], 3_000);
        if (r.ok) return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
    }
  }

  /**
   * One probe from this guest: TCP (connect and read the responder's line), UDP (one
   * datagram, read the answer) or ICMP (one echo request), bounded by `timeoutMs` inside
   * the guest (whole seconds, at least 1). `from` sends from another local address (add it
   * first with {@link addAddress}). Throws when the guest does not answer at all.
   */
  async probe(o: { proto: ProbeProto; to: string; port?: number; timeoutMs?: number; from?: string }): Promise<ProbeResult> {
    const secs = Math.max(1, Math.round((o.timeoutMs ?? 1000) / 1000));
    const port = o.port ?? (o.proto === "udp" ? TINY_PORTS.udp : o.proto === "tcp" ? TINY_PORTS.tcp : 0);
    const args: Array<string | number> = [o.proto, o.to, port, secs, ...(o.from ? [o.from] : [])];
    const r = await this.command("probe", args, secs * 1000 + 15_000);
    return r.ok ? { ok: true, reply: r.rest } : { ok: false, ...(r.rest ? { why: r.rest } : {}) };
  }

  /**
   * Probes again and again (one probe every ~0.2 s after the previous one ended) until
   * `stop()`, which resolves with every result in order.
   */
  watch(o: { proto: ProbeProto; to: string; port?: number; timeoutMs?: number }): { results: ProbeResult[]; stop(): Promise<ProbeResult[]> } {
    const wid = nextId("w");
    const results: ProbeResult[] = [];
    this.watchers.set(wid, (n, ok, rest, at) => {
      results[n - 1] = ok ? { ok, reply: rest, at } : { ok, at, ...(rest ? { why: rest } : {}) };
    });
    const secs = Math.max(1, Math.round((o.timeoutMs ?? 1000) / 1000));
    const port = o.port ?? (o.proto === "udp" ? TINY_PORTS.udp : o.proto === "tcp" ? TINY_PORTS.tcp : 0);
    this.send(["cdh-net", "watch", wid, o.proto, o.to, port, secs].join(" "));
    return {
      results,
      stop: async () => {
        const before = results.length;
        await this.command("stop", [], 10_000, wid);
        // The loop ends after the probe under way: wait for its result.
        const deadline = Date.now() + secs * 1000 + 10_000;
        while (results.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        this.watchers.delete(wid);
        return results.filter((r) => r !== undefined);
      },
    };
  }

  /** Adds (or removes) an address on eth0: a source address the agent did not give it. */
  async addAddress(cidr: string): Promise<void> {
    const r = await this.command("addr", ["add", cidr], 15_000);
    if (!r.ok) throw new Error(`${this.instanceId}: ip addr add ${cidr} failed`);
  }

  async delAddress(cidr: string): Promise<void> {
    const r = await this.command("addr", ["del", cidr], 15_000);
    if (!r.ok) throw new Error(`${this.instanceId}: ip addr del ${cidr} failed`);
  }

  /** Sets eth0's MAC (restore with `setMac(guest.mac)`). */
  async setMac(mac: string): Promise<void> {
    const r = await this.command("mac", [mac], 15_000);
    if (!r.ok) throw new Error(`${this.instanceId}: ip link set address ${mac} failed`);
  }

  /**
   * Sends `mb` MiB of zeros over TCP to another tiny guest's sink (port 7004), timed
   * inside this guest (10 ms steps). Throws when fewer bytes arrived.
   */
  async sendBytes(o: { to: string; mb: number; timeoutMs: number }): Promise<{ bytes: number; seconds: number }> {
    const secs = Math.max(1, Math.ceil(o.timeoutMs / 1000));
    const r = await this.command("send", [o.to, TINY_PORTS.sink, o.mb, secs], secs * 1000 + 15_000);
    const m = /bytes=(\d+) t0=([\d.]+) t1=([\d.]+)/.exec(r.rest);
    if (!r.ok || !m) throw new Error(`${this.instanceId}: sending ${o.mb} MiB to ${o.to} failed (${r.rest})`);
    return { bytes: Number(m[1]), seconds: Number(m[3]) - Number(m[2]) };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.link.close();
    for (const [id, waiter] of this.waiters) {
      this.waiters.delete(id);
      waiter({ ok: false, rest: "console closed" });
    }
  }
}

/** Opens every guest in parallel; closes those opened when one fails. */
export async function openNetGuests(
  guests: ReadonlyArray<{ instanceId: string; consoleLog: string }>,
  o: { uri?: string; timeoutMs?: number } = {},
): Promise<NetGuest[]> {
  const settled = await Promise.allSettled(guests.map((g) => NetGuest.open({ ...g, ...o })));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    for (const s of settled) if (s.status === "fulfilled") s.value.close();
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<NetGuest>).value);
}
