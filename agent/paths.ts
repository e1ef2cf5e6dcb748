/** Where things live under the data directory. One place, so nothing else builds paths. */
import { join } from "node:path";

export class DataPaths {
  constructor(readonly root: string) {}

  get instancesDir(): string {
    return join(this.root, "instances");
  }
  instanceDir(instanceId: string): string {
    return join(this.instancesDir, instanceId);
  }
  systemDisk(instanceId: string): string {
    return join(this.instanceDir(instanceId), "system.qcow2");
  }
  consoleLog(instanceId: string): string {
    return join(this.instanceDir(instanceId), "console.log");
  }
  /**
   * The VNC servers' sockets: one directory that only QEMU's user (and root) may enter, since
   * QEMU itself binds the socket there (agent/console/vnc-dir.ts makes it).
   */
  get vncDir(): string {
    return join(this.root, "vnc");
  }
  /** An instance's VNC socket (QEMU listens; the agent's VNC console connects). */
  vncSocket(instanceId: string): string {
    return join(this.vncDir, `${instanceId}.sock`);
  }
  /** The serial port's unix socket (QEMU listens; the agent's serial console connects). */
  serialSocket(instanceId: string): string {
    return join(this.instanceDir(instanceId), "serial.sock");
  }
  /** The config drive (ISO 9660, label config-2), rebuilt on every change the guest should see. */
  configDrive(instanceId: string): string {
    return join(this.instanceDir(instanceId), "config.iso");
  }
  /** A Windows guest's password (root only), for cloudbase-init. */
  windowsPassword(instanceId: string): string {
    return join(this.instanceDir(instanceId), "admin-password");
  }
  /** The password a guest posted to the metadata endpoint (cloudbase-init), once. */
  postedPassword(instanceId: string): string {
    return join(this.instanceDir(instanceId), "posted-password");
  }
  /** An ISO attached with InstanceAttachISO. */
  attachedIso(instanceId: string): string {
    return join(this.instanceDir(instanceId), "attached.iso");
  }
  /** Present while a disk copy has the running guest paused or frozen (agent/disks/copy.ts). */
  quiesceMarker(instanceId: string): string {
    return join(this.instanceDir(instanceId), "quiesced");
  }
  nvram(instanceId: string): string {
    return join(this.instanceDir(instanceId), "nvram.fd");
  }
  get imagesDir(): string {
    return join(this.root, "images");
  }
  imageFile(imageId: string): string {
    return join(this.imagesDir, `${imageId}.qcow2`);
  }
  imageRecord(imageId: string): string {
    return join(this.imagesDir, `${imageId}.json`);
  }
  /** Data disk records (the disk files live in the storage pools). */
  get disksDir(): string {
    return join(this.root, "disks");
  }
  /** Snapshot records (the snapshot files live in the pools' snapshots/ folders). */
  get snapshotsDir(): string {
    return join(this.root, "snapshots");
  }
  get journalDir(): string {
    return join(this.root, "journal");
  }
  /** Records of instances whose launch failed: they have no domain to live in. */
  get launchFailedDir(): string {
    return join(this.root, "launch-failed");
  }
  get tmpDir(): string {
    return join(this.root, "tmp");
  }
  /** virsh's own state (readline's empty history file) when a command goes on its stdin. */
  get virshStateDir(): string {
    return join(this.root, "virsh");
  }
  get credentialsFile(): string {
    return join(this.root, "api-credentials.json");
  }
}
