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
  get credentialsFile(): string {
    return join(this.root, "api-credentials.json");
  }
}
