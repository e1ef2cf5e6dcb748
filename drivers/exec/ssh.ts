import { Client, type ClientChannel } from "ssh2";
import { LineSplitter, safeLineCallback } from "./lines.js";
import type { RunnerLogger } from "./local.js";
import { hostKeyFingerprintOf, normalizeFingerprint, PID_HEADER_COMMAND, toRemoteCommand } from "./remote-command.js";
import { watchChannel, type WatchedChannel, type ChannelEnd } from "./ssh-channel.js";
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

export { hostKeyFingerprintOf, normalizeFingerprint, shellQuote, toRemoteCommand } from "./remote-command.js";

export interface SshRunnerOptions {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  privateKey: Buffer | string;
  /**
   * The host key's SHA256 fingerprint, base64 as `ssh-keygen -lf` prints it after "SHA256:"
   * (the "SHA256:" prefix is accepted too). When given, any other host key is refused.
   */
  hostKeyFingerprint?: string;
  /** Timeout of a run() without its own timeoutMs, in milliseconds. Default 60 000. 0 = none. */
  defaultTimeoutMs?: number;
  /** How long the ssh handshake may take, in milliseconds. Default 20 000. */
  readyTimeoutMs?: number;
  /** Commands running at once over the one connection (sshd's MaxSessions is 10). Default 8. */
  maxChannels?: number;
  logger?: RunnerLogger;
}

/**
 * Runs commands on a remote host over one ssh connection (ssh2), opened on first use,
 * reused, and opened again after it drops. Remote exit code 127 (the shell's "not found")
 * counts as failure "spawn". Each command first prints its PID on stderr (taken off again),
 * so that a timeout, an abort or kill() can signal its process group over a second channel:
 * sshd ignores ssh "signal" requests for root logins, and closing a channel does not stop
 * a command that has no terminal.
 */
export class SshRunner implements CommandRunner {
  readonly description: string;
  private readonly options: SshRunnerOptions;
  private readonly defaultTimeoutMs: number;
  private connection: Promise<Client> | null = null;
  private openChannels = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(options: SshRunnerOptions) {
    this.options = options;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 60_000;
    this.description = `ssh ${options.username}@${options.host}:${options.port ?? 22}`;
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const command = [...argv];
    const remote = PID_HEADER_COMMAND + toRemoteCommand(argv, options);
    const started = performance.now();
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let stopped: ExecFailure | null = null;
    let watched: WatchedChannel | null = null;
    let failStart: ((reason: ExecFailure) => void) | null = null;
    const stop = (reason: ExecFailure) => {
      if (stopped) return;
      stopped = reason;
      if (watched) watched.terminate();
      else failStart?.(reason);
    };
    const timer = timeoutMs > 0 && Number.isFinite(timeoutMs) ? setTimeout(() => stop("timeout"), timeoutMs) : undefined;
    const onAbort = () => stop("aborted");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const fail = (failure: ExecFailure, extra: { exitCode?: number | null; signal?: string | null; cause?: unknown }) =>
      new ExecError({
        command,
        exitCode: extra.exitCode ?? null,
        signal: extra.signal ?? null,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        failure,
        cause: extra.cause,
      });
    let acquired = false;
    let settled = false;
    try {
      if (options.signal?.aborted) throw fail("aborted", { cause: options.signal.reason });
      const channel = await new Promise<ClientChannel>((resolve, reject) => {
        failStart = (reason) => reject(fail(reason, {}));
        (async () => {
          await this.acquireChannel();
          if (settled) return this.releaseChannel();
          acquired = true;
          if (stopped) throw fail(stopped, {});
          const ch = await this.exec(await this.connect(), remote);
          if (settled) ch.close(); // the run already ended (timeout or abort while opening)
          else resolve(ch);
        })().catch((error: unknown) => reject(error instanceof ExecError ? error : fail("spawn", { cause: error })));
      });
      const ended = await new Promise<ChannelEnd>((resolve) => {
        watched = watchChannel(channel, { stdout: (c) => stdout.push(c), stderr: (c) => stderr.push(c), end: resolve }, this.killer);
        if (stopped) watched.terminate();
        if (options.input !== undefined) channel.end(options.input);
        else channel.end();
      });
      const durationMs = Math.round(performance.now() - started);
      const failure: ExecFailure | null = stopped
        ? stopped
        : ended.exitCode === null
          ? "signal"
          : ended.exitCode === 127
            ? "spawn"
            : ended.exitCode !== 0 && !options.allowFailure
              ? "exit"
              : null;
      this.options.logger?.debug(
        { runner: this.description, command: formatArgv(command), ...ended, durationMs, ...(failure ? { failure } : {}) },
        failure ? "command failed" : "command finished",
      );
      if (failure) throw fail(failure, ended);
      const [out, err] = [stdout, stderr].map((chunks) => Buffer.concat(chunks).toString("utf8")) as [string, string];
      return { command, exitCode: ended.exitCode ?? 0, stdout: out, stderr: err, durationMs };
    } finally {
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (acquired) this.releaseChannel();
    }
  }

  stream(argv: readonly string[], options: StreamOptions): StreamHandle {
    const command = [...argv];
    const remote = PID_HEADER_COMMAND + toRemoteCommand(argv, options.env ? { env: options.env } : {});
    const reportCallbackError = (error: unknown) =>
      this.options.logger?.debug({ runner: this.description, command: formatArgv(command), err: error }, "stream callback threw");
    const out = new LineSplitter(safeLineCallback(options.onLine, reportCallbackError), { splitOnCarriageReturn: options.splitOnCarriageReturn ?? false });
    const err = new LineSplitter(safeLineCallback(options.onStderrLine, reportCallbackError), { splitOnCarriageReturn: options.splitOnCarriageReturn ?? false });
    let watched: WatchedChannel | null = null;
    let killed = false;
    let exited = false;
    const finish = (info: { exitCode: number | null; signal: string | null; error?: Error }) => {
      if (exited) return;
      exited = true;
      out.flush();
      err.flush();
      try {
        options.onExit(info);
      } catch (error) {
        reportCallbackError(error);
      }
    };
    this.connect()
      .then((client) => this.exec(client, remote))
      .then(
        (channel) => {
          watched = watchChannel(channel, {
            stdout: (chunk) => out.push(chunk),
            stderr: (chunk) => err.push(chunk),
            end: ({ exitCode, signal, gaveUp }) =>
              finish(gaveUp ? { exitCode, signal, error: new Error("the remote command did not confirm its end after SIGKILL") } : { exitCode, signal }),
          }, this.killer);
          channel.end();
          if (killed) watched.terminate();
        },
        (error: unknown) =>
          finish({
            exitCode: null,
            signal: null,
            error: new ExecError({ command, exitCode: null, stdout: "", stderr: "", failure: "spawn", cause: error }),
          }),
      );
    return {
      pid: undefined,
      kill: () => {
        if (killed || exited) return;
        killed = true;
        watched?.terminate();
      },
    };
  }

  /** Ends the connection (a later run opens a new one). */
  async close(): Promise<void> {
    const pending = this.connection;
    this.connection = null;
    if (!pending) return;
    const client = await pending.catch(() => null);
    if (!client) return;
    await new Promise<void>((resolve) => {
      client.once("close", () => resolve());
      client.end();
    });
  }

  private connect(): Promise<Client> {
    if (this.connection) return this.connection;
    const { host, port = 22, username, privateKey, hostKeyFingerprint, readyTimeoutMs = 20_000 } = this.options;
    const expected = hostKeyFingerprint ? normalizeFingerprint(hostKeyFingerprint) : null;
    const connection = new Promise<Client>((resolve, reject) => {
      const client = new Client();
      let ready = false;
      let refusal: Error | null = null;
      client.on("ready", () => {
        ready = true;
        this.options.logger?.debug({ runner: this.description }, "ssh connection ready");
        resolve(client);
      });
      client.on("error", (error) => {
        if (!ready) reject(refusal ? new Error(refusal.message, { cause: error }) : error);
        else this.options.logger?.debug({ runner: this.description, err: error }, "ssh connection error");
      });
      client.on("close", () => {
        if (this.connection === connection) this.connection = null;
        if (!ready) reject(refusal ?? new Error(`ssh connection to ${host}:${port} closed before it was ready`));
      });
      client.connect({
        host,
        port,
        username,
        privateKey,
        readyTimeout: readyTimeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 3,
        hostVerifier: (key: Buffer) => {
          if (!expected) return true;
          const actual = hostKeyFingerprintOf(key);
          if (actual === expected) return true;
          refusal = new Error(`host key of ${host}:${port} is SHA256:${actual}, expected SHA256:${expected}`);
          return false;
        },
      });
    });
    this.connection = connection;
    connection.catch(() => {
      if (this.connection === connection) this.connection = null;
    });
    return connection;
  }

  private exec(client: Client, remote: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      client.exec(remote, (error, channel) => (error ? reject(error) : resolve(channel)));
    });
  }

  /** Best effort: signals a remote process group (and the process) over a new channel. */
  private readonly killer = (pid: number, name: "TERM" | "KILL"): void => {
    this.connect()
      .then((client) => this.exec(client, `kill -s ${name} -- -${pid} ${pid} 2>/dev/null; true`))
      .then(
        (ch) => {
          ch.on("error", () => {});
          ch.resume();
          ch.stderr.resume();
          ch.end();
        },
        () => {},
      );
  };

  private acquireChannel(): Promise<void> {
    const limit = this.options.maxChannels ?? 8;
    if (this.openChannels < limit) {
      this.openChannels += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private releaseChannel(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.openChannels -= 1;
  }
}
