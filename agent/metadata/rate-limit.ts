/**
 * A token bucket per caller: `burst` requests at once, refilled at `perSecond`.
 * Full buckets carry no information, so they are dropped when the table grows.
 */

export interface RateLimit {
  /** Requests per second a caller may sustain. */
  readonly perSecond: number;
  /** Requests a caller may make at once. */
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  last: number;
}

/** Buckets kept before full ones are dropped. */
const SWEEP_ABOVE = 4096;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly refillPerMs: number;

  constructor(
    private readonly limit: RateLimit,
    private readonly now: () => number,
  ) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1)) throw new RangeError("rateLimit needs perSecond > 0 and burst >= 1");
    this.refillPerMs = limit.perSecond / 1000;
  }

  /** Takes one request from `key`'s bucket; false when it is empty. */
  take(key: string): boolean {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= SWEEP_ABOVE) this.sweep(now);
      bucket = { tokens: this.limit.burst, last: now };
      this.buckets.set(key, bucket);
    } else if (now > bucket.last) {
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + (now - bucket.last) * this.refillPerMs);
      bucket.last = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private sweep(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.last) * this.refillPerMs >= this.limit.burst) this.buckets.delete(key);
    }
  }
}
