// The relayer's durable store. Stages depend on `Store` only; `openStore` picks the backend from a URL.

import { StoreError } from "./errors";
import { openSqliteStore, type SqliteStoreOptions } from "./sqlite";
import type { Store } from "./types";

export { StoreError, type StoreErrorCode } from "./errors";
export { GroupCommitter } from "./group-commit";
export { APPLICATION_ID, MIGRATIONS, type Migration, migrate, SCHEMA_VERSION } from "./migrations";
export { openSqliteStore, SqliteStore, type SqliteStoreOptions } from "./sqlite";
export * from "./types";

export type OpenStoreOptions = Omit<SqliteStoreOptions, "path">;

/**
 * Opens the store a URL names: `sqlite:/path/file.db` (also `sqlite:///path`, `sqlite:relative.db`)
 * or a plain path for SQLite; `postgres://…` is refused until that backend lands.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (typeof url !== "string" || url.trim() === "") {
    throw new StoreError("INVALID_INPUT", "the store URL is empty: pass sqlite:/path/file.db or a file path");
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    throw new StoreError(
      "UNSUPPORTED_BACKEND",
      "PostgreSQL backend not available yet: use sqlite:/path/file.db (or a plain file path) for now",
      { url: url.replace(/\/\/[^@/]*@/, "//***@") }, // never echo a password
    );
  }
  if (/^sqlite:/i.test(url)) {
    const rest = url.slice("sqlite:".length);
    const path = rest.startsWith("//") ? rest.slice(2) : rest;
    if (path === "") throw new StoreError("INVALID_INPUT", `${url} names no file: use sqlite:/path/file.db`);
    return openSqliteStore({ ...options, path });
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    throw new StoreError(
      "UNSUPPORTED_BACKEND",
      `unknown store URL scheme in ${url.replace(/\/\/[^@/]*@/, "//***@")}: use sqlite:/path/file.db or a file path`,
    );
  }
  return openSqliteStore({ ...options, path: url });
}
