// The relayer's durable store: the only stage that speaks SQL. Everything here is backend-neutral
// (SQLite and PostgreSQL, behind the same interface); amounts are bigint, addresses and
// hashes lowercase 0x hex, our own timestamps unix milliseconds, chain times unix seconds.

export type Hex = `0x${string}`;

export const ITEM_KINDS = ["payment", "voucher"] as const;
export type ItemKind = (typeof ITEM_KINDS)[number];

/**
 * Item state machine (each arrow is one store operation, in one transaction):
 *
 *   accepted ──createBatch──▶ batched ──markBroadcast / markBatchMined──▶ submitted ──markBatchConfirmed──▶ settled | rejected
 *      ▲  │                      │                                           │
 *      │  │                      └────────────requeueBatch─────┬─────────────┘
 *      └──┼────────────────────────────────────────────────────┘  (batch reverted, dropped or failed)
 *         ├──write / rejectItems──▶ rejected
 *         └──write (newer voucher of its tab)──▶ superseded
 *
 * `markBatchMined` keeps items `submitted` but records the block and each item's on-chain outcome
 * (`outcome`, and `reason` if skipped); `markBatchConfirmed`, at confirmation depth, makes the
 * outcome the status. Only `accepted` items can be batched, rejected by the relayer or superseded.
 */
export const ITEM_STATUSES = ["accepted", "batched", "submitted", "settled", "rejected", "superseded"] as const;
export type ItemStatus = (typeof ITEM_STATUSES)[number];

export const ITEM_TRANSITIONS: Readonly<Record<ItemStatus, readonly ItemStatus[]>> = {
  accepted: ["batched", "rejected", "superseded"],
  batched: ["submitted", "accepted"],
  submitted: ["settled", "rejected", "accepted"],
  settled: [],
  rejected: [],
  superseded: [],
};

/** Statuses whose spend still counts against a device's caps (ingest's pending ledger). */
export const PENDING_ITEM_STATUSES = ["accepted", "batched", "submitted"] as const satisfies readonly ItemStatus[];

/**
 * Batch state machine:
 *
 *   created ──markBroadcast──▶ sent ──markBatchMined──▶ mined ──markBatchConfirmed──▶ confirmed
 *      │                        │  ◀───unmineBatch────   │  (mined → mined: re-included after a reorg)
 *      ├── requeueBatch ────────┴───────────────────────┴──▶ reverted | dropped   (items back to accepted)
 *      ├── requeueBatch('failed'): only while no attempt was ever broadcast (frees the nonce)
 *      └── markBatchMined: recovery found it mined before its broadcast was recorded
 *
 * A sender's nonce belongs to one batch at a time (unless failed or dropped); every replacement
 * transaction is another attempt of the same batch, recorded before it is broadcast.
 */
export const BATCH_STATUSES = ["created", "sent", "mined", "confirmed", "reverted", "failed", "dropped"] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

export const BATCH_TRANSITIONS: Readonly<Record<BatchStatus, readonly BatchStatus[]>> = {
  created: ["sent", "mined", "reverted", "dropped", "failed"],
  sent: ["mined", "reverted", "dropped"],
  mined: ["mined", "sent", "confirmed", "reverted", "dropped"],
  confirmed: [],
  reverted: [],
  failed: [],
  dropped: [],
};

/** Batches that recovery and the confirmation loop must look at. */
export const OPEN_BATCH_STATUSES = ["created", "sent", "mined"] as const satisfies readonly BatchStatus[];

export const OWNER_MESSAGE_KINDS = ["onboarding", "revocation"] as const;
export type OwnerMessageKind = (typeof OWNER_MESSAGE_KINDS)[number];

/**
 * What a batch carries: payments or vouchers (items of one token), or one owner message
 * (`messageId`, no items) submitted through the same nonce, attempt and receipt machinery.
 */
export const BATCH_KINDS = ["payment", "voucher", "onboarding", "revocation"] as const;
export type BatchKind = (typeof BATCH_KINDS)[number];

/**
 * Owner message state machine: accepted ──createBatch──▶ submitted ──markBatchConfirmed──▶ confirmed;
 * requeueBatch: reverted ──▶ failed, dropped or failed ──▶ accepted (submitted again, re-checked).
 */
export const OWNER_MESSAGE_STATUSES = ["accepted", "submitted", "confirmed", "failed"] as const;
export type OwnerMessageStatus = (typeof OWNER_MESSAGE_STATUSES)[number];

export const OWNER_MESSAGE_TRANSITIONS: Readonly<Record<OwnerMessageStatus, readonly OwnerMessageStatus[]>> = {
  accepted: ["submitted", "failed"],
  submitted: ["submitted", "accepted", "confirmed", "failed"],
  confirmed: [],
  failed: [],
};

/** A signed payment or voucher that ingest verified and admitted. */
export interface NewItem {
  /** EIP-712 digest of the payment or voucher: the idempotency key. */
  id: Hex;
  kind: ItemKind;
  device: Hex;
  owner: Hex;
  policyId: number;
  payee: Hex;
  token: Hex;
  /** Payment amount, or a voucher's cumulative total (token units). */
  amount: bigint;
  /** Payments only (below 2^53; the contract takes below 2^32); null for vouchers. */
  nonce: bigint | null;
  /** Vouchers only; null for payments. */
  tabId: bigint | null;
  /** Unix seconds. */
  deadline: number;
  maxFee: bigint;
  /** What the relayer will charge, ≤ maxFee. */
  fee: bigint;
  /** Payments only (32 bytes); null for vouchers. */
  ref: Hex | null;
  /** The 65-byte signature as received. */
  signature: Hex;
  /** EIP-2098 compact form of the signature. */
  r: Hex;
  vs: Hex;
  /** What admission counted against the caps: amount + fee, or a voucher's increment + fee. */
  spend: bigint;
  /** Unix ms; defaults to the store's clock. */
  acceptedAt?: number;
}

export interface ItemRow extends Required<NewItem> {
  status: ItemStatus;
  /** Why it was rejected (a contract reason name or a relayer code), or its skip reason once mined. */
  reason: string | null;
  message: string | null;
  /** Set by markBatchMined: what the mined block did with the item; final at confirmation. */
  outcome: "settled" | "rejected" | null;
  /** The live batch while batched/submitted; the batch that settled or rejected it afterwards. */
  batchId: number | null;
  position: number | null;
  /** The latest broadcast attempt while submitted; the transaction that landed once mined. */
  txHash: Hex | null;
  blockNumber: number | null;
  blockHash: Hex | null;
  updatedAt: number;
}

export interface TabKey {
  device: Hex;
  payee: Hex;
  token: Hex;
  tabId: bigint;
}

export interface TabRow extends TabKey {
  /** Item id of the newest accepted voucher (null if only the chain's view is known). */
  newestId: Hex | null;
  newestCumulative: bigint;
  /** What the chain says the tab settled. */
  settledCumulative: bigint;
  /** Unix seconds (chain time) when the tab closes, or null while open. */
  closesAt: number | null;
  updatedAt: number;
}

/** Moves a tab's newest voucher forward; ignored (advanced: false) unless newestCumulative grows. */
export interface TabAdvance extends TabKey {
  newestId: Hex;
  newestCumulative: bigint;
}

/** A status change made by ingest or the batcher; applies only while the item is still `accepted`. */
export interface ItemUpdate {
  id: Hex;
  status: "superseded" | "rejected";
  reason?: string;
  message?: string;
}

/**
 * How many committed transactions changed an owner's pending items (admitted, batched, put back,
 * settled, rejected, superseded): several relayers sharing one store learn from it that another
 * one admitted or settled for the owner. A store only one process writes (SQLite) keeps none.
 */
export interface OwnerVersion {
  owner: Hex;
  version: number;
}

/** Admission's condition on a write: the owner's version is still the one its decisions saw (null: none yet). */
export interface OwnerGuard {
  owner: Hex;
  version: number | null;
}

/** Everything one caller of `write` needs atomically: its items, its tabs, its status changes. */
export interface WriteSet {
  items?: readonly NewItem[];
  tabs?: readonly TabAdvance[];
  updates?: readonly ItemUpdate[];
  /**
   * Ingest's admission guard: written only if no other process changed these owners' pending items
   * since the versions given (checked under the owners' locks, taken before any item's); otherwise
   * nothing of the set is written and `stale` says which owners moved. Ignored by a store that one
   * process owns.
   */
  guard?: readonly OwnerGuard[];
}

export interface WriteResult {
  /** Same order as the set's items; `inserted: false` returns the row stored earlier. */
  items: { id: Hex; inserted: boolean; item: ItemRow }[];
  tabs: { advanced: boolean; tab: TabRow }[];
  /** `applied: false` when the item was unknown (`status: null`) or no longer accepted. */
  updates: { id: Hex; applied: boolean; status: ItemStatus | null }[];
  /** The guarded owners' versions after this commit (empty where versions are not kept). */
  owners: OwnerVersion[];
  /** Guarded owners another process changed: the set was not written (items, tabs, updates empty). */
  stale: OwnerVersion[];
}

/**
 * Items of some owners, as ingest re-reads them. For an owner in `since`, `rows` holds only its
 * items changed by versions above the one given (any status: an item that left pending is there
 * too, so its reader drops it); for any other owner asked for, every pending item.
 */
export interface OwnerItems {
  rows: ItemRow[];
  /** Lowercase owner → the version its rows are changes after. */
  since: ReadonlyMap<string, number>;
}

/** The owners whose pending items changed since `after` (a store cursor), and the cursor to pass next. */
export interface OwnerChanges {
  owners: OwnerVersion[];
  /** Null where versions are not kept (the store has one writer): nothing to poll. */
  next: string | null;
}

/** One relayer process using a store, named by its sender key (each instance sends with its own). */
export interface InstanceLease {
  sender: Hex;
  /** Names this process (host, pid, start): another process with the same sender is refused. */
  holder: string;
  /** How long this heartbeat keeps the instance alive. */
  leaseMs: number;
}

export interface Page<T> {
  rows: T[];
  /** Pass as `after` to get the next page; null when this was the last one. */
  next: string | null;
}

export interface ListItemsQuery {
  status?: ItemStatus;
  device?: Hex;
  kind?: ItemKind;
  /** With batchId, items come in position order; otherwise newest first. */
  batchId?: number;
  limit: number;
  after?: string;
}

export interface ReadyItemsQuery {
  kind: ItemKind;
  token: Hex;
  limit: number;
  /**
   * Several relayers on one store: return only items of devices this claimant holds or can take
   * (unclaimed, or its lease ran out), claiming them for `leaseMs` (rows another claimant is taking
   * are skipped, not waited for), so one device's items go to one batcher. Ignored by a store that
   * one process owns.
   */
  claimant?: { id: string; leaseMs: number };
}

export interface NewBatch {
  kind: BatchKind;
  /** The items' token; the zero address for an owner message. */
  token: Hex;
  sender: Hex;
  /** The sender's transaction nonce, fixed for every attempt of this batch. */
  nonce: number;
  /** In settlement order; each must be `accepted` and of the batch's kind and token. Empty for an owner message. */
  itemIds: readonly Hex[];
  /** Onboarding and revocation batches only: the `accepted` owner message of that kind they submit. */
  messageId?: Hex | null;
  gasEstimate?: bigint | null;
}

export interface BatchRow {
  id: number;
  kind: BatchKind;
  messageId: Hex | null;
  token: Hex;
  sender: Hex;
  nonce: number;
  status: BatchStatus;
  itemCount: number;
  gasEstimate: bigint | null;
  gasUsed: bigint | null;
  blockNumber: number | null;
  blockHash: Hex | null;
  /** The attempt that landed. */
  txHash: Hex | null;
  error: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface NewAttempt {
  hash: Hex;
  /** The signed transaction, so recovery can re-broadcast it without the key. */
  raw: Hex;
  nonce: number;
  maxFeePerGas: bigint;
  maxPriorityFeePerGas: bigint;
}

export interface AttemptRow extends NewAttempt {
  batchId: number;
  createdAt: number;
  /** Null until a broadcast call for it returned. */
  broadcastAt: number | null;
}

export interface BatchDetail extends BatchRow {
  /** Oldest first. */
  attempts: AttemptRow[];
  /** Every item ever placed in this batch, in position order (kept after a requeue). */
  itemIds: Hex[];
}

export interface ListBatchesQuery {
  status?: BatchStatus;
  limit: number;
  after?: string;
}

export interface ItemOutcome {
  id: Hex;
  status: "settled" | "rejected";
  /** Required when rejected: the contract's reason name. */
  reason?: string;
  message?: string;
}

export interface BatchMined {
  txHash: Hex;
  blockNumber: number;
  blockHash: Hex;
  gasUsed: bigint;
  /** Exactly one per item of the batch. */
  items: readonly ItemOutcome[];
}

export interface BatchRequeue {
  status: "reverted" | "dropped" | "failed";
  error?: string;
  /** For a reverted transaction: its receipt. */
  receipt?: { txHash: Hex; blockNumber: number; blockHash: Hex; gasUsed: bigint };
}

export interface ItemRejection {
  id: Hex;
  reason: string;
  message?: string;
}

export interface TabSettled {
  settledCumulative: bigint;
  closesAt?: number | null;
}

export interface Cursor {
  blockNumber: number;
  blockHash: Hex | null;
}

/**
 * What one contract event did to a device's word (the one storage word `getDevice` reads), at its
 * place in the chain. `assigned`: DeviceAssigned (the device's policy is now `policyId`; nonces and
 * counters are kept). `touched`: any other event of a write to the word or to the device's tabs
 * (PaymentSettled, VoucherSettled, DevicePausedSet, DeviceRevokedForever, TabClosing).
 */
export interface DeviceEvent {
  device: Hex;
  kind: "assigned" | "touched";
  /** `assigned` only. */
  policyId?: number;
  blockNumber: number;
  logIndex: number;
}

/** A range of blocks whose events were read: `from` to the cursor's block, and their device events in chain order. */
export interface DeviceEventRange {
  from: number;
  events: readonly DeviceEvent[];
  /** The range starts at the contract's deployment block: the registry of untouched devices starts complete here. */
  fromDeployment: boolean;
}

export interface NewOwnerMessage {
  /** EIP-712 digest of the owner's signed message. */
  id: Hex;
  kind: OwnerMessageKind;
  owner: Hex;
  /** JSON text of what the chain stage needs to submit it (the caller encodes bigints). */
  body: string;
}

export interface OwnerMessageRow extends NewOwnerMessage {
  status: OwnerMessageStatus;
  txHash: Hex | null;
  error: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface OwnerMessageUpdate {
  status: OwnerMessageStatus;
  txHash?: Hex | null;
  error?: string | null;
}

export interface StatusCounts {
  items: Record<ItemStatus, number>;
  batches: Record<BatchStatus, number>;
}

export type PendingCounts = Record<(typeof PENDING_ITEM_STATUSES)[number], number>;

export interface StoreStats {
  /** Transactions committed by `write` (each holds one group of callers). */
  groupCommits: number;
  /** `write` calls acknowledged. */
  writes: number;
  /** Most callers ever acknowledged by one commit. */
  largestGroup: number;
}

/**
 * Every operation is one transaction; every promise resolves only after COMMIT, so whatever a
 * caller was told is on disk. Invalid input and refused transitions throw `StoreError`.
 */
export interface Store {
  readonly backend: "sqlite" | "postgres";
  /** Waits for pending writes, then closes. */
  close(): Promise<void>;

  /** Group commit: calls arriving together share one transaction; a failed commit rejects all of them. */
  write(set: WriteSet): Promise<WriteResult>;
  /**
   * Admission under the owners' locks, for when a guarded write found them stale: in one
   * transaction the store locks the owners' version rows (owner order, before any item's), hands
   * `reload` those owners' items (see `ownerItems`: with a known version, only what changed after
   * it), runs `decide` (synchronous; run again if the transaction is retried) and commits the set
   * it returns (its guard ignored). A store one process owns runs `decide` at once and writes its set.
   */
  admitLocked(
    owners: readonly OwnerGuard[],
    reload: (read: OwnerItems) => void,
    decide: () => WriteSet,
  ): Promise<WriteResult>;

  getItem(id: Hex): Promise<ItemRow | null>;
  /** Same order as `ids`; null where unknown. */
  getItems(ids: readonly Hex[]): Promise<(ItemRow | null)[]>;
  listItems(query: ListItemsQuery): Promise<Page<ItemRow>>;
  /** Every accepted, batched or submitted item (of these owners only, if given): ingest's pending ledger. */
  pendingItems(owners?: readonly Hex[]): Promise<ItemRow[]>;
  /**
   * The owners' items as a reader whose view is as of these versions needs them: for an owner with
   * a version, the rows changed after it (any status); with none (or where versions are not kept),
   * every pending item.
   */
  ownerItems(owners: readonly OwnerGuard[]): Promise<OwnerItems>;
  /** Owners whose pending items changed since `after` (null: every owner with a version). */
  ownerChanges(after: string | null): Promise<OwnerChanges>;
  /**
   * After each commit of this process that moved owner versions (its own admissions and batches),
   * the versions they moved to: each moved by one from the version before it. Never called where
   * versions are not kept.
   */
  onOwnVersions(listener: (bumped: OwnerVersion[]) => void): void;
  /** Accepted items of one kind and token by deadline, then device, then nonce. */
  readyItems(query: ReadyItemsQuery): Promise<ItemRow[]>;
  /** Every item and batch by status: scans both tables (an operator's or a test's question, not a probe's). */
  countByStatus(): Promise<StatusCounts>;
  /**
   * Items not settled yet (accepted, batched, submitted), read through the pending partial index:
   * its cost follows the queue, not the table, so health checks and scrapes can ask it often.
   */
  pendingCounts(): Promise<PendingCounts>;

  getTab(key: TabKey): Promise<TabRow | null>;
  /** Records what the chain says about a tab (creating the row if needed). */
  setTabSettled(key: TabKey, settled: TabSettled): Promise<TabRow>;

  /** Inserts the batch and marks its items batched; throws CONFLICT if any is not accepted any more. */
  createBatch(batch: NewBatch): Promise<number>;
  /** Records a signed transaction for the batch; call before broadcasting it. */
  addAttempt(batchId: number, attempt: NewAttempt): Promise<AttemptRow>;
  /** After the broadcast call returned: the batch is sent, its items submitted. */
  markBroadcast(hash: Hex): Promise<void>;
  getBatch(id: number): Promise<BatchDetail | null>;
  /** Newest first. */
  listBatches(query: ListBatchesQuery): Promise<Page<BatchRow>>;
  /** Created, sent and mined batches, oldest first, with their attempts. */
  openBatches(): Promise<BatchDetail[]>;
  /** Highest nonce of the sender's batches that use one, plus 1; null if none. Combine with the chain's. */
  nextNonce(sender: Hex): Promise<number | null>;

  markBatchMined(batchId: number, mined: BatchMined): Promise<void>;
  /** The batch's block left the canonical chain: back to sent, outcomes forgotten. */
  unmineBatch(batchId: number): Promise<void>;
  /** At confirmation depth: items take their mined outcome; settled vouchers advance their tab. */
  markBatchConfirmed(batchId: number): Promise<void>;
  /** Ends an open batch without settling it; returns the items put back to accepted. */
  requeueBatch(batchId: number, requeue: BatchRequeue): Promise<Hex[]>;
  /** Rejects accepted items; returns the ids that were rejected (others had moved on). */
  rejectItems(rejections: readonly ItemRejection[]): Promise<Hex[]>;

  /**
   * Keeps this instance alive for `leaseMs`; throws CONFLICT if another live process holds the same
   * sender. Returns the senders whose instances are alive (their open batches are theirs to follow).
   */
  heartbeat(lease: InstanceLease): Promise<{ live: Hex[] }>;

  getCursor(name: string): Promise<Cursor | null>;
  /**
   * Saves an events cursor. With `devices`, in the same transaction, applies the range's device
   * events to the registry of untouched devices (see `untouchedDevices`), which is complete through
   * the highest block of contiguous ranges read since the deployment block.
   */
  setCursor(name: string, cursor: Cursor, devices?: DeviceEventRange): Promise<void>;
  /**
   * Per device (same order): the policy of a device the contract assigned and nothing has written
   * since (no settlement, pause, revocation, tab closing, and in no batch of ours), whose word is
   * therefore `{ policyId, paused: false }` with every counter and nonce zero; null where that is
   * not known (touched, never assigned, or a registry not complete from the deployment).
   */
  untouchedDevices(devices: readonly Hex[]): Promise<(number | null)[]>;
  /** A reorg moved the events cursor back to `block`: devices assigned after it are no longer known untouched. */
  rewindDevices(block: number): Promise<void>;

  /** Idempotent by id. */
  insertOwnerMessage(message: NewOwnerMessage): Promise<{ inserted: boolean; message: OwnerMessageRow }>;
  updateOwnerMessage(id: Hex, update: OwnerMessageUpdate): Promise<OwnerMessageRow>;
  getOwnerMessage(id: Hex): Promise<OwnerMessageRow | null>;
  /** Accepted and submitted messages, oldest first. */
  openOwnerMessages(): Promise<OwnerMessageRow[]>;

  stats(): StoreStats;
}
