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
 * Either way a marker file beside the instance says so while it lasts (written before
 * the guest is touched, removed after it is let go): a restart that finds the marker
 * resumes or thaws the guest (undoQuiesce), which a crash mid-copy would otherwise
 * leave paused or frozen for good.
 */
import { existsSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import type { Logger } from "pino";
import type { ImageTool } from "../../drivers/storage/types.js";
import { GuestAgentError, type Hypervisor } from "../../drivers/libvirt/types.js";
import { writeFileAtomic } from "../util/atomic-file.js";

export interface CopyOptions {
  imageTool: ImageTool;
  hypervisor: Hypervisor;
  logger: Logger;
  source: string;
  target: string;
  /** The running instance whose disk it is; absent when the disk is not in use. */
  runningInstance?: string;
  /** The running instance's quiesce marker file (DataPaths.quiesceMarker); see undoQuiesce. */
  quiesceMarker?: string;
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
    // Before the guest is paused or frozen: a crash from here on finds the marker.
    if (o.quiesceMarker) await writeFileAtomic(o.quiesceMarker, "quiesced\n", 0o600);
    try {
      await o.hypervisor.guestAgent(id, { execute: "guest-fsfreeze-freeze" }, 30);
      quiesce = "fsfreeze";
    } catch (error) {
      try {
        if (!(error instanceof GuestAgentError)) throw error;
        await o.hypervisor.suspend(id);
        quiesce = "paused";
      } catch (e) {
        if (o.quiesceMarker) await rm(o.quiesceMarker, { force: true });
        throw e;
      }
    }
  }
  try {
    o.checkpoint?.();
    await o.imageTool.convert({ source: o.source, sourceFormat: "qcow2", target: part, targetFormat: "qcow2", forceShare: true });
  } catch (error) {
    await rm(part, { force: true });
    throw error;
  } finally {
    if (id && quiesce === "fsfreeze") {
      await o.hypervisor.guestAgent(id, { execute: "guest-fsfreeze-thaw" }, 30).catch((e: unknown) => o.logger.error({ instanceId: id, err: e }, "could not thaw the guest's filesystems"));
    } else if (id && quiesce === "paused") {
      await o.hypervisor.resume(id).catch((e: unknown) => o.logger.error({ instanceId: id, err: e }, "could not resume the guest"));
    }
    if (o.quiesceMarker) await rm(o.quiesceMarker, { force: true });
  }
  await rename(part, o.target);
  return quiesce;
}

/**
 * Start-up recovery: an instance whose quiesce marker survived was paused or frozen by
 * a copy that a crash cut short. A paused domain is resumed (the agent pauses domains
 * only for copies; QEMU's own pauses on I/O errors carry no marker); a running one gets
 * guest-fsfreeze-thaw (harmless when nothing is frozen; a guest without an agent
 * just fails it). The marker goes once that was tried.
 */
export async function undoQuiesce(o: { hypervisor: Hypervisor; logger: Logger; instanceId: string; marker: string; power: string }): Promise<void> {
  // A stat, not a read: called for every domain at start-up, where a missing file is the rule
  // (a failed read makes an error with its stack each time).
  if (!existsSync(o.marker)) return;
  const log = o.logger.child({ instanceId: o.instanceId });
  if (o.power === "paused") {
    log.warn("a copy of this instance's disk was cut short by a restart: resuming the guest it had paused");
    await o.hypervisor.resume(o.instanceId).catch((e: unknown) => log.error({ err: e }, "could not resume the guest"));
  } else if (o.power === "running") {
    log.warn("a copy of this instance's disk was cut short by a restart: thawing the guest's filesystems");
    await o.hypervisor.guestAgent(o.instanceId, { execute: "guest-fsfreeze-thaw" }, 30).catch((e: unknown) => log.debug({ err: e }, "guest-fsfreeze-thaw failed (no guest agent, or nothing frozen)"));
  }
  await rm(o.marker, { force: true });
}
