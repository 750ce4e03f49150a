/**
 * The per-device rate limit needs each item's device before Ingest sees the item, and the device
 * is only known by recovering the signature (the most expensive step of ingest). A SharedVerifier
 * remembers its verdict per item object, so when the API and Ingest share one instance, the
 * API's pre-pass and Ingest's verify cost one recovery per item, not two.
 */
import type { MachinePayDomain } from "@machinepay/sdk";
import { Verifier, type VerifyItem, type VerifyResult } from "../ingest/verify";
import { VerifierPool } from "../ingest/verify-pool";

export class SharedVerifier extends Verifier {
  private readonly verdicts = new WeakMap<object, VerifyResult>();
  private readonly pool: VerifierPool | undefined;

  /** `workers` > 0 recovers signatures on that many worker threads (see `prepare`). */
  constructor(domain: MachinePayDomain, workers = 0) {
    super(domain);
    this.pool = workers > 0 ? new VerifierPool(domain, workers) : undefined;
  }

  /**
   * Verify `items` on the worker pool and remember the verdicts, so the `verify` calls that follow
   * (rate limit, Ingest) answer from memory. Without a pool this does nothing (verify works inline).
   */
  async prepare(items: readonly VerifyItem[]): Promise<void> {
    if (!this.pool) return;
    const todo = items.filter((it) => it !== null && typeof it === "object" && !this.verdicts.has(it));
    if (todo.length === 0) return;
    const verdicts = await this.pool.verifyMany(todo);
    for (let i = 0; i < todo.length; i++) this.verdicts.set(todo[i], verdicts[i]);
  }

  close(): Promise<void> {
    return this.pool?.close() ?? Promise.resolve();
  }

  override verify(item: VerifyItem): VerifyResult {
    if (item === null || typeof item !== "object") return super.verify(item);
    const known = this.verdicts.get(item);
    if (known) return known;
    const verdict = super.verify(item);
    this.verdicts.set(item, verdict);
    return verdict;
  }
}
