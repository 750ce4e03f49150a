/**
 * What the relayer has accepted and the chain has not settled yet, summed the way the contract's
 * caps need it: per device (period and lifetime caps, nonces), per owner and token (balance), per
 * tab (newest voucher). Admission checks a new item against chain state **plus** this ledger, so
 * two payments that each fit a cap but not together are never both accepted.
 *
 * In memory, rebuilt from the store's pending items at start (the store is the truth). Every
 * method is synchronous: admission decides and reserves in one uninterrupted step.
 */
import type { Hex } from "@machinepay/sdk";

export type PendingKind = "payment" | "voucher";

/** One pending item as the ledger counts it. */
export type PendingEntry = {
  id: Hex;
  kind: PendingKind;
  device: string;
  owner: string;
  token: string;
  /** What it will take from the caps and the owner's balance: amount + fee, or increment + fee. */
  spend: bigint;
  /** Payments. */
  nonce?: bigint;
  /** Vouchers: `${device}:${payee}:${token}:${tabId}` and the voucher's cumulative. */
  tab?: string;
  cumulative?: bigint;
  /** In a batch that was built (batched or submitted): a newer voucher cannot replace it. */
  inFlight: boolean;
  /** Unix ms when it was accepted, and its deadline (unix s): when the batcher must act. */
  acceptedAt: number;
  deadline: bigint;
  /** The relayer's fee in `spend`. */
  fee: bigint;
};

type DeviceSums = { spend: bigint; nonces: Map<bigint, Hex>; count: number };
type TabSums = { accepted?: Hex; inFlight: Set<Hex> };

const lc = (s: string) => s.toLowerCase();

export function tabKeyOf(device: string, payee: string, token: string, tabId: bigint): string {
  return `${lc(device)}:${lc(payee)}:${lc(token)}:${tabId}`;
}

export class PendingLedger {
  private readonly items = new Map<Hex, PendingEntry>();
  private readonly devices = new Map<string, DeviceSums>();
  private readonly owners = new Map<string, bigint>();
  private readonly tabs = new Map<string, TabSums>();
  /** Ids of each owner's entries (a relayer sharing its store re-reads an owner whole). */
  private readonly byOwner = new Map<string, Set<Hex>>();

  get size(): number {
    return this.items.size;
  }

  has(id: Hex): boolean {
    return this.items.has(id);
  }

  get(id: Hex): PendingEntry | undefined {
    return this.items.get(id);
  }

  add(entry: PendingEntry): void {
    if (this.items.has(entry.id)) throw new Error(`pending ledger: ${entry.id} added twice`);
    const e = { ...entry, device: lc(entry.device), owner: lc(entry.owner), token: lc(entry.token) };
    this.items.set(e.id, e);
    const d = this.deviceSums(e.device);
    d.spend += e.spend;
    d.count += 1;
    if (e.nonce !== undefined) d.nonces.set(e.nonce, e.id);
    const ok = `${e.owner}:${e.token}`;
    this.owners.set(ok, (this.owners.get(ok) ?? 0n) + e.spend);
    let ids = this.byOwner.get(e.owner);
    if (!ids) {
      ids = new Set();
      this.byOwner.set(e.owner, ids);
    }
    ids.add(e.id);
    if (e.tab) {
      const t = this.tabSums(e.tab);
      if (e.inFlight) t.inFlight.add(e.id);
      else {
        // Two accepted vouchers of one tab happen only transiently (one came back from a failed
        // batch while a newer one waited): the newer is the one a batch takes and a successor replaces.
        const current = t.accepted ? this.items.get(t.accepted) : undefined;
        if (!current || (current.cumulative ?? 0n) < (e.cumulative ?? 0n)) t.accepted = e.id;
      }
    }
  }

  /** The item settled, was rejected or superseded: its reservation ends. */
  remove(id: Hex): PendingEntry | undefined {
    const e = this.items.get(id);
    if (!e) return undefined;
    this.items.delete(id);
    const d = this.deviceSums(e.device);
    d.spend -= e.spend;
    d.count -= 1;
    if (e.nonce !== undefined && d.nonces.get(e.nonce) === id) d.nonces.delete(e.nonce);
    if (d.count === 0) this.devices.delete(e.device);
    const ok = `${e.owner}:${e.token}`;
    const left = (this.owners.get(ok) ?? 0n) - e.spend;
    if (left === 0n) this.owners.delete(ok);
    else this.owners.set(ok, left);
    const ids = this.byOwner.get(e.owner);
    ids?.delete(id);
    if (ids?.size === 0) this.byOwner.delete(e.owner);
    if (e.tab) {
      const t = this.tabSums(e.tab);
      if (t.accepted === id) t.accepted = undefined;
      t.inFlight.delete(id);
      if (!t.accepted && t.inFlight.size === 0) this.tabs.delete(e.tab);
    }
    return e;
  }

  /** The item went into a batch (true) or came back out of one (false). */
  setInFlight(id: Hex, inFlight: boolean): void {
    const e = this.items.get(id);
    if (!e || e.inFlight === inFlight) return;
    e.inFlight = inFlight;
    if (e.tab) {
      const t = this.tabSums(e.tab);
      if (inFlight) {
        if (t.accepted === id) t.accepted = undefined;
        t.inFlight.add(id);
      } else {
        t.inFlight.delete(id);
        // A voucher back from a failed batch: a newer accepted one already supersedes it.
        if (!t.accepted) t.accepted = id;
      }
    }
  }

  /**
   * A voucher that will not settle (skipped on chain, or superseded after a failed batch) hands its
   * increment to the tab's accepted successor, which was reserved as paying only what it adds on
   * top of it. Call before removing it.
   */
  handOver(id: Hex): void {
    const e = this.items.get(id);
    if (!e?.tab) return;
    const next = this.tab(e.tab).accepted;
    if (!next || next.id === id || (next.cumulative ?? 0n) <= (e.cumulative ?? 0n)) return;
    this.remove(next.id);
    this.add({ ...next, spend: next.spend + e.spend - e.fee });
  }

  /** Spend of every pending item of the device. */
  deviceSpend(device: string): bigint {
    return this.devices.get(lc(device))?.spend ?? 0n;
  }

  ownerSpend(owner: string, token: string): bigint {
    return this.owners.get(`${lc(owner)}:${lc(token)}`) ?? 0n;
  }

  /** The pending payment with this nonce, if any. */
  nonceHolder(device: string, nonce: bigint): Hex | undefined {
    return this.devices.get(lc(device))?.nonces.get(nonce);
  }

  /** Highest pending payment nonce of the device. */
  maxNonce(device: string): bigint | undefined {
    const nonces = this.devices.get(lc(device))?.nonces;
    if (!nonces || nonces.size === 0) return undefined;
    let max = -1n;
    for (const n of nonces.keys()) if (n > max) max = n;
    return max;
  }

  /** The tab's accepted (replaceable) voucher and the highest cumulative among its in-flight ones. */
  tab(key: string): { accepted?: PendingEntry; inFlightCumulative?: bigint } {
    const t = this.tabs.get(key);
    if (!t) return {};
    let top: bigint | undefined;
    for (const id of t.inFlight) {
      const c = this.items.get(id)?.cumulative;
      if (c !== undefined && (top === undefined || c > top)) top = c;
    }
    return { accepted: t.accepted ? this.items.get(t.accepted) : undefined, inFlightCumulative: top };
  }

  /** Ids of the owner's pending entries. */
  idsOf(owner: string): Hex[] {
    return [...(this.byOwner.get(lc(owner)) ?? [])];
  }

  /** Every pending entry (for metrics and tests). */
  entries(): IterableIterator<PendingEntry> {
    return this.items.values();
  }

  private deviceSums(device: string): DeviceSums {
    let d = this.devices.get(device);
    if (!d) {
      d = { spend: 0n, nonces: new Map(), count: 0 };
      this.devices.set(device, d);
    }
    return d;
  }

  private tabSums(key: string): TabSums {
    let t = this.tabs.get(key);
    if (!t) {
      t = { inFlight: new Set() };
      this.tabs.set(key, t);
    }
    return t;
  }
}
