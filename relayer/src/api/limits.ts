/**
 * Per-device admission rate: a token bucket per device address, holding up to `perSecond` items
 * and refilled at `perSecond` items per second. A request takes tokens for all its items or none
 * (clients resend whole requests, so a partial take would count the resent items twice).
 */
export type DeviceTake =
  | { ok: true }
  | { ok: false; device: string; wanted: number; retryAfterSeconds: number }
  | { ok: false; device: string; wanted: number; retryAfterSeconds: undefined };

type Bucket = { tokens: number; at: number };

export class DeviceRateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly perSecond: number,
    private readonly now: () => number = Date.now,
    /** Full buckets are dropped once the map holds this many devices. */
    private readonly maxTracked = 100_000,
  ) {}

  /**
   * Take `count` tokens from each device's bucket, all or nothing. `retryAfterSeconds` is
   * undefined when one request holds more items of a device than the bucket can ever hold.
   */
  take(counts: ReadonlyMap<string, number>): DeviceTake {
    const now = this.now();
    const refilled: [string, Bucket][] = [];
    let worst: { device: string; wanted: number; wait: number } | undefined;
    for (const [device, wanted] of counts) {
      if (wanted > this.perSecond) return { ok: false, device, wanted, retryAfterSeconds: undefined };
      const b = this.refill(device, now);
      refilled.push([device, b]);
      if (b.tokens < wanted) {
        const wait = (wanted - b.tokens) / this.perSecond;
        if (!worst || wait > worst.wait) worst = { device, wanted, wait };
      }
    }
    if (worst)
      return {
        ok: false,
        device: worst.device,
        wanted: worst.wanted,
        retryAfterSeconds: Math.max(1, Math.ceil(worst.wait)),
      };
    for (const [device, b] of refilled) {
      b.tokens -= counts.get(device)!;
      this.buckets.set(device, b);
    }
    if (this.buckets.size > this.maxTracked) this.prune(now);
    return { ok: true };
  }

  /** Give back what `take` took, for a request that stored nothing (the store was down). */
  refund(counts: ReadonlyMap<string, number>): void {
    for (const [device, n] of counts) {
      const b = this.buckets.get(device);
      if (b) b.tokens = Math.min(this.perSecond, b.tokens + n);
    }
  }

  private refill(device: string, now: number): Bucket {
    const b = this.buckets.get(device);
    if (!b) return { tokens: this.perSecond, at: now };
    const tokens = Math.min(this.perSecond, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    return { tokens, at: now };
  }

  private prune(now: number) {
    for (const [device, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.perSecond >= this.perSecond) this.buckets.delete(device);
    }
  }
}
