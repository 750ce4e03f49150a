// The relayer's durable store. Stages depend on `Store` only; `openStore` picks the backend from a URL.

import { StoreError } from "./errors";
import { openPostgresStore, type PostgresStoreOptions, redactUrl } from "./postgres";
import { openSqliteStore, type SqliteStoreOptions } from "./sqlite";
import { openSqliteThreadStore } from "./sqlite-thread";
import type { Store } from "./types";

export { StoreError, type StoreErrorCode } from "./errors";
export { GroupCommitter } from "./group-commit";
export { APPLICATION_ID, MIGRATIONS, type Migration, migrate, SCHEMA_VERSION } from "./migrations";
export {
  openPostgresStore,
  PostgresStore,
  type PostgresStoreOptions,
  /** The store URL as it may be logged: without a password. */
  redactUrl as redactStoreUrl,
} from "./postgres";
export {
  MIGRATION_LOCK_KEY,
  MIGRATIONS_TABLE,
  migratePostgres,
  POSTGRES_MIGRATIONS,
  POSTGRES_SCHEMA_VERSION,
  type PostgresMigration,
} from "./postgres-migrations";
export { openSqliteStore, SqliteStore, type SqliteStoreOptions } from "./sqlite";
export { openSqliteThreadStore, SqliteThreadStore, type SqliteThreadStoreOptions } from "./sqlite-thread";
export * from "./types";

/** Options either backend takes (a backend ignores those of the other). */
export type OpenStoreOptions = Omit<SqliteStoreOptions, "path"> &
  Omit<PostgresStoreOptions, "url"> & {
    /**
     * SQLite: run the database on a thread of its own (sqlite-thread.ts), so commits and their
     * fsync do not block the event loop. Ignored with `now` (a function cannot cross threads).
     */
    thread?: boolean;
  };

/**
 * Opens the store a URL names: `postgres://user:password@host:port/database` (or `postgresql://`;
 * `?options=-c search_path=NAME` for a schema of its own), `sqlite:/path/file.db` (also
 * `sqlite:///path`, `sqlite:relative.db`) or a plain path for SQLite.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (typeof url !== "string" || url.trim() === "") {
    throw new StoreError(
      "INVALID_INPUT",
      "the store URL is empty: pass postgres://user@host/database, sqlite:/path/file.db or a file path",
    );
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    const { busyTimeoutMs, now, maxGroupRows, poolSize, connectTimeoutMs, migrationLockTimeoutMs } = options;
    return openPostgresStore({
      url,
      busyTimeoutMs,
      now,
      maxGroupRows,
      poolSize,
      connectTimeoutMs,
      migrationLockTimeoutMs,
    });
  }
  const { busyTimeoutMs, now, maxGroupRows, thread } = options;
  const sqlite = (path: string): Promise<Store> =>
    thread && now === undefined
      ? openSqliteThreadStore({ busyTimeoutMs, maxGroupRows, path })
      : openSqliteStore({ busyTimeoutMs, now, maxGroupRows, path });
  if (/^sqlite:/i.test(url)) {
    const rest = url.slice("sqlite:".length);
    const path = rest.startsWith("//") ? rest.slice(2) : rest;
    if (path === "") throw new StoreError("INVALID_INPUT", `${url} names no file: use sqlite:/path/file.db`);
    return sqlite(path);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new StoreError(
      "UNSUPPORTED_BACKEND",
      `unknown store URL scheme in ${redactUrl(url)}: use postgres://…, sqlite:/path/file.db or a file path`,
    );
  }
  return sqlite(url);
}
