/**
 * The SQLite store's own thread (see sqlite-thread.ts): opens the file, then runs each call it is
 * sent on its SqliteStore, in arrival order, and answers with the result or the error. Calls that
 * arrive while a commit is fsyncing join the next group commit, as they would on the main thread.
 */
import { parentPort, workerData } from "node:worker_threads";
import { StoreError } from "./errors";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite";

export type WireError = { name: string; message: string; code?: string; details?: Record<string, unknown> };
export type Call = { seq: number; method: string; args: unknown[] };
export type Answer =
  | { type: "open"; file: string; migration: { from: number; to: number } }
  | { type: "openError"; error: WireError }
  | { type: "result"; seq: number; value: unknown; stats: ReturnType<SqliteStore["stats"]> }
  | { type: "error"; seq: number; error: WireError; stats: ReturnType<SqliteStore["stats"]> };

export function toWire(e: unknown): WireError {
  const err = e as Error;
  if (e instanceof StoreError) return { name: e.name, message: e.message, code: e.code, details: e.details };
  return { name: err?.name ?? "Error", message: err?.message ?? String(e) };
}

const port = parentPort!;
const post = (a: Answer) => port.postMessage(a);

SqliteStore.open(workerData as SqliteStoreOptions).then(
  (store) => {
    post({ type: "open", file: store.file, migration: store.migration });
    // A message holds the calls of one turn of the caller's event loop: all start in this turn,
    // so their writes join one group commit, as they would on the caller's thread.
    port.on("message", (calls: Call[]) => {
      for (const call of calls) run(call);
    });
    const run = (call: Call) => {
      const method = (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[call.method];
      let running: Promise<unknown>;
      try {
        running = Promise.resolve(method.apply(store, call.args));
      } catch (e) {
        running = Promise.reject(e);
      }
      running.then(
        (value) => {
          post({ type: "result", seq: call.seq, value, stats: store.stats() });
          if (call.method === "close") port.close();
        },
        (e) => post({ type: "error", seq: call.seq, error: toWire(e), stats: store.stats() }),
      );
    };
  },
  (e) => {
    post({ type: "openError", error: toWire(e) });
    port.close();
  },
);
