/**
 * A consistent copy of a disk file, for snapshots and images. The copy is a standalone
 * qcow2 (its backing chain flattened in), written to `<target>.part` and renamed into
 * place only when complete, so a crash never leaves a half copy under the real name.
 *
 * A disk of a running guest is copied while the guest cannot change it:
 * - when its qemu-guest-agent answers, the filesystems are frozen (guest-fsfreeze-freeze:
 *   the guest flushes them, so the copy is application-consistent) and thawed after;
 * - otherwise the guest is paused (virsh suspend) for the copy and resumed after, which
 *   gives what a power cut would leave (crash-consistent).
 */
import { rename, rm } from "node:fs/promises";
import type { Logger } from "pino";
import type { CommandRunner } from "../../drivers/exec/runner.js";
import { GuestAgentError, type Hypervisor } from "../../drivers/libvirt/types.js";

export interface CopyOptions {
  runner: CommandRunner;
  hypervisor: Hypervisor;
  logger: Logger;
  source: string;
  target: string;
  /** The running instance whose disk it is; absent when the disk is not in use. */
  runningInstance?: string;
  /** Called once the copy has begun (fail points of the crash tests). */
  checkpoint?: () => void;
}

/** How the copy was made consistent. */
export type Quiesce = "none" | "fsfreeze" | "paused";

export async function consistentCopy(o: CopyOptions): Promise<Quiesce> {
  const part = `${o.target}.part`;
  await rm(part, { force: true });
  let quiesce: Quiesce = "none";
  const id = o.runningInstance;
  if (id) {
    try {
      await o.hypervisor.guestAgent(id, { execute: "guest-fsfreeze-freeze" }, 30);
      quiesce = "fsfreeze";
    } catch (error) {
      if (!(error instanceof GuestAgentError)) throw error;
      await o.hypervisor.suspend(id);
      quiesce = "paused";
    }
  }
  try {
    o.checkpoint?.();
    await o.runner.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", o.source, part], { timeoutMs: 6 * 60 * 60 * 1000 });
  } catch (error) {
    await rm(part, { force: true });
    throw error;
  } finally {
    if (id && quiesce === "fsfreeze") {
      await o.hypervisor.guestAgent(id, { execute: "guest-fsfreeze-thaw" }, 30).catch((e: unknown) => o.logger.error({ instanceId: id, err: e }, "could not thaw the guest's filesystems"));
    } else if (id && quiesce === "paused") {
      await o.hypervisor.resume(id).catch((e: unknown) => o.logger.error({ instanceId: id, err: e }, "could not resume the guest"));
    }
  }
  await rename(part, o.target);
  return quiesce;
}
