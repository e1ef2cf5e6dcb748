/**
 * SSH into a test guest with the `ssh2` client: run one command (sshExec) and wait until
 * a guest's sshd accepts a key login (waitForSsh). Host keys are not checked — test
 * guests make fresh ones on first boot — but the presented key's SHA256 fingerprint is
 * returned so a test can compare it with what the guest printed on its console.
 */
import { createHash } from "node:crypto";
import { Client, utils, type ConnectConfig } from "ssh2";

export interface GuestSshTarget {
  host: string;
  port: number;
  /** The client's private key (OpenSSH or PEM); or a password. */
  privateKey?: Buffer | string;
  password?: string;
  /** Default "root". */
  username?: string;
}

export interface SshExecOptions extends GuestSshTarget {
  command: string;
  /** Whole call: connect, run, collect. Default 30 000 ms. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  stdin?: string | Buffer;
}

export interface SshExecResult {
  stdout: string;
  stderr: string;
  /** null when the command was ended by a signal (see `signal`) or the channel closed without a status. */
  exitCode: number | null;
  signal: string | null;
  /** `SHA256:…` (base64, no padding) of the host key the server presented. */
  hostKeyFingerprint: string;
}

/** A key pair for a guest: the private key in OpenSSH format and the `authorized_keys` line. */
export function generateGuestKeyPair(comment = "cdh-agent-test"): { privateKey: string; publicKey: string } {
  const pair = utils.generateKeyPairSync("ed25519", { comment });
  return { privateKey: pair.private, publicKey: pair.public.trim() };
}

function fingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/**
 * Connects, runs `command`, and resolves with its output and exit status once the channel
 * closes. Rejects on connection or authentication failure and on timeout (the connection
 * is torn down then). A non-zero exit is not an error: look at `exitCode`.
 */
export function sshExec(options: SshExecOptions): Promise<SshExecResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise<SshExecResult>((resolve, reject) => {
    const client = new Client();
    let hostKeyFingerprint = "";
    let settled = false;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let exitCode: number | null = null;
    let signal: string | null = null;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end();
      // end() waits for the server; make sure no socket outlives the call.
      setImmediate(() => client.destroy());
      if (err) reject(err);
      else
        resolve({
          stdout: Buffer.concat(stdout).toString("utf8"),
          stderr: Buffer.concat(stderr).toString("utf8"),
          exitCode,
          signal,
          hostKeyFingerprint,
        });
    };
    const timer = setTimeout(
      () => finish(new Error(`ssh ${options.host}:${options.port} "${options.command}" timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    client.on("error", (err) => finish(err));
    client.on("close", () => finish(new Error(`ssh ${options.host}:${options.port}: connection closed before the command ended`)));
    client.on("ready", () => {
      client.exec(options.command, (err, channel) => {
        if (err) return finish(err);
        channel.on("data", (chunk: Buffer) => stdout.push(chunk));
        channel.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
        channel.on("exit", (code: number | null, signalName?: string) => {
          exitCode = typeof code === "number" ? code : null;
          signal = signalName ? `SIG${signalName}` : null;
        });
        channel.on("close", () => finish(null));
        if (options.stdin !== undefined) channel.end(options.stdin);
        else channel.end();
      });
    });
    const config: ConnectConfig = {
      host: options.host,
      port: options.port,
      username: options.username ?? "root",
      ...(options.privateKey !== undefined ? { privateKey: options.privateKey } : {}),
      ...(options.password !== undefined ? { password: options.password, tryKeyboard: false } : {}),
      readyTimeout: Math.max(1_000, timeoutMs),
      hostVerifier: (key: Buffer) => {
        hostKeyFingerprint = fingerprint(key);
        return true;
      },
    };
    client.connect(config);
  });
}

export interface WaitForSshOptions extends GuestSshTarget {
  /** Give up after this many milliseconds. Default 180 000 (a cloud-init guest under TCG). */
  timeoutMs?: number;
  /** Pause between attempts. Default 2 000 ms. */
  intervalMs?: number;
  /** Run by each attempt; the wait ends when it exits 0. Default "true". */
  command?: string;
  /** Per-attempt timeout. Default 20 000 ms. */
  attemptTimeoutMs?: number;
  /** Stop waiting early (e.g. the guest process died): return a reason to give up. */
  giveUp?: () => string | undefined;
  signal?: AbortSignal;
}

export interface WaitForSshResult extends SshExecResult {
  /** Milliseconds from the call to the first successful attempt. */
  elapsedMs: number;
  attempts: number;
}

/**
 * Retries a key (or password) login (and `command`) until it succeeds: sshd not listening yet, host
 * keys not made yet, or the key not yet in authorized_keys all count as "not yet".
 * Rejects with the last error once `timeoutMs` has passed.
 */
export async function waitForSsh(options: WaitForSshOptions): Promise<WaitForSshResult> {
  const start = Date.now();
  const timeoutMs = options.timeoutMs ?? 180_000;
  const intervalMs = options.intervalMs ?? 2_000;
  const command = options.command ?? "true";
  let attempts = 0;
  let last = "no attempt made";
  for (;;) {
    if (options.signal?.aborted) throw options.signal.reason ?? new Error("waitForSsh aborted");
    const reason = options.giveUp?.();
    if (reason !== undefined) throw new Error(`waitForSsh gave up: ${reason} (last: ${last})`);
    attempts++;
    const remaining = timeoutMs - (Date.now() - start);
    try {
      const result = await sshExec({
        host: options.host,
        port: options.port,
        ...(options.privateKey !== undefined ? { privateKey: options.privateKey } : {}),
        ...(options.password !== undefined ? { password: options.password } : {}),
        username: options.username ?? "root",
        command,
        timeoutMs: Math.max(1_000, Math.min(options.attemptTimeoutMs ?? 20_000, remaining)),
      });
      if (result.exitCode === 0) return { ...result, elapsedMs: Date.now() - start, attempts };
      last = `"${command}" exited ${result.exitCode ?? result.signal}: ${result.stderr.trim()}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() - start + intervalMs > timeoutMs) {
      throw new Error(`no SSH login to ${options.host}:${options.port} within ${timeoutMs} ms after ${attempts} attempts (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
