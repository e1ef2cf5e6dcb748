/**
 * The one chokepoint for child processes. Everything the agent runs (virsh,
 * qemu-img, genisoimage, …) goes through a CommandRunner, always as an argv
 * array, never as a shell string. Two implementations: LocalRunner (execa, this
 * host) and SshRunner (ssh2, a remote host).
 */

export interface RunOptions {
  /** Kill the command after this many milliseconds. Default: the runner's default (60 s). */
  timeoutMs?: number;
  /** Bytes or text written to the command's standard input. */
  input?: string | Buffer;
  /** Cancels the command (it is killed) when aborted. */
  signal?: AbortSignal;
  /** Extra environment variables for the command (local runner only). */
  env?: Record<string, string>;
  /** Working directory (local runner only). */
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
}

/** A long-lived child, e.g. `virsh event --all --loop`. */
export interface StreamHandle {
  readonly pid: number | undefined;
  /** Stops the child (SIGTERM, then SIGKILL after a grace period). */
  kill(): void;
}

export interface CommandRunner {
  /** A short description for logs, e.g. "local" or "ssh root@10.0.0.2:22". */
  readonly description: string;
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  stream(argv: readonly string[], options: StreamOptions): StreamHandle;
  /** Releases connections (ssh); a no-op locally. */
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
    const detail = options.stderr.trim().split("\n").slice(-3).join(" | ");
    super(`command ${formatArgv(options.command)} ${what}${detail ? `: ${detail}` : ""}`, { cause: options.cause });
    this.command = options.command;
    this.exitCode = options.exitCode;
    this.signal = options.signal ?? null;
    this.stdout = options.stdout;
    this.stderr = options.stderr;
    this.failure = options.failure;
  }
}

/** Renders an argv for logs and messages (quoted where needed; never executed). */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}
