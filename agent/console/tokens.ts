/**
 * One-time console tokens: the only key to a console session (VNC, serial). What Nova's
 * users reported against its console proxy decided the rules (issue 14):
 *
 * - usable once (Launchpad bug 1197459: a URL could be opened again): consume() deletes the
 *   token whatever it answers, so a refused attempt spends it too;
 * - short-lived: valid `ttlMs` (15 s, the seeds' DescribeInstanceVncUrl) until it is used;
 * - bound to one instance and one kind of console: a VNC token opens no serial session and
 *   no other instance's screen;
 * - a secret: 32 random bytes (base64url). The store keeps only its SHA-256, and issue()
 *   registers the token with the agent's sanitizer (drivers/exec/sanitize.ts), so that no log
 *   line or error message ever carries it.
 *
 * The store is bounded (`maxOutstanding`, oldest dropped first) and forgets expired tokens as
 * it goes, so a caller asking for URLs in a loop cannot grow it. One store serves every kind.
 */
import { createHash, randomBytes } from "node:crypto";
import { addSecret } from "../../drivers/exec/sanitize.js";

/** The consoles a token can open. */
export type ConsoleKind = "vnc" | "serial";

export interface ConsoleTokenOptions {
  /** How long a token stays valid while unused, ms. Default 15 000 (the seeds' 15 s). */
  readonly ttlMs?: number;
  /** Tokens outstanding at most (the oldest is dropped past this). Default 1 000. */
  readonly maxOutstanding?: number;
  /** Clock, ms. Default Date.now. */
  readonly now?: () => number;
  /** Called with every token issued (default: the agent's sanitizer registry). */
  readonly registerSecret?: (token: string) => void;
}

export interface IssuedToken {
  /** The token itself: goes into the URL and nowhere else. */
  readonly token: string;
  /** When it stops being valid, ms since the epoch. */
  readonly expiresAtMs: number;
}

/** Why a token was refused (log-safe: never the token). */
export type TokenRefusal = "unknown" | "expired" | "wrong-kind" | "wrong-instance";

export type ConsumeResult =
  | { readonly ok: true; readonly instanceId: string }
  | { readonly ok: false; readonly reason: TokenRefusal };

interface Entry {
  readonly kind: ConsoleKind;
  readonly instanceId: string;
  readonly expiresAtMs: number;
}

/** Tokens are 32 random bytes, base64url: 43 characters of [A-Za-z0-9_-]. */
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

function digest(token: string): string {
  return createHash("sha256").update(token).digest("base64url");
}

export class ConsoleTokens {
  private readonly ttlMs: number;
  private readonly maxOutstanding: number;
  private readonly now: () => number;
  private readonly registerSecret: (token: string) => void;
  /** SHA-256 of the token → what it opens; insertion order = issue order. */
  private readonly entries = new Map<string, Entry>();

  constructor(options: ConsoleTokenOptions = {}) {
    this.ttlMs = options.ttlMs ?? 15_000;
    this.maxOutstanding = options.maxOutstanding ?? 1_000;
    this.now = options.now ?? Date.now;
    this.registerSecret = options.registerSecret ?? addSecret;
  }

  /** Tokens issued and neither used nor expired (tests, metrics). */
  get outstanding(): number {
    this.sweep();
    return this.entries.size;
  }

  /** A new token for one session of `kind` on `instanceId`. */
  issue(kind: ConsoleKind, instanceId: string): IssuedToken {
    this.sweep();
    const token = randomBytes(32).toString("base64url");
    this.registerSecret(token);
    const expiresAtMs = this.now() + this.ttlMs;
    this.entries.set(digest(token), { kind, instanceId, expiresAtMs });
    while (this.entries.size > this.maxOutstanding) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return { token, expiresAtMs };
  }

  /**
   * Spends a token. It is gone afterwards whatever the answer (a token tried for the wrong
   * kind or instance is spent as well: whoever holds it is not using it as it was issued).
   * `instanceId` absent: the token's own instance is the answer (a URL carrying only the token).
   */
  consume(token: string, kind: ConsoleKind, instanceId?: string): ConsumeResult {
    if (typeof token !== "string" || !TOKEN_RE.test(token)) return { ok: false, reason: "unknown" };
    const key = digest(token);
    const entry = this.entries.get(key);
    if (!entry) return { ok: false, reason: "unknown" };
    this.entries.delete(key);
    if (this.now() >= entry.expiresAtMs) return { ok: false, reason: "expired" };
    if (entry.kind !== kind) return { ok: false, reason: "wrong-kind" };
    if (instanceId !== undefined && entry.instanceId !== instanceId) return { ok: false, reason: "wrong-instance" };
    return { ok: true, instanceId: entry.instanceId };
  }

  /** Drops every outstanding token of an instance (it was terminated or stopped). */
  revokeInstance(instanceId: string): void {
    for (const [key, entry] of this.entries) if (entry.instanceId === instanceId) this.entries.delete(key);
  }

  /** Drops expired tokens; they are in issue order, so the sweep stops at the first live one. */
  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAtMs > now) break;
      this.entries.delete(key);
    }
  }
}
