/**
 * The directory of the VNC sockets (DataPaths.vncDir). QEMU binds each domain's socket itself,
 * so the directory belongs to QEMU's user (libvirt's DAC label, VirshHypervisor.qemuProcessIds)
 * with mode 0700: QEMU can make sockets there, root (the agent) can connect, nobody else can
 * even see them. Made at start, before any domain is started.
 */
import { chmod, chown, mkdir } from "node:fs/promises";

export async function prepareVncDir(dir: string, qemu: { uid: number; gid: number } | undefined): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (qemu) await chown(dir, qemu.uid, qemu.gid);
  await chmod(dir, 0o700);
}
