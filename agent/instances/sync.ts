/**
 * Keeping the registry true: libvirt's events, and the periodic full reconcile that heals
 * missed events (start-up recovery is recovery.ts). While libvirt cannot be reached every
 * state is UNKNOWN, never STOPPED.
 */
import type { Logger } from "pino";
import type { DomainEvent, DomainPowerState, EventWatch, Hypervisor } from "../../drivers/libvirt/types.js";
import type { QemuWatch } from "./qemu-watch.js";
import type { InstanceRegistry } from "./registry.js";

/** libvirt lifecycle event → the power state it leaves the domain in (undefined: no change). */
const LIFECYCLE_TO_POWER: Readonly<Record<string, DomainPowerState | undefined>> = Object.freeze({
  Started: "running",
  Resumed: "running",
  Suspended: "paused",
  Stopped: "shut off",
  Crashed: "crashed",
  PMSuspended: "pmsuspended",
  // "Shutdown" means the guest finished shutting down; "Stopped" follows when QEMU is gone.
  Shutdown: undefined,
  Defined: undefined,
});

export class InstanceSync {
  private watch: EventWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(
    private readonly o: {
      hypervisor: Pick<Hypervisor, "watchEvents" | "listDomains" | "ping">;
      registry: InstanceRegistry;
      logger: Logger;
      reconcileIntervalMs: number;
      /** Liveness probe of libvirtd (libvirt_probe_interval_s); 0 or absent = none. */
      probeIntervalMs?: number;
      /** How long the probe waits before it calls libvirtd unreachable (libvirt_probe_timeout_s). */
      probeTimeoutMs?: number;
      /** Sees a QEMU that vanished before libvirt says so (local libvirt only). */
      qemuWatch?: QemuWatch;
      /** A domain went off (Stopped, Crashed) with no agent operation under way (PowerIntents.offWithoutOperation). */
      onOffWithoutOperation?: (instanceId: string) => void;
      /** Sees every domain event first (the self-check's history, the event lag metric). */
      onEvent?: (event: DomainEvent) => void;
    },
  ) {}

  start(): void {
    this.watch = this.o.hypervisor.watchEvents({
      onEvent: (event) => this.handleEvent(event),
      onConnected: () => {
        this.o.registry.setConnected(true);
        void this.reconcile();
      },
      onDisconnected: (reason) => {
        this.o.logger.warn({ reason }, "lost libvirt's event stream; states are UNKNOWN until it is back");
        this.o.registry.setConnected(false);
      },
    });
    this.timer = setInterval(() => void this.reconcile(), this.o.reconcileIntervalMs);
    this.timer.unref();
    this.o.qemuWatch?.start();
    if (this.o.probeIntervalMs) {
      this.probeTimer = setInterval(() => void this.probe(), this.o.probeIntervalMs);
      this.probeTimer.unref();
    }
  }

  /**
   * A libvirtd that is frozen or hung keeps its sockets open: the event stream stays up
   * and says nothing, and every state would stay what it last was. The probe asks it
   * something small with a short deadline; unanswered, every state is UNKNOWN until an
   * answer comes, which brings a full reconcile.
   */
  private async probe(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      const { hypervisor, registry, logger } = this.o;
      const ok = await hypervisor.ping(this.o.probeTimeoutMs);
      if (!ok) {
        if (registry.isConnected()) logger.warn({ timeoutMs: this.o.probeTimeoutMs }, "libvirt did not answer the liveness probe; states are UNKNOWN until it does");
        registry.setConnected(false);
      } else if (!registry.isConnected()) {
        logger.info({}, "libvirt answers the liveness probe again; reconciling");
        await this.reconcile();
      }
    } finally {
      this.probing = false;
    }
  }

  stop(): void {
    this.watch?.stop();
    clearInterval(this.timer);
    clearInterval(this.probeTimer);
    this.o.qemuWatch?.stop();
  }

  handleEvent(event: DomainEvent): void {
    const { registry } = this.o;
    if (!registry.has(event.domain)) return;
    this.o.onEvent?.(event);
    if (event.kind === "reboot") {
      registry.noteReboot(event.domain);
      return;
    }
    if (event.kind !== "lifecycle") return;
    if (event.event === "Undefined") {
      const entry = registry.get(event.domain);
      if (entry && !entry.transition) registry.setPower(event.domain, "absent");
      return;
    }
    const power = LIFECYCLE_TO_POWER[event.event];
    // QEMU gone without being asked (killed, failed) or a guest crash: STOPPED, with why.
    const crash = (event.event === "Stopped" && event.detail === "Failed") || event.event === "Crashed";
    const entry = registry.get(event.domain);
    // A QEMU that ended for a reason libvirt gives is no crash (the watch may have guessed one).
    if (!crash && (event.event === "Shutdown" || event.event === "Stopped" || event.event === "Started")) {
      this.o.qemuWatch?.explained(event.domain);
      if (entry && event.event === "Stopped") delete entry.stateReason;
    }
    if (crash && entry) {
      const what = event.event === "Crashed" ? "the guest crashed" : "QEMU exited unexpectedly (killed or failed)";
      entry.stateReason = { code: "InstanceCrashed", message: `${what}; libvirt: ${event.event} ${event.detail}`.trim(), at: event.at.toISOString() };
      this.o.logger.warn({ instanceId: event.domain, event: `${event.event} ${event.detail}`, seenAt: event.at.toISOString() }, "instance crashed");
    }
    if (power) registry.setPower(event.domain, power);
    if ((event.event === "Stopped" || event.event === "Crashed") && entry && !entry.transition) this.o.onOffWithoutOperation?.(event.domain);
  }

  /** One full pass over libvirt's domains. Concurrent calls share one pass. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileOnce().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const { hypervisor, registry, logger } = this.o;
    let domains;
    try {
      domains = await hypervisor.listDomains();
    } catch (error) {
      logger.warn({ err: error }, "reconcile: libvirt did not answer");
      registry.setConnected(false);
      return;
    }
    registry.setConnected(true);
    const seen = new Map(domains.map((d) => [d.name, d.state] as const));
    for (const entry of [...registry.all()]) {
      const id = entry.record.instanceId;
      if (entry.launchFailed) continue;
      const state = seen.get(id);
      if (state) registry.setPower(id, state);
      else if (!entry.transition) registry.setPower(id, "absent");
    }
  }
}
