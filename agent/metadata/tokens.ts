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
/** Live tokens of all callers together; past it issue() refuses (the server answers 503). */
export const DEFAULT_MAX_TOKENS = 65_536;
/** Longer header values are not tokens this store issued. */
const MAX_TOKEN_LENGTH = 128;

export interface TokenStoreOptions {
  /** Milliseconds since the epoch. */
  now: () => number;
  maxPerCaller?: number;
  maxTokens?: number;
}

interface Entry {
  readonly token: string;
  readonly caller: string;
  readonly expiresAt: number;
}

/** Parses the TTL header: an integer 1–21600, digits only; undefined when invalid or absent. */
export function parseTtl(header: string | string[] | undefined): number | undefined {
  if (typeof header !== "string" || !/^\d{1,5}$/.test(header.trim())) return undefined;
  const ttl = Number(header.trim());
  return ttl >= MIN_TTL_SECONDS && ttl <= MAX_TTL_SECONDS ? ttl : undefined;
}

/**
 * Expiry is swept in amortised O(log n) per token: every issued token also goes into a
 * binary min-heap ordered by expiry, and each issue() first pops what has expired. A
 * token forgotten early (its caller's 33rd, or checked after expiry) stays in the heap
 * as a stale entry, skipped when popped; the heap is rebuilt from the live tokens when
 * stale entries outnumber them, so it holds at most about twice the live tokens.
 */
export class TokenStore {
  private readonly now: () => number;
  private readonly maxPerCaller: number;
  private readonly maxTokens: number;
  private readonly tokens = new Map<string, Entry>();
  /** Per caller, its tokens oldest first. */
  private readonly byCaller = new Map<string, string[]>();
  /** Min-heap by expiresAt (may hold entries already forgotten). */
  private heap: Entry[] = [];

  constructor(options: TokenStoreOptions) {
    this.now = options.now;
    this.maxPerCaller = options.maxPerCaller ?? DEFAULT_MAX_TOKENS_PER_CALLER;
    this.maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
  }

  /** Issues a token for `caller`, valid for `ttlSeconds`; undefined when the store is full of live tokens. */
  issue(caller: string, ttlSeconds: number): string | undefined {
    const now = this.now();
    this.sweep(now);
    const own = this.byCaller.get(caller) ?? [];
    // A caller at its own cap makes room by forgetting its oldest; only a new caller can meet the global cap.
    if (own.length < this.maxPerCaller && this.tokens.size >= this.maxTokens) return undefined;
    while (own.length >= this.maxPerCaller) this.tokens.delete(own.shift()!);
    const token = randomBytes(32).toString("base64url");
    const entry: Entry = { token, caller, expiresAt: now + ttlSeconds * 1000 };
    own.push(token);
    this.byCaller.set(caller, own);
    this.tokens.set(token, entry);
    this.push(entry);
    if (this.heap.length > 2 * this.tokens.size + 1024) this.rebuild();
    return token;
  }

  /** True when `token` was issued to `caller` and has not expired. */
  check(caller: string, token: string | string[] | undefined): boolean {
    if (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return false;
    const entry = this.tokens.get(token);
    if (!entry) return false;
    if (entry.expiresAt <= this.now()) {
      this.forget(entry);
      return false;
    }
    return entry.caller === caller;
  }

  /** Drops every expired token: pops the heap while its earliest entry has expired. */
  sweep(now = this.now()): void {
    const heap = this.heap;
    while (heap.length > 0 && heap[0]!.expiresAt <= now) {
      const entry = this.pop();
      if (this.tokens.get(entry.token) === entry) this.forget(entry);
    }
  }

  get size(): number {
    return this.tokens.size;
  }

  /** Heap entries, stale ones included (tests). */
  get queued(): number {
    return this.heap.length;
  }

  private forget(entry: Entry): void {
    this.tokens.delete(entry.token);
    const own = this.byCaller.get(entry.caller);
    if (!own) return;
    const i = own.indexOf(entry.token);
    if (i >= 0) own.splice(i, 1);
    if (own.length === 0) this.byCaller.delete(entry.caller);
  }

  private rebuild(): void {
    this.heap = [...this.tokens.values()].sort((a, b) => a.expiresAt - b.expiresAt);
  }

  private push(entry: Entry): void {
    const heap = this.heap;
    let i = heap.length;
    heap.push(entry);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.expiresAt <= entry.expiresAt) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): Entry {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= heap.length) break;
      const r = l + 1;
      const c = r < heap.length && heap[r]!.expiresAt < heap[l]!.expiresAt ? r : l;
      if (heap[c]!.expiresAt >= last.expiresAt) break;
      heap[i] = heap[c]!;
      i = c;
    }
    heap[i] = last;
    return top;
  }
}
