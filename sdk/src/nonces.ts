/**
 * Nonces a device never reuses, even across crashes. A nonce is durably reserved before it is
 * handed out, so after a restart the device continues above anything it may have signed.
 * Out-of-order delivery is fine: the contract accepts any unused nonce within its window
 * (NONCE_WINDOW below the highest settled one), so keep nonces increasing and close together.
 */

/** Where reserved nonces are remembered: one bigint per key (device address, or address + lane). */
export interface NonceBackend {
  /** The stored value for `key`, or undefined if none. */
  load(key: string): Promise<bigint | undefined>;
  /** Durably store `value` for `key`; resolve only once it would survive a crash. */
  save(key: string, value: bigint): Promise<void>;
}

export type NonceManagerOptions = {
  backend: NonceBackend;
  /** First nonce of a key never seen before (default 0). */
  start?: bigint;
};

/** Hands out increasing nonces per key; each is persisted before it is returned. */
export class NonceManager {
  private readonly backend: NonceBackend;
  private readonly start: bigint;
  private readonly next = new Map<string, bigint>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor({ backend, start = 0n }: NonceManagerOptions) {
    this.backend = backend;
    this.start = start;
  }

  /** Reserve the next nonce for `key`. Concurrent calls are serialized, never given the same value. */
  reserve(key: string): Promise<bigint> {
    const k = key.toLowerCase();
    const run = this.queue.then(async () => {
      let n = this.next.get(k);
      if (n === undefined) n = (await this.backend.load(k)) ?? this.start;
      await this.backend.save(k, n + 1n);
      this.next.set(k, n + 1n);
      return n;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The nonce the next `reserve` would return, without reserving it. */
  async peek(key: string): Promise<bigint> {
    const k = key.toLowerCase();
    await this.queue;
    return this.next.get(k) ?? (await this.backend.load(k)) ?? this.start;
  }
}

/** Keeps nonces in memory only: for tests and devices that never restart without a new key. */
export class MemoryNonceBackend implements NonceBackend {
  private readonly values = new Map<string, bigint>();
  async load(key: string) {
    return this.values.get(key);
  }
  async save(key: string, value: bigint) {
    this.values.set(key, value);
  }
}
