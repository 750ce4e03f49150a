/**
 * The per-device rate limit needs each item's device before Ingest sees the item, and the device
 * is only known by recovering the signature (the most expensive step of ingest). A SharedVerifier
 * remembers its verdict per item object, so when the API and Ingest share one instance, the
 * API's pre-pass and Ingest's verify cost one recovery per item, not two.
 */
import { Verifier, type VerifyItem, type VerifyResult } from "../ingest/verify";

export class SharedVerifier extends Verifier {
  private readonly verdicts = new WeakMap<object, VerifyResult>();

  override verify(item: VerifyItem): VerifyResult {
    if (item === null || typeof item !== "object") return super.verify(item);
    const known = this.verdicts.get(item);
    if (known) return known;
    const verdict = super.verify(item);
    this.verdicts.set(item, verdict);
    return verdict;
  }
}
