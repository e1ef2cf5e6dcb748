/**
 * The Hypervisor port over virsh: every call is `virsh -c URI <subcommand> …`
 * as an argv array through the CommandRunner. Domains are always named with
 * `--domain NAME`, so a name can never be taken for an option.
 */
import { randomUUID } from "node:crypto";
import { rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CommandRunner, RunResult } from "../exec/runner.js";
import { buildDimmXml, buildDiskXml, buildDomainXml, buildMetadataElement, buildNicXml, METADATA_NAMESPACE, METADATA_PREFIX, parseDomainXml } from "./domain-xml.js";
import { mayHaveChanged, translateVirshError, virshFailureKind, type VirshFailureKind } from "./errors.js";
import { superviseEvents, type BackoffOptions, type DriverLogger } from "./events.js";
import { awaitStateChange, DEFAULT_STATE_CHANGE_POLICY, type Look, type StateChangePolicy } from "./state-change.js";
import { DomainNotFoundError, DomainStateError, GuestAgentError } from "./types.js";
import { asciiJson, asciiXml, goesOnStdin, runVirshOnStdin } from "./virsh-stdin.js";
import type {
  DomainDetails,
  DomainDiskSpec,
  DomainNicSpec,
  DomainPowerState,
  DomainSpec,
  DomainSummary,
  EventHandlers,
  EventWatch,
  Hypervisor,
  LiveDomainSize,
} from "./types.js";

export interface VirshHypervisorOptions {
  runner: CommandRunner;
  /** libvirt connection URI, e.g. qemu:///system. */
  uri: string;
  /** Directory for the temporary domain XML files given to `virsh define`. */
  tmpDir: string;
  /**
   * Directory (0700) for virsh's own state when a command goes on its standard input
   * (readline's empty history file). Default: tmpDir. Kept apart from tmpDir by the agent,
   * whose tmp must be empty once no operation is under way.
   */
  stateDir?: string;
  logger?: DriverLogger;
  /** Timeout of each virsh call, in milliseconds. Default: the runner's default. */
  timeoutMs?: number;
  /** Restart backoff of the event child (defaults: 0.5 s doubling to 10 s, reset after 30 s). */
  eventBackoff?: Partial<BackoffOptions>;
  /**
   * How calls that change a domain wait for a slow libvirt (see state-change.ts; defaults
   * there). They are not bound by timeoutMs: at their deadline the driver looks at the domain.
   */
  stateChange?: Partial<StateChangePolicy>;
  /**
   * Whether KVM is usable on the host. Default: /dev/kvm exists and can be opened
   * read-write by this process (fs.access). `virsh domcapabilities` is not trusted:
   * it answers even where KVM does not work.
   */
  kvmUsable?: () => Promise<boolean>;
}

/** virDomainState numbers, as `virsh domstats --state` prints them. */
const STATE_BY_NUMBER: Readonly<Record<string, DomainPowerState>> = {
  "0": "no state",
  "1": "running",
  "2": "blocked",
  "3": "paused",
  "4": "in shutdown",
  "5": "shut off",
  "6": "crashed",
  "7": "pmsuspended",
};

const STATE_NAMES: ReadonlySet<string> = new Set(Object.values(STATE_BY_NUMBER));

/**
 * How a look tells that a change is made: from the domain's state (null: no such domain),
 * or from its persistent or live definition (null: no such domain, or not running).
 */
type Seen =
  | { kind: "state"; done: (state: DomainPowerState | null) => boolean; underWay?: (state: DomainPowerState | null) => boolean }
  | { kind: "config" | "live"; done: (spec: DomainSpec | null) => boolean };

const isOn = (s: DomainPowerState | null) => s === "running" || s === "blocked" || s === "in shutdown";
const isOff = (s: DomainPowerState | null) => s === null || s === "shut off" || s === "crashed";
/** For calls whose effect a look cannot see (reboot, reset): a look only tells that libvirt answers. */
const UNSEEN: Seen = { kind: "state", done: () => false };
const hasDisk = (spec: DomainSpec | null, target: string) => spec?.disks.some((d) => d.target === target) ?? false;
const hasNic = (spec: DomainSpec | null, mac: string) => spec?.nics.some((n) => n.mac.toLowerCase() === mac.toLowerCase()) ?? false;

/** Separates the outputs of the sub-commands of the one `virsh` call in listDomains. */
const SECTION_MARK = "@@cdh-agent-section@@";
const DOMAIN_MARK = "@@cdh-agent-domain@@";
/**
 * Domains per virsh process in getDomains (one process's output, some 5 KB of XML a
 * domain, stays under a MiB). Each virsh process costs its start and its connection to
 * libvirtd (some 40 ms on the 2-CPU host) and a fork of the agent: 50 a process made
 * start-up recovery of 1,000 domains spend 1 s of its 4.5 s on them (bench (b), README).
 */
const DOMAIN_BATCH = 125;
/**
 * virsh processes of getDomains at once: two, so that libvirtd answers one while the
 * agent reads the other's output (on 2 CPUs more only contend). Start-up recovery asks
 * for a few hundred domains at a time (recovery.ts), so at most two batches' output and
 * domain trees are held at once.
 */
const DOMAIN_BATCHES_AT_ONCE = 2;
/** Domain names that go into a virsh script unquoted. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

/**
 * /dev/kvm is usable by QEMU when it is a character device that libvirt's
 * QEMU user can open: access(2) is no answer when the agent runs as root, so
 * the mode bits are read instead (group or other read-write, as udev sets it
 * for the kvm group).
 */
async function defaultKvmUsable(): Promise<boolean> {
  try {
    const st = await stat("/dev/kvm");
    if (!st.isCharacterDevice()) return false;
    return (st.mode & 0o060) === 0o060 || (st.mode & 0o006) === 0o006;
  } catch {
    return false;
  }
}

export class VirshHypervisor implements Hypervisor {
  private readonly runner: CommandRunner;
  private readonly uri: string;
  private readonly tmpDir: string;
  private readonly stateDir: string;
  private readonly logger: DriverLogger | undefined;
  private readonly timeoutMs: number | undefined;
  private readonly eventBackoff: Partial<BackoffOptions> | undefined;
  private readonly kvmCheck: () => Promise<boolean>;
  private readonly policy: StateChangePolicy;
  /** What every start waits for first (holdStartsUntil). */
  private startGate: Promise<unknown> = Promise.resolve();

  constructor(options: VirshHypervisorOptions) {
    this.runner = options.runner;
    this.uri = options.uri;
    this.tmpDir = options.tmpDir;
    this.stateDir = options.stateDir ?? options.tmpDir;
    this.logger = options.logger;
    this.timeoutMs = options.timeoutMs;
    this.eventBackoff = options.eventBackoff;
    this.kvmCheck = options.kvmUsable ?? defaultKvmUsable;
    this.policy = { ...DEFAULT_STATE_CHANGE_POLICY, ...options.stateChange };
  }

  /**
   * Runs `virsh -c URI ...args`; failures are translated to typed errors. The sub-commands
   * whose arguments may hold a secret (metadata, qemu-agent-command) go to virsh on its
   * standard input, never on its argv (virsh-stdin.ts).
   */
  private async virsh(args: readonly string[], what: string, domain?: string, timeoutMs = this.timeoutMs, signal?: AbortSignal): Promise<RunResult> {
    try {
      if (goesOnStdin(args)) {
        return await runVirshOnStdin(args, {
          runner: this.runner,
          uri: this.uri,
          stateDir: this.stateDir,
          ...(timeoutMs !== undefined ? { timeoutMs } : {}),
          ...(signal ? { signal } : {}),
        });
      }
      return await this.runner.run(["virsh", "-c", this.uri, ...args], {
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      throw translateVirshError(error, what, domain);
    }
  }

  /**
   * A call that changes domain `name`: its deadline alone never fails it (state-change.ts).
   * `seen` tells from a look at the domain whether the change is made; `quiet` lists the
   * failures that count as success (a destroy of a domain already off).
   */
  private async change(
    args: readonly string[],
    what: string,
    name: string,
    seen: Seen,
    quiet: readonly VirshFailureKind[] = [],
  ): Promise<void> {
    await awaitStateChange({
      what,
      call: async (signal) => {
        try {
          // The runner's timeout is only a backstop: awaitStateChange ends the call itself.
          await this.virsh(args, what, name, this.policy.overallMs + this.policy.silentLimitMs, signal);
        } catch (error) {
          const kind = virshFailureKind((error as Error).cause);
          if (kind !== undefined && quiet.includes(kind)) return;
          throw error;
        }
      },
      look: () => this.look(name, seen),
      uncertain: mayHaveChanged,
      policy: this.policy,
      ...(this.logger ? { logger: this.logger } : {}),
    });
  }

  /** One read-only look at a domain, bounded by the policy's lookTimeoutMs; never throws. */
  private async look(name: string, seen: Seen): Promise<Look> {
    const t = this.policy.lookTimeoutMs;
    try {
      const state = await this.lookState(name, t);
      if (seen.kind === "state") return { answered: true, done: seen.done(state), underWay: seen.underWay?.(state) ?? false, detail: state ?? "no such domain" };
      if (state === null) return { answered: true, done: seen.done(null), detail: "no such domain" };
      const live = seen.kind === "live";
      if (live && (state === "shut off" || state === "crashed")) return { answered: true, done: seen.done(null), detail: state };
      const xml = (await this.virsh(["dumpxml", "--domain", name, ...(live ? [] : ["--inactive"])], `dumpxml ${name}`, name, t)).stdout;
      return { answered: true, done: seen.done(parseDomainXml(xml)), detail: `${state}, ${live ? "live" : "persistent"} definition read` };
    } catch (error) {
      if (error instanceof DomainNotFoundError) return { answered: true, done: seen.done(null), detail: "no such domain" };
      return { answered: false, detail: (error as Error).message };
    }
  }

  private async lookState(name: string, timeoutMs: number): Promise<DomainPowerState | null> {
    try {
      const state = (await this.virsh(["domstate", "--domain", name], `domstate ${name}`, name, timeoutMs)).stdout.trim();
      return STATE_NAMES.has(state) ? (state as DomainPowerState) : "no state";
    } catch (error) {
      if (error instanceof DomainNotFoundError) return null;
      throw error;
    }
  }

  async ping(timeoutMs?: number): Promise<boolean> {
    try {
      await this.virsh(["uri"], "uri", undefined, timeoutMs ?? this.timeoutMs);
      return true;
    } catch {
      return false;
    }
  }

  async capabilities(): Promise<{ kvmUsable: boolean }> {
    return { kvmUsable: await this.kvmCheck() };
  }

  /**
   * The user and group QEMU runs as: libvirt's DAC base label (`<baselabel type='kvm'>+64055:+64055`
   * in the capabilities), or undefined when libvirt labels nothing (QEMU runs as root).
   */
  async qemuProcessIds(): Promise<{ uid: number; gid: number } | undefined> {
    const xml = (await this.virsh(["capabilities"], "capabilities")).stdout;
    const m = /<baselabel type=['"](?:kvm|qemu)['"]>\+?(\d+):\+?(\d+)<\/baselabel>/.exec(xml);
    return m ? { uid: Number(m[1]), gid: Number(m[2]) } : undefined;
  }

  async defineDomain(spec: DomainSpec): Promise<void> {
    const xml = buildDomainXml(spec);
    const file = join(this.tmpDir, `domain-${randomUUID()}.xml`);
    await writeFile(file, xml, { mode: 0o600 });
    try {
      const wanted = buildDomainXml(spec);
      await this.change(["define", "--file", file, "--validate"], `define ${spec.name}`, spec.name, {
        kind: "config",
        done: (now) => now !== null && buildDomainXml(now) === wanted,
      });
      this.logger?.debug({ domain: spec.name }, "domain defined");
    } finally {
      await rm(file, { force: true });
    }
  }

  async getDomain(name: string): Promise<DomainDetails | null> {
    const state = await this.domainState(name);
    if (state === null) return null;
    let xml: string;
    try {
      // The persistent definition: what the agent defined, without the live
      // additions (auto-named vnetN devices, aliases, pty paths).
      xml = (await this.virsh(["dumpxml", "--domain", name, "--inactive"], `dumpxml ${name}`, name)).stdout;
    } catch (error) {
      if (virshFailureKind((error as Error).cause) === "not-found") return null; // undefined meanwhile
      throw error;
    }
    return { spec: parseDomainXml(xml), state };
  }

  async getDomains(names: readonly string[], knownStates?: ReadonlyMap<string, DomainPowerState>): Promise<Map<string, DomainDetails>> {
    const found = new Map<string, DomainDetails>();
    const plain = names.filter((n) => SAFE_NAME.test(n));
    // A name virsh's command line would need quoting for is rare: it goes on its own.
    for (const name of names.filter((n) => !SAFE_NAME.test(n))) {
      const d = await this.getDomain(name);
      if (d) found.set(name, d);
    }
    const batches: string[][] = [];
    for (let i = 0; i < plain.length; i += DOMAIN_BATCH) batches.push(plain.slice(i, i + DOMAIN_BATCH));
    const results: Array<Map<string, DomainDetails>> = [];
    let next = 0;
    // A few batches at once, started in order; the results are merged in order.
    const worker = async () => {
      while (next < batches.length) {
        const index = next++;
        const batch = batches[index]!;
        // virsh runs every command of the script even when one fails (a domain undefined
        // meanwhile); the final echo makes its exit status that of a success.
        // A state already known (listDomains' domstats) is not asked again: half the calls to libvirtd.
        const script = batch
          .flatMap((n) =>
            knownStates?.has(n)
              ? [`echo ${DOMAIN_MARK} ${n}`, `dumpxml --domain ${n} --inactive`]
              : [`echo ${DOMAIN_MARK} ${n}`, `domstate --domain ${n}`, `echo ${SECTION_MARK}`, `dumpxml --domain ${n} --inactive`],
          )
          .concat(`echo ${DOMAIN_MARK}`)
          .join("; ");
        const { stdout } = await this.virsh([script], `dumpxml of ${batch.length} domains`);
        results[index] = parseDomainBatch(stdout, knownStates);
      }
    };
    await Promise.all(Array.from({ length: Math.min(DOMAIN_BATCHES_AT_ONCE, batches.length) }, worker));
    for (const batch of results) for (const [name, details] of batch) found.set(name, details);
    return found;
  }

  /**
   * One virsh process for all domains: names and UUIDs, the persistent ones, and
   * every state (domstats reads them in one libvirt call, without taking domain
   * job locks thanks to --nowait).
   */
  async listDomains(): Promise<DomainSummary[]> {
    const script = [
      "list --all --uuid --name",
      `echo ${SECTION_MARK}`,
      "list --all --persistent --uuid",
      `echo ${SECTION_MARK}`,
      "domstats --state --nowait",
    ].join("; ");
    const { stdout } = await this.virsh([script], "list");
    return parseDomainList(stdout);
  }

  async domainState(name: string): Promise<DomainPowerState | null> {
    try {
      const { stdout } = await this.virsh(["domstate", "--domain", name], `domstate ${name}`, name);
      const state = stdout.trim();
      return STATE_NAMES.has(state) ? (state as DomainPowerState) : "no state";
    } catch (error) {
      if (virshFailureKind((error as Error).cause) === "not-found") return null;
      throw error;
    }
  }

  /**
   * Every domain start from now on waits until `ready` settles, and fails when it rejects:
   * at start-up the API answers while the firewall's ruleset is still being loaded, and no
   * guest may run before its rules are in the kernel.
   */
  holdStartsUntil(ready: Promise<unknown>): void {
    this.startGate = ready;
  }

  async start(name: string): Promise<void> {
    await this.startGate;
    // libvirt starts QEMU with its vCPUs paused and lets them run at the end of the start.
    await this.change(["start", "--domain", name], `start ${name}`, name, { kind: "state", done: isOn, underWay: (s) => s === "paused" });
  }

  async shutdown(name: string): Promise<void> {
    // The call only presses the power button: a guest seen going down or off had it pressed.
    await this.change(["shutdown", "--domain", name, "--mode", "acpi"], `shutdown ${name}`, name, {
      kind: "state",
      done: (s) => isOff(s) || s === "in shutdown",
    });
  }

  async destroy(name: string): Promise<void> {
    await this.change(["destroy", "--domain", name], `destroy ${name}`, name, { kind: "state", done: isOff }, ["not-running"]);
  }

  async reboot(name: string): Promise<void> {
    await this.change(["reboot", "--domain", name, "--mode", "acpi"], `reboot ${name}`, name, UNSEEN);
  }

  async suspend(name: string): Promise<void> {
    await this.change(["suspend", "--domain", name], `suspend ${name}`, name, { kind: "state", done: (s) => s === "paused" });
  }

  async resume(name: string): Promise<void> {
    await this.change(["resume", "--domain", name], `resume ${name}`, name, { kind: "state", done: (s) => s === "running" || s === "blocked" });
  }

  async reset(name: string): Promise<void> {
    await this.change(["reset", "--domain", name], `reset ${name}`, name, UNSEEN);
  }

  async undefine(name: string): Promise<void> {
    await this.change(
      ["undefine", "--domain", name, "--nvram", "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"],
      `undefine ${name}`,
      name,
      { kind: "state", done: (s) => s === null },
      ["not-found"],
    );
  }

  async changeMedia(name: string, target: string, path: string): Promise<void> {
    const state = await this.domainState(name);
    const live = state !== null && state !== "shut off" && state !== "crashed";
    await this.change(
      ["change-media", "--domain", name, "--path", target, "--source", path, "--update", ...(live ? ["--live", "--config"] : ["--config"])],
      `change-media ${name}`,
      name,
      { kind: "config", done: (spec) => spec?.disks.some((d) => d.target === target && d.path === path) ?? false },
    );
  }

  async attachDisk(name: string, disk: DomainDiskSpec, live: boolean): Promise<void> {
    const file = join(this.tmpDir, `disk-${randomUUID()}.xml`);
    await writeFile(file, buildDiskXml(disk), { mode: 0o600 });
    try {
      // libvirt applies the live part first: a disk in the persistent definition is in both.
      await this.change(
        ["attach-device", "--domain", name, "--file", file, "--config", ...(live ? ["--live"] : [])],
        `attach-device ${name} ${disk.target}`,
        name,
        { kind: "config", done: (spec) => hasDisk(spec, disk.target) },
      );
    } finally {
      await rm(file, { force: true });
    }
  }

  async detachDisk(name: string, target: string, live: boolean, timeoutMs = 30_000): Promise<void> {
    if (live) {
      const present = await this.liveDiskTargets(name);
      if (present?.includes(target)) {
        await this.change(["detach-disk", "--domain", name, "--target", target, "--live"], `detach-disk ${name} ${target} --live`, name, {
          kind: "live",
          done: (spec) => !hasDisk(spec, target),
        });
        // The guest has to let the device go (ACPI eject); QEMU removes it then.
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const now = await this.liveDiskTargets(name);
          if (!now?.includes(target)) break;
          if (Date.now() > deadline) throw new DomainStateError(`the guest of ${name} did not release disk ${target} within ${timeoutMs / 1000} s`);
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    }
    const inactive = parseDomainXml((await this.virsh(["dumpxml", "--domain", name, "--inactive"], `dumpxml ${name}`, name)).stdout);
    if (inactive.disks.some((d) => d.target === target)) {
      await this.change(["detach-disk", "--domain", name, "--target", target, "--config"], `detach-disk ${name} ${target} --config`, name, {
        kind: "config",
        done: (spec) => !hasDisk(spec, target),
      });
    }
  }

  async blockResize(name: string, target: string, sizeBytes: number): Promise<void> {
    await this.change(["blockresize", "--domain", name, "--path", target, "--size", `${sizeBytes}B`], `blockresize ${name} ${target}`, name, UNSEEN);
  }

  async setVcpusLive(name: string, count: number): Promise<void> {
    await this.virsh(["setvcpus", "--domain", name, "--count", String(count), "--live", "--config"], `setvcpus ${name} ${count}`, name);
  }

  async attachMemoryLive(name: string, sizeMiB: number): Promise<void> {
    const file = join(this.tmpDir, `dimm-${randomUUID()}.xml`);
    await writeFile(file, buildDimmXml(sizeMiB), { mode: 0o600 });
    try {
      await this.virsh(["attach-device", "--domain", name, "--file", file, "--live", "--config"], `attach-device ${name} dimm ${sizeMiB} MiB`, name);
    } finally {
      await rm(file, { force: true });
    }
  }

  async liveSize(name: string): Promise<LiveDomainSize | null> {
    const state = await this.domainState(name);
    if (state === null || state === "shut off" || state === "crashed") return null;
    const xml = (await this.virsh(["dumpxml", "--domain", name], `dumpxml ${name}`, name)).stdout;
    const spec = parseDomainXml(xml);
    const dimms = (xml.match(/<memory model=['"]dimm['"]/g) ?? []).length;
    const hp = spec.hotplug;
    return {
      vcpus: spec.vcpus,
      memoryMiB: spec.memoryMiB,
      maxVcpus: hp?.maxVcpus ?? spec.vcpus,
      maxMemoryMiB: hp?.maxMemoryMiB ?? spec.memoryMiB,
      freeSlots: Math.max(0, (hp?.memorySlots ?? 0) - dimms),
    };
  }

  async liveDiskTargets(name: string): Promise<string[] | null> {
    const state = await this.domainState(name);
    if (state === null || state === "shut off" || state === "crashed") return null;
    try {
      const xml = (await this.virsh(["dumpxml", "--domain", name], `dumpxml ${name}`, name)).stdout;
      return parseDomainXml(xml).disks.map((d) => d.target);
    } catch (error) {
      if (virshFailureKind((error as Error).cause) === "not-found") return null;
      throw error;
    }
  }

  async attachNic(name: string, nic: DomainNicSpec, live: boolean): Promise<void> {
    const file = join(this.tmpDir, `nic-${randomUUID()}.xml`);
    await writeFile(file, buildNicXml(nic), { mode: 0o600 });
    try {
      // libvirt applies the live part first: a NIC in the persistent definition is in both.
      await this.change(
        ["attach-device", "--domain", name, "--file", file, "--config", ...(live ? ["--live"] : [])],
        `attach-device ${name} interface ${nic.mac}`,
        name,
        { kind: "config", done: (spec) => hasNic(spec, nic.mac) },
      );
    } finally {
      await rm(file, { force: true });
    }
  }

  async detachNic(name: string, mac: string, live: boolean, timeoutMs = 30_000): Promise<void> {
    if (live) {
      const present = await this.liveNics(name);
      const nic = present?.find((n) => n.mac.toLowerCase() === mac.toLowerCase());
      if (nic) {
        await this.change(["detach-interface", "--domain", name, "--type", "network" in nic.source ? "network" : "bridge", "--mac", mac, "--live"], `detach-interface ${name} ${mac} --live`, name, {
          kind: "live",
          done: (spec) => !hasNic(spec, mac),
        });
        // The guest has to let the device go (ACPI eject); QEMU removes it then.
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const now = await this.liveNics(name);
          if (!now?.some((n) => n.mac.toLowerCase() === mac.toLowerCase())) break;
          if (Date.now() > deadline) throw new DomainStateError(`the guest of ${name} did not release NIC ${mac} within ${timeoutMs / 1000} s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    const inactive = parseDomainXml((await this.virsh(["dumpxml", "--domain", name, "--inactive"], `dumpxml ${name}`, name)).stdout);
    const defined = inactive.nics.find((n) => n.mac.toLowerCase() === mac.toLowerCase());
    if (defined) {
      await this.change(["detach-interface", "--domain", name, "--type", "network" in defined.source ? "network" : "bridge", "--mac", mac, "--config"], `detach-interface ${name} ${mac} --config`, name, {
        kind: "config",
        done: (spec) => !hasNic(spec, mac),
      });
    }
  }

  async liveNics(name: string): Promise<DomainNicSpec[] | null> {
    const state = await this.domainState(name);
    if (state === null || state === "shut off" || state === "crashed") return null;
    try {
      const xml = (await this.virsh(["dumpxml", "--domain", name], `dumpxml ${name}`, name)).stdout;
      return parseDomainXml(xml).nics;
    } catch (error) {
      if (virshFailureKind((error as Error).cause) === "not-found") return null;
      throw error;
    }
  }

  async ejectMedia(name: string, target: string): Promise<void> {
    const state = await this.domainState(name);
    const live = state !== null && state !== "shut off" && state !== "crashed";
    await this.change(
      ["change-media", "--domain", name, "--path", target, "--eject", "--force", ...(live ? ["--live", "--config"] : ["--config"])],
      `change-media --eject ${name}`,
      name,
      { kind: "config", done: (spec) => spec?.disks.some((d) => d.target === target && d.path === undefined) ?? false },
    );
  }

  async guestAgent(name: string, command: Record<string, unknown>, timeoutS = 10): Promise<unknown> {
    let result: RunResult;
    try {
      result = await this.virsh(
        ["qemu-agent-command", "--domain", name, "--timeout", String(timeoutS), asciiJson(command)],
        `qemu-agent-command ${name}`,
        name,
      );
    } catch (error) {
      if (error instanceof DomainNotFoundError) throw error;
      throw new GuestAgentError(name, (error as Error).message, { cause: error });
    }
    try {
      return (JSON.parse(result.stdout) as { return?: unknown }).return;
    } catch (error) {
      throw new GuestAgentError(name, `unreadable answer ${JSON.stringify(result.stdout.slice(0, 200))}`, { cause: error });
    }
  }

  async setMetadata(name: string, metadata: string): Promise<void> {
    const state = await this.domainState(name);
    if (state === null) {
      // Let virsh say it, so that the error carries the real cause.
      await this.metadataCall(name, metadata, false);
      return;
    }
    const live = state !== "shut off";
    try {
      await this.metadataCall(name, metadata, live);
    } catch (error) {
      // The domain stopped between domstate and metadata: the config is what counts.
      if (live && virshFailureKind((error as Error).cause) === "not-running") {
        await this.metadataCall(name, metadata, false);
        return;
      }
      throw error;
    }
  }

  private async metadataCall(name: string, metadata: string, live: boolean): Promise<void> {
    const args = [
      "metadata",
      "--domain",
      name,
      "--uri",
      METADATA_NAMESPACE,
      "--key",
      METADATA_PREFIX,
      "--set",
      asciiXml(buildMetadataElement(metadata)),
      "--config",
      ...(live ? ["--live"] : []),
    ];
    await this.change(args, `metadata ${name}`, name, { kind: "config", done: (spec) => spec?.metadata === metadata });
  }

  watchEvents(handlers: EventHandlers): EventWatch {
    return superviseEvents({
      runner: this.runner,
      argv: ["virsh", "-c", this.uri, "event", "--all", "--loop", "--timestamp"],
      ping: () => this.ping(),
      handlers,
      ...(this.eventBackoff ? { backoff: this.eventBackoff } : {}),
      ...(this.logger ? { logger: this.logger } : {}),
    });
  }
}

/**
 * Reads the output of getDomains' virsh script: per domain, a mark with its name, its
 * state, a section mark and its persistent XML. A domain whose state or XML is missing
 * (it was undefined meanwhile; virsh said so on stderr) is left out.
 */
export function parseDomainBatch(stdout: string, knownStates?: ReadonlyMap<string, DomainPowerState>): Map<string, DomainDetails> {
  const out = new Map<string, DomainDetails>();
  const parts = stdout.split(`${DOMAIN_MARK} `);
  for (const part of parts.slice(1)) {
    const nl = part.indexOf("\n");
    if (nl < 0) continue;
    const name = part.slice(0, nl).trim();
    const body = part.slice(nl + 1).split(DOMAIN_MARK)[0]!;
    const known = knownStates?.get(name);
    // Without a section mark: the domain's state was known, only its XML was asked for.
    const [stateText = "", xml = ""] = known !== undefined && !body.includes(SECTION_MARK) ? [known, body] : body.split(SECTION_MARK);
    const state = stateText.trim();
    if (state === "" || !xml.includes("<domain")) continue;
    out.set(name, { spec: parseDomainXml(xml), state: STATE_NAMES.has(state) ? (state as DomainPowerState) : "no state" });
  }
  return out;
}

/**
 * Reads the output of listDomains' virsh script. A domain undefined between the
 * sub-commands has no state and is left out; one defined meanwhile is not listed
 * yet. The next reconcile sees both.
 */
export function parseDomainList(stdout: string): DomainSummary[] {
  const sections = stdout.split(SECTION_MARK);
  if (sections.length !== 3) throw new Error(`unexpected virsh list output: ${stdout.slice(0, 200)}`);
  const [all = "", persistent = "", stats = ""] = sections;

  const persistentUuids = new Set(
    persistent
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l.length > 0),
  );

  const states = new Map<string, DomainPowerState>();
  let current: string | undefined;
  for (const line of stats.split("\n")) {
    const header = /^Domain: '(.*)'\s*$/.exec(line);
    if (header) {
      current = header[1];
      continue;
    }
    const state = /^\s+state\.state=(\d+)\s*$/.exec(line);
    if (state && current !== undefined) states.set(current, STATE_BY_NUMBER[state[1] ?? ""] ?? "no state");
  }

  const domains: DomainSummary[] = [];
  for (const raw of all.split("\n")) {
    const line = raw.trim();
    if (line === "") continue;
    const space = line.indexOf(" ");
    if (space < 0) continue;
    const uuid = line.slice(0, space);
    const name = line.slice(space + 1).trim();
    const state = states.get(name);
    if (state === undefined) continue;
    domains.push({ name, uuid, state, persistent: persistentUuids.has(uuid) });
  }
  return domains;
}
