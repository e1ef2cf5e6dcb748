/**
 * libvirt events: a parser for the lines of `virsh event --all --loop --timestamp`
 * and a supervisor that keeps exactly one such child alive, restarting it with
 * backoff when it dies (libvirtd restarted, connection dropped, …).
 */
import type { CommandRunner, StreamHandle } from "../exec/runner.js";
import type { DomainEvent, EventHandlers, EventWatch } from "./types.js";

/** The part of a pino logger the libvirt driver uses. */
export interface DriverLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

// 2026-11-23 12:22:33.737+0000: event 'lifecycle' for domain 'ins-abc': Started Booted
const EVENT_LINE =
  /^(?:(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(\d{2}): )?event '([^']+)' for domain '(.*?)'(?:: (.*))?$/;
// state: 'disconnected' reason: 'domain started'
const AGENT_LIFECYCLE = /^state: '([^']*)' reason: '([^']*)'$/;

/**
 * Parses one line of `virsh event --all --loop --timestamp`. Returns null for
 * anything that is not an event line (blank lines, "events received", …).
 *
 * - lifecycle: event = first word ("Started"), detail = the rest ("Booted",
 *   "Finished after guest request").
 * - agent-lifecycle: event = the agent state ("connected"), detail = the reason.
 * - any other kind: event = the kind ("reboot", "device-removed"), detail = the
 *   text after the colon (e.g. the device alias), or "".
 */
export function parseEventLine(line: string, now: () => Date = () => new Date()): DomainEvent | null {
  const m = EVENT_LINE.exec(line.trimEnd());
  if (!m) return null;
  const [, date, time, tzHours, tzMinutes, kind = "", domain = "", rest = ""] = m;
  const at = date ? new Date(`${date}T${time}${tzHours}:${tzMinutes}`) : now();
  const text = rest.trim();
  if (kind === "lifecycle") {
    const space = text.indexOf(" ");
    return {
      domain,
      kind,
      event: space < 0 ? text : text.slice(0, space),
      detail: space < 0 ? "" : text.slice(space + 1),
      at,
    };
  }
  if (kind === "agent-lifecycle") {
    const a = AGENT_LIFECYCLE.exec(text);
    if (a) return { domain, kind, event: a[1] ?? "", detail: a[2] ?? "", at };
  }
  return { domain, kind, event: kind, detail: text, at };
}

export interface BackoffOptions {
  /** First restart delay, in milliseconds. Default 500. */
  initialMs: number;
  /** Longest restart delay, in milliseconds. Default 10 000. */
  maxMs: number;
  /** A child that ran at least this long resets the delay to initialMs. Default 30 000. */
  resetAfterMs: number;
}

export const DEFAULT_EVENT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 500,
  maxMs: 10_000,
  resetAfterMs: 30_000,
});

export interface EventSupervisorOptions {
  runner: CommandRunner;
  /** The full argv of the event child, e.g. virsh -c URI event --all --loop --timestamp. */
  argv: readonly string[];
  /** Confirms that libvirtd answers once the child is up. */
  ping: () => Promise<boolean>;
  handlers: EventHandlers;
  backoff?: Partial<BackoffOptions>;
  logger?: DriverLogger;
}

/**
 * Runs one long-lived event child through runner.stream and keeps it running:
 * - every parsed line goes to handlers.onEvent;
 * - after each spawn, a ping confirms the connection, then handlers.onConnected
 *   (the caller reconciles: events may have been missed while no child ran);
 * - when the child exits: handlers.onDisconnected, then a restart after the
 *   backoff delay (initialMs doubling to maxMs; back to initialMs after a child
 *   that ran resetAfterMs);
 * - stop() kills the child and cancels any pending restart; no callback follows.
 */
export function superviseEvents(options: EventSupervisorOptions): EventWatch {
  const backoff: BackoffOptions = { ...DEFAULT_EVENT_BACKOFF, ...options.backoff };
  const { handlers, logger } = options;
  let stopped = false;
  let child: StreamHandle | undefined;
  let generation = 0;
  let nextDelayMs = backoff.initialMs;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;

  const safely = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (error) {
      logger?.warn({ err: error }, `libvirt event handler ${what} threw`);
    }
  };

  const onChildGone = (gen: number, startedAt: number, reason: string): void => {
    if (stopped || gen !== generation) return;
    child = undefined;
    generation += 1;
    if (Date.now() - startedAt >= backoff.resetAfterMs) nextDelayMs = backoff.initialMs;
    const delay = nextDelayMs;
    nextDelayMs = Math.min(nextDelayMs * 2, backoff.maxMs);
    logger?.warn({ reason, restartInMs: delay }, "libvirt event stream ended");
    safely("onDisconnected", () => handlers.onDisconnected(reason));
    if (stopped) return; // onDisconnected may have called stop()
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      spawn();
    }, delay);
  };

  const spawn = (): void => {
    if (stopped) return;
    const gen = generation;
    const startedAt = Date.now();
    let lastStderr = "";
    try {
      child = options.runner.stream(options.argv, {
        onLine: (line) => {
          if (stopped || gen !== generation) return;
          const event = parseEventLine(line);
          if (event) safely("onEvent", () => handlers.onEvent(event));
          else if (line.trim() !== "") logger?.debug({ line }, "unparsed libvirt event line");
        },
        onStderrLine: (line) => {
          if (line.trim() !== "") lastStderr = line.trim();
        },
        onExit: ({ exitCode, signal, error }) => {
          const how = error ? error.message : signal ? `killed by ${signal}` : `exited with code ${exitCode}`;
          onChildGone(gen, startedAt, `virsh event ${how}${lastStderr ? `: ${lastStderr}` : ""}`);
        },
      });
    } catch (error) {
      // Deferred so that a synchronous failure does not recurse into spawn().
      queueMicrotask(() => onChildGone(gen, startedAt, `virsh event could not start: ${String(error)}`));
      return;
    }
    const handle = child;
    options
      .ping()
      .catch(() => false)
      .then((ok) => {
        if (stopped || gen !== generation) return;
        if (ok) {
          logger?.info({}, "libvirt event stream connected");
          safely("onConnected", () => handlers.onConnected());
        } else {
          // The child may linger without a connection: kill it, onExit restarts it.
          handle?.kill();
        }
      });
  };

  spawn();
  return {
    stop(): void {
      if (stopped) return;
      stopped = true;
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      restartTimer = undefined;
      child?.kill();
      child = undefined;
    },
  };
}
