// PostgreSQL schema, versioned in code like SQLite's: a schema version names the same logical schema
// on both backends (append a migration to both lists, with the same number). Applied at open in one
// transaction that holds an advisory lock, so relayers starting together migrate once, one after the
// other; the version history is the table machinepay_migrations in the connection's current schema.
//
// Types: bigints (amounts, fees, tab ids, gas) are NUMERIC, without a precision: it holds every
// non-negative bigint that validate.ts lets through (a precision would turn an out-of-range value into
// a failed group commit) and compares as a number, where SQLite's TEXT needs a length-first trick.
// Safe integers (nonces, block numbers, unix ms) are BIGINT, read back as JS numbers. Hex and
// enum columns are TEXT COLLATE "C": byte order, as SQLite's BINARY, whatever the database's locale.

import type { ClientBase } from "pg";
import { StoreError } from "./errors";

export interface PostgresMigration {
  version: number;
  name: string;
  up: string;
}

const ITEM_STATUS = "'accepted','batched','submitted','settled','rejected','superseded'";
const BATCH_STATUS = "'created','sent','mined','confirmed','reverted','failed','dropped'";

export const POSTGRES_MIGRATIONS: readonly PostgresMigration[] = [
  {
    version: 1,
    name: "items, tabs, batches, attempts, cursors, owner messages",
    up: `
      CREATE TABLE batches (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT COLLATE "C" NOT NULL CONSTRAINT batches_kind CHECK (kind IN ('payment','voucher')),
        token TEXT COLLATE "C" NOT NULL,
        sender TEXT COLLATE "C" NOT NULL,
        nonce BIGINT NOT NULL,
        status TEXT COLLATE "C" NOT NULL CHECK (status IN (${BATCH_STATUS})),
        item_count INTEGER NOT NULL,
        gas_estimate NUMERIC,
        gas_used NUMERIC,
        block_number BIGINT,
        block_hash TEXT COLLATE "C",
        tx_hash TEXT COLLATE "C",
        error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      -- A nonce belongs to one batch unless that batch ended without using it (failed) or lost
      -- it to another transaction (dropped): two live batches can never race for one nonce.
      CREATE UNIQUE INDEX batches_sender_nonce ON batches (sender, nonce) WHERE status NOT IN ('failed','dropped');
      CREATE INDEX batches_status ON batches (status, id);

      -- seq: insertion order for paging; id is the item's key.
      CREATE TABLE items (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT COLLATE "C" NOT NULL UNIQUE,
        kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('payment','voucher')),
        device TEXT COLLATE "C" NOT NULL,
        owner TEXT COLLATE "C" NOT NULL,
        policy_id BIGINT NOT NULL,
        payee TEXT COLLATE "C" NOT NULL,
        token TEXT COLLATE "C" NOT NULL,
        amount NUMERIC NOT NULL,
        nonce BIGINT,
        tab_id NUMERIC,
        deadline BIGINT NOT NULL,
        max_fee NUMERIC NOT NULL,
        fee NUMERIC NOT NULL,
        ref TEXT COLLATE "C",
        signature TEXT COLLATE "C" NOT NULL,
        r TEXT COLLATE "C" NOT NULL,
        vs TEXT COLLATE "C" NOT NULL,
        spend NUMERIC NOT NULL,
        status TEXT COLLATE "C" NOT NULL CHECK (status IN (${ITEM_STATUS})),
        reason TEXT,
        message TEXT,
        outcome TEXT COLLATE "C" CHECK (outcome IN ('settled','rejected')),
        batch_id BIGINT REFERENCES batches (id),
        position INTEGER,
        tx_hash TEXT COLLATE "C",
        block_number BIGINT,
        block_hash TEXT COLLATE "C",
        accepted_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        CHECK ((kind = 'payment' AND nonce IS NOT NULL AND tab_id IS NULL AND ref IS NOT NULL)
            OR (kind = 'voucher' AND nonce IS NULL AND tab_id IS NOT NULL AND ref IS NULL)),
        CHECK ((batch_id IS NULL) = (position IS NULL)),
        -- batched/submitted items are in a live batch; accepted/superseded ones are in none.
        CHECK (status NOT IN ('batched','submitted') OR batch_id IS NOT NULL),
        CHECK (status NOT IN ('accepted','superseded') OR batch_id IS NULL)
      );
      -- Partial indexes hold only the small, hot sets (items leave them when batched or settled).
      CREATE INDEX items_ready ON items (kind, token, deadline, device, nonce) WHERE status = 'accepted';
      CREATE INDEX items_pending ON items (status) WHERE status IN ('accepted', 'batched', 'submitted');
      CREATE INDEX items_device ON items (device);
      CREATE INDEX items_batch ON items (batch_id, position) WHERE batch_id IS NOT NULL;

      -- Membership history: items.batch_id is the current batch, this keeps every batch an item was in.
      CREATE TABLE batch_items (
        batch_id BIGINT NOT NULL REFERENCES batches (id),
        position INTEGER NOT NULL,
        item_id TEXT COLLATE "C" NOT NULL REFERENCES items (id),
        PRIMARY KEY (batch_id, position),
        UNIQUE (batch_id, item_id)
      );
      CREATE INDEX batch_items_item ON batch_items (item_id);

      CREATE TABLE attempts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        batch_id BIGINT NOT NULL REFERENCES batches (id),
        hash TEXT COLLATE "C" NOT NULL UNIQUE,
        raw TEXT COLLATE "C" NOT NULL,
        nonce BIGINT NOT NULL,
        max_fee_per_gas NUMERIC NOT NULL,
        max_priority_fee_per_gas NUMERIC NOT NULL,
        created_at BIGINT NOT NULL,
        broadcast_at BIGINT
      );
      CREATE INDEX attempts_batch ON attempts (batch_id, id);

      CREATE TABLE tabs (
        device TEXT COLLATE "C" NOT NULL,
        payee TEXT COLLATE "C" NOT NULL,
        token TEXT COLLATE "C" NOT NULL,
        tab_id NUMERIC NOT NULL,
        newest_id TEXT COLLATE "C" REFERENCES items (id),
        newest_cumulative NUMERIC NOT NULL,
        settled_cumulative NUMERIC NOT NULL,
        closes_at BIGINT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (device, payee, token, tab_id)
      );

      CREATE TABLE cursors (
        name TEXT COLLATE "C" PRIMARY KEY,
        block_number BIGINT NOT NULL,
        block_hash TEXT COLLATE "C",
        updated_at BIGINT NOT NULL
      );

      CREATE TABLE owner_messages (
        id TEXT COLLATE "C" PRIMARY KEY,
        kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('onboarding','revocation')),
        owner TEXT COLLATE "C" NOT NULL,
        body TEXT NOT NULL,
        status TEXT COLLATE "C" NOT NULL CHECK (status IN ('accepted','submitted','confirmed','failed')),
        tx_hash TEXT COLLATE "C",
        error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE INDEX owner_messages_status ON owner_messages (status, created_at);
    `,
  },
  {
    version: 2,
    name: "owner messages are submitted as batches of their own kind",
    // PostgreSQL alters in place (SQLite rebuilds the table): references to batches stay as they are.
    up: `
      ALTER TABLE batches DROP CONSTRAINT batches_kind;
      ALTER TABLE batches ADD CONSTRAINT batches_kind CHECK (kind IN ('payment','voucher','onboarding','revocation'));
      -- The owner message an onboarding or revocation batch submits (items batches: NULL).
      ALTER TABLE batches ADD COLUMN message_id TEXT COLLATE "C" REFERENCES owner_messages (id);
      ALTER TABLE batches ADD CONSTRAINT batches_message CHECK ((kind IN ('onboarding','revocation')) = (message_id IS NOT NULL));
      ALTER TABLE batches ADD CONSTRAINT batches_message_items CHECK (message_id IS NULL OR item_count = 0);
      CREATE INDEX batches_message ON batches (message_id) WHERE message_id IS NOT NULL;
    `,
  },
  {
    version: 3,
    name: "relayer instances (heartbeats); PostgreSQL also gets owner versions and device claims",
    up: `
      -- One row per relayer process sharing this database, named by its sender key.
      CREATE TABLE relayer_instances (
        sender TEXT COLLATE "C" PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      -- Bumped by every transaction that changes an owner's pending items; row locks taken in owner
      -- order before any item's serialize admission for an owner across relayers. changed_xid lets a
      -- relayer poll what changed since its last snapshot without missing a late commit.
      CREATE TABLE owner_versions (
        owner TEXT COLLATE "C" PRIMARY KEY,
        version BIGINT NOT NULL,
        changed_xid XID8 NOT NULL
      );
      CREATE INDEX owner_versions_changed ON owner_versions (changed_xid);
      -- Which relayer batches a device's items, until expires_at (unix ms).
      CREATE TABLE device_claims (
        device TEXT COLLATE "C" PRIMARY KEY,
        claimant TEXT COLLATE "C" NOT NULL,
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX items_owner_pending ON items (owner) WHERE status IN ('accepted', 'batched', 'submitted');
    `,
  },
  {
    version: 4,
    name: "items carry the owner version that last changed them (PostgreSQL re-reads only what changed)",
    // Every insert or update of an item stamps it with its owner's version as the writing
    // transaction sees it: the version that transaction bumped (it holds the owner's row, so no
    // other can bump it meanwhile), hence versions stamp in commit order. A relayer whose ledger
    // reflects version V of an owner re-reads only the rows stamped above V. search_path is pinned
    // to this schema at creation (the body names owner_versions unqualified).
    up: `
      ALTER TABLE items ADD COLUMN owner_version BIGINT NOT NULL DEFAULT 0;
      UPDATE items SET owner_version = coalesce((SELECT v.version FROM owner_versions v WHERE v.owner = items.owner), 0);
      CREATE INDEX items_owner_version ON items (owner, owner_version);
      CREATE FUNCTION machinepay_stamp_owner_version() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
      BEGIN
        NEW.owner_version := coalesce((SELECT v.version FROM owner_versions v WHERE v.owner = NEW.owner), 0);
        RETURN NEW;
      END $$;
      CREATE TRIGGER items_stamp_owner_version BEFORE INSERT OR UPDATE ON items
        FOR EACH ROW EXECUTE FUNCTION machinepay_stamp_owner_version();
    `,
  },
  {
    version: 5,
    name: "the registry of untouched devices (assigned, and nothing has written their word since)",
    // As SQLite's: a row per device an event assigned; fresh until anything writes its word. Complete
    // through the block of the cursor named device-registry (REGISTRY_CURSOR in migrations.ts).
    up: `
      CREATE TABLE devices (
        device TEXT COLLATE "C" PRIMARY KEY,
        fresh BOOLEAN NOT NULL,
        policy_id BIGINT NOT NULL,
        block_number BIGINT NOT NULL,
        log_index BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
    `,
  },
];

/** The schema version this code writes (the same number as SQLite's SCHEMA_VERSION). */
export const POSTGRES_SCHEMA_VERSION = POSTGRES_MIGRATIONS[POSTGRES_MIGRATIONS.length - 1].version;

/** Where the version history lives, in the connection's current schema. */
export const MIGRATIONS_TABLE = "machinepay_migrations";

/** First key of the migration advisory lock ("MPRY", as SQLite's application_id); the second is the schema. */
export const MIGRATION_LOCK_KEY = 0x4d505259;

export type PostgresMigrationResult = { from: number; to: number };

export interface MigratePostgresOptions {
  /** How long to wait for another relayer's migration (the advisory lock) before giving up (default 60 s). */
  lockTimeoutMs?: number;
}

/**
 * Brings the current schema of `client`'s connection to the newest version in `migrations`, in one
 * transaction under an advisory lock; refuses a newer schema or one holding another application's
 * tables. `where` names the database in messages (without a password).
 */
export async function migratePostgres(
  client: ClientBase,
  where: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
  options: MigratePostgresOptions = {},
): Promise<PostgresMigrationResult> {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
  const latest = migrations.length;
  const lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  const schema = (await client.query("SELECT current_schema() AS s")).rows[0].s as string | null;
  if (schema === null) {
    throw new StoreError(
      "CANNOT_OPEN",
      `${where} has no schema to create the relayer's tables in (search_path names none that exists): ` +
        "create the schema, or fix search_path",
      { database: where },
    );
  }
  let from = 0;
  let version = 0;
  await client.query("BEGIN");
  try {
    await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(lockTimeoutMs))}`);
    try {
      await client.query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", [MIGRATION_LOCK_KEY]);
    } catch (cause) {
      if ((cause as { code?: string }).code !== "55P03") throw cause;
      throw new StoreError(
        "CANNOT_OPEN",
        `another relayer has held the migration lock of ${where} (schema ${schema}) for over ${lockTimeoutMs} ms: ` +
          "wait for it to finish, or find the session holding it (pg_locks, locktype advisory)",
        { database: where, schema },
        { cause },
      );
    }
    // Read after the lock: a relayer that migrated meanwhile has committed, and this statement sees it.
    const tables = (
      await client.query(
        `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`,
      )
    ).rows.map((r) => r.name as string);
    if (!tables.includes(MIGRATIONS_TABLE)) {
      if (tables.length > 0) {
        throw new StoreError(
          "NOT_A_STORE",
          `schema ${schema} of ${where} holds tables the relayer did not create (${tables.slice(0, 5).join(", ")}): ` +
            "point the relayer at an empty database, or at a schema of its own (options=-c search_path=NAME in the URL)",
          { database: where, schema, tables: tables.slice(0, 20) },
        );
      }
      await client.query(
        `CREATE TABLE ${MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
      );
    }
    from = (await client.query(`SELECT coalesce(max(version), 0) AS v FROM ${MIGRATIONS_TABLE}`)).rows[0].v as number;
    version = from;
    if (from > latest) {
      throw new StoreError(
        "SCHEMA_TOO_NEW",
        `${where} (schema ${schema}) has schema version ${from}, but this relayer knows versions up to ${latest}: ` +
          "it was written by a newer relayer. Upgrade the relayer (downgrading a database is not supported).",
        { database: where, schema, version: from, supported: latest },
      );
    }
    for (const m of migrations.slice(from)) {
      version = m.version;
      await client.query(m.up);
      await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (version, name, applied_at) VALUES ($1, $2, $3)`, [
        m.version,
        m.name,
        Date.now(),
      ]);
    }
    await client.query("COMMIT");
    return { from, to: Math.max(from, latest) };
  } catch (cause) {
    await client.query("ROLLBACK").catch(() => {});
    if (cause instanceof StoreError) throw cause;
    if (version === from) throw cause; // before any migration ran: the caller says what failed
    const m = migrations[version - 1];
    throw new StoreError(
      "MIGRATION_FAILED",
      `migrating ${where} (schema ${schema}) to version ${m.version} (${m.name}) failed, the database is unchanged ` +
        `at version ${from}: ${(cause as Error).message}`,
      { database: where, schema, version: m.version },
      { cause },
    );
  }
}
