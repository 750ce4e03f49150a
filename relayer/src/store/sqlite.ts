// The SQLite backend (better-sqlite3, synchronous): every operation is one transaction that
// commits before its promise resolves. WAL with synchronous=FULL fsyncs the log at each commit,
// so an acknowledged write survives a crash or power loss; group commit shares that fsync.

import { accessSync, constants, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database, { type Database as Db, type Statement } from "better-sqlite3";
import { StoreError } from "./errors";
import { GroupCommitter } from "./group-commit";
import { type MigrationResult, migrate, REGISTRY_CURSOR } from "./migrations";
import {
  cursorNumber,
  isOpen,
  newItemRow,
  notFound,
  type Row,
  s,
  sOrNull,
  toAttempt,
  toBatch,
  toItem,
  toOwnerMessage,
  toTab,
} from "./rows";
import * as rules from "./rules";
import {
  type AttemptRow,
  BATCH_STATUSES,
  type BatchDetail,
  type BatchMined,
  type BatchRequeue,
  type BatchRow,
  type BatchStatus,
  type Cursor,
  type DeviceEventRange,
  type Hex,
  type InstanceLease,
  ITEM_KINDS,
  ITEM_STATUSES,
  type ItemRejection,
  type ItemRow,
  type ItemStatus,
  type ListBatchesQuery,
  type ListItemsQuery,
  type NewAttempt,
  type NewBatch,
  type NewOwnerMessage,
  type OwnerChanges,
  type OwnerGuard,
  type OwnerItems,
  type OwnerMessageRow,
  type OwnerMessageStatus,
  type OwnerMessageUpdate,
  type OwnerVersion,
  type Page,
  PENDING_ITEM_STATUSES,
  type PendingCounts,
  type ReadyItemsQuery,
  type StatusCounts,
  type Store,
  type StoreStats,
  type TabKey,
  type TabRow,
  type TabSettled,
  type WriteResult,
  type WriteSet,
} from "./types";
import * as v from "./validate";

export interface SqliteStoreOptions {
  /** Database file (created with its directory if missing), or ":memory:" for throwaway tests. */
  path: string;
  /** How long a write waits for another connection's lock before failing (default 5000 ms). */
  busyTimeoutMs?: number;
  /** Clock for acceptedAt/updatedAt/createdAt, unix ms (default Date.now). */
  now?: () => number;
  /**
   * Rows (items + tabs + updates) one group commit may hold; more callers wait for the next commit.
   * Bounds how long one transaction blocks the event loop (default 4000: ~0.2 s on the bench machine).
   */
  maxGroupRows?: number;
}

// Decimal TEXT compares numerically by length first (canonical decimals have no leading zeros).
const gt = (a: string, b: string) => `(length(${a}) > length(${b}) OR (length(${a}) = length(${b}) AND ${a} > ${b}))`;

/** Turns a SQLite failure into a StoreError that says what happened and what to do. */
function failure(cause: unknown, what: string, file: string): StoreError {
  if (cause instanceof StoreError) return cause;
  const code = (cause as { code?: string }).code ?? "";
  const detail = (cause as Error).message;
  const hint = code.startsWith("SQLITE_BUSY")
    ? "the database stayed locked by another connection past the busy timeout: is another process writing to it?"
    : code.startsWith("SQLITE_FULL")
      ? "the disk is full: free space"
      : code.startsWith("SQLITE_READONLY")
        ? `${file} is not writable: check its permissions and those of its directory`
        : code.startsWith("SQLITE_IOERR")
          ? "the disk reported an I/O error: check the disk"
          : "retry; if it persists, check the disk and the file";
  return new StoreError(
    "WRITE_FAILED",
    `${what} failed and nothing of it was stored (${detail}): ${hint}`,
    { file },
    { cause },
  );
}

export class SqliteStore implements Store {
  readonly backend = "sqlite" as const;
  private closed = false;
  private closing = false;
  private readonly statements = new Map<string, Statement>();
  private readonly writes: GroupCommitter<v.NormalizedWriteSet, WriteResult>;
  private readonly now: () => number;

  private constructor(
    private readonly db: Db,
    readonly file: string,
    /** What opening did to the schema, for the start-up log line. */
    readonly migration: MigrationResult,
    now: () => number,
    maxGroupRows: number,
  ) {
    this.now = now;
    const commitGroup = db.transaction((sets: v.NormalizedWriteSet[], at: number) =>
      sets.map((set) => this.applyWriteSet(set, at)),
    );
    this.writes = new GroupCommitter(
      (sets) => {
        try {
          return commitGroup.immediate(sets, this.now());
        } catch (error) {
          throw failure(error, `a group commit of ${sets.length} writes`, this.file);
        }
      },
      {
        weight: (set) => Math.max(1, set.items.length + set.tabs.length + set.updates.length),
        maxWeight: maxGroupRows,
      },
    );
  }

  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const memory = options.path === ":memory:";
    const file = memory ? options.path : resolve(options.path);
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    let db: Db;
    try {
      if (!memory) {
        mkdirSync(dirname(file), { recursive: true });
        accessSync(dirname(file), constants.W_OK); // WAL needs to create file-wal and file-shm beside it
      }
      db = new Database(file, { timeout: busyTimeoutMs });
    } catch (cause) {
      throw new StoreError(
        "CANNOT_OPEN",
        `cannot open ${file} for writing (${(cause as Error).message}): ` +
          "check that its directory exists or can be created and is writable by this user",
        { file },
        { cause },
      );
    }
    try {
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma("foreign_keys = ON");
      db.pragma("synchronous = FULL");
      const migration = migrate(db, file); // before WAL: a refused file is left exactly as it was
      if (!memory && db.pragma("journal_mode = WAL", { simple: true }) !== "wal") {
        throw new StoreError("CANNOT_OPEN", `${file} cannot use write-ahead logging: put it on a local disk`, {
          file,
        });
      }
      const maxGroupRows = options.maxGroupRows === undefined ? 4000 : v.int(options.maxGroupRows, "maxGroupRows");
      return new SqliteStore(db, file, migration, options.now ?? Date.now, Math.max(1, maxGroupRows));
    } catch (cause) {
      db.close();
      if (cause instanceof StoreError) throw cause;
      const code = (cause as { code?: string }).code;
      if (code === "SQLITE_NOTADB") {
        throw new StoreError("NOT_A_STORE", `${file} is not a SQLite database: point the relayer at another file`, {
          file,
        });
      }
      throw new StoreError(
        "CANNOT_OPEN",
        `cannot open ${file} (${(cause as Error).message}): check the file and its permissions`,
        { file },
        { cause },
      );
    }
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true; // refuse new writes, finish the queued ones
    await this.writes.drain();
    this.closed = true;
    this.db.close();
  }

  stats(): StoreStats {
    const s = this.writes.stats;
    return { groupCommits: s.groups, writes: s.calls, largestGroup: s.largestGroup };
  }

  // ---- writes from ingest: group commit ----

  async write(set: WriteSet): Promise<WriteResult> {
    this.assertOpen();
    if (this.closing) throw new StoreError("CLOSED", "the store is closing: open it again", { file: this.file });
    return this.writes.submit(v.writeSet(set, this.now()));
  }

  /** One process owns the file: nobody else admits meanwhile, so `decide` runs at once. */
  async admitLocked(_owners: readonly OwnerGuard[], _reload: (read: OwnerItems) => void, decide: () => WriteSet) {
    return this.write(decide());
  }

  private applyWriteSet(set: v.NormalizedWriteSet, now: number): WriteResult {
    const insert = this.sql(
      `INSERT INTO items (id, kind, device, owner, policy_id, payee, token, amount, nonce, tab_id, deadline,
         max_fee, fee, ref, signature, r, vs, spend, status, accepted_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?)
       ON CONFLICT (id) DO NOTHING`,
    );
    const items = set.items.map((it) => {
      const { changes } = insert.run(
        it.id,
        it.kind,
        it.device,
        it.owner,
        it.policyId,
        it.payee,
        it.token,
        s(it.amount),
        it.nonce === null ? null : Number(it.nonce),
        sOrNull(it.tabId),
        it.deadline,
        s(it.maxFee),
        s(it.fee),
        it.ref,
        it.signature,
        it.r,
        it.vs,
        s(it.spend),
        it.acceptedAt,
        now,
      );
      if (changes > 0) return { id: it.id, inserted: true, item: newItemRow(it, now) };
      return { id: it.id, inserted: false, item: this.itemSync(it.id)! };
    });
    const advance = this.sql(
      `INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, '0', NULL, ?)
       ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET
         newest_id = excluded.newest_id, newest_cumulative = excluded.newest_cumulative, updated_at = excluded.updated_at
       WHERE ${gt("excluded.newest_cumulative", "tabs.newest_cumulative")}`,
    );
    const tabs = set.tabs.map((t) => {
      const { changes } = advance.run(t.device, t.payee, t.token, s(t.tabId), t.newestId, s(t.newestCumulative), now);
      return { advanced: changes > 0, tab: this.tabSync(t)! };
    });
    const update = this.sql(
      "UPDATE items SET status = ?, reason = ?, message = ?, updated_at = ? WHERE id = ? AND status = 'accepted'",
    );
    const updates = set.updates.map((u) => {
      const { changes } = update.run(u.status, u.reason, u.message, now, u.id);
      if (changes > 0) return { id: u.id, applied: true, status: u.status };
      return { id: u.id, applied: false, status: this.itemSync(u.id)?.status ?? null };
    });
    // One process owns the file (the heartbeat refuses a second): no other writer to guard against.
    return { items, tabs, updates, owners: [], stale: [] };
  }

  async rejectItems(rejections: readonly ItemRejection[]): Promise<Hex[]> {
    const { updates } = await this.write({ updates: v.rejections(rejections) });
    return updates.filter((u) => u.applied).map((u) => u.id);
  }

  // ---- item reads ----

  async getItem(id: Hex): Promise<ItemRow | null> {
    return this.read(() => this.itemSync(v.hash32(id, "id")));
  }

  async getItems(ids: readonly Hex[]): Promise<(ItemRow | null)[]> {
    const wanted = ids.map((id, i) => v.hash32(id, `ids[${i}]`));
    return this.read(() => wanted.map((id) => this.itemSync(id)));
  }

  async listItems(query: ListItemsQuery): Promise<Page<ItemRow>> {
    const limit = v.limit(query?.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.status !== undefined) {
      where.push("items.status = ?");
      params.push(v.oneOf(query.status, ITEM_STATUSES, "status"));
    }
    if (query.device !== undefined) {
      where.push("items.device = ?");
      params.push(v.address(query.device, "device"));
    }
    if (query.kind !== undefined) {
      where.push("items.kind = ?");
      params.push(v.oneOf(query.kind, ITEM_KINDS, "kind"));
    }
    let sql: string;
    if (query.batchId !== undefined) {
      // Every item ever placed in the batch, in position order, with its current status.
      where.unshift("bi.batch_id = ?");
      params.unshift(v.int(query.batchId, "batchId"));
      if (query.after !== undefined) {
        where.push("bi.position > ?");
        params.push(cursorNumber(query.after));
      }
      sql = `SELECT items.*, bi.position AS page_key FROM batch_items bi JOIN items ON items.id = bi.item_id
             WHERE ${where.join(" AND ")} ORDER BY bi.position LIMIT ?`;
    } else {
      if (query.after !== undefined) {
        where.push("items.seq < ?");
        params.push(cursorNumber(query.after));
      }
      sql = `SELECT items.*, items.seq AS page_key FROM items ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
             ORDER BY items.seq DESC LIMIT ?`;
    }
    return this.read(() => {
      const rows = this.sql(sql).all(...params, limit + 1) as Row[];
      const more = rows.length > limit;
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const next = more ? String(last.page_key) : null;
      return { rows: page.map(toItem), next };
    });
  }

  async pendingItems(owners?: readonly Hex[]): Promise<ItemRow[]> {
    const only = owners === undefined ? undefined : new Set(owners.map((o, i) => v.address(o, `owners[${i}]`)));
    return this.read(() =>
      (
        this.sql(
          // Spelled as items_pending's WHERE, so SQLite reads that small index instead of the table.
          "SELECT * FROM items WHERE status IN ('accepted', 'batched', 'submitted') ORDER BY seq",
        ).all() as Row[]
      )
        .map(toItem)
        .filter((row) => only === undefined || only.has(row.owner)),
    );
  }

  /** Keeps no versions: never calls the listener. */
  onOwnVersions(_listener: (bumped: OwnerVersion[]) => void): void {}

  /** One process writes a SQLite file: nobody else changes an owner's pending items. */
  /** No versions are kept here: every pending item of the owners. */
  async ownerItems(owners: readonly OwnerGuard[]): Promise<OwnerItems> {
    return { rows: await this.pendingItems(owners.map((o) => o.owner)), since: new Map() };
  }

  async ownerChanges(_after: string | null): Promise<OwnerChanges> {
    this.assertOpen();
    return { owners: [], next: null };
  }

  /**
   * One relayer per SQLite file: a live heartbeat of another process (any sender) is refused. A
   * holder on this host whose process is gone (killed, crashed) is taken over at once.
   */
  async heartbeat(lease: InstanceLease): Promise<{ live: Hex[] }> {
    const l = v.instanceLease(lease);
    return this.transaction("recording a heartbeat", (now) => {
      const others = this.sql("SELECT * FROM relayer_instances WHERE holder <> ? AND expires_at > ?").all(
        l.holder,
        now,
      ) as Row[];
      const live = others.filter((r) => rules.holderMayBeAlive(String(r.holder)));
      if (live.length > 0)
        throw rules.instanceConflict(String(live[0].holder), String(live[0].sender), this.file, true);
      this.sql("DELETE FROM relayer_instances WHERE sender <> ?").run(l.sender);
      this.sql(
        `INSERT INTO relayer_instances (sender, holder, expires_at, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (sender) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
           updated_at = excluded.updated_at`,
      ).run(l.sender, l.holder, now + l.leaseMs, now);
      return { live: [l.sender] };
    });
  }

  async readyItems(query: ReadyItemsQuery): Promise<ItemRow[]> {
    const kind = v.oneOf(query?.kind, ITEM_KINDS, "kind");
    const token = v.address(query.token, "token");
    const limit = v.limit(query.limit);
    return this.read(() =>
      (
        this.sql(
          `SELECT * FROM items WHERE status = 'accepted' AND kind = ? AND token = ?
           ORDER BY deadline, device, nonce, seq LIMIT ?`,
        ).all(kind, token, limit) as Row[]
      ).map(toItem),
    );
  }

  async countByStatus(): Promise<StatusCounts> {
    return this.read(() => {
      const items = Object.fromEntries(ITEM_STATUSES.map((k) => [k, 0])) as Record<ItemStatus, number>;
      const batches = Object.fromEntries(BATCH_STATUSES.map((k) => [k, 0])) as Record<BatchStatus, number>;
      for (const r of this.sql("SELECT status, count(*) AS n FROM items GROUP BY status").all() as Row[]) {
        items[r.status as ItemStatus] = r.n as number;
      }
      for (const r of this.sql("SELECT status, count(*) AS n FROM batches GROUP BY status").all() as Row[]) {
        batches[r.status as BatchStatus] = r.n as number;
      }
      return { items, batches };
    });
  }

  async pendingCounts(): Promise<PendingCounts> {
    return this.read(() => {
      const counts = Object.fromEntries(PENDING_ITEM_STATUSES.map((k) => [k, 0])) as PendingCounts;
      for (const r of this.sql(
        `SELECT status, count(*) AS n FROM items WHERE status IN ('accepted', 'batched', 'submitted') GROUP BY status`,
      ).all() as Row[]) {
        counts[r.status as keyof PendingCounts] = r.n as number;
      }
      return counts;
    });
  }

  // ---- tabs ----

  async getTab(key: TabKey): Promise<TabRow | null> {
    const k = v.tabKey(key);
    return this.read(() => this.tabSync(k));
  }

  async setTabSettled(key: TabKey, settled: TabSettled): Promise<TabRow> {
    const k = v.tabKey(key);
    const { settledCumulative, closesAt } = v.tabSettled(settled);
    return this.transaction("recording a tab's settlement", (now) => {
      this.sql(
        `INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at, updated_at)
         VALUES (?, ?, ?, ?, NULL, '0', ?, ?, ?)
         ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET settled_cumulative = excluded.settled_cumulative,
           closes_at = CASE WHEN ? THEN excluded.closes_at ELSE tabs.closes_at END, updated_at = excluded.updated_at`,
      ).run(
        k.device,
        k.payee,
        k.token,
        s(k.tabId),
        s(settledCumulative),
        closesAt ?? null,
        now,
        closesAt !== undefined ? 1 : 0,
      );
      return this.tabSync(k)!;
    });
  }

  // ---- batches ----

  async createBatch(batch: NewBatch): Promise<number> {
    const b = v.newBatch(batch);
    return this.transaction("creating a batch", (now) => {
      const status = this.sql("SELECT status, kind, token, device FROM items WHERE id = ?");
      const devices = new Set<string>();
      rules.assertBatchable(b, (id) => {
        const row = status.get(id) as (rules.BatchCandidate & { device: string }) | undefined;
        if (row) devices.add(row.device);
        return row;
      });
      if (b.messageId !== null) {
        rules.assertMessageBatchable({ messageId: b.messageId, kind: b.kind }, this.ownerMessageSync(b.messageId));
      }
      let id: number;
      try {
        const row = this.sql(
          `INSERT INTO batches (kind, token, sender, nonce, status, item_count, gas_estimate, message_id, created_at,
             updated_at)
           VALUES (?, ?, ?, ?, 'created', ?, ?, ?, ?, ?) RETURNING id`,
        ).get(
          b.kind,
          b.token,
          b.sender,
          b.nonce,
          b.itemIds.length,
          sOrNull(b.gasEstimate),
          b.messageId,
          now,
          now,
        ) as Row;
        id = row.id as number;
      } catch (error) {
        if ((error as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") throw rules.nonceInUse(b.sender, b.nonce);
        throw error;
      }
      const mark = this.sql(
        "UPDATE items SET status = 'batched', batch_id = ?, position = ?, updated_at = ? WHERE id = ? AND status = 'accepted'",
      );
      const member = this.sql("INSERT INTO batch_items (batch_id, position, item_id) VALUES (?, ?, ?)");
      b.itemIds.forEach((itemId, position) => {
        mark.run(id, position, now, itemId);
        member.run(id, position, itemId);
      });
      // The batch may write its devices' words from now on: none of them is known untouched any more.
      this.touchDevices(devices, now);
      if (b.messageId !== null) this.setMessageSync(b.messageId, "submitted", now);
      return id;
    });
  }

  async addAttempt(batchId: number, attempt: NewAttempt): Promise<AttemptRow> {
    const id = v.int(batchId, "batchId");
    const a = v.newAttempt(attempt);
    return this.transaction("recording a transaction attempt", (now) => {
      const batch = this.batchRowSync(id);
      rules.assertTakesAttempt(batch, a);
      const existing = this.sql("SELECT * FROM attempts WHERE hash = ?").get(a.hash) as Row | undefined;
      if (existing) {
        if (existing.batch_id !== id) throw rules.attemptOfAnotherBatch(a.hash, existing.batch_id as number);
        return toAttempt(existing); // already recorded: recovery re-broadcasts it
      }
      const row = this.sql(
        `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *`,
      ).get(id, a.hash, a.raw, a.nonce, s(a.maxFeePerGas), s(a.maxPriorityFeePerGas), now) as Row;
      return toAttempt(row);
    });
  }

  async markBroadcast(hash: Hex): Promise<void> {
    const h = v.hash32(hash, "hash");
    this.transaction("recording a broadcast", (now) => {
      const attempt = this.sql("SELECT batch_id FROM attempts WHERE hash = ?").get(h) as Row | undefined;
      if (!attempt) throw notFound(`transaction ${h}`, { hash: h });
      const batch = this.batchRowSync(attempt.batch_id as number);
      rules.assertBroadcastable(batch);
      this.sql("UPDATE attempts SET broadcast_at = coalesce(broadcast_at, ?) WHERE hash = ?").run(now, h);
      if (batch.status === "mined") return; // items already carry the transaction that landed
      this.setBatchStatus(batch, "sent", now);
      this.sql(
        `UPDATE items SET status = 'submitted', tx_hash = ?, updated_at = ?
         WHERE batch_id = ? AND status IN ('batched', 'submitted')`,
      ).run(h, now, batch.id);
      if (batch.messageId !== null) this.setMessageSync(batch.messageId, "submitted", now, { txHash: h });
    });
  }

  async getBatch(id: number): Promise<BatchDetail | null> {
    const batchId = v.int(id, "id");
    return this.read(() => {
      const row = this.sql("SELECT * FROM batches WHERE id = ?").get(batchId) as Row | undefined;
      return row ? this.detailSync(toBatch(row)) : null;
    });
  }

  async listBatches(query: ListBatchesQuery): Promise<Page<BatchRow>> {
    const limit = v.limit(query?.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.status !== undefined) {
      where.push("status = ?");
      params.push(v.oneOf(query.status, BATCH_STATUSES, "status"));
    }
    if (query.after !== undefined) {
      where.push("id < ?");
      params.push(cursorNumber(query.after));
    }
    const sql = `SELECT * FROM batches ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ?`;
    return this.read(() => {
      const rows = (this.sql(sql).all(...params, limit + 1) as Row[]).map(toBatch);
      const page = rows.slice(0, limit);
      return { rows: page, next: rows.length > limit ? String(page[page.length - 1].id) : null };
    });
  }

  async openBatches(): Promise<BatchDetail[]> {
    return this.read(() =>
      (this.sql("SELECT * FROM batches WHERE status IN ('created', 'sent', 'mined') ORDER BY id").all() as Row[]).map(
        (r) => this.detailSync(toBatch(r)),
      ),
    );
  }

  async nextNonce(sender: Hex): Promise<number | null> {
    const a = v.address(sender, "sender");
    return this.read(() => {
      const r = this.sql(
        "SELECT max(nonce) AS n FROM batches WHERE sender = ? AND status NOT IN ('failed', 'dropped')",
      ).get(a) as Row;
      return r.n === null ? null : (r.n as number) + 1;
    });
  }

  async markBatchMined(batchId: number, mined: BatchMined): Promise<void> {
    const id = v.int(batchId, "batchId");
    const m = v.batchMined(mined);
    this.transaction("recording a mined batch", (now) => {
      const batch = this.batchRowSync(id);
      rules.assertBatchTransition(batch, "mined");
      const attempt = this.sql("SELECT batch_id FROM attempts WHERE hash = ?").get(m.txHash) as Row | undefined;
      rules.assertAttemptOf(attempt?.batch_id as number | undefined, id, m.txHash);
      rules.assertOutcomesCover(id, this.liveItemIds(id), m.items);
      this.sql(
        `UPDATE batches SET status = 'mined', tx_hash = ?, block_number = ?, block_hash = ?, gas_used = ?, updated_at = ?
         WHERE id = ?`,
      ).run(m.txHash, m.blockNumber, m.blockHash, s(m.gasUsed), now, id);
      this.sql("UPDATE attempts SET broadcast_at = coalesce(broadcast_at, ?) WHERE hash = ?").run(now, m.txHash);
      const outcome = this.sql(
        `UPDATE items SET status = 'submitted', outcome = ?, reason = ?, message = ?, tx_hash = ?, block_number = ?,
           block_hash = ?, updated_at = ? WHERE id = ?`,
      );
      for (const o of m.items)
        outcome.run(o.status, o.reason, o.message, m.txHash, m.blockNumber, m.blockHash, now, o.id);
      if (batch.messageId !== null) this.setMessageSync(batch.messageId, "submitted", now, { txHash: m.txHash });
    });
  }

  async unmineBatch(batchId: number): Promise<void> {
    const id = v.int(batchId, "batchId");
    this.transaction("recording a batch's block leaving the chain", (now) => {
      rules.assertMined(this.batchRowSync(id));
      this.sql(
        `UPDATE batches SET status = 'sent', tx_hash = NULL, block_number = NULL, block_hash = NULL, gas_used = NULL,
           updated_at = ? WHERE id = ?`,
      ).run(now, id);
      this.sql(
        `UPDATE items SET outcome = NULL, reason = NULL, message = NULL, block_number = NULL, block_hash = NULL,
           updated_at = ? WHERE batch_id = ? AND status = 'submitted'`,
      ).run(now, id);
    });
  }

  async markBatchConfirmed(batchId: number): Promise<void> {
    const id = v.int(batchId, "batchId");
    this.transaction("confirming a batch", (now) => {
      const batch = this.batchRowSync(id);
      rules.assertBatchTransition(batch, "confirmed");
      const items = (
        this.sql("SELECT * FROM items WHERE batch_id = ? AND status IN ('batched', 'submitted')").all(id) as Row[]
      ).map(toItem);
      rules.assertDecided(id, items);
      this.sql("UPDATE items SET status = outcome, updated_at = ? WHERE batch_id = ? AND status = 'submitted'").run(
        now,
        id,
      );
      const settle = this.sql(
        `INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)
         ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET
           settled_cumulative = excluded.settled_cumulative, updated_at = excluded.updated_at
         WHERE ${gt("excluded.settled_cumulative", "tabs.settled_cumulative")}`,
      );
      for (const it of items) {
        if (it.kind !== "voucher" || it.outcome !== "settled") continue;
        settle.run(it.device, it.payee, it.token, s(it.tabId!), it.id, s(it.amount), s(it.amount), now);
      }
      if (batch.messageId !== null) this.setMessageSync(batch.messageId, "confirmed", now, { error: null });
      this.setBatchStatus(batch, "confirmed", now);
    });
  }

  async requeueBatch(batchId: number, requeue: BatchRequeue): Promise<Hex[]> {
    const id = v.int(batchId, "batchId");
    const r = v.batchRequeue(requeue);
    return this.transaction("requeueing a batch", (now) => {
      const batch = this.batchRowSync(id);
      if (r.status === "failed" && isOpen(batch.status)) {
        const sent = this.sql("SELECT count(*) AS n FROM attempts WHERE batch_id = ? AND broadcast_at IS NOT NULL").get(
          id,
        ) as Row;
        rules.assertMayFail(batch, sent.n as number);
      }
      rules.assertBatchTransition(batch, r.status);
      const requeued = (
        this.sql(
          `UPDATE items SET status = 'accepted', batch_id = NULL, position = NULL, outcome = NULL, reason = NULL,
             message = NULL, tx_hash = NULL, block_number = NULL, block_hash = NULL, updated_at = ?
           WHERE batch_id = ? AND status IN ('batched', 'submitted') RETURNING id`,
        ).all(now, id) as Row[]
      ).map((row) => row.id as Hex);
      const rc = r.receipt;
      this.sql(
        `UPDATE batches SET status = ?, error = ?, tx_hash = ?, block_number = ?, block_hash = ?, gas_used = ?,
           updated_at = ? WHERE id = ?`,
      ).run(
        r.status,
        r.error,
        rc?.txHash ?? null,
        rc?.blockNumber ?? null,
        rc?.blockHash ?? null,
        rc ? s(rc.gasUsed) : null,
        now,
        id,
      );
      if (batch.messageId !== null) {
        // A reverted message is refused by the contract; one that never landed is submitted again.
        const next = rules.messageAfterRequeue(r, rc?.txHash ?? null);
        this.setMessageSync(batch.messageId, next.status, now, next);
      }
      return requeued;
    });
  }

  // ---- cursors ----

  async getCursor(name: string): Promise<Cursor | null> {
    const n = v.text(name, "name");
    return this.read(() => {
      const r = this.sql("SELECT block_number, block_hash FROM cursors WHERE name = ?").get(n) as Row | undefined;
      return r ? { blockNumber: r.block_number as number, blockHash: r.block_hash as Hex | null } : null;
    });
  }

  async setCursor(name: string, cursor: Cursor, devices?: DeviceEventRange): Promise<void> {
    const c = v.cursor(name, cursor);
    const range = devices === undefined ? undefined : v.deviceEventRange(devices, c.blockNumber);
    this.transaction("saving a cursor", (now) => {
      this.sql(
        `INSERT INTO cursors (name, block_number, block_hash, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash,
           updated_at = excluded.updated_at`,
      ).run(c.name, c.blockNumber, c.blockHash, now);
      if (range) this.applyDeviceEvents(range, c.blockNumber, now);
    });
  }

  /**
   * Applies a range's device events in chain order (see rules.ts, "untouched devices", for why the
   * result does not depend on which instance reads which range), then advances the registry's
   * cursor if the range joins it (or starts it, from the deployment).
   */
  private applyDeviceEvents(range: ReturnType<typeof v.deviceEventRange>, to: number, now: number): void {
    // Touches first (they clear existing rows), then assignments (a row they insert is fresh if no
    // touch followed; an existing fresh row moves to a newer assignment's policy).
    const effects = rules.deviceEffects(range.events);
    this.touchDevices(
      effects.filter((e) => e.touched).map((e) => e.device),
      now,
    );
    const assign = this.sql(
      `INSERT INTO devices (device, fresh, policy_id, block_number, log_index, updated_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (device) DO UPDATE SET policy_id = excluded.policy_id, block_number = excluded.block_number,
         log_index = excluded.log_index, updated_at = excluded.updated_at
       WHERE devices.fresh = 1 AND (devices.block_number, devices.log_index) < (excluded.block_number, excluded.log_index)`,
    );
    for (const { device, assigned: a } of effects) {
      if (a) assign.run(device, a.freshIfNew ? 1 : 0, a.policyId, a.blockNumber, a.logIndex, now);
    }
    const registry = this.sql("SELECT block_number FROM cursors WHERE name = ?").get(REGISTRY_CURSOR) as
      | Row
      | undefined;
    const through = registry?.block_number as number | undefined;
    if (!rules.registryAdvances(through, range.from, range.fromDeployment, to)) return;
    this.sql(
      `INSERT INTO cursors (name, block_number, block_hash, updated_at) VALUES (?, ?, NULL, ?)
       ON CONFLICT (name) DO UPDATE SET block_number = excluded.block_number, updated_at = excluded.updated_at
       WHERE cursors.block_number < excluded.block_number`,
    ).run(REGISTRY_CURSOR, to, now);
  }

  /** Devices whose word may now be written: not known untouched any more (rows that exist). */
  private touchDevices(devices: Iterable<string>, now: number): void {
    const touch = this.sql("UPDATE devices SET fresh = 0, updated_at = ? WHERE device = ? AND fresh = 1");
    for (const device of devices) touch.run(now, device);
  }

  async untouchedDevices(devices: readonly Hex[]): Promise<(number | null)[]> {
    const wanted = devices.map((d, i) => v.address(d, `devices[${i}]`));
    return this.read(() => {
      const one = this.sql(
        `SELECT policy_id FROM devices WHERE device = ? AND fresh = 1
           AND block_number <= (SELECT block_number FROM cursors WHERE name = '${REGISTRY_CURSOR}')`,
      );
      return wanted.map((d) => ((one.get(d) as Row | undefined)?.policy_id as number | undefined) ?? null);
    });
  }

  async rewindDevices(block: number): Promise<void> {
    const b = v.int(block, "block");
    this.transaction("rewinding the device registry", (now) => {
      this.sql("UPDATE devices SET fresh = 0, updated_at = ? WHERE fresh = 1 AND block_number > ?").run(now, b);
      this.sql("UPDATE cursors SET block_number = ?, updated_at = ? WHERE name = ? AND block_number > ?").run(
        b,
        now,
        REGISTRY_CURSOR,
        b,
      );
    });
  }

  // ---- owner messages ----

  async insertOwnerMessage(message: NewOwnerMessage): Promise<{ inserted: boolean; message: OwnerMessageRow }> {
    const m = v.ownerMessage(message);
    return this.transaction("storing an owner message", (now) => {
      const row = this.sql(
        `INSERT INTO owner_messages (id, kind, owner, body, status, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'accepted', ?, ?) ON CONFLICT (id) DO NOTHING RETURNING *`,
      ).get(m.id, m.kind, m.owner, m.body, now, now) as Row | undefined;
      if (row) return { inserted: true, message: toOwnerMessage(row) };
      return { inserted: false, message: this.ownerMessageSync(m.id)! };
    });
  }

  async updateOwnerMessage(id: Hex, update: OwnerMessageUpdate): Promise<OwnerMessageRow> {
    const key = v.hash32(id, "id");
    const u = v.ownerMessageUpdate(update);
    return this.transaction("updating an owner message", (now) => {
      const current = this.ownerMessageSync(key);
      rules.assertMessageTransition(key, current, u.status, false);
      this.sql("UPDATE owner_messages SET status = ?, tx_hash = ?, error = ?, updated_at = ? WHERE id = ?").run(
        u.status,
        u.txHash === undefined ? current.txHash : u.txHash,
        u.error === undefined ? current.error : u.error,
        now,
        key,
      );
      return this.ownerMessageSync(key)!;
    });
  }

  async getOwnerMessage(id: Hex): Promise<OwnerMessageRow | null> {
    const key = v.hash32(id, "id");
    return this.read(() => this.ownerMessageSync(key));
  }

  async openOwnerMessages(): Promise<OwnerMessageRow[]> {
    return this.read(() =>
      (
        this.sql(
          "SELECT * FROM owner_messages WHERE status IN ('accepted', 'submitted') ORDER BY created_at, id",
        ).all() as Row[]
      ).map(toOwnerMessage),
    );
  }

  // ---- helpers (synchronous, inside a transaction or a read) ----

  /** Moves an owner message along its state machine (a refused transition throws CONFLICT). */
  private setMessageSync(
    id: Hex,
    status: OwnerMessageStatus,
    now: number,
    change: { txHash?: Hex | null; error?: string | null } = {},
  ): void {
    const current = this.ownerMessageSync(id);
    rules.assertMessageTransition(id, current, status, true);
    this.sql("UPDATE owner_messages SET status = ?, tx_hash = ?, error = ?, updated_at = ? WHERE id = ?").run(
      status,
      change.txHash === undefined ? current.txHash : change.txHash,
      change.error === undefined ? current.error : change.error,
      now,
      id,
    );
  }

  private sql(text: string): Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError("CLOSED", "the store is closed: open it again", { file: this.file });
  }

  private read<T>(fn: () => T): T {
    this.assertOpen();
    return fn();
  }

  /** Runs `fn` in one IMMEDIATE transaction; StoreErrors pass through, SQLite failures are explained. */
  private transaction<T>(what: string, fn: (now: number) => T): T {
    this.assertOpen();
    try {
      return this.db.transaction(fn).immediate(this.now());
    } catch (error) {
      throw failure(error, what, this.file);
    }
  }

  private itemSync(id: Hex): ItemRow | null {
    const r = this.sql("SELECT * FROM items WHERE id = ?").get(id) as Row | undefined;
    return r ? toItem(r) : null;
  }

  private tabSync(k: TabKey): TabRow | null {
    const r = this.sql("SELECT * FROM tabs WHERE device = ? AND payee = ? AND token = ? AND tab_id = ?").get(
      k.device,
      k.payee,
      k.token,
      s(k.tabId),
    ) as Row | undefined;
    return r ? toTab(r) : null;
  }

  private ownerMessageSync(id: Hex): OwnerMessageRow | null {
    const r = this.sql("SELECT * FROM owner_messages WHERE id = ?").get(id) as Row | undefined;
    return r ? toOwnerMessage(r) : null;
  }

  private batchRowSync(id: number): BatchRow {
    const r = this.sql("SELECT * FROM batches WHERE id = ?").get(id) as Row | undefined;
    if (!r) throw rules.batchNotFound(id);
    return toBatch(r);
  }

  private detailSync(batch: BatchRow): BatchDetail {
    const attempts = (this.sql("SELECT * FROM attempts WHERE batch_id = ? ORDER BY id").all(batch.id) as Row[]).map(
      toAttempt,
    );
    const itemIds = (
      this.sql("SELECT item_id FROM batch_items WHERE batch_id = ? ORDER BY position").all(batch.id) as Row[]
    ).map((r) => r.item_id as Hex);
    return { ...batch, attempts, itemIds };
  }

  /** Items the batch still holds (batched or submitted), in position order. */
  private liveItemIds(id: number): Hex[] {
    return (
      this.sql("SELECT id FROM items WHERE batch_id = ? AND status IN ('batched', 'submitted') ORDER BY position").all(
        id,
      ) as Row[]
    ).map((r) => r.id as Hex);
  }

  private setBatchStatus(batch: BatchRow, to: BatchStatus, now: number): void {
    if (batch.status === to) return;
    rules.assertBatchTransition(batch, to);
    this.sql("UPDATE batches SET status = ?, updated_at = ? WHERE id = ?").run(to, now, batch.id);
  }
}

/** Opens (creating and migrating if needed) a SQLite store. */
export function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  return SqliteStore.open(options);
}
