/**
 * DHCP on the agent's subnets (README "DHCP"): one dnsmasq per subnet with DHCP on, serving
 * fixed leases only, one per NIC the agent knows (render.ts). The hosts file is rewritten
 * from the instances' records whenever their NICs may have changed (nicEvents, the registry's
 * membership and record changes, start-up) and dnsmasq re-reads it (SIGHUP), or is restarted
 * when a lease went away or moved (so it holds no stale lease). A supervisor starts a dnsmasq
 * that died again. Everything is serialised: one change at a time, requests made meanwhile
 * coalesced into one more pass.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, stat, writeFile, chmod } from "node:fs/promises";
import { dirname, join, basename } from "node:path";
import type { CommandRunner } from "../../../drivers/exec/runner.js";
import type { Logger } from "../../log.js";
import type { InstanceRecord } from "../../model.js";
import type { Subnet } from "../subnets.js";
import { chaddrRemoval, chaddrRuleset, tapMacs } from "./chaddr.js";
import { DnsmasqProcess, endProcess, listDnsmasq, pidFileOf, type ProcInfo } from "./dnsmasq.js";
import { dhcpHosts, dnsmasqArgs, dnsmasqFiles, needsRestart, parseHostsFile, PID_FILE_NAME, renderHostsFile, renderOptsFile, type DnsmasqFiles } from "./render.js";

export interface DhcpServiceOptions {
  runner: CommandRunner;
  /** The agent's DHCP directory (one sub-directory per subnet). */
  dir: string;
  /** The subnets served (those with DHCP on). */
  subnets: readonly Subnet[];
  leaseTimeS: number;
  /** The records whose NICs get leases (instances the agent holds, launch failures excepted). */
  records: () => Iterable<InstanceRecord>;
  logger: Logger;
  /** How often a dead dnsmasq is looked for. Default 5 s. */
  superviseIntervalMs?: number;
  /** A dnsmasq log past this size is moved aside (one old copy kept). Default 4 MiB. */
  maxLogBytes?: number;
  /**
   * The nftables bridge table that holds each DHCP request's chaddr to the NIC of the tap it came
   * in on (chaddr.ts; `<firewall_nft_table>_dhcp`), rewritten with the leases; absent: no such check.
   */
  nftTable?: string;
  /** Listing of the machine's dnsmasq processes (tests). */
  list?: () => Promise<ProcInfo[]>;
}

interface Server {
  readonly subnet: Subnet;
  readonly dir: string;
  readonly files: DnsmasqFiles;
  readonly proc: DnsmasqProcess;
  /** The hosts file as last written (what dnsmasq last read, once it was told). */
  hostsText: string | undefined;
  /** Failed starts in a row, and when the supervisor may try again (doubling, at most a minute). */
  failures: number;
  retryAt: number;
}

export interface DhcpSubnetStatus {
  subnetId: string;
  bridge: string;
  pid: number | undefined;
  leases: number;
}

export class DhcpService {
  private readonly servers: Server[];
  private chain: Promise<void> = Promise.resolve();
  private pendingSync: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly log: Logger;
  /** The chaddr table as last loaded (undefined: not yet, or the last load failed). */
  private chaddrText: string | undefined;
  /** Loads of the chaddr table, one at a time, each reading the records when its turn comes. */
  private guardChain: Promise<void> = Promise.resolve();

  constructor(private readonly o: DhcpServiceOptions) {
    this.log = o.logger;
    this.servers = o.subnets.map((subnet) => {
      const dir = join(o.dir, subnet.subnetId);
      const files = dnsmasqFiles(dir);
      return {
        subnet,
        dir,
        files,
        hostsText: undefined,
        failures: 0,
        retryAt: 0,
        proc: new DnsmasqProcess({
          runner: o.runner,
          files,
          args: dnsmasqArgs(subnet, files, o.leaseTimeS),
          logger: o.logger,
          ...(o.list ? { list: o.list } : {}),
        }),
      };
    });
  }

  /** Runs `work` after everything queued before it. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work);
    this.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Ends the dnsmasqs the agent no longer wants (of a data directory that is gone, of a subnet
   * no longer served), writes every subnet's files, adopts the running dnsmasq or starts one.
   * A subnet whose dnsmasq cannot start is logged and retried by the supervisor: guests with a
   * config drive do not need DHCP, so the agent goes on.
   */
  async start(): Promise<void> {
    await this.serial(async () => {
      await mkdir(this.o.dir, { recursive: true, mode: 0o755 });
      await chmod(this.o.dir, 0o755); // dnsmasq re-reads the files after dropping root
      await this.sweepStrays();
      for (const server of this.servers) {
        await mkdir(server.dir, { recursive: true, mode: 0o755 });
        await writeAtomic(server.files.optsFile, renderOptsFile(server.subnet));
        server.hostsText = await readFile(server.files.hostsFile, "utf8").catch(() => undefined);
        const adopted = await server.proc.adopt();
        if (adopted === "adopted") this.log.info({ subnetId: server.subnet.subnetId, pid: server.proc.currentPid }, "DHCP: adopted the running dnsmasq");
        await this.apply(server, adopted === "adopted");
      }
      await this.guardNow();
    });
    const every = this.o.superviseIntervalMs ?? 5000;
    this.timer = setInterval(() => void this.supervise(), every);
    this.timer.unref();
  }

  /** Brings every subnet's leases to the records' NICs now (coalesced; resolves once applied). */
  sync(): Promise<void> {
    if (this.closed || this.servers.length === 0) return Promise.resolve();
    if (this.pendingSync) return this.pendingSync;
    const run = this.serial(async () => {
      this.pendingSync = undefined;
      for (const server of this.servers) await this.apply(server, true);
      await this.guardNow();
    });
    this.pendingSync = run;
    return run;
  }

  /** One subnet: rewrite the hosts file if it changed; reload, restart or start dnsmasq as needed. */
  private async apply(server: Server, running: boolean): Promise<void> {
    const { hosts, skipped } = dhcpHosts(this.o.records(), server.subnet);
    for (const s of skipped) this.log.warn({ subnetId: server.subnet.subnetId, ...s }, "DHCP: no lease for this NIC");
    const text = renderHostsFile(hosts);
    const before = server.hostsText;
    try {
      if (text !== before) await writeAtomic(server.files.hostsFile, text);
      server.hostsText = text;
      const alive = running && (await server.proc.running());
      if (!alive) {
        await server.proc.stop();
        const pid = await server.proc.start();
        server.failures = 0;
        this.log.info({ subnetId: server.subnet.subnetId, bridge: server.subnet.bridge, pid, leases: hosts.length }, "DHCP: dnsmasq started");
      } else if (text !== before) {
        if (needsRestart(parseHostsFile(before ?? ""), hosts)) {
          await server.proc.stop();
          const pid = await server.proc.start();
          this.log.info({ subnetId: server.subnet.subnetId, pid, leases: hosts.length }, "DHCP: a lease went away or moved; dnsmasq restarted (it forgets the old one)");
        } else {
          server.proc.reload();
          this.log.debug({ subnetId: server.subnet.subnetId, leases: hosts.length }, "DHCP: leases re-read (SIGHUP)");
        }
      }
    } catch (error) {
      server.failures += 1;
      const waitMs = Math.min(60_000, (this.o.superviseIntervalMs ?? 5000) * 2 ** (server.failures - 1));
      server.retryAt = Date.now() + waitMs;
      this.log.error({ err: error, subnetId: server.subnet.subnetId, bridge: server.subnet.bridge, retryInMs: waitMs }, "DHCP: could not serve this subnet; tried again later");
    }
  }

  /**
   * The chaddr table brought to the records' NICs now, outside the dnsmasq work (which may take
   * seconds): the ENI actions call it with the firewall's sync, before a hot-plug, so a new tap
   * never waits for its pair. Resolves once loaded (a failure is logged, not thrown).
   */
  guardNow(): Promise<void> {
    const run = this.guardChain.then(() => this.guardChaddr());
    this.guardChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Loads the chaddr table for the records' NICs when it changed (DHCP off here: removes one a
   * previous agent left). A failure is logged and retried at the next pass; DHCP goes on.
   */
  private async guardChaddr(): Promise<void> {
    const table = this.o.nftTable;
    if (table === undefined) return;
    const text = this.servers.length ? chaddrRuleset(table, tapMacs(this.o.records())) : chaddrRemoval(table);
    if (text === this.chaddrText) return;
    try {
      await this.o.runner.run(["nft", "-f", "-"], { input: text, timeoutMs: 30_000 });
      this.chaddrText = text;
    } catch (error) {
      this.chaddrText = undefined;
      this.log.error({ err: error, table }, "DHCP: could not load the table that checks a request's client MAC against its NIC; tried again at the next change");
    }
  }

  /** Starts a dnsmasq that died (or was never started); keeps its log file bounded. */
  private supervise(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.serial(async () => {
      for (const server of this.servers) {
        if (this.closed) return;
        if (Date.now() < server.retryAt) continue;
        if (!(await server.proc.running())) {
          this.log.warn({ subnetId: server.subnet.subnetId, pid: server.proc.currentPid }, "DHCP: dnsmasq is not running; starting it again");
          await this.apply(server, false);
        }
        await this.rotateLog(server);
      }
    });
  }

  private async rotateLog(server: Server): Promise<void> {
    const size = await stat(server.files.logFile).then((s) => s.size, () => 0);
    if (size <= (this.o.maxLogBytes ?? 4 * 1024 * 1024)) return;
    await rename(server.files.logFile, `${server.files.logFile}.1`).catch(() => undefined);
    server.proc.reopenLog();
  }

  /**
   * dnsmasqs this agent made that nobody wants: those of a data directory that no longer
   * exists (an agent's directory removed while its dnsmasq ran on), and those under this
   * agent's directory for a subnet it no longer serves (removed, or DHCP turned off).
   */
  private async sweepStrays(): Promise<void> {
    const wanted = new Set(this.servers.map((s) => s.files.pidFile));
    const all = await (this.o.list ?? listDnsmasq)();
    for (const p of all) {
      const pidFile = pidFileOf(p.argv);
      if (pidFile === undefined || basename(pidFile) !== PID_FILE_NAME || wanted.has(pidFile)) continue;
      const dir = dirname(pidFile);
      const orphan = !existsSync(dir);
      const ours = dirname(dir) === this.o.dir;
      if (!orphan && !ours) continue;
      this.log.info({ pid: p.pid, pidFile, why: orphan ? "its directory is gone" : "subnet not served" }, "DHCP: ending a stray dnsmasq");
      await endProcess(p.pid);
    }
  }

  status(): DhcpSubnetStatus[] {
    return this.servers.map((s) => ({
      subnetId: s.subnet.subnetId,
      bridge: s.subnet.bridge,
      pid: s.proc.currentPid,
      leases: parseHostsFile(s.hostsText ?? "").size,
    }));
  }

  /** Stops supervising and ends the dnsmasqs (an agent that stops cleanly takes DHCP with it). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.serial(async () => {
      for (const server of this.servers) await server.proc.stop().catch((e: unknown) => this.log.warn({ err: e }, "DHCP: could not stop dnsmasq"));
    });
  }
}

/** Write to a temporary file beside it, then rename: dnsmasq never reads half a file. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await chmod(tmp, 0o644);
  await rename(tmp, path);
}
