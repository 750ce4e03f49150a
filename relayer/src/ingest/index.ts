/**
 * Ingest: verify → admit (contract rules against chain state plus what is pending) → durable
 * write → answer. Takes decoded items, never HTTP requests, so HTTP, MQTT and HTTP-402 transports
 * all feed the same path. An item is answered `accepted` only after its row is committed.
 * Idempotent: an item is its EIP-712 digest and its signer (`itemId`); the same item again
 * (concurrently, or after a restart) gets the same id and its current status.
 */
import { type Address, type Hex, itemId } from "@machinepay/sdk";
import type { ChainClock } from "../chain/clock";
import type { ChainState } from "../chain/state";
import { crashPoint } from "../faults";
import {
  type ItemRow,
  type ItemStatus,
  type NewItem,
  type OwnerItems,
  type OwnerVersion,
  PENDING_ITEM_STATUSES,
  type Store,
  type WriteResult,
  type WriteSet,
} from "../store/types";
import { type PendingEntry, PendingLedger, tabKeyOf } from "./pending";
import { type Candidate, decide, gatherSnapshot, type Snapshot, type Window } from "./rules";
import { fastKeccak256, type Verifier, type VerifyItem } from "./verify";

export type ItemStatusName = "accepted" | "batched" | "submitted" | "settled" | "rejected" | "superseded" | "stale";

/** One item's answer. `id` is absent only when the item could not be hashed (malformed fields). */
export type IngestResult = {
  id?: Hex;
  kind: "payment" | "voucher";
  status: ItemStatusName;
  /** When rejected or stale: a contract reason name or a relayer code, and what to do. */
  reason?: string;
  message?: string;
  field?: string;
  /** Stale vouchers: the tab's newest cumulative (decimal string). */
  newest?: string;
  /** True when the answer is about an item the relayer already had. */
  duplicate?: boolean;
};

export class IngestUnavailableError extends Error {
  readonly code = "STORE_UNAVAILABLE";
  constructor(cause: unknown) {
    super(
      `the relayer could not store the items durably (${(cause as Error)?.message ?? cause}); nothing was accepted, retry`,
    );
    this.name = "IngestUnavailableError";
  }
}

export type IngestOptions = {
  verifier: Verifier;
  chain: ChainState;
  store: Store;
  clock: ChainClock;
  /** Seconds an accepted item may take to land; deadlines closer than this are refused. */
  deadlineMarginSeconds: number;
  /** Fee the relayer charges per item (capped at each item's maxFee). */
  fee: bigint;
  /** Called for each decision (metrics). */
  onDecision?: (kind: "payment" | "voucher", status: ItemStatusName, reason?: string) => void;
  /** Called when an admission is decided again (another relayer changed its owners meanwhile). */
  onRetry?: () => void;
  /** Seconds one admission pass spent reading chain state, and deciding and committing its writes (metrics). */
  onStage?: (stage: "chain_read" | "decide_and_store", seconds: number) => void;
};

const statusOf = (row: ItemRow): ItemStatusName => row.status;

/** Admission passes one request may take (later ones hold the owners' locks: never stale, read again only if items left the ledger meanwhile). */
const MAX_ADMISSION_ROUNDS = 8;

/** The answer for an item the store already holds. */
const answerOf = (id: Hex, row: ItemRow): IngestResult => ({
  id,
  kind: row.kind,
  status: statusOf(row),
  reason: row.reason ?? undefined,
  message: row.message ?? undefined,
  duplicate: true,
});

/** One admission pass: what it reserved (to write or undo) and what it refused. */
type Pass = {
  accepted: { entry: PendingEntry; row: NewItem; supersedes?: PendingEntry }[];
  refused: Map<Hex, IngestResult>;
};

/** A verified item this request brings for the first time. */
type Fresh = { index: number; id: Hex; item: VerifyItem; r: Hex; vs: Hex; device: Address };

export class Ingest {
  readonly ledger = new PendingLedger();
  private readonly inflight = new Map<Hex, Promise<IngestResult>>();
  /** Bumped whenever the ledger stops counting items that landed (see `finished`). */
  private releases = 0;
  /** Each owner's store version the ledger reflects (stores shared by several relayers keep them). */
  private readonly versions = new Map<string, number>();
  /** Ids whose guarded write is in flight: a re-read of their owner keeps them. */
  private readonly writing = new Set<Hex>();
  /** One set per re-read under way: ids whose write ended meanwhile (the read may predate them). */
  private readonly reloading = new Set<Set<Hex>>();
  /** One set per re-read under way: ids that finished here meanwhile (the read may show them pending). */
  private readonly finishing = new Set<Set<Hex>>();
  /** Cursor of `ownerChanges`; null where the store keeps no versions. */
  private changes: string | null = null;

  private constructor(private readonly o: IngestOptions) {}

  /** Build ingest with its pending ledger rebuilt from the store. */
  static async open(o: IngestOptions): Promise<Ingest> {
    const ingest = new Ingest(o);
    // This process's own changes (its batches, its admissions) need no re-read: the ledger follows
    // them (batched, requeued, finished), and where it lags it counts more, never less. A version
    // that moved by one from the one the ledger holds was moved by us alone.
    o.store.onOwnVersions((bumped) => {
      for (const b of bumped) if (ingest.versions.get(b.owner.toLowerCase()) === b.version - 1) ingest.seenVersion(b);
    });
    // Versions first, then the items: the items are at least as new as the versions say.
    const changes = await o.store.ownerChanges(null);
    for (const v of changes.owners) ingest.seenVersion(v);
    ingest.changes = changes.next;
    for (const row of await o.store.pendingItems()) ingest.ledger.add(entryOf(row, row.status !== "accepted"));
    return ingest;
  }

  /** Verify, admit and durably store `items`; results in the same order. */
  async submit(items: readonly VerifyItem[]): Promise<IngestResult[]> {
    const results: (IngestResult | Promise<IngestResult>)[] = new Array(items.length);
    /** For an item repeated within this request: the index of its first occurrence. */
    const repeatOf: (number | undefined)[] = new Array(items.length);
    const fresh: Fresh[] = [];
    const first = new Map<Hex, number>();
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      const kind = item?.kind === "voucher" ? "voucher" : "payment";
      const v = this.o.verifier.verify(item);
      if (!v.ok) {
        results[i] = { kind, status: "rejected", reason: v.code, message: v.message, field: v.field };
        this.o.onDecision?.(kind, "rejected", v.code);
        continue;
      }
      // The same message signed by two devices is two items: the id covers the signer too.
      const id = itemId(v.digest, v.device, fastKeccak256);
      const earlier = first.get(id);
      const running = this.inflight.get(id);
      if (earlier !== undefined) repeatOf[i] = earlier;
      else if (running) {
        const p = running.then((r) => ({ ...r, duplicate: true }));
        p.catch(() => {}); // awaited below, unless this request fails first
        results[i] = p;
      } else {
        first.set(id, i);
        fresh.push({ index: i, id, item, r: v.r, vs: v.vs, device: v.device });
      }
    }
    if (fresh.length > 0) {
      // Registered before the first await: a concurrent request with the same item waits for this one.
      const work = this.admit(fresh);
      for (const f of fresh) {
        const p = work.then((r) => r.get(f.id)!);
        // Its failure reaches this caller through `await work`, and a concurrent duplicate through
        // its own then(): never an unhandled rejection (which would stop the process).
        p.catch(() => {});
        this.inflight.set(f.id, p);
        results[f.index] = p;
      }
      try {
        await work;
      } finally {
        for (const f of fresh) this.inflight.delete(f.id);
      }
    }
    const out = await Promise.all(results.map((r, i) => (repeatOf[i] === undefined ? r : undefined)));
    return out.map((r, i) => (repeatOf[i] === undefined ? r! : { ...out[repeatOf[i]!]!, duplicate: true }));
  }

  /**
   * No read first: an item the store holds already is refused by the rules (its nonce is used, its
   * voucher stale, or the ledger holds it still) or, where they accept it again, ignored by the
   * store's insert, which answers with the stored row. Only the refused are looked up, so an item
   * sent again gets its stored status, not the verdict on a second copy.
   */
  private async admit(fresh: Fresh[]): Promise<Map<Hex, IngestResult>> {
    const out = new Map<Hex, IngestResult>();
    let todo = fresh.map((f) => ({ f, c: candidateOf(f.item, f.device, this.o.fee) }));
    const refused: Hex[] = [];
    // A relayer sharing its store with others may find, at commit, that one of them admitted or
    // settled for the same owner since its ledger last read that owner: it re-reads and decides again.
    for (let round = 1; todo.length > 0; round++) {
      // First optimistic; once another relayer got in between, under the owners' locks (which
      // cannot be stale: two relayers paying for one busy owner then take turns, never livelock).
      const { again } = await this.decideAndWrite(todo, out, refused, round > 1);
      if (!again) break;
      if (round >= MAX_ADMISSION_ROUNDS) {
        throw new IngestUnavailableError(
          new Error(`the owners' pending items kept changing under ${round} admissions by other relayers`),
        );
      }
      this.o.onRetry?.();
      todo = todo.filter(({ f }) => !out.has(f.id));
    }
    if (refused.length > 0) {
      const known = await this.o.store.getItems(refused);
      refused.forEach((id, i) => {
        const row = known[i];
        if (row) out.set(id, answerOf(id, row));
        else {
          const r = out.get(id)!;
          this.o.onDecision?.(r.kind, r.status, r.reason);
        }
      });
    }
    return out;
  }

  /**
   * One pass: snapshots, decisions, one write. Optimistic (`locked: false`): the write is guarded
   * by the owner versions the ledger holds, and the owners found stale are returned (nothing was
   * written). Locked: the store holds the owners' locks while it hands over their pending items
   * (merged into the ledger: nothing leaves it before the commit, so a settlement the snapshots
   * predate is counted, never missed) and while the decisions run; nothing can be stale.
   */
  private async decideAndWrite(
    todo: { f: Fresh; c: Candidate }[],
    out: Map<Hex, IngestResult>,
    refused: Hex[],
    locked: boolean,
  ): Promise<{ stale: OwnerVersion[]; again: boolean }> {
    // Reads first (cached, concurrent), then every decision in one synchronous pass. If items were
    // released while we read, a snapshot may predate their batch while the ledger no longer counts
    // them (counting neither): read again (the batcher refreshed the cache before releasing).
    let snapshots: Snapshot[];
    let generation: number;
    const readStarted = performance.now();
    for (;;) {
      generation = this.releases;
      snapshots = await Promise.all(todo.map(({ c }) => gatherSnapshot(this.o.chain, c)));
      if (generation === this.releases) break;
    }
    this.o.onStage?.("chain_read", (performance.now() - readStarted) / 1000);
    let again = false;
    const now = this.o.clock.now();
    const margin = BigInt(this.o.deadlineMarginSeconds);
    const window = { now, landBy: now + margin, deadlineMargin: margin };
    let pass: Pass = { accepted: [], refused: new Map() };
    const decideNow = (guarded: boolean): WriteSet => {
      this.undo(pass); // a transaction retried whole decides again
      if (generation !== this.releases) {
        // Items left the ledger since the snapshots were read (under the lock, decisions come
        // later than the reads): they might count nowhere. Decide nothing; read again.
        again = true;
        pass = { accepted: [], refused: new Map() };
        return {};
      }
      again = false;
      pass = this.decidePass(todo, snapshots, window);
      for (const a of pass.accepted) this.writing.add(a.entry.id);
      return this.writeSetOf(pass.accepted, guarded);
    };
    let result: WriteResult | undefined;
    let leaving: Hex[] = [];
    const writeStarted = performance.now();
    try {
      if (!locked) {
        const set = decideNow(true);
        if (pass.accepted.length > 0) result = await this.o.store.write(set);
      } else {
        const owners = [...new Set(snapshots.flatMap((s) => (s.policy ? [s.policy.owner.toLowerCase() as Hex] : [])))];
        result = await this.o.store.admitLocked(
          // What changed since the versions the ledger reflects (the store reads only that).
          owners.map((owner) => ({ owner, version: this.versions.get(owner) ?? null })),
          (read) => {
            leaving = this.merge(owners, read);
          },
          () => decideNow(false),
        );
      }
    } catch (e) {
      this.undo(pass);
      throw new IngestUnavailableError(e);
    } finally {
      for (const a of pass.accepted) {
        this.writing.delete(a.entry.id);
        for (const r of this.reloading) r.add(a.entry.id);
      }
    }
    if (result) this.o.onStage?.("decide_and_store", (performance.now() - writeStarted) / 1000);
    if (result && result.stale.length > 0) {
      // Nothing was written: the decisions are void, the caller decides again under the locks.
      this.undo(pass);
      return { stale: result.stale, again: true };
    }
    if (result && pass.accepted.length > 0) crashPoint("after-write");
    for (const o of result?.owners ?? []) this.seenVersion(o);
    // Items the locked read showed settled or rejected elsewhere leave now (their settlement leaves
    // the chain cache too, so the next snapshot sees it).
    if (leaving.length > 0) {
      for (const id of leaving) {
        if (this.writing.has(id)) continue;
        const e = this.ledger.remove(id);
        if (!e) continue;
        this.o.chain.invalidateDevice?.(e.device as Address);
        this.o.chain.invalidateOwner?.(e.owner as Address);
      }
      this.releases++;
    }
    // Answered once `admit` knows whether the store holds them already (then its row answers).
    for (const [id, r] of pass.refused) {
      out.set(id, r);
      refused.push(id);
    }
    if (again) return { stale: [], again };
    if (!result) return { stale: [], again: false };
    const { accepted } = pass;
    // A voucher the batcher took between our decision and this commit was not superseded: it is
    // in flight, and its successor pays only what it adds on top of it.
    for (const u of result.updates) {
      if (u.applied || (u.status !== "batched" && u.status !== "submitted")) continue;
      const a = accepted.find((x) => x.supersedes?.id === u.id)!;
      this.ledger.add({ ...a.supersedes!, inFlight: true });
      this.ledger.remove(a.entry.id);
      const fee = a.row.fee;
      this.ledger.add({ ...a.entry, spend: a.row.amount - a.supersedes!.cumulative! + fee });
    }
    result.items.forEach((w, i) => {
      const a = accepted[i];
      if (!w.inserted) {
        // Stored before, by another relayer (and no longer pending there): its row is the answer.
        this.ledger.remove(a.entry.id);
        out.set(a.entry.id, answerOf(a.entry.id, w.item));
        return;
      }
      out.set(a.entry.id, { id: a.entry.id, kind: a.entry.kind, status: "accepted" });
      this.o.onDecision?.(a.entry.kind, "accepted");
    });
    return { stale: [], again: false };
  }

  /** Every decision of a pass, in one synchronous run over the ledger (reserving what it accepts). */
  private decidePass(todo: { f: Fresh; c: Candidate }[], snapshots: Snapshot[], window: Window): Pass {
    const accepted: Pass["accepted"] = [];
    const refused = new Map<Hex, IngestResult>();
    todo.forEach(({ f, c }, i) => {
      if (this.ledger.has(f.id)) {
        // Another relayer admitted this very item; our re-read of its owner brought it in.
        refused.set(f.id, { id: f.id, kind: c.kind, status: "accepted", duplicate: true });
        return;
      }
      const verdict = decide(c, snapshots[i], this.ledger, window);
      if (!verdict.ok) {
        const stale = verdict.reason === "VoucherStale";
        refused.set(f.id, {
          id: f.id,
          kind: c.kind,
          status: stale ? "stale" : "rejected",
          reason: verdict.reason,
          message: verdict.message,
          newest: verdict.newest?.toString(),
        });
        return;
      }
      const entry: PendingEntry = {
        id: f.id,
        kind: c.kind,
        device: c.device,
        owner: verdict.owner,
        token: c.token,
        spend: verdict.spend,
        nonce: c.nonce,
        tab: c.kind === "voucher" ? tabKeyOf(c.device, c.payee, c.token, c.tabId!) : undefined,
        cumulative: c.kind === "voucher" ? c.amount : undefined,
        inFlight: false,
        acceptedAt: Date.now(),
        deadline: c.deadline,
        fee: c.fee,
      };
      if (verdict.supersedes) this.ledger.remove(verdict.supersedes.id);
      this.ledger.add(entry);
      accepted.push({
        entry,
        row: rowOf(f, c, verdict.owner, verdict.policyId, verdict.spend),
        supersedes: verdict.supersedes,
      });
    });
    return { accepted, refused };
  }

  /** Takes a pass's reservations back out of the ledger. */
  private undo(pass: Pass): void {
    for (const a of [...pass.accepted].reverse()) {
      this.ledger.remove(a.entry.id);
      if (a.supersedes && !this.ledger.has(a.supersedes.id)) this.ledger.add(a.supersedes);
    }
    pass.accepted = [];
  }

  private writeSetOf(accepted: Pass["accepted"], guarded: boolean): WriteSet {
    const owners = [...new Set(accepted.map((a) => a.row.owner.toLowerCase() as Hex))];
    return {
      items: accepted.map((a) => a.row),
      tabs: accepted
        .filter((a) => a.entry.kind === "voucher")
        .map((a) => ({
          device: a.row.device,
          payee: a.row.payee,
          token: a.row.token,
          tabId: a.row.tabId!,
          newestId: a.row.id,
          newestCumulative: a.row.amount,
        })),
      updates: accepted
        .filter((a) => a.supersedes)
        .map((a) => ({ id: a.supersedes!.id, status: "superseded" as const })),
      guard: guarded ? owners.map((owner) => ({ owner, version: this.versions.get(owner) ?? null })) : undefined,
    };
  }

  /**
   * Under the owners' locks: adds their pending items the ledger lacks, and marks batched ones in
   * flight; returns the ids it holds for them that the store no longer has pending (they leave
   * after the commit, so this pass still counts them). An owner read whole: every id the ledger
   * holds that is not among its pending rows; an owner read since a version: the ids among its
   * changed rows that left pending.
   */
  private merge(owners: readonly Hex[], read: OwnerItems): Hex[] {
    const pending = new Set<Hex>();
    const leaving: Hex[] = [];
    for (const row of read.rows) {
      if (isPending(row.status)) {
        pending.add(row.id);
        if (!this.ledger.has(row.id)) this.ledger.add(entryOf(row, row.status !== "accepted"));
        else this.ledger.setInFlight(row.id, row.status !== "accepted");
      } else if (this.ledger.has(row.id) && !this.writing.has(row.id)) {
        leaving.push(row.id);
      }
    }
    for (const o of owners) {
      if (read.since.has(o.toLowerCase())) continue;
      for (const id of this.ledger.idsOf(o)) if (!pending.has(id) && !this.writing.has(id)) leaving.push(id);
    }
    return leaving;
  }

  private seenVersion(o: OwnerVersion): void {
    const key = o.owner.toLowerCase();
    if ((this.versions.get(key) ?? -1) < o.version) this.versions.set(key, o.version);
  }

  /**
   * Brings what the ledger holds for these owners up to the store: for an owner whose version the
   * ledger knows, only the items changed since (the store stamps each row with the version that
   * last changed it); for another, all its pending items replace what the ledger holds. Entries of
   * writes still in flight stay; an item that finished here while the read was under way is not
   * brought back (the read may predate its end). Entries that left (settled or rejected by another
   * relayer) also leave the chain cache, so the next snapshot sees their settlement: never counted
   * by neither.
   */
  private async reloadOwners(owners: readonly OwnerVersion[]): Promise<void> {
    if (owners.length === 0) return;
    // Entries whose write is in flight now, or ends while we read, may be missing from what we read.
    const protect = new Set(this.writing);
    const gone = new Set<Hex>();
    this.reloading.add(protect);
    this.finishing.add(gone);
    let read: OwnerItems;
    try {
      read = await this.o.store.ownerItems(
        owners.map((o) => ({ owner: o.owner, version: this.versions.get(o.owner.toLowerCase()) ?? null })),
      );
    } finally {
      this.reloading.delete(protect);
      this.finishing.delete(gone);
    }
    const byOwner = new Map<string, ItemRow[]>();
    for (const row of read.rows) {
      const k = row.owner.toLowerCase();
      const list = byOwner.get(k);
      if (list) list.push(row);
      else byOwner.set(k, [row]);
    }
    let dropped = 0;
    const drop = (id: Hex) => {
      if (this.writing.has(id) || protect.has(id)) return;
      const e = this.ledger.remove(id);
      if (!e) return;
      dropped++;
      this.o.chain.invalidateDevice?.(e.device as Address);
    };
    for (const o of owners) {
      const key = o.owner.toLowerCase();
      const rows = byOwner.get(key) ?? [];
      if (!read.since.has(key)) {
        const keep = new Set(rows.map((r) => r.id));
        for (const id of this.ledger.idsOf(o.owner)) if (!keep.has(id)) drop(id);
      }
      for (const row of rows) {
        if (!isPending(row.status)) drop(row.id);
        else if (this.ledger.has(row.id)) this.ledger.setInFlight(row.id, row.status !== "accepted");
        else if (!gone.has(row.id)) this.ledger.add(entryOf(row, row.status !== "accepted"));
      }
      this.o.chain.invalidateOwner?.(o.owner);
      this.seenVersion(o);
    }
    if (dropped > 0) this.releases++;
  }

  /**
   * Several relayers on one store: re-read the owners others changed since the last call (their
   * admissions, batches and settlements), so the ledger (and the batcher that reads it) keeps up.
   * A no-op on a store that one process owns. Returns how many owners were re-read.
   */
  async syncOwners(): Promise<number> {
    if (this.changes === null) return 0;
    const ch = await this.o.store.ownerChanges(this.changes);
    const stale = ch.owners.filter((o) => this.versions.get(o.owner.toLowerCase()) !== o.version);
    for (let i = 0; i < stale.length; i += 1000) await this.reloadOwners(stale.slice(i, i + 1000));
    this.changes = ch.next;
    return stale.length;
  }

  // --- what the batcher reports, so the ledger follows the store ------------------------------

  /** Items went into a batch. */
  batched(ids: readonly Hex[]): void {
    for (const id of ids) this.ledger.setInFlight(id, true);
  }

  /**
   * Items came back to `accepted` (a batch reverted or was dropped). A voucher whose tab has a newer
   * accepted voucher meanwhile is superseded now, so a tab never has two to batch.
   */
  async requeued(ids: readonly Hex[]): Promise<void> {
    const superseded: Hex[] = [];
    for (const id of ids) {
      this.ledger.setInFlight(id, false);
      const e = this.ledger.get(id);
      if (e?.tab && this.ledger.tab(e.tab).accepted?.id !== id) superseded.push(id);
    }
    if (superseded.length === 0) return;
    await this.o.store.write({ updates: superseded.map((id) => ({ id, status: "superseded" as const })) });
    for (const id of superseded) {
      this.ledger.handOver(id);
      this.ledger.remove(id);
      for (const g of this.finishing) g.add(id);
    }
  }

  /**
   * Items settled or were rejected on chain (or by the batcher): their reservations end. `rejected`
   * names those that did not settle (a skipped voucher's successor then pays its increment too).
   */
  finished(ids: readonly Hex[], rejected: ReadonlySet<Hex> = new Set()): void {
    if (ids.length > 0) this.releases++;
    for (const id of ids) {
      if (rejected.has(id)) this.ledger.handOver(id);
      this.ledger.remove(id);
      for (const g of this.finishing) g.add(id);
    }
  }
}

const PENDING = new Set<ItemStatus>(PENDING_ITEM_STATUSES);
const isPending = (status: ItemStatus) => PENDING.has(status);

function candidateOf(item: VerifyItem, device: Address, relayerFee: bigint): Candidate {
  if (item.kind === "payment") {
    const p = item.payment;
    return {
      kind: "payment",
      device,
      payee: p.payee.toLowerCase() as Address,
      token: p.token.toLowerCase() as Address,
      amount: p.amount,
      nonce: p.nonce,
      deadline: p.deadline,
      maxFee: p.maxFee,
      fee: relayerFee < p.maxFee ? relayerFee : p.maxFee,
    };
  }
  const v = item.voucher;
  return {
    kind: "voucher",
    device,
    payee: v.payee.toLowerCase() as Address,
    token: v.token.toLowerCase() as Address,
    amount: v.cumulative,
    tabId: v.tabId,
    deadline: v.deadline,
    maxFee: v.maxFee,
    fee: relayerFee < v.maxFee ? relayerFee : v.maxFee,
  };
}

function rowOf(
  f: { id: Hex; item: VerifyItem; r: Hex; vs: Hex },
  c: Candidate,
  owner: Address,
  policyId: number,
  spend: bigint,
): NewItem {
  return {
    id: f.id,
    kind: c.kind,
    device: c.device,
    owner,
    policyId,
    payee: c.payee,
    token: c.token,
    amount: c.amount,
    nonce: c.kind === "payment" ? c.nonce! : null,
    tabId: c.kind === "voucher" ? c.tabId! : null,
    deadline: Number(c.deadline),
    maxFee: c.maxFee,
    fee: c.fee,
    ref: f.item.kind === "payment" ? (f.item.payment.ref.toLowerCase() as Hex) : null,
    signature: f.item.signature.toLowerCase() as Hex,
    r: f.r,
    vs: f.vs,
    spend,
  };
}

/** A stored pending item as the ledger counts it. */
export function entryOf(row: ItemRow, inFlight: boolean): PendingEntry {
  return {
    id: row.id,
    kind: row.kind,
    device: row.device,
    owner: row.owner,
    token: row.token,
    spend: row.spend,
    nonce: row.nonce ?? undefined,
    tab: row.kind === "voucher" ? tabKeyOf(row.device, row.payee, row.token, row.tabId!) : undefined,
    cumulative: row.kind === "voucher" ? row.amount : undefined,
    inFlight,
    acceptedAt: row.acceptedAt,
    deadline: BigInt(row.deadline),
    fee: row.fee,
  };
}
