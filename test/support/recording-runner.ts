/**
 * A fake CommandRunner for unit tests: records every argv it is asked to run and
 * answers from a script. Anything unscripted fails closed (the call throws and
 * the test sees it), so a test states exactly which commands ran.
 */
import {
  ExecError,
  formatArgv,
  type CommandRunner,
  type ExecFailure,
  type RunOptions,
  type RunResult,
  type StreamHandle,
  type StreamOptions,
} from "../../drivers/exec/runner.js";

export interface Reply {
  stdout?: string;
  stderr?: string;
  /** Default 0. */
  exitCode?: number;
  /** Set to make the command fail without an exit code (timeout, spawn error, …). */
  failure?: Exclude<ExecFailure, "exit">;
}

export type Matcher = readonly string[] | ((argv: readonly string[]) => boolean);
export type Responder = Reply | ((argv: readonly string[], options: RunOptions | undefined) => Reply | Promise<Reply>);

interface Rule {
  matcher: Matcher;
  responder: Responder;
  /** How many more calls this rule answers (Infinity = any number). */
  remaining: number;
}

export interface RecordedRun {
  argv: string[];
  options: RunOptions | undefined;
}

/** A stream the fake runner handed out; the test drives it. */
export class FakeStream implements StreamHandle {
  readonly pid = 4242;
  killed = false;
  exited = false;
  constructor(
    readonly argv: string[],
    private readonly options: StreamOptions,
  ) {}
  /** The child prints a line on stdout. */
  emitLine(line: string): void {
    if (this.exited) throw new Error("emitLine on a stream that has exited");
    this.options.onLine(line);
  }
  emitStderr(line: string): void {
    this.options.onStderrLine?.(line);
  }
  /** The child ends. */
  exit(info: { exitCode: number | null; signal?: string | null; error?: Error } = { exitCode: 0 }): void {
    if (this.exited) return;
    this.exited = true;
    this.options.onExit({ exitCode: info.exitCode, signal: info.signal ?? null, ...(info.error ? { error: info.error } : {}) });
  }
  kill(): void {
    this.killed = true;
    this.exit({ exitCode: null, signal: "SIGTERM" });
  }
}

function matches(matcher: Matcher, argv: readonly string[]): boolean {
  if (typeof matcher === "function") return matcher(argv);
  return matcher.length === argv.length && matcher.every((a, i) => a === argv[i]);
}

export class RecordingRunner implements CommandRunner {
  readonly description = "recording";
  /** Every run(), in order. */
  readonly runs: RecordedRun[] = [];
  /** Every stream(), in order. */
  readonly streams: FakeStream[] = [];
  private readonly rules: Rule[] = [];
  private streamsAllowed = false;

  /** Scripts a reply for commands that match (exact argv, or a predicate). First matching rule wins. */
  on(matcher: Matcher, responder: Responder, options: { times?: number } = {}): this {
    this.rules.push({ matcher, responder, remaining: options.times ?? Number.POSITIVE_INFINITY });
    return this;
  }

  /** Scripts a reply for exactly one call. */
  once(matcher: Matcher, responder: Responder): this {
    return this.on(matcher, responder, { times: 1 });
  }

  /** Allows stream() calls; the test drives them through `streams`. */
  allowStreams(): this {
    this.streamsAllowed = true;
    return this;
  }

  /** The argv of every run(), in order. */
  get commands(): string[][] {
    return this.runs.map((r) => r.argv);
  }

  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    this.runs.push({ argv: [...argv], options });
    const rule = this.rules.find((r) => r.remaining > 0 && matches(r.matcher, argv));
    if (!rule) throw new Error(`RecordingRunner: unscripted command: ${formatArgv(argv)}`);
    rule.remaining -= 1;
    const reply = typeof rule.responder === "function" ? await rule.responder(argv, options) : rule.responder;
    const stdout = reply.stdout ?? "";
    const stderr = reply.stderr ?? "";
    if (reply.failure) {
      throw new ExecError({ command: argv, exitCode: null, stdout, stderr, failure: reply.failure });
    }
    const exitCode = reply.exitCode ?? 0;
    if (exitCode !== 0 && !options?.allowFailure) {
      throw new ExecError({ command: argv, exitCode, stdout, stderr, failure: "exit" });
    }
    return { command: [...argv], exitCode, stdout, stderr, durationMs: 1 };
  }

  stream(argv: readonly string[], options: StreamOptions): StreamHandle {
    if (!this.streamsAllowed) throw new Error(`RecordingRunner: unscripted stream: ${formatArgv(argv)}`);
    const handle = new FakeStream([...argv], options);
    this.streams.push(handle);
    return handle;
  }

  async close(): Promise<void> {}
}
