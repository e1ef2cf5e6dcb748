import { open, rename, mkdir, rm } from "node:fs/promises";
import { dirname, join, basename } from "node:path";
import { randomBytes } from "node:crypto";

/** Writes a file so that a crash leaves either the old or the new content: temp file, fsync, rename, fsync dir. */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, "w", mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (error) {
    // A full filesystem (ENOSPC) must not leave the half-written temp file behind.
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw error;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDir(dir);
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
