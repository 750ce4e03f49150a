/**
 * Batcher: turns accepted items into settlement transactions and follows each to its final state.
 * A loop driven by a timer over the durable tables (never an in-memory job queue a crash forgets):
 *
 *   1. follow the chain: new blocks set the clock, MachinePay's events invalidate cached state,
 *      a changed block hash (reorg) invalidates everything;
 *   2. watch open batches: receipts → mined (outcomes from events) → confirmed at depth; a block
 *      that left the chain puts its batch back to `sent`; a transaction stuck past a timeout is
 *      replaced at the same nonce with higher fees; a reverted batch's items go back to the queue;
 *   3. build new batches per kind and token, closed by count, age, gas, bytes and deadlines;
 *      preview on `pending` drops what would be skipped; the batch row, its nonce and the signed
 *      transaction are written before the broadcast.
 *
 * Nonces: never a free-running counter. A batch's nonce is fixed when its row is written, as
 * max(chain nonce, highest open batch + 1); replacements keep it; on "nonce too low" the receipts
 * of every attempt are asked for before anything is decided.
 */

import { hostname } from "node:os";
import {
  decodeMachinePayLog,
  type Hex,
  machinePayAbi,
  NONCE_WINDOW,
  packPayment,
  packVoucher,
  REASONS,
} from "@machinepay/sdk";
import { type Address, BaseError, getContractError, type PublicClient, toEventSelector, toHex } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import type { ChainClock } from "../chain/clock";
import { checkOwnerMessage, fromStoredBody, type OwnerMessage, ownerMessageCalldata } from "../chain/owner-messages";
import type { BatchReceipt, Rpc } from "../chain/rpc";
import { transactionHash } from "../chain/sender";
import type { CachedChainState } from "../chain/state";
import { crashPoint } from "../faults";
import { entryOf, type Ingest } from "../ingest";
import { tabKeyOf } from "../ingest/pending";
import { StoreError } from "../store/errors";
import type {
  BatchDetail,
  BatchKind,
  DeviceEvent,
  ItemKind,
  ItemOutcome,
  ItemRow,
  OwnerMessageKind,
  OwnerMessageRow,
  Store,
} from "../store/types";
import { batchCalldata, previewReasons } from "./calldata";

export type BatcherConfig = {
  maxItems: number;
  maxAgeMs: number;
  maxBytes: number;
  maxGas: number;
  pollMs: number;
  /** Open (unconfirmed) batches at most; their nonces follow each other. */
  maxInFlight: number;
  confirmations: number;
  replaceAfterMs: number;
  feeBumpPercent: number;
  tabs: { threshold: bigint; maxAgeMs: number; beforeDeadlineSeconds: number };
  /** Seconds before an item's deadline at which it is batched whatever its batch's age. */
  deadlineMarginSeconds: number;
};

export type BatcherEvents = {
  batchCreated?(batch: { id: number; kind: ItemKind; size: number; nonce: number }): void;
  batchMined?(batch: { id: number; size: number; gasUsed: bigint; settled: number; skipped: number }): void;
  ownerMessage?(message: { id: Hex; kind: OwnerMessageKind; status: "submitted" | "failed"; error?: string }): void;
  misprediction?(reason: string, count: number): void;
  log?(level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>): void;
};

export type BatcherOptions = {
  store: Store;
  rpc: Rpc;
  client: PublicClient;
  state: CachedChainState;
  clock: ChainClock;
  ingest: Pick<Ingest, "batched" | "requeued" | "finished" | "ledger" | "syncOwners">;
  sender: PrivateKeyAccount;
  contract: Address;
  chainId: number;
  feeRecipient: Address;
  deploymentBlock: number;
  config: BatcherConfig;
  events?: BatcherEvents;
};

/** Gas the model allows per item and per batch: checked by eth_call at the gas limit before sending. */
const GAS_BASE = 80_000;
const GAS_PER = { payment: 30_000, voucher: 45_000 } as const;
/** calldata bytes: selector + token + offset + feeRecipient + length, then 5 words per item. */
const BYTES_FIXED = 4 + 32 * 4 + 200;
const BYTES_PER_ITEM = 160;
const REORG_REWIND = 64;
/** Blocks per eth_getLogs call at most (fewer while blocks are busy). */
const MAX_LOG_SPAN = 2_000;
/** The events cursor of one sender's instance (relayers sharing a store each read every event). */
const eventsCursor = (sender: Hex) => `events:${sender.toLowerCase()}`;
/** The cursor's name before instances shared stores: read once, where no per-sender cursor exists yet. */
const LEGACY_EVENTS_CURSOR = "events";
/** How long an instance's heartbeat and its device claims last without being renewed. */
export const INSTANCE_LEASE_MS = 15_000;

export class Batcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Passes (the loop's and settleNow's) run one at a time: one writer of batches and nonces. */
  private lock: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private force = false;
  /** Mined batches whose items wait for the cache refresh before the ledger lets them go. */
  private readonly releasing = new Set<Promise<void>>();
  /** Tabs whose TabClosing was seen: their pending voucher is due at once (it settles only until closesAt). */
  private readonly closingTabs = new Set<string>();
  /** Last chain head seen, and the sender's balance (readiness). */
  head = 0;
  senderBalance: bigint | undefined;
  lastError: string | undefined;

  /** Senders whose instances are alive (from the last heartbeat), and when it was. */
  private live = new Set<string>();
  private lastBeat = Number.NEGATIVE_INFINITY;
  /** Blocks the next eth_getLogs call asks for. */
  private logSpan = MAX_LOG_SPAN;
  /** This process, as heartbeats name it: host, pid, start time. */
  private readonly holder = `${hostname()}:${process.pid}:${Date.now()}`;

  constructor(private readonly o: BatcherOptions) {}

  start(): void {
    const loop = async () => {
      if (this.stopping) return;
      this.running = this.tick().catch((e) => {
        this.lastError = (e as Error).message;
        this.log("error", "batcher tick failed; retrying", { error: (e as Error).message });
      });
      await this.running;
      if (!this.stopping) this.timer = setTimeout(loop, this.o.config.pollMs);
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Stop building batches; wait for the current pass, then (up to `drainMs`) for open batches to be mined. */
  async stop(drainMs = 10_000): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    const until = Date.now() + drainMs;
    while (Date.now() < until) {
      const open = (await this.openBatches()).filter((b) => b.sender === this.me);
      if (open.every((b) => b.status === "mined")) break;
      await this.exclusive(async () => {
        await this.followChain(open);
        await this.watch(open);
      });
      await new Promise((r) => setTimeout(r, this.o.config.pollMs));
    }
    // Mined batches still releasing their items (a cache refresh, then a store read): let them end
    // before the store closes, within what is left of the drain (the ledger is rebuilt at start anyway).
    if (this.releasing.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.releasing]),
        new Promise((r) => (timer = setTimeout(r, Math.max(0, until - Date.now())))),
      ]);
      clearTimeout(timer);
    }
  }

  /** Build batches now from everything accepted, whatever their age (admin `POST /v1/settle`). */
  async settleNow(): Promise<{ batches: number[] }> {
    return this.exclusive(async () => {
      this.force = true;
      try {
        await this.followChain(await this.openBatches());
        return { batches: await this.build() };
      } finally {
        this.force = false;
      }
    });
  }

  /** One pass of the loop (exposed for tests). */
  tick(): Promise<void> {
    return this.exclusive(async () => {
      await this.beat();
      await this.o.ingest.syncOwners();
      const open = await this.openBatches();
      await this.followChain(open);
      await this.watch(open);
      if (!this.stopping) await this.build();
    });
  }

  /**
   * This instance's heartbeat (throws CONFLICT if another live process sends with the same key).
   * Relayers sharing a store learn from it whose open batches are theirs to follow: a batch of a
   * sender whose instance stopped is watched by the others, to its receipt, with its own bytes.
   */
  async beat(): Promise<void> {
    // A third of the lease apart: renewed well before it runs out, without a commit every pass.
    if (Date.now() - this.lastBeat < INSTANCE_LEASE_MS / 3) return;
    const { live } = await this.o.store.heartbeat({
      sender: this.me,
      holder: this.holder,
      leaseMs: INSTANCE_LEASE_MS,
    });
    this.live = new Set(live.map((x) => x.toLowerCase()));
    this.lastBeat = Date.now();
  }

  /**
   * Open batches this instance follows: its own, and those of senders no live instance holds whose
   * row has not changed for a lease (the live set is a heartbeat old: an instance that started since
   * is not in it yet, but its batches are younger than that).
   */
  private async openBatches(): Promise<BatchDetail[]> {
    const now = Date.now();
    return (await this.o.store.openBatches()).filter(
      (b) => b.sender === this.me || (!this.live.has(b.sender) && now - b.updatedAt > INSTANCE_LEASE_MS),
    );
  }

  private get me(): Hex {
    return this.o.sender.address.toLowerCase() as Hex;
  }

  /**
   * After a restart: items of batches already mined are on chain, so the ledger must not count
   * them; tabs of pending vouchers that started closing while we were down are due at once.
   */
  async recover(): Promise<void> {
    await this.beat();
    for (const b of await this.o.store.openBatches()) {
      if (b.status !== "mined") continue;
      const rows = await this.o.store.getItems(b.itemIds);
      const skipped = rows.filter((r) => r?.outcome === "rejected").map((r) => r!.id);
      this.o.ingest.finished(b.itemIds, new Set(skipped));
    }
    const tabs = new Set<string>();
    for (const e of this.o.ingest.ledger.entries()) if (e.tab) tabs.add(e.tab);
    for (const key of tabs) {
      const [device, payee, token, tabId] = key.split(":");
      const t = await this.o.state.tab(device as Address, payee as Address, token as Address, BigInt(tabId));
      if (t.closesAt !== 0n) this.closingTabs.add(key);
    }
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  // ---- 1. the chain ------------------------------------------------------------------------------

  /**
   * Settlement events of our own open batches' transactions are left to `mined`, which refreshes
   * exactly what they changed before the ledger lets the items go; every other event invalidates.
   */
  private async followChain(open: BatchDetail[]): Promise<void> {
    const { client, store, state, contract } = this.o;
    const ours = new Set(open.flatMap((b) => b.attempts.map((a) => a.hash.toLowerCase())));
    const block = await client.getBlock({ blockTag: "latest" });
    this.head = Number(block.number);
    this.o.clock.observe(block.timestamp);
    this.senderBalance = await client.getBalance({ address: this.o.sender.address });
    const name = eventsCursor(this.me);
    let cursor = (await store.getCursor(name)) ?? (await store.getCursor(LEGACY_EVENTS_CURSOR));
    if (cursor?.blockHash) {
      const seen = await client.getBlock({ blockNumber: BigInt(cursor.blockNumber) }).catch(() => undefined);
      if (!seen || seen.hash !== cursor.blockHash) {
        this.log("warn", "reorg: the events cursor's block left the chain; re-reading recent events", {
          block: cursor.blockNumber,
        });
        state.invalidateAll();
        const back = Math.max(this.o.deploymentBlock - 1, cursor.blockNumber - REORG_REWIND);
        await store.rewindDevices(Math.max(0, back));
        cursor = { blockNumber: back, blockHash: null };
      }
    }
    let from = (cursor?.blockNumber ?? this.o.deploymentBlock - 1) + 1;
    while (from <= this.head) {
      const to = Math.min(this.head, from + this.logSpan - 1);
      let logs: RawLog[];
      try {
        // The node's JSON as it is: viem's getLogs formats every log, and our own batches' blocks
        // hold hundreds of settlement events that are skipped right below.
        logs = (await client.request({
          method: "eth_getLogs",
          params: [{ address: contract, fromBlock: toHex(from), toBlock: toHex(to) }],
        })) as RawLog[];
      } catch (e) {
        // Busy blocks (thousands of settlement events) overflow a response or a node's range
        // limit: ask for fewer blocks at a time, down to one, before giving up this pass.
        if (this.logSpan === 1) throw e;
        this.logSpan = Math.max(1, Math.floor(this.logSpan / 4));
        continue;
      }
      if (this.logSpan < MAX_LOG_SPAN && logs.length < 1_000) this.logSpan = Math.min(MAX_LOG_SPAN, this.logSpan * 2);
      const end = to === this.head ? block : await client.getBlock({ blockNumber: BigInt(to) });
      // The registry of untouched devices takes every event that writes a device's word, our own
      // settlements too, in the transaction that moves the cursor. The cache forgets after that: a
      // read that misses it meanwhile must not find a device untouched that this range touched.
      const devices: DeviceEvent[] = [];
      for (const log of logs) {
        const d = deviceEventOf(log);
        if (d) devices.push(d);
      }
      await store.setCursor(
        name,
        { blockNumber: to, blockHash: end.hash },
        { from, events: devices, fromDeployment: from === this.o.deploymentBlock },
      );
      for (const log of logs) {
        if (log.transactionHash && ours.has(log.transactionHash.toLowerCase()) && SETTLEMENT_TOPICS.has(log.topics[0]!))
          continue;
        this.invalidateFor(log);
      }
      from = to + 1;
    }
  }

  private invalidateFor(log: { data: Hex; topics: Hex[] }): void {
    const e = decodeMachinePayLog(log as never);
    if (!e) return;
    const s = this.o.state;
    const a = (e as { args?: Record<string, unknown> }).args ?? (e as unknown as Record<string, unknown>);
    switch (e.eventName) {
      case "DeviceAssigned":
      case "DevicePausedSet":
      case "DeviceRevokedForever":
      case "PaymentSettled":
      case "VoucherSettled":
      case "TabClosing":
        if (e.eventName === "TabClosing") {
          this.closingTabs.add(tabKeyOf(a.device as string, a.payee as string, a.token as string, a.tabId as bigint));
        }
        s.invalidateDevice(a.device as Address);
        if (e.eventName === "PaymentSettled" || e.eventName === "VoucherSettled") s.invalidateBalances();
        break;
      case "PolicySet":
      case "PolicyPausedSet":
      case "PayeesSet":
        s.invalidatePolicy(Number(a.policyId));
        break;
      case "OwnerFrozen":
        s.invalidateOwner(a.owner as Address);
        break;
      case "Deposited":
      case "Withdrawn":
        s.invalidateOwner(a.account as Address);
        break;
      case "WithdrawalAnnounced":
      case "WithdrawalCancelled":
        s.invalidateOwner(a.owner as Address);
        break;
      case "BatchSettled":
        s.invalidateBalances(a.token as Address);
        break;
    }
  }

  // ---- 2. open batches ---------------------------------------------------------------------------

  private async watch(open: BatchDetail[]): Promise<void> {
    for (const batch of open) {
      try {
        if (batch.status === "mined") await this.confirm(batch);
        else await this.follow(batch);
      } catch (e) {
        this.log("warn", "could not follow a batch this pass; will retry", {
          batch: batch.id,
          error: (e as Error).message,
        });
      }
    }
  }

  /** A created or sent batch: find its receipt, or (re)broadcast, or replace it. */
  private async follow(batch: BatchDetail): Promise<void> {
    const { rpc, store } = this.o;
    for (const attempt of [...batch.attempts].reverse()) {
      const receipt = await rpc.receipt(attempt.hash);
      if (receipt) return this.mined(batch, receipt);
    }
    const ours = batch.sender === this.me;
    if (batch.attempts.length === 0) {
      // Crashed between writing the batch and signing it: nothing was broadcast, sign it now. A
      // stopped instance's batch that never got a transaction goes back to the queue instead.
      if (ours) await this.sendAttempt(batch, await this.payloadOf(batch), await rpc.fees());
      else {
        const ids = await store.requeueBatch(batch.id, {
          status: "failed",
          error: `its instance (sender ${batch.sender}) stopped before signing it`,
        });
        this.log("warn", "a stopped instance's unsigned batch was put back in the queue", {
          batch: batch.id,
          sender: batch.sender,
        });
        await this.o.ingest.requeued(ids);
      }
      return;
    }
    const last = batch.attempts[batch.attempts.length - 1];
    const chainNonce = await rpc.nonce(batch.sender as Address, "latest");
    if (chainNonce > batch.nonce) {
      // The nonce is used but none of our hashes has a receipt yet: ask again next pass; only when
      // that stays so for long (another signer used our key?) is the batch given up as dropped.
      if (Date.now() - last.createdAt > this.o.config.replaceAfterMs * 4) {
        this.log("error", "batch nonce used by a transaction that is not ours; requeueing its items", {
          batch: batch.id,
          nonce: batch.nonce,
        });
        const ids = await store.requeueBatch(batch.id, {
          status: "dropped",
          error: "nonce used by another transaction",
        });
        await this.o.ingest.requeued(ids);
      }
      return;
    }
    if (last.broadcastAt === null || batch.status === "created") {
      await this.broadcast(batch, last.hash, last.raw);
      return;
    }
    if (ours && Date.now() - last.createdAt > this.o.config.replaceAfterMs) {
      const bump = (v: bigint) => (v * BigInt(100 + this.o.config.feeBumpPercent) + 99n) / 100n;
      const fresh = await rpc.fees();
      const fees = {
        maxFeePerGas: max(bump(last.maxFeePerGas), fresh.maxFeePerGas),
        maxPriorityFeePerGas: max(bump(last.maxPriorityFeePerGas), fresh.maxPriorityFeePerGas),
      };
      this.log("warn", "batch stuck; replacing it at the same nonce with higher fees", {
        batch: batch.id,
        nonce: batch.nonce,
        maxFeePerGas: fees.maxFeePerGas.toString(),
      });
      await this.sendAttempt(batch, await this.payloadOf(batch), fees);
    } else {
      // Re-broadcasting the same bytes is harmless and heals a node that lost the transaction.
      await this.broadcast(batch, last.hash, last.raw);
    }
  }

  private async broadcast(batch: { id: number }, hash: Hex, raw: Hex): Promise<void> {
    const outcome = await this.o.rpc.broadcast(raw);
    if (outcome.kind === "sent") crashPoint("after-broadcast");
    switch (outcome.kind) {
      case "sent":
      case "known":
        await this.o.store.markBroadcast(hash);
        return;
      case "nonceTooLow":
        // One of our attempts may have landed: receipts decide, next pass.
        return;
      case "underpriced":
        this.log("warn", "replacement underpriced; will bump again", { batch: batch.id });
        return;
      case "insufficientFunds":
        this.lastError = `sender ${this.o.sender.address} cannot pay for gas: fund it`;
        this.log("error", this.lastError, { batch: batch.id });
        return;
      case "unknown":
        // It may be out or not: keep the row, re-broadcast the same bytes next pass.
        this.log("warn", "broadcast failed; will re-broadcast the same transaction", {
          batch: batch.id,
          error: outcome.message,
        });
    }
  }

  /** What a batch's transaction carries: its items, or its owner message. */
  private async payloadOf(batch: BatchDetail): Promise<Payload> {
    if (batch.messageId !== null) {
      const row = await this.o.store.getOwnerMessage(batch.messageId);
      if (!row) throw new Error(`batch ${batch.id}: owner message ${batch.messageId} is missing from the store`);
      return { message: fromStoredBody(row.kind, row.body), gas: batch.gasEstimate ?? BigInt(this.o.config.maxGas) };
    }
    return { items: (await this.o.store.getItems(batch.itemIds)).filter((r): r is ItemRow => r !== null) };
  }

  /** Sign the batch's transaction at its nonce, write it, then broadcast it. */
  private async sendAttempt(
    batch: { id: number; kind: BatchKind; token: Hex; nonce: number },
    payload: Payload,
    fees: { maxFeePerGas: bigint; maxPriorityFeePerGas: bigint },
  ): Promise<void> {
    let data: Hex;
    let gas: bigint;
    if ("message" in payload) {
      data = ownerMessageCalldata(payload.message);
      gas = payload.gas;
    } else {
      const kind = batch.kind as ItemKind;
      data = this.calldata(kind, batch.token, payload.items);
      gas = BigInt(Math.min(this.o.config.maxGas, GAS_BASE + GAS_PER[kind] * payload.items.length));
    }
    const raw = await this.o.sender.signTransaction({
      chainId: this.o.chainId,
      type: "eip1559",
      to: this.o.contract,
      data,
      gas,
      nonce: batch.nonce,
      ...fees,
    });
    const hash = transactionHash(raw);
    await this.o.store.addAttempt(batch.id, { hash, raw, nonce: batch.nonce, ...fees });
    crashPoint("after-attempt-row");
    await this.broadcast(batch, hash, raw);
  }

  /** A receipt was found for one of the batch's attempts. */
  private async mined(batch: BatchDetail, receipt: BatchReceipt): Promise<void> {
    const { store, ingest } = this.o;
    crashPoint("after-receipt");
    if (receipt.status !== "success") {
      const ids = await store.requeueBatch(batch.id, {
        status: "reverted",
        error: "the settlement transaction reverted",
        receipt: {
          txHash: receipt.transactionHash,
          blockNumber: Number(receipt.blockNumber),
          blockHash: receipt.blockHash,
          gasUsed: receipt.gasUsed,
        },
      });
      if (batch.messageId !== null) {
        this.log("warn", "owner message reverted on chain; marked failed", {
          batch: batch.id,
          message: batch.messageId,
        });
        this.o.events?.ownerMessage?.({
          id: batch.messageId,
          kind: batch.kind as OwnerMessageKind,
          status: "failed",
          error: "the transaction reverted",
        });
        return;
      }
      this.log("warn", "batch reverted; its items go back to the queue and are checked again", { batch: batch.id });
      await ingest.requeued(ids);
      this.invalidateItems(await store.getItems(ids));
      return;
    }
    const outcomes = this.outcomes(batch, receipt);
    await store.markBatchMined(batch.id, {
      txHash: receipt.transactionHash,
      blockNumber: Number(receipt.blockNumber),
      blockHash: receipt.blockHash,
      gasUsed: receipt.gasUsed,
      items: outcomes,
    });
    // The chain now holds these spends: the cache re-reads what they changed, then the ledger
    // stops counting them (never the other way round, or admission would briefly count neither).
    // In the background, so the loop goes on sending; until then both count them (conservative).
    const skipped = outcomes.filter((o) => o.status === "rejected");
    const rows = (await store.getItems(batch.itemIds)).filter((r): r is ItemRow => r !== null);
    const release = this.refreshFor(rows)
      .then(async () => {
        // A reorg may have taken the block away meanwhile: then the items stay counted.
        const now = await store.getBatch(batch.id);
        if (now?.txHash === receipt.transactionHash && (now.status === "mined" || now.status === "confirmed")) {
          ingest.finished(batch.itemIds, new Set(skipped.map((o) => o.id)));
        }
      })
      .catch((e) => this.log("warn", "could not release a mined batch's items", { error: (e as Error).message }))
      .finally(() => this.releasing.delete(release));
    this.releasing.add(release);
    for (const s of skipped) this.o.events?.misprediction?.(s.reason ?? "unknown", 1);
    if (batch.messageId !== null) return;
    this.o.events?.batchMined?.({
      id: batch.id,
      size: batch.itemIds.length,
      gasUsed: receipt.gasUsed,
      settled: outcomes.length - skipped.length,
      skipped: skipped.length,
    });
  }

  /** Each item's outcome from the receipt's events: skipped by index, the rest settled. */
  private outcomes(batch: BatchDetail, receipt: BatchReceipt): ItemOutcome[] {
    const skipped = new Map<number, string>();
    let settled = 0;
    for (const log of receipt.logs) {
      if (log.address.toLowerCase() !== this.o.contract.toLowerCase()) continue;
      if (SETTLED_TOPICS.has(log.topics[0]!)) {
        settled++;
        continue;
      }
      const e = decodeMachinePayLog(log as never);
      if (!e) continue;
      if (e.eventName === "PaymentSkipped" || e.eventName === "VoucherSkipped") {
        const s = e as { index: number; reason: string };
        skipped.set(s.index, s.reason);
      }
    }
    if (settled + skipped.size !== batch.itemIds.length) {
      throw new Error(
        `batch ${batch.id}: the receipt settles ${settled} and skips ${skipped.size} of ${batch.itemIds.length} items`,
      );
    }
    return batch.itemIds.map((id, i) =>
      skipped.has(i)
        ? { id, status: "rejected" as const, reason: skipped.get(i), message: "skipped by the contract at settlement" }
        : { id, status: "settled" as const },
    );
  }

  /** A mined batch: confirmed at depth, or back to `sent` if its block left the chain. */
  private async confirm(batch: BatchDetail): Promise<void> {
    const { client, store, ingest } = this.o;
    const at = await client.getBlock({ blockNumber: BigInt(batch.blockNumber!) }).catch(() => undefined);
    if (!at || at.hash !== batch.blockHash) {
      this.log("warn", "reorg: a batch's block left the chain; its items count as pending again", {
        batch: batch.id,
        block: batch.blockNumber,
      });
      await store.unmineBatch(batch.id);
      const rows = (await store.getItems(batch.itemIds)).filter((r): r is ItemRow => r !== null);
      for (const row of rows) if (!ingest.ledger.has(row.id)) ingest.ledger.add(entryOf(row, true));
      this.o.state.invalidateAll();
      return;
    }
    if (this.head - batch.blockNumber! + 1 >= this.o.config.confirmations) {
      crashPoint("before-confirm");
      await store.markBatchConfirmed(batch.id);
    }
  }

  /** Re-read the device words, balances (owners, payees, fee recipient) and tabs that `rows` touched. */
  private async refreshFor(rows: ItemRow[]): Promise<void> {
    const fee = this.o.feeRecipient;
    try {
      await this.o.state.refresh({
        devices: rows.map((r) => r.device as Address),
        balances: rows.flatMap((r) => [
          [r.owner as Address, r.token as Address] as [Address, Address],
          [r.payee as Address, r.token as Address] as [Address, Address],
          [fee, r.token as Address] as [Address, Address],
        ]),
        tabs: rows
          .filter((r) => r.kind === "voucher")
          .map((r) => [r.device, r.payee, r.token, r.tabId!] as [Address, Address, Address, bigint]),
      });
    } catch (e) {
      // Reads failed: forget the entries instead, so the next admission reads them itself.
      this.log("warn", "could not refresh cached state after a batch; invalidating it", {
        error: (e as Error).message,
      });
      this.invalidateItems(rows);
    }
  }

  private invalidateItems(rows: (ItemRow | null)[]): void {
    for (const r of rows) {
      if (!r) continue;
      this.o.state.invalidateDevice(r.device as Address);
      this.o.state.invalidateOwner(r.owner as Address);
    }
    this.o.state.invalidateBalances();
  }

  // ---- 3. new batches ----------------------------------------------------------------------------

  private async build(): Promise<number[]> {
    const created: number[] = [];
    const open = (await this.o.store.openBatches()).filter((b) => b.sender === this.me);
    let inFlight = open.filter((b) => b.status !== "mined").length;
    for (const { kind, token } of this.due()) {
      while (inFlight < this.o.config.maxInFlight) {
        const id = await this.buildOne(kind, token, open);
        if (id === undefined) break;
        created.push(id);
        inFlight++;
        open.push((await this.o.store.getBatch(id))!);
      }
    }
    if (inFlight < this.o.config.maxInFlight) {
      for (const message of await this.o.store.openOwnerMessages()) {
        if (message.status !== "accepted" || inFlight >= this.o.config.maxInFlight) continue;
        const id = await this.submitOwnerMessage(message, open);
        if (id === undefined) continue;
        created.push(id);
        inFlight++;
        open.push((await this.o.store.getBatch(id))!);
      }
    }
    return created;
  }

  /**
   * An accepted owner message becomes a batch of its own: checked again against `pending` (a
   * freeze, another submission of its nonce or a passed deadline since it was accepted fail it
   * here, with the contract's reason), then written with its nonce and gas, signed, broadcast.
   */
  private async submitOwnerMessage(row: OwnerMessageRow, open: BatchDetail[]): Promise<number | undefined> {
    const { store } = this.o;
    const message = fromStoredBody(row.kind, row.body);
    const check = await checkOwnerMessage(this.o.client, this.o.contract, this.o.sender.address, message);
    if (!check.ok) {
      await store.updateOwnerMessage(row.id, { status: "failed", error: `${check.error}: ${check.message}` });
      this.log("warn", "owner message refused by the contract before sending; marked failed", {
        message: row.id,
        error: check.error,
      });
      this.o.events?.ownerMessage?.({ id: row.id, kind: row.kind, status: "failed", error: check.error });
      return undefined;
    }
    // eth_estimateGas plus a quarter (it may run on a state a little different from the block's).
    const gas = BigInt(Math.min(this.o.config.maxGas, Number((check.gas * 5n) / 4n)));
    const nonce = await this.nextNonce(open);
    const id = await this.createOrSkip({
      kind: row.kind,
      token: ZERO_ADDRESS,
      sender: this.me,
      nonce,
      itemIds: [],
      messageId: row.id,
      gasEstimate: gas,
    });
    if (id === undefined) return undefined;
    this.log("info", "owner message submitted", { batch: id, kind: row.kind, message: row.id, nonce });
    this.o.events?.ownerMessage?.({ id: row.id, kind: row.kind, status: "submitted" });
    await this.sendAttempt(
      { id, kind: row.kind, token: ZERO_ADDRESS, nonce },
      { message, gas },
      await this.o.rpc.fees(),
    );
    return id;
  }

  /**
   * The nonce a new batch takes: never below the chain's (`latest`), never one an open batch
   * holds. Deliberately not the store's highest nonce ever used: after a chain reset, or a batch
   * whose nonce another transaction took, that would leave a gap that jams every later batch.
   */
  private async nextNonce(open: BatchDetail[]): Promise<number> {
    const chainNonce = await this.o.rpc.nonce(this.o.sender.address, "latest");
    const highestOpen = open.reduce((m, b) => Math.max(m, b.nonce), -1);
    return Math.max(chainNonce, highestOpen + 1);
  }

  /** Kinds and tokens with items that must go now (count, age, deadline, tab threshold). */
  private due(): { kind: ItemKind; token: Hex }[] {
    const now = Date.now();
    const chainNow = this.o.clock.now();
    const c = this.o.config;
    const groups = new Map<string, { kind: ItemKind; token: Hex; count: number; due: boolean }>();
    for (const e of this.o.ingest.ledger.entries()) {
      if (e.inFlight) continue;
      const key = `${e.kind}:${e.token}`;
      let g = groups.get(key);
      if (!g) {
        g = { kind: e.kind, token: e.token as Hex, count: 0, due: this.force };
        groups.set(key, g);
      }
      g.count++;
      if (g.due) continue;
      if (e.kind === "payment") {
        g.due = now - e.acceptedAt >= c.maxAgeMs || e.deadline - chainNow <= BigInt(c.deadlineMarginSeconds);
      } else {
        g.due =
          (e.tab !== undefined && this.closingTabs.has(e.tab)) ||
          now - e.acceptedAt >= c.tabs.maxAgeMs ||
          e.spend >= c.tabs.threshold ||
          e.deadline - chainNow <= BigInt(c.tabs.beforeDeadlineSeconds);
      }
    }
    return [...groups.values()].filter((g) => g.due || g.count >= c.maxItems);
  }

  private async buildOne(kind: ItemKind, token: Hex, open: BatchDetail[]): Promise<number | undefined> {
    const { store, ingest, config } = this.o;
    const byBytes = Math.floor((config.maxBytes - BYTES_FIXED) / BYTES_PER_ITEM);
    const byGas = Math.floor((config.maxGas - GAS_BASE) / GAS_PER[kind]);
    const limit = Math.max(1, Math.min(config.maxItems, byBytes, byGas));
    let rows = await store.readyItems({
      kind,
      token,
      limit: limit * 2,
      claimant: { id: this.me, leaseMs: INSTANCE_LEASE_MS },
    });
    if (kind === "voucher") {
      // One voucher per tab in flight: a newer one waits until the tab's batch is mined.
      rows = rows.filter((r) => ingest.ledger.tab(tabOf(r)).inFlightCumulative === undefined);
    }
    rows = rows.slice(0, limit);
    if (rows.length === 0) return undefined;
    rows.sort(settlementOrder);
    rows = await this.dropWhatWouldBeSkipped(kind, token, rows);
    if (rows.length === 0) return undefined;
    const nonce = await this.nextNonce(open);
    const gasEstimate = BigInt(GAS_BASE + GAS_PER[kind] * rows.length);
    const id = await this.createOrSkip({
      kind,
      token,
      sender: this.me,
      nonce,
      itemIds: rows.map((r) => r.id),
      gasEstimate,
    });
    if (id === undefined) return undefined;
    crashPoint("after-batch-row");
    ingest.batched(rows.map((r) => r.id));
    this.o.events?.batchCreated?.({ id, kind, size: rows.length, nonce });
    this.log("info", "batch created", { batch: id, kind, items: rows.length, nonce });
    await this.sendAttempt({ id, kind, token, nonce }, { items: rows }, await this.o.rpc.fees());
    return id;
  }

  /**
   * Writes the batch, or returns undefined if another relayer sharing the store took one of its
   * items (or its owner message) first: the store refuses it (CONFLICT) and the next pass re-reads.
   */
  private async createOrSkip(batch: Parameters<Store["createBatch"]>[0]): Promise<number | undefined> {
    try {
      return await this.o.store.createBatch(batch);
    } catch (e) {
      if (!(e instanceof StoreError) || e.code !== "CONFLICT") throw e;
      this.log("info", "batch not written: its items were taken meanwhile; re-reading next pass", {
        kind: batch.kind,
        items: batch.itemIds.length,
      });
      return undefined;
    }
  }

  /** Preview on `pending` at the gas limit; items it would skip are rejected here (mispredictions). */
  private async dropWhatWouldBeSkipped(kind: ItemKind, token: Hex, rows: ItemRow[]): Promise<ItemRow[]> {
    const { client, store, ingest } = this.o;
    for (;;) {
      const gas = BigInt(Math.min(this.o.config.maxGas, GAS_BASE + GAS_PER[kind] * rows.length));
      const functionName = kind === "payment" ? "preview" : "previewVouchers";
      let reasons: readonly number[];
      try {
        // The fixed-layout calldata and return data (calldata.ts): viem's simulateContract encoded
        // and decoded the whole batch on the event loop (5-7 ms for 500 items, measured).
        const { data } = await client.call({
          to: this.o.contract,
          data: batchCalldata(
            functionName,
            token,
            rows.map((r) => packed(kind, r)),
            this.o.feeRecipient,
          ),
          account: this.o.sender.address,
          gas,
          blockTag: "pending",
        });
        reasons = previewReasons(data ?? "0x", rows.length);
      } catch (e) {
        // A revert, decoded against the ABI as simulateContract did (custom error names).
        const err =
          e instanceof BaseError
            ? getContractError(e, {
                abi: machinePayAbi,
                address: this.o.contract,
                functionName,
                args: [],
                sender: this.o.sender.address,
              })
            : (e as Error);
        if (rows.length > 1 && /gas/i.test(err.message)) {
          rows = rows.slice(0, Math.ceil(rows.length / 2));
          continue;
        }
        throw err;
      }
      const bad = rows.filter((_, i) => reasons[i] !== 0);
      if (bad.length === 0) return rows;
      const rejected = await store.rejectItems(
        bad.map((r) => ({
          id: r.id,
          reason: REASONS[reasons[rows.indexOf(r)]],
          message: "the contract's preview refused it before sending: chain state changed since it was accepted",
        })),
      );
      ingest.finished(rejected, new Set(rejected));
      for (const r of bad) this.o.events?.misprediction?.(REASONS[reasons[rows.indexOf(r)]], 1);
      const reasonsSeen: Record<string, number> = {};
      for (const r of bad) {
        const name = REASONS[reasons[rows.indexOf(r)]];
        reasonsSeen[name] = (reasonsSeen[name] ?? 0) + 1;
      }
      this.log("warn", "preview refused items that ingest had accepted", {
        kind,
        count: bad.length,
        reasons: reasonsSeen,
      });
      return rows.filter((_, i) => reasons[i] === 0);
    }
  }

  private calldata(kind: ItemKind, token: Hex, rows: ItemRow[]): Hex {
    const fn = kind === "payment" ? "settle" : "settleVouchers";
    return batchCalldata(
      fn,
      token,
      rows.map((r) => packed(kind, r)),
      this.o.feeRecipient,
    );
  }

  private log(level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) {
    this.o.events?.log?.(level, msg, fields);
  }
}

function packed(kind: ItemKind, r: ItemRow) {
  if (kind === "payment") {
    return packPayment(
      {
        payee: r.payee,
        token: r.token,
        amount: r.amount,
        nonce: r.nonce!,
        deadline: BigInt(r.deadline),
        maxFee: r.maxFee,
        ref: r.ref!,
      },
      r.signature,
      r.fee,
    );
  }
  return packVoucher(
    {
      payee: r.payee,
      token: r.token,
      tabId: r.tabId!,
      cumulative: r.amount,
      deadline: BigInt(r.deadline),
      maxFee: r.maxFee,
    },
    r.signature,
    r.fee,
  );
}

/** topic0 of each named MachinePay event. */
const eventTopics = (...names: string[]) =>
  new Set<string>(
    machinePayAbi.filter((x) => x.type === "event" && names.includes(x.name)).map((x) => toEventSelector(x as never)),
  );

/** Events a settlement transaction emits: for our own, `mined` refreshes the cache itself. */
const SETTLEMENT_TOPICS = eventTopics(
  "PaymentSettled",
  "VoucherSettled",
  "PaymentSkipped",
  "VoucherSkipped",
  "BatchSettled",
);

/** Settled items' events: `outcomes` counts them by topic, without decoding (a batch has hundreds). */
const SETTLED_TOPICS = eventTopics("PaymentSettled", "VoucherSettled");

type Payload = { items: ItemRow[] } | { message: OwnerMessage; gas: bigint };

/** A log as eth_getLogs answers it (the fields followChain reads). */
type RawLog = { transactionHash: Hex | null; topics: Hex[]; data: Hex; blockNumber: Hex; logIndex: Hex };

const [DEVICE_ASSIGNED] = eventTopics("DeviceAssigned");
/** Events that write a device's word or its tabs, each with the device as its first indexed topic (TabClosing: second). */
const DEVICE_TOUCHES = eventTopics("PaymentSettled", "VoucherSettled", "DevicePausedSet", "DeviceRevokedForever");
const [TAB_CLOSING] = eventTopics("TabClosing");

/** What a log says about a device's word, read from its topics (a batch's block holds hundreds of settlements). */
export function deviceEventOf(log: RawLog): DeviceEvent | undefined {
  const topic = log.topics[0];
  if (topic === undefined) return undefined;
  const at = { blockNumber: Number(log.blockNumber), logIndex: Number(log.logIndex) };
  const word = (i: number) => `0x${log.topics[i]!.slice(26).toLowerCase()}` as Hex;
  if (topic === DEVICE_ASSIGNED) {
    return { device: word(1), kind: "assigned", policyId: Number(BigInt(log.topics[2]!)), ...at };
  }
  if (DEVICE_TOUCHES.has(topic)) return { device: word(1), kind: "touched", ...at };
  if (topic === TAB_CLOSING) return { device: word(2), kind: "touched", ...at };
  return undefined;
}

const ZERO_ADDRESS = "0x0000000000000000000000000000000000000000" as Hex;
/**
 * The order items go into a batch. By payee, since settle writes a run of credits to one payee
 * once, but never so that a device's nonce could fall below its replay window: payments are first
 * grouped by nonce / NONCE_WINDOW. Within a group a device's nonces lie less than a window apart
 * (any order settles), and every group's nonces are above the previous group's. Sorting by payee
 * alone put a device's nonce 1 (payee B) after its nonce 48 (payee A): NonceTooOld.
 */
export function settlementOrder(a: ItemRow, b: ItemRow): number {
  const group = (r: ItemRow) => (r.nonce === null ? 0n : r.nonce / WINDOW);
  const ga = group(a);
  const gb = group(b);
  if (ga !== gb) return ga < gb ? -1 : 1;
  return cmp(a.payee, b.payee) || cmp(a.device, b.device) || Number((a.nonce ?? 0n) - (b.nonce ?? 0n));
}

const WINDOW = BigInt(NONCE_WINDOW);
const tabOf = (r: ItemRow) => tabKeyOf(r.device, r.payee, r.token, r.tabId!);
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const max = (a: bigint, b: bigint) => (a > b ? a : b);
