// Durable-write throughput of the SQLite store: items acknowledged per second (each one on disk,
// WAL + synchronous=FULL) for concurrent callers writing 1 or 100 items per call.
// Run: cd relayer && npx ts-node --transpile-only bench/store.ts   (BENCH_STORE_DIR picks the disk)

import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { type Hex, type NewItem, openSqliteStore } from "../src/store";

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
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
