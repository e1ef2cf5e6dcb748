/**
 * The one chokepoint for child processes. Everything the agent runs (virsh,
 * qemu-img, genisoimage, …) goes through a CommandRunner, always as an argv
 * array, never as a shell string. One implementation, LocalRunner (execa): the
 * agent runs on the host it manages (README, "Where the agent runs"). A secret is
 * never an argument (any local user reads /proc/PID/cmdline): payloads that carry
 * one go on standard input (`input`) or in 0600 files under the data directory.
 */
import { secrets } from "./sanitize.js";

export interface RunOptions {
  /** Kill the command after this many milliseconds. Default: the runner's default (60 s). */
  timeoutMs?: number;
  /** Bytes or text written to the command's standard input. */
  input?: string | Buffer;
  /** Cancels the command (it is killed) when aborted. */
  signal?: AbortSignal;
  /** Extra environment variables for the command. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /**
   * When true, a non-zero exit does not throw: the result carries the exit code.
   * Default false: a non-zero exit throws ExecError.
   */
  allowFailure?: boolean;
}

export interface RunResult {
  command: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface StreamOptions {
  /** Called once for every complete line the command prints on stdout. */
  onLine: (line: string) => void;
  /** Called for every line on stderr (optional). */
  onStderrLine?: (line: string) => void;
  /** Called once when the process has ended, for whatever reason. */
  onExit: (info: { exitCode: number | null; signal: string | null; error?: Error }) => void;
  env?: Record<string, string>;
  /** A lone "\r" also ends a line (progress meters); empty lines are then dropped. Default false. */
  splitOnCarriageReturn?: boolean;
  /** "pipe": the handle's write() feeds the command's stdin (a long-lived shell). Default: stdin is /dev/null. */
  stdin?: "pipe";
}

/** A long-lived child, e.g. `virsh event --all --loop`. */
export interface StreamHandle {
  readonly pid: number | undefined;
  /** Stops the child (SIGTERM, then SIGKILL after a grace period). */
  kill(): void;
  /** Writes to the child's stdin (only with `stdin: "pipe"`; false when the child is gone). */
  write?(text: string): boolean;
}

export interface CommandRunner {
  /** A short description for logs, e.g. "local". */
  readonly description: string;
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  stream(argv: readonly string[], options: StreamOptions): StreamHandle;
  /** Releases what the runner holds (a no-op locally). */
  close(): Promise<void>;
}

export type ExecFailure = "exit" | "timeout" | "aborted" | "spawn" | "signal";

/** A command that failed: carries everything needed to understand why. */
export class ExecError extends Error {
  override readonly name = "ExecError";
  readonly command: readonly string[];
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly failure: ExecFailure;

  constructor(options: {
    command: readonly string[];
    exitCode: number | null;
    signal?: string | null;
    stdout: string;
    stderr: string;
    failure: ExecFailure;
    cause?: unknown;
  }) {
    const what =
      options.failure === "timeout"
        ? "timed out"
        : options.failure === "aborted"
          ? "was aborted"
          : options.failure === "spawn"
            ? "could not be started"
            : options.failure === "signal"
              ? `was killed by ${options.signal ?? "a signal"}`
              : `exited with code ${options.exitCode}`;
    // Every registered secret is scrubbed before the error exists: its message, argv and
    // output end up in logs and in API error messages (sanitize.ts).
    const command = secrets.sanitizeAll(options.command);
    const stderr = secrets.sanitize(options.stderr);
    const detail = stderr.trim().split("\n").slice(-3).join(" | ");
    super(`command ${formatArgv(command)} ${what}${detail ? `: ${detail}` : ""}`, { cause: scrubCause(options.cause) });
    this.command = command;
    this.exitCode = options.exitCode;
    this.signal = options.signal ?? null;
    this.stdout = secrets.sanitize(options.stdout);
    this.stderr = stderr;
    this.failure = options.failure;
  }
}

/** Renders an argv for logs and messages (quoted where needed; never executed). */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

/**
 * An ExecError's cause, scrubbed: execa's messages repeat the whole command line, so a
 * string is sanitized and an Error is replaced by a plain one carrying its scrubbed message.
 */
function scrubCause(cause: unknown): unknown {
  if (cause === undefined || cause === null) return cause;
  if (typeof cause === "string") return secrets.sanitize(cause);
  if (cause instanceof Error) {
    const clean = new Error(secrets.sanitize(cause.message));
    clean.name = cause.name;
    if (cause.stack) clean.stack = secrets.sanitize(cause.stack);
    const code = (cause as { code?: unknown }).code;
    if (code !== undefined) Object.assign(clean, { code });
    return clean;
  }
  return secrets.sanitize(String(cause));
}
