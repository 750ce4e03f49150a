/**
 * Relayer benchmark: accepted-and-durable payments per second and acknowledgement latency, for 100
 * payments per request and for one, at saturation and at half of it; plus the verify-only rate per
 * core (fast path against viem) in the same run. Everything real: a `hardhat node`, the relayer as
 * its own process with its SQLite file (settling in the background, as in production), load from
 * this process. Payments are signed before the timed part. Saturation is closed-loop (autocannon:
 * each connection sends its next request on the answer to the last); half load is open-loop at half
 * the saturation rate, requests evenly spaced and latency counted from each one's due time
 * (`pacedLoad` in support.ts: autocannon's own rate limit sends each second's quota in a burst).
 *
 *   pnpm --filter @machinepay/relayer bench:relayer
 *   P100=60000 P1=15000 pnpm --filter @machinepay/relayer bench:relayer
 *   PROFILE=/tmp/prof …   also writes the relayer's V8 CPU profile (.cpuprofile) into that folder
 *   STORE_THREAD=0 …      runs the relayer with `storeThread: false` (SQLite on the main thread; 1: true)
 *   MULTICALL_READS=0 …   runs the relayer with `multicallReads: false` (one eth_call per view read; 1: true)
 *   BATCH_ITEMS=250 …     runs the relayer with `batch.maxItems` 250 (default 500)
 *   RPC_COUNT=1 …         the relayer reaches the node through a counting proxy; each phase prints its JSON-RPC calls
 *   NODE_LOGGING=1 …      keeps the node's console log of every call (off by default)
 *   WARMUP=5 …            seconds between the relayer's start and the load (it reads the events since the deployment)
 *   IDLE=5 …              seconds the relayer idles after the load, to measure what it and the node spend unloaded
 *   CONNECTIONS=64 CONNECTIONS1=128 …   load connections at 100 per request and at one (these defaults;
 *                         at half load, the most requests in flight before the next ones queue)
 *   NODE_NICE=19 …        runs the hardhat node's threads at that niceness (a stand-in for a node on another machine)
 *   PER_DEVICE=200 …      payments per device (default 20): fewer devices new to the relayer per payment
 *   WARM_LOAD=20000 …     payments (devices of their own) sent and settled before the timed loads, untimed (0: none;
 *                         the scale-out run has no warm-up)
 *   RELAYER_NODE_ARGS="--max-semi-space-size=64" …   extra node flags for the relayer process (space-separated)
 *   SERIES=1 …            prints, for each load, the payments answered in each half second of it (where it waited)
 *
 * Scale-out (`--store postgres --instances 1,2,3`): SQLite with one relayer, then N relayers (each
 * its own sender key) on one PostgreSQL for each N, the load spread over them; per row, payments/s,
 * ack latency, and where the time goes: CPU of the relayers and of PostgreSQL per 1,000 accepted
 * payments, database commits per 1,000, and admissions decided again (owner versions that moved).
 *
 *   pnpm --filter @machinepay/relayer bench:relayer --store postgres --instances 1,2,3
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { setPriority } from "node:os";
import { join } from "node:path";
import { type Payment, recoverPaymentSigner } from "@machinepay/sdk";
import autocannon from "autocannon";
import { HARDHAT_KEYS } from "../../scripts/lib/deploy-local";
import { freePort, stopProcess } from "../../scripts/lib/hardhat-node";
import { startPostgres } from "../../scripts/lib/postgres";
import { keccakReady, Verifier } from "../src/ingest/verify";
import { startTestChain } from "../test/support/chain";
import { RpcProxy } from "../test/support/rpc-proxy";
import { cpuMs, type Json, median, pacedLoad, presigner, quantile, quietNode } from "./support";

const P100 = Number(process.env.P100 ?? 60_000);
const P1 = Number(process.env.P1 ?? 15_000);
/**
 * Payments sent at saturation (devices of their own, untimed) and settled before the timed loads;
 * 0: none. Without it the first timed load paid for a cold relayer and a cold node: 4,045-6,035/s
 * at 100 per request in five runs against 5,618-9,061/s in eight after a warm-up, and the node
 * spent 813-1,289 ms of CPU per 1,000 payments against 325-586 (session 14, BENCHMARKS.md). The
 * timed loads' devices are still new to the relayer.
 */
const WARM_LOAD = Number(process.env.WARM_LOAD ?? 20_000);
/**
 * Connections at 100 payments per request. 64 took 7,832-8,577/s where 32 took 6,602-7,843/s
 * (session 13, BENCHMARKS.md): with 32 the closed loop was bound by each request's wait for the
 * node, not by the relayer.
 */
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
/** Connections in all of the scale-out run, spread over its relayers (the figures in BENCHMARKS.md used 32). */
const SCALE_CONNECTIONS = Number(process.env.CONNECTIONS ?? 32);
/**
 * Connections at one payment per request. Saturation needs more requests in flight when each
 * carries one payment: 128 took 3,146-3,261/s where 32 took 1,962-2,221/s (session 11, BENCHMARKS.md).
 */
const CONNECTIONS1 = Number(process.env.CONNECTIONS1 ?? 128);

/** `--store postgres --instances 1,2,3` (either flag alone means the scale-out comparison too). */
function scaleOutArgs(argv: string[]): number[] | undefined {
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const store = flag("--store");
  const list = flag("--instances");
  if (store === undefined && list === undefined) return undefined;
  if (store !== undefined && store !== "postgres")
    throw new Error(`--store takes postgres (SQLite runs beside it), got ${store}`);
  const counts = (list ?? "1,2,3").split(",").map(Number);
  if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 4)) {
    throw new Error(
      `--instances takes a list of counts from 1 to 4 (one Hardhat test key each), like 1,2,3; got ${list}`,
    );
  }
  return counts;
}

/**
 * NODE_NICE=19: every thread of the `hardhat node` at that niceness, so it runs on the CPU the
 * relayer leaves (a stand-in for a node on another machine, which takes none of the relayer's
 * cores). Settlement then trails acceptance during a burst; the figures say which run was which.
 */
function niceNode(pid: number): number | undefined {
  const nice = process.env.NODE_NICE;
  if (nice === undefined) return undefined;
  const n = Number(nice);
  if (!Number.isInteger(n) || n < 0 || n > 19) throw new Error(`NODE_NICE takes 0 to 19, got ${nice}`);
  for (const tid of readdirSync(`/proc/${pid}/task`)) setPriority(Number(tid), n);
  return n;
}

/** CPU of a PostgreSQL server: the postmaster and every backend it forked (live ones). */
function serverCpuMs(postmaster: number): number {
  let total = cpuMs(postmaster);
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${d}/stat`, "utf8").split(") ")[1].split(" ")[1]);
      if (ppid === postmaster) total += cpuMs(Number(d));
    } catch {}
  }
  return total;
}

const ADMISSION_STAGES = ["verify", "chain_read", "decide_and_store"] as const;

/** Sum and count of machinepay_admission_stage_seconds per stage, from the relayer's /metrics. */
async function stageTotals(port: number) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = Object.fromEntries(ADMISSION_STAGES.map((st) => [st, { sum: 0, count: 0 }]));
  for (const m of text.matchAll(/^machinepay_admission_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$/gm)) {
    if (out[m[2]!]) out[m[2]!]![m[1] as "sum" | "count"] = Number(m[3]);
  }
  // The event loop's delay since the previous scrape (prom-client resets it at each one), ms.
  const lag = (name: string) =>
    Number(text.match(new RegExp(`^machinepay_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m"))?.[1] ?? Number.NaN) *
    1000;
  return {
    ...(out as Record<(typeof ADMISSION_STAGES)[number], { sum: number; count: number }>),
    lagP99: lag("p99"),
    lagMax: lag("max"),
  };
}

/** Starts `machinepay relayer start --config FILE` and waits for /healthz. */
async function startRelayerProcess(configFile: string, port: number, nodeArgs: string[] = []): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [...nodeArgs, join(__dirname, "..", "bin", "machinepay.js"), "relayer", "start", "--config", configFile],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {}
    if (i > 300) {
      child.kill("SIGKILL");
      throw new Error("relayer did not start");
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  const counts = scaleOutArgs(process.argv.slice(2));
  if (counts) return scaleOut(counts);
  const chain = await startTestChain();
  let child: ChildProcess | undefined;
  let proxy: RpcProxy | undefined;
  try {
    await quietNode(chain.node.url);
    const presign = await presigner(chain);

    // Verify-only, one core, same run.
    const sample = await presign(2_000);
    await keccakReady; // the Verifier's default keccak (WebAssembly) from the first item
    const verifier = new Verifier(chain.domain);
    const items = sample.map((s) => ({
      kind: "payment" as const,
      payment: {
        ...s.payment,
        amount: BigInt(s.payment.amount),
        nonce: BigInt(s.payment.nonce),
        deadline: BigInt(s.payment.deadline),
        maxFee: BigInt(s.payment.maxFee),
      },
      signature: s.signature,
    }));
    const fastRuns: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t = process.hrtime.bigint();
      for (const it of items) if (!verifier.verify(it).ok) throw new Error("bench item failed to verify");
      fastRuns.push(items.length / (Number(process.hrtime.bigint() - t) / 1e9));
    }
    const viemRuns: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t = process.hrtime.bigint();
      for (const it of items.slice(0, 300))
        await recoverPaymentSigner(chain.domain, it.payment as Payment, it.signature);
      viemRuns.push(300 / (Number(process.hrtime.bigint() - t) / 1e9));
    }

    // WARM_LOAD=N: N payments of devices of their own, sent at saturation and settled before the
    // timed loads (untimed): the relayer's code is compiled and the node has run calls like these,
    // as after a while in production. The timed loads' devices stay new to the relayer.
    const warm = WARM_LOAD > 0 ? await presign(WARM_LOAD) : [];
    const sets = {
      p100sat: await presign(P100),
      p100half: await presign(P100 / 2),
      p1sat: await presign(P1),
      p1half: await presign(P1 / 2),
    };

    // RPC_COUNT=1: the relayer reaches the node through a counting proxy, and each phase prints
    // the JSON-RPC calls it made (a diagnostic: the proxy's CPU counts as the load generator's).
    if (process.env.RPC_COUNT === "1") proxy = await new RpcProxy(chain.node.url).start();
    const port = await freePort();
    const configFile = join(chain.dir, "bench.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        rpcUrl: proxy?.url ?? chain.node.url,
        deployment: chain.deploymentFile,
        store: join(chain.dir, "bench.db"),
        // STORE_THREAD=0 or 1 overrides the `storeThread` default (the SQLite store on a thread of its own).
        ...(process.env.STORE_THREAD ? { storeThread: process.env.STORE_THREAD === "1" } : {}),
        // MULTICALL_READS=0 or 1 overrides `multicallReads` (view reads folded into deployless multicalls).
        ...(process.env.MULTICALL_READS ? { multicallReads: process.env.MULTICALL_READS === "1" } : {}),
        // BATCH_ITEMS=250 overrides `batch.maxItems` (500).
        ...(process.env.BATCH_ITEMS ? { batch: { maxItems: Number(process.env.BATCH_ITEMS) } } : {}),
        port,
        sender: { dev: true },
        confirmations: 1,
        logLevel: "warn",
        limits: { perIpPerMinute: 100_000_000, perDevicePerSecond: 1_000_000, itemsPerRequest: 1000 },
      }),
    );
    const nice = niceNode(chain.node.pid);
    child = await startRelayerProcess(configFile, port, [
      ...(process.env.PROFILE ? ["--cpu-prof", "--cpu-prof-dir", process.env.PROFILE] : []),
      ...(process.env.RELAYER_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
    ]);

    /** Resolves once the relayer holds nothing accepted, batched or submitted (GET /v1/health). */
    const settledAll = async () => {
      for (const until = Date.now() + 300_000; Date.now() < until; ) {
        const health = (await (await fetch(`http://127.0.0.1:${port}/v1/health`)).json()) as {
          queue?: Record<string, number>;
        };
        if (health.queue && Object.values(health.queue).every((n) => n === 0)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error("the relayer did not settle what it accepted within 300 s");
    };

    const run = async (payments: Json[], perRequest: number, rate?: number) => {
      const connections = perRequest === 1 ? CONNECTIONS1 : CONNECTIONS;
      const bodies: string[] = [];
      for (let i = 0; i < payments.length; i += perRequest) {
        bodies.push(JSON.stringify({ payments: payments.slice(i, i + perRequest) }));
      }
      let next = 0;
      /** SERIES=1: payments answered in each half second of the load. */
      const series: number[] = [];
      let accepted = 0;
      let other = 0;
      /** What the items not accepted were answered: reason (or status) → count. */
      const refused = new Map<string, number>();
      const cpuNow = () => ({ relayer: cpuMs(child!.pid!), node: cpuMs(chain.node.pid), bench: cpuMs(process.pid) });
      const cpuBefore = cpuNow();
      const stagesBefore = await stageTotals(port);
      const started = process.hrtime.bigint();
      // Until the last answer, not until autocannon returns (it notices the end on a 1 s tick,
      // which quantised short runs to whole seconds).
      let last = started;
      const onBody = (body: string) => {
        last = process.hrtime.bigint();
        const r = JSON.parse(body) as { results?: { status: string; reason?: string }[] };
        if (process.env.SERIES === "1") {
          const bucket = Math.floor(Number(last - started) / 5e8);
          series[bucket] = (series[bucket] ?? 0) + (r.results?.length ?? 0);
        }
        for (const x of r.results ?? []) {
          if (x.status === "accepted") accepted++;
          else {
            other++;
            const why = x.reason ?? x.status;
            refused.set(why, (refused.get(why) ?? 0) + 1);
          }
        }
      };
      let latency: { p50: number; p97_5: number; p99: number };
      let failed: { non2xx: number; errors: number };
      if (rate) {
        // Half load: evenly spaced requests, latency from each one's due time (see pacedLoad).
        const paced = await pacedLoad({
          url: `http://127.0.0.1:${port}/v1/payments`,
          bodies,
          rate,
          connections,
          onBody: (_status, body) => onBody(body),
        });
        const q = (x: number) => Math.round(quantile(paced.latencies, x) * 10) / 10;
        latency = { p50: q(0.5), p97_5: q(0.975), p99: q(0.99) };
        failed = { non2xx: paced.non2xx, errors: paced.errors };
      } else {
        // Saturation: closed loop, each connection sends its next request on the answer to the last.
        const result = await autocannon({
          url: `http://127.0.0.1:${port}/v1/payments`,
          method: "POST",
          headers: { "content-type": "application/json" },
          connections: Math.min(bodies.length, connections),
          amount: bodies.length,
          requests: [
            {
              setupRequest: (req) => ({ ...req, body: bodies[next++ % bodies.length] }),
              onResponse: (_status, body) => onBody(body),
            },
          ],
        });
        latency = { p50: result.latency.p50, p97_5: result.latency.p97_5, p99: result.latency.p99 };
        failed = { non2xx: result.non2xx, errors: result.errors };
      }
      const seconds = Number(last - started) / 1e9;
      if (process.env.SERIES === "1") {
        console.error(`bench: answered per half second: ${Array.from(series, (n) => n ?? 0).join(" ")}`);
      }
      const cpuLoaded = cpuNow();
      const stagesAfter = await stageTotals(port);
      // Mean ms per request in each admission stage over the load (machinepay_admission_stage_seconds).
      const stages = Object.fromEntries(
        ADMISSION_STAGES.map((st) => {
          const n = stagesAfter[st].count - stagesBefore[st].count;
          return [st, n > 0 ? ((stagesAfter[st].sum - stagesBefore[st].sum) * 1000) / n : Number.NaN];
        }),
      ) as Record<(typeof ADMISSION_STAGES)[number], number>;
      const loopLag = { p99: stagesAfter.lagP99, max: stagesAfter.lagMax };
      // Then until everything accepted is settled (each phase starts from an empty queue, and a
      // phase does not pay for the settlement of the one before it).
      const drainStarted = process.hrtime.bigint();
      await settledAll();
      const drainSeconds = Number(process.hrtime.bigint() - drainStarted) / 1e9;
      // Where the two cores went: CPU ms per 1,000 accepted payments of each process, over the
      // load and the drain (accepting and settling them); cores busy over the load alone.
      const per1k = (ms: number) => Math.round((ms * 1000) / Math.max(1, accepted));
      const cpuAfter = cpuNow();
      const used = (at: typeof cpuAfter) => ({
        relayer: at.relayer - cpuBefore.relayer,
        node: at.node - cpuBefore.node,
        bench: at.bench - cpuBefore.bench,
      });
      const all = used(cpuAfter);
      const loaded = used(cpuLoaded);
      return {
        drainSeconds,
        stages,
        loopLag,
        cpu: {
          relayer: per1k(all.relayer),
          node: per1k(all.node),
          bench: per1k(all.bench),
          cores: (loaded.relayer + loaded.node + loaded.bench) / 1000 / seconds,
        },
        perSecond: accepted / seconds,
        accepted,
        other,
        refused,
        ...latency,
        ...failed,
      };
    };

    const rows: string[] = [];
    const stageRows: string[] = [];
    /** Why items were not accepted, per load (printed under the table when any were not). */
    const refusals: string[] = [];
    const row = (label: string, r: Awaited<ReturnType<typeof run>>) => {
      stageRows.push(
        `| ${label} | ${ADMISSION_STAGES.map((st) => r.stages[st].toFixed(1)).join(" | ")} | ${r.loopLag.p99.toFixed(0)} | ${r.loopLag.max.toFixed(0)} |`,
      );
      if (r.refused.size > 0) {
        refusals.push(`${label}: ${[...r.refused].map(([why, n]) => `${n} ${why}`).join(", ")}`);
      }
      rows.push(
        `| ${label} | ${r.accepted} | ${r.other} | ${Math.round(r.perSecond)} | ${r.p50} | ${r.p97_5} | ${r.p99} | ${r.non2xx + r.errors} | ${r.cpu.relayer} | ${r.cpu.node} | ${r.cpu.bench} | ${r.cpu.cores.toFixed(2)} | ${r.drainSeconds.toFixed(1)} |`,
      );
    };
    let counted = 0;
    const phase = (name: string) => {
      if (proxy) {
        // Per method (a JSON-RPC batch under its first call's): HTTP requests, calls, the node's
        // answer time (wall clock, summed) and answer bytes.
        const calls = new Map<string, { requests: number; calls: number; ms: number; kib: number }>();
        for (const c of proxy.calls.slice(counted)) {
          const m = calls.get(c.method) ?? { requests: 0, calls: 0, ms: 0, kib: 0 };
          m.requests++;
          m.calls += c.size;
          m.ms += c.ms ?? 0;
          m.kib += (c.bytes ?? 0) / 1024;
          calls.set(c.method, m);
        }
        counted = proxy.calls.length;
        const list = [...calls].map(
          ([method, m]) => `${method} ${m.requests}/${m.calls} ${Math.round(m.ms)} ms ${Math.round(m.kib)} KiB`,
        );
        console.error(`bench: JSON-RPC since the last phase (requests/calls, node time, answers): ${list.join(", ")}`);
      }
      console.error(`bench: ${name} (${new Date().toISOString()})`);
    };
    // Right after start the relayer reads every event since the deployment (the fleets the bench
    // just made: thousands); a relayer that has run a while has done that. Let it, before the load.
    await new Promise((r) => setTimeout(r, Number(process.env.WARMUP ?? 5) * 1000));
    if (warm.length > 0) {
      phase(`warm-up, ${warm.length} payments at saturation (untimed)`);
      const w = await run(warm, 100);
      console.error(`bench: warm-up took ${Math.round(w.perSecond)}/s, settled ${w.drainSeconds.toFixed(1)} s after`);
    }
    phase("100 per request, saturation");
    const sat100 = await run(sets.p100sat, 100);
    phase(`100 per request, half load at ${Math.round(sat100.perSecond / 2)}/s`);
    row("100 per request, saturation", sat100);
    row("100 per request, half load", await run(sets.p100half, 100, sat100.perSecond / 100 / 2));
    phase("1 per request, saturation");
    const sat1 = await run(sets.p1sat, 1);
    phase(`1 per request, half load at ${Math.round(sat1.perSecond / 2)}/s`);
    row("1 per request, saturation", sat1);
    row("1 per request, half load", await run(sets.p1half, 1, sat1.perSecond / 2));

    // What the relayer and the node spend with no load, everything settled (the batcher's polling,
    // timers): a floor under the CPU figures above. Measured last: right after start the relayer
    // is still reading every event since the deployment (the bench's fleets: thousands of them).
    const idleSeconds = Number(process.env.IDLE ?? 5);
    const idleBefore = { relayer: cpuMs(child.pid!), node: cpuMs(chain.node.pid) };
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const idle = {
      relayer: (cpuMs(child.pid!) - idleBefore.relayer) / 1000 / idleSeconds,
      node: (cpuMs(chain.node.pid) - idleBefore.node) / 1000 / idleSeconds,
    };
    phase("done");
    console.log(
      "\nCPU per 1k: over the load and the drain after it (accepting and settling); cores busy: over the load;\nall settled: seconds from the last answer until nothing is accepted, batched or submitted.",
    );
    console.log(
      "\n| load | accepted | not accepted | accepted + durable per s | ack p50 ms | ack p97.5 ms | ack p99 ms | non-2xx + errors | relayer CPU ms per 1k | node CPU ms per 1k | load generator CPU ms per 1k | cores busy | all settled s after |",
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const r of rows) console.log(r);
    if (refusals.length > 0) console.log(`\nNot accepted, by the answer's reason: ${refusals.join("; ")}`);
    console.log(
      "\nWhere a request's time went, mean ms per request over the load (machinepay_admission_stage_seconds); the relayer's event loop delay over the load (machinepay_nodejs_eventloop_lag_*, 10 ms resolution):",
    );
    console.log(`\n| load | ${ADMISSION_STAGES.join(" | ")} | event loop delay p99 ms | event loop delay max ms |`);
    console.log(`| --- | ${ADMISSION_STAGES.map(() => "---:").join(" | ")} | ---: | ---: |`);
    for (const r of stageRows) console.log(r);
    if (nice !== undefined) console.log(`\nThe hardhat node ran at nice ${nice} (NODE_NICE).`);
    console.log(
      `\nIdle for ${idleSeconds} s after the load, everything settled: relayer ${idle.relayer.toFixed(2)} cores, node ${idle.node.toFixed(2)} cores.`,
    );
    console.log("\n| verify only, one core | per second (median) |");
    console.log("| --- | ---: |");
    console.log(
      `| relayer Verifier (fixed-layout digest, WebAssembly keccak, native secp256k1) | ${Math.round(median(fastRuns))} |`,
    );
    console.log(`| viem recoverTypedDataAddress | ${Math.round(median(viemRuns))} |`);
    console.log(`| ratio | ${(median(fastRuns) / median(viemRuns)).toFixed(1)}x |`);
  } finally {
    // The relayer first (it drains through the proxy to the node), then the proxy, then the node.
    if (child) await stopProcess(child, 15_000);
    await proxy?.stop();
    await chain.stop();
  }
}

/** SQLite with one relayer, then PostgreSQL with each instance count: 100 and 1 payments per request at saturation. */
async function scaleOut(counts: number[]) {
  const pg = await startPostgres();
  if (!pg) throw new Error("the scale-out benchmark needs PostgreSQL (apt-get install -y postgresql)");
  const chain = await startTestChain();
  const children: ChildProcess[] = [];
  try {
    await quietNode(chain.node.url);
    const presign = await presigner(chain);
    const query = async (text: string) => {
      const { Client } = await import("pg");
      const c = new Client({ connectionString: pg.url });
      await c.connect();
      try {
        return (await c.query(text)).rows;
      } finally {
        await c.end();
      }
    };
    const commits = async () =>
      Number((await query("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"))[0].xact_commit);

    const configs = [{ store: "sqlite", n: 1 }, ...counts.map((n) => ({ store: "postgres", n }))];
    const rows: string[] = [];
    for (const [k, cfg] of configs.entries()) {
      let url = join(chain.dir, `scale-${k}.db`);
      if (cfg.store === "postgres") {
        await query(`CREATE SCHEMA bench${k}`);
        url = `${pg.url}?options=${encodeURIComponent(`-c search_path=bench${k}`)}`;
      }
      const ports: number[] = [];
      const pids: number[] = [];
      for (let i = 0; i < cfg.n; i++) {
        const port = await freePort();
        const keyFile = join(chain.dir, `scale-${k}-${i}.key`);
        writeFileSync(keyFile, `${HARDHAT_KEYS[5 + i]}\n`, { mode: 0o600 }); // Hardhat's public test keys
        const configFile = join(chain.dir, `scale-${k}-${i}.json`);
        writeFileSync(
          configFile,
          JSON.stringify({
            rpcUrl: chain.node.url,
            deployment: chain.deploymentFile,
            store: url,
            port,
            sender: { keyFile },
            confirmations: 1,
            logLevel: "warn",
            limits: { perIpPerMinute: 100_000_000, perDevicePerSecond: 1_000_000, itemsPerRequest: 1000 },
          }),
        );
        const child = await startRelayerProcess(configFile, port);
        children.push(child);
        pids.push(child.pid!);
        ports.push(port);
      }
      for (const [label, perRequest, count] of [
        ["100 per request", 100, P100],
        ["1 per request", 1, P1],
      ] as const) {
        const payments = await presign(count);
        const retries = async () => {
          let n = 0;
          for (const port of ports) {
            const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
            n += Number(/^machinepay_admission_retries_total (\S+)$/m.exec(text)?.[1] ?? 0);
          }
          return n;
        };
        const before = {
          relayers: pids.reduce((t, p) => t + cpuMs(p), 0),
          db: cfg.store === "postgres" ? serverCpuMs(pg.pid) : 0,
          commits: cfg.store === "postgres" ? await commits() : 0,
          retries: await retries(),
        };
        console.error(`bench: ${cfg.store} x${cfg.n}, ${label} (${new Date().toISOString()})`);
        const r = await runSpread(ports, payments, perRequest);
        const per1k = (x: number) => (r.accepted > 0 ? Math.round((x * 1000) / r.accepted) : 0);
        rows.push(
          `| ${cfg.store} | ${cfg.n} | ${label} | ${r.accepted} | ${Math.round(r.perSecond)} | ${r.p50} | ${r.p99} | ` +
            `${per1k(pids.reduce((t, p) => t + cpuMs(p), 0) - before.relayers)} | ` +
            `${cfg.store === "postgres" ? per1k(serverCpuMs(pg.pid) - before.db) : "-"} | ` +
            `${cfg.store === "postgres" ? per1k((await commits()) - before.commits) : "-"} | ${(await retries()) - before.retries} |`,
        );
      }
      for (const child of children.splice(0)) await stopProcess(child, 15_000);
    }
    console.log(
      "\n| store | instances | load | accepted | accepted + durable per s | ack p50 ms | ack p99 ms (worst instance) | relayers CPU ms per 1k | PostgreSQL CPU ms per 1k | DB commits per 1k | admissions decided again |",
    );
    console.log("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const r of rows) console.log(r);
  } finally {
    for (const child of children) await stopProcess(child, 15_000);
    await chain.stop();
    await pg.stop();
  }
}

/** Saturation load spread over several relayers: one autocannon per instance, connections split. */
async function runSpread(ports: number[], payments: Json[], perRequest: number) {
  const share = ports.map((_, i) => payments.filter((_, j) => Math.floor(j / perRequest) % ports.length === i));
  let accepted = 0;
  const started = process.hrtime.bigint();
  let last = started; // the last answer (autocannon notices the end on a 1 s tick)
  const results = await Promise.all(
    ports.map((port, i) => {
      const bodies: string[] = [];
      for (let j = 0; j < share[i].length; j += perRequest) {
        bodies.push(JSON.stringify({ payments: share[i].slice(j, j + perRequest) }));
      }
      let next = 0;
      return autocannon({
        url: `http://127.0.0.1:${port}/v1/payments`,
        method: "POST",
        headers: { "content-type": "application/json" },
        connections: Math.max(1, Math.floor(SCALE_CONNECTIONS / ports.length)),
        amount: bodies.length,
        requests: [
          {
            setupRequest: (req) => ({ ...req, body: bodies[next++ % bodies.length] }),
            onResponse: (_status, body) => {
              last = process.hrtime.bigint();
              const r = JSON.parse(body) as { results?: { status: string }[] };
              for (const x of r.results ?? []) if (x.status === "accepted") accepted++;
            },
          },
        ],
      });
    }),
  );
  const seconds = Number(last - started) / 1e9;
  return {
    accepted,
    perSecond: accepted / seconds,
    p50: Math.max(...results.map((r) => r.latency.p50)),
    p99: Math.max(...results.map((r) => r.latency.p99)),
  };
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
