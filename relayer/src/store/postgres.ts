// The PostgreSQL backend (node-postgres, a connection pool): every operation is one transaction that
// commits before its promise resolves, with synchronous_commit pinned on for each transaction, so an
// acknowledged write is flushed to the server's WAL (and to a synchronous standby, if there is one).
//
// Concurrency: transactions run at READ COMMITTED, and each state-machine operation first locks the
// rows its checks read (SELECT … FOR UPDATE: the batch row, else the items, then the owner message),
// so concurrent operations act as if run one after the other, as SQLite's single writer does. A
// nonce's uniqueness is the partial unique index's job; deadlocks and serialization failures are
// retried whole. write() is one group-commit transaction at a time, its rows written a statement per
// write set (multi-row, through unnest), in the callers' order.

import { type ClientBase, Pool, type PoolClient, types as pgTypes } from "pg";
import { StoreError } from "./errors";
import { GroupCommitter } from "./group-commit";
import { REGISTRY_CURSOR } from "./migrations";
import { migratePostgres, POSTGRES_MIGRATIONS, type PostgresMigrationResult } from "./postgres-migrations";
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
  type NewItem,
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
  type TabAdvance,
  type TabKey,
  type TabRow,
  type TabSettled,
  type WriteResult,
  type WriteSet,
} from "./types";
import * as v from "./validate";

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database (libpq's URL; options=-c search_path=NAME picks a schema). */
  url: string;
  /** How long a statement waits for another transaction's row lock before failing (default 5000 ms). */
  busyTimeoutMs?: number;
  /** Clock for acceptedAt/updatedAt/createdAt, unix ms (default Date.now). */
  now?: () => number;
  /** Rows (items + tabs + updates) one group commit may hold; more callers wait for the next commit (default 4000). */
  maxGroupRows?: number;
  /** Connections at most (default 10): one for the group commit, the rest for batches and reads. */
  poolSize?: number;
  /** How long opening a connection may take (default 10000 ms). */
  connectTimeoutMs?: number;
  /** How long opening waits for another relayer's migration to finish (default 60000 ms). */
  migrationLockTimeoutMs?: number;
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, "$1:***@").replace(/([?&]password=)[^&]*/gi, "$1***");
}

// BIGINT comes back as a JS number: every BIGINT column holds a safe integer (validate.ts checks them).
const INT8_OID = 20;
const parseInt8 = (value: string) => Number(value);
const TYPES = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary"
      ? parseInt8
      : pgTypes.getTypeParser(oid, format as "text")) as typeof pgTypes.getTypeParser,
};

// Durability is the session's setting: a synchronous_commit = off in the database, the role or the URL must
// not weaken it. One simple-protocol query: no extra round trip.
const BEGIN_WRITE = "BEGIN; SET LOCAL synchronous_commit = on";
/** Pending items of some owners ($1), as ingest's ledger counts them. */
const OWNERS_PENDING =
  "SELECT * FROM items WHERE owner = ANY($1::text[]) AND status IN ('accepted', 'batched', 'submitted') ORDER BY seq";
/**
 * Items of owners ($1) changed after a version each ($2, same order; migration 4 stamps every row
 * with the version of the transaction that last wrote it), whatever their status now.
 */
const OWNERS_CHANGED = `SELECT i.* FROM unnest($1::text[], $2::bigint[]) AS o(owner, after)
  JOIN items i ON i.owner = o.owner AND i.owner_version > o.after ORDER BY i.seq`;
/** Versions of one owner remembered as this process's own, and owners remembered. */
const OWN_BUMPS_KEPT = 256;
const OWN_BUMP_OWNERS = 100_000;
const BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

const RETRYABLE = new Set(["40001", "40P01"]); // serialization failure, deadlock detected: nothing was applied
const MAX_ATTEMPTS = 5;

/** A lost or refused connection (rather than an error the server reported about our statement). */
function connectionLost(cause: unknown): boolean {
  const code = (cause as { code?: string }).code ?? "";
  const message = (cause as Error)?.message ?? "";
  return (
    /^(08|57P)/.test(code) ||
    [
      "ECONNREFUSED",
      "ECONNRESET",
      "ETIMEDOUT",
      "EPIPE",
      "ENOTFOUND",
      "EHOSTUNREACH",
      "ENETUNREACH",
      "EAI_AGAIN",
    ].includes(code) ||
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
      message,
    )
  );
}

type Phase = "connect" | "body" | "commit";

/** Turns a PostgreSQL failure into a StoreError that says what happened and what to do. */
function failure(cause: unknown, what: string, database: string, phase: Phase): StoreError {
  if (cause instanceof StoreError) return cause;
  const code = (cause as { code?: string }).code ?? "";
  const detail = (cause as Error).message;
  const lost = connectionLost(cause);
  if (lost && phase === "commit") {
    return new StoreError(
      "WRITE_FAILED",
      `${what}: the connection to PostgreSQL broke during COMMIT, so it may or may not have been stored (${detail}): ` +
        "check that the server is up, then re-read or retry (writes are idempotent by id)",
      { database, outcomeUnknown: true },
      { cause },
    );
  }
  const hint = lost
    ? `the connection to PostgreSQL at ${database} failed: check that the server is up and reachable, then retry`
    : code === "53100"
      ? "the database server's disk is full: free space"
      : code.startsWith("53")
        ? "the database server ran out of resources (memory or connections): check its limits"
        : code === "25006"
          ? "the server is a read-only standby: point the relayer at the primary"
          : code === "55P03" || code === "57014"
            ? "a row stayed locked by another transaction past the lock timeout: is another process writing to it?"
            : RETRYABLE.has(code)
              ? "it kept conflicting with concurrent transactions: retry"
              : code === "42501"
                ? "the database user lacks a privilege on the relayer's tables: grant it"
                : "retry; if it persists, check the database server's log";
  return new StoreError(
    "WRITE_FAILED",
    `${what} failed and nothing of it was stored (${detail}): ${hint}`,
    { database, ...(code ? { sqlState: code } : {}) },
    { cause },
  );
}

const ITEMS_INSERT = `
  INSERT INTO items (id, kind, device, owner, policy_id, payee, token, amount, nonce, tab_id, deadline,
    max_fee, fee, ref, signature, r, vs, spend, status, accepted_at, updated_at)
  SELECT id, kind, device, owner, policy_id, payee, token, amount, nonce, tab_id, deadline,
    max_fee, fee, ref, signature, r, vs, spend, 'accepted', accepted_at, $20
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::numeric[],
    $9::bigint[], $10::numeric[], $11::bigint[], $12::numeric[], $13::numeric[], $14::text[], $15::text[],
    $16::text[], $17::text[], $18::numeric[], $19::bigint[])
    WITH ORDINALITY AS t(id, kind, device, owner, policy_id, payee, token, amount, nonce, tab_id, deadline,
      max_fee, fee, ref, signature, r, vs, spend, accepted_at, ord)
  ORDER BY ord
  ON CONFLICT (id) DO NOTHING
  RETURNING id`;

function itemColumns(items: readonly Required<v.NormalizedWriteSet["items"][number]>[], now: number): unknown[] {
  const cols: unknown[][] = Array.from({ length: 19 }, () => []);
  for (const it of items) {
    const row = [
      it.id,
      it.kind,
      it.device,
      it.owner,
      it.policyId,
      it.payee,
      it.token,
      s(it.amount),
      it.nonce === null ? null : s(it.nonce),
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
    ];
    for (let i = 0; i < row.length; i++) cols[i].push(row[i]);
  }
  return [...cols, now];
}

const TAB_ADVANCE = `
  INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at,
    updated_at)
  SELECT device, payee, token, tab_id, newest_id, newest_cumulative, 0, NULL, $7
  FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::numeric[])
    AS t(device, payee, token, tab_id, newest_id, newest_cumulative)
  ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET
    newest_id = excluded.newest_id, newest_cumulative = excluded.newest_cumulative, updated_at = excluded.updated_at
  WHERE excluded.newest_cumulative > tabs.newest_cumulative
  RETURNING *`;

const tabKeyString = (k: TabKey) => `${k.device}:${k.payee}:${k.token}:${k.tabId}`;

/** Splits a group into consecutive runs of write sets that touch disjoint item ids (as items or updates). */
function disjointRuns(sets: readonly v.NormalizedWriteSet[]): v.NormalizedWriteSet[][] {
  const runs: v.NormalizedWriteSet[][] = [];
  let run: v.NormalizedWriteSet[] = [];
  let taken = new Set<Hex>();
  for (const set of sets) {
    const ids = new Set<Hex>([...set.items.map((it) => it.id), ...set.updates.map((u) => u.id)]);
    if ([...ids].some((id) => taken.has(id))) {
      runs.push(run);
      run = [];
      taken = new Set();
    }
    run.push(set);
    for (const id of ids) taken.add(id);
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

export class PostgresStore implements Store {
  readonly backend = "postgres" as const;
  private closed = false;
  private closing = false;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly writes: GroupCommitter<v.NormalizedWriteSet, WriteResult>;
  private readonly now: () => number;
  /** Owner versions bumped by the transaction on each client, told to listeners once it commits. */
  private readonly bumped = new Map<ClientBase, (OwnerVersion & { settle(committed: boolean): void })[]>();
  /** `owner:version` bumped by a transaction of ours still in flight: resolves true if it committed. */
  private readonly inflightBumps = new Map<string, Promise<boolean>>();
  private readonly versionListeners: ((bumped: OwnerVersion[]) => void)[] = [];
  /** Recent versions this process's own commits produced, per owner (see applyGroup's guard). */
  private readonly ownBumps = new Map<string, Set<number>>();

  private constructor(
    private readonly pool: Pool,
    /** The database's URL without its password. */
    readonly database: string,
    /** What opening did to the schema, for the start-up log line. */
    readonly migration: PostgresMigrationResult,
    now: () => number,
    maxGroupRows: number,
  ) {
    this.now = now;
    this.writes = new GroupCommitter(
      (sets) =>
        this.transaction(`a group commit of ${sets.length} writes`, async (c, at) => {
          return this.applyGroup(c, sets, at);
        }),
      {
        weight: (set) => Math.max(1, set.items.length + set.tabs.length + set.updates.length),
        maxWeight: maxGroupRows,
      },
    );
  }

  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    if (typeof options?.url !== "string" || !/^postgres(ql)?:\/\//i.test(options.url)) {
      throw new StoreError("INVALID_INPUT", "url must be a postgres:// or postgresql:// URL");
    }
    const database = redactUrl(options.url);
    const maxGroupRows = options.maxGroupRows === undefined ? 4000 : v.int(options.maxGroupRows, "maxGroupRows");
    const poolSize = options.poolSize === undefined ? 10 : v.int(options.poolSize, "poolSize");
    const pool = new Pool({
      connectionString: options.url,
      max: Math.max(1, poolSize),
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      lock_timeout: options.busyTimeoutMs ?? 5000,
      // A session stuck inside a transaction (a hung process) gives its row locks back.
      idle_in_transaction_session_timeout: 60_000,
      fallback_application_name: "machinepay-relayer",
      keepAlive: true,
      types: TYPES,
    });
    // An idle connection that dies is dropped by the pool and replaced at the next checkout.
    pool.on("error", () => {});
    let client: PoolClient;
    try {
      client = await pool.connect();
    } catch (cause) {
      await pool.end().catch(() => {});
      throw new StoreError(
        "CANNOT_OPEN",
        `cannot connect to PostgreSQL at ${database} (${(cause as Error).message}): check that the server is up ` +
          "and reachable, and the URL's host, port, database, user and password",
        { database },
        { cause },
      );
    }
    let migration: PostgresMigrationResult;
    try {
      migration = await migratePostgres(client, database, POSTGRES_MIGRATIONS, {
        lockTimeoutMs: options.migrationLockTimeoutMs,
      });
      client.release();
    } catch (cause) {
      client.release(true);
      await pool.end().catch(() => {});
      if (cause instanceof StoreError) throw cause;
      throw new StoreError(
        "CANNOT_OPEN",
        `cannot open the store in ${database} (${(cause as Error).message}): check the database and the user's privileges`,
        { database },
        { cause },
      );
    }
    return new PostgresStore(pool, database, migration, options.now ?? Date.now, Math.max(1, maxGroupRows));
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true; // refuse new writes, finish the queued ones and every operation under way
    await this.writes.drain();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    this.closed = true;
    await this.pool.end();
  }

  stats(): StoreStats {
    const st = this.writes.stats;
    return { groupCommits: st.groups, writes: st.calls, largestGroup: st.largestGroup };
  }

  // ---- writes from ingest: group commit ----

  async write(set: WriteSet): Promise<WriteResult> {
    this.assertOpen();
    if (this.closing)
      throw new StoreError("CLOSED", "the store is closing: open it again", { database: this.database });
    return this.writes.submit(v.writeSet(set, this.now()));
  }

  async admitLocked(
    owners: readonly OwnerGuard[],
    reload: (read: OwnerItems) => void,
    decide: () => WriteSet,
  ): Promise<WriteResult> {
    const known = this.knownVersions(owners);
    if (this.closing)
      throw new StoreError("CLOSED", "the store is closing: open it again", { database: this.database });
    return this.transaction("admitting under the owners' locks", async (c, now) => {
      const versions = await this.bumpOwners(
        c,
        known.map((o) => o.owner),
      );
      // Under the owners' locks: nothing of theirs changes until this commits.
      reload(await this.readOwnerItems(c, known));
      const set = v.writeSet(decide(), now);
      // Decisions name only the locked owners (an item's owner is its device's); any other is locked
      // now, out of order (a deadlock then is retried whole, as any).
      const more = set.items.map((i) => i.owner).filter((o) => !versions.has(o));
      for (const [o, n] of await this.bumpOwners(c, more)) versions.set(o, n);
      const items = await this.applyItems(c, set.items, now);
      const tabs = await this.applyTabs(c, set.tabs, now);
      const updates = await this.applyUpdates(c, set.updates, now);
      return {
        items,
        tabs,
        updates,
        owners: [...versions].map(([owner, version]) => ({ owner: owner as Hex, version })),
        stale: [],
      };
    });
  }

  /**
   * Applies a group's write sets as if one after the other, in few statements: consecutive sets that
   * touch disjoint items (as items or updates) cannot see each other's effects, so such a run is
   * written as one statement per kind of row (items, then tabs, then updates), in the callers' order.
   */
  private async applyGroup(c: ClientBase, all: readonly v.NormalizedWriteSet[], now: number): Promise<WriteResult[]> {
    // Lock order, everywhere: the owners' version rows (sorted), then items. Every owner whose
    // pending items this group may change is bumped first; a guarded set whose owner another
    // process bumped since its decisions is refused whole (ingest re-reads and decides again).
    const updateIds = all.flatMap((set) => set.updates.map((u) => u.id));
    const owners = new Set<string>(
      all.flatMap((set) => [...set.items.map((i) => i.owner), ...set.guard.map((g) => g.owner)]),
    );
    for (const o of await this.ownersOf(c, updateIds)) owners.add(o);
    const versions = await this.bumpOwners(c, [...owners]);
    // Fresh if every version since the guard's was made by this process's own commits (its batches
    // and admissions, which its ledger already counts or follows); any other process's is stale.
    // A version our own transaction made may be committed at the server (this one read it) before
    // that transaction's COMMIT answer reached us: then its outcome is awaited (it is on its way).
    const fresh = async (g: OwnerGuard) => {
      const mine = this.ownBumps.get(g.owner);
      const before = versions.get(g.owner)! - 1;
      const from = g.version ?? 0;
      if (before < from || before - from > OWN_BUMPS_KEPT) return false;
      for (let k = from + 1; k <= before; k++) {
        if (mine?.has(k)) continue;
        const landing = this.inflightBumps.get(`${g.owner}:${k}`);
        if (!landing || !(await landing)) return false;
      }
      return true;
    };
    const stale: OwnerVersion[][] = [];
    for (const set of all) {
      const moved: OwnerVersion[] = [];
      for (const g of set.guard) if (!(await fresh(g))) moved.push({ owner: g.owner, version: versions.get(g.owner)! });
      stale.push(moved);
    }
    const sets = all.filter((_, i) => stale[i].length === 0);
    const written: WriteResult[] = [];
    for (const run of disjointRuns(sets)) {
      const items = await this.applyItems(
        c,
        run.flatMap((set) => set.items),
        now,
      );
      const tabs = await this.applyTabs(
        c,
        run.flatMap((set) => set.tabs),
        now,
      );
      const updates = await this.applyUpdates(
        c,
        run.flatMap((set) => set.updates),
        now,
      );
      let [i, t, u] = [0, 0, 0];
      for (const set of run) {
        const [ni, nt, nu] = [i + set.items.length, t + set.tabs.length, u + set.updates.length];
        written.push({
          items: items.slice(i, ni),
          tabs: tabs.slice(t, nt),
          updates: updates.slice(u, nu),
          owners: set.guard.map((g) => ({ owner: g.owner, version: versions.get(g.owner)! })),
          stale: [],
        });
        [i, t, u] = [ni, nt, nu];
      }
    }
    let next = 0;
    return all.map((_, k) =>
      stale[k].length > 0 ? { items: [], tabs: [], updates: [], owners: [], stale: stale[k] } : written[next++],
    );
  }

  /** Distinct owners of these items (an item's owner never changes: read without locking). */
  private async ownersOf(c: ClientBase, ids: readonly Hex[], batchId?: number): Promise<string[]> {
    if (ids.length === 0 && batchId === undefined) return [];
    const r =
      batchId === undefined
        ? await c.query("SELECT DISTINCT owner FROM items WHERE id = ANY($1::text[])", [ids])
        : await c.query("SELECT DISTINCT owner FROM items WHERE batch_id = $1", [batchId]);
    return r.rows.map((row) => row.owner as string);
  }

  /**
   * Bumps the owners' versions in owner order (so two transactions never wait for each other in a
   * cycle), holding their rows until commit: no other relayer admits for them meanwhile.
   */
  private async bumpOwners(c: ClientBase, owners: readonly string[]): Promise<Map<string, number>> {
    if (owners.length === 0) return new Map();
    const sorted = [...new Set(owners)].sort();
    const r: { rows: Row[] } = await c.query(
      `INSERT INTO owner_versions (owner, version, changed_xid)
       SELECT o, 1, pg_current_xact_id() FROM unnest($1::text[]) WITH ORDINALITY AS u(o, n) ORDER BY n
       ON CONFLICT (owner) DO UPDATE SET version = owner_versions.version + 1, changed_xid = excluded.changed_xid
       RETURNING owner, version`,
      [sorted],
    );
    const out = new Map(r.rows.map((row) => [row.owner as string, row.version as number]));
    const bumped = this.bumped.get(c) ?? [];
    for (const [owner, version] of out) {
      let settle!: (committed: boolean) => void;
      const landing = new Promise<boolean>((r) => {
        settle = r;
      });
      const key = `${owner}:${version}`;
      this.inflightBumps.set(key, landing);
      bumped.push({
        owner: owner as Hex,
        version,
        settle: (committed: boolean) => {
          if (this.inflightBumps.get(key) === landing) this.inflightBumps.delete(key);
          settle(committed);
        },
      });
    }
    this.bumped.set(c, bumped);
    return out;
  }

  /** Inserts new items in order; an id given twice is inserted at its first occurrence. */
  private async applyItems(c: ClientBase, items: readonly Required<NewItem>[], now: number) {
    if (items.length === 0) return [];
    const inserted = new Set((await c.query(ITEMS_INSERT, itemColumns(items, now))).rows.map((r) => r.id as Hex));
    const fresh = new Map<Hex, ItemRow>();
    const known = [...new Set(items.filter((it) => !inserted.has(it.id)).map((it) => it.id))];
    const stored = known.length > 0 ? await this.itemsIn(c, known) : new Map<Hex, ItemRow>();
    return items.map((it) => {
      if (inserted.has(it.id) && !fresh.has(it.id)) {
        const row = newItemRow(it, now);
        fresh.set(it.id, row);
        return { id: it.id, inserted: true, item: row };
      }
      return { id: it.id, inserted: false, item: (fresh.get(it.id) ?? stored.get(it.id))! };
    });
  }

  /** Moves tabs forward in order; distinct tabs (the usual case) in one statement. */
  private async applyTabs(c: ClientBase, tabs: readonly TabAdvance[], now: number) {
    if (tabs.length === 0) return [];
    const keys = tabs.map(tabKeyString);
    if (new Set(keys).size !== keys.length) {
      const out: WriteResult["tabs"] = [];
      for (const t of tabs) {
        const r = await c.query(TAB_ADVANCE, [
          [t.device],
          [t.payee],
          [t.token],
          [s(t.tabId)],
          [t.newestId],
          [s(t.newestCumulative)],
          now,
        ]);
        out.push(
          r.rows.length > 0
            ? { advanced: true, tab: toTab(r.rows[0]) }
            : { advanced: false, tab: (await this.tabIn(c, t))! },
        );
      }
      return out;
    }
    const cols = [
      tabs.map((t) => t.device),
      tabs.map((t) => t.payee),
      tabs.map((t) => t.token),
      tabs.map((t) => s(t.tabId)),
    ];
    const r = await c.query(TAB_ADVANCE, [
      ...cols,
      tabs.map((t) => t.newestId),
      tabs.map((t) => s(t.newestCumulative)),
      now,
    ]);
    const advanced = new Map(r.rows.map((row) => [tabKeyString(toTab(row)), toTab(row)]));
    const others = new Map<string, TabRow>();
    if (advanced.size < tabs.length) {
      const rest = await c.query(
        `SELECT tabs.* FROM tabs JOIN unnest($1::text[], $2::text[], $3::text[], $4::numeric[]) AS k(device, payee, token, tab_id)
           USING (device, payee, token, tab_id)`,
        cols,
      );
      for (const row of rest.rows) others.set(tabKeyString(toTab(row)), toTab(row));
    }
    return keys.map((k) =>
      advanced.has(k) ? { advanced: true, tab: advanced.get(k)! } : { advanced: false, tab: others.get(k)! },
    );
  }

  /** Item updates in order; distinct ids (the usual case) in one statement, since their order cannot matter. */
  private async applyUpdates(c: ClientBase, updates: readonly v.NormalizedUpdate[], now: number) {
    if (updates.length === 0) return [];
    const ids = updates.map((u) => u.id);
    const applied: boolean[] = [];
    if (new Set(ids).size === ids.length) {
      const r = await c.query(
        `UPDATE items SET status = u.status, reason = u.reason, message = u.message, updated_at = $5
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(id, status, reason, message)
         WHERE items.id = u.id AND items.status = 'accepted'
         RETURNING items.id`,
        [ids, updates.map((u) => u.status), updates.map((u) => u.reason), updates.map((u) => u.message), now],
      );
      const done = new Set(r.rows.map((row) => row.id as Hex));
      for (const id of ids) applied.push(done.has(id));
    } else {
      for (const u of updates) {
        const r = await c.query(
          "UPDATE items SET status = $1, reason = $2, message = $3, updated_at = $4 WHERE id = $5 AND status = 'accepted'",
          [u.status, u.reason, u.message, now, u.id],
        );
        applied.push((r.rowCount ?? 0) > 0);
      }
    }
    // Those not applied report the status that stopped them (after the whole run: no later set touches them).
    const others = updates.filter((_, i) => !applied[i]).map((u) => u.id);
    const status = new Map<Hex, ItemStatus>();
    if (others.length > 0) {
      const r = await c.query("SELECT id, status FROM items WHERE id = ANY($1::text[])", [others]);
      for (const row of r.rows) status.set(row.id as Hex, row.status as ItemStatus);
    }
    return updates.map((u, i) =>
      applied[i]
        ? { id: u.id, applied: true, status: u.status as ItemStatus }
        : { id: u.id, applied: false, status: status.get(u.id) ?? null },
    );
  }

  async rejectItems(rejections: readonly ItemRejection[]): Promise<Hex[]> {
    const { updates } = await this.write({ updates: v.rejections(rejections) });
    return updates.filter((u) => u.applied).map((u) => u.id);
  }

  // ---- item reads ----

  async getItem(id: Hex): Promise<ItemRow | null> {
    const key = v.hash32(id, "id");
    const rows = await this.query("reading an item", "SELECT * FROM items WHERE id = $1", [key]);
    return rows.length > 0 ? toItem(rows[0]) : null;
  }

  async getItems(ids: readonly Hex[]): Promise<(ItemRow | null)[]> {
    const wanted = ids.map((id, i) => v.hash32(id, `ids[${i}]`));
    this.assertOpen();
    if (wanted.length === 0) return [];
    const rows = await this.query("reading items", "SELECT * FROM items WHERE id = ANY($1::text[])", [wanted]);
    const byId = new Map(rows.map((r) => [r.id as Hex, toItem(r)]));
    return wanted.map((id) => byId.get(id) ?? null);
  }

  async listItems(query: ListItemsQuery): Promise<Page<ItemRow>> {
    const limit = v.limit(query?.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    const p = (value: unknown) => {
      params.push(value);
      return `$${params.length}`;
    };
    let sql: string;
    if (query.batchId !== undefined) {
      // Every item ever placed in the batch, in position order, with its current status.
      where.push(`bi.batch_id = ${p(v.int(query.batchId, "batchId"))}`);
    }
    if (query.status !== undefined) where.push(`items.status = ${p(v.oneOf(query.status, ITEM_STATUSES, "status"))}`);
    if (query.device !== undefined) where.push(`items.device = ${p(v.address(query.device, "device"))}`);
    if (query.kind !== undefined) where.push(`items.kind = ${p(v.oneOf(query.kind, ITEM_KINDS, "kind"))}`);
    if (query.batchId !== undefined) {
      if (query.after !== undefined) where.push(`bi.position > ${p(cursorNumber(query.after))}`);
      sql = `SELECT items.*, bi.position AS page_key FROM batch_items bi JOIN items ON items.id = bi.item_id
             WHERE ${where.join(" AND ")} ORDER BY bi.position LIMIT ${p(limit + 1)}`;
    } else {
      if (query.after !== undefined) where.push(`items.seq < ${p(cursorNumber(query.after))}`);
      sql = `SELECT items.*, items.seq AS page_key FROM items ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
             ORDER BY items.seq DESC LIMIT ${p(limit + 1)}`;
    }
    const rows = await this.query("listing items", sql, params);
    const more = rows.length > limit;
    const page = rows.slice(0, limit);
    const next = more ? String(page[page.length - 1].page_key) : null;
    return { rows: page.map(toItem), next };
  }

  async ownerItems(owners: readonly OwnerGuard[]): Promise<OwnerItems> {
    const known = this.knownVersions(owners);
    return this.read("reading owners' changed items", (c) => this.readOwnerItems(c, known));
  }

  private knownVersions(owners: readonly OwnerGuard[]): { owner: string; version: number | null }[] {
    return owners.map((o, i) => {
      const owner = v.address(o.owner, `owners[${i}].owner`);
      if (o.version !== null && !(Number.isSafeInteger(o.version) && o.version >= 0)) {
        throw new StoreError(
          "INVALID_INPUT",
          `owners[${i}].version must be a version from this store, got ${o.version}`,
          {
            field: `owners[${i}].version`,
          },
        );
      }
      return { owner, version: o.version };
    });
  }

  /** Owners with a version: their rows changed after it; the others: their pending items. */
  private async readOwnerItems(
    c: ClientBase,
    owners: readonly { owner: string; version: number | null }[],
  ): Promise<OwnerItems> {
    const full = owners.filter((o) => o.version === null).map((o) => o.owner);
    const delta = owners.filter((o) => o.version !== null);
    const rows: ItemRow[] = [];
    if (full.length > 0) for (const r of (await c.query(OWNERS_PENDING, [full])).rows) rows.push(toItem(r));
    if (delta.length > 0) {
      const r = await c.query(OWNERS_CHANGED, [delta.map((o) => o.owner), delta.map((o) => o.version)]);
      for (const row of r.rows) rows.push(toItem(row));
    }
    return { rows, since: new Map(delta.map((o) => [o.owner.toLowerCase(), o.version!])) };
  }

  async pendingItems(owners?: readonly Hex[]): Promise<ItemRow[]> {
    if (owners !== undefined) {
      const only = owners.map((o, i) => v.address(o, `owners[${i}]`));
      const rows = await this.query("reading owners' pending items", OWNERS_PENDING, [only]);
      return rows.map(toItem);
    }
    const rows = await this.query(
      "reading the pending items",
      "SELECT * FROM items WHERE status IN ('accepted', 'batched', 'submitted') ORDER BY seq",
    );
    return rows.map(toItem);
  }

  /**
   * Owners changed by transactions that were not finished at the previous call's snapshot, or began
   * after it (`after` is that snapshot's xmin): a commit that lands late is still seen.
   */
  async ownerChanges(after: string | null): Promise<OwnerChanges> {
    if (after !== null && !/^\d+$/.test(String(after))) {
      throw new StoreError("INVALID_INPUT", `after must be a cursor from ownerChanges, got ${JSON.stringify(after)}`, {
        field: "after",
      });
    }
    return this.read("reading changed owners", async (c) => {
      const next = (await c.query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x")).rows[0].x as string;
      const r =
        after === null
          ? await c.query("SELECT owner, version FROM owner_versions")
          : await c.query("SELECT owner, version FROM owner_versions WHERE changed_xid >= $1::xid8", [after]);
      return { owners: r.rows.map((row) => ({ owner: row.owner as Hex, version: row.version as number })), next };
    });
  }

  private noteOwnBump(b: OwnerVersion): void {
    let mine = this.ownBumps.get(b.owner);
    if (!mine) {
      mine = new Set();
      this.ownBumps.set(b.owner, mine);
    }
    mine.add(b.version);
    // Only recent versions matter (a guard is as old as one admission); Sets iterate oldest first.
    if (mine.size > OWN_BUMPS_KEPT) mine.delete(mine.values().next().value!);
    if (this.ownBumps.size > OWN_BUMP_OWNERS) this.ownBumps.delete(this.ownBumps.keys().next().value!);
  }

  /** Every commit of this process that bumped owner versions (its own changes) reports them here. */
  onOwnVersions(listener: (bumped: OwnerVersion[]) => void): void {
    this.versionListeners.push(listener);
  }

  /** Keeps this sender's instance alive; refuses a sender another live process holds. */
  async heartbeat(lease: InstanceLease): Promise<{ live: Hex[] }> {
    const l = v.instanceLease(lease);
    return this.transaction("recording a heartbeat", async (c, now) => {
      const held = await c.query("SELECT holder, expires_at FROM relayer_instances WHERE sender = $1 FOR UPDATE", [
        l.sender,
      ]);
      const other = held.rows[0];
      if (
        other &&
        other.holder !== l.holder &&
        (other.expires_at as number) > now &&
        rules.holderMayBeAlive(other.holder as string)
      ) {
        throw rules.instanceConflict(other.holder as string, l.sender, this.database, false);
      }
      await c.query(
        `INSERT INTO relayer_instances (sender, holder, expires_at, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sender) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
           updated_at = excluded.updated_at`,
        [l.sender, l.holder, now + l.leaseMs, now],
      );
      const live = await c.query("SELECT sender FROM relayer_instances WHERE expires_at > $1 ORDER BY sender", [now]);
      return { live: live.rows.map((row) => row.sender as Hex) };
    });
  }

  async readyItems(query: ReadyItemsQuery): Promise<ItemRow[]> {
    const kind = v.oneOf(query?.kind, ITEM_KINDS, "kind");
    const token = v.address(query.token, "token");
    const limit = v.limit(query.limit);
    if (query.claimant === undefined) {
      const rows = await this.query(
        "reading the ready items",
        // NULLS FIRST: SQLite's order (vouchers have no nonce; within one kind it never decides).
        `SELECT * FROM items WHERE status = 'accepted' AND kind = $1 AND token = $2
         ORDER BY deadline, device, nonce NULLS FIRST, seq LIMIT $3`,
        [kind, token, limit],
      );
      return rows.map(toItem);
    }
    const claimant = v.text(query.claimant.id, "claimant.id");
    const leaseMs = v.int(query.claimant.leaseMs, "claimant.leaseMs");
    return this.transaction("claiming ready items", async (c, now) => {
      // Ready items of devices nobody else holds, then their claims: new ones inserted, ours and
      // expired ones locked SKIP LOCKED (a claim another relayer is taking right now is skipped).
      const ready = (
        await c.query(
          `SELECT items.* FROM items LEFT JOIN device_claims d ON d.device = items.device
           WHERE items.status = 'accepted' AND items.kind = $1 AND items.token = $2
             AND (d.device IS NULL OR d.claimant = $3 OR d.expires_at <= $4)
           ORDER BY items.deadline, items.device, items.nonce NULLS FIRST, items.seq LIMIT $5`,
          [kind, token, claimant, now, limit],
        )
      ).rows.map(toItem);
      if (ready.length === 0) return [];
      const devices = [...new Set(ready.map((r) => r.device))].sort();
      await c.query(
        `INSERT INTO device_claims (device, claimant, expires_at)
         SELECT d, $2, $3 FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n) ORDER BY n ON CONFLICT (device) DO NOTHING`,
        [devices, claimant, now + leaseMs],
      );
      const held = (
        await c.query(
          `SELECT device FROM device_claims WHERE device = ANY($1::text[]) AND (claimant = $2 OR expires_at <= $3)
           ORDER BY device FOR UPDATE SKIP LOCKED`,
          [devices, claimant, now],
        )
      ).rows.map((row) => row.device as string);
      await c.query("UPDATE device_claims SET claimant = $2, expires_at = $3 WHERE device = ANY($1::text[])", [
        held,
        claimant,
        now + leaseMs,
      ]);
      const mine = new Set(held);
      return ready.filter((r) => mine.has(r.device));
    });
  }

  async countByStatus(): Promise<StatusCounts> {
    return this.read("counting items and batches", async (c) => {
      const items = Object.fromEntries(ITEM_STATUSES.map((k) => [k, 0])) as Record<ItemStatus, number>;
      const batches = Object.fromEntries(BATCH_STATUSES.map((k) => [k, 0])) as Record<BatchStatus, number>;
      for (const r of (await c.query("SELECT status, count(*) AS n FROM items GROUP BY status")).rows) {
        items[r.status as ItemStatus] = r.n as number;
      }
      for (const r of (await c.query("SELECT status, count(*) AS n FROM batches GROUP BY status")).rows) {
        batches[r.status as BatchStatus] = r.n as number;
      }
      return { items, batches };
    });
  }

  async pendingCounts(): Promise<PendingCounts> {
    return this.read("counting pending items", async (c) => {
      const counts = Object.fromEntries(PENDING_ITEM_STATUSES.map((k) => [k, 0])) as PendingCounts;
      const { rows } = await c.query(
        "SELECT status, count(*)::int AS n FROM items WHERE status IN ('accepted', 'batched', 'submitted') GROUP BY status",
      );
      for (const r of rows) counts[r.status as keyof PendingCounts] = Number(r.n);
      return counts;
    });
  }

  // ---- tabs ----

  async getTab(key: TabKey): Promise<TabRow | null> {
    const k = v.tabKey(key);
    const rows = await this.query(
      "reading a tab",
      "SELECT * FROM tabs WHERE device = $1 AND payee = $2 AND token = $3 AND tab_id = $4",
      [k.device, k.payee, k.token, s(k.tabId)],
    );
    return rows.length > 0 ? toTab(rows[0]) : null;
  }

  async setTabSettled(key: TabKey, settled: TabSettled): Promise<TabRow> {
    const k = v.tabKey(key);
    const { settledCumulative, closesAt } = v.tabSettled(settled);
    return this.transaction("recording a tab's settlement", async (c, now) => {
      const r = await c.query(
        `INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at,
           updated_at)
         VALUES ($1, $2, $3, $4, NULL, 0, $5, $6, $7)
         ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET settled_cumulative = excluded.settled_cumulative,
           closes_at = CASE WHEN $8::boolean THEN excluded.closes_at ELSE tabs.closes_at END,
           updated_at = excluded.updated_at
         RETURNING *`,
        [k.device, k.payee, k.token, s(k.tabId), s(settledCumulative), closesAt ?? null, now, closesAt !== undefined],
      );
      return toTab(r.rows[0]);
    });
  }

  // ---- batches ----

  async createBatch(batch: NewBatch): Promise<number> {
    const b = v.newBatch(batch);
    return this.transaction("creating a batch", async (c, now) => {
      await this.bumpOwners(c, await this.ownersOf(c, b.itemIds));
      // Locked in id order, so two batchers racing for the same items cannot deadlock each other.
      const candidates = new Map<Hex, rules.BatchCandidate>();
      if (b.itemIds.length > 0) {
        const r = await c.query(
          "SELECT id, status, kind, token, device FROM items WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
          [b.itemIds],
        );
        for (const row of r.rows) candidates.set(row.id as Hex, row as rules.BatchCandidate);
      }
      rules.assertBatchable(b, (id) => candidates.get(id));
      // The batch may write its devices' words from now on: none of them is known untouched any more.
      await this.touchDevices(
        c,
        [...candidates.values()].map((r) => (r as { device?: string }).device!),
        now,
      );
      if (b.messageId !== null) {
        rules.assertMessageBatchable(
          { messageId: b.messageId, kind: b.kind },
          await this.ownerMessageIn(c, b.messageId, true),
        );
      }
      const inserted = await c.query(
        `INSERT INTO batches (kind, token, sender, nonce, status, item_count, gas_estimate, message_id, created_at,
           updated_at)
         VALUES ($1, $2, $3, $4, 'created', $5, $6, $7, $8, $8)
         ON CONFLICT (sender, nonce) WHERE status NOT IN ('failed', 'dropped') DO NOTHING
         RETURNING id`,
        [b.kind, b.token, b.sender, b.nonce, b.itemIds.length, sOrNull(b.gasEstimate), b.messageId, now],
      );
      if (inserted.rows.length === 0) throw rules.nonceInUse(b.sender, b.nonce);
      const id = inserted.rows[0].id as number;
      if (b.itemIds.length > 0) {
        const positions = b.itemIds.map((_, i) => i);
        await c.query(
          `UPDATE items SET status = 'batched', batch_id = $1, position = u.position, updated_at = $2
           FROM unnest($3::text[], $4::int[]) AS u(id, position)
           WHERE items.id = u.id AND items.status = 'accepted'`,
          [id, now, b.itemIds, positions],
        );
        await c.query(
          `INSERT INTO batch_items (batch_id, position, item_id)
           SELECT $1, position, id FROM unnest($2::text[], $3::int[]) AS u(id, position)`,
          [id, b.itemIds, positions],
        );
      }
      if (b.messageId !== null) await this.setMessage(c, b.messageId, "submitted", now);
      return id;
    });
  }

  async addAttempt(batchId: number, attempt: NewAttempt): Promise<AttemptRow> {
    const id = v.int(batchId, "batchId");
    const a = v.newAttempt(attempt);
    return this.transaction("recording a transaction attempt", async (c, now) => {
      const batch = await this.lockBatch(c, id);
      rules.assertTakesAttempt(batch, a);
      const inserted = await c.query(
        `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING RETURNING *`,
        [id, a.hash, a.raw, a.nonce, s(a.maxFeePerGas), s(a.maxPriorityFeePerGas), now],
      );
      if (inserted.rows.length > 0) return toAttempt(inserted.rows[0]);
      const existing = (await c.query("SELECT * FROM attempts WHERE hash = $1", [a.hash])).rows[0];
      if (existing.batch_id !== id) throw rules.attemptOfAnotherBatch(a.hash, existing.batch_id as number);
      return toAttempt(existing); // already recorded: recovery re-broadcasts it
    });
  }

  async markBroadcast(hash: Hex): Promise<void> {
    const h = v.hash32(hash, "hash");
    await this.transaction("recording a broadcast", async (c, now) => {
      const attempt = (await c.query("SELECT batch_id FROM attempts WHERE hash = $1", [h])).rows[0];
      if (!attempt) throw notFound(`transaction ${h}`, { hash: h });
      const batch = await this.lockBatch(c, attempt.batch_id as number);
      rules.assertBroadcastable(batch);
      await c.query("UPDATE attempts SET broadcast_at = coalesce(broadcast_at, $1) WHERE hash = $2", [now, h]);
      if (batch.status === "mined") return; // items already carry the transaction that landed
      await this.setBatchStatus(c, batch, "sent", now);
      await c.query(
        `UPDATE items SET status = 'submitted', tx_hash = $1, updated_at = $2
         WHERE batch_id = $3 AND status IN ('batched', 'submitted')`,
        [h, now, batch.id],
      );
      if (batch.messageId !== null) await this.setMessage(c, batch.messageId, "submitted", now, { txHash: h });
    });
  }

  async getBatch(id: number): Promise<BatchDetail | null> {
    const batchId = v.int(id, "id");
    return this.read("reading a batch", async (c) => {
      const r = await c.query("SELECT * FROM batches WHERE id = $1", [batchId]);
      return r.rows.length > 0 ? (await this.details(c, [toBatch(r.rows[0])]))[0] : null;
    });
  }

  async listBatches(query: ListBatchesQuery): Promise<Page<BatchRow>> {
    const limit = v.limit(query?.limit);
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.status !== undefined) {
      params.push(v.oneOf(query.status, BATCH_STATUSES, "status"));
      where.push(`status = $${params.length}`);
    }
    if (query.after !== undefined) {
      params.push(cursorNumber(query.after));
      where.push(`id < $${params.length}`);
    }
    params.push(limit + 1);
    const sql = `SELECT * FROM batches ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.length}`;
    const rows = (await this.query("listing batches", sql, params)).map(toBatch);
    const page = rows.slice(0, limit);
    return { rows: page, next: rows.length > limit ? String(page[page.length - 1].id) : null };
  }

  async openBatches(): Promise<BatchDetail[]> {
    return this.read("reading the open batches", async (c) => {
      const r = await c.query("SELECT * FROM batches WHERE status IN ('created', 'sent', 'mined') ORDER BY id");
      return this.details(c, r.rows.map(toBatch));
    });
  }

  async nextNonce(sender: Hex): Promise<number | null> {
    const a = v.address(sender, "sender");
    const rows = await this.query(
      "reading the next nonce",
      "SELECT max(nonce) AS n FROM batches WHERE sender = $1 AND status NOT IN ('failed', 'dropped')",
      [a],
    );
    return rows[0].n === null ? null : (rows[0].n as number) + 1;
  }

  async markBatchMined(batchId: number, mined: BatchMined): Promise<void> {
    const id = v.int(batchId, "batchId");
    const m = v.batchMined(mined);
    await this.transaction("recording a mined batch", async (c, now) => {
      const batch = await this.lockBatch(c, id);
      rules.assertBatchTransition(batch, "mined");
      const attempt = (await c.query("SELECT batch_id FROM attempts WHERE hash = $1", [m.txHash])).rows[0];
      rules.assertAttemptOf(attempt?.batch_id as number | undefined, id, m.txHash);
      rules.assertOutcomesCover(id, await this.liveItemIds(c, id), m.items);
      await c.query(
        `UPDATE batches SET status = 'mined', tx_hash = $1, block_number = $2, block_hash = $3, gas_used = $4,
           updated_at = $5 WHERE id = $6`,
        [m.txHash, m.blockNumber, m.blockHash, s(m.gasUsed), now, id],
      );
      await c.query("UPDATE attempts SET broadcast_at = coalesce(broadcast_at, $1) WHERE hash = $2", [now, m.txHash]);
      if (m.items.length > 0) {
        await c.query(
          `UPDATE items SET status = 'submitted', outcome = u.outcome, reason = u.reason, message = u.message,
             tx_hash = $1, block_number = $2, block_hash = $3, updated_at = $4
           FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS u(id, outcome, reason, message)
           WHERE items.id = u.id`,
          [
            m.txHash,
            m.blockNumber,
            m.blockHash,
            now,
            m.items.map((o) => o.id),
            m.items.map((o) => o.status),
            m.items.map((o) => o.reason),
            m.items.map((o) => o.message),
          ],
        );
      }
      if (batch.messageId !== null) await this.setMessage(c, batch.messageId, "submitted", now, { txHash: m.txHash });
    });
  }

  async unmineBatch(batchId: number): Promise<void> {
    const id = v.int(batchId, "batchId");
    await this.transaction("recording a batch's block leaving the chain", async (c, now) => {
      rules.assertMined(await this.lockBatch(c, id));
      await c.query(
        `UPDATE batches SET status = 'sent', tx_hash = NULL, block_number = NULL, block_hash = NULL, gas_used = NULL,
           updated_at = $1 WHERE id = $2`,
        [now, id],
      );
      await c.query(
        `UPDATE items SET outcome = NULL, reason = NULL, message = NULL, block_number = NULL, block_hash = NULL,
           updated_at = $1 WHERE batch_id = $2 AND status = 'submitted'`,
        [now, id],
      );
    });
  }

  async markBatchConfirmed(batchId: number): Promise<void> {
    const id = v.int(batchId, "batchId");
    await this.transaction("confirming a batch", async (c, now) => {
      const batch = await this.lockBatch(c, id);
      rules.assertBatchTransition(batch, "confirmed");
      await this.bumpOwners(c, await this.ownersOf(c, [], id));
      const items = (
        await c.query(
          "SELECT * FROM items WHERE batch_id = $1 AND status IN ('batched', 'submitted') ORDER BY position",
          [id],
        )
      ).rows.map(toItem);
      rules.assertDecided(id, items);
      await c.query("UPDATE items SET status = outcome, updated_at = $1 WHERE batch_id = $2 AND status = 'submitted'", [
        now,
        id,
      ]);
      for (const it of items) {
        if (it.kind !== "voucher" || it.outcome !== "settled") continue;
        await c.query(
          `INSERT INTO tabs (device, payee, token, tab_id, newest_id, newest_cumulative, settled_cumulative, closes_at,
             updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6, NULL, $7)
           ON CONFLICT (device, payee, token, tab_id) DO UPDATE SET
             settled_cumulative = excluded.settled_cumulative, updated_at = excluded.updated_at
           WHERE excluded.settled_cumulative > tabs.settled_cumulative`,
          [it.device, it.payee, it.token, s(it.tabId!), it.id, s(it.amount), now],
        );
      }
      if (batch.messageId !== null) await this.setMessage(c, batch.messageId, "confirmed", now, { error: null });
      await this.setBatchStatus(c, batch, "confirmed", now);
    });
  }

  async requeueBatch(batchId: number, requeue: BatchRequeue): Promise<Hex[]> {
    const id = v.int(batchId, "batchId");
    const r = v.batchRequeue(requeue);
    return this.transaction("requeueing a batch", async (c, now) => {
      const batch = await this.lockBatch(c, id);
      if (r.status === "failed" && isOpen(batch.status)) {
        const sent = await c.query(
          "SELECT count(*) AS n FROM attempts WHERE batch_id = $1 AND broadcast_at IS NOT NULL",
          [id],
        );
        rules.assertMayFail(batch, sent.rows[0].n as number);
      }
      rules.assertBatchTransition(batch, r.status);
      await this.bumpOwners(c, await this.ownersOf(c, [], id));
      const requeued = (
        await c.query(
          `UPDATE items SET status = 'accepted', batch_id = NULL, position = NULL, outcome = NULL, reason = NULL,
             message = NULL, tx_hash = NULL, block_number = NULL, block_hash = NULL, updated_at = $1
           FROM (SELECT id, position FROM items WHERE batch_id = $2 AND status IN ('batched', 'submitted')) AS was
           WHERE items.id = was.id
           RETURNING items.id, was.position`,
          [now, id],
        )
      ).rows
        .sort((x, y) => (x.position as number) - (y.position as number))
        .map((row) => row.id as Hex);
      const rc = r.receipt;
      await c.query(
        `UPDATE batches SET status = $1, error = $2, tx_hash = $3, block_number = $4, block_hash = $5, gas_used = $6,
           updated_at = $7 WHERE id = $8`,
        [
          r.status,
          r.error,
          rc?.txHash ?? null,
          rc?.blockNumber ?? null,
          rc?.blockHash ?? null,
          rc ? s(rc.gasUsed) : null,
          now,
          id,
        ],
      );
      if (batch.messageId !== null) {
        // A reverted message is refused by the contract; one that never landed is submitted again.
        const next = rules.messageAfterRequeue(r, rc?.txHash ?? null);
        await this.setMessage(c, batch.messageId, next.status, now, next);
      }
      return requeued;
    });
  }

  // ---- cursors ----

  async getCursor(name: string): Promise<Cursor | null> {
    const n = v.text(name, "name");
    const rows = await this.query("reading a cursor", "SELECT block_number, block_hash FROM cursors WHERE name = $1", [
      n,
    ]);
    return rows.length > 0
      ? { blockNumber: rows[0].block_number as number, blockHash: rows[0].block_hash as Hex | null }
      : null;
  }

  async setCursor(name: string, cursor: Cursor, devices?: DeviceEventRange): Promise<void> {
    const cur = v.cursor(name, cursor);
    const range = devices === undefined ? undefined : v.deviceEventRange(devices, cur.blockNumber);
    await this.transaction("saving a cursor", async (c, now) => {
      await c.query(
        `INSERT INTO cursors (name, block_number, block_hash, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash,
           updated_at = excluded.updated_at`,
        [cur.name, cur.blockNumber, cur.blockHash, now],
      );
      if (range) await this.applyDeviceEvents(c, range, cur.blockNumber, now);
    });
  }

  /** As SQLite's (see rules.ts, "untouched devices"): the range's events in chain order, then the registry's cursor. */
  private async applyDeviceEvents(
    c: ClientBase,
    range: ReturnType<typeof v.deviceEventRange>,
    to: number,
    now: number,
  ): Promise<void> {
    // The registry's cursor row first: relayers applying ranges together take turns here, so the
    // one whose range joins the cursor sees the cursor the one before it committed.
    const registry = (await c.query("SELECT block_number FROM cursors WHERE name = $1 FOR UPDATE", [REGISTRY_CURSOR]))
      .rows[0];
    // Touches first (they clear existing rows), then assignments (a row they insert is fresh if no
    // touch followed; an existing fresh row moves to a newer assignment's policy). Device order: lock order.
    const effects = rules.deviceEffects(range.events).sort((a, b) => (a.device < b.device ? -1 : 1));
    await this.touchDevices(
      c,
      effects.filter((e) => e.touched).map((e) => e.device),
      now,
    );
    const assigned = effects.filter((e) => e.assigned);
    if (assigned.length > 0) {
      await c.query(
        `INSERT INTO devices (device, fresh, policy_id, block_number, log_index, updated_at)
         SELECT u.*, $6 FROM unnest($1::text[], $2::boolean[], $3::bigint[], $4::bigint[], $5::bigint[])
           AS u(device, fresh, policy_id, block_number, log_index)
         ON CONFLICT (device) DO UPDATE SET policy_id = excluded.policy_id, block_number = excluded.block_number,
           log_index = excluded.log_index, updated_at = excluded.updated_at
         WHERE devices.fresh AND (devices.block_number, devices.log_index) < (excluded.block_number, excluded.log_index)`,
        [
          assigned.map((e) => e.device),
          assigned.map((e) => e.assigned!.freshIfNew),
          assigned.map((e) => e.assigned!.policyId),
          assigned.map((e) => e.assigned!.blockNumber),
          assigned.map((e) => e.assigned!.logIndex),
          now,
        ],
      );
    }
    const through = registry === undefined ? undefined : Number(registry.block_number);
    if (!rules.registryAdvances(through, range.from, range.fromDeployment, to)) return;
    await c.query(
      `INSERT INTO cursors (name, block_number, block_hash, updated_at) VALUES ($1, $2, NULL, $3)
       ON CONFLICT (name) DO UPDATE SET block_number = excluded.block_number, updated_at = excluded.updated_at
       WHERE cursors.block_number < excluded.block_number`,
      [REGISTRY_CURSOR, to, now],
    );
  }

  /** Devices whose word may now be written: not known untouched any more (rows that exist; locked in device order). */
  private async touchDevices(c: ClientBase, devices: readonly string[], now: number): Promise<void> {
    if (devices.length === 0) return;
    await c.query("UPDATE devices SET fresh = false, updated_at = $1 WHERE device = ANY($2::text[]) AND fresh", [
      now,
      [...new Set(devices)].sort(),
    ]);
  }

  async untouchedDevices(devices: readonly Hex[]): Promise<(number | null)[]> {
    const wanted = devices.map((d, i) => v.address(d, `devices[${i}]`));
    if (wanted.length === 0) return [];
    const rows = await this.query(
      "reading untouched devices",
      `SELECT device, policy_id FROM devices WHERE device = ANY($1::text[]) AND fresh
         AND block_number <= (SELECT block_number FROM cursors WHERE name = $2)`,
      [wanted, REGISTRY_CURSOR],
    );
    const found = new Map(rows.map((r) => [r.device as string, Number(r.policy_id)]));
    return wanted.map((d) => found.get(d) ?? null);
  }

  async rewindDevices(block: number): Promise<void> {
    const b = v.int(block, "block");
    await this.transaction("rewinding the device registry", async (c, now) => {
      await c.query("SELECT 1 FROM cursors WHERE name = $1 FOR UPDATE", [REGISTRY_CURSOR]);
      await c.query("UPDATE devices SET fresh = false, updated_at = $1 WHERE fresh AND block_number > $2", [now, b]);
      await c.query("UPDATE cursors SET block_number = $1, updated_at = $2 WHERE name = $3 AND block_number > $1", [
        b,
        now,
        REGISTRY_CURSOR,
      ]);
    });
  }

  // ---- owner messages ----

  async insertOwnerMessage(message: NewOwnerMessage): Promise<{ inserted: boolean; message: OwnerMessageRow }> {
    const m = v.ownerMessage(message);
    return this.transaction("storing an owner message", async (c, now) => {
      const r = await c.query(
        `INSERT INTO owner_messages (id, kind, owner, body, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'accepted', $5, $5) ON CONFLICT (id) DO NOTHING RETURNING *`,
        [m.id, m.kind, m.owner, m.body, now],
      );
      if (r.rows.length > 0) return { inserted: true, message: toOwnerMessage(r.rows[0]) };
      return { inserted: false, message: (await this.ownerMessageIn(c, m.id, false))! };
    });
  }

  async updateOwnerMessage(id: Hex, update: OwnerMessageUpdate): Promise<OwnerMessageRow> {
    const key = v.hash32(id, "id");
    const u = v.ownerMessageUpdate(update);
    return this.transaction("updating an owner message", async (c, now) => {
      const current = await this.ownerMessageIn(c, key, true);
      rules.assertMessageTransition(key, current, u.status, false);
      const r = await c.query(
        "UPDATE owner_messages SET status = $1, tx_hash = $2, error = $3, updated_at = $4 WHERE id = $5 RETURNING *",
        [
          u.status,
          u.txHash === undefined ? current.txHash : u.txHash,
          u.error === undefined ? current.error : u.error,
          now,
          key,
        ],
      );
      return toOwnerMessage(r.rows[0]);
    });
  }

  async getOwnerMessage(id: Hex): Promise<OwnerMessageRow | null> {
    const key = v.hash32(id, "id");
    const rows = await this.query("reading an owner message", "SELECT * FROM owner_messages WHERE id = $1", [key]);
    return rows.length > 0 ? toOwnerMessage(rows[0]) : null;
  }

  async openOwnerMessages(): Promise<OwnerMessageRow[]> {
    const rows = await this.query(
      "reading the open owner messages",
      "SELECT * FROM owner_messages WHERE status IN ('accepted', 'submitted') ORDER BY created_at, id",
    );
    return rows.map(toOwnerMessage);
  }

  // ---- helpers ----

  /** Moves an owner message along its state machine (a refused transition throws CONFLICT). */
  private async setMessage(
    c: ClientBase,
    id: Hex,
    status: OwnerMessageStatus,
    now: number,
    change: { txHash?: Hex | null; error?: string | null } = {},
  ): Promise<void> {
    const current = await this.ownerMessageIn(c, id, true);
    rules.assertMessageTransition(id, current, status, true);
    await c.query("UPDATE owner_messages SET status = $1, tx_hash = $2, error = $3, updated_at = $4 WHERE id = $5", [
      status,
      change.txHash === undefined ? current.txHash : change.txHash,
      change.error === undefined ? current.error : change.error,
      now,
      id,
    ]);
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError("CLOSED", "the store is closed: open it again", { database: this.database });
  }

  /** Keeps close() waiting for every operation under way. */
  private track<T>(work: Promise<T>): Promise<T> {
    this.inflight.add(work);
    const done = () => this.inflight.delete(work);
    work.then(done, done);
    return work;
  }

  /** One statement outside an explicit transaction (a read). */
  private async query(what: string, text: string, values: unknown[] = []): Promise<Row[]> {
    this.assertOpen();
    return this.track(
      this.pool.query(text, values).then(
        (r) => r.rows as Row[],
        (cause) => {
          throw readFailure(cause, what, this.database);
        },
      ),
    );
  }

  /** Several reads from one snapshot. */
  private read<T>(what: string, fn: (c: ClientBase) => Promise<T>): Promise<T> {
    return this.transaction(what, (c) => fn(c), "read");
  }

  /**
   * Runs `fn` in one transaction (READ COMMITTED, or a REPEATABLE READ READ ONLY snapshot for reads),
   * retried whole on a deadlock or serialization failure; StoreErrors pass through, others are explained.
   */
  private transaction<T>(
    what: string,
    fn: (c: ClientBase, now: number) => Promise<T>,
    mode: "write" | "read" = "write",
  ): Promise<T> {
    this.assertOpen();
    return this.track(this.runTransaction(what, fn, mode));
  }

  private async runTransaction<T>(
    what: string,
    fn: (c: ClientBase, now: number) => Promise<T>,
    mode: "write" | "read",
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: PoolClient;
      try {
        client = await this.pool.connect();
      } catch (cause) {
        throw mode === "read"
          ? readFailure(cause, what, this.database)
          : failure(cause, what, this.database, "connect");
      }
      // A checked-out client that loses its connection emits 'error' (the query in flight rejects too).
      let broken = false;
      const onError = () => {
        broken = true;
      };
      client.on("error", onError);
      let phase: Phase = "body";
      let retry = false;
      try {
        await client.query(mode === "read" ? BEGIN_READ : BEGIN_WRITE);
        const out = await fn(client, this.now());
        phase = "commit";
        await client.query("COMMIT");
        const bumped = this.bumped.get(client);
        this.bumped.delete(client);
        if (bumped) {
          for (const b of bumped) this.noteOwnBump(b);
          for (const b of bumped) b.settle(true);
          const moved = bumped.map(({ owner, version }) => ({ owner, version }));
          for (const l of this.versionListeners) l(moved);
        }
        return out;
      } catch (error) {
        if (phase === "body") {
          await client.query("ROLLBACK").catch(() => {
            broken = true;
          });
        }
        if (connectionLost(error)) broken = true;
        if (error instanceof StoreError) throw error;
        const code = (error as { code?: string }).code ?? "";
        retry = RETRYABLE.has(code) && phase === "body" && attempt < MAX_ATTEMPTS;
        if (!retry)
          throw mode === "read" ? readFailure(error, what, this.database) : failure(error, what, this.database, phase);
      } finally {
        // Not committed (rolled back, or the commit failed): these versions were never ours.
        for (const b of this.bumped.get(client) ?? []) b.settle(false);
        this.bumped.delete(client);
        client.removeListener("error", onError);
        client.release(broken || undefined);
      }
      if (retry) await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
    }
  }

  private async lockBatch(c: ClientBase, id: number): Promise<BatchRow> {
    const r = await c.query("SELECT * FROM batches WHERE id = $1 FOR UPDATE", [id]);
    if (r.rows.length === 0) throw rules.batchNotFound(id);
    return toBatch(r.rows[0]);
  }

  private async itemsIn(c: ClientBase, ids: readonly Hex[]): Promise<Map<Hex, ItemRow>> {
    const r = await c.query("SELECT * FROM items WHERE id = ANY($1::text[])", [ids]);
    return new Map(r.rows.map((row) => [row.id as Hex, toItem(row)]));
  }

  private async tabIn(c: ClientBase, k: TabKey): Promise<TabRow | null> {
    const r = await c.query("SELECT * FROM tabs WHERE device = $1 AND payee = $2 AND token = $3 AND tab_id = $4", [
      k.device,
      k.payee,
      k.token,
      s(k.tabId),
    ]);
    return r.rows.length > 0 ? toTab(r.rows[0]) : null;
  }

  private async ownerMessageIn(c: ClientBase, id: Hex, lock: boolean): Promise<OwnerMessageRow | null> {
    const r = await c.query(`SELECT * FROM owner_messages WHERE id = $1${lock ? " FOR UPDATE" : ""}`, [id]);
    return r.rows.length > 0 ? toOwnerMessage(r.rows[0]) : null;
  }

  /** Batches with their attempts (oldest first) and every item ever placed in them (position order). */
  private async details(c: ClientBase, batches: BatchRow[]): Promise<BatchDetail[]> {
    if (batches.length === 0) return [];
    const ids = batches.map((b) => b.id);
    const attempts = new Map<number, AttemptRow[]>(ids.map((id) => [id, []]));
    const members = new Map<number, Hex[]>(ids.map((id) => [id, []]));
    for (const r of (await c.query("SELECT * FROM attempts WHERE batch_id = ANY($1::bigint[]) ORDER BY id", [ids]))
      .rows) {
      attempts.get(r.batch_id as number)!.push(toAttempt(r));
    }
    for (const r of (
      await c.query(
        "SELECT batch_id, item_id FROM batch_items WHERE batch_id = ANY($1::bigint[]) ORDER BY batch_id, position",
        [ids],
      )
    ).rows) {
      members.get(r.batch_id as number)!.push(r.item_id as Hex);
    }
    return batches.map((b) => ({ ...b, attempts: attempts.get(b.id)!, itemIds: members.get(b.id)! }));
  }

  /** Items the batch still holds (batched or submitted), in position order. */
  private async liveItemIds(c: ClientBase, id: number): Promise<Hex[]> {
    const r = await c.query(
      "SELECT id FROM items WHERE batch_id = $1 AND status IN ('batched', 'submitted') ORDER BY position",
      [id],
    );
    return r.rows.map((row) => row.id as Hex);
  }

  private async setBatchStatus(c: ClientBase, batch: BatchRow, to: BatchStatus, now: number): Promise<void> {
    if (batch.status === to) return;
    rules.assertBatchTransition(batch, to);
    await c.query("UPDATE batches SET status = $1, updated_at = $2 WHERE id = $3", [to, now, batch.id]);
  }
}

/**
 * A failed read: a lost connection becomes CANNOT_OPEN with what to check; anything else is passed on
 * as the driver reported it (as SQLite's reads do).
 */
function readFailure(cause: unknown, what: string, database: string): unknown {
  if (cause instanceof StoreError || !connectionLost(cause)) return cause;
  return new StoreError(
    "CANNOT_OPEN",
    `${what} failed: cannot reach PostgreSQL at ${database} (${(cause as Error).message}): check that the server is up and reachable, then retry`,
    { database },
    { cause },
  );
}

/** Opens (creating and migrating its schema if needed) a PostgreSQL store. */
export function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  return PostgresStore.open(options);
}
