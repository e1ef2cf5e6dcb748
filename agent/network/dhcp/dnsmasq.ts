/**
 * One subnet's dnsmasq: found, adopted, started, told to re-read its files, stopped.
 *
 * dnsmasq runs as a daemon of its own (it forks; its pid file is under the agent's data
 * directory), not as a child that dies with the agent: guests keep renewing while the agent
 * restarts or after it was killed. A new agent finds it by its command line in /proc (the
 * pid-file argument names this subnet's directory), adopts it when the command line is the one
 * it would start, and ends every other one for that directory, so there is never a second
 * dnsmasq for a subnet. What dnsmasq serves comes only from the hosts and options files.
 */
import { readdir, readFile, rm } from "node:fs/promises";
import { basename } from "node:path";
import type { CommandRunner } from "../../../drivers/exec/runner.js";
import type { Logger } from "../../log.js";
import type { DnsmasqFiles } from "./render.js";

export const DNSMASQ = "dnsmasq";

export interface ProcInfo {
  pid: number;
  argv: string[];
}

async function cmdline(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, "utf8");
    if (raw === "") return undefined; // a zombie, or a kernel thread
    const argv = raw.split("\0");
    if (argv[argv.length - 1] === "") argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/** Every dnsmasq process of the machine (any namespace: /proc shows them all), with its arguments. */
export async function listDnsmasq(): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = await cmdline(Number(name));
    if (argv && basename(argv[0] ?? "") === DNSMASQ) out.push({ pid: Number(name), argv });
  }
  return out;
}

/** The pid file a dnsmasq was started with, if any. */
export function pidFileOf(argv: readonly string[]): string | undefined {
  return argv.find((a) => a.startsWith("--pid-file="))?.slice("--pid-file=".length);
}

function sameArgs(argv: readonly string[], args: readonly string[]): boolean {
  return argv.length === args.length + 1 && args.every((a, i) => argv[i + 1] === a);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** SIGTERM, up to `graceMs`, then SIGKILL; resolves once the process is gone. */
export async function endProcess(pid: number, graceMs = 3000): Promise<void> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!alive(pid)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  for (let i = 0; i < 40 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

export class DnsmasqProcess {
  private pid: number | undefined;

  constructor(
    private readonly o: {
      runner: CommandRunner;
      files: DnsmasqFiles;
      /** dnsmasq's arguments (render.ts dnsmasqArgs). */
      args: readonly string[];
      logger: Logger;
      /** Listing of the machine's dnsmasq processes (tests give their own). */
      list?: () => Promise<ProcInfo[]>;
    },
  ) {}

  get currentPid(): number | undefined {
    return this.pid;
  }

  private async ours(): Promise<ProcInfo[]> {
    const all = await (this.o.list ?? listDnsmasq)();
    return all.filter((p) => pidFileOf(p.argv) === this.o.files.pidFile);
  }

  /**
   * Adopts the running dnsmasq of this subnet when its command line is ours (any other one
   * for this directory is ended); "adopted", or "none" when there is none to adopt.
   */
  async adopt(): Promise<"adopted" | "none"> {
    const found = await this.ours();
    const keep = found.find((p) => sameArgs(p.argv, this.o.args));
    for (const p of found) {
      if (p === keep) continue;
      this.o.logger.info({ pid: p.pid, pidFile: this.o.files.pidFile }, "DHCP: ending a dnsmasq of this subnet started with other arguments, or a duplicate");
      await endProcess(p.pid);
    }
    this.pid = keep?.pid;
    return keep ? "adopted" : "none";
  }

  /** True while the adopted or started dnsmasq still runs with our arguments (not a reused pid). */
  async running(): Promise<boolean> {
    if (this.pid === undefined || !alive(this.pid)) return false;
    const argv = await cmdline(this.pid);
    return argv !== undefined && sameArgs(argv, this.o.args);
  }

  /** Starts dnsmasq (it daemonises; its parent reports start-up errors); throws when it does not run. */
  async start(): Promise<number> {
    await rm(this.o.files.pidFile, { force: true });
    const result = await this.o.runner.run([DNSMASQ, ...this.o.args], { timeoutMs: 20_000, allowFailure: true });
    if (result.exitCode !== 0) {
      throw new Error(`dnsmasq exited with ${result.exitCode}: ${result.stderr.trim() || result.stdout.trim()}`);
    }
    // The daemon writes its pid file right after the fork.
    for (let i = 0; i < 60; i++) {
      const text = await readFile(this.o.files.pidFile, "utf8").catch(() => "");
      const pid = Number(text.trim());
      if (Number.isInteger(pid) && pid > 0) {
        const argv = await cmdline(pid);
        if (argv && sameArgs(argv, this.o.args)) {
          this.pid = pid;
          return pid;
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`dnsmasq started but ${this.o.files.pidFile} names no dnsmasq of ours`);
  }

  /** SIGHUP: re-read the hosts and options files. False when it is not running. */
  reload(): boolean {
    if (this.pid === undefined) return false;
    try {
      process.kill(this.pid, "SIGHUP");
      return true;
    } catch {
      return false;
    }
  }

  /** SIGUSR2: reopen the log file (after it was moved aside). */
  reopenLog(): void {
    if (this.pid === undefined) return;
    try {
      process.kill(this.pid, "SIGUSR2");
    } catch {
      // gone: the supervisor starts it again
    }
  }

  /** Ends it (and any other dnsmasq of this directory). */
  async stop(): Promise<void> {
    const pids = new Set((await this.ours()).map((p) => p.pid));
    if (this.pid !== undefined) pids.add(this.pid);
    for (const pid of pids) await endProcess(pid);
    this.pid = undefined;
    await rm(this.o.files.pidFile, { force: true });
  }
}
