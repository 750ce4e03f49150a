/**
 * Scale-out: three relayer processes, each with its own sender key, on one PostgreSQL database
 * and one `hardhat node`, with load spread over every live one from this process, in two runs:
 *  - "kill": instance 0 takes the first items alone and is killed by its own fault (SIGKILL) right
 *    after broadcasting their batch, and stays down past its lease (the others must watch its
 *    transaction to its receipt and take over its devices), then restarts;
 *  - "connections": instance 0's database sessions are terminated three times while it batches.
 * In both, one device pays through every live instance at once (admission must hold its caps
 * across instances). At the end the three sets of the reliability suite are compared: what was
 * answered accepted, what settled on chain (events), what the store says; and no item is in two
 * batches that both landed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeMachinePayLog, type Hex, type Payment, signPayment, toSignedPaymentJson } from "@machinepay/sdk";
import { expect } from "chai";
import { type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { HARDHAT_KEYS } from "../../scripts/lib/deploy-local";
import { freePort, stopProcess } from "../../scripts/lib/hardhat-node";
import type { PostgresServer } from "../../scripts/lib/postgres";
import { INSTANCE_LEASE_MS } from "../src/batcher";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { newSchema, requirePostgres, sql } from "./support/postgres";

const BIN = join(__dirname, "..", "bin", "machinepay.js");
const INSTANCES = 3;
/** Devices paying at leisure (well inside their caps), and one device hammering its period cap. */
const DEVICES = 24;
const PAYMENTS_PER_DEVICE = 20;
const CAPPED_PAYMENTS = 60;
const CAPPED_AMOUNT = USDC(0.1);
const CAPPED_PERIOD_CAP = USDC(1); // 10 of its payments fit, whichever instance admits them

type Item = { body: unknown; key: string; capped: boolean };
type Instance = { name: string; port: number; config: string; p?: ChildProcess; exited?: Promise<unknown> };

describe("several relayers on one PostgreSQL: no over-acceptance, no overlap, no loss", function () {
  this.timeout(10 * 60_000);
  let pg: PostgresServer;
  let chain: TestChain;
  const instances: Instance[] = [];
  const spawned: ChildProcess[] = []; // every process either run started, stopped at the end

  before(async function () {
    pg = await requirePostgres(this);
    chain = await startTestChain();
  });
  after(async () => {
    for (const p of spawned) await stopProcess(p);
    await chain?.stop();
  });

  /**
   * One chaos run on a fresh schema. "kill": instance 0 is SIGKILLed by its own fault right after its
   * first broadcast, stays down past its lease, then restarts. "connections": every instance stays
   * up; instance 0's database sessions are terminated three times while it batches.
   */
  const chaos = async (mode: "kill" | "connections") => {
    const { schema, url } = await newSchema(pg);
    instances.length = 0;
    for (let n = 0; n < INSTANCES; n++) {
      const name = `relayer-${n}`;
      const port = await freePort();
      const keyFile = join(chain.dir, `${name}.key`);
      // Hardhat's public test keys 5, 6, 7 (funded by `hardhat node`): one sender per instance.
      writeFileSync(keyFile, `${HARDHAT_KEYS[5 + n]}\n`, { mode: 0o600 });
      const config = join(chain.dir, `${name}.json`);
      writeFileSync(
        config,
        JSON.stringify({
          rpcUrl: chain.node.url,
          deployment: chain.deploymentFile,
          // application_name tells this instance's sessions apart (to kill them).
          store: `${url}&application_name=${name}`,
          port,
          sender: { keyFile },
          confirmations: 1,
          batch: { maxAgeMs: 100, pollMs: 50, maxItems: 40 },
          replaceAfterMs: 5_000,
          verifyWorkers: 0,
          logLevel: process.env.SCALE_OUT_LOG ?? "error",
        }),
      );
      instances.push({ name, port, config });
    }

    const { devices } = await chain.fleet(DEVICES, {
      maxPerPayment: USDC(10),
      maxPerPeriod: USDC(10_000),
      lifetimeMax: USDC(100_000),
    });
    const capped = (await chain.fleet(1, { maxPerPayment: USDC(1), maxPerPeriod: CAPPED_PERIOD_CAP })).devices[0];
    const runStart = await chain.client.getBlock(); // this run's events only (both runs share the chain)
    const deadline = runStart.timestamp + 7_200n;
    const items: Item[] = [];
    const sign = async (d: PrivateKeyAccount, nonce: number, amount: bigint, isCapped: boolean) => {
      const payment: Payment = {
        payee: PAYEES[nonce % 3],
        token: chain.usdc,
        amount,
        nonce: BigInt(nonce),
        deadline,
        maxFee: 0n,
        ref: `0x${(items.length + 1).toString(16).padStart(64, "0")}` as Hex,
      };
      const signature = await signPayment({ signer: d, domain: chain.domain, payment });
      items.push({
        body: toSignedPaymentJson(payment, signature),
        key: `${d.address.toLowerCase()}:${nonce}`,
        capped: isCapped,
      });
    };
    for (let n = 0; n < PAYMENTS_PER_DEVICE; n++) {
      for (const d of devices) await sign(d, n, USDC(0.01) + BigInt(n), false);
    }
    // Within the nonce window (24), so only the cap can refuse them.
    for (let n = 0; n < CAPPED_PAYMENTS; n++) await sign(capped, n % 20, CAPPED_AMOUNT + BigInt(n), true);

    const start = async (inst: Instance, fault = "") => {
      const p = spawn(process.execPath, [BIN, "relayer", "start", "--config", inst.config], {
        stdio: ["ignore", process.env.SCALE_OUT_LOG ? "inherit" : "ignore", "pipe"],
        env: { ...process.env, MACHINEPAY_FAULT: fault },
      });
      let err = "";
      p.stderr!.on("data", (c) => (err = (err + c).slice(-4000)));
      inst.p = p;
      spawned.push(p);
      inst.exited = new Promise((r) => p.once("exit", r));
      const until = Date.now() + 60_000;
      for (;;) {
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${inst.name} exited:\n${err}`);
        try {
          if ((await fetch(`http://127.0.0.1:${inst.port}/healthz`)).ok) return;
        } catch {
          // not listening yet
        }
        if (Date.now() > until) throw new Error(`${inst.name} did not start:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    // Instance 0 dies right after broadcasting its first batch (a named fault stage).
    await start(instances[0], mode === "kill" ? "after-broadcast:1" : "");

    // ---- load: items in rounds, each round's requests spread over every live instance ----
    const accepted = new Map<number, Hex>();
    const answered = new Set<number>();
    const live = () => instances.filter((i) => i.p && i.p.exitCode === null && i.p.signalCode === null);
    const post = async (inst: Instance, batch: number[]) => {
      const res = await fetch(`http://127.0.0.1:${inst.port}/v1/payments`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payments: batch.map((i) => items[i].body) }),
      }).catch(() => undefined);
      if (res?.status !== 200) return; // down, shedding or rate-limited: sent again next round
      const body = (await res.json()) as { results: { id: Hex; status: string }[] };
      body.results.forEach((r, j) => {
        answered.add(batch[j]);
        if (r.status !== "rejected") accepted.set(batch[j], r.id);
      });
    };
    const order = [...items.keys()];
    // Instance 0 gets the first items alone, so its batcher (not another's) claims their devices and
    // its fault fires on that batch's broadcast, while the others start and the load goes on.
    await post(instances[0], order.filter((i) => !items[i].capped).slice(0, 30));
    await start(instances[1]);
    await start(instances[2]);
    if (mode === "kill") {
      for (let t = 0; t < 200 && instances[0].p?.signalCode === null; t++) await new Promise((r) => setTimeout(r, 50));
    }
    let round = 0;
    let killedAt = 0; // when instance 0's own fault killed it
    let connectionKills = 0; // instance 0's sessions terminated (mode "connections")
    while (answered.size < items.length) {
      const todo = order.filter((i) => !answered.has(i)).slice(0, 30);
      const targets = live();
      // Every instance gets a share of the capped device's payments at the same moment.
      await Promise.all(
        targets.map((inst, k) =>
          post(
            inst,
            todo.filter((_, j) => j % targets.length === k),
          ),
        ),
      );
      round++;
      if (mode === "connections" && round % 3 === 0 && connectionKills < 3) {
        const r = await sql(
          pg,
          "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE application_name = 'relayer-0'",
        );
        if (r.length > 0) connectionKills++;
      }
      if (!killedAt && instances[0].p?.signalCode) killedAt = Date.now();
      await new Promise((r) => setTimeout(r, 30));
      if (round > 2_000) throw new Error("the load did not finish");
    }
    // ---- instance 0 stays down past its lease: the others follow its batch and take its devices ----
    const diedByFault = killedAt > 0 || instances[0].p?.signalCode === "SIGKILL";
    if (mode === "kill") {
      if (!diedByFault) instances[0].p?.kill("SIGKILL");
      await instances[0].exited;
    }
    const statusOf = async (inst: Instance, id: Hex) =>
      ((await (await fetch(`http://127.0.0.1:${inst.port}/v1/payments/${id}`)).json()) as { status: string }).status;
    const waitSettled = async (timeoutMs: number) => {
      const until = Date.now() + timeoutMs;
      let open = [...accepted.values()];
      while (open.length > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 300));
        const inst = live()[0];
        const next: Hex[] = [];
        for (const id of open) if (!["settled", "rejected"].includes(await statusOf(inst, id))) next.push(id);
        open = next;
      }
      return open;
    };
    const unsettledWithoutZero = await waitSettled(INSTANCE_LEASE_MS + 60_000);
    const batchesOfZero = await sql(
      pg,
      `SELECT b.status, count(*)::int AS n FROM ${schema}.batches b WHERE b.sender = $1 GROUP BY b.status`,
      [privateKeyToAccount(HARDHAT_KEYS[5]).address.toLowerCase()],
    );
    if (mode === "kill") await start(instances[0]);
    const unsettled = await waitSettled(60_000);
    const aliveAtEnd = live().length;
    for (const inst of instances) if (inst.p) await stopProcess(inst.p);

    // ---- three sets ----
    const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: runStart.number });
    const settledKeys: string[] = [];
    for (const log of logs) {
      const e = decodeMachinePayLog(log as never);
      if (e?.eventName === "PaymentSettled") {
        const x = e as { device: Hex; nonce: bigint };
        settledKeys.push(`${x.device.toLowerCase()}:${x.nonce}`);
      }
    }
    const onChain = new Set(settledKeys);
    const twice = settledKeys.length - onChain.size;
    const rows = await sql(pg, `SELECT id, status FROM ${schema}.items`);
    const storeStatus = new Map(rows.map((r) => [r.id as Hex, r.status as string]));
    let lost = 0;
    let disagree = 0;
    let cappedSpend = 0n;
    let cappedAccepted = 0;
    const cappedNonces = new Set<string>();
    for (const [i, id] of accepted) {
      const settled = onChain.has(items[i].key);
      const s = storeStatus.get(id);
      if (!settled && s !== "rejected") lost++;
      if ((s === "settled") !== settled) disagree++;
      if (items[i].capped && s !== "rejected") {
        cappedAccepted++;
        cappedNonces.add(items[i].key);
        cappedSpend += BigInt((items[i].body as { payment: { amount: string } }).payment.amount);
      }
    }
    // No item in two batches that both landed.
    const doubled = await sql(
      pg,
      `SELECT bi.item_id, count(*)::int AS n FROM ${schema}.batch_items bi JOIN ${schema}.batches b ON b.id = bi.batch_id
       WHERE b.status IN ('mined', 'confirmed') GROUP BY bi.item_id HAVING count(*) > 1`,
    );
    const bySender = await sql(
      pg,
      `SELECT sender, count(*)::int AS n FROM ${schema}.batches WHERE status = 'confirmed' GROUP BY sender ORDER BY sender`,
    );
    console.log(
      `      [${mode}] ${accepted.size} of ${items.length} accepted over ${round} rounds; ${onChain.size} settled on chain; ` +
        `lost ${lost}, settled twice ${twice}, store disagrees ${disagree}, in two landed batches ${doubled.length}; ` +
        `capped device: ${cappedAccepted} accepted, ${cappedSpend} of its cap ${CAPPED_PERIOD_CAP}; ` +
        `confirmed batches per instance ${instances
          .map((_, n) => {
            const sender = privateKeyToAccount(HARDHAT_KEYS[5 + n]).address.toLowerCase();
            return `${n}: ${bySender.find((r) => r.sender === sender)?.n ?? 0}`;
          })
          .join(", ")}; ` +
        (mode === "kill"
          ? `instance 0's batches while it was down: ${batchesOfZero.map((r) => `${r.n} ${r.status}`).join(", ")}`
          : `instance 0's sessions terminated ${connectionKills} times, its batches: ${batchesOfZero.map((r) => `${r.n} ${r.status}`).join(", ")}`),
    );
    expect(
      unsettledWithoutZero,
      mode === "kill"
        ? "accepted items the survivors did not settle while instance 0 was down"
        : "accepted items not settled",
    ).to.deep.equal([]);
    expect(unsettled).to.deep.equal([]);
    expect(lost).to.equal(0);
    expect(twice).to.equal(0);
    expect(disagree).to.equal(0);
    expect(doubled).to.deep.equal([]);
    expect(cappedSpend <= CAPPED_PERIOD_CAP, "the capped device was accepted beyond its period cap").to.equal(true);
    expect(cappedAccepted).to.be.greaterThan(0);
    expect(cappedNonces.size, "two payments of one nonce accepted (through two instances)").to.equal(cappedAccepted);
    if (mode === "connections") {
      expect(connectionKills, "instance 0's sessions were not terminated").to.equal(3);
      expect(aliveAtEnd, "an instance died of its lost connections").to.equal(INSTANCES);
      return;
    }
    // Instance 0 died holding a broadcast batch (its fault fired right after the broadcast, before it
    // recorded it); the survivors followed that batch to its end while instance 0 was down.
    expect(diedByFault, "instance 0's fault did not fire during the load").to.equal(true);
    expect(
      batchesOfZero.reduce((n, r) => n + r.n, 0),
      "instance 0 sent no batch before it died",
    ).to.be.greaterThan(0);
    expect(batchesOfZero.filter((r) => ["created", "sent", "mined"].includes(r.status))).to.deep.equal([]);
  };

  it("3 instances, one SIGKILLed mid-batch, down past its lease, restarted: 0 lost, 0 twice, caps held", async () => {
    await chaos("kill");
  });

  it("3 instances, one losing its database connections mid-batch (3 times): 0 lost, 0 twice, caps held", async () => {
    await chaos("connections");
  });
});
