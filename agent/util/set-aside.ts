/**
 * Persisted files that fail their check where they are loaded are renamed aside
 * (`<name>.bad-<time>`), never deleted and never a failed start-up: the operator can
 * look at them, and the agent goes on without them.
 */
import { rename } from "node:fs/promises";

/** Renames a bad file aside; returns its new name. */
export async function setAside(file: string): Promise<string> {
  const aside = `${file}.bad-${new Date().toISOString().replace(/[:.]/g, "")}`;
  await rename(file, aside);
  return aside;
}
