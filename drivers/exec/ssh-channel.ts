import type { ClientChannel } from "ssh2";
import { KILL_GRACE_MS } from "./local.js";
import { PidHeader } from "./remote-command.js";

/**
 * Collects a channel's output, learns the remote PID from the header line, and ends it on
 * terminate(): SIGTERM now, SIGKILL after the grace period, and half a second later the
 * channel is closed and given up on (sshd keeps a channel until its process has ended).
 * Signals go both as ssh "signal" requests (sshd refuses them for root logins) and as a
 * `kill` of the remote process group over a second channel.
 */
export function watchChannel(
  channel: ClientChannel,
  on: { stdout(chunk: Buffer): void; stderr(chunk: Buffer): void; end(info: ChannelEnd): void },
  killRemote: (pid: number, name: "TERM" | "KILL") => void,
): WatchedChannel {
  const header = new PidHeader();
  let exitCode: number | null = null;
  let signal: string | null = null;
  let ended = false;
  const timers: NodeJS.Timeout[] = [];
  const end = (gaveUp: boolean) => {
    if (ended) return;
    ended = true;
    timers.forEach(clearTimeout);
    const rest = header.flush();
    if (rest.length > 0) on.stderr(rest);
    on.end({ exitCode, signal, gaveUp });
  };
  const kill = (name: "TERM" | "KILL") => {
    sendSignal(channel, name);
    if (header.pid !== null) killRemote(header.pid, name);
  };
  channel.on("data", (chunk: Buffer) => on.stdout(chunk));
  channel.stderr.on("data", (chunk: Buffer) => {
    const knew = header.pid !== null;
    const rest = header.take(chunk);
    // terminate() came before the PID did: signal the process now
    if (!knew && header.pid !== null && timers.length > 0 && !ended) killRemote(header.pid, "TERM");
    if (rest.length > 0) on.stderr(rest);
  });
  channel.on("exit", (code: number | null, signalName?: string) => {
    exitCode = code ?? null;
    signal = signalName ? `SIG${signalName}` : null;
  });
  channel.on("error", () => {}); // a failing channel also closes; the outcome is decided there
  channel.on("close", () => end(false));
  return {
    terminate: () => {
      if (ended || timers.length > 0) return;
      kill("TERM");
      timers.push(
        setTimeout(() => {
          kill("KILL");
          timers.push(setTimeout(() => (channel.close(), end(true)), 500));
        }, KILL_GRACE_MS),
      );
    },
  };
}

export interface ChannelEnd {
  exitCode: number | null;
  signal: string | null;
  /** True when the channel was closed without the server confirming that the command ended. */
  gaveUp: boolean;
}

export interface WatchedChannel {
  terminate(): void;
}

/**
 * ssh2's channel.signal() sends nothing once stdin has been ended (it checks `writable`),
 * but a signal request is valid as long as the channel is open: send it through the
 * protocol object directly then.
 */
function sendSignal(channel: ClientChannel, name: string): void {
  const internal = channel as unknown as {
    outgoing?: { id?: number; state?: string };
    _client?: { _protocol?: { signal(id: number, name: string): void } };
  };
  try {
    if (channel.writable) channel.signal(name);
    else if ((internal.outgoing?.state === "open" || internal.outgoing?.state === "eof") && internal.outgoing.id !== undefined) {
      internal._client?._protocol?.signal(internal.outgoing.id, name);
    }
  } catch {
    // the channel or connection is already gone
  }
}
