/**
 * The agent's logger: pino, JSON lines, secrets redacted wherever they appear at
 * the first two levels of a log object, every finished line scrubbed of every
 * registered secret (drivers/exec/sanitize.ts: a secret inside an error message or
 * a command line has no field name to redact it by), and a rate limiter for log
 * paths that a guest can trigger (a guest must not be able to flood the host's journal).
 */
import pino, { type DestinationStream, type Level, type Logger } from "pino";
import { REDACTED, secrets, type Sanitizer } from "../drivers/exec/sanitize.js";

export type { Logger } from "pino";
export type LogLevel = Level | "silent";

export { REDACTED };

/** Field names that hold secrets, in the spellings the agent and its peers use. */
const SECRET_FIELDS = [
  "password",
  "Password",
  "passwd",
  "passphrase",
  "secret_key",
  "secretKey",
  "SecretKey",
  "private_key",
  "privateKey",
  "PrivateKey",
  "user_data",
  "userData",
  "UserData",
  "authorization",
  "Authorization",
  "cookie",
  "Cookie",
] as const;

/**
 * pino redact paths: each secret field at the top level and one level down, and
 * the Authorization header of a request-like object at the top level or one down.
 */
export const REDACT_PATHS: readonly string[] = Object.freeze([
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  "headers.authorization",
  "headers.Authorization",
  '*.headers.authorization',
  '*.headers.Authorization',
  'headers["x-tc-authorization"]',
]);

export interface CreateLoggerOptions {
  level: LogLevel;
  /** Where JSON lines go; default stdout (the journal under systemd). */
  destination?: DestinationStream | NodeJS.WritableStream;
  /** Fields on every line (e.g. { hostId }). */
  base?: Record<string, unknown>;
  /** Scrubs every line before it is written. Default: the agent's registry (sanitize.ts). */
  sanitizer?: Sanitizer;
}

export function createLogger(options: CreateLoggerOptions): Logger {
  const sanitizer = options.sanitizer ?? secrets;
  return pino(
    {
      level: options.level,
      base: options.base ?? {},
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACT_PATHS], censor: REDACTED },
      hooks: { streamWrite: (line) => sanitizer.sanitize(line) },
    },
    (options.destination ?? pino.destination(1)) as DestinationStream,
  );
}

export interface RateLimitedOptions {
  /** Lines allowed per minute (a token bucket of that size refilled over 60 s). */
  perMinute: number;
  /** Clock in ms, for tests. Default Date.now. */
  now?: () => number;
}

type LogFn = (obj: Record<string, unknown>, msg: string) => void;

/** A logger facade that drops lines above the rate and reports how many it dropped. */
export interface RateLimitedLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** Lines dropped since the last line that was written. */
  readonly suppressed: number;
}

/**
 * Wraps a logger for one guest-triggerable call site. Up to `perMinute` lines
 * pass per minute; the rest are counted, and the next line that passes carries
 * `suppressed: <count>`.
 */
export function rateLimited(logger: Logger, options: RateLimitedOptions): RateLimitedLogger {
  if (!(options.perMinute > 0)) throw new RangeError("perMinute must be > 0");
  const now = options.now ?? Date.now;
  const capacity = options.perMinute;
  const refillPerMs = options.perMinute / 60_000;
  let tokens = capacity;
  let last = now();
  let suppressed = 0;

  const take = (): boolean => {
    const t = now();
    tokens = Math.min(capacity, tokens + (t - last) * refillPerMs);
    last = t;
    if (tokens >= 1) {
      tokens -= 1;
      return true;
    }
    return false;
  };

  const make =
    (level: "debug" | "info" | "warn" | "error"): LogFn =>
    (obj, msg) => {
      if (!logger.isLevelEnabled(level)) return;
      if (!take()) {
        suppressed += 1;
        return;
      }
      if (suppressed > 0) {
        logger[level]({ ...obj, suppressed }, msg);
        suppressed = 0;
      } else {
        logger[level](obj, msg);
      }
    };

  return {
    debug: make("debug"),
    info: make("info"),
    warn: make("warn"),
    error: make("error"),
    get suppressed() {
      return suppressed;
    },
  };
}
