/**
 * The libvirt and QEMU side of a migration, through the one command runner: `virsh migrate`
 * (peer-to-peer, with QEMU's storage migration over NBD for the local disks), the job's
 * figures (`domjobinfo --rawstats`), the convergence knobs (max downtime, post-copy), abort;
 * and the cold path's disk copy: `qemu-nbd` exports a pre-created disk on the destination,
 * `qemu-img convert` writes the source's chain into it.
 */
import { connect } from "node:net";
import type { CommandRunner } from "../../drivers/exec/runner.js";

export interface LiveMigrationArgs {
  domain: string;
  /** The destination's libvirtd (qemu+tcp://ADDR/system). */
  destUri: string;
  /** The destination's link address: QEMU's migration stream and NBD go there. */
  address: string;
  /** The destination's definition (its paths, its metadata). */
  xmlFile: string;
  /** Disk targets whose contents QEMU copies (the local disks; never the CD-ROMs). */
  disks: string[];
  bandwidthMiBs?: number;
  postcopy: boolean;
  autoConverge: boolean;
}

/** The figures of a job in progress, from libvirt's typed parameters. */
export interface JobFigures {
  active: boolean;
  timeElapsedMs?: number;
  dataTotalBytes?: number;
  dataRemainingBytes?: number;
  memoryRemainingBytes?: number;
  diskRemainingBytes?: number;
  /** Bytes per second the guest dirties. */
  dirtyRateBps?: number;
  iteration?: number;
  /** Expected downtime (ms) while active; the real one once completed. */
  downtimeMs?: number;
  autoConvergeThrottle?: number;
  postcopyRequests?: number;
}

export class LibvirtMigration {
  constructor(private readonly o: { runner: CommandRunner; uri: string }) {}

  private virsh(args: readonly string[], timeoutMs = 30_000, signal?: AbortSignal) {
    return this.o.runner.run(["virsh", "-c", this.o.uri, ...args], { timeoutMs, ...(signal ? { signal } : {}) });
  }

  /** Runs the whole migration job; resolves when QEMU finished it (the guest then runs on the destination). */
  async migrate(a: LiveMigrationArgs, timeoutMs: number): Promise<void> {
    await this.virsh(
      [
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--copy-storage-all",
        ...(a.disks.length ? ["--migrate-disks", a.disks.join(",")] : []),
        "--xml",
        a.xmlFile,
        "--persistent-xml",
        a.xmlFile,
        ...(a.autoConverge ? ["--auto-converge"] : []),
        ...(a.postcopy ? ["--postcopy"] : []),
        ...(a.bandwidthMiBs ? ["--bandwidth", String(a.bandwidthMiBs)] : []),
        "--listen-address",
        a.address,
        "--domain",
        a.domain,
        "--desturi",
        a.destUri,
        "--migrateuri",
        `tcp://${a.address}`,
      ],
      timeoutMs,
    );
  }

  /** The running domain's definition as libvirt would send it (`dumpxml --migratable`). */
  async migratableXml(domain: string): Promise<string> {
    return (await this.virsh(["dumpxml", "--domain", domain, "--migratable"])).stdout;
  }

  async jobFigures(domain: string, completed = false): Promise<JobFigures> {
    const r = await this.virsh(["domjobinfo", "--domain", domain, "--rawstats", ...(completed ? ["--completed", "--keep-completed"] : [])], 15_000);
    return parseJobInfo(r.stdout);
  }

  async setMaxDowntime(domain: string, ms: number): Promise<void> {
    await this.virsh(["migrate-setmaxdowntime", "--domain", domain, "--downtime", String(Math.round(ms))]);
  }

  async postcopy(domain: string): Promise<void> {
    await this.virsh(["migrate-postcopy", "--domain", domain]);
  }

  async abort(domain: string): Promise<void> {
    await this.virsh(["domjobabort", "--domain", domain], 30_000).catch((error: unknown) => {
      // No job (it ended meanwhile): nothing to abort.
      if (/no job is active|not running|no active job/i.test(String((error as { stderr?: string }).stderr ?? (error as Error).message))) return;
      throw error;
    });
  }
}

/** `virsh domjobinfo --rawstats` → figures (lines "name: value", the first "Job type: X"). */
export function parseJobInfo(text: string): JobFigures {
  const values = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    values.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const num = (key: string): number | undefined => {
    const v = values.get(key);
    if (v === undefined) return undefined;
    const n = Number(v.split(/\s+/)[0]);
    return Number.isFinite(n) ? n : undefined;
  };
  const type = (values.get("job type") ?? values.get("type") ?? "").toLowerCase();
  const figures: JobFigures = { active: type === "unbounded" || type === "bounded" || type === "2" || type === "1" };
  const put = <K extends keyof JobFigures>(k: K, v: JobFigures[K] | undefined) => {
    if (v !== undefined) figures[k] = v;
  };
  put("timeElapsedMs", num("time_elapsed"));
  put("dataTotalBytes", num("data_total"));
  put("dataRemainingBytes", num("data_remaining"));
  put("memoryRemainingBytes", num("memory_remaining"));
  put("diskRemainingBytes", num("disk_remaining"));
  put("dirtyRateBps", mulOrUndefined(num("memory_dirty_rate"), num("memory_page_size") ?? 4096));
  put("iteration", num("memory_iteration"));
  put("downtimeMs", num("downtime"));
  put("autoConvergeThrottle", num("auto_converge_throttle"));
  put("postcopyRequests", num("memory_postcopy_requests"));
  return figures;
}

function mulOrUndefined(a: number | undefined, b: number): number | undefined {
  return a === undefined ? undefined : a * b;
}

/** The cold path: a destination disk served over NBD, written by qemu-img convert on the source. */
export interface NbdExport {
  port: number;
  stop(): Promise<void>;
}

/** Starts qemu-nbd on `address:port` serving `path` (qcow2, writable) as export `name`; resolves when it listens. */
export async function exportOverNbd(runner: CommandRunner, o: { path: string; address: string; port: number; name: string }): Promise<NbdExport> {
  let exited = false;
  let stderr = "";
  let onGone: () => void = () => undefined;
  const gone = new Promise<void>((resolve) => (onGone = resolve));
  const handle = runner.stream(
    // setpriv: the export dies with the agent (a SIGKILLed agent leaves no server holding the disk).
    ["setpriv", "--pdeathsig", "TERM", "--", "qemu-nbd", "--format", "qcow2", "--bind", o.address, "--port", String(o.port), "--export-name", o.name, "--persistent", "--shared", "1", "--cache", "none", o.path],
    {
      onLine: () => undefined,
      onStderrLine: (line) => (stderr += `${line}\n`),
      onExit: () => {
        exited = true;
        onGone();
      },
    },
  );
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`qemu-nbd for ${o.path} exited: ${stderr.trim().slice(0, 300)}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect(o.port, o.address);
      s.once("connect", () => (s.destroy(), res(true)));
      s.once("error", () => res(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      handle.kill();
      throw new Error(`qemu-nbd for ${o.path} did not listen on ${o.address}:${o.port}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port: o.port,
    async stop() {
      if (!exited) handle.kill();
      await Promise.race([gone, new Promise((r) => setTimeout(r, 8000))]);
    },
  };
}

/** Copies the guest-visible contents of `source` (its whole chain) into the NBD export. */
export async function copyToNbd(runner: CommandRunner, o: { source: string; address: string; port: number; name: string; signal?: AbortSignal; timeoutMs: number }): Promise<void> {
  await runner.run(
    ["qemu-img", "convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw", "-W", o.source, `nbd://${o.address}:${o.port}/${o.name}`],
    { timeoutMs: o.timeoutMs, ...(o.signal ? { signal: o.signal } : {}) },
  );
}
