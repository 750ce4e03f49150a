/**
 * Differential test, ingest against the contract: random sequences of payments and vouchers (caps
 * at their boundaries, period rollovers, pauses, freezes, allow-list changes, nonces out of order,
 * an owner's balance running out) go through ingest and through MachinePay's preview on a real
 * node (the item after everything pending, in the order the batcher sends). The verdicts must
 * agree item for item; every item ingest accepted must then settle on chain.
 *
 * Owner actions and time jumps are preceded by a settlement of what is pending (the relayer's
 * documented strictness covers state that changes under pending items; see rules.ts).
 *
 * Ingest reads devices as the relayer does: an untouched one from the store's registry (fed the
 * events after every transaction, before the cache forgets, as the batcher feeds it), the others
 * from the contract. So the registry's word is checked against the contract's verdicts too.
 */
import { join } from "node:path";
import {
  type Address,
  type Hex,
  machinePayAbi,
  type Payment,
  packPayment,
  packVoucher,
  REASONS,
  signEnrollment,
  signPayment,
  signVoucher,
  type Voucher,
} from "@machinepay/sdk";
import { expect } from "chai";
import { createWalletClient, http, toEventSelector } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { HARDHAT_KEYS, mockUsdcAbi } from "../../scripts/lib/deploy-local";
import { deviceEventOf, settlementOrder } from "../src/batcher";
import { ChainClock } from "../src/chain/clock";
import { CachedChainState, readsClient } from "../src/chain/state";
import { Ingest } from "../src/ingest";
import type { VerifyItem } from "../src/ingest/verify";
import { Verifier } from "../src/ingest/verify";
import { openStore } from "../src/store";
import type { Store } from "../src/store/types";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { newSchema, requirePostgres } from "./support/postgres";

const STEPS = Number(process.env.DIFF_STEPS ?? 400);
const PERIOD = 3_600;

function prng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

// The same test on each backend: ingest, its ledger and the batcher behave the same over either store.
for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`ingest agrees with the contract's preview (differential, real node, ${backend})`, function () {
    this.timeout(300_000);
    let chain: TestChain;
    let store: Store;

    before(async function () {
      const url = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      chain = await startTestChain();
      store = await openStore(url ?? join(chain.dir, "diff.db"));
    });
    after(async () => {
      await store?.close();
      await chain?.stop();
    });

    it(`agrees item for item over ${STEPS} random steps, and everything accepted settles`, async () => {
      const rand = prng(20261201);
      const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)];
      const { client, deployment, domain, usdc } = chain;
      const pay = deployment.machinePay;
      const chainDef = { ...hardhat, rpcUrls: { default: { http: [chain.node.url] } } };

      // Owner 1 (deep escrow): policy A, restricted payees, tight caps; owner 2: a small escrow.
      const a = await chain.fleet(4, {
        maxPerPayment: USDC(3),
        maxPerPeriod: USDC(7),
        periodLength: PERIOD,
        lifetimeMax: USDC(40),
        payeesRestricted: true,
      });
      await chain.ownerCall("setPayees", [a.policyId, [PAYEES[0], PAYEES[1]], true]);
      // Account #5: not one of the payees (a payee that is also the owner earns within a batch what
      // it spends, which the relayer does not count on: it would refuse, not mispredict).
      const owner2 = privateKeyToAccount(HARDHAT_KEYS[5]);
      const w2 = createWalletClient({ account: owner2, chain: chainDef, transport: http(chain.node.url) });
      const send2 = async (address: Address, abi: readonly unknown[], functionName: string, args: unknown[]) => {
        const hash = await w2.writeContract({
          address,
          abi: abi as never,
          functionName: functionName as never,
          args: args as never,
        });
        await client.waitForTransactionReceipt({ hash });
      };
      await send2(usdc, mockUsdcAbi(), "mint", [owner2.address, USDC(10_000)]);
      await send2(usdc, mockUsdcAbi(), "approve", [pay, USDC(10_000)]);
      await send2(pay, machinePayAbi, "deposit", [usdc, USDC(25)]);
      const policyB = {
        token: usdc,
        maxPerPayment: USDC(5),
        maxPerPeriod: USDC(50),
        periodLength: PERIOD,
        lifetimeMax: USDC(100),
        validFrom: 0,
        validUntil: 0,
        payeesRestricted: false,
      };
      await send2(pay, machinePayAbi, "createPolicy", [policyB]);
      const policyBId = Number(
        await client.readContract({ address: pay, abi: machinePayAbi, functionName: "policyCount" }),
      );
      const bDevices = [0, 1, 2].map((i) =>
        privateKeyToAccount(`0x${(0xb0b0 + i).toString(16).padStart(64, "0")}` as Hex),
      );
      await send2(pay, machinePayAbi, "assignDevices", [
        policyBId,
        bDevices.map((d) => d.address),
        await Promise.all(bDevices.map((d) => signEnrollment({ signer: d, domain, owner: owner2.address }))),
      ]);

      // The events since the deployment into the registry, as the batcher's pass does.
      let cursor = deployment.deploymentBlock - 1;
      const registryUntouched = new Set<string>();
      async function syncRegistry() {
        const head = Number(await client.getBlockNumber({ cacheTime: 0 })); // viem caches it for 4 s otherwise
        if (head <= cursor) return;
        const logs = (await client.request({
          method: "eth_getLogs",
          params: [{ address: pay, fromBlock: `0x${(cursor + 1).toString(16)}`, toBlock: `0x${head.toString(16)}` }],
        } as never)) as Parameters<typeof deviceEventOf>[0][];
        const events = logs.map(deviceEventOf).filter((e) => e !== undefined);
        const from = cursor + 1;
        await store.setCursor(
          "differential",
          { blockNumber: head, blockHash: null },
          { from, events, fromDeployment: from === deployment.deploymentBlock },
        );
        cursor = head;
      }
      // The relayer's own reads client: view reads folded into deployless multicalls, as in production,
      // and untouched devices from the registry (counted, so the test shows it used it).
      const state = new CachedChainState(
        readsClient(chain.node.url, { multicall: true }),
        pay,
        undefined,
        undefined,
        async (ds) => {
          const answers = await store.untouchedDevices(ds);
          for (const [i, d] of ds.entries()) if (answers[i] !== null) registryUntouched.add(d.toLowerCase());
          return answers;
        },
      );
      await syncRegistry();
      const clock = new ChainClock();
      const ingest = await Ingest.open({
        verifier: new Verifier(domain),
        chain: state,
        store,
        clock,
        deadlineMarginSeconds: 30,
        fee: 0n,
      });
      const sender = privateKeyToAccount(HARDHAT_KEYS[1]);
      const relayerWallet = createWalletClient({ account: sender, chain: chainDef, transport: http(chain.node.url) });

      const nonces = new Map<string, bigint>();
      const tabs = new Map<string, bigint>();
      let pendingKind: "payment" | "voucher" | undefined;
      let pending: {
        id: Hex;
        packed: ReturnType<typeof packPayment> | ReturnType<typeof packVoucher>;
        device: string;
        payee: string;
        nonce: bigint;
        tab?: string;
      }[] = [];
      const counts = { agreed: 0, accepted: 0, settled: 0, byReason: new Map<string, number>() };

      // The batcher's own order (nonce groups, then payee, device, nonce).
      const ordered = (xs = pending) => [...xs].sort((x, y) => settlementOrder(x as never, y as never));
      const observe = async () => clock.observe((await client.getBlock()).timestamp);

      async function flush() {
        if (pending.length === 0) return;
        const items = ordered();
        const hash = await relayerWallet.writeContract({
          address: pay,
          abi: machinePayAbi,
          functionName: pendingKind === "payment" ? "settle" : "settleVouchers",
          args: [usdc, items.map((i) => i.packed), sender.address] as never,
        });
        const receipt = await client.waitForTransactionReceipt({ hash });
        const skipped = receipt.logs.filter((l) => {
          const t = l.topics[0];
          return t === SKIPPED_TOPICS.payment || t === SKIPPED_TOPICS.voucher;
        });
        expect(skipped, "an item ingest accepted was skipped on chain").to.have.length(0);
        counts.settled += items.length;
        ingest.finished(items.map((i) => i.id));
        await syncRegistry();
        state.invalidateAll();
        pending = [];
        pendingKind = undefined;
      }

      async function ownerAction() {
        await flush();
        const d = pick(a.devices);
        switch (Math.floor(rand() * 7)) {
          case 0:
            await chain.ownerCall("setDevicePaused", [d.address, rand() < 0.3]);
            break;
          case 1:
            await chain.ownerCall("setPolicyPaused", [a.policyId, rand() < 0.2]);
            break;
          case 2:
            await chain.ownerCall("freezeAll", []);
            if (rand() < 0.85) {
              await chain.ownerCall("updatePolicy", [
                a.policyId,
                {
                  token: usdc,
                  maxPerPayment: USDC(3),
                  maxPerPeriod: USDC(7),
                  periodLength: PERIOD,
                  lifetimeMax: USDC(40),
                  validFrom: 0,
                  validUntil: 0,
                  payeesRestricted: true,
                },
              ]);
            }
            break;
          case 3:
            await chain.ownerCall("setPayees", [a.policyId, [pick(PAYEES)], rand() < 0.5]);
            break;
          case 4:
          case 5: {
            // Time: within the period, or across one or more period boundaries.
            const seconds = rand() < 0.5 ? 60 + Math.floor(rand() * 600) : PERIOD + Math.floor(rand() * PERIOD);
            await client.request({ method: "evm_increaseTime" as never, params: [seconds] as never });
            await client.request({ method: "evm_mine" as never, params: [] as never });
            break;
          }
          default:
            await send2(pay, machinePayAbi, "deposit", [usdc, USDC(10 + Math.floor(rand() * 20))]);
        }
        await syncRegistry();
        state.invalidateAll();
      }

      async function preview(kind: "payment" | "voucher", items: typeof pending): Promise<string> {
        const { result } = await client.simulateContract({
          address: pay,
          abi: machinePayAbi,
          functionName: kind === "payment" ? "preview" : "previewVouchers",
          args: [usdc, items.map((i) => i.packed), sender.address] as never,
          account: sender.address,
          blockTag: "pending",
        });
        const reasons = (result as unknown as [readonly number[]])[0];
        return REASONS[reasons[reasons.length - 1]];
      }

      for (let step = 0; step < STEPS; step++) {
        const r = rand();
        if (r < 0.12) {
          await ownerAction();
          continue;
        }
        const kind: "payment" | "voucher" = rand() < 0.7 ? "payment" : "voucher";
        if (pendingKind && pendingKind !== kind) await flush();
        if (r > 0.95) await flush();
        await observe();
        // Owner 2's small escrow runs out now and then; most traffic is owner 1's fleet.
        const device = rand() < 0.25 ? pick(bDevices) : pick(a.devices);
        const key = device.address.toLowerCase();
        const now = clock.now();
        const payee = rand() < 0.85 ? pick(PAYEES.slice(0, 2)) : PAYEES[2];
        let item: VerifyItem;
        let packed: (typeof pending)[number]["packed"];
        let nonce = 0n;
        let tab: string | undefined;
        if (kind === "payment") {
          const next = nonces.get(key) ?? 0n;
          // Mostly the next nonce; sometimes a gap, an old one, or a repeat.
          const roll = rand();
          nonce =
            roll < 0.75
              ? next
              : roll < 0.85
                ? next + BigInt(1 + Math.floor(rand() * 30))
                : roll < 0.95 && next > 0n
                  ? next - 1n - BigInt(Math.floor(rand() * 30))
                  : next;
          if (nonce < 0n) nonce = 0n;
          if (nonce >= next) nonces.set(key, nonce + 1n);
          const amount = pick([USDC(0.5), USDC(1), USDC(2), USDC(3), USDC(3.01), USDC(4), USDC(5)]);
          const payment: Payment = {
            payee,
            token: usdc,
            amount,
            nonce,
            deadline: now + 900n,
            maxFee: 0n,
            ref: `0x${step.toString(16).padStart(64, "0")}` as Hex,
          };
          const signature = await signPayment({ signer: device, domain, payment });
          item = { kind: "payment", payment, signature };
          packed = packPayment(payment, signature);
        } else {
          const tabId = BigInt(rand() < 0.8 ? 0 : 1);
          tab = `${key}:${payee}:${tabId}`;
          const last = tabs.get(tab) ?? 0n;
          const cumulative =
            rand() < 0.25 && last > 0n ? last - USDC(0.25) : last + pick([USDC(0.25), USDC(1), USDC(2.5), USDC(4)]);
          const voucher: Voucher = {
            payee,
            token: usdc,
            tabId,
            cumulative: cumulative < 0n ? 0n : cumulative,
            deadline: now + 900n,
            maxFee: 0n,
          };
          const signature = await signVoucher({ signer: device, domain, voucher });
          item = { kind: "voucher", voucher, signature };
          packed = packVoucher(voucher, signature);
        }
        const [result] = await ingest.submit([item]);
        // The contract's verdict for this item after everything pending (a replaced voucher is out).
        const candidate = { id: result.id!, packed, device: key, payee: payee.toLowerCase(), nonce, tab };
        const others = pending.filter((p) => !(tab && p.tab === tab));
        const contract = await preview(kind, [...ordered(others), candidate]);
        const ours = result.status === "accepted" ? "None" : result.reason!;
        if (process.env.DIFF_DEBUG && ours !== contract) {
          const owners = new Map<string, bigint>();
          for (const e of ingest.ledger.entries()) owners.set(e.owner, (owners.get(e.owner) ?? 0n) + e.spend);
          console.log({
            step,
            ours,
            contract,
            pending: pending.map((p) => [p.device.slice(0, 8), p.nonce, p.tab]),
            ledger: [...ingest.ledger.entries()].map((e) => [
              e.device.slice(0, 8),
              e.owner.slice(0, 8),
              e.spend,
              e.nonce,
              e.kind,
            ]),
            owners,
          });
        }
        expect(
          ours,
          `step ${step}: ${kind} of ${key} (nonce ${nonce}, tab ${tab}): ingest says ${ours} (${result.message}), the contract ${contract}`,
        ).to.equal(contract);
        counts.agreed++;
        counts.byReason.set(ours, (counts.byReason.get(ours) ?? 0) + 1);
        if (result.status === "accepted") {
          counts.accepted++;
          pending = [...others, candidate];
          pendingKind = kind;
          if (tab) tabs.set(tab, (item as { voucher: Voucher }).voucher.cumulative);
        }
      }
      await flush();
      console.log(
        `      ${counts.agreed} verdicts agreed, ${counts.settled} items settled; by verdict: ${JSON.stringify(Object.fromEntries(counts.byReason))}`,
      );
      // Devices were read from the registry (their first payments, before anything touched them).
      expect(registryUntouched.size, "devices whose word came from the registry").to.be.at.least(3);
      // The sequence must have exercised the interesting verdicts, not just "None".
      const seen = [...counts.byReason.keys()];
      for (const reason of [
        "None",
        "ExceedsPaymentCap",
        "ExceedsPeriodCap",
        "PayeeNotAllowed",
        "NonceUsed",
        "VoucherStale",
      ]) {
        expect(seen, `no step produced ${reason}`).to.include(reason);
      }
      expect(counts.settled).to.equal(counts.accepted);
    });
  });

// Topics of the skip events: an accepted item must never produce one.
const SKIPPED_TOPICS = {
  payment: toEventSelector("PaymentSkipped(uint256,address,uint8)"),
  voucher: toEventSelector("VoucherSkipped(uint256,address,uint8)"),
};
