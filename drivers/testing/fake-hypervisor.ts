/**
 * A stateful fake of the Hypervisor port for unit tests of the agent's logic (admission,
 * pre-emption, rollback, recovery). It keeps real state (domains, their specs, their
 * power states), emits libvirt's lifecycle events to its watchers as libvirt would, and
 * records every call. It fails closed: a call it has no model for (guest agent, disk
 * hot-plug, media, block resize, …) throws unless a test scripted it, and so does any
 * call a test scripted to fail.
 *
 * Guests: `guest(name).acpi` says what the guest does with an ACPI power-button or reboot
 * press ("obey": it shuts down or resets after `acpiDelayMs`; "ignore": nothing). A domain
 * whose spec boots a disk in `unbootable` fails to start (libvirt's start fails).
 */
import type {
  DomainNicSpec,
  DomainDetails,
  DomainEvent,
  DomainPowerState,
  DomainSpec,
  DomainSummary,
  EventHandlers,
  EventWatch,
  Hypervisor,
  LiveDomainSize,
} from "../libvirt/types.js";
import { DomainNotFoundError, DomainStateError, LibvirtError } from "../libvirt/types.js";

export interface FakeGuest {
  acpi: "obey" | "ignore";
  acpiDelayMs: number;
}

interface FakeDomain {
  spec: DomainSpec;
  state: DomainPowerState;
  guest: FakeGuest;
}

type Method = keyof Hypervisor;

export class UnscriptedCallError extends Error {
  override name = "UnscriptedCallError";
}

export class FakeHypervisor implements Hypervisor {
  /** Every call, in order: method and domain name (or "" for host-wide calls). */
  readonly calls: Array<{ method: Method; name: string }> = [];
  /** Paths of disks whose domain cannot boot (a broken image, say). */
  readonly unbootable = new Set<string>();
  private readonly domains = new Map<string, FakeDomain>();
  private readonly watchers = new Set<EventHandlers>();
  private readonly failures: Array<{ method: Method; name?: string; error: Error }> = [];
  private readonly scripted = new Map<Method, (name: string, ...args: unknown[]) => Promise<unknown>>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly defaults: FakeGuest = { acpi: "obey", acpiDelayMs: 5 }) {}

  // ------------------------------------------------------------------ scripting

  /** The next call of `method` (on `name`, when given) throws `error`. */
  failNext(method: Method, error: Error, name?: string): void {
    this.failures.push({ method, error, ...(name !== undefined ? { name } : {}) });
  }

  /** Gives a call with no model of its own a scripted answer (guestAgent, attachDisk, …). */
  script(method: Method, answer: (name: string, ...args: unknown[]) => Promise<unknown>): void {
    this.scripted.set(method, answer);
  }

  /** The guest behaviour of a defined domain. */
  guest(name: string): FakeGuest {
    return this.require(name).guest;
  }

  /** A domain as a test sets it up (as if libvirt had it before the agent started). */
  seed(spec: DomainSpec, state: DomainPowerState = "shut off"): void {
    this.domains.set(spec.name, { spec: structuredClone(spec), state, guest: { ...this.defaults } });
  }

  /** The domain's state and spec now (undefined: not defined). */
  peek(name: string): { state: DomainPowerState; spec: DomainSpec } | undefined {
    const d = this.domains.get(name);
    return d && { state: d.state, spec: structuredClone(d.spec) };
  }

  /** A power loss: every domain is off, and no event says so (nobody was there to hear it). */
  powerLoss(): void {
    for (const d of this.domains.values()) d.state = "shut off";
  }

  names(): string[] {
    return [...this.domains.keys()].sort();
  }

  /** Calls of one method (on one domain, when given). */
  count(method: Method, name?: string): number {
    return this.calls.filter((c) => c.method === method && (name === undefined || c.name === name)).length;
  }

  /** Cancels pending guest reactions (call in afterEach). */
  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  // ------------------------------------------------------------------ the port

  async ping(): Promise<boolean> {
    this.enter("ping", "");
    return true;
  }

  async capabilities(): Promise<{ kvmUsable: boolean }> {
    this.enter("capabilities", "");
    return { kvmUsable: false };
  }

  async defineDomain(spec: DomainSpec): Promise<void> {
    this.enter("defineDomain", spec.name);
    const existing = this.domains.get(spec.name);
    this.domains.set(spec.name, { spec: structuredClone(spec), state: existing?.state ?? "shut off", guest: existing?.guest ?? { ...this.defaults } });
    this.emit(spec.name, "Defined", existing ? "Updated" : "Added");
  }

  async getDomain(name: string): Promise<DomainDetails | null> {
    this.enter("getDomain", name);
    const d = this.domains.get(name);
    return d ? { spec: structuredClone(d.spec), state: d.state } : null;
  }

  async getDomains(names: readonly string[]): Promise<Map<string, DomainDetails>> {
    this.enter("getDomains", "");
    const out = new Map<string, DomainDetails>();
    for (const n of names) {
      const d = this.domains.get(n);
      if (d) out.set(n, { spec: structuredClone(d.spec), state: d.state });
    }
    return out;
  }

  async listDomains(): Promise<DomainSummary[]> {
    this.enter("listDomains", "");
    return [...this.domains.values()].map((d) => ({ name: d.spec.name, uuid: d.spec.uuid, state: d.state, persistent: true }));
  }

  async domainState(name: string): Promise<DomainPowerState | null> {
    this.enter("domainState", name);
    return this.domains.get(name)?.state ?? null;
  }

  async start(name: string): Promise<void> {
    this.enter("start", name);
    const d = this.require(name);
    if (d.state === "running") throw new DomainStateError(`domain ${name} is already active`);
    const broken = d.spec.disks.find((disk) => disk.path !== undefined && this.unbootable.has(disk.path));
    if (broken) throw new LibvirtError(`fake: domain ${name} cannot start from ${broken.path}`);
    this.setState(name, "running", "Started", "Booted");
  }

  async shutdown(name: string): Promise<void> {
    this.enter("shutdown", name);
    const d = this.require(name);
    if (d.state !== "running") throw new DomainStateError(`domain ${name} is not running`);
    if (d.guest.acpi === "obey") this.later(d.guest.acpiDelayMs, () => this.setState(name, "shut off", "Stopped", "Shutdown"));
  }

  async destroy(name: string): Promise<void> {
    this.enter("destroy", name);
    const d = this.require(name);
    if (d.state !== "shut off") this.setState(name, "shut off", "Stopped", "Destroyed");
  }

  async reboot(name: string): Promise<void> {
    this.enter("reboot", name);
    const d = this.require(name);
    if (d.state !== "running") throw new DomainStateError(`domain ${name} is not running`);
    if (d.guest.acpi === "obey") this.later(d.guest.acpiDelayMs, () => this.emitReboot(name));
  }

  async suspend(name: string): Promise<void> {
    this.enter("suspend", name);
    this.setState(name, "paused", "Suspended", "Paused");
  }

  async resume(name: string): Promise<void> {
    this.enter("resume", name);
    this.setState(name, "running", "Resumed", "Unpaused");
  }

  async reset(name: string): Promise<void> {
    this.enter("reset", name);
    if (this.require(name).state !== "running") throw new DomainStateError(`domain ${name} is not running`);
    this.emitReboot(name);
  }

  async undefine(name: string): Promise<void> {
    this.enter("undefine", name);
    const d = this.domains.get(name);
    if (!d) return;
    if (d.state !== "shut off") throw new DomainStateError(`fake: domain ${name} is still ${d.state}; destroy it first`);
    this.domains.delete(name);
    this.emit(name, "Undefined", "Removed");
  }

  async setMetadata(name: string, metadata: string): Promise<void> {
    this.enter("setMetadata", name);
    this.require(name).spec.metadata = metadata;
  }

  changeMedia(name: string, target: string, path: string): Promise<void> {
    return this.unmodelled("changeMedia", name, target, path) as Promise<void>;
  }

  ejectMedia(name: string, target: string): Promise<void> {
    return this.unmodelled("ejectMedia", name, target) as Promise<void>;
  }

  guestAgent(name: string, command: Record<string, unknown>, timeoutS?: number): Promise<unknown> {
    return this.unmodelled("guestAgent", name, command, timeoutS);
  }

  attachDisk(name: string, disk: unknown, live: boolean): Promise<void> {
    return this.unmodelled("attachDisk", name, disk, live) as Promise<void>;
  }

  detachDisk(name: string, target: string, live: boolean, timeoutMs?: number): Promise<void> {
    return this.unmodelled("detachDisk", name, target, live, timeoutMs) as Promise<void>;
  }

  blockResize(name: string, target: string, sizeBytes: number): Promise<void> {
    return this.unmodelled("blockResize", name, target, sizeBytes) as Promise<void>;
  }

  liveDiskTargets(name: string): Promise<string[] | null> {
    return this.unmodelled("liveDiskTargets", name) as Promise<string[] | null>;
  }

  attachNic(name: string, nic: unknown, live: boolean): Promise<void> {
    return this.unmodelled("attachNic", name, nic, live) as Promise<void>;
  }

  detachNic(name: string, mac: string, live: boolean, timeoutMs?: number): Promise<void> {
    return this.unmodelled("detachNic", name, mac, live, timeoutMs) as Promise<void>;
  }

  liveNics(name: string): Promise<DomainNicSpec[] | null> {
    return this.unmodelled("liveNics", name) as Promise<DomainNicSpec[] | null>;
  }

  setVcpusLive(name: string, count: number): Promise<void> {
    return this.unmodelled("setVcpusLive", name, count) as Promise<void>;
  }

  attachMemoryLive(name: string, sizeMiB: number): Promise<void> {
    return this.unmodelled("attachMemoryLive", name, sizeMiB) as Promise<void>;
  }

  liveSize(name: string): Promise<LiveDomainSize | null> {
    return this.unmodelled("liveSize", name) as Promise<LiveDomainSize | null>;
  }

  watchEvents(handlers: EventHandlers): EventWatch {
    this.enter("watchEvents", "");
    this.watchers.add(handlers);
    queueMicrotask(() => handlers.onConnected());
    return { stop: () => this.watchers.delete(handlers) };
  }

  // ------------------------------------------------------------------ inside

  /** Records the call and throws a failure scripted for it. */
  private enter(method: Method, name: string): void {
    this.calls.push({ method, name });
    const i = this.failures.findIndex((f) => f.method === method && (f.name === undefined || f.name === name));
    if (i >= 0) {
      const [failure] = this.failures.splice(i, 1);
      throw failure!.error;
    }
  }

  private async unmodelled(method: Method, name: string, ...args: unknown[]): Promise<unknown> {
    this.enter(method, name);
    const answer = this.scripted.get(method);
    if (!answer) throw new UnscriptedCallError(`FakeHypervisor: unscripted call ${method}(${name}); script it or model it`);
    return answer(name, ...args);
  }

  private require(name: string): FakeDomain {
    const d = this.domains.get(name);
    if (!d) throw new DomainNotFoundError(name);
    return d;
  }

  private setState(name: string, state: DomainPowerState, event: string, detail: string): void {
    const d = this.domains.get(name);
    if (!d) return;
    d.state = state;
    this.emit(name, event, detail);
  }

  private emit(name: string, event: string, detail: string): void {
    const e: DomainEvent = { domain: name, kind: "lifecycle", event, detail, at: new Date() };
    for (const w of this.watchers) w.onEvent(e);
  }

  private emitReboot(name: string): void {
    const e: DomainEvent = { domain: name, kind: "reboot", event: "", detail: "", at: new Date() };
    for (const w of this.watchers) w.onEvent(e);
  }

  private later(ms: number, work: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      work();
    }, ms);
    this.timers.add(t);
  }
}
