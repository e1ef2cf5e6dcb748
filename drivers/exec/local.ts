import { execa, type Options as ExecaOptions, type Result as ExecaResult } from "execa";
import { LineSplitter, safeLineCallback } from "./lines.js";
import {
  ExecError,
  formatArgv,
  type CommandRunner,
  type ExecFailure,
  type RunOptions,
  type RunResult,
  type StreamHandle,
  type StreamOptions,
} from "./runner.js";

/** The part of a pino logger the runners use. */
export interface RunnerLogger {
  debug(obj: object, msg: string): void;
}

export interface LocalRunnerOptions {
  /** Timeout of a run() without its own timeoutMs, in milliseconds. Default 60 000. 0 = none. */
  defaultTimeoutMs?: number;
  logger?: RunnerLogger;
}

/** Grace period between SIGTERM and SIGKILL, in milliseconds. */
export const KILL_GRACE_MS = 2_000;

/**
 * Runs commands on this host with execa: argv[0] is the program, never a shell.
 * stdout and stderr are returned verbatim (the final newline is kept).
 * Without `input`, the command's stdin is /dev/null.
 */
export class LocalRunner implements CommandRunner {
  readonly description = "local";
  private readonly defaultTimeoutMs: number;
  private readonly logger: RunnerLogger | undefined;

  constructor(options: LocalRunnerOptions = {}) {
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 60_000;
    this.logger = options.logger;
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = checkArgv(argv);
    const command = [...argv];
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const execaOptions: ExecaOptions = {
      reject: false,
      shell: false,
      stripFinalNewline: false,
      extendEnv: false,
      env: childEnv(options.env),
      forceKillAfterDelay: KILL_GRACE_MS,
      maxBuffer: 256 * 1024 * 1024,
      ...(timeoutMs > 0 && Number.isFinite(timeoutMs) ? { timeout: timeoutMs } : {}),
      ...(options.signal ? { cancelSignal: options.signal } : {}),
      ...(options.input !== undefined ? { input: options.input } : { stdin: "ignore" as const }),
      ...(options.cwd ? { cwd: options.cwd } : {}),
    };
    const started = performance.now();
    const result = (await execa(file, args, execaOptions)) as ExecaResult;
    const durationMs = Math.round(performance.now() - started);
    const stdout = asText(result.stdout);
    const stderr = asText(result.stderr);
    const exitCode = result.exitCode ?? null;
    const signal = result.signal ?? null;
    const failure = classify(result, options.allowFailure ?? false);
    this.logger?.debug(
      { runner: "local", command: formatArgv(command), exitCode, signal, durationMs, ...(failure ? { failure } : {}) },
      failure ? "command failed" : "command finished",
    );
    if (failure) {
      throw new ExecError({
        command,
        exitCode,
        signal,
        stdout,
        stderr,
        failure,
        cause: result.cause ?? (result.failed ? result.shortMessage : undefined),
      });
    }
    return { command, exitCode: exitCode ?? 0, stdout, stderr, durationMs };
  }

  stream(argv: readonly string[], options: StreamOptions): StreamHandle {
    const [file, ...args] = checkArgv(argv);
    const command = [...argv];
    const reportCallbackError = (error: unknown) =>
      this.logger?.debug({ runner: "local", command: formatArgv(command), err: error }, "stream callback threw");
    const out = new LineSplitter(safeLineCallback(options.onLine, reportCallbackError), { splitOnCarriageReturn: options.splitOnCarriageReturn ?? false });
    const err = new LineSplitter(safeLineCallback(options.onStderrLine, reportCallbackError), { splitOnCarriageReturn: options.splitOnCarriageReturn ?? false });
    const started = performance.now();
    const child = execa(file, args, {
      reject: false,
      shell: false,
      buffer: false,
      stdin: options.stdin === "pipe" ? "pipe" : "ignore",
      extendEnv: false,
      env: childEnv(options.env),
      forceKillAfterDelay: false,
    });
    // A child that exits early must not turn a late write into an unhandled EPIPE.
    child.stdin?.on("error", () => undefined);
    child.stdout?.on("data", (chunk: Buffer | string) => out.push(chunk));
    child.stderr?.on("data", (chunk: Buffer | string) => err.push(chunk));

    let exited = false;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (info: { exitCode: number | null; signal: string | null; error?: Error }) => {
      if (exited) return;
      exited = true;
      if (killTimer) clearTimeout(killTimer);
      out.flush();
      err.flush();
      this.logger?.debug({ runner: "local", command: formatArgv(command), ...info, durationMs: Math.round(performance.now() - started) }, "stream ended");
      try {
        options.onExit(info);
      } catch (error) {
        reportCallbackError(error);
      }
    };
    child.then(
      (result) => {
        const exitCode = result.exitCode ?? null;
        const signal = result.signal ?? null;
        if (exitCode === null && signal === null) {
          const error = new ExecError({ command, exitCode, stdout: "", stderr: "", failure: "spawn", cause: result.cause });
          finish({ exitCode, signal, error });
        } else {
          finish({ exitCode, signal });
        }
      },
      (error: unknown) => finish({ exitCode: null, signal: null, error: toError(error) }),
    );

    return {
      pid: child.pid,
      write: (text: string) => {
        if (exited || !child.stdin || child.stdin.destroyed) return false;
        child.stdin.write(text);
        return true;
      },
      kill: () => {
        if (exited || killTimer) return;
        child.kill("SIGTERM");
        killTimer = setTimeout(() => {
          if (!exited) child.kill("SIGKILL");
        }, KILL_GRACE_MS);
      },
    };
  }

  async close(): Promise<void> {}
}

/** Which kind of failure a finished execa result is, or null when it is a success. */
function classify(result: ExecaResult, allowFailure: boolean): ExecFailure | null {
  if (result.timedOut) return "timeout";
  if (result.isCanceled) return "aborted";
  if (result.exitCode === undefined && result.signal === undefined) return result.failed ? "spawn" : null;
  if (result.signal !== undefined) return "signal";
  if (result.exitCode !== 0) return allowFailure ? null : "exit";
  return null;
}

/**
 * A child's environment: the agent's own, without its CDH_AGENT_* settings (one of them may be
 * the API SecretKey; no tool needs them), plus `extra`.
 */
export function childEnv(extra: Record<string, string> | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("CDH_AGENT_")) env[k] = v;
  }
  return { ...env, ...extra };
}

export function checkArgv(argv: readonly string[]): [string, ...string[]] {
  const [file, ...args] = argv;
  if (file === undefined || file === "") throw new TypeError("argv must start with a program name");
  return [file, ...args];
}

function asText(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return Buffer.from(value).toString("utf8");
  return "";
}

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
