/**
 * The seed's clean-up before a custom image is made (CVM manual: /var/log/ and the shell
 * histories are cleared), done inside a running Linux guest through qemu-guest-agent
 * (guest-exec), so nothing but the guest's own tools touch its filesystems. Log files are
 * truncated, not deleted, so that running services keep writing to valid files.
 */
import { GuestAgentError, type Hypervisor } from "../../drivers/libvirt/types.js";

export const CLEANUP_SCRIPT = [
  "find /var/log -type f \\( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \\) -delete",
  "find /var/log -type f -exec truncate -s 0 {} +",
  "rm -f /root/.bash_history /root/.ash_history /home/*/.bash_history /home/*/.ash_history",
  "sync",
].join("; ");

export type CleanupOutcome = { done: true } | { done: false; reason: string };

/** Runs the clean-up in the guest and waits (up to timeoutMs) for it to end. */
export async function cleanGuestForImage(hypervisor: Hypervisor, instanceId: string, timeoutMs = 60_000): Promise<CleanupOutcome> {
  let pid: number;
  try {
    const started = (await hypervisor.guestAgent(instanceId, {
      execute: "guest-exec",
      arguments: { path: "/bin/sh", arg: ["-c", CLEANUP_SCRIPT], "capture-output": true },
    })) as { pid?: number };
    if (typeof started?.pid !== "number") return { done: false, reason: "guest-exec gave no pid" };
    pid = started.pid;
  } catch (error) {
    if (error instanceof GuestAgentError) return { done: false, reason: `the guest agent did not answer: ${error.message}` };
    throw error;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = (await hypervisor.guestAgent(instanceId, { execute: "guest-exec-status", arguments: { pid } })) as { exited?: boolean; exitcode?: number };
    if (status?.exited) return status.exitcode === 0 ? { done: true } : { done: false, reason: `the clean-up exited with ${status.exitcode}` };
    await new Promise((r) => setTimeout(r, 250));
  }
  return { done: false, reason: `the clean-up did not end within ${timeoutMs / 1000} s` };
}
