/**
 * An exclusive lock held in a file: the integration files take one each for their whole
 * run (test/integration/one-file-at-a-time.ts), so two files that overlap fail loudly
 * instead of sharing the test libvirtd behind each other's backs.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";

export interface FileLock {
  /** Gives the lock back (only if this holder still has it). */
  release(): void;
}

/** Whether a process with this pid exists. */
export function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Takes the lock at `path` for `holder` (written into the file with this process's ID),
 * or throws naming the holder that has it. A lock left by a process that is gone is
 * taken over.
 */
export function takeFileLock(path: string, holder: string): FileLock {
  const stamp = `${process.pid} ${holder}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const current = readFileSync(path, "utf8");
      const pid = Number(current.split(" ", 1)[0]);
      if (alive(pid)) throw new Error(`${holder} started while ${current.slice(current.indexOf(" ") + 1)} (pid ${pid}) still runs: files must run one at a time`);
      rmSync(path, { force: true });
      continue;
    }
    writeSync(fd, stamp);
    closeSync(fd);
    return {
      release() {
        let current = "";
        try {
          current = readFileSync(path, "utf8");
        } catch {
          return;
        }
        if (current === stamp) rmSync(path, { force: true });
      },
    };
  }
  throw new Error(`could not take ${path}: it was taken again while a stale lock was cleared`);
}
