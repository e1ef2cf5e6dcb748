import { createHash } from "node:crypto";
import { checkArgv } from "./local.js";

/*
 * How an argv becomes the one command line that sshd hands to the remote user's shell
 * (`$SHELL -c LINE`, a POSIX shell is assumed), and the small protocol pieces around it.
 */

/** POSIX single-quote escaping: the remote shell passes `value` through unchanged. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The one command line sent to the remote shell. The program replaces the shell (`exec`),
 * so signals reach it; env and cwd become `env K=V` and `cd DIR &&`.
 */
export function toRemoteCommand(
  argv: readonly string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): string {
  checkArgv(argv);
  const parts: string[] = [];
  if (options.cwd) parts.push(`cd ${shellQuote(options.cwd)} &&`);
  parts.push("exec");
  const env = Object.entries(options.env ?? {});
  if (env.length > 0) {
    parts.push("env");
    for (const [key, value] of env) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new TypeError(`invalid environment variable name: ${key}`);
      parts.push(shellQuote(`${key}=${value}`));
    }
  }
  parts.push(...argv.map(shellQuote));
  return parts.join(" ");
}

/** "SHA256:abc=" and "abc" are the same fingerprint. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.trim().replace(/^SHA256:/, "").replace(/=+$/, "");
}

/** The fingerprint of a raw host key blob, as `ssh-keygen -lf` prints it (without "SHA256:"). */
export function hostKeyFingerprintOf(key: Buffer): string {
  return normalizeFingerprint(createHash("sha256").update(key).digest("base64"));
}

/** Prints the remote shell's PID (kept by `exec`) as the first stderr line. */
export const PID_HEADER_COMMAND = 'echo "@cdh-agent-pid:$$" >&2; ';

/** Takes the PID header line off the front of stderr; passes everything else through. */
export class PidHeader {
  pid: number | null = null;
  private head = "";
  private done = false;

  take(chunk: Buffer): Buffer {
    if (this.done) return chunk;
    this.head += chunk.toString("latin1"); // byte-preserving
    const newline = this.head.indexOf("\n");
    if (newline === -1) return Buffer.alloc(0);
    this.done = true;
    const match = /^@cdh-agent-pid:(\d+)$/.exec(this.head.slice(0, newline));
    if (match) this.pid = Number(match[1]);
    return Buffer.from(match ? this.head.slice(newline + 1) : this.head, "latin1");
  }

  flush(): Buffer {
    if (this.done) return Buffer.alloc(0);
    this.done = true;
    return Buffer.from(this.head, "latin1");
  }
}
