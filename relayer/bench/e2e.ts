/**
 * End-to-end benchmark: devices sign → the relayer over HTTP (its own process, SQLite file) →
 * settled on a local `hardhat node` at the configured confirmation depth. Payments per second from
 * the first submission to the last settlement, batches and gas per payment, for 1,000 and 10,000
 * payments (100,000 with BENCH_E2E_LARGE=1), each size twice: signed live while submitting, and
 * pre-signed. Printed as markdown tables, with where the time goes: CPU seconds of the node, the
 * relayer and this process, and the relayer's JSON-RPC calls by method (timed by a proxy between
 * the relayer and the node: with automine, eth_sendRawTransaction includes executing and mining).
 *
 *   npx -y pnpm@10 bench:e2e                          (root; after npm run setup)
 *   BENCH_E2E_SIZES=1000,10000 BENCH_E2E_LARGE=1 BENCH_CONFIRMATIONS=2 npx -y pnpm@10 bench:e2e
 *
 * Devices sign as a device in any language would: the fixed-layout EIP-712 digest (SDK
 * `paymentDigest`, native keccak) and native secp256k1 (RFC 6979: the signature viem makes).
 * Each device pays one payee, 20 payments in nonce order.
 */
import { readFileSync } from "node:fs";
import { createServer, Agent as HttpAgent, request } from "node:http";
import { performance } from "node:perf_hooks";
import {
  domainSeparator,
  type Hex,
  machinePayAbi,
  type Payment,
  paymentDigest,
  toSignedPaymentJson,
} from "@machinepay/sdk";
import secp256k1 from "secp256k1";
import { toFunctionSelector } from "viem";
import { generatePrivateKey } from "viem/accounts";
import { chainNow, createPolicy, policy, registerFleet, type ScenarioContext } from "../../scripts/demo/context";
import { ChainEvents } from "../../scripts/demo/events";
import { type DemoEnvironment, startEnvironment, USDC } from "../../scripts/demo/harness";
import { contextFor } from "../../scripts/demo/run";
import { allBatches } from "../../scripts/demo/summary";
import { freePort } from "../../scripts/lib/hardhat-node";
import { nativeKeccak256 } from "../src/ingest/verify";

const SIZES = (process.env.BENCH_E2E_SIZES ?? "1000,10000")
  .split(",")
  .map(Number)
  .concat(process.env.BENCH_E2E_LARGE === "1" ? [100_000] : []);
const CONFIRMATIONS = Number(process.env.BENCH_CONFIRMATIONS ?? 1);
const PER_DEVICE = 20;
const PER_REQUEST = 500;
const IN_FLIGHT = Number(process.env.BENCH_E2E_IN_FLIGHT ?? 4);
const PAYEES = 5;

type Json = ReturnType<typeof toSignedPaymentJson>;

// ---- a JSON-RPC proxy that times the relayer's calls by method ---------------------------------

type MethodTime = { calls: number; ms: number };

/** MachinePay's functions by selector: eth_call is told apart by the function it calls (preview, views). */
const SELECTORS = new Map<string, string>(
  machinePayAbi
    .filter((x) => x.type === "function")
    .map((x) => [toFunctionSelector(x as never), (x as { name: string }).name] as const),
);

function nameOf(m: { method?: string; params?: unknown[] }): string {
  if (m.method !== "eth_call" && m.method !== "eth_estimateGas") return m.method ?? "?";
  const data = (m.params?.[0] as { data?: string; input?: string } | undefined)?.data ?? "";
  return `${m.method} ${SELECTORS.get(data.slice(0, 10)) ?? data.slice(0, 10)}`;
}

/** `target()` is read per request: the node's URL is known only once the harness started it. */
async function startRpcTimer(target: () => string) {
  const byMethod = new Map<string, MethodTime>();
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      let methods: string[] = ["?"];
      try {
        const parsed = JSON.parse(body.toString("utf8"));
        methods = (Array.isArray(parsed) ? parsed : [parsed]).map(nameOf);
      } catch {
        // forwarded as is
      }
      const started = performance.now();
      const { hostname, port } = new URL(target());
      const out = request(
        { hostname, port, path: "/", method: "POST", agent, headers: { "content-type": "application/json" } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          answer.on("end", () => {
            const ms = (performance.now() - started) / methods.length;
            for (const m of methods) {
              const t = byMethod.get(m) ?? { calls: 0, ms: 0 };
              t.calls++;
              t.ms += ms;
              byMethod.set(m, t);
            }
          });
        },
      );
      out.on("error", () => {
        res.writeHead(502);
        res.end();
      });
      out.end(body);
    });
  });
  const listenPort = await freePort();
  await new Promise<void>((resolve) => server.listen(listenPort, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${listenPort}`,
    byMethod,
    reset: () => byMethod.clear(),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ---- CPU seconds of a process (Linux /proc) -----------------------------------------------------

function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, clock ticks of 10 ms
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds of this process (signing, HTTP client, the proxy). */
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// ---- devices -----------------------------------------------------------------------------------

type Fleet = { keys: Buffer[]; addresses: `0x${string}`[]; payees: `0x${string}`[] };

async function fleet(ctx: ScenarioContext, devices: number): Promise<Fleet> {
  const owner = ctx.owners.household;
  const policyId = await createPolicy(
    ctx,
    owner,
    policy(ctx, { maxPerPayment: USDC(1), maxPerPeriod: USDC(100), lifetimeMax: USDC(1_000) }),
  );
  const hex = Array.from({ length: devices }, () => generatePrivateKey());
  const registered = await registerFleet(ctx, owner, policyId, devices, hex);
  const payees = Array.from(
    { length: PAYEES },
    (_, i) => `0x${(0xbe0000 + i).toString(16).padStart(40, "0")}` as `0x${string}`,
  );
  return { keys: hex.map((k) => Buffer.from(k.slice(2), "hex")), addresses: registered.map((d) => d.address), payees };
}

/** Payment `k` of the run: device k % devices, nonce k / devices (rounds keep each device's nonces in order). */
function signer(ctx: ScenarioContext, f: Fleet, deadline: bigint) {
  const sep = domainSeparator(ctx.domain, nativeKeccak256);
  return (k: number): Json => {
    const i = k % f.keys.length;
    const payment: Payment = {
      payee: f.payees[i % PAYEES],
      token: ctx.token,
      amount: 10_000n,
      nonce: BigInt(Math.floor(k / f.keys.length)),
      deadline,
      maxFee: 0n,
      ref: `0x${(k + 1).toString(16).padStart(64, "0")}` as Hex,
    };
    const { signature, recid } = secp256k1.ecdsaSign(paymentDigest(sep, payment, nativeKeccak256), f.keys[i]);
    return toSignedPaymentJson(
      payment,
      `0x${Buffer.from(signature).toString("hex")}${(27 + recid).toString(16)}` as Hex,
    );
  };
}

async function post(env: DemoEnvironment, items: Json[]): Promise<number> {
  const res = await fetch(`${env.relayerUrl}/v1/payments`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ payments: items }),
  });
  if (!res.ok) throw new Error(`POST /v1/payments answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const { results } = (await res.json()) as { results: { status: string; reason?: string }[] };
  const refused = results.filter((r) => r.status !== "accepted");
  if (refused.length > 0) throw new Error(`${refused.length} refused, e.g. ${JSON.stringify(refused[0])}`);
  return results.length;
}

type Row = {
  label: string;
  payments: number;
  devices: number;
  signMs: number;
  ackMs: number;
  settleMs: number;
  batches: number;
  gas: bigint;
  settledOnChain: number;
  cpu: { node: number; relayer: number; bench: number };
  rpc: [string, MethodTime][];
};

async function runRow(
  env: DemoEnvironment,
  ctx: ScenarioContext,
  events: ChainEvents,
  rpc: Awaited<ReturnType<typeof startRpcTimer>>,
  n: number,
  live: boolean,
): Promise<Row> {
  const devices = Math.ceil(n / PER_DEVICE);
  const f = await fleet(ctx, devices);
  const sign = signer(ctx, f, (await chainNow(ctx.client)) + 7_200n);
  const before = (await allBatches(env)).reduce((m, b) => Math.max(m, b.id), 0);
  let presigned: Json[] = [];
  let signMs = 0;
  if (!live) {
    const t = performance.now();
    presigned = Array.from({ length: n }, (_, k) => sign(k));
    signMs = performance.now() - t;
  }
  rpc.reset();
  const cpu0 = { node: cpuSeconds(env.nodePid), relayer: cpuSeconds(env.relayerPid), bench: selfCpu() };
  const started = performance.now();
  const inflight = new Set<Promise<number>>();
  for (let i = 0; i < n; i += PER_REQUEST) {
    const count = Math.min(PER_REQUEST, n - i);
    let chunk: Json[];
    if (live) {
      const t = performance.now();
      chunk = Array.from({ length: count }, (_, k) => sign(i + k));
      signMs += performance.now() - t;
    } else chunk = presigned.slice(i, i + count);
    const p = post(env, chunk).finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= IN_FLIGHT) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const acked = performance.now();
  // Settled at the configured depth: every item of this row is in a confirmed batch. (GET /v1/batches
  // reads the store only; /v1/health would wait on the busy node for its readiness check.)
  const until = Date.now() + 30 * 60_000;
  for (;;) {
    const mine = (await allBatches(env)).filter((b) => b.id > before && b.kind === "payment");
    const confirmed = mine.filter((b) => b.status === "confirmed").reduce((s, b) => s + b.itemCount, 0);
    if (confirmed >= n) break;
    if (Date.now() > until) throw new Error(`only ${confirmed} of ${n} payments settled in 30 minutes`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const settled = performance.now();
  const cpu1 = { node: cpuSeconds(env.nodePid), relayer: cpuSeconds(env.relayerPid), bench: selfCpu() };
  const rowBatches = (await allBatches(env)).filter((b) => b.id > before && b.kind === "payment");
  await events.sync();
  const mine = new Set(f.addresses.map((a) => a.toLowerCase()));
  const settledOnChain = events.payments().filter((p) => mine.has(p.device.toLowerCase())).length;
  return {
    label: live ? "signed live" : "pre-signed",
    payments: n,
    devices,
    signMs,
    ackMs: acked - started,
    settleMs: settled - started,
    batches: rowBatches.length,
    gas: rowBatches.reduce((s, b) => s + BigInt(b.gasUsed ?? 0), 0n),
    settledOnChain,
    cpu: { node: cpu1.node - cpu0.node, relayer: cpu1.relayer - cpu0.relayer, bench: cpu1.bench - cpu0.bench },
    rpc: [...rpc.byMethod].sort((a, b) => b[1].ms - a[1].ms),
  };
}

const int = (x: number | bigint) => Math.round(Number(x)).toLocaleString("en-US");

async function main() {
  let rpc: Awaited<ReturnType<typeof startRpcTimer>> | undefined;
  let env: DemoEnvironment | undefined;
  let target = "";
  const rows: Row[] = [];
  try {
    rpc = await startRpcTimer(() => target);
    const proxy = rpc.url;
    env = await startEnvironment({
      log: (l) => console.error(`  ${l}`),
      relayer: { confirmations: CONFIRMATIONS, batchMaxAgeMs: 300, logLevel: "warn" },
      escrow: USDC(50_000),
      relayerRpc: (url) => {
        target = url;
        return proxy;
      },
    });
    const events = new ChainEvents(env.client, env.deployment.machinePay, env.deployment.deploymentBlock);
    const ctx = contextFor(env, events, { sizes: { devices: 1, payments: 1 } });
    for (const n of SIZES) {
      for (const live of [true, false]) {
        console.error(`  ${n} payments, ${live ? "signed live" : "pre-signed"} …`);
        rows.push(await runRow(env, ctx, events, rpc, n, live));
      }
    }
  } finally {
    await env?.stop();
    await rpc?.close();
  }

  console.log(
    `\nEnd to end on one hardhat node (automine, plus a block a second), relayer as its own process, ${CONFIRMATIONS} confirmation(s); ${PER_DEVICE} payments per device, ${PER_REQUEST} per request, ${IN_FLIGHT} requests in flight.\n`,
  );
  console.log(
    "| payments | devices | signing | signing ms | first submission → all accepted, ms | → last settled, ms | payments/s signed → settled | accepted/s (ingest) | batches | gas per payment | settled on chain |",
  );
  console.log("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${int(r.payments)} | ${int(r.devices)} | ${r.label} | ${int(r.signMs)} | ${int(r.ackMs)} | ${int(r.settleMs)} | ${int((r.payments / r.settleMs) * 1000)} | ${int((r.payments / r.ackMs) * 1000)} | ${r.batches} | ${int(Number(r.gas) / r.payments)} | ${int(r.settledOnChain)} |`,
    );
  }
  console.log(
    "\nWhere the time goes (same rows): CPU seconds per process, and the relayer's JSON-RPC time by method\n",
  );
  console.log(
    "| payments | signing | wall s | node CPU s | relayer CPU s | bench CPU s (signing, HTTP, proxy) | eth_sendRawTransaction (executes + mines) | eth_call preview (pending block) | eth_call views (ingest's chain state) | other RPC |",
  );
  console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    const total = (pred: (k: string) => boolean) =>
      r.rpc
        .filter(([k]) => pred(k))
        .reduce((s, [, t]) => ({ calls: s.calls + t.calls, ms: s.ms + t.ms }), { calls: 0, ms: 0 });
    const send = total((k) => k === "eth_sendRawTransaction");
    const preview = total((k) => k === "eth_call preview");
    const views = total((k) => k.startsWith("eth_call") && k !== "eth_call preview");
    const other = total((k) => k !== "eth_sendRawTransaction" && !k.startsWith("eth_call"));
    const fmt = (t: MethodTime) => `${(t.ms / 1000).toFixed(2)} s in ${int(t.calls)}`;
    console.log(
      `| ${int(r.payments)} | ${r.label} | ${(r.settleMs / 1000).toFixed(2)} | ${r.cpu.node.toFixed(2)} | ${r.cpu.relayer.toFixed(2)} | ${r.cpu.bench.toFixed(2)} | ${fmt(send)} | ${fmt(preview)} | ${fmt(views)} | ${fmt(other)} |`,
    );
  }
  if (process.env.BENCH_E2E_RPC === "1") {
    console.log(
      "\nJSON-RPC calls by method (all rows)\n\n| method | calls | total s | mean ms |\n| --- | ---: | ---: | ---: |",
    );
    const all = new Map<string, MethodTime>();
    for (const r of rows) {
      for (const [k, t] of r.rpc) {
        const a = all.get(k) ?? { calls: 0, ms: 0 };
        all.set(k, { calls: a.calls + t.calls, ms: a.ms + t.ms });
      }
    }
    for (const [k, t] of [...all].sort((a, b) => b[1].ms - a[1].ms)) {
      console.log(`| ${k} | ${int(t.calls)} | ${(t.ms / 1000).toFixed(2)} | ${(t.ms / t.calls).toFixed(1)} |`);
    }
  }
  const failed = rows.filter((r) => r.settledOnChain !== r.payments);
  if (failed.length > 0) {
    console.error(`\n${failed.length} row(s) did not settle every payment on chain`);
    process.exitCode = 1;
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
