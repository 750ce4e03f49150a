export type StoreErrorCode =
  /** The database file or its directory cannot be opened for writing. */
  | "CANNOT_OPEN"
  /** The file is not a relayer store (not SQLite, or another application's database). */
  | "NOT_A_STORE"
  /** The database was migrated by a newer relayer than this one. */
  | "SCHEMA_TOO_NEW"
  | "MIGRATION_FAILED"
  /** A store URL names a backend this build does not have. */
  | "UNSUPPORTED_BACKEND"
  /** The caller passed something malformed: a bug in the caller, nothing was written. */
  | "INVALID_INPUT"
  | "NOT_FOUND"
  /** The operation is not allowed in the current state (e.g. an item is no longer accepted). */
  | "CONFLICT"
  /** A live batch of this sender already uses this nonce. */
  | "NONCE_IN_USE"
  /** The transaction could not commit (locked, disk full, I/O error): nothing of it was stored. */
  | "WRITE_FAILED"
  | "CLOSED";

/** Every failure of the store: a code to branch on, a message that says what to do, and details. */
export class StoreError extends Error {
  override readonly name = "StoreError";
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
