// SQLite schema, versioned in code: an ordered list applied at open, each migration in its own
// transaction together with the new PRAGMA user_version (both roll back together on failure).
// Append new migrations; never edit one that has shipped. Bigints are decimal TEXT (they exceed
// int64); our timestamps are unix ms, chain times (deadline, closesAt) unix seconds.

import type { Database } from "better-sqlite3";
import { StoreError } from "./errors";

export interface Migration {
  version: number;
  name: string;
  up: string;
  /**
   * Rebuilds a table that others reference (SQLite's 12-step ALTER): foreign keys are switched
   * off around the transaction and `foreign_key_check` must come back empty before it commits.
   */
  rebuildsTables?: boolean;
}

/** The cursor through which the registry of untouched devices is complete (schema 5). */
export const REGISTRY_CURSOR = "device-registry";

/** Marks a file as a relayer store ("MPRY"), so we never migrate another application's database. */
export const APPLICATION_ID = 0x4d505259;

const ITEM_STATUS = "'accepted','batched','submitted','settled','rejected','superseded'";
const BATCH_STATUS = "'created','sent','mined','confirmed','reverted','failed','dropped'";

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "items, tabs, batches, attempts, cursors, owner messages",
    up: `
      CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('payment','voucher')),
        token TEXT NOT NULL,
        sender TEXT NOT NULL,
        nonce INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN (${BATCH_STATUS})),
        item_count INTEGER NOT NULL,
        gas_estimate TEXT,
        gas_used TEXT,
        block_number INTEGER,
        block_hash TEXT,
        tx_hash TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      -- A nonce belongs to one batch unless that batch ended without using it (failed) or lost
      -- it to another transaction (dropped): two live batches can never race for one nonce.
      CREATE UNIQUE INDEX batches_sender_nonce ON batches (sender, nonce) WHERE status NOT IN ('failed','dropped');
      CREATE INDEX batches_status ON batches (status, id);

      -- seq: stable insertion order for paging (a rowid can change on VACUUM); id is the item's key.
      CREATE TABLE items (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('payment','voucher')),
        device TEXT NOT NULL,
        owner TEXT NOT NULL,
        policy_id INTEGER NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        amount TEXT NOT NULL,
        nonce INTEGER,
        tab_id TEXT,
        deadline INTEGER NOT NULL,
        max_fee TEXT NOT NULL,
        fee TEXT NOT NULL,
        ref TEXT,
        signature TEXT NOT NULL,
        r TEXT NOT NULL,
        vs TEXT NOT NULL,
        spend TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN (${ITEM_STATUS})),
        reason TEXT,
        message TEXT,
        outcome TEXT CHECK (outcome IN ('settled','rejected')),
        batch_id INTEGER REFERENCES batches (id),
        position INTEGER,
        tx_hash TEXT,
        block_number INTEGER,
        block_hash TEXT,
        accepted_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        CHECK ((kind = 'payment' AND nonce IS NOT NULL AND tab_id IS NULL AND ref IS NOT NULL)
            OR (kind = 'voucher' AND nonce IS NULL AND tab_id IS NOT NULL AND ref IS NULL)),
        CHECK ((batch_id IS NULL) = (position IS NULL)),
        -- batched/submitted items are in a live batch; accepted/superseded ones are in none.
        CHECK (status NOT IN ('batched','submitted') OR batch_id IS NOT NULL),
        CHECK (status NOT IN ('accepted','superseded') OR batch_id IS NULL)
      ) STRICT;
      -- Partial indexes hold only the small, hot sets (items leave them when batched or settled),
      -- so admission touches few pages however long the history grows.
      CREATE INDEX items_ready ON items (kind, token, deadline, device, nonce) WHERE status = 'accepted';
      CREATE INDEX items_pending ON items (status) WHERE status IN ('accepted', 'batched', 'submitted');
      CREATE INDEX items_device ON items (device);
      CREATE INDEX items_batch ON items (batch_id, position) WHERE batch_id IS NOT NULL;

      -- Membership history: items.batch_id is the current batch, this keeps every batch an item was in.
      CREATE TABLE batch_items (
        batch_id INTEGER NOT NULL REFERENCES batches (id),
        position INTEGER NOT NULL,
        item_id TEXT NOT NULL REFERENCES items (id),
        PRIMARY KEY (batch_id, position),
        UNIQUE (batch_id, item_id)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX batch_items_item ON batch_items (item_id);

      CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        batch_id INTEGER NOT NULL REFERENCES batches (id),
        hash TEXT NOT NULL UNIQUE,
        raw TEXT NOT NULL,
        nonce INTEGER NOT NULL,
        max_fee_per_gas TEXT NOT NULL,
        max_priority_fee_per_gas TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        broadcast_at INTEGER
      ) STRICT;
      CREATE INDEX attempts_batch ON attempts (batch_id, id);

      CREATE TABLE tabs (
        device TEXT NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        tab_id TEXT NOT NULL,
        newest_id TEXT REFERENCES items (id),
        newest_cumulative TEXT NOT NULL,
        settled_cumulative TEXT NOT NULL,
        closes_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (device, payee, token, tab_id)
      ) STRICT, WITHOUT ROWID;

      CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        block_number INTEGER NOT NULL,
        block_hash TEXT,
        updated_at INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE owner_messages (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('onboarding','revocation')),
        owner TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('accepted','submitted','confirmed','failed')),
        tx_hash TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX owner_messages_status ON owner_messages (status, created_at);
    `,
  },
  {
    version: 2,
    name: "owner messages are submitted as batches of their own kind",
    rebuildsTables: true,
    up: `
      CREATE TABLE batches_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('payment','voucher','onboarding','revocation')),
        token TEXT NOT NULL,
        sender TEXT NOT NULL,
        nonce INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN (${BATCH_STATUS})),
        item_count INTEGER NOT NULL,
        gas_estimate TEXT,
        gas_used TEXT,
        block_number INTEGER,
        block_hash TEXT,
        tx_hash TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        -- The owner message an onboarding or revocation batch submits (items batches: NULL).
        message_id TEXT REFERENCES owner_messages (id),
        CHECK ((kind IN ('onboarding','revocation')) = (message_id IS NOT NULL)),
        CHECK (message_id IS NULL OR item_count = 0)
      ) STRICT;
      INSERT INTO batches_v2 (id, kind, token, sender, nonce, status, item_count, gas_estimate, gas_used,
          block_number, block_hash, tx_hash, error, created_at, updated_at)
        SELECT id, kind, token, sender, nonce, status, item_count, gas_estimate, gas_used,
          block_number, block_hash, tx_hash, error, created_at, updated_at FROM batches;
      DROP TABLE batches;
      ALTER TABLE batches_v2 RENAME TO batches;
      CREATE UNIQUE INDEX batches_sender_nonce ON batches (sender, nonce) WHERE status NOT IN ('failed','dropped');
      CREATE INDEX batches_status ON batches (status, id);
      CREATE INDEX batches_message ON batches (message_id) WHERE message_id IS NOT NULL;
    `,
  },
  {
    version: 3,
    name: "relayer instances (heartbeats); PostgreSQL also gets owner versions and device claims",
    // One process owns a SQLite file: the heartbeat refuses a second relayer on it. What several
    // relayers sharing a database need besides (owner versions, device claims) is PostgreSQL's only.
    up: `
      CREATE TABLE relayer_instances (
        sender TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 4,
    name: "items carry the owner version that last changed them (PostgreSQL re-reads only what changed)",
    // One logical schema: the column exists here too, unused (one process owns a SQLite file, so
    // it never re-reads another's changes).
    up: `
      ALTER TABLE items ADD COLUMN owner_version INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 5,
    name: "the registry of untouched devices (assigned, and nothing has written their word since)",
    // A row per device an event assigned. fresh = 1: nothing has written the device's word since
    // its first assignment (policy_id is its newest assignment's, at block_number/log_index); a
    // touched device (0) never becomes fresh again. The registry is complete through the block of
    // the cursor named device-registry (REGISTRY_CURSOR), absent until a relayer reads events from the deployment.
    up: `
      CREATE TABLE devices (
        device TEXT PRIMARY KEY,
        fresh INTEGER NOT NULL CHECK (fresh IN (0, 1)),
        policy_id INTEGER NOT NULL,
        block_number INTEGER NOT NULL,
        log_index INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;
    `,
  },
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

export type MigrationResult = { from: number; to: number };

/** Brings `db` to the newest version in `migrations`; refuses a newer or foreign database. */
export function migrate(db: Database, file: string, migrations: readonly Migration[] = MIGRATIONS): MigrationResult {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
  const latest = migrations.length;
  const from = db.pragma("user_version", { simple: true }) as number;
  const appId = db.pragma("application_id", { simple: true }) as number;
  if (appId !== 0 && appId !== APPLICATION_ID) {
    throw new StoreError(
      "NOT_A_STORE",
      `${file} is another application's SQLite database (application_id ${appId}): point the relayer at its own file`,
      { file, applicationId: appId },
    );
  }
  if (appId === 0) {
    const tables = db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'").get() as { n: number };
    if (from !== 0 || tables.n > 0) {
      throw new StoreError(
        "NOT_A_STORE",
        `${file} is a SQLite database that the relayer did not create: point the relayer at a new or its own file`,
        { file, userVersion: from },
      );
    }
  }
  if (from > latest) {
    throw new StoreError(
      "SCHEMA_TOO_NEW",
      `${file} has schema version ${from}, but this relayer knows versions up to ${latest}: ` +
        "it was written by a newer relayer. Upgrade the relayer (downgrading a database is not supported).",
      { file, version: from, supported: latest },
    );
  }
  for (const m of migrations.slice(from)) {
    // PRAGMA foreign_keys is a no-op inside a transaction: switch it around the transaction.
    const foreignKeys = db.pragma("foreign_keys", { simple: true }) as number;
    try {
      if (m.rebuildsTables) db.pragma("foreign_keys = OFF");
      db.transaction(() => {
        db.exec(m.up);
        if (m.rebuildsTables) {
          const broken = db.pragma("foreign_key_check") as unknown[];
          if (broken.length > 0) throw new Error(`${broken.length} rows would break a foreign key`);
        }
        if (m.version === 1) db.pragma(`application_id = ${APPLICATION_ID}`);
        db.pragma(`user_version = ${m.version}`);
      })();
    } catch (cause) {
      throw new StoreError(
        "MIGRATION_FAILED",
        `migrating ${file} to version ${m.version} (${m.name}) failed, the file is unchanged at version ` +
          `${db.pragma("user_version", { simple: true })}: ${(cause as Error).message}`,
        { file, version: m.version },
        { cause },
      );
    } finally {
      if (m.rebuildsTables) db.pragma(`foreign_keys = ${foreignKeys ? "ON" : "OFF"}`);
    }
  }
  return { from, to: Math.max(from, latest) };
}
