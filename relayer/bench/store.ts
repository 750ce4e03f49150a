// Durable-write throughput of the SQLite store: items acknowledged per second (each one on disk,
// WAL + synchronous=FULL) for concurrent callers writing 1 or 100 items per call. Then what one
// batch's life costs the store, step by step (admission writes, readyItems, createBatch, addAttempt,
// markBroadcast, markBatchMined, markBatchConfirmed), as the file grows to LIFE_BATCHES batches.
// Run: cd relayer && npx ts-node --transpile-only bench/store.ts   (BENCH_STORE_DIR picks the disk;
// LIFE_BATCHES=100 LIFE_ITEMS=500 size the lifecycle part)

import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { type Hex, type NewItem, openSqliteStore } from "../src/store";
import { median } from "./support";

const hex = (n: number) => `0x${randomBytes(n).toString("hex")}` as Hex;
const DEVICES = Array.from({ length: 1000 }, () => hex(20));
const PAYEE = hex(20);
const TOKEN = hex(20);
const OWNER = hex(20);

function item(i: number): NewItem {
  return {
    id: hex(32),
    kind: "payment",
    device: DEVICES[i % DEVICES.length],
    owner: OWNER,
    policyId: 1,
    payee: PAYEE,
    token: TOKEN,
    amount: 250_000n,
    nonce: BigInt(Math.floor(i / DEVICES.length)),
    tabId: null,
    deadline: 1_795_000_000 + (i % 600),
    maxFee: 1_000n,
    fee: 500n,
    ref: hex(32),
    signature: hex(65),
    r: hex(32),
    vs: hex(32),
    spend: 250_500n,
  };
}

type Row = { callers: number; perCall: number; calls: number };

async function run({ callers, perCall, calls }: Row, dir: string) {
  const store = await openSqliteStore({ path: join(dir, `bench-${callers}x${perCall}.db`) });
  let n = 0;
  const work = Array.from({ length: callers }, () =>
    Array.from({ length: calls }, () => Array.from({ length: perCall }, () => item(n++))),
  );
  const latencies: number[] = [];
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    work.map(async (mine) => {
      for (const items of mine) {
        const t = performance.now();
        await store.write({ items });
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const stats = store.stats();
  await store.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
  return {
    callers,
    perCall,
    items: n,
    itemsPerSecond: Math.round(n / seconds),
    commits: stats.groupCommits,
    callersPerCommit: (stats.writes / stats.groupCommits).toFixed(1),
    cpuPerItem: ((cpu.user + cpu.system) / n).toFixed(1),
    p50: pct(0.5),
    p99: pct(0.99),
  };
}

/**
 * One batch's life, LIFE_BATCHES times on one file: its items written 100 per call (as admission
 * does at 100 per request), then each step the batcher takes. CPU of this process and wall time
 * per step, medians over the second half of the batches (the file holds the first half by then).
 */
async function lifecycle(dir: string) {
  const batches = Number(process.env.LIFE_BATCHES ?? 100);
  const size = Number(process.env.LIFE_ITEMS ?? 500);
  const store = await openSqliteStore({ path: join(dir, "bench-lifecycle.db") });
  const SENDER = hex(20);
  const steps = new Map<string, { cpu: number[]; wall: number[] }>();
  const time = async <T>(name: string, keep: boolean, f: () => Promise<T>): Promise<T> => {
    const cpu0 = process.cpuUsage();
    const t = performance.now();
    const out = await f();
    const cpu = process.cpuUsage(cpu0);
    if (keep) {
      const step = steps.get(name) ?? { cpu: [], wall: [] };
      step.cpu.push((cpu.user + cpu.system) / 1000);
      step.wall.push(performance.now() - t);
      steps.set(name, step);
    }
    return out;
  };
  let n = 0;
  for (let b = 0; b < batches; b++) {
    const keep = b >= batches / 2;
    const items = Array.from({ length: size }, () => item(n++));
    await time(`write ${size} items, 100 per call`, keep, async () => {
      for (let i = 0; i < size; i += 100) await store.write({ items: items.slice(i, i + 100) });
    });
    await time("readyItems", keep, () => store.readyItems({ kind: "payment", token: TOKEN, limit: size }));
    const ids = items.map((it) => it.id);
    const id = await time("createBatch", keep, () =>
      store.createBatch({ kind: "payment", token: TOKEN, sender: SENDER, nonce: b, itemIds: ids }),
    );
    const hash = hex(32);
    // A 500-payment settle transaction is ~90 KB of calldata: raw bytes of that order.
    const raw = hex(size * 180);
    await time("addAttempt", keep, () =>
      store.addAttempt(id, { hash, raw, nonce: b, maxFeePerGas: 2n, maxPriorityFeePerGas: 1n }),
    );
    await time("markBroadcast", keep, () => store.markBroadcast(hash));
    await time("markBatchMined", keep, () =>
      store.markBatchMined(id, {
        txHash: hash,
        blockNumber: b + 1,
        blockHash: hex(32),
        gasUsed: 15_000n * BigInt(size),
        items: ids.map((itemId) => ({ id: itemId, status: "settled" as const })),
      }),
    );
    await time("markBatchConfirmed", keep, () => store.markBatchConfirmed(id));
  }
  await store.close();
  console.log(
    `\nOne batch's life in the store: ${size} items per batch, ${batches} batches on one file (${n} items at the end), medians of the last ${Math.ceil(batches / 2)}\n`,
  );
  console.log("| step | CPU ms | wall ms | CPU µs per item |");
  console.log("| --- | ---: | ---: | ---: |");
  let total = 0;
  for (const [name, st] of steps) {
    total += median(st.cpu);
    console.log(
      `| ${name} | ${median(st.cpu).toFixed(2)} | ${median(st.wall).toFixed(2)} | ${((median(st.cpu) * 1000) / size).toFixed(1)} |`,
    );
  }
  console.log(`| all steps | ${total.toFixed(2)} | | ${((total * 1000) / size).toFixed(1)} |`);
}

async function main() {
  const dir = await mkdtemp(join(process.env.BENCH_STORE_DIR ?? tmpdir(), "machinepay-store-bench-"));
  try {
    const rows: Row[] = [
      { callers: 1, perCall: 1, calls: 2_000 },
      { callers: 200, perCall: 1, calls: 250 },
      { callers: 1, perCall: 100, calls: 200 },
      { callers: 200, perCall: 100, calls: 10 },
    ];
    console.log(`SQLite store, WAL + synchronous=FULL, file in ${dir}, load average ${loadavg()[0].toFixed(2)}`);
    console.log("p50/p99: time from write() to its acknowledgement (after COMMIT); cpu: this process, all threads\n");
    console.log(
      "| callers | items/call | items | items/s | commits | callers/commit | cpu µs/item | p50 ms | p99 ms |",
    );
    console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const row of rows) {
      const r = await run(row, dir);
      console.log(
        `| ${r.callers} | ${r.perCall} | ${r.items} | ${r.itemsPerSecond} | ${r.commits} | ${r.callersPerCommit} | ${r.cpuPerItem} | ${r.p50} | ${r.p99} |`,
      );
    }
    await lifecycle(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
