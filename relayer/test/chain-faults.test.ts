/**
 * Chain faults: the relayer talks to a real `hardhat node` through a fault-injecting JSON-RPC
 * proxy (support/rpc-proxy.ts) that delays and drops calls, drops answers after forwarding (the
 * transaction went out, the relayer never heard), answers "nonce too low", "already known",
 * "replacement transaction underpriced", and goes down. On the node itself: a stuck transaction
 * (automine off) is replaced with higher fees at the same nonce, a reorg (evm_snapshot/evm_revert
 * after the batch was mined) puts its items back and they settle again, a batch that reverts has
 * its items checked and batched again, and a sender without gas money shows on /readyz. Every case ends with the same check: each accepted payment settled on
 * the canonical chain exactly once, and the store says `settled`.
 */
import { join } from "node:path";
import { decodeMachinePayLog, type Hex, type Payment, signPayment, toSignedPaymentJson } from "@machinepay/sdk";
import { expect } from "chai";
import type { PrivateKeyAccount } from "viem/accounts";
import { loadConfig } from "../src/config";
import { type RunningRelayer, startRelayer } from "../src/service";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { newSchema, requirePostgres } from "./support/postgres";
import { RpcProxy } from "./support/rpc-proxy";

// The same tests on each backend.
for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`relayer under chain faults (fault-injecting RPC proxy, real node, ${backend})`, function () {
    this.timeout(180_000);
    let chain: TestChain;
    let proxy: RpcProxy;
    let relayer: RunningRelayer;
    let devices: PrivateKeyAccount[];
    const nonces = new Map<string, bigint>();
    const all: { device: string; nonce: bigint; id: Hex }[] = [];

    const node = (method: string, params: unknown[] = []) =>
      chain.client.request({ method: method as never, params: params as never });

    before(async function () {
      const url = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      chain = await startTestChain();
      proxy = await new RpcProxy(chain.node.url).start();
      ({ devices } = await chain.fleet(8, { maxPerPeriod: USDC(10_000), lifetimeMax: USDC(100_000) }));
      const config = loadConfig({
        overrides: {
          rpcUrl: proxy.url,
          deployment: chain.deploymentFile,
          store: url ?? join(chain.dir, "faults.db"),
          port: 0,
          "sender.dev": true,
          confirmations: 2,
          "batch.maxAgeMs": 100,
          "batch.pollMs": 40,
          replaceAfterMs: 1_500,
          verifyWorkers: 0,
          logLevel: "silent",
        },
      });
      relayer = await startRelayer({ config });
    });

    after(async () => {
      await relayer?.stop(1_000);
      await proxy?.stop();
      await chain?.stop();
    });

    afterEach(() => proxy.clear());

    /** Sign and submit `n` payments (spread over the devices); every one must be accepted. */
    async function pay(n: number): Promise<Hex[]> {
      const deadline = (await chain.client.getBlock()).timestamp + 3_600n;
      const body = [];
      const meta: { device: string; nonce: bigint }[] = [];
      for (let i = 0; i < n; i++) {
        const d = devices[i % devices.length];
        const nonce = nonces.get(d.address) ?? 0n;
        nonces.set(d.address, nonce + 1n);
        const payment: Payment = {
          payee: PAYEES[i % 3],
          token: chain.usdc,
          amount: USDC(0.01),
          nonce,
          deadline,
          maxFee: 0n,
          ref: `0x${(all.length + i + 1).toString(16).padStart(64, "0")}` as Hex,
        };
        body.push(toSignedPaymentJson(payment, await signPayment({ signer: d, domain: chain.domain, payment })));
        meta.push({ device: d.address.toLowerCase(), nonce });
      }
      for (let attempt = 0; ; attempt++) {
        const res = await fetch(`${relayer.url}/v1/payments`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ payments: body }),
        });
        if (res.status === 503 && attempt < 50) {
          await new Promise((r) => setTimeout(r, 200)); // chain unreachable for admission: retry the same items
          continue;
        }
        const answer = (await res.json()) as { results: { id: Hex; status: string; reason?: string }[] };
        expect(res.status, JSON.stringify(answer)).to.equal(200);
        const ids = answer.results.map((r) => {
          expect(r.status, JSON.stringify(r)).to.equal("accepted");
          return r.id;
        });
        for (const [i, id] of ids.entries()) all.push({ ...meta[i], id });
        return ids;
      }
    }

    /** Wait until every id is `settled`, mining an empty block now and then (confirmations: 2). */
    async function settled(ids: Hex[], timeoutMs = 60_000): Promise<void> {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const statuses = await Promise.all(
          ids.map(
            async (id) =>
              ((await (await fetch(`${relayer.url}/v1/payments/${id}`)).json()) as { status: string }).status,
          ),
        );
        if (statuses.every((s) => s === "settled")) return;
        if (Date.now() > until) throw new Error(`not settled: ${statuses.join(",")}`);
        await node("evm_mine");
        await new Promise((r) => setTimeout(r, 150));
      }
    }

    /** Each accepted payment appears exactly once among the canonical chain's PaymentSettled events. */
    async function settledOnceEach(): Promise<void> {
      const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
      const seen = new Map<string, number>();
      for (const log of logs) {
        const e = decodeMachinePayLog(log as never);
        if (e?.eventName !== "PaymentSettled") continue;
        const x = e as { device: Hex; nonce: bigint };
        const k = `${x.device.toLowerCase()}:${x.nonce}`;
        seen.set(k, (seen.get(k) ?? 0) + 1);
      }
      const wrong = all.filter((p) => seen.get(`${p.device}:${p.nonce}`) !== 1);
      expect(wrong, "payments not settled exactly once").to.deep.equal([]);
    }

    it("the answer to eth_sendRawTransaction is lost after the node took it: settles once", async () => {
      proxy.inject("eth_sendRawTransaction", { kind: "dropAnswer" }, 2);
      const ids = await pay(12);
      await settled(ids);
      expect(proxy.count("eth_sendRawTransaction", "dropAnswer")).to.be.at.least(1);
      await settledOnceEach();
    });

    it('"nonce too low", "already known" and "replacement transaction underpriced" answers: settles once', async () => {
      proxy.inject("eth_sendRawTransaction", { kind: "error", message: "nonce too low" }, 2);
      proxy.inject("eth_sendRawTransaction", { kind: "error", message: "already known" }, 2);
      proxy.inject("eth_sendRawTransaction", { kind: "error", message: "replacement transaction underpriced" }, 2);
      const ids = await pay(12);
      await settled(ids);
      expect(proxy.count("eth_sendRawTransaction", "error")).to.be.at.least(3);
      await settledOnceEach();
    });

    it("dropped and delayed calls, then the node down for 3 s: settles once after it is back", async () => {
      proxy.inject("*", { kind: "drop" }, 5);
      proxy.inject("eth_getTransactionReceipt", { kind: "delay", ms: 1_500 }, 3);
      const before = await pay(8);
      proxy.down = true;
      await new Promise((r) => setTimeout(r, 3_000));
      proxy.down = false;
      const after = await pay(8);
      await settled([...before, ...after]);
      await settledOnceEach();
    });

    it("a stuck transaction is replaced at the same nonce with higher fees; one attempt lands", async () => {
      await node("evm_setAutomine", [false]);
      let batchId: number | undefined;
      try {
        const ids = await pay(6);
        const until = Date.now() + 30_000;
        // Wait for the batch to get a second attempt (replaceAfterMs 1.5 s).
        for (;;) {
          const item = (await (await fetch(`${relayer.url}/v1/payments/${ids[0]}`)).json()) as { batchId?: number };
          batchId = item.batchId;
          if (batchId !== undefined) {
            const b = (await (await fetch(`${relayer.url}/v1/batches/${batchId}`)).json()) as {
              attempts: { nonce: number; maxFeePerGas: string }[];
            };
            if (b.attempts.length >= 2) {
              expect(new Set(b.attempts.map((a) => a.nonce)).size, "one nonce for every attempt").to.equal(1);
              expect(BigInt(b.attempts[1].maxFeePerGas) > BigInt(b.attempts[0].maxFeePerGas)).to.equal(true);
              break;
            }
          }
          if (Date.now() > until) throw new Error("no replacement was sent");
          await new Promise((r) => setTimeout(r, 200));
        }
        await node("evm_setAutomine", [true]);
        await node("evm_mine");
        await settled(ids);
      } finally {
        await node("evm_setAutomine", [true]);
      }
      const b = (await (await fetch(`${relayer.url}/v1/batches/${batchId}`)).json()) as {
        txHash: Hex;
        attempts: { hash: Hex }[];
      };
      expect(b.attempts.map((a) => a.hash)).to.include(b.txHash);
      await settledOnceEach();
    });

    it("a reorg takes the mined batch off the chain: its items go back and settle again, once", async () => {
      const snapshot = await node("evm_snapshot");
      const ids = await pay(6);
      // Mined (automine) but not confirmed (confirmations: 2 and no further block yet).
      const until = Date.now() + 30_000;
      let minedIn: number | undefined;
      for (;;) {
        const item = (await (await fetch(`${relayer.url}/v1/payments/${ids[0]}`)).json()) as {
          status: string;
          blockNumber?: number;
        };
        if (item.blockNumber !== undefined) {
          minedIn = item.blockNumber;
          break;
        }
        if (Date.now() > until) throw new Error("the batch was not mined");
        await new Promise((r) => setTimeout(r, 50));
      }
      await node("evm_revert", [snapshot]);
      // A new chain past the old block: the batch's block hash is gone.
      for (let i = 0; i < 3; i++) await node("evm_mine");
      expect(Number(await chain.client.getBlockNumber())).to.be.greaterThan(minedIn!);
      await settled(ids);
      const again = (await (await fetch(`${relayer.url}/v1/payments/${ids[0]}`)).json()) as { blockNumber: number };
      expect(again.blockNumber, "settled in a block of the new chain").to.be.greaterThan(minedIn!);
      // The payments made before the snapshot are still on chain once; the reverted ones once again.
      await settledOnceEach();
    });

    it("a batch that reverts on chain: its items are checked again, re-batched, and settle once", async () => {
      const code = (await node("eth_getCode", [chain.deployment.machinePay, "latest"])) as Hex;
      await node("evm_setAutomine", [false]);
      let batchId: number | undefined;
      try {
        const ids = await pay(6);
        const until = Date.now() + 30_000;
        for (;;) {
          const item = (await (await fetch(`${relayer.url}/v1/payments/${ids[0]}`)).json()) as {
            status: string;
            batchId?: number;
          };
          if (item.status === "submitted") {
            batchId = item.batchId;
            break;
          }
          if (Date.now() > until) throw new Error("the batch was not sent");
          await new Promise((r) => setTimeout(r, 50));
        }
        // The contract's code now reverts everything (PUSH1 0 PUSH1 0 REVERT): the pending batch reverts.
        await node("hardhat_setCode", [chain.deployment.machinePay, "0x60006000fd"]);
        await node("evm_mine");
        await node("hardhat_setCode", [chain.deployment.machinePay, code]);
        await node("evm_setAutomine", [true]);
        await settled(ids);
        const first = (await (await fetch(`${relayer.url}/v1/batches/${batchId}`)).json()) as { status: string };
        expect(first.status).to.equal("reverted");
        const now = (await (await fetch(`${relayer.url}/v1/payments/${ids[0]}`)).json()) as { batchId: number };
        expect(now.batchId).to.not.equal(batchId);
      } finally {
        await node("hardhat_setCode", [chain.deployment.machinePay, code]);
        await node("evm_setAutomine", [true]);
      }
      await settledOnceEach();
    });

    it("a payment the chain refuses by the time its batch is previewed leaves with the contract's reason, counted as a misprediction", async () => {
      // Accepted while its device was active; the node down for the relayer right after the answer
      // (before the batch's age of 100 ms), and the device paused on the node itself meanwhile: the
      // preview on `pending` sees the pause that admission never did.
      const {
        devices: [lone],
      } = await chain.fleet(1);
      const payment: Payment = {
        payee: PAYEES[0],
        token: chain.usdc,
        amount: USDC(0.5),
        nonce: 0n,
        deadline: (await chain.client.getBlock()).timestamp + 3_600n,
        maxFee: 0n,
        ref: `0x${"0d".repeat(32)}` as Hex,
      };
      const body = toSignedPaymentJson(payment, await signPayment({ signer: lone, domain: chain.domain, payment }));
      const metric = async () =>
        Number(
          (await (await fetch(`${relayer.url}/metrics`)).text()).match(
            /^machinepay_ingest_mispredictions_total\{reason="DevicePaused"\} (\d+)$/m,
          )?.[1] ?? 0,
        );
      const before = await metric();
      const res = await fetch(`${relayer.url}/v1/payments`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payments: [body] }),
      });
      proxy.down = true;
      const [answer] = ((await res.json()) as { results: { id: Hex; status: string }[] }).results;
      expect(answer.status).to.equal("accepted");
      await chain.ownerCall("setDevicePaused", [lone.address, true]);
      proxy.down = false;
      const until = Date.now() + 30_000;
      let item: { status: string; reason?: string; message?: string };
      for (;;) {
        item = (await (await fetch(`${relayer.url}/v1/payments/${answer.id}`)).json()) as typeof item;
        if (item.status !== "accepted" && item.status !== "batched") break;
        if (Date.now() > until) throw new Error(`still ${item.status}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(item).to.include({ status: "rejected", reason: "DevicePaused" });
      expect(item.message).to.match(/preview refused it before sending/);
      expect(await metric()).to.equal(before + 1);
      const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
      const settledForLone = logs.filter((log) => {
        const e = decodeMachinePayLog(log as never) as { eventName?: string; device?: Hex } | undefined;
        return e?.eventName === "PaymentSettled" && e.device?.toLowerCase() === lone.address.toLowerCase();
      });
      expect(settledForLone).to.deep.equal([]);
      await settledOnceEach();
    });

    it("a sender without gas money shows on /readyz; nothing is lost, and it settles once funded", async () => {
      const sender = relayer.sender;
      const balance = await chain.client.getBalance({ address: sender });
      await node("hardhat_setBalance", [sender, "0x0"]);
      try {
        const ids = await pay(6);
        const until = Date.now() + 20_000;
        for (;;) {
          const res = await fetch(`${relayer.url}/readyz`);
          const body = JSON.stringify(await res.json());
          if (res.status === 503 && /senderFunded/.test(body)) break;
          if (Date.now() > until) throw new Error(`readyz never reported the sender: ${res.status} ${body}`);
          await new Promise((r) => setTimeout(r, 200));
        }
        for (const id of ids) {
          const s = ((await (await fetch(`${relayer.url}/v1/payments/${id}`)).json()) as { status: string }).status;
          expect(["accepted", "batched", "submitted"]).to.include(s);
        }
        await node("hardhat_setBalance", [sender, `0x${balance.toString(16)}`]);
        await settled(ids);
        expect((await fetch(`${relayer.url}/readyz`)).status).to.equal(200);
      } finally {
        await node("hardhat_setBalance", [sender, `0x${balance.toString(16)}`]);
      }
      await settledOnceEach();
    });
  });
