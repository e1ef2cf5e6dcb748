/**
 * IMDSv2 session tokens (peers.md §6): `PUT /latest/api/token` with a TTL of
 * 1–21600 s returns a random token bound to the caller that asked for it; a token
 * is only good for that caller and until it expires. Held in memory only: a
 * restart of the agent invalidates every token, and clients ask for a new one
 * (cloud-init and the AWS SDKs do this on 401).
 */
import { randomBytes } from "node:crypto";

export const MIN_TTL_SECONDS = 1;
export const MAX_TTL_SECONDS = 21_600;
/** Tokens a single caller may hold at once; the oldest is forgotten beyond this. */
export const DEFAULT_MAX_TOKENS_PER_CALLER = 32;
/** Longer header values are not tokens this store issued. */
const MAX_TOKEN_LENGTH = 128;

export interface TokenStoreOptions {
  /** Milliseconds since the epoch. */
  now: () => number;
  maxPerCaller?: number;
}

interface Entry {
  readonly caller: string;
  readonly expiresAt: number;
}

/** Parses the TTL header: an integer 1–21600, digits only; undefined when invalid or absent. */
export function parseTtl(header: string | string[] | undefined): number | undefined {
  if (typeof header !== "string" || !/^\d{1,5}$/.test(header.trim())) return undefined;
  const ttl = Number(header.trim());
  return ttl >= MIN_TTL_SECONDS && ttl <= MAX_TTL_SECONDS ? ttl : undefined;
}

export class TokenStore {
  private readonly now: () => number;
  private readonly maxPerCaller: number;
  private readonly tokens = new Map<string, Entry>();
  /** Per caller, its tokens oldest first. */
  private readonly byCaller = new Map<string, string[]>();

  constructor(options: TokenStoreOptions) {
    this.now = options.now;
    this.maxPerCaller = options.maxPerCaller ?? DEFAULT_MAX_TOKENS_PER_CALLER;
  }

  /** Issues a token for `caller`, valid for `ttlSeconds`. */
  issue(caller: string, ttlSeconds: number): string {
    const now = this.now();
    const token = randomBytes(32).toString("base64url");
    const own = (this.byCaller.get(caller) ?? []).filter((t) => {
      const e = this.tokens.get(t);
      if (e && e.expiresAt > now) return true;
      this.tokens.delete(t);
      return false;
    });
    while (own.length >= this.maxPerCaller) this.tokens.delete(own.shift()!);
    own.push(token);
    this.byCaller.set(caller, own);
    this.tokens.set(token, { caller, expiresAt: now + ttlSeconds * 1000 });
    return token;
  }

  /** True when `token` was issued to `caller` and has not expired. */
  check(caller: string, token: string | string[] | undefined): boolean {
    if (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return false;
    const entry = this.tokens.get(token);
    if (!entry) return false;
    if (entry.expiresAt <= this.now()) {
      this.forget(token, entry.caller);
      return false;
    }
    return entry.caller === caller;
  }

  /** Drops every expired token (called now and then by the server). */
  sweep(): void {
    const now = this.now();
    for (const [token, entry] of this.tokens) if (entry.expiresAt <= now) this.forget(token, entry.caller);
  }

  get size(): number {
    return this.tokens.size;
  }

  private forget(token: string, caller: string): void {
    this.tokens.delete(token);
    const own = this.byCaller.get(caller);
    if (!own) return;
    const rest = own.filter((t) => t !== token);
    if (rest.length === 0) this.byCaller.delete(caller);
    else this.byCaller.set(caller, rest);
  }
}
