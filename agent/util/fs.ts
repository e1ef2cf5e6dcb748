/** Small file-system helpers shared by the stores (durability of renames, existence checks). */
import { open, stat } from "node:fs/promises";

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** fsync of a directory: a rename into it survives a crash once this returns. */
export { syncDir } from "./atomic-file.js";

/** fsync of a file's data. */
export async function syncFile(file: string): Promise<void> {
  const fh = await open(file, "r+");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
