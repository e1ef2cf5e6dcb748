/**
 * Watches the QEMU process of every running instance, so that a QEMU killed or failed
 * shows STOPPED within a second. libvirt notices it too and says so (`Stopped Failed`),
 * but on a busy host that event comes seconds later (3.3 s measured on the 2-core test
 * host: libvirtd saw the monitor close after 1.5 s and tore the domain down for another
 * 1.8 s before it told its clients).
 *
 * libvirt runs QEMU with -no-shutdown: QEMU never exits by itself. A QEMU that is gone
 * was killed: by libvirt after a guest power-off (libvirt's `Shutdown` event comes first),
 * by libvirt for an operation (the agent's own: the instance is in a transition, or
 * just left one), or by something else (a crash). Only the last is called a crash here;
 * libvirt's own events correct anything else when they arrive (sync.ts).
 *
 * Local libvirt only: the PID comes from libvirt's pid file (qemu:///system keeps it at
 * /run/libvirt/qemu/<domain>.pid); a domain without a readable one is not watched.
 */
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { InstanceRegistry } from "./registry.js";

export interface QemuWatchOptions {
  registry: InstanceRegistry;
  logger: Logger;
  /** Path of libvirt's pid file of a domain. */
  pidFile: (domain: string) => string;
  /** Poll interval, ms (default 200). */
  intervalMs?: number;
  /** How long after a libvirt Shutdown event, or the end of an operation, a vanished QEMU is not a crash (ms, default 3000). */
  quietMs?: number;
}

/**
 * True while the process runs. A killed QEMU stays a zombie until its parent (init, since
 * libvirt daemonizes it) reaps it, which may take long: kill(pid, 0) would still succeed.
 */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X" && state !== "";
  } catch {
    return false;
  }
}

export class QemuWatch {
  private readonly pids = new Map<string, number>();
  /** Domains with a recent reason not to call a vanished QEMU a crash (ms timestamps). */
  private readonly quietUntil = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;

  constructor(private readonly o: QemuWatchOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs ?? 200);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** libvirt said the guest shut down (or the domain stopped or started): QEMU's end is explained. */
  explained(domain: string): void {
    this.quietUntil.set(domain, Date.now() + (this.o.quietMs ?? 3000));
    this.pids.delete(domain);
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const { registry } = this.o;
      const now = Date.now();
      const seen = new Set<string>();
      for (const entry of [...registry.all()]) {
        const id = entry.record.instanceId;
        if (entry.transition) this.quietUntil.set(id, now + (this.o.quietMs ?? 3000));
        if (entry.power !== "running" || entry.transition || entry.launchFailed || !registry.isConnected()) {
          if (entry.power !== "running") this.pids.delete(id);
          continue;
        }
        seen.add(id);
        let pid = this.pids.get(id);
        if (pid === undefined) {
          pid = await this.readPid(id);
          if (pid === undefined) continue;
          this.pids.set(id, pid);
        }
        if (await alive(pid)) continue;
        this.pids.delete(id);
        const current = registry.get(id);
        if ((this.quietUntil.get(id) ?? 0) > Date.now() || !current || current.transition || current.power !== "running") continue;
        current.stateReason = { code: "InstanceCrashed", message: "QEMU exited unexpectedly (killed or failed)", at: new Date().toISOString() };
        this.o.logger.warn({ instanceId: id, pid }, "instance crashed: its QEMU process is gone");
        registry.setPower(id, "shut off");
      }
      for (const id of [...this.pids.keys()]) if (!seen.has(id)) this.pids.delete(id);
      for (const [id, until] of [...this.quietUntil]) if (until <= now) this.quietUntil.delete(id);
    } finally {
      this.ticking = false;
    }
  }

  /** The PID in libvirt's pid file, if it names this domain's QEMU. */
  private async readPid(domain: string): Promise<number | undefined> {
    try {
      const pid = Number((await readFile(this.o.pidFile(domain), "utf8")).trim());
      if (!Number.isInteger(pid) || pid <= 1) return undefined;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
      return cmdline.includes(`guest=${domain},`) ? pid : undefined;
    } catch {
      return undefined;
    }
  }
}
