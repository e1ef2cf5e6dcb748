/**
 * EnterRescueMode and ExitRescueMode: the instance boots the host's rescue system (kernel
 * and initrd) with its own disks attached, and later its own boot again.
 */
import type { Hypervisor } from "../../drivers/libvirt/types.js";
import { DomainError } from "../core/errors.js";
import { isoSeconds, type InstanceRecord } from "../model.js";
import { checkPassword, sha512Crypt } from "../logins/password.js";
import type { Operations, RequestContext } from "../core/operations.js";
import type { PowerControl, StopType } from "./power.js";
import type { DomainSpecs } from "./provision.js";
import type { InstanceRegistry } from "./registry.js";

export class RescueOperations {
  constructor(
    private readonly o: {
      ops: Operations;
      registry: InstanceRegistry;
      hypervisor: Pick<Hypervisor, "defineDomain">;
      specs: DomainSpecs;
      power: PowerControl;
    },
  ) {}

  /**
   * EnterRescueMode: the instance is stopped (soft, soft then hard, or hard, as StopType
   * says) and booted from the rescue system with its own disks attached and root's
   * password set to the rescue password. Until ExitRescueMode nothing else is allowed.
   */
  enterRescue(req: { instanceId: string; password: string; stopType: StopType }, ctx: RequestContext): void {
    const [entry] = this.o.ops.validate([req.instanceId], "EnterRescueMode");
    const id = req.instanceId;
    if (!this.o.specs.hasRescue) throw new DomainError("Unsupported", "this host has no rescue system configured (rescue_kernel, rescue_initrd)");
    checkPassword(req.password, "linux", { field: "Password" });
    const hash = sha512Crypt(req.password);
    const t = this.o.ops.begin(entry!, "EnterRescueMode", "ENTER_RESCUE_MODE", ctx);
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(entry!, t, "EnterRescueMode", ctx, async () => {
        await this.o.power.stopFor(id, req.stopType, t.abort.signal, "EnterRescueMode");
        const record: InstanceRecord = { ...entry!.record, rescue: { passwordHash: hash, since: isoSeconds(new Date()) } };
        await this.o.hypervisor.defineDomain(this.o.specs.of(record));
        entry!.record = record;
        await this.o.power.powerOn(id);
      }),
    );
  }

  /** ExitRescueMode: the rescue system goes, the original boot returns, the instance starts. */
  exitRescue(req: { instanceId: string }, ctx: RequestContext): void {
    const entry = this.o.registry.get(req.instanceId);
    if (entry && !entry.record.rescue && !entry.transition) {
      throw new DomainError("NotInRescue", `instance ${req.instanceId} is not in rescue mode`);
    }
    const [e] = this.o.ops.validate([req.instanceId], "ExitRescueMode");
    const id = req.instanceId;
    const t = this.o.ops.begin(e!, "ExitRescueMode", "EXIT_RESCUE_MODE", ctx);
    this.o.ops.background(id, t, () =>
      this.o.ops.settle(e!, t, "ExitRescueMode", ctx, async () => {
        if (this.o.power.isOn(id)) await this.o.power.hardStop(id);
        const { rescue: _rescue, ...record } = e!.record;
        await this.o.hypervisor.defineDomain(this.o.specs.of(record));
        e!.record = record;
        await this.o.power.powerOn(id);
      }),
    );
  }
}
