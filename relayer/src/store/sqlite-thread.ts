/**
 * The SQLite store on a thread of its own. better-sqlite3 is synchronous: on the main thread every
 * group commit blocks the event loop for its inserts and its fsync (synchronous=FULL), so requests
 * wait while the disk flushes. Here the SqliteStore runs in a worker (sqlite-worker.ts) and this
 * proxy forwards each call to it: the event loop keeps parsing, verifying and admitting while a
 * commit is on disk, and what arrives meanwhile joins the next group. Durability is unchanged: a
 * write resolves only after the worker's transaction committed.
 *
 * Calls run in the order they are made (one worker, one queue). If the worker dies, every call in
 * flight and every later one fails with a StoreError: nothing is answered as stored that was not.
 */
import { Worker } from "node:worker_threads";
import { workerSource } from "../threads";
import { StoreError, type StoreErrorCode } from "./errors";
import type { MigrationResult } from "./migrations";
import type { SqliteStoreOptions } from "./sqlite";
import type { Answer, Call, WireError } from "./sqlite-worker";
import type { Store, StoreStats } from "./types";

const WORKER_SOURCE = workerSource(__dirname, "sqlite-worker", __filename.endsWith(".ts"));

export type SqliteThreadStoreOptions = Omit<SqliteStoreOptions, "now">;

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

function fromWire(e: WireError): Error {
  if (e.name === "StoreError" && e.code) return new StoreError(e.code as StoreErrorCode, e.message, e.details ?? {});
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

export class SqliteThreadStore implements Store {
  readonly backend = "sqlite" as const;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  /** Calls made this turn of the event loop: they travel in one message, so writes share a commit. */
  private outbox: Call[] = [];
  private dead?: StoreError;
  private closing?: Promise<void>;
  private last: StoreStats = { groupCommits: 0, writes: 0, largestGroup: 0 };

  private constructor(
    private readonly worker: Worker,
    readonly file: string,
    readonly migration: MigrationResult,
  ) {
    worker.on("message", (a: Answer) => {
      if (a.type !== "result" && a.type !== "error") return;
      this.last = a.stats;
      const p = this.pending.get(a.seq);
      if (!p) return;
      this.pending.delete(a.seq);
      if (this.pending.size === 0) worker.unref();
      if (a.type === "result") p.resolve(a.value);
      else p.reject(fromWire(a.error));
    });
    const stop = (why: string) => {
      this.dead ??= new StoreError(
        this.closing ? "CLOSED" : "WRITE_FAILED",
        this.closing
          ? `the store ${file} is closed: open it again`
          : `the store's thread stopped (${why}); nothing more can be read or written: restart the relayer`,
        { file },
      );
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    worker.on("error", (e) => stop(e.message));
    worker.on("exit", (code) => stop(`exit code ${code}`));
    worker.unref();
  }

  /** Opens (creating and migrating if needed) the SQLite file on a new thread. */
  static open(options: SqliteThreadStoreOptions): Promise<SqliteThreadStore> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: options });
      const onExit = (code: number) =>
        reject(new StoreError("CANNOT_OPEN", `the store's thread exited (code ${code}) while opening ${options.path}`));
      const onError = (e: Error) =>
        reject(new StoreError("CANNOT_OPEN", `the store's thread failed while opening ${options.path}: ${e.message}`));
      worker.once("exit", onExit);
      worker.once("error", onError);
      worker.once("message", (a: Answer) => {
        worker.off("exit", onExit);
        worker.off("error", onError);
        if (a.type === "open") resolve(new SqliteThreadStore(worker, a.file, a.migration));
        else if (a.type === "openError") {
          reject(fromWire(a.error));
          void worker.terminate();
        } else reject(new StoreError("CANNOT_OPEN", `the store's thread answered ${a.type} before opening`));
      });
    });
  }

  private call<R>(method: keyof Store, ...args: unknown[]): Promise<R> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing && method !== "close") {
      return Promise.reject(new StoreError("CLOSED", "the store is closing: open it again", { file: this.file }));
    }
    return new Promise<R>((resolve, reject) => {
      const seq = this.seq++;
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.outbox.push({ seq, method, args });
      if (this.outbox.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const calls = this.outbox;
    this.outbox = [];
    if (calls.length > 0 && !this.dead) this.worker.postMessage(calls);
  }

  /** Finishes every call made so far (queued writes commit), closes the file, ends the thread. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.dead) return Promise.resolve();
    const exited = new Promise<void>((r) => this.worker.once("exit", () => r()));
    const closed = this.call<void>("close");
    this.closing = closed.then(() => exited);
    return this.closing;
  }

  /** Group-commit figures as of the worker's latest answer. */
  stats(): StoreStats {
    return this.last;
  }

  write: Store["write"] = (...a) => this.call("write", ...a);
  /** One process owns the file: `decide` runs here at once, its set goes to the thread's group commit. */
  admitLocked: Store["admitLocked"] = (_owners, _reload, decide) => this.write(decide());
  getItem: Store["getItem"] = (...a) => this.call("getItem", ...a);
  getItems: Store["getItems"] = (...a) => this.call("getItems", ...a);
  listItems: Store["listItems"] = (...a) => this.call("listItems", ...a);
  pendingItems: Store["pendingItems"] = (...a) => this.call("pendingItems", ...a);
  ownerItems: Store["ownerItems"] = async (owners) => ({
    rows: await this.pendingItems(owners.map((o) => o.owner)),
    since: new Map(),
  });
  readyItems: Store["readyItems"] = (...a) => this.call("readyItems", ...a);
  ownerChanges: Store["ownerChanges"] = (...a) => this.call("ownerChanges", ...a);
  /** SQLite keeps no versions: never called (a function could not cross to the thread anyway). */
  onOwnVersions: Store["onOwnVersions"] = () => {};
  heartbeat: Store["heartbeat"] = (...a) => this.call("heartbeat", ...a);
  countByStatus: Store["countByStatus"] = (...a) => this.call("countByStatus", ...a);
  pendingCounts: Store["pendingCounts"] = (...a) => this.call("pendingCounts", ...a);
  getTab: Store["getTab"] = (...a) => this.call("getTab", ...a);
  setTabSettled: Store["setTabSettled"] = (...a) => this.call("setTabSettled", ...a);
  createBatch: Store["createBatch"] = (...a) => this.call("createBatch", ...a);
  addAttempt: Store["addAttempt"] = (...a) => this.call("addAttempt", ...a);
  markBroadcast: Store["markBroadcast"] = (...a) => this.call("markBroadcast", ...a);
  getBatch: Store["getBatch"] = (...a) => this.call("getBatch", ...a);
  listBatches: Store["listBatches"] = (...a) => this.call("listBatches", ...a);
  openBatches: Store["openBatches"] = (...a) => this.call("openBatches", ...a);
  nextNonce: Store["nextNonce"] = (...a) => this.call("nextNonce", ...a);
  markBatchMined: Store["markBatchMined"] = (...a) => this.call("markBatchMined", ...a);
  unmineBatch: Store["unmineBatch"] = (...a) => this.call("unmineBatch", ...a);
  markBatchConfirmed: Store["markBatchConfirmed"] = (...a) => this.call("markBatchConfirmed", ...a);
  requeueBatch: Store["requeueBatch"] = (...a) => this.call("requeueBatch", ...a);
  rejectItems: Store["rejectItems"] = (...a) => this.call("rejectItems", ...a);
  getCursor: Store["getCursor"] = (...a) => this.call("getCursor", ...a);
  setCursor: Store["setCursor"] = (...a) => this.call("setCursor", ...a);
  untouchedDevices: Store["untouchedDevices"] = (...a) => this.call("untouchedDevices", ...a);
  rewindDevices: Store["rewindDevices"] = (...a) => this.call("rewindDevices", ...a);
  insertOwnerMessage: Store["insertOwnerMessage"] = (...a) => this.call("insertOwnerMessage", ...a);
  updateOwnerMessage: Store["updateOwnerMessage"] = (...a) => this.call("updateOwnerMessage", ...a);
  getOwnerMessage: Store["getOwnerMessage"] = (...a) => this.call("getOwnerMessage", ...a);
  openOwnerMessages: Store["openOwnerMessages"] = (...a) => this.call("openOwnerMessages", ...a);
}

/** Opens a SQLite store whose file is read and written on its own thread. */
export function openSqliteThreadStore(options: SqliteThreadStoreOptions): Promise<SqliteThreadStore> {
  return SqliteThreadStore.open(options);
}
