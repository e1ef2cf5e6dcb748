/** This machine's ID (systemd's /etc/machine-id, or D-Bus's copy), from which host_id is derived. */
import { readFileSync } from "node:fs";

export const MACHINE_ID_FILES = ["/etc/machine-id", "/var/lib/dbus/machine-id"] as const;

/** The first non-empty machine ID among `files`; undefined when there is none (never a made-up one). */
export function readMachineId(files: readonly string[] = MACHINE_ID_FILES): string | undefined {
  for (const path of files) {
    try {
      const id = readFileSync(path, "utf8").trim();
      if (id) return id;
    } catch {
      // missing or unreadable: try the next one
    }
  }
  return undefined;
}
