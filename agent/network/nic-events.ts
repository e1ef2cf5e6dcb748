/**
 * One place where everything that follows an instance's NICs learns that they changed:
 * an ENI attached or detached, an address assigned, unassigned or moved, a primary address
 * changed, an instance launched or terminated. The operation that changed them saves the
 * record first, then emits; listeners (DHCP leases, bandwidth caps, …) re-read what they
 * need from the registry. The firewall and the guest's drive are driven by the operation
 * itself (securityGroups.syncNow(), the drive swap), since it must wait for them.
 */
export type NicsChangedListener = (instanceId: string) => Promise<void> | void;

export class NicEvents {
  private readonly listeners: NicsChangedListener[] = [];

  constructor(private readonly onError: (error: unknown, instanceId: string) => void) {}

  on(listener: NicsChangedListener): void {
    this.listeners.push(listener);
  }

  /** Runs every listener in order; one that fails is logged and does not stop the others. */
  async emit(instanceId: string): Promise<void> {
    for (const listener of this.listeners) {
      try {
        await listener(instanceId);
      } catch (error) {
        this.onError(error, instanceId);
      }
    }
  }
}
