/**
 * Crash safety: the relayer runs as a child process against a real `hardhat node` while this
 * process streams signed payments and vouchers at it, and is killed with SIGKILL again and again:
 * at each named stage (MACHINEPAY_FAULT, see src/faults.ts) and at random moments. After the last
 * restart three sets are compared: what was answered `accepted`, what settled on chain (from the
 * contract's events), and what the store reports. Targets: 0 accepted items lost, 0 settled twice,
 * every accepted item settled, superseded by a newer voucher, or rejected with a reason.
 *
 *   CRASHES=1000 CRASHES_PG=200 npx mocha --no-config -r ts-node/register/transpile-only test/crash-harness.test.ts
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  decodeMachinePayLog,
  type Hex,
  type Payment,
  signPayment,
  signVoucher,
  toSignedPaymentJson,
  type Voucher,
} from "@machinepay/sdk";
import { expect } from "chai";
import { freePort, stopProcess } from "../../scripts/lib/hardhat-node";
import { FAULT_STAGES } from "../src/faults";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { newSchema, requirePostgres } from "./support/postgres";

const BIN = join(__dirname, "..", "bin", "machinepay.js");
const DEVICES = 40;
const PAYMENTS_PER_DEVICE = 40;
const TABS = 6;
const VOUCHERS_PER_TAB = 12;

type Item = {
  kind: "payment" | "voucher";
  body: unknown;
  /** payments: device:nonce; vouchers: device:tabId:cumulative (how the chain's events name it). */
  key: string;
  tab?: string;
  cumulative?: bigint;
};

/** splitmix-style deterministic randomness, so a failing run can be repeated. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// SQLite gets the full run; PostgreSQL a shorter one (CRASHES_PG) through every stage as well.
for (const [backend, CRASHES] of [
  ["SQLite", Number(process.env.CRASHES ?? 200)],
  ["PostgreSQL", Number(process.env.CRASHES_PG ?? 42)],
] as const)
  describe(`relayer crash safety: SIGKILL at every stage and at random, hundreds of times (${backend})`, function () {
    this.timeout(30 * 60_000);
    let chain: TestChain;
    let child: ChildProcess | undefined;
    let url: string | undefined;

    before(async function () {
      url = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      chain = await startTestChain();
    });
    after(async () => {
      if (child) await stopProcess(child);
      await chain?.stop();
    });

    it(`loses nothing and settles nothing twice across ${CRASHES} crashes`, async () => {
      const random = rng(Number(process.env.SEED ?? 20261202));
      const port = await freePort();
      const configFile = join(chain.dir, "crash-harness.json");
      writeFileSync(
        configFile,
        JSON.stringify({
          rpcUrl: chain.node.url,
          deployment: chain.deploymentFile,
          store: url ?? join(chain.dir, "crash-harness.db"),
          port,
          sender: { dev: true },
          confirmations: 1,
          batch: { maxAgeMs: 60, pollMs: 20, maxItems: 25 },
          tabs: { threshold: "1", maxAgeMs: 50 },
          replaceAfterMs: 2_000,
          verifyWorkers: 0,
          logLevel: "error",
        }),
      );

      // ---- the items: payments in nonce order per device, and vouchers climbing on a few tabs ----
      const { devices } = await chain.fleet(DEVICES, {
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(10_000),
        lifetimeMax: USDC(100_000),
      });
      const deadline = (await chain.client.getBlock()).timestamp + 7_200n;
      const items: Item[] = [];
      for (let n = 0; n < PAYMENTS_PER_DEVICE; n++) {
        for (const [i, d] of devices.entries()) {
          const payment: Payment = {
            payee: PAYEES[(i + n) % 3],
            token: chain.usdc,
            amount: USDC(0.01) + BigInt(n),
            nonce: BigInt(n),
            deadline,
            maxFee: 0n,
            ref: `0x${(items.length + 1).toString(16).padStart(64, "0")}` as Hex,
          };
          const signature = await signPayment({ signer: d, domain: chain.domain, payment });
          items.push({
            kind: "payment",
            body: toSignedPaymentJson(payment, signature),
            key: `${d.address.toLowerCase()}:${n}`,
          });
        }
      }
      for (let t = 0; t < TABS; t++) {
        const d = devices[t];
        for (let k = 1; k <= VOUCHERS_PER_TAB; k++) {
          const voucher: Voucher = {
            payee: PAYEES[t % 3],
            token: chain.usdc,
            tabId: BigInt(100 + t),
            cumulative: USDC(0.1) * BigInt(k),
            deadline,
            maxFee: 0n,
          };
          const signature = await signVoucher({ signer: d, domain: chain.domain, voucher });
          items.push({
            kind: "voucher",
            body: {
              voucher: {
                ...voucher,
                tabId: voucher.tabId.toString(),
                cumulative: voucher.cumulative.toString(),
                deadline: deadline.toString(),
                maxFee: "0",
              },
              signature,
            },
            key: `${d.address.toLowerCase()}:${voucher.tabId}:${voucher.cumulative}`,
            tab: `${d.address.toLowerCase()}:${voucher.tabId}`,
            cumulative: voucher.cumulative,
          });
        }
      }

      // ---- what the relayer answered ----
      const accepted = new Map<number, Hex>(); // item index -> id, once answered accepted (or later)
      const answered = new Map<number, { id: Hex; status: string; reason?: string }>();
      const ACCEPTED_LIKE = new Set(["accepted", "batched", "submitted", "settled", "superseded"]);
      let cursor = 0; // items are released in order, so a device's nonces arrive roughly in order

      async function post(batch: number[]): Promise<void> {
        const kind = items[batch[0]].kind;
        const res = await fetch(`http://127.0.0.1:${port}/v1/${kind}s`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ [`${kind}s`]: batch.map((i) => items[i].body) }),
        });
        if (res.status !== 200) return; // 429/503: sent again later
        const body = (await res.json()) as { results: { id: Hex; status: string; reason?: string }[] };
        body.results.forEach((r, j) => {
          const i = batch[j];
          answered.set(i, r);
          if (ACCEPTED_LIKE.has(r.status)) accepted.set(i, r.id);
        });
      }

      /**
       * Streams until `stop()` says so: up to `budget` new items (a few per cycle, so the supply lasts
       * for every crash), plus every item sent before and not answered yet.
       */
      async function stream(stop: () => boolean, budget: number): Promise<void> {
        const inFlight = new Set<Promise<void>>();
        while (!stop()) {
          const retry = [...Array(cursor).keys()].filter((i) => !accepted.has(i) && !answered.has(i));
          const fresh: number[] = [];
          const take = Math.min(budget, 1 + Math.floor(random() * 5));
          while (fresh.length < take && cursor < items.length) fresh.push(cursor++);
          budget -= fresh.length;
          for (const group of [retry.slice(0, 50), fresh]) {
            for (const kind of ["payment", "voucher"] as const) {
              const part = group.filter((i) => items[i].kind === kind);
              if (part.length === 0) continue;
              const p = post(part).catch(() => undefined); // connection refused or reset: the relayer died
              inFlight.add(p);
              void p.finally(() => inFlight.delete(p));
            }
          }
          await new Promise((r) => setTimeout(r, 5 + random() * 20));
        }
        await Promise.all(inFlight);
      }

      async function start(
        fault?: string,
      ): Promise<{ p: ChildProcess; exited: Promise<NodeJS.Signals | null>; stderr: () => string }> {
        const p = spawn(process.execPath, [BIN, "relayer", "start", "--config", configFile], {
          stdio: ["ignore", "ignore", "pipe"],
          env: { ...process.env, MACHINEPAY_FAULT: fault ?? "" },
        });
        let err = "";
        p.stderr!.on("data", (c) => (err = (err + c).slice(-4000)));
        const exited = new Promise<NodeJS.Signals | null>((r) => p.once("exit", (_code, signal) => r(signal)));
        const stderr = () => err;
        const until = Date.now() + 30_000;
        for (;;) {
          if (p.exitCode !== null || p.signalCode !== null) {
            // A fault armed for a stage the start-up reaches (recovery re-broadcasting) fires early: fine.
            return { p, exited, stderr };
          }
          try {
            if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return { p, exited, stderr };
          } catch {
            // not listening yet
          }
          if (Date.now() > until) throw new Error(`relayer did not start:\n${err}`);
          await new Promise((r) => setTimeout(r, 25));
        }
      }

      // ---- the crashes ----
      const byCause = new Map<string, number>();
      let crashes = 0;
      let startMs = 0;
      for (let c = 0; c < CRASHES; c++) {
        const staged = c % 3 !== 2; // two in three at a named stage, one in three at a random moment
        const fault = staged
          ? `${FAULT_STAGES[Math.floor(c / 3) % FAULT_STAGES.length]}:${1 + Math.floor(random() * 2)}`
          : undefined;
        const t0 = Date.now();
        const { p, exited, stderr } = await start(fault);
        startMs += Date.now() - t0;
        child = p;
        let dead = p.signalCode !== null || p.exitCode !== null;
        void exited.then(() => (dead = true));
        const limit = Date.now() + (staged ? 1_000 : 50 + random() * 450);
        await stream(() => dead || Date.now() > limit, 4 + Math.floor(random() * 6));
        if (!dead) p.kill("SIGKILL");
        const signal = await exited;
        child = undefined;
        expect(signal, `relayer exited on its own (fault ${fault ?? "random"}, crash ${c}):\n${stderr()}`).to.equal(
          "SIGKILL",
        );
        crashes++;
        const cause = staged && Date.now() <= limit ? fault!.split(":")[0] : "random";
        byCause.set(cause, (byCause.get(cause) ?? 0) + 1);
      }

      // ---- the end: no faults; everything sent, settled, confirmed ----
      const { p } = await start();
      child = p;
      await stream(
        () => cursor >= items.length && [...Array(items.length).keys()].every((i) => answered.has(i)),
        items.length,
      );
      const statusOf = async (kind: string, id: Hex) =>
        (
          (await (await fetch(`http://127.0.0.1:${port}/v1/${kind}s/${id}`)).json()) as {
            status: string;
            reason?: string;
          }
        ).status;
      const until = Date.now() + 120_000;
      let open: number[] = [...accepted.keys()];
      while (open.length > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 300));
        const next: number[] = [];
        for (const i of open) {
          const s = await statusOf(items[i].kind, accepted.get(i)!);
          if (!["settled", "rejected", "superseded"].includes(s)) next.push(i);
        }
        open = next;
      }
      await stopProcess(p);
      child = undefined;

      // ---- three sets ----
      const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
      const settledKeys: string[] = [];
      for (const log of logs) {
        const e = decodeMachinePayLog(log as never);
        if (e?.eventName === "PaymentSettled") {
          const x = e as { device: Hex; nonce: bigint };
          settledKeys.push(`${x.device.toLowerCase()}:${x.nonce}`);
        } else if (e?.eventName === "VoucherSettled") {
          const x = e as { device: Hex; tabId: bigint; cumulative: bigint };
          settledKeys.push(`${x.device.toLowerCase()}:${x.tabId}:${x.cumulative}`);
        }
      }
      const onChain = new Set(settledKeys);
      const twice = settledKeys.length - onChain.size;
      const store = new Map<number, string>();
      const restart = await start();
      child = restart.p;
      for (const i of accepted.keys()) store.set(i, await statusOf(items[i].kind, accepted.get(i)!));
      await stopProcess(restart.p);
      child = undefined;

      let lost = 0;
      let storeDisagrees = 0;
      let rejectedByChain = 0;
      for (const [i] of accepted) {
        const item = items[i];
        const s = store.get(i)!;
        const settled = onChain.has(item.key);
        if (s === "rejected") rejectedByChain++;
        if ((s === "settled") !== settled) storeDisagrees++;
        if (!settled && s !== "superseded" && s !== "rejected") lost++;
      }
      // Each tab ends at the newest voucher the relayer accepted; older ones were superseded, not lost.
      const newest = new Map<string, bigint>();
      for (const [i] of accepted) {
        const it = items[i];
        if (it.tab && (newest.get(it.tab) ?? 0n) < it.cumulative!) newest.set(it.tab, it.cumulative!);
      }
      const tabsShort: string[] = [];
      for (const [tab, cumulative] of newest) {
        let settledMax = 0n;
        for (const k of settledKeys) {
          const x = k.startsWith(`${tab}:`) ? BigInt(k.split(":")[2]) : 0n;
          if (x > settledMax) settledMax = x;
        }
        if (settledMax !== cumulative) tabsShort.push(`${tab}: settled ${settledMax}, newest accepted ${cumulative}`);
      }
      console.log(
        `      ${crashes} crashes, start-up ${Math.round(startMs / Math.max(1, crashes))} ms on average (${[...byCause].map(([k, n]) => `${k} ${n}`).join(", ")}); ` +
          `${accepted.size} of ${items.length} items accepted, ${onChain.size} settled on chain, ` +
          `${rejectedByChain} rejected on chain, lost ${lost}, settled twice ${twice}, store disagrees ${storeDisagrees}`,
      );
      expect(crashes).to.be.at.least(Math.min(CRASHES, 200));
      expect(lost, "accepted items neither settled nor rejected nor superseded").to.equal(0);
      expect(twice, "items settled twice").to.equal(0);
      expect(storeDisagrees, "store status vs chain").to.equal(0);
      expect(tabsShort, "tabs not settled to their newest accepted voucher").to.deep.equal([]);
      const payments = items.flatMap((it, i) => (it.kind === "payment" ? [i] : []));
      expect(
        payments.filter((i) => !accepted.has(i)),
        "payments never accepted",
      ).to.deep.equal([]);
    });
  });
