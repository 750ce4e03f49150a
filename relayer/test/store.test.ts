import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { expect } from "chai";
import fc from "fast-check";
import { Client } from "pg";
import type { PostgresServer } from "../../scripts/lib/postgres";
import {
  BATCH_TRANSITIONS,
  type BatchStatus,
  type DeviceEvent,
  GroupCommitter,
  type Hex,
  ITEM_TRANSITIONS,
  type ItemStatus,
  MIGRATION_LOCK_KEY,
  MIGRATIONS,
  MIGRATIONS_TABLE,
  type Migration,
  migrate,
  migratePostgres,
  type NewItem,
  OPEN_BATCH_STATUSES,
  type OpenStoreOptions,
  openPostgresStore,
  openSqliteStore,
  openSqliteThreadStore,
  openStore,
  POSTGRES_MIGRATIONS,
  POSTGRES_SCHEMA_VERSION,
  type PostgresStore,
  SCHEMA_VERSION,
  type SqliteStore,
  type Store,
  StoreError,
} from "../src/store";
import { newSchema, requirePostgres, sql } from "./support/postgres";

const rand32 = () => `0x${randomBytes(32).toString("hex")}` as Hex;
const addr = (n: number) => `0x${n.toString(16).padStart(40, "0")}` as Hex;
const DEVICE_A = addr(0xa);
const DEVICE_B = addr(0xb);
const OWNER = addr(0x0e);
const PAYEE = addr(0x9a);
const TOKEN = addr(0x70);
const OTHER_TOKEN = addr(0x71);
const SENDER = addr(0x5e);

let nextNonce = 0n;
function payment(over: Partial<NewItem> = {}): NewItem {
  return {
    id: rand32(),
    kind: "payment",
    device: DEVICE_A,
    owner: OWNER,
    policyId: 1,
    payee: PAYEE,
    token: TOKEN,
    amount: 250_000n,
    nonce: nextNonce++,
    tabId: null,
    deadline: 1_795_000_000,
    maxFee: 10n,
    fee: 5n,
    ref: rand32(),
    signature: `0x${"1b".repeat(65)}`,
    r: rand32(),
    vs: rand32(),
    spend: 250_005n,
    ...over,
  };
}

function voucher(cumulative: bigint, over: Partial<NewItem> = {}): NewItem {
  return payment({ kind: "voucher", nonce: null, tabId: 7n, ref: null, amount: cumulative, spend: 0n, ...over });
}

const tab = { device: DEVICE_A, payee: PAYEE, token: TOKEN, tabId: 7n };

async function rejection(promise: Promise<unknown>): Promise<StoreError> {
  try {
    await promise;
  } catch (error) {
    expect(error).to.be.instanceOf(StoreError);
    return error as StoreError;
  }
  throw new Error("expected the promise to reject");
}

// ---- backends: every backend-neutral test runs against each ----

/** "sqlite-thread": the SQLite store on its own thread (what the relayer runs), behind a proxy. */
type Backend = "sqlite" | "sqlite-thread" | "postgres";
const BACKENDS: readonly Backend[] = ["sqlite", "sqlite-thread", "postgres"];
const TITLES: Record<Backend, string> = {
  sqlite: "SQLite",
  "sqlite-thread": "SQLite on its own thread",
  postgres: "PostgreSQL",
};

/** What a backend-neutral test needs from its backend: the test's own store, empty at first. */
interface Harness {
  /** Opens the test's store (again: a reopen sees what was written). */
  open(options?: OpenStoreOptions): Promise<Store>;
  /** Opens another empty store, closed with the test's. */
  fresh(): Promise<Store>;
  /** From another connection: makes inserting item `id` fail inside the transaction. */
  poison(id: Hex): Promise<void>;
  unpoison(): Promise<void>;
}

function backendSuite(backend: Backend, tests: (h: Harness) => void): void {
  describe(`relayer store on ${TITLES[backend]}`, () => {
    const file = backend !== "postgres";
    let opened: Store[] = [];
    let dir = "";
    let pg: PostgresServer | undefined;
    let url = "";
    let schema = "";
    let fresh = 0;
    const track = async (store: Promise<Store>) => {
      const s = await store;
      opened.push(s);
      return s;
    };
    const open = async (target: string, options: OpenStoreOptions = {}) =>
      track(openStore(target, { thread: backend === "sqlite-thread", ...options }));

    if (backend === "postgres") {
      before(async function () {
        pg = await requirePostgres(this);
      });
    }
    beforeEach(async () => {
      opened = [];
      if (file) {
        dir = await mkdtemp(join(tmpdir(), "machinepay-store-"));
        url = join(dir, "relayer.db");
      } else ({ schema, url } = await newSchema(pg!));
    });
    afterEach(async () => {
      for (const s of opened) await s.close();
      if (file) await rm(dir, { recursive: true, force: true });
    });

    let side: Database.Database | undefined;
    tests({
      open: (options) => open(url, options),
      fresh: async () => (file ? open(join(dir, `fresh-${fresh++}.db`)) : open((await newSchema(pg!)).url)),
      async poison(id) {
        if (file) {
          side = new Database(url);
          side.exec(
            `CREATE TRIGGER poison BEFORE INSERT ON items WHEN NEW.id = '${id}'
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END`,
          );
        } else {
          await sql(
            pg!,
            `CREATE FUNCTION ${schema}.poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id = '${id}' THEN RAISE EXCEPTION 'poisoned by the test'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER poison BEFORE INSERT ON ${schema}.items FOR EACH ROW EXECUTE FUNCTION ${schema}.poison()`,
          );
        }
      },
      async unpoison() {
        if (file) {
          side!.exec("DROP TRIGGER poison");
          side!.close();
        } else await sql(pg!, `DROP TRIGGER poison ON ${schema}.items`);
      },
    });
  });
}

describe("relayer store: openStore and group commit", () => {
  it("openStore takes sqlite: URLs and plain paths, and refuses unknown schemes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "machinepay-store-"));
    try {
      for (const url of [`sqlite:${join(dir, "a.db")}`, `sqlite://${join(dir, "b.db")}`, join(dir, "c.db")]) {
        const store = await openStore(url);
        expect(store.backend).to.equal("sqlite");
        await store.close();
      }
      expect((await rejection(openStore("mysql://x/y"))).code).to.equal("UNSUPPORTED_BACKEND");
      expect((await rejection(openStore(""))).code).to.equal("INVALID_INPUT");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("openStore takes postgres:// URLs: an unreachable server is CANNOT_OPEN, without echoing the password", async () => {
    // Port 1 on loopback: refused at once, no server needed.
    for (const url of [
      "postgres://relayer:secret@127.0.0.1:1/machinepay",
      "postgresql://relayer:secret@127.0.0.1:1/x",
    ]) {
      const error = await rejection(openStore(url, { connectTimeoutMs: 2000 }));
      expect(error.code).to.equal("CANNOT_OPEN");
      expect(error.message).to.match(/cannot connect to PostgreSQL at postgres(ql)?:\/\/relayer:\*\*\*@127\.0\.0\.1:1/);
      expect(error.message).to.match(/check that the server is up/);
      expect(`${error.message} ${JSON.stringify(error.details)}`).not.to.include("secret");
    }
  });

  it("groups callers that arrive while an asynchronous commit is in flight (the PostgreSQL path)", async () => {
    const groups: number[][] = [];
    let release: () => void = () => {};
    const committer = new GroupCommitter<number, number>(async (inputs) => {
      groups.push(inputs);
      if (groups.length === 1) await new Promise<void>((r) => (release = r));
      return inputs.map((x) => x * 2);
    });
    const first = committer.submit(1);
    await new Promise((r) => setImmediate(r)); // the first commit is now in flight
    const later = [2, 3, 4].map((x) => committer.submit(x));
    await new Promise((r) => setTimeout(r, 10));
    expect(groups).to.deep.equal([[1]]); // nobody starts a second transaction meanwhile
    release();
    expect(await Promise.all([first, ...later])).to.deep.equal([2, 4, 6, 8]);
    expect(groups).to.deep.equal([[1], [2, 3, 4]]);
    const failing = new GroupCommitter<number, number>(async () => {
      throw new Error("connection lost");
    });
    const outcomes = await Promise.allSettled([failing.submit(1), failing.submit(2)]);
    expect(outcomes.map((o) => o.status)).to.deep.equal(["rejected", "rejected"]);
  });
});

for (const backend of BACKENDS) {
  backendSuite(backend, (h) => {
    const open = (options?: OpenStoreOptions) => h.open(options);

    describe("write: idempotent group commit", () => {
      it("stores an item once however it is sent twice: in one group, across calls, across a reopen", async () => {
        const store = await open();
        const it = payment({ amount: 2n ** 200n, spend: 2n ** 200n + 5n }); // far beyond int64
        const [a, b] = await Promise.all([store.write({ items: [it] }), store.write({ items: [it] })]);
        expect([a.items[0].inserted, b.items[0].inserted].sort()).to.deep.equal([false, true]);
        expect(b.items[0].item).to.deep.equal(a.items[0].item);
        expect(a.items[0].item.amount).to.equal(2n ** 200n);

        const again = await store.write({ items: [{ ...it, fee: 6n }] }); // a retry: the stored row wins
        expect(again.items[0]).to.deep.include({ inserted: false });
        expect(again.items[0].item.fee).to.equal(5n);

        await store.close();
        const reopened = await open();
        const third = await reopened.write({ items: [it] });
        expect(third.items[0].inserted).to.equal(false);
        expect(third.items[0].item).to.deep.equal(a.items[0].item);
        expect((await reopened.countByStatus()).items.accepted).to.equal(1);

        const twin = payment();
        const both = await reopened.write({ items: [twin, { ...twin, fee: 6n }] }); // twice in one set: the first wins
        expect(both.items.map((r) => r.inserted)).to.deep.equal([true, false]);
        expect(both.items[1].item).to.deep.equal(both.items[0].item);
        expect(both.items[1].item.fee).to.equal(5n);
      });

      it("applies the writes of one group in the callers' order, as if one after the other", async () => {
        const store = await open();
        const v1 = voucher(100n);
        // An update sent before its item is stored finds nothing; one sent after it applies.
        const [early, stored, late] = await Promise.all([
          store.write({ updates: [{ id: v1.id, status: "superseded" }] }),
          store.write({ items: [v1] }),
          store.write({ updates: [{ id: v1.id, status: "rejected", reason: "DeadlinePassed" }] }),
        ]);
        expect(store.stats().largestGroup).to.be.at.least(3);
        expect(early.updates[0]).to.deep.equal({ id: v1.id, applied: false, status: null });
        expect(stored.items[0].inserted).to.equal(true);
        expect(late.updates[0]).to.deep.equal({ id: v1.id, applied: true, status: "rejected" });
        // A write that sends the item again after that sees the row as it is now.
        const [again, reject] = await Promise.all([
          store.write({ items: [v1] }),
          store.write({ updates: [{ id: v1.id, status: "superseded" }] }),
        ]);
        expect(again.items[0]).to.deep.include({ inserted: false });
        expect(again.items[0].item).to.deep.include({ status: "rejected", reason: "DeadlinePassed" });
        expect(reject.updates[0]).to.deep.equal({ id: v1.id, applied: false, status: "rejected" });

        // Several writes of one group move the same tab, each seeing the one before.
        const vs = [300n, 500n, 400n].map((c) => voucher(c, { tabId: 9n }));
        const tab9 = { ...tab, tabId: 9n };
        const moved = await Promise.all(
          vs.map((x) => store.write({ items: [x], tabs: [{ ...tab9, newestId: x.id, newestCumulative: x.amount }] })),
        );
        expect(moved.map((r) => r.tabs[0].advanced)).to.deep.equal([true, true, false]);
        expect(moved.map((r) => r.tabs[0].tab.newestCumulative)).to.deep.equal([300n, 500n, 500n]);
        // Two tabs of one set, and the same tab twice in one set.
        const [a, b, c] = [voucher(10n, { tabId: 10n }), voucher(20n, { tabId: 11n }), voucher(5n, { tabId: 10n })];
        const two = await store.write({
          items: [a, b, c],
          tabs: [
            { ...tab, tabId: 10n, newestId: a.id, newestCumulative: 10n },
            { ...tab, tabId: 11n, newestId: b.id, newestCumulative: 20n },
            { ...tab, tabId: 10n, newestId: c.id, newestCumulative: 5n },
          ],
        });
        expect(two.tabs.map((t) => [t.advanced, t.tab.tabId, t.tab.newestId])).to.deep.equal([
          [true, 10n, a.id],
          [true, 11n, b.id],
          [false, 10n, a.id],
        ]);
        // Distinct tabs of one set: one new, one that does not move.
        const [d, e] = [voucher(7n, { tabId: 12n }), voucher(15n, { tabId: 11n })];
        const distinct = await store.write({
          items: [d, e],
          tabs: [
            { ...tab, tabId: 12n, newestId: d.id, newestCumulative: 7n },
            { ...tab, tabId: 11n, newestId: e.id, newestCumulative: 15n },
          ],
        });
        expect(
          distinct.tabs.map((t) => [t.advanced, t.tab.tabId, t.tab.newestId, t.tab.newestCumulative]),
        ).to.deep.equal([
          [true, 12n, d.id, 7n],
          [false, 11n, b.id, 20n],
        ]);
        expect(await store.getTab({ ...tab, tabId: 9n })).to.deep.include({
          newestId: vs[1].id,
          newestCumulative: 500n,
        });
      });

      it("commits 500 concurrent writes in far fewer transactions, acknowledging each after the commit", async () => {
        const store = await open();
        const items = Array.from({ length: 500 }, () => payment());
        const results = await Promise.all(items.map((it) => store.write({ items: [it] })));
        expect(results.every((r) => r.items[0].inserted)).to.equal(true);
        const stats = store.stats();
        expect(stats.writes).to.equal(500);
        expect(stats.groupCommits).to.be.at.most(5);
        expect(stats.largestGroup).to.be.at.least(100);
        const stored = await store.getItems(items.map((it) => it.id));
        expect(stored.every((row) => row?.status === "accepted")).to.equal(true);
      });

      it("caps a group at maxGroupRows rows; the rest wait for the next commit", async () => {
        const store = await open({ maxGroupRows: 100 });
        await Promise.all(
          Array.from({ length: 20 }, () => store.write({ items: Array.from({ length: 30 }, () => payment()) })),
        );
        expect(store.stats().largestGroup).to.equal(3); // 3 × 30 rows fit in 100, a 4th would not
        expect(store.stats().groupCommits).to.equal(7);
        const big = await store.write({ items: Array.from({ length: 150 }, () => payment()) }); // one call always fits
        expect(big.items).to.have.length(150);
      });

      it("close() commits the writes already queued, then refuses new ones", async () => {
        const store = await open();
        const items = Array.from({ length: 10 }, () => payment());
        const pending = items.map((it) => store.write({ items: [it] }));
        await store.close();
        expect((await Promise.all(pending)).every((r) => r.items[0].inserted)).to.equal(true);
        expect((await rejection(store.write({ items: [payment()] }))).code).to.equal("CLOSED");
        expect((await rejection(store.getItem(items[0].id))).code).to.equal("CLOSED");
        const rows = await (await open()).getItems(items.map((it) => it.id));
        expect(rows.every((r) => r !== null)).to.equal(true);
      });

      it("rejects every caller of a failed transaction and stores none of its writes", async () => {
        const store = await open();
        const items = Array.from({ length: 50 }, () => payment());
        // Another connection poisons item 30: the transaction fails after 29 writes were applied.
        await h.poison(items[30].id);
        const settled = await Promise.allSettled(items.map((it) => store.write({ items: [it] })));
        expect(settled.every((r) => r.status === "rejected")).to.equal(true);
        const error = (settled[0] as PromiseRejectedResult).reason as StoreError;
        expect(error).to.be.instanceOf(StoreError);
        expect(error.code).to.equal("WRITE_FAILED");
        expect(error.message).to.match(/50 writes failed and nothing of it was stored \(poisoned by the test\)/);
        expect((await store.getItems(items.map((it) => it.id))).every((row) => row === null)).to.equal(true);

        await h.unpoison();
        const retried = await Promise.all(items.map((it) => store.write({ items: [it] })));
        expect(retried.every((r) => r.items[0].inserted)).to.equal(true);
      });

      it("rejects a malformed write alone, before it can join (and fail) a group", async () => {
        const store = await open();
        const good = Array.from({ length: 5 }, () => payment());
        const bad = { ...payment(), fee: 11n }; // above maxFee
        const settled = await Promise.allSettled([
          ...good.map((it) => store.write({ items: [it] })),
          store.write({ items: [bad] }),
          store.write({ items: [payment({ device: "0x1234" })] }),
        ]);
        expect(settled.slice(0, 5).every((r) => r.status === "fulfilled")).to.equal(true);
        for (const r of settled.slice(5)) {
          expect(r.status).to.equal("rejected");
          expect(((r as PromiseRejectedResult).reason as StoreError).code).to.equal("INVALID_INPUT");
        }
        expect(((settled[5] as PromiseRejectedResult).reason as Error).message).to.match(/items\[0\]\.fee/);
        expect(await store.getItem(bad.id)).to.equal(null);
      });

      it("keeps what was acknowledged across close and reopen, with addresses lowercased", async () => {
        const store = await open();
        const it = payment({ device: `0x${"AB".repeat(20)}` as Hex });
        await store.write({ items: [it] });
        await store.close();
        const row = await (await open()).getItem(it.id);
        expect(row).to.deep.include({ device: `0x${"ab".repeat(20)}`, nonce: it.nonce, status: "accepted" });
      });

      it("supersedes a voucher in the transaction that stores its successor, and moves a tab only forward", async () => {
        const store = await open();
        const v1 = voucher(100n);
        await store.write({ items: [v1], tabs: [{ ...tab, newestId: v1.id, newestCumulative: 100n }] });
        const v2 = voucher(250n);
        const r = await store.write({
          items: [v2],
          tabs: [{ ...tab, newestId: v2.id, newestCumulative: 250n }],
          updates: [{ id: v1.id, status: "superseded" }],
        });
        expect(r.tabs[0]).to.deep.include({ advanced: true });
        expect(r.tabs[0].tab).to.deep.include({ newestId: v2.id, newestCumulative: 250n, settledCumulative: 0n });
        expect(r.updates[0]).to.deep.equal({ id: v1.id, applied: true, status: "superseded" });
        expect((await store.getItem(v1.id))?.status).to.equal("superseded");

        // An older voucher arriving late does not move the tab back ("99" > "250" as text: compared as numbers).
        const late = voucher(99n);
        const back = await store.write({ items: [late], tabs: [{ ...tab, newestId: late.id, newestCumulative: 99n }] });
        expect(back.tabs[0].advanced).to.equal(false);
        expect((await store.getTab(tab))?.newestId).to.equal(v2.id);

        // Once batched, a voucher is not superseded: the update reports it, the successor is still stored.
        await store.createBatch({ kind: "voucher", token: TOKEN, sender: SENDER, nonce: 0, itemIds: [v2.id] });
        const v3 = voucher(400n);
        const r3 = await store.write({
          items: [v3],
          tabs: [{ ...tab, newestId: v3.id, newestCumulative: 400n }],
          updates: [{ id: v2.id, status: "superseded" }],
        });
        expect(r3.items[0].inserted).to.equal(true);
        expect(r3.updates[0]).to.deep.equal({ id: v2.id, applied: false, status: "batched" });

        const wrongTab = voucher(500n, { tabId: 8n });
        const error = await rejection(
          store.write({ items: [wrongTab], tabs: [{ ...tab, newestId: wrongTab.id, newestCumulative: 500n }] }),
        );
        expect(error.code).to.equal("INVALID_INPUT");
      });
    });

    describe("reads", () => {
      it("orders ready items by deadline, then device, then nonce, within one kind and token", async () => {
        const store = await open();
        const items = [
          payment({ deadline: 300, device: DEVICE_A, nonce: 2n }),
          payment({ deadline: 100, device: DEVICE_B, nonce: 9n }),
          payment({ deadline: 200, device: DEVICE_B, nonce: 1n }),
          payment({ deadline: 200, device: DEVICE_A, nonce: 10n }),
          payment({ deadline: 200, device: DEVICE_A, nonce: 9n }), // 9 before 10: numbers, not text
          payment({ deadline: 50, token: OTHER_TOKEN }),
          voucher(5n, { deadline: 10 }),
        ];
        await store.write({ items });
        const rejected = payment({ deadline: 1 });
        await store.write({ items: [rejected] });
        expect(await store.rejectItems([{ id: rejected.id, reason: "DeadlinePassed" }])).to.deep.equal([rejected.id]);

        const ready = await store.readyItems({ kind: "payment", token: TOKEN, limit: 10 });
        expect(ready.map((r) => [r.deadline, r.device, r.nonce])).to.deep.equal([
          [100, DEVICE_B, 9n],
          [200, DEVICE_A, 9n],
          [200, DEVICE_A, 10n],
          [200, DEVICE_B, 1n],
          [300, DEVICE_A, 2n],
        ]);
        expect(await store.readyItems({ kind: "payment", token: TOKEN, limit: 2 })).to.have.length(2);
        expect((await store.readyItems({ kind: "voucher", token: TOKEN, limit: 10 })).map((r) => r.id)).to.deep.equal([
          items[6].id,
        ]);
      });

      it("pages item lists newest first, filters them, and counts by status", async () => {
        const store = await open();
        const items = Array.from({ length: 7 }, (_, i) =>
          payment({ acceptedAt: 1000 + Math.floor(i / 2), device: i % 3 === 0 ? DEVICE_B : DEVICE_A }),
        );
        await store.write({ items });
        const seen: Hex[] = [];
        let after: string | undefined;
        do {
          const page = await store.listItems({ limit: 3, after });
          seen.push(...page.rows.map((r) => r.id));
          after = page.next ?? undefined;
        } while (after);
        expect(seen).to.have.length(7);
        expect(new Set(seen).size).to.equal(7);
        const times = (await store.getItems(seen)).map((r) => r!.acceptedAt);
        expect(times).to.deep.equal([...times].sort((a, b) => b - a));

        const ofB = await store.listItems({ device: DEVICE_B, limit: 10 });
        expect(ofB.rows.map((r) => r.id).sort()).to.deep.equal([items[0].id, items[3].id, items[6].id].sort());
        expect(ofB.next).to.equal(null);

        await store.rejectItems([{ id: items[1].id, reason: "ExceedsPeriodCap", message: "period cap" }]);
        await store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: [items[2].id] });
        const counts = await store.countByStatus();
        expect(counts.items).to.deep.include({ accepted: 5, batched: 1, rejected: 1, settled: 0 });
        expect(counts.batches).to.deep.include({ created: 1, sent: 0 });
        // The probe's count (through the pending index) agrees with the full one.
        expect(await store.pendingCounts()).to.deep.equal({ accepted: 5, batched: 1, submitted: 0 });
        expect((await store.pendingItems()).map((r) => r.id).sort()).to.deep.equal(
          items
            .filter((_, i) => i !== 1)
            .map((it) => it.id)
            .sort(),
        );
        const [missing, found] = await store.getItems([rand32(), items[1].id]);
        expect(missing).to.equal(null);
        expect(found).to.deep.include({ status: "rejected", reason: "ExceedsPeriodCap", message: "period cap" });
      });
    });

    describe("batches", () => {
      async function seeded(n = 4) {
        const store = await open();
        const items = Array.from({ length: n }, () => payment());
        await store.write({ items });
        return { store, ids: items.map((it) => it.id) };
      }
      const attempt = (nonce: number, fee = 1n) => ({
        hash: rand32(),
        raw: `0x02${randomBytes(100).toString("hex")}` as Hex,
        nonce,
        maxFeePerGas: 30_000_000_000n * fee,
        maxPriorityFeePerGas: 1_000_000_000n * fee,
      });

      it("creates a batch in one transaction and refuses an item that is already in a live batch", async () => {
        const { store, ids } = await seeded();
        const id = await store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 0,
          itemIds: [ids[2], ids[0]],
          gasEstimate: 123_456n,
        });
        const batch = await store.getBatch(id);
        expect(batch).to.deep.include({ status: "created", itemCount: 2, nonce: 0, gasEstimate: 123_456n });
        expect(batch!.itemIds).to.deep.equal([ids[2], ids[0]]);
        expect(await store.getItem(ids[2])).to.deep.include({ status: "batched", batchId: id, position: 0 });
        expect(await store.getItem(ids[0])).to.deep.include({ status: "batched", batchId: id, position: 1 });

        const error = await rejection(
          store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 1, itemIds: [ids[1], ids[0]] }),
        );
        expect(error.code).to.equal("CONFLICT");
        expect(error.details.refused).to.deep.equal([{ id: ids[0], status: "batched" }]);
        expect((await store.getItem(ids[1]))?.status).to.equal("accepted"); // nothing of the refused batch stays
        expect((await store.listBatches({ limit: 10 })).rows).to.have.length(1);

        const wrongToken = await rejection(
          store.createBatch({ kind: "payment", token: OTHER_TOKEN, sender: SENDER, nonce: 1, itemIds: [ids[1]] }),
        );
        expect(wrongToken.code).to.equal("CONFLICT");
        const unknown = await rejection(
          store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 1, itemIds: [rand32()] }),
        );
        expect(unknown.details.refused).to.deep.equal([
          { id: (unknown.details.refused as { id: Hex }[])[0].id, status: null },
        ]);
      });

      it("gives each nonce to one live batch and hands out the next one", async () => {
        const { store, ids } = await seeded();
        expect(await store.nextNonce(SENDER)).to.equal(null);
        const first = await store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 7,
          itemIds: [ids[0]],
        });
        expect(await store.nextNonce(SENDER)).to.equal(8);
        expect(await store.nextNonce(addr(0x5f))).to.equal(null);
        const clash = await rejection(
          store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 7, itemIds: [ids[1]] }),
        );
        expect(clash.code).to.equal("NONCE_IN_USE");
        expect((await store.getItem(ids[1]))?.status).to.equal("accepted");
        // A batch that failed before any broadcast gives its nonce back.
        expect(await store.requeueBatch(first, { status: "failed", error: "simulation reverted" })).to.deep.equal([
          ids[0],
        ]);
        expect(await store.nextNonce(SENDER)).to.equal(null);
        const second = await store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 7,
          itemIds: [ids[0]],
        });
        expect(second).to.be.greaterThan(first);
      });

      it("keeps every attempt of a batch, written before broadcast, and tracks the broadcast", async () => {
        const { store, ids } = await seeded(2);
        const id = await store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 3, itemIds: ids });
        const a1 = attempt(3);
        const row = await store.addAttempt(id, a1);
        expect(row).to.deep.include({ batchId: id, hash: a1.hash, broadcastAt: null, maxFeePerGas: a1.maxFeePerGas });
        expect(await store.addAttempt(id, a1)).to.deep.equal(row); // recorded once
        expect((await rejection(store.addAttempt(id, attempt(4)))).code).to.equal("INVALID_INPUT"); // wrong nonce
        expect((await store.getBatch(id))?.status).to.equal("created"); // not broadcast yet

        await store.markBroadcast(a1.hash);
        expect(await store.getItem(ids[0])).to.deep.include({ status: "submitted", txHash: a1.hash });
        const a2 = attempt(3, 2n); // a replacement at the same nonce
        await store.addAttempt(id, a2);
        await store.markBroadcast(a2.hash);

        const open = await store.openBatches();
        expect(open).to.have.length(1);
        expect(open[0].status).to.equal("sent");
        expect(open[0].attempts.map((a) => a.hash)).to.deep.equal([a1.hash, a2.hash]);
        expect(open[0].attempts.every((a) => a.broadcastAt !== null)).to.equal(true);
        expect(open[0].attempts[1].raw).to.equal(a2.raw);
        expect((await store.getItem(ids[1]))?.txHash).to.equal(a2.hash);
        expect((await rejection(store.markBroadcast(rand32()))).code).to.equal("NOT_FOUND");
      });

      it("settles items at confirmation, not when mined, and advances a settled voucher's tab", async () => {
        const store = await open();
        const [p1, p2] = [payment(), payment()];
        const v = voucher(900n);
        await store.write({ items: [p1, p2, v], tabs: [{ ...tab, newestId: v.id, newestCumulative: 900n }] });
        const pb = await store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 0,
          itemIds: [p1.id, p2.id],
        });
        const vb = await store.createBatch({
          kind: "voucher",
          token: TOKEN,
          sender: SENDER,
          nonce: 1,
          itemIds: [v.id],
        });
        const [pa, va] = [attempt(0), attempt(1)];
        await store.addAttempt(pb, pa);
        await store.addAttempt(vb, va);
        await store.markBroadcast(pa.hash);
        await store.markBroadcast(va.hash);

        const mined = { blockNumber: 42, blockHash: rand32(), gasUsed: 80_000n };
        const partial = await rejection(
          store.markBatchMined(pb, { ...mined, txHash: pa.hash, items: [{ id: p1.id, status: "settled" }] }),
        );
        expect(partial.code).to.equal("INVALID_INPUT");
        expect(partial.details.missing).to.deep.equal([p2.id]);
        const foreign = await rejection(store.markBatchMined(pb, { ...mined, txHash: va.hash, items: [] }));
        expect(foreign.code).to.equal("CONFLICT");

        await store.markBatchMined(pb, {
          ...mined,
          txHash: pa.hash,
          items: [
            { id: p1.id, status: "settled" },
            { id: p2.id, status: "rejected", reason: "InsufficientBalance" },
          ],
        });
        await store.markBatchMined(vb, { ...mined, txHash: va.hash, items: [{ id: v.id, status: "settled" }] });
        expect(await store.getItem(p1.id)).to.deep.include({
          status: "submitted",
          outcome: "settled",
          blockNumber: 42,
        });
        expect(await store.getItem(p2.id)).to.deep.include({ status: "submitted", outcome: "rejected" });
        expect(await store.getBatch(pb)).to.deep.include({ status: "mined", txHash: pa.hash, gasUsed: 80_000n });
        expect((await store.getTab(tab))?.settledCumulative).to.equal(0n);

        await store.markBatchConfirmed(pb);
        await store.markBatchConfirmed(vb);
        expect(await store.getItem(p1.id)).to.deep.include({ status: "settled", batchId: pb, txHash: pa.hash });
        expect(await store.getItem(p2.id)).to.deep.include({ status: "rejected", reason: "InsufficientBalance" });
        expect((await store.getItem(v.id))?.status).to.equal("settled");
        expect((await store.getTab(tab))?.settledCumulative).to.equal(900n);
        expect(await store.openBatches()).to.deep.equal([]);
        expect((await rejection(store.markBatchConfirmed(pb))).code).to.equal("CONFLICT");
      });

      it("puts a reverted or dropped batch's items back to accepted, keeping the batch's history", async () => {
        const { store, ids } = await seeded(3);
        const id = await store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: ids });
        const a = attempt(0);
        await store.addAttempt(id, a);
        await store.markBroadcast(a.hash);
        const failed = await rejection(store.requeueBatch(id, { status: "failed" }));
        expect(failed.message).to.match(/may still land/);

        const receipt = { txHash: a.hash, blockNumber: 9, blockHash: rand32(), gasUsed: 50_000n };
        expect(await store.requeueBatch(id, { status: "reverted", error: "out of gas", receipt })).to.deep.equal(ids);
        for (const row of await store.getItems(ids)) {
          expect(row).to.deep.include({ status: "accepted", batchId: null, position: null, txHash: null });
        }
        const batch = await store.getBatch(id);
        expect(batch).to.deep.include({ status: "reverted", error: "out of gas", blockNumber: 9 });
        expect(batch!.itemIds).to.deep.equal(ids);
        expect(batch!.attempts.map((x) => x.hash)).to.deep.equal([a.hash]);

        const again = await store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 1,
          itemIds: ids,
        });
        expect((await store.listItems({ batchId: id, limit: 10 })).rows.map((r) => r.batchId)).to.deep.equal([
          again,
          again,
          again,
        ]);
        expect((await rejection(store.requeueBatch(id, { status: "dropped" }))).code).to.equal("CONFLICT");
      });

      it("takes a mined batch back to sent when its block leaves the chain, then records the new block", async () => {
        const { store, ids } = await seeded(1);
        const id = await store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: ids });
        const a = attempt(0);
        await store.addAttempt(id, a);
        // Recovery: the transaction landed before its broadcast was recorded.
        await store.markBatchMined(id, {
          txHash: a.hash,
          blockNumber: 10,
          blockHash: rand32(),
          gasUsed: 1n,
          items: [{ id: ids[0], status: "settled" }],
        });
        expect((await store.getBatch(id))?.attempts[0].broadcastAt).to.be.a("number");
        await store.unmineBatch(id);
        expect(await store.getBatch(id)).to.deep.include({ status: "sent", blockNumber: null, txHash: null });
        expect(await store.getItem(ids[0])).to.deep.include({ status: "submitted", outcome: null, blockNumber: null });
        expect((await rejection(store.markBatchConfirmed(id))).code).to.equal("CONFLICT");
        const blockHash = rand32();
        await store.markBatchMined(id, {
          txHash: a.hash,
          blockNumber: 11,
          blockHash,
          gasUsed: 1n,
          items: [{ id: ids[0], status: "settled" }],
        });
        await store.markBatchConfirmed(id);
        expect(await store.getItem(ids[0])).to.deep.include({ status: "settled", blockNumber: 11, blockHash });
      });

      it("never puts an item in two open batches and only follows the state machines (random operations)", async function () {
        this.timeout(120_000);
        type Op =
          | { op: "create"; items: number[] }
          | { op: "attempt"; batch: number }
          | { op: "unmine"; batch: number }
          | { op: "confirm"; batch: number }
          | { op: "mine"; batch: number; outcomes: boolean[] }
          | { op: "requeue"; batch: number; status: "reverted" | "dropped" | "failed" }
          | { op: "reject"; item: number };
        const N = 6;
        const recent = fc.nat(2);
        const isOpenBatch = (status: BatchStatus) => (OPEN_BATCH_STATUSES as readonly string[]).includes(status);
        const opArb: fc.Arbitrary<Op> = fc.oneof(
          {
            weight: 3,
            arbitrary: fc.record({
              op: fc.constant("create" as const),
              items: fc.uniqueArray(fc.nat(N - 1), { minLength: 1, maxLength: 4 }),
            }),
          },
          { weight: 3, arbitrary: fc.record({ op: fc.constant("attempt" as const), batch: recent }) },
          {
            weight: 3,
            arbitrary: fc.record({
              op: fc.constant("mine" as const),
              batch: recent,
              outcomes: fc.array(fc.boolean(), { minLength: N, maxLength: N }),
            }),
          },
          { weight: 1, arbitrary: fc.record({ op: fc.constant("unmine" as const), batch: recent }) },
          { weight: 2, arbitrary: fc.record({ op: fc.constant("confirm" as const), batch: recent }) },
          {
            weight: 2,
            arbitrary: fc.record({
              op: fc.constant("requeue" as const),
              batch: recent,
              status: fc.constantFrom("reverted" as const, "dropped" as const, "failed" as const),
            }),
          },
          { weight: 1, arbitrary: fc.record({ op: fc.constant("reject" as const), item: fc.nat(N - 1) }) },
        );
        const succeeded: Record<string, number> = {};
        await fc.assert(
          fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40, size: "max" }), async (ops) => {
            const store = await h.fresh();
            try {
              const items = Array.from({ length: N }, () => payment());
              await store.write({ items });
              const ids = items.map((it) => it.id);
              type BatchSnap = { status: BatchStatus; itemIds: Hex[]; attempts: Hex[]; nonce: number };
              type Snap = {
                items: Map<Hex, { status: ItemStatus; batchId: number | null }>;
                batches: Map<number, BatchSnap>;
              };
              const snapshot = async (): Promise<Snap> => {
                const rows = await store.getItems(ids);
                const batches = new Map<number, BatchSnap>();
                for (const b of (await store.listBatches({ limit: 1000 })).rows) {
                  const d = (await store.getBatch(b.id))!;
                  batches.set(b.id, {
                    status: d.status,
                    itemIds: d.itemIds,
                    attempts: d.attempts.map((a) => a.hash),
                    nonce: d.nonce,
                  });
                }
                return {
                  items: new Map(rows.map((r) => [r!.id, { status: r!.status, batchId: r!.batchId }])),
                  batches,
                };
              };
              let before = await snapshot();
              for (const op of ops) {
                // batch 0 and 1: the newest open batches (where the action is); 2: any batch, for refusals.
                const all = [...before.batches.keys()];
                const live = all.filter((id) => isOpenBatch(before.batches.get(id)!.status));
                const pool = "batch" in op && op.batch < 2 && live.length > 0 ? live : all;
                const pick = "batch" in op && pool.length > 0 ? pool[pool.length - 1 - (op.batch % pool.length)] : 1;
                let refused = false;
                try {
                  if (op.op === "create") {
                    const chosen = op.items.map((i) => ids[i]);
                    const nonce = (await store.nextNonce(SENDER)) ?? 0;
                    const shouldWork = chosen.every((id) => before.items.get(id)!.status === "accepted");
                    const error = await store
                      .createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce, itemIds: chosen })
                      .then(
                        () => null,
                        (e: unknown) => e,
                      );
                    const why =
                      error === null ? "took an item that was not accepted" : `refused accepted items: ${error}`;
                    expect(error === null, `createBatch ${why}`).to.equal(shouldWork);
                    if (error !== null) throw error;
                  } else if (op.op === "attempt") {
                    const a = attempt(before.batches.get(pick)?.nonce ?? 0);
                    await store.addAttempt(pick, a);
                    await store.markBroadcast(a.hash);
                  } else if (op.op === "mine") {
                    const b = before.batches.get(pick);
                    const held = ids.filter(
                      (id) =>
                        before.items.get(id)!.batchId === pick &&
                        ["batched", "submitted"].includes(before.items.get(id)!.status),
                    );
                    await store.markBatchMined(pick, {
                      txHash: b?.attempts.at(-1) ?? rand32(),
                      blockNumber: 1,
                      blockHash: rand32(),
                      gasUsed: 1n,
                      items: held.map((id, i) =>
                        op.outcomes[i]
                          ? { id, status: "settled" as const }
                          : { id, status: "rejected" as const, reason: "NonceUsed" },
                      ),
                    });
                  } else if (op.op === "unmine") await store.unmineBatch(pick);
                  else if (op.op === "confirm") await store.markBatchConfirmed(pick);
                  else if (op.op === "requeue") await store.requeueBatch(pick, { status: op.status });
                  else await store.rejectItems([{ id: ids[op.item], reason: "DeadlinePassed" }]);
                } catch (e) {
                  if (!(e instanceof StoreError)) throw e;
                  expect(["CONFLICT", "NOT_FOUND", "NONCE_IN_USE"]).to.include(e.code, e.message);
                  refused = true;
                }
                if (!refused) succeeded[op.op] = (succeeded[op.op] ?? 0) + 1;
                const after = await snapshot();
                if (refused) expect(after, `refused ${op.op} changed the store`).to.deep.equal(before);
                const open = [...after.batches].filter(([, b]) => isOpenBatch(b.status));
                for (const [id, item] of after.items) {
                  const holders = open.filter(([, b]) => b.itemIds.includes(id)).map(([bid]) => bid);
                  expect(holders.length, `item in batches ${holders}`).to.be.at.most(1);
                  const live = item.status === "batched" || item.status === "submitted";
                  expect(live ? [item.batchId] : [], `${item.status} item and its open batch`).to.deep.equal(holders);
                  if (item.status === "batched") expect(after.batches.get(item.batchId!)!.status).to.equal("created");
                  if (item.status === "submitted")
                    expect(["sent", "mined"]).to.include(after.batches.get(item.batchId!)!.status);
                  const was = before.items.get(id)!.status;
                  if (was !== item.status)
                    expect(ITEM_TRANSITIONS[was], `${was} → ${item.status}`).to.include(item.status);
                }
                for (const [id, b] of after.batches) {
                  const was = before.batches.get(id)?.status;
                  if (was === undefined) expect(b.status).to.equal("created");
                  else if (was !== b.status)
                    expect(BATCH_TRANSITIONS[was], `batch ${was} → ${b.status}`).to.include(b.status);
                }
                before = after;
              }
            } finally {
              await store.close();
            }
          }),
          // A fixed seed: the coverage check below must not depend on the draw.
          { numRuns: 50, seed: 1 },
        );
        // The runs reached every operation, not just the refusals.
        for (const op of ["create", "attempt", "mine", "unmine", "confirm", "requeue", "reject"]) {
          expect(succeeded[op] ?? 0, `successful ${op} operations`).to.be.greaterThan(0);
        }
      });
    });

    describe("the registry of untouched devices", () => {
      const assigned = (device: Hex, policyId: number, blockNumber: number, logIndex = 0) => ({
        device,
        kind: "assigned" as const,
        policyId,
        blockNumber,
        logIndex,
      });
      const touched = (device: Hex, blockNumber: number, logIndex = 0) => ({
        device,
        kind: "touched" as const,
        blockNumber,
        logIndex,
      });
      const range = (from: number, events: DeviceEvent[], fromDeployment = false) => ({ from, events, fromDeployment });
      const C = "events:test";
      const DEVICE_C = addr(0xc);

      it("knows a device untouched from its assignment until anything writes its word", async () => {
        const store = await open();
        expect(await store.untouchedDevices([DEVICE_A, DEVICE_B])).to.deep.equal([null, null]);
        // Read from the deployment (block 10): A and B assigned, B paused in the same range.
        await store.setCursor(
          C,
          { blockNumber: 12, blockHash: rand32() },
          range(10, [assigned(DEVICE_A, 3, 10), assigned(DEVICE_B, 3, 11), touched(DEVICE_B, 12)], true),
        );
        expect(await store.untouchedDevices([DEVICE_A, DEVICE_B, DEVICE_C])).to.deep.equal([3, null, null]);
        // A moves to policy 4 (its word keeps counters: still untouched); B's re-assignment never revives it.
        await store.setCursor(
          C,
          { blockNumber: 13, blockHash: rand32() },
          range(13, [assigned(DEVICE_A, 4, 13), assigned(DEVICE_B, 4, 13, 1)]),
        );
        expect(await store.untouchedDevices([DEVICE_A, DEVICE_B])).to.deep.equal([4, null]);
        // Reading an old range again changes nothing it should not: A's older assignment does not win.
        await store.setCursor(
          C,
          { blockNumber: 13, blockHash: rand32() },
          range(10, [assigned(DEVICE_A, 3, 10)], true),
        );
        expect(await store.untouchedDevices([DEVICE_A])).to.deep.equal([4]);
        // Addresses in any case; bad input is refused before anything is written.
        expect(await store.untouchedDevices([DEVICE_A.toUpperCase().replace("0X", "0x") as Hex])).to.deep.equal([4]);
        for (const bad of [
          range(14, [touched(DEVICE_A, 13)]), // outside the range
          range(15, []), // starts after the cursor's block
          range(14, [{ ...assigned(DEVICE_A, 1, 14), policyId: undefined }]),
          range(14, [{ ...touched(DEVICE_A, 14), device: "0x12" as Hex }]),
        ]) {
          const e = await rejection(store.setCursor(C, { blockNumber: 14, blockHash: rand32() }, bad));
          expect(e.code).to.equal("INVALID_INPUT");
        }
        expect(await store.getCursor(C)).to.deep.include({ blockNumber: 13 });
        expect(await store.untouchedDevices([DEVICE_A])).to.deep.equal([4]);
      });

      it("trusts nothing until a range from the deployment starts it, nor what lies past a gap", async () => {
        const store = await open();
        // A store that read events before it had a registry: its ranges do not start at the deployment.
        await store.setCursor(C, { blockNumber: 20, blockHash: rand32() }, range(15, [assigned(DEVICE_A, 1, 16)]));
        expect(await store.untouchedDevices([DEVICE_A])).to.deep.equal([null]);
        await store.setCursor(C, { blockNumber: 30, blockHash: rand32() }, range(1, [assigned(DEVICE_B, 1, 5)], true));
        expect(await store.untouchedDevices([DEVICE_A, DEVICE_B])).to.deep.equal([1, 1]);
        // A range past a gap is applied but not trusted until the ranges before it are read.
        await store.setCursor(
          "events:other",
          { blockNumber: 50, blockHash: rand32() },
          range(41, [assigned(DEVICE_C, 2, 45)]),
        );
        expect(await store.untouchedDevices([DEVICE_C])).to.deep.equal([null]);
        await store.setCursor(C, { blockNumber: 45, blockHash: rand32() }, range(31, []));
        expect(await store.untouchedDevices([DEVICE_C])).to.deep.equal([2]);
      });

      it("forgets its batches' devices when they are written, and what lies past a reorg", async () => {
        const store = await open();
        await store.setCursor(
          C,
          { blockNumber: 9, blockHash: rand32() },
          range(1, [assigned(DEVICE_A, 1, 2), assigned(DEVICE_B, 1, 8)], true),
        );
        const item = payment({ device: DEVICE_A });
        await store.write({ items: [item] });
        await store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: [item.id] });
        expect(await store.untouchedDevices([DEVICE_A, DEVICE_B])).to.deep.equal([null, 1]);
        await store.rewindDevices(5);
        expect(await store.untouchedDevices([DEVICE_B])).to.deep.equal([null]);
        // Read again from the rewind: B's assignment is seen again, and B stays forgotten (touched is for good).
        await store.setCursor(
          C,
          { blockNumber: 9, blockHash: rand32() },
          range(6, [assigned(DEVICE_B, 1, 8), assigned(DEVICE_C, 1, 9)]),
        );
        expect(await store.untouchedDevices([DEVICE_B, DEVICE_C])).to.deep.equal([null, 1]);
      });

      it("whatever the instances and the order they read ranges in, trusts only what chain order says (property)", async () => {
        const devices = [DEVICE_A, DEVICE_B, DEVICE_C, addr(0xd)];
        const BLOCKS = 12;
        const eventArb = fc.record({
          device: fc.constantFrom(...devices),
          assign: fc.boolean(),
          policyId: fc.integer({ min: 1, max: 3 }),
          block: fc.integer({ min: 1, max: BLOCKS }),
        });
        // Ranges: the main reader's contiguous ones from the deployment (cut points), and extra reads
        // by other instances (any range, any time), interleaved.
        const readArb = fc.record({ from: fc.integer({ min: 1, max: BLOCKS }), len: fc.integer({ min: 0, max: 5 }) });
        await fc.assert(
          fc.asyncProperty(
            fc.array(eventArb, { maxLength: 30 }),
            fc.uniqueArray(fc.integer({ min: 1, max: BLOCKS - 1 }), { maxLength: 4 }),
            fc.array(fc.tuple(readArb, fc.nat()), { maxLength: 6 }),
            async (raw, cuts, extras) => {
              const store = await h.fresh();
              const perBlock = new Map<number, number>();
              // As on chain: nothing writes a device's word before its first assignment.
              const assignedYet = new Set<Hex>();
              const events: DeviceEvent[] = raw
                .sort((a, b) => a.block - b.block)
                .filter((e) => {
                  if (e.assign) assignedYet.add(e.device);
                  return assignedYet.has(e.device);
                })
                .map((e) => {
                  const logIndex = perBlock.get(e.block) ?? 0;
                  perBlock.set(e.block, logIndex + 1);
                  return e.assign
                    ? assigned(e.device, e.policyId, e.block, logIndex)
                    : touched(e.device, e.block, logIndex);
                });
              const within = (from: number, to: number) =>
                events.filter((e) => e.blockNumber >= from && e.blockNumber <= to);
              // Chain order, one event at a time: what the registry should say through block `to`.
              const model = (to: number) => {
                const rows = new Map<Hex, { fresh: boolean; policyId: number }>();
                for (const e of within(1, to)) {
                  const row = rows.get(e.device);
                  if (e.kind === "assigned") {
                    if (!row) rows.set(e.device, { fresh: true, policyId: e.policyId! });
                    else if (row.fresh) row.policyId = e.policyId!;
                  } else if (row) row.fresh = false;
                }
                return devices.map((d) => (rows.get(d)?.fresh ? rows.get(d)!.policyId : null));
              };
              const bounds = [0, ...[...cuts].sort((a, b) => a - b), BLOCKS];
              const main = bounds.slice(1).map((to, i) => ({ who: "main", from: bounds[i] + 1, to }));
              const ops = [...main];
              for (const [r, at] of extras) {
                const to = Math.min(BLOCKS, r.from + r.len);
                ops.splice(at % (ops.length + 1), 0, { who: `other-${at % 3}`, from: r.from, to });
              }
              let through = 0;
              try {
                for (const op of ops) {
                  await store.setCursor(
                    `events:${op.who}`,
                    { blockNumber: op.to, blockHash: rand32() },
                    range(op.from, within(op.from, op.to), op.from === 1),
                  );
                  // The registry's cursor, as any instance's range that joins it moves it.
                  if (op.from <= through + 1) through = Math.max(through, op.to);
                  const answer = await store.untouchedDevices(devices);
                  const truth = model(through);
                  // Never trusts what chain order through the registry's cursor does not say.
                  answer.forEach((p, i) => {
                    if (p !== null) expect(p, `device ${i} after ${JSON.stringify(op)}`).to.equal(truth[i]);
                  });
                }
                // With every range read (the main reader's reach the last block), each device is
                // known exactly as chain order says: extra reads changed nothing for good.
                expect(await store.untouchedDevices(devices)).to.deep.equal(model(BLOCKS));
              } finally {
                await store.close();
              }
            },
          ),
          { numRuns: 60, seed: 7 },
        );
      });
    });

    describe("cursors and owner messages", () => {
      it("saves event-scan cursors", async () => {
        const store = await open();
        expect(await store.getCursor("settled-events")).to.equal(null);
        const blockHash = rand32();
        await store.setCursor("settled-events", { blockNumber: 100, blockHash });
        await store.setCursor("settled-events", { blockNumber: 101, blockHash });
        expect(await store.getCursor("settled-events")).to.deep.equal({ blockNumber: 101, blockHash });
      });

      it("stores an owner message once and moves it through its states", async () => {
        const store = await open();
        const message = {
          id: rand32(),
          kind: "onboarding" as const,
          owner: OWNER,
          body: JSON.stringify({ devices: [DEVICE_A] }),
        };
        expect((await store.insertOwnerMessage(message)).inserted).to.equal(true);
        const again = await store.insertOwnerMessage(message);
        expect(again.inserted).to.equal(false);
        expect(again.message).to.deep.include({ status: "accepted", body: message.body });
        expect((await store.openOwnerMessages()).map((m) => m.id)).to.deep.equal([message.id]);
        const txHash = rand32();
        await store.updateOwnerMessage(message.id, { status: "submitted", txHash });
        const done = await store.updateOwnerMessage(message.id, { status: "confirmed" });
        expect(done).to.deep.include({ status: "confirmed", txHash });
        expect(await store.openOwnerMessages()).to.deep.equal([]);
        expect((await rejection(store.updateOwnerMessage(message.id, { status: "submitted" }))).code).to.equal(
          "CONFLICT",
        );
        expect((await rejection(store.insertOwnerMessage({ ...message, id: rand32(), body: "{nope" }))).code).to.equal(
          "INVALID_INPUT",
        );
      });

      it("submits an owner message as a batch of its own kind: nonce, attempts, then confirmed or failed", async () => {
        const store = await open();
        const message = (kind: "onboarding" | "revocation" = "onboarding") => ({
          id: rand32(),
          kind,
          owner: OWNER,
          body: JSON.stringify({ devices: [DEVICE_A] }),
        });
        const attempt = (nonce: number) => ({
          hash: rand32(),
          raw: `0x02${randomBytes(100).toString("hex")}` as Hex,
          nonce,
          maxFeePerGas: 30_000_000_000n,
          maxPriorityFeePerGas: 1_000_000_000n,
        });
        const batchOf = (m: { id: Hex; kind: "onboarding" | "revocation" }, nonce: number) =>
          store.createBatch({ kind: m.kind, token: addr(0), sender: SENDER, nonce, itemIds: [], messageId: m.id });

        const a = message();
        await store.insertOwnerMessage(a);
        // Shapes that cannot be: items in a message batch, a message on an items batch, a wrong kind.
        const item = payment();
        await store.write({ items: [item] });
        for (const bad of [
          { kind: "onboarding" as const, itemIds: [item.id], messageId: a.id },
          { kind: "onboarding" as const, itemIds: [] },
          { kind: "payment" as const, itemIds: [item.id], messageId: a.id },
        ]) {
          const e = await rejection(store.createBatch({ token: addr(0), sender: SENDER, nonce: 9, ...bad }));
          expect(e.code).to.equal("INVALID_INPUT");
        }
        expect(
          (
            await rejection(
              store.createBatch({
                kind: "revocation",
                token: addr(0),
                sender: SENDER,
                nonce: 9,
                itemIds: [],
                messageId: a.id,
              }),
            )
          ).code,
        ).to.equal("CONFLICT");

        const batchId = await batchOf(a, 0);
        expect((await store.getOwnerMessage(a.id))?.status).to.equal("submitted");
        // It holds its nonce like any batch, and cannot be submitted twice.
        expect((await rejection(batchOf(a, 1))).code).to.equal("CONFLICT");
        const b = message("revocation");
        await store.insertOwnerMessage(b);
        expect((await rejection(batchOf(b, 0))).code).to.equal("NONCE_IN_USE");
        expect(await store.nextNonce(SENDER)).to.equal(1);

        const sent = await store.addAttempt(batchId, attempt(0));
        await store.markBroadcast(sent.hash);
        expect(await store.getOwnerMessage(a.id)).to.deep.include({ status: "submitted", txHash: sent.hash });
        const bumped = await store.addAttempt(batchId, attempt(0));
        await store.markBroadcast(bumped.hash);
        await store.markBatchMined(batchId, {
          txHash: sent.hash,
          blockNumber: 10,
          blockHash: rand32(),
          gasUsed: 90_000n,
          items: [],
        });
        expect((await store.getOwnerMessage(a.id))?.txHash).to.equal(sent.hash);
        await store.markBatchConfirmed(batchId);
        expect(await store.getOwnerMessage(a.id)).to.deep.include({ status: "confirmed", txHash: sent.hash });
        const detail = await store.getBatch(batchId);
        expect(detail).to.deep.include({ kind: "onboarding", messageId: a.id, itemCount: 0, status: "confirmed" });
        expect(detail?.attempts.map((x) => x.hash)).to.deep.equal([sent.hash, bumped.hash]);

        // Dropped (its nonce used by another transaction): back to accepted, to be checked and sent again.
        const dropped = await batchOf(b, 1);
        await store.requeueBatch(dropped, { status: "dropped", error: "nonce used by another transaction" });
        expect(await store.getOwnerMessage(b.id)).to.deep.include({ status: "accepted", txHash: null });
        // Reverted: the contract refused it; failed for good, with the receipt's hash.
        const again = await batchOf(b, 1);
        const tx = await store.addAttempt(again, attempt(1));
        await store.requeueBatch(again, {
          status: "reverted",
          error: "the transaction reverted",
          receipt: { txHash: tx.hash, blockNumber: 11, blockHash: rand32(), gasUsed: 40_000n },
        });
        expect(await store.getOwnerMessage(b.id)).to.deep.include({
          status: "failed",
          txHash: tx.hash,
          error: "the transaction reverted",
        });
        expect(await store.openOwnerMessages()).to.deep.equal([]);
      });
    });
  });
}

describe("relayer store: SQLite only", () => {
  let dir: string;
  let opened: SqliteStore[];
  const file = () => join(dir, "relayer.db");
  const open = async (path = file()) => {
    const store = await openSqliteStore({ path });
    opened.push(store);
    return store;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "machinepay-store-"));
    opened = [];
  });
  afterEach(async () => {
    for (const s of opened) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe("opening and migrations", () => {
    it("gives a fresh file the newest schema, in WAL mode with synchronous=FULL and foreign keys on", async () => {
      const store = await open();
      expect(store.migration).to.deep.equal({ from: 0, to: SCHEMA_VERSION });
      expect(SCHEMA_VERSION).to.equal(MIGRATIONS.length);
      // Connection settings are per connection: read them on the store's own (test-only access).
      const db = (store as unknown as { db: Database.Database }).db;
      expect(db.pragma("journal_mode", { simple: true })).to.equal("wal");
      expect(db.pragma("synchronous", { simple: true })).to.equal(2); // FULL
      expect(db.pragma("foreign_keys", { simple: true })).to.equal(1);
      expect(db.pragma("busy_timeout", { simple: true })).to.equal(5000);
      expect(db.pragma("user_version", { simple: true })).to.equal(SCHEMA_VERSION);
    });

    it("re-opening a current file migrates nothing and keeps the data", async () => {
      const first = await open();
      const it = payment();
      await first.write({ items: [it] });
      await first.close();
      const second = await open();
      expect(second.migration).to.deep.equal({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
      expect((await second.getItem(it.id))?.amount).to.equal(it.amount);
    });

    it("refuses a database from a newer relayer, with a message saying so, and leaves it untouched", async () => {
      await (await open()).close();
      const db = new Database(file());
      db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
      db.close();
      const error = await rejection(openSqliteStore({ path: file() }));
      expect(error.code).to.equal("SCHEMA_TOO_NEW");
      expect(error.message).to.match(new RegExp(`schema version ${SCHEMA_VERSION + 1}.*up to ${SCHEMA_VERSION}`));
      expect(error.message).to.match(/Upgrade the relayer/);
      const after = new Database(file(), { readonly: true });
      expect(after.pragma("user_version", { simple: true })).to.equal(SCHEMA_VERSION + 1);
      after.close();
    });

    it("refuses a file that is not SQLite, and another application's database", async () => {
      await writeFile(file(), "this is not a database, it is a shopping list ".repeat(40));
      expect((await rejection(openSqliteStore({ path: file() }))).code).to.equal("NOT_A_STORE");

      const foreign = join(dir, "foreign.db");
      const db = new Database(foreign);
      db.exec("CREATE TABLE notes (body TEXT)");
      db.close();
      const error = await rejection(openSqliteStore({ path: foreign }));
      expect(error.code).to.equal("NOT_A_STORE");
      expect(error.message).to.match(/did not create/);
    });

    it("rolls a failed migration back whole, leaving the file at the version before it", async () => {
      const db = new Database(file());
      const broken: Migration[] = [
        MIGRATIONS[0],
        { version: 2, name: "half-broken", up: "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);" },
      ];
      let error: unknown;
      try {
        migrate(db, file(), broken);
      } catch (e) {
        error = e;
      }
      expect((error as StoreError).code).to.equal("MIGRATION_FAILED");
      expect((error as StoreError).message).to.match(/version 2 \(half-broken\) failed.*unchanged at version 1/);
      expect(db.pragma("user_version", { simple: true })).to.equal(1);
      expect(db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE name = 'extra'").get()).to.deep.equal({ n: 0 });
      db.close();
    });

    it("says what to do when the file cannot be created", async () => {
      await writeFile(join(dir, "plain-file"), "");
      const error = await rejection(openSqliteStore({ path: join(dir, "plain-file", "relayer.db") }));
      expect(error.code).to.equal("CANNOT_OPEN");
      expect(error.message).to.match(/writable/);
    });
  });

  describe("durability", () => {
    it("keeps every acknowledged write of a process killed with SIGKILL", async function () {
      this.timeout(60_000);
      const path = file();
      // The child acknowledges each write on stdout only after write() resolved, never closes the store.
      const child = spawn(
        process.execPath,
        [
          "-r",
          "ts-node/register/transpile-only",
          "-e",
          `const { openSqliteStore } = require(${JSON.stringify(join(__dirname, "..", "src", "store"))});
           const { randomBytes } = require("node:crypto");
           const hex = (n) => "0x" + randomBytes(n).toString("hex");
           (async () => {
             const store = await openSqliteStore({ path: process.argv[1] });
             let nonce = 0n;
             const writer = async () => {
               for (;;) {
                 const id = hex(32);
                 await store.write({ items: [{ id, kind: "payment", device: ${JSON.stringify(DEVICE_A)},
                   owner: ${JSON.stringify(OWNER)}, policyId: 1, payee: ${JSON.stringify(PAYEE)},
                   token: ${JSON.stringify(TOKEN)}, amount: 1n, nonce: nonce++, tabId: null, deadline: 1,
                   maxFee: 0n, fee: 0n, ref: hex(32), signature: hex(65), r: hex(32), vs: hex(32), spend: 1n }] });
                 process.stdout.write(id + "\\n");
               }
             };
             for (let i = 0; i < 20; i++) writer();
             process.stdout.write("ok\\n");
           })();`,
          path,
        ],
        { cwd: join(__dirname, ".."), stdio: ["ignore", "pipe", "inherit"] },
      );
      let out = "";
      await new Promise<void>((resolve, reject) => {
        child.on("exit", (code) => reject(new Error(`child exited early with ${code}`)));
        child.stdout.on("data", (d) => {
          out += d;
          if (out.includes("ok\n") && out.split("\n").length > 300) resolve();
        });
      });
      child.removeAllListeners("exit");
      const exited = new Promise((r) => child.on("exit", r));
      process.kill(child.pid!, "SIGKILL");
      await exited;
      const acknowledged = out.split("\n").filter((line) => line.startsWith("0x")) as Hex[];
      expect(acknowledged.length).to.be.at.least(299);
      const rows = await (await open(path)).getItems(acknowledged);
      const lost = acknowledged.filter((_, i) => rows[i] === null);
      expect(lost, "acknowledged but lost").to.deep.equal([]);
    });
  });

  describe("one relayer per file", () => {
    it("refuses a second live relayer on the file, whatever its sender, and takes over from a dead one", async () => {
      const [a, b, c] = [await open(), await open(), await open()];
      const me = `${hostname()}:${process.pid}:1`;
      // A holder on this host whose process is gone (SIGKILL) need not be waited out.
      const dead = spawn(process.execPath, ["-e", ""]);
      await new Promise((r) => dead.once("exit", r));
      await a.heartbeat({ sender: SENDER, holder: `${hostname()}:${dead.pid}:2`, leaseMs: 60_000 });
      expect((await b.heartbeat({ sender: addr(0x5f), holder: me, leaseMs: 60_000 })).live).to.deep.equal([addr(0x5f)]);
      // A live one (here, or on a host it cannot check) is refused, whatever the sender.
      const refused = await rejection(c.heartbeat({ sender: SENDER, holder: "elsewhere:9:9", leaseMs: 60_000 }));
      expect(refused.code).to.equal("CONFLICT");
      expect(refused.message).to.match(/a SQLite store serves one relayer.*PostgreSQL/);
      expect((await a.ownerChanges(null)).next).to.equal(null);
    });
  });

  describe("on its own thread", () => {
    it("answers an opening failure with the StoreError code and message of the thread's store", async () => {
      await writeFile(file(), "not a database, just text that is long enough to be read as a header");
      const error = await rejection(openSqliteThreadStore({ path: file() }));
      expect(error).to.be.instanceOf(StoreError);
      expect(error.code).to.equal("NOT_A_STORE");
      expect(error.message).to.include("is not a SQLite database");
    });

    it("fails every call in flight and every later one when the thread dies, and keeps what committed", async () => {
      const store = await openSqliteThreadStore({ path: file() });
      const kept = payment();
      await store.write({ items: [kept] });
      // Made in the same turn as the thread's end: they never reach it, and must not hang.
      const inFlight = Array.from({ length: 5 }, () => store.write({ items: [payment()] }));
      await (store as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      for (const p of inFlight) {
        const error = await rejection(p);
        expect(error.code).to.equal("WRITE_FAILED");
        expect(error.message).to.match(/thread stopped .*restart the relayer/);
      }
      expect((await rejection(store.getItem(kept.id))).code).to.equal("WRITE_FAILED");
      await store.close(); // nothing to do, and no hang
      const again = await open();
      expect((await again.getItem(kept.id))?.id).to.equal(kept.id);
      expect((await again.countByStatus()).items.accepted).to.equal(1);
    });

    it("writes made in one turn of the event loop share one commit there, as on the caller's thread", async () => {
      const store = await openSqliteThreadStore({ path: file() });
      try {
        const items = Array.from({ length: 20 }, () => payment());
        const results = await Promise.all(items.map((it) => store.write({ items: [it] })));
        expect(results.every((r) => r.items[0].inserted)).to.equal(true);
        expect(store.stats()).to.deep.equal({ groupCommits: 1, writes: 20, largestGroup: 20 });
        const rows = await store.getItems(items.map((it) => it.id));
        expect(rows.map((r) => r?.id)).to.deep.equal(items.map((it) => it.id));
      } finally {
        await store.close();
      }
    });
  });

  describe("schema version 2", () => {
    it("migrates a version-1 file with batches, items and attempts, keeping every row and every reference", async () => {
      const db = new Database(file());
      db.pragma("foreign_keys = ON");
      migrate(db, file(), MIGRATIONS.slice(0, 1));
      db.close();
      // Rows as version 1 wrote them (by hand: the store always opens at the newest version).
      let ids: Hex[];
      let batchId: number;
      let hash: Hex;
      {
        const raw = new Database(file());
        raw.pragma("foreign_keys = ON");
        const it = payment();
        ids = [it.id];
        raw
          .prepare(
            `INSERT INTO batches (kind, token, sender, nonce, status, item_count, created_at, updated_at)
           VALUES ('payment', ?, ?, 0, 'sent', 1, 1, 1)`,
          )
          .run(TOKEN, SENDER);
        batchId = 1;
        raw
          .prepare(
            `INSERT INTO items (id, kind, device, owner, policy_id, payee, token, amount, nonce, deadline, max_fee, fee,
             ref, signature, r, vs, spend, status, batch_id, position, accepted_at, updated_at)
           VALUES (?, 'payment', ?, ?, 1, ?, ?, '5', 0, 1795000000, '0', '0', ?, '0x1b', ?, ?, '5', 'submitted', 1, 0, 1, 1)`,
          )
          .run(it.id, DEVICE_A, OWNER, PAYEE, TOKEN, rand32(), rand32(), rand32());
        raw.prepare("INSERT INTO batch_items (batch_id, position, item_id) VALUES (1, 0, ?)").run(it.id);
        hash = rand32();
        raw
          .prepare(
            `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at, broadcast_at)
           VALUES (1, ?, '0x02aa', 0, '2', '1', 1, 1)`,
          )
          .run(hash);
        raw.close();
      }
      const store = await open();
      expect(store.migration).to.deep.equal({ from: 1, to: SCHEMA_VERSION });
      const db2 = (store as unknown as { db: Database.Database }).db;
      expect(db2.pragma("foreign_keys", { simple: true })).to.equal(1);
      expect(db2.pragma("foreign_key_check")).to.deep.equal([]);
      const batch = await store.getBatch(batchId);
      expect(batch).to.deep.include({ kind: "payment", messageId: null });
      expect(batch?.itemIds).to.deep.equal(ids);
      expect(batch?.attempts.map((a) => a.hash)).to.deep.equal([hash]);
      expect((await store.getItem(ids[0]))?.batchId).to.equal(batchId);
      // References still hold after the rebuild: an attempt for a batch that does not exist is refused.
      expect(() =>
        db2
          .prepare(
            `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at)
             VALUES (999, ?, '0x02', 0, '1', '1', 1)`,
          )
          .run(rand32()),
      ).to.throw(/FOREIGN KEY/);
    });
  });
});

describe("relayer store: PostgreSQL only", () => {
  let pg: PostgresServer;
  let opened: PostgresStore[];
  let target: { schema: string; url: string };
  const open = async (url = target.url, options: Partial<Parameters<typeof openPostgresStore>[0]> = {}) => {
    const store = await openPostgresStore({ ...options, url });
    opened.push(store);
    return store;
  };

  before(async function () {
    pg = await requirePostgres(this);
  });
  beforeEach(async () => {
    opened = [];
    target = await newSchema(pg);
  });
  afterEach(async () => {
    for (const s of opened) await s.close();
  });

  describe("opening and migrations", () => {
    it("gives an empty schema the newest version, numbered as SQLite's, and reopening migrates nothing", async () => {
      expect(POSTGRES_SCHEMA_VERSION).to.equal(SCHEMA_VERSION); // one number, one logical schema
      const first = await open();
      expect(first.migration).to.deep.equal({ from: 0, to: POSTGRES_SCHEMA_VERSION });
      expect(first.backend).to.equal("postgres");
      const it = payment({ amount: 2n ** 255n, spend: 2n ** 255n });
      await first.write({ items: [it] });
      await first.close();
      const second = await open();
      expect(second.migration).to.deep.equal({ from: POSTGRES_SCHEMA_VERSION, to: POSTGRES_SCHEMA_VERSION });
      expect((await second.getItem(it.id))?.amount).to.equal(2n ** 255n);
      const versions = await sql(pg, `SELECT version, name FROM ${target.schema}.${MIGRATIONS_TABLE} ORDER BY version`);
      expect(versions.map((r) => r.version)).to.deep.equal(POSTGRES_MIGRATIONS.map((m) => m.version));
    });

    it("commits with synchronous_commit on, even where the session's default says off", async () => {
      const lax = `${target.url}${encodeURIComponent(" -c synchronous_commit=off")}`;
      const store = await open(lax);
      // A trigger records the setting in force inside the store's own transaction.
      await sql(
        pg,
        `CREATE TABLE ${target.schema}.seen (setting TEXT);
         CREATE FUNCTION ${target.schema}.record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO ${target.schema}.seen VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;
         CREATE TRIGGER record BEFORE INSERT ON ${target.schema}.items FOR EACH ROW EXECUTE FUNCTION ${target.schema}.record()`,
      );
      expect((await sql(lax, "SELECT current_setting('synchronous_commit') AS s"))[0].s).to.equal("off");
      await store.write({ items: [payment()] });
      expect(await sql(pg, `SELECT setting FROM ${target.schema}.seen`)).to.deep.equal([{ setting: "on" }]);
    });

    it("relayers starting at once on an empty schema migrate it once, one after the other (advisory lock)", async () => {
      const stores = await Promise.all(Array.from({ length: 4 }, () => open()));
      const results = stores.map((s) => s.migration).sort((a, b) => a.from - b.from);
      expect(results).to.deep.equal([
        { from: 0, to: POSTGRES_SCHEMA_VERSION },
        ...Array.from({ length: 3 }, () => ({ from: POSTGRES_SCHEMA_VERSION, to: POSTGRES_SCHEMA_VERSION })),
      ]);
      const versions = await sql(pg, `SELECT count(*)::int AS n FROM ${target.schema}.${MIGRATIONS_TABLE}`);
      expect(versions[0].n).to.equal(POSTGRES_MIGRATIONS.length);
    });

    it("waits for the session holding the migration lock, and says so when it waited too long", async () => {
      const holder = new Client({ connectionString: pg.url });
      await holder.connect();
      try {
        await holder.query("BEGIN");
        await holder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [MIGRATION_LOCK_KEY, target.schema]);
        const impatient = await rejection(open(target.url, { migrationLockTimeoutMs: 200 }));
        expect(impatient.code).to.equal("CANNOT_OPEN");
        expect(impatient.message).to.match(/held the migration lock .* for over 200 ms/);
        let done = false;
        const waiting = open().then((s) => {
          done = true;
          return s;
        });
        await new Promise((r) => setTimeout(r, 300));
        expect(done, "opened while another session held the migration lock").to.equal(false);
        await holder.query("COMMIT");
        expect((await waiting).migration.from).to.equal(0);
      } finally {
        await holder.end();
      }
      // Another schema's lock is another lock: it does not wait for this one.
      const other = await newSchema(pg);
      expect((await open(other.url)).migration.from).to.equal(0);
    });

    it("refuses a schema from a newer relayer and one holding another application's tables, leaving both as they were", async () => {
      await (await open()).close();
      await sql(pg, `INSERT INTO ${target.schema}.${MIGRATIONS_TABLE} VALUES (${SCHEMA_VERSION + 1}, 'future', 0)`);
      const newer = await rejection(open());
      expect(newer.code).to.equal("SCHEMA_TOO_NEW");
      expect(newer.message).to.match(new RegExp(`schema version ${SCHEMA_VERSION + 1}.*up to ${SCHEMA_VERSION}`));
      expect(newer.message).to.match(/Upgrade the relayer/);
      const kept = await sql(pg, `SELECT max(version) AS v FROM ${target.schema}.${MIGRATIONS_TABLE}`);
      expect(kept[0].v).to.equal(SCHEMA_VERSION + 1);

      const foreign = await newSchema(pg);
      await sql(pg, `CREATE TABLE ${foreign.schema}.notes (body TEXT)`);
      const error = await rejection(open(foreign.url));
      expect(error.code).to.equal("NOT_A_STORE");
      expect(error.message).to.match(/did not create \(notes\).*search_path/);
      const tables = await sql(pg, "SELECT tablename FROM pg_tables WHERE schemaname = $1", [foreign.schema]);
      expect(tables.map((r) => r.tablename)).to.deep.equal(["notes"]);

      const missing = `${pg.url}?options=${encodeURIComponent("-c search_path=no_such_schema")}`;
      expect((await rejection(open(missing))).message).to.match(/no schema to create the relayer's tables in/);
    });

    it("rolls a failed migration back whole, leaving the schema at the version before it", async () => {
      const client = new Client({ connectionString: target.url });
      await client.connect();
      try {
        expect(await migratePostgres(client, "test", POSTGRES_MIGRATIONS.slice(0, 1))).to.deep.equal({
          from: 0,
          to: 1,
        });
        const broken = [
          POSTGRES_MIGRATIONS[0],
          { version: 2, name: "half-broken", up: "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);" },
        ];
        const error = await rejection(migratePostgres(client, "test", broken));
        expect(error.code).to.equal("MIGRATION_FAILED");
        expect(error.message).to.match(/version 2 \(half-broken\) failed, the database is unchanged at version 1/);
        const left = await client.query(
          "SELECT to_regclass('extra') AS t, max(version) AS v FROM machinepay_migrations",
        );
        expect(left.rows[0]).to.deep.equal({ t: null, v: 1 });
      } finally {
        await client.end();
      }
    });

    it("migrates a version-1 schema with batches, items and attempts to version 2, keeping every row and reference", async () => {
      const client = new Client({ connectionString: target.url });
      await client.connect();
      const it = payment();
      const hash = rand32();
      try {
        await migratePostgres(client, "test", POSTGRES_MIGRATIONS.slice(0, 1));
        // Rows as version 1 wrote them (by hand: the store always opens at the newest version).
        await client.query(
          `INSERT INTO batches (kind, token, sender, nonce, status, item_count, created_at, updated_at)
           VALUES ('payment', $1, $2, 0, 'sent', 1, 1, 1)`,
          [TOKEN, SENDER],
        );
        await client.query(
          `INSERT INTO items (id, kind, device, owner, policy_id, payee, token, amount, nonce, deadline, max_fee, fee,
             ref, signature, r, vs, spend, status, batch_id, position, accepted_at, updated_at)
           VALUES ($1, 'payment', $2, $3, 1, $4, $5, 5, 0, 1795000000, 0, 0, $6, '0x1b', $7, $8, 5, 'submitted', 1, 0, 1, 1)`,
          [it.id, DEVICE_A, OWNER, PAYEE, TOKEN, rand32(), rand32(), rand32()],
        );
        await client.query("INSERT INTO batch_items (batch_id, position, item_id) VALUES (1, 0, $1)", [it.id]);
        await client.query(
          `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at,
             broadcast_at) VALUES (1, $1, '0x02aa', 0, 2, 1, 1, 1)`,
          [hash],
        );
      } finally {
        await client.end();
      }
      const store = await open();
      expect(store.migration).to.deep.equal({ from: 1, to: POSTGRES_SCHEMA_VERSION });
      const batch = await store.getBatch(1);
      expect(batch).to.deep.include({ kind: "payment", messageId: null, status: "sent" });
      expect(batch?.itemIds).to.deep.equal([it.id]);
      expect(batch?.attempts.map((a) => a.hash)).to.deep.equal([hash]);
      expect((await store.getItem(it.id))?.batchId).to.equal(1);
      const orphan = sql(
        target.url,
        `INSERT INTO attempts (batch_id, hash, raw, nonce, max_fee_per_gas, max_priority_fee_per_gas, created_at)
         VALUES (999, '0x02', '0x02', 0, 1, 1, 1)`,
      );
      let refused: unknown;
      await orphan.catch((e) => {
        refused = e;
      });
      expect((refused as Error)?.message).to.match(/foreign key/);
    });
  });

  describe("concurrency and failures", () => {
    it("operations racing for the same rows act as if one after the other (row locks)", async () => {
      const store = await open();
      for (let round = 0; round < 10; round++) {
        const items = Array.from({ length: 6 }, () => payment());
        await store.write({ items });
        const ids = items.map((it) => it.id);
        const nonce = round * 10;
        const outcomes = await Promise.allSettled([
          store.createBatch({
            kind: "payment",
            token: TOKEN,
            sender: SENDER,
            nonce,
            itemIds: [ids[0], ids[1], ids[2]],
          }),
          store.createBatch({
            kind: "payment",
            token: TOKEN,
            sender: SENDER,
            nonce: nonce + 1,
            itemIds: [ids[2], ids[3]],
          }),
          store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce, itemIds: [ids[4]] }),
          store.createBatch({
            kind: "payment",
            token: TOKEN,
            sender: SENDER,
            nonce: nonce + 2,
            itemIds: [ids[3], ids[2]],
          }),
          store.rejectItems([
            { id: ids[2], reason: "DeadlinePassed" },
            { id: ids[5], reason: "DeadlinePassed" },
          ]),
        ]);
        for (const o of outcomes) {
          if (o.status === "rejected") expect(["CONFLICT", "NONCE_IN_USE"]).to.include((o.reason as StoreError).code);
        }
        const rows = await store.getItems(ids);
        const batches = (await store.listBatches({ limit: 100 })).rows.filter(
          (b) => b.nonce >= nonce && b.nonce < nonce + 10,
        );
        // Each item is in at most one batch, and its row agrees with that batch.
        const holders = new Map<Hex, number[]>();
        for (const b of batches) {
          for (const id of (await store.getBatch(b.id))!.itemIds) holders.set(id, [...(holders.get(id) ?? []), b.id]);
        }
        rows.forEach((row, i) => {
          const held = holders.get(ids[i]) ?? [];
          expect(held.length, `item ${i} in batches ${held}`).to.be.at.most(1);
          expect(row!.status).to.equal(held.length ? "batched" : i === 2 || i === 5 ? "rejected" : "accepted");
          if (held.length) expect(row!.batchId).to.equal(held[0]);
        });
        // Nonce `nonce` went to exactly one of the two batches that wanted it.
        expect(batches.filter((b) => b.nonce === nonce)).to.have.length(1);
        expect(rows[5]!.status).to.equal("rejected");
      }
    });

    it("retries a transaction that PostgreSQL aborted to break a deadlock, whole", async () => {
      const store = await open();
      const [a, b] = [payment(), payment()].sort((x, y) => (x.id < y.id ? -1 : 1)); // createBatch locks in id order
      await store.write({ items: [a, b] });
      const side = new Client({ connectionString: target.url });
      await side.connect();
      try {
        await side.query("BEGIN");
        await side.query("SELECT id FROM items WHERE id = $1 FOR UPDATE", [b.id]);
        // The batch locks a, then waits for b; the side then waits for a: a deadlock. The batch has
        // waited longer, so its deadlock_timeout (1 s) fires first and PostgreSQL aborts it.
        const batch = store.createBatch({
          kind: "payment",
          token: TOKEN,
          sender: SENDER,
          nonce: 0,
          itemIds: [a.id, b.id],
        });
        await new Promise((r) => setTimeout(r, 200));
        await side.query("SELECT id FROM items WHERE id = $1 FOR UPDATE", [a.id]);
        await side.query("COMMIT");
        const id = await batch;
        expect((await store.getItems([a.id, b.id])).map((r) => [r?.status, r?.batchId])).to.deep.equal([
          ["batched", id],
          ["batched", id],
        ]);
        expect((await store.listBatches({ limit: 10 })).rows).to.have.length(1);
      } finally {
        await side.end();
      }
    });

    it("loses no acknowledged write when its connections are killed mid-write, and carries on", async function () {
      this.timeout(60_000);
      const store = await open();
      const acknowledged: Hex[] = [];
      const failures: StoreError[] = [];
      let stop = false;
      const writer = async () => {
        while (!stop) {
          const it = payment();
          try {
            await store.write({ items: [it] });
            acknowledged.push(it.id);
          } catch (e) {
            expect(e).to.be.instanceOf(StoreError);
            failures.push(e as StoreError);
          }
        }
      };
      const writers = Array.from({ length: 20 }, writer);
      // Kill the relayer's sessions (not ours) a few times while writes are in flight.
      for (let kill = 0; kill < 5; kill++) {
        const before = acknowledged.length;
        while (acknowledged.length < before + 200) await new Promise((r) => setTimeout(r, 5));
        await sql(
          pg,
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE application_name = 'machinepay-relayer' AND pid <> pg_backend_pid()`,
        );
      }
      const before = acknowledged.length;
      while (acknowledged.length < before + 200) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await Promise.all(writers);
      expect(failures.length, "no connection was killed mid-write").to.be.greaterThan(0);
      for (const f of failures) {
        expect(f.code).to.equal("WRITE_FAILED");
        expect(f.message).to.match(/connection|terminat/i);
      }
      const rows = await store.getItems(acknowledged);
      const lost = acknowledged.filter((_, i) => rows[i] === null);
      expect(lost, "acknowledged but lost").to.deep.equal([]);
      const after = payment();
      expect((await store.write({ items: [after] })).items[0].inserted).to.equal(true);
    });
  });

  describe("several relayers on one database", () => {
    const OWNER_B = addr(0x0f);

    it("refuses a guarded write whose owner another relayer changed since, writing none of it", async () => {
      const [a, b] = [await open(), await open()];
      const first = await a.write({ items: [payment()], guard: [{ owner: OWNER, version: null }] });
      expect(first.stale).to.deep.equal([]);
      expect(first.owners).to.deep.equal([{ owner: OWNER, version: 1 }]);
      // b decided on a view of OWNER that predates a's write: refused whole, tabs and updates too.
      const late = voucher(9n);
      const refused = await b.write({
        items: [late, payment({ owner: OWNER_B, device: DEVICE_B })],
        tabs: [{ ...tab, newestId: late.id, newestCumulative: 9n }],
        guard: [
          { owner: OWNER, version: null },
          { owner: OWNER_B, version: null },
        ],
      });
      expect(refused.stale).to.deep.equal([{ owner: OWNER, version: 2 }]);
      expect([refused.items, refused.tabs, refused.updates, refused.owners]).to.deep.equal([[], [], [], []]);
      expect(await b.getItem(late.id)).to.equal(null);
      expect(await b.getTab(tab)).to.equal(null);
      expect(await b.pendingItems([OWNER_B])).to.deep.equal([]);
      // Deciding again on the version it now knows, b writes; a's next guard is stale in turn.
      const again = await b.write({ items: [late], guard: [{ owner: OWNER, version: 2 }] });
      expect(again.stale).to.deep.equal([]);
      expect(again.owners).to.deep.equal([{ owner: OWNER, version: 3 }]);
      expect((await a.write({ items: [payment()], guard: [{ owner: OWNER, version: 1 }] })).stale).to.deep.equal([
        { owner: OWNER, version: 4 },
      ]);
      expect((await a.pendingItems([OWNER])).map((r) => r.id)).to.deep.equal([first.items[0].id, late.id]);
    });

    it("a guard passes over versions this process's own commits made, never over another process's", async () => {
      const [a, b] = [await open(), await open()];
      const heard: number[] = [];
      a.onOwnVersions((bumped) => heard.push(...bumped.filter((x) => x.owner === OWNER).map((x) => x.version)));
      const items = [payment(), payment()];
      await a.write({ items, guard: [{ owner: OWNER, version: null }] }); // version 1
      await a.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: [items[0].id] }); // 2
      // Decided at version 1, written after a's own batch moved it to 2: a's ledger follows its batches.
      const own = await a.write({ items: [payment()], guard: [{ owner: OWNER, version: 1 }] });
      expect(own.stale).to.deep.equal([]);
      expect(own.owners).to.deep.equal([{ owner: OWNER, version: 3 }]);
      expect(heard).to.deep.equal([1, 2, 3]);
      await b.createBatch({ kind: "payment", token: TOKEN, sender: addr(0x5f), nonce: 0, itemIds: [items[1].id] }); // 4
      const after = await a.write({ items: [payment()], guard: [{ owner: OWNER, version: 3 }] });
      expect(after.stale).to.deep.equal([{ owner: OWNER, version: 5 }]);
    });

    it("admitLocked hands each relayer the owner's pending items under its lock: a cap decided on them holds", async () => {
      const stores = [await open(), await open(), await open()];
      const CAP = 7;
      // Each relayer admits one more item only while fewer than CAP are pending: racing, they must
      // still stop at CAP, since each decides on what the others committed before it got the lock.
      const attempts = await Promise.all(
        Array.from({ length: 30 }, (_, k) => {
          let seen = -1;
          return stores[k % 3]
            .admitLocked(
              [{ owner: OWNER, version: null }],
              (read) => {
                seen = read.rows.length;
              },
              () => (seen < CAP ? { items: [payment()] } : {}),
            )
            .then((r) => ({ seen, inserted: r.items.length, owners: r.owners }));
        }),
      );
      expect(attempts.filter((a) => a.inserted === 1)).to.have.length(CAP);
      expect(await stores[0].pendingItems([OWNER])).to.have.length(CAP);
      expect(attempts.every((a) => a.owners[0]?.owner === OWNER)).to.equal(true);
      // A guarded write that predates them is stale.
      expect(
        (await stores[1].write({ items: [payment()], guard: [{ owner: OWNER, version: null }] })).stale,
      ).to.have.length(1);
    });

    it("admitLocked and ownerItems with a known version hand over only the items changed after it, those that left pending too", async () => {
      const [a, b] = [await open(), await open()];
      const items = [payment(), payment(), payment()];
      const v1 = (await a.write({ items, guard: [{ owner: OWNER, version: null }] })).owners[0].version;
      const other = await a.write({ items: [payment({ owner: OWNER_B, device: DEVICE_B })], guard: [] });
      expect(other.items[0].inserted).to.equal(true);
      await b.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: 0, itemIds: [items[0].id] });
      await b.write({ updates: [{ id: items[1].id, status: "rejected", reason: "X", message: "refused" }] });
      const since = await a.ownerItems([{ owner: OWNER, version: v1 }]);
      expect(since.since.get(OWNER.toLowerCase())).to.equal(v1);
      expect(since.rows.map((r) => [r.id, r.status])).to.deep.equal([
        [items[0].id, "batched"],
        [items[1].id, "rejected"],
      ]);
      // Unknown version: the whole pending set; several owners at once, each from its own version.
      const whole = await a.ownerItems([
        { owner: OWNER, version: null },
        { owner: OWNER_B, version: 0 },
      ]);
      expect(whole.rows.map((r) => r.id).sort()).to.deep.equal([items[0].id, items[2].id, other.items[0].id].sort());
      expect([...whole.since]).to.deep.equal([[OWNER_B.toLowerCase(), 0]]);
      // Nothing changed after the newest version: nothing to read.
      const newest = (await a.ownerChanges(null)).owners.find((o) => o.owner === OWNER)!.version;
      expect((await a.ownerItems([{ owner: OWNER, version: newest }])).rows).to.deep.equal([]);
      // Under the lock the same view, and its own admission is stamped above it.
      let locked: string[] = [];
      const added = payment();
      const r = await b.admitLocked(
        [{ owner: OWNER, version: v1 }],
        (read) => {
          locked = read.rows.map((x) => x.id);
        },
        () => ({ items: [added] }),
      );
      expect(locked).to.deep.equal([items[0].id, items[1].id]);
      expect((await a.ownerItems([{ owner: OWNER, version: newest }])).rows.map((x) => x.id)).to.deep.equal([added.id]);
      expect(r.owners[0].version).to.equal(newest + 1);
      const bad = await rejection(a.ownerItems([{ owner: OWNER, version: -1 }]));
      expect(bad.code).to.equal("INVALID_INPUT");
      expect(bad.message).to.match(/owners\[0\]\.version/);
    });

    it("guarded writes racing from several relayers for one owner: exactly one wins each round", async () => {
      const stores = [await open(), await open(), await open()];
      let version: number | null = null;
      for (let round = 0; round < 8; round++) {
        const results = await Promise.all(
          stores.map((st) => st.write({ items: [payment()], guard: [{ owner: OWNER, version }] })),
        );
        const won = results.filter((r) => r.stale.length === 0);
        expect(won, `round ${round}`).to.have.length(1);
        // The losers were refused under the lock too (their turn bumps it): the newest is the last one seen.
        version = Math.max(...results.flatMap((r) => [...r.owners, ...r.stale].map((o) => o.version)));
      }
      expect(await stores[0].pendingItems([OWNER])).to.have.length(8);
    });

    it("batches, requeues and confirmations move the owners' versions; ownerChanges reports them, late commits included", async () => {
      const [a, b] = [await open(), await open()];
      const start = await b.ownerChanges(null);
      expect(start.owners).to.deep.equal([]);
      const items = [payment(), payment({ owner: OWNER_B, device: DEVICE_B })];
      await a.write({ items, guard: [] });
      let seen = await b.ownerChanges(start.next);
      expect(seen.owners.map((o) => [o.owner, o.version]).sort()).to.deep.equal([
        [OWNER, 1],
        [OWNER_B, 1],
      ]);
      const batch = await a.createBatch({
        kind: "payment",
        token: TOKEN,
        sender: SENDER,
        nonce: 0,
        itemIds: [items[0].id],
      });
      seen = await b.ownerChanges(seen.next);
      expect(seen.owners.find((o) => o.owner === OWNER)?.version).to.equal(2);
      await a.requeueBatch(batch, { status: "failed" });
      seen = await b.ownerChanges(seen.next);
      expect(seen.owners.find((o) => o.owner === OWNER)?.version).to.equal(3);
      // A transaction that began before the poll and commits after it is reported by the next poll.
      const slow = new Client({ connectionString: target.url });
      await slow.connect();
      try {
        await slow.query("BEGIN");
        await slow.query(
          `INSERT INTO owner_versions (owner, version, changed_xid) VALUES ($1, 1, pg_current_xact_id())`,
          [addr(0x77)],
        );
        await a.write({ items: [payment()], guard: [{ owner: OWNER, version: 3 }] });
        const before = await b.ownerChanges(seen.next);
        expect(before.owners.map((o) => o.owner))
          .to.include(OWNER)
          .and.not.include(addr(0x77));
        await slow.query("COMMIT");
        const after = await b.ownerChanges(before.next);
        expect(after.owners.map((o) => o.owner)).to.include(addr(0x77));
      } finally {
        await slow.end();
      }
    });

    it("claims a device's ready items for one relayer until its lease runs out (SKIP LOCKED)", async () => {
      const [a, b] = [await open(), await open()];
      const mine = [payment(), payment()];
      const theirs = payment({ device: DEVICE_B });
      await a.write({ items: [...mine, theirs] });
      const ids = (rows: { id: Hex }[]) => rows.map((r) => r.id).sort();
      const takenByA = await a.readyItems({
        kind: "payment",
        token: TOKEN,
        limit: 2,
        claimant: { id: "a", leaseMs: 60_000 },
      });
      expect(ids(takenByA)).to.deep.equal(ids(mine)); // the deadline order's first two: device A's
      // b sees only the device nobody holds; a keeps its own; unclaimed reads see everything.
      const forB = await b.readyItems({ kind: "payment", token: TOKEN, limit: 10, claimant: { id: "b", leaseMs: 50 } });
      expect(ids(forB)).to.deep.equal([theirs.id]);
      const forA = await a.readyItems({
        kind: "payment",
        token: TOKEN,
        limit: 10,
        claimant: { id: "a", leaseMs: 60_000 },
      });
      expect(ids(forA)).to.deep.equal(ids(mine));
      expect(await a.readyItems({ kind: "payment", token: TOKEN, limit: 10 })).to.have.length(3);
      // b's claim on device B lapses: a takes it over.
      await new Promise((r) => setTimeout(r, 80));
      const later = await a.readyItems({
        kind: "payment",
        token: TOKEN,
        limit: 10,
        claimant: { id: "a", leaseMs: 10 },
      });
      expect(ids(later)).to.deep.equal(ids([...mine, theirs]));
      await new Promise((r) => setTimeout(r, 30));
      // A claim being taken right now (its row locked) is skipped, not waited for.
      const holder = new Client({ connectionString: target.url });
      await holder.connect();
      try {
        await holder.query("BEGIN");
        await holder.query("SELECT * FROM device_claims WHERE device = $1 FOR UPDATE", [DEVICE_A]);
        const skipped = await b.readyItems({
          kind: "payment",
          token: TOKEN,
          limit: 10,
          claimant: { id: "b", leaseMs: 60_000 },
        });
        expect(ids(skipped)).to.deep.equal([theirs.id]);
        await holder.query("ROLLBACK");
      } finally {
        await holder.end();
      }
    });

    it("refuses a second live process sending with the same key, and lists the live instances", async () => {
      const [a, b] = [await open(), await open()];
      const S2 = addr(0x5f);
      expect((await a.heartbeat({ sender: SENDER, holder: "host-a:1:1", leaseMs: 60_000 })).live).to.deep.equal([
        SENDER,
      ]);
      const refused = await rejection(b.heartbeat({ sender: SENDER, holder: "host-b:2:2", leaseMs: 60_000 }));
      expect(refused.code).to.equal("CONFLICT");
      expect(refused.message).to.match(/another live relayer \(host-a:1:1\) sends with .*own sender key/);
      expect((await b.heartbeat({ sender: S2, holder: "host-b:2:2", leaseMs: 50 })).live).to.deep.equal([SENDER, S2]);
      await new Promise((r) => setTimeout(r, 80));
      expect((await a.heartbeat({ sender: SENDER, holder: "host-a:1:1", leaseMs: 60_000 })).live).to.deep.equal([
        SENDER,
      ]);
      // Its lease ran out: another process may take the key over.
      expect((await a.heartbeat({ sender: S2, holder: "host-c:3:3", leaseMs: 60_000 })).live).to.deep.equal([
        SENDER,
        S2,
      ]);
    });
  });
});
