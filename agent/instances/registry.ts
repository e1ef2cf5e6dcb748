/**
 * The live set of instances: each record with libvirt's last known power state and
 * the operation in progress, if any. State changes come from libvirt events (and the
 * reconcile that heals missed ones); waiters are woken on every change.
 */
import {
  deriveState,
  type InstanceRecord,
  type InstanceState,
  type PowerView,
  type TransitionState,
} from "../model.js";

export interface Transition {
  state: TransitionState;
  action: string;
  abort: AbortController;
}

/**
 * Why the instance is in its state when no operation put it there (QEMU died, the guest
 * crashed): shown in DescribeInstances as StateReason while it is STOPPED, cleared when
 * the domain runs again. Kept in memory only (an agent restart forgets it).
 */
export interface StateReason {
  code: "InstanceCrashed";
  message: string;
  /** ISO 8601, when libvirt saw it. */
  at: string;
}

export interface InstanceEntry {
  record: InstanceRecord;
  power: PowerView;
  stateReason?: StateReason;
  launchFailed: boolean;
  transition?: Transition;
  /** Incremented on every libvirt reboot event (a guest reset). */
  reboots: number;
  /** A migration under way (agent/migration): its figures as DescribeInstances shows them (MigrationProgress). */
  migration?: Record<string, unknown>;
}

type Waiter = () => void;

export class InstanceRegistry {
  private readonly entries = new Map<string, InstanceEntry>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** False while libvirt cannot be reached: every state is then UNKNOWN. */
  private connected = true;

  private readonly listeners = new Set<(reason: string) => void>();

  /** `onChange`: a first listener (more with subscribe). */
  constructor(onChange?: (reason: string) => void) {
    if (onChange) this.listeners.add(onChange);
  }

  /** Calls `listener` on every change of membership, state or record (the reporter's trigger); returns the unsubscribe. */
  subscribe(listener: (reason: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private onChange(reason: string): void {
    for (const listener of this.listeners) listener(reason);
  }

  /** Bumped whenever an entry is added, replaced or removed (for indexes built over the registry). */
  membership = 0;

  add(entry: InstanceEntry): void {
    this.entries.set(entry.record.instanceId, entry);
    this.membership += 1;
    this.onChange(`instance ${entry.record.instanceId} added`);
  }

  remove(instanceId: string): void {
    if (this.entries.delete(instanceId)) {
      this.membership += 1;
      this.onChange(`instance ${instanceId} removed`);
    }
    this.wake(instanceId);
  }

  get(instanceId: string): InstanceEntry | undefined {
    return this.entries.get(instanceId);
  }

  has(instanceId: string): boolean {
    return this.entries.has(instanceId);
  }

  all(): IterableIterator<InstanceEntry> {
    return this.entries.values();
  }

  get size(): number {
    return this.entries.size;
  }

  stateOf(entry: InstanceEntry): InstanceState {
    return deriveState({
      launchFailed: entry.launchFailed,
      transition: entry.transition?.state,
      power: this.connected ? entry.power : "unknown",
      rescue: entry.record.rescue !== undefined,
    });
  }

  isConnected(): boolean {
    return this.connected;
  }

  setConnected(connected: boolean): void {
    if (this.connected === connected) return;
    this.connected = connected;
    this.onChange(connected ? "libvirt reachable" : "libvirt unreachable");
    for (const id of this.entries.keys()) this.wake(id);
  }

  setPower(instanceId: string, power: PowerView): void {
    const entry = this.entries.get(instanceId);
    if (!entry || entry.power === power) return;
    const before = this.stateOf(entry);
    entry.power = power;
    if (power === "running") delete entry.stateReason;
    if (this.stateOf(entry) !== before) this.onChange(`instance ${instanceId} ${before} -> ${this.stateOf(entry)}`);
    this.wake(instanceId);
  }

  noteReboot(instanceId: string): void {
    const entry = this.entries.get(instanceId);
    if (!entry) return;
    entry.reboots += 1;
    this.wake(instanceId);
  }

  setTransition(instanceId: string, transition: Transition | undefined): void {
    const entry = this.entries.get(instanceId);
    if (!entry) return;
    const before = this.stateOf(entry);
    entry.transition = transition;
    if (this.stateOf(entry) !== before) this.onChange(`instance ${instanceId} ${before} -> ${this.stateOf(entry)}`);
    this.wake(instanceId);
  }

  /** Record changed in a way the controller should hear of (LatestOperation, …). */
  touched(instanceId: string, reason: string): void {
    this.onChange(`instance ${instanceId}: ${reason}`);
  }

  private wake(instanceId: string): void {
    const set = this.waiters.get(instanceId);
    if (!set) return;
    for (const w of [...set]) w();
  }

  /**
   * Resolves true as soon as `predicate(entry)` holds (checked now and on every change),
   * false when the timeout passes first. Rejects with the signal's reason when aborted.
   */
  waitFor(
    instanceId: string,
    predicate: (entry: InstanceEntry) => boolean,
    options: { timeoutMs: number; signal?: AbortSignal; poll?: () => Promise<void>; pollMs?: number },
  ): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      let done = false;
      let pollTimer: NodeJS.Timeout | undefined;
      const set = this.waiters.get(instanceId) ?? new Set<Waiter>();
      this.waiters.set(instanceId, set);
      const finish = (result: boolean | Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(pollTimer);
        set.delete(check);
        if (set.size === 0) this.waiters.delete(instanceId);
        options.signal?.removeEventListener("abort", onAbort);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      const check: Waiter = () => {
        const entry = this.entries.get(instanceId);
        if (!entry) return finish(new Error(`instance ${instanceId} is gone`));
        if (predicate(entry)) finish(true);
      };
      const onAbort = () => finish(abortReason(options.signal));
      const timer = setTimeout(() => finish(false), options.timeoutMs);
      // A slow poll heals a missed event; events remain the fast path.
      const schedulePoll = () => {
        if (!options.poll || done) return;
        pollTimer = setTimeout(() => {
          options.poll!().then(check, () => undefined).finally(schedulePoll);
        }, options.pollMs ?? 2000);
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      set.add(check);
      check();
      schedulePoll();
    });
  }
}

export function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new Error("operation aborted");
}
