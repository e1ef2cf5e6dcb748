/**
 * Bulk domain statistics: ONE `virsh domstats --nowait` for every active domain per call
 * (never a process per domain). `--nowait` (libvirt >= 4.5, VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
 * makes libvirtd skip, rather than wait for, the statistics of a domain whose job lock is
 * held, so one hung domain (a stopped QEMU, a stuck monitor) cannot stall the others; the
 * call still has a deadline (timeoutMs), after which it is killed and the sample is missed.
 *
 * The driver speaks the agent's types: counters by name, never virsh's text. What the
 * parser reads (libvirt 9 field names):
 *   state.state; cpu.time; vcpu.current, vcpu.N.time, vcpu.N.delay;
 *   balloon.current, balloon.maximum, balloon.available, balloon.usable, balloon.unused,
 *   balloon.last-update (guest statistics are present only when the guest's balloon driver
 *   reports them, at the <memballoon><stats period> the domain definition sets);
 *   net.N.{name,rx.bytes,rx.pkts,rx.errs,rx.drop,tx.…} (libvirt reports a tap's counters
 *   from the guest's side: rx is what the guest received);
 *   block.N.{name,rd.reqs,rd.bytes,rd.times,wr.reqs,wr.bytes,wr.times,fl.reqs,fl.times}.
 */
import type { CommandRunner } from "../exec/runner.js";
import { translateVirshError } from "./errors.js";
import type { VirshSession } from "./virsh-session.js";

/** One NIC's counters, from the guest's side. */
export interface NicCounters {
  name: string;
  rxBytes: number;
  rxPkts: number;
  rxErrs: number;
  rxDrop: number;
  txBytes: number;
  txPkts: number;
  txErrs: number;
  txDrop: number;
}

/** One disk's counters; times are nanoseconds spent on the requests. */
export interface BlockCounters {
  name: string;
  rdReqs: number;
  rdBytes: number;
  rdTimesNs: number;
  wrReqs: number;
  wrBytes: number;
  wrTimesNs: number;
  flReqs: number;
  flTimesNs: number;
}

/** What one domain reported in one bulk call; a field is undefined when libvirt left it out. */
export interface DomainCounters {
  name: string;
  /** virDomainState number (1 running, 3 paused, …). */
  state?: number;
  /** Host CPU time of the whole QEMU process (vCPUs and emulator), ns. */
  cpuTimeNs?: number;
  vcpus?: number;
  /** Sum over vCPUs of the guest's CPU time, ns. */
  vcpuTimeNs?: number;
  /** Sum over vCPUs of the time spent runnable but waiting for a host CPU, ns (schedstat). */
  vcpuDelayNs?: number;
  /** Balloon: memory given to the guest now and at most, KiB. */
  balloonCurrentKiB?: number;
  balloonMaximumKiB?: number;
  /** Guest statistics (the balloon driver's): total as the guest sees it, usable without swapping, free; KiB. */
  balloonAvailableKiB?: number;
  balloonUsableKiB?: number;
  balloonUnusedKiB?: number;
  /** When the guest last reported its statistics, Unix seconds (0: never). */
  balloonLastUpdate?: number;
  nics: NicCounters[];
  blocks: BlockCounters[];
}

export interface DomainStatsOptions {
  runner: CommandRunner;
  uri: string;
  /** A long-lived virsh shell for the call (virsh-session.ts); without it, one `virsh` process per call. */
  session?: VirshSession;
}

/**
 * The flags of the bulk call: every active domain (running or paused), the groups the
 * monitor needs, and --nowait. `--block` without `--backing`: one entry per disk.
 */
export const DOMSTATS_ARGS: readonly string[] = Object.freeze([
  "domstats",
  "--list-active",
  "--nowait",
  "--state",
  "--cpu-total",
  "--vcpu",
  "--balloon",
  "--interface",
  "--block",
]);

/** One bulk statistics call for all active domains, killed at timeoutMs. */
export async function collectDomainStats(o: DomainStatsOptions, timeoutMs: number, signal?: AbortSignal): Promise<DomainCounters[]> {
  try {
    if (o.session) return parseDomStatsLines(await o.session.run(DOMSTATS_ARGS, timeoutMs, signal));
    const { stdout } = await o.runner.run(["virsh", "-c", o.uri, ...DOMSTATS_ARGS], { timeoutMs, ...(signal ? { signal } : {}) });
    return parseDomStats(stdout);
  } catch (error) {
    throw translateVirshError(error, "domstats");
  }
}

const DOMAIN_LINE = /^Domain: '(.*)'$/;

function num(fields: Map<string, string>, key: string): number | undefined {
  const v = fields.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** Parses `virsh domstats` output (pure). */
export function parseDomStats(text: string): DomainCounters[] {
  return parseDomStatsLines(text.split("\n"));
}

/** Parses `virsh domstats` output given as lines (pure); other lines (a shell's prompt) are skipped. */
export function parseDomStatsLines(lines: Iterable<string>): DomainCounters[] {
  const out: DomainCounters[] = [];
  let name: string | undefined;
  // One map for every domain (cleared): no map per domain for the collector to sweep.
  const fields = new Map<string, string>();
  const flush = () => {
    if (name !== undefined) out.push(toCounters(name, fields));
    name = undefined;
    fields.clear();
  };
  for (const raw of lines) {
    const line = raw.trim();
    if (line === "") continue;
    const d = DOMAIN_LINE.exec(line);
    if (d) {
      flush();
      name = d[1]!;
      continue;
    }
    const eq = line.indexOf("=");
    if (eq > 0 && name !== undefined) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  flush();
  return out;
}

function toCounters(name: string, f: Map<string, string>): DomainCounters {
  const c: DomainCounters = { name, nics: [], blocks: [] };
  const set = <K extends keyof DomainCounters>(key: K, value: DomainCounters[K] | undefined) => {
    if (value !== undefined) c[key] = value;
  };
  set("state", num(f, "state.state"));
  set("cpuTimeNs", num(f, "cpu.time"));
  set("balloonCurrentKiB", num(f, "balloon.current"));
  set("balloonMaximumKiB", num(f, "balloon.maximum"));
  set("balloonAvailableKiB", num(f, "balloon.available"));
  set("balloonUsableKiB", num(f, "balloon.usable"));
  set("balloonUnusedKiB", num(f, "balloon.unused"));
  set("balloonLastUpdate", num(f, "balloon.last-update"));
  const vcpus = num(f, "vcpu.current");
  if (vcpus !== undefined) {
    c.vcpus = vcpus;
    let time = 0;
    let delay = 0;
    let haveTime = false;
    let haveDelay = false;
    for (let i = 0; i < (num(f, "vcpu.maximum") ?? vcpus); i++) {
      const t = num(f, `vcpu.${i}.time`);
      const d = num(f, `vcpu.${i}.delay`);
      if (t !== undefined) {
        time += t;
        haveTime = true;
      }
      if (d !== undefined) {
        delay += d;
        haveDelay = true;
      }
    }
    if (haveTime) c.vcpuTimeNs = time;
    if (haveDelay) c.vcpuDelayNs = delay;
  }
  for (let i = 0; i < (num(f, "net.count") ?? 0); i++) {
    const p = `net.${i}.`;
    c.nics.push({
      name: f.get(`${p}name`) ?? `net${i}`,
      rxBytes: num(f, `${p}rx.bytes`) ?? 0,
      rxPkts: num(f, `${p}rx.pkts`) ?? 0,
      rxErrs: num(f, `${p}rx.errs`) ?? 0,
      rxDrop: num(f, `${p}rx.drop`) ?? 0,
      txBytes: num(f, `${p}tx.bytes`) ?? 0,
      txPkts: num(f, `${p}tx.pkts`) ?? 0,
      txErrs: num(f, `${p}tx.errs`) ?? 0,
      txDrop: num(f, `${p}tx.drop`) ?? 0,
    });
  }
  for (let i = 0; i < (num(f, "block.count") ?? 0); i++) {
    const p = `block.${i}.`;
    // A disk without counters (an empty CD-ROM tray, or skipped under --nowait) is left out.
    if (num(f, `${p}rd.reqs`) === undefined && num(f, `${p}wr.reqs`) === undefined) continue;
    c.blocks.push({
      name: f.get(`${p}name`) ?? `block${i}`,
      rdReqs: num(f, `${p}rd.reqs`) ?? 0,
      rdBytes: num(f, `${p}rd.bytes`) ?? 0,
      rdTimesNs: num(f, `${p}rd.times`) ?? 0,
      wrReqs: num(f, `${p}wr.reqs`) ?? 0,
      wrBytes: num(f, `${p}wr.bytes`) ?? 0,
      wrTimesNs: num(f, `${p}wr.times`) ?? 0,
      flReqs: num(f, `${p}fl.reqs`) ?? 0,
      flTimesNs: num(f, `${p}fl.times`) ?? 0,
    });
  }
  return c;
}
