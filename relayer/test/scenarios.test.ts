/**
 * The demo's scenarios as end-to-end tests: a real `hardhat node`, MachinePay deployed, and the
 * relayer running as its own process (`machinepay relayer start --config FILE`, SQLite in a temp
 * dir, then again with `--store postgres://…`), with devices signing with the SDK and paying over HTTP. Every outcome is asserted from the
 * contract's events (read here with getLogs and the SDK's decoders), not from relayer statuses.
 */
import {
  type Address,
  type BatchInfo,
  decodeMachinePayLog,
  machinePayAbi,
  type PaymentSettledEvent,
  settlementsOf,
  type VoucherSettledEvent,
} from "@machinepay/sdk";
import { expect } from "chai";
import type { Scenario, ScenarioResult, Sizes } from "../../scripts/demo/context";
import { ChainEvents } from "../../scripts/demo/events";
import { type DemoEnvironment, startEnvironment, USDC } from "../../scripts/demo/harness";
import { runScenario } from "../../scripts/demo/run";
import { car, energy, fridge, insurance, onboarding, rental, sensor, stolen } from "../../scripts/demo/scenarios";
import type { CarData } from "../../scripts/demo/scenarios/car";
import type { EnergyData } from "../../scripts/demo/scenarios/energy";
import type { FridgeData } from "../../scripts/demo/scenarios/fridge";
import type { InsuranceData } from "../../scripts/demo/scenarios/insurance";
import type { OnboardingData } from "../../scripts/demo/scenarios/onboarding";
import type { RentalData } from "../../scripts/demo/scenarios/rental";
import type { SensorData } from "../../scripts/demo/scenarios/sensor";
import type { StolenData } from "../../scripts/demo/scenarios/stolen";
import { newSchema, requirePostgres } from "./support/postgres";

const SIZES: Sizes = { devices: 3, payments: 4 };
const lc = (a: string) => a.toLowerCase();

type Located<T> = T & { blockNumber: bigint };

for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`demo scenarios end to end (hardhat node, relayer child process, ${backend}, HTTP)`, function () {
    this.timeout(120_000);
    let env: DemoEnvironment;
    let events: ChainEvents;

    before(async function () {
      // PostgreSQL: `machinepay relayer start --store postgres://…` on a schema of its own.
      const store = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      env = await startEnvironment({ store });
      events = new ChainEvents(env.client, env.deployment.machinePay, env.deployment.deploymentBlock);
    });

    after(async () => {
      await env?.stop();
    });

    async function run<D>(scenario: Scenario<D>): Promise<ScenarioResult<D>> {
      const result = await runScenario(env, events, scenario, { sizes: SIZES });
      expect(
        result.checks.filter((c) => !c.ok).map((c) => `${c.claim} (${c.detail ?? ""})`),
        `${scenario.name}: failed checks`,
      ).to.deep.equal([]);
      return result;
    }

    /** Every log of MachinePay, decoded here (independently of the demo's event reader). */
    async function chain() {
      const logs = await env.client.getLogs({
        address: env.deployment.machinePay,
        fromBlock: BigInt(env.deployment.deploymentBlock),
      });
      const byTx = new Map<string, typeof logs>();
      for (const l of logs) byTx.set(l.transactionHash!, [...(byTx.get(l.transactionHash!) ?? []), l]);
      const payments: Located<PaymentSettledEvent>[] = [];
      const vouchers: Located<VoucherSettledEvent>[] = [];
      for (const txLogs of byTx.values()) {
        for (const s of settlementsOf(txLogs as never, env.deployment.machinePay)) {
          if (s.eventName === "PaymentSettled") payments.push({ ...s, blockNumber: txLogs[0].blockNumber! });
          else vouchers.push({ ...s, blockNumber: txLogs[0].blockNumber! });
        }
      }
      const decoded = logs.map((l) => ({ e: decodeMachinePayLog(l as never), blockNumber: l.blockNumber! }));
      const named = (name: string): (Record<string, unknown> & { blockNumber: bigint })[] =>
        decoded
          .filter((d) => d.e?.eventName === name)
          .map((d) => ({
            ...((d.e as { args?: Record<string, unknown> }).args ?? (d.e as unknown as Record<string, unknown>)),
            blockNumber: d.blockNumber,
          }));
      return { payments, vouchers, named };
    }

    const of = <T extends { device: string }>(xs: T[], devices: string[]) => {
      const set = new Set(devices.map(lc));
      return xs.filter((x) => set.has(lc(x.device)));
    };
    const key = (device: string, nonce: bigint) => `${lc(device)}:${nonce}`;

    it("fridge: refused orders (off the allow-list, over the monthly budget) never appear in PaymentSettled", async () => {
      const { data } = await run<FridgeData>(fridge);
      expect(data.refused.map((r) => r.reason)).to.deep.equal(["PayeeNotAllowed", "ExceedsPeriodCap"]);
      const settled = of((await chain()).payments, data.fridges);
      const keys = new Set(settled.map((p) => key(p.device, p.nonce)));
      for (const r of data.refused)
        expect(keys.has(key(r.device, r.nonce)), `refused nonce ${r.nonce} settled`).to.equal(false);
      expect(settled.filter((p) => lc(p.payee) === lc(data.shop))).to.have.length(0);
      expect(settled).to.have.length(data.accepted.length);
      for (const a of data.accepted) expect(keys.has(key(a.device, a.nonce))).to.equal(true);
      for (const f of data.fridges) {
        const spent = settled.filter((p) => lc(p.device) === lc(f)).reduce((s, p) => s + p.amount, 0n);
        expect(spent <= data.budget).to.equal(true);
      }
    });

    it("car: tolls settle; only the newest voucher of each charging tab settles, and getTab.settled equals it", async () => {
      const { data } = await run<CarData>(car);
      const { payments, vouchers } = await chain();
      const keys = new Set(of(payments, data.cars).map((p) => key(p.device, p.nonce)));
      for (const a of data.accepted) expect(keys.has(key(a.device, a.nonce))).to.equal(true);
      expect(data.overCap.reason).to.equal("ExceedsPaymentCap");
      expect(keys.has(key(data.overCap.device, data.overCap.nonce))).to.equal(false);
      for (const t of data.tabs) {
        expect(t.voucherIds.length).to.equal(SIZES.payments * 3);
        const settled = vouchers.filter((v) => lc(v.device) === lc(t.device) && v.tabId === t.tabId);
        expect(settled.map((v) => v.cumulative)).to.deep.equal([t.newest]);
        const tab = await env.client.readContract({
          address: env.deployment.machinePay,
          abi: machinePayAbi,
          functionName: "getTab",
          args: [t.device, data.charger, env.token, t.tabId],
        });
        expect(tab.settled).to.equal(t.newest);
        expect((await env.relayer.voucherStatus(t.voucherIds[0])).status).to.equal("superseded");
        // On chain first, then `settled` at the relayer once it has followed the receipt.
        const newestId = t.voucherIds[t.voucherIds.length - 1];
        const until = Date.now() + 10_000;
        while ((await env.relayer.voucherStatus(newestId)).status !== "settled" && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
        }
        expect((await env.relayer.voucherStatus(newestId)).status).to.equal("settled");
      }
    });

    it("energy: each reading's payment settles with the reading's hash as ref; thermostats buy only off-peak", async () => {
      const { data } = await run<EnergyData>(energy);
      const settled = of((await chain()).payments, data.meters);
      const byKey = new Map(settled.map((p) => [key(p.device, p.nonce), p]));
      expect(Object.keys(data.readingRefs)).to.have.length(SIZES.devices * SIZES.payments);
      for (const [k, ref] of Object.entries(data.readingRefs)) expect(byKey.get(k)?.ref).to.equal(ref);
      const bought = of((await chain()).payments, data.thermostats);
      expect(bought).to.have.length(SIZES.devices * data.offPeakSlots);
      expect(data.offPeakSlots).to.be.greaterThan(0).and.lessThan(data.slots);
    });

    it("sensor: wallets earn from the buyer's payments and re-spend the earnings, with no deposit and no ether", async () => {
      const { data } = await run<SensorData>(sensor);
      const { payments, named } = await chain();
      for (const [i, w] of data.wallets.entries()) {
        const earned = payments.filter((p) => lc(p.payee) === lc(w)).reduce((s, p) => s + p.amount, 0n);
        const spent = of(payments, [data.sensors[i]]).reduce((s, p) => s + p.amount, 0n);
        expect(earned).to.equal(USDC(0.02) * BigInt(SIZES.payments));
        expect(spent).to.equal(earned / 2n);
        const balance = await env.client.readContract({
          address: env.deployment.machinePay,
          abi: machinePayAbi,
          functionName: "balanceOf",
          args: [w, env.token],
        });
        expect(balance).to.equal(earned - spent);
        expect(await env.client.getBalance({ address: w })).to.equal(0n);
      }
      const deposits = named("Deposited").filter((d) => data.wallets.some((w) => lc(w) === lc(String(d.account))));
      expect(deposits).to.have.length(0);
    });

    it("rental: each tab settles once with its newest voucher before the rental ends; then the keys are expired", async () => {
      const { data } = await run<RentalData>(rental);
      const { vouchers } = await chain();
      for (const t of data.tabs) {
        expect(t.newest > 0n).to.equal(true);
        const settled = vouchers.filter((v) => lc(v.device) === lc(t.device) && v.tabId === t.tabId);
        expect(settled.map((v) => v.cumulative)).to.deep.equal([t.newest]);
        const block = await env.client.getBlock({ blockNumber: settled[0].blockNumber });
        expect(block.timestamp < data.validUntil).to.equal(true);
        expect(t.refusedWith).to.match(/^(PolicyExpired|DEADLINE_TOO_SOON)/);
      }
      expect(data.statusAfter.every((s) => s === "PolicyExpired")).to.equal(true);
    });

    it("insurance: premiums settle under the weekly cap; the one over it never does", async () => {
      const { data } = await run<InsuranceData>(insurance);
      const settled = of((await chain()).payments, data.machines);
      expect(settled).to.have.length(SIZES.devices * SIZES.payments);
      expect(data.extra.reason).to.equal("ExceedsPeriodCap");
      expect(settled.some((p) => key(p.device, p.nonce) === key(data.extra.device, data.extra.nonce))).to.equal(false);
      for (const m of data.machines) {
        expect(
          settled.filter((p) => lc(p.device) === lc(m)).reduce((s, p) => s + p.amount, 0n) <= data.periodCap,
        ).to.equal(true);
      }
    });

    it("stolen: the thief's total is within the caps, and nothing of the fleet settles after the freeze", async () => {
      const { data } = await run<StolenData>(stolen);
      const { payments, named } = await chain();
      const fleet = of(payments, data.drones);
      const stolenTotal = fleet.filter((p) => lc(p.payee) === lc(data.thief)).reduce((s, p) => s + p.amount, 0n);
      expect(stolenTotal).to.equal(data.stolenTotal);
      expect(stolenTotal > 0n && stolenTotal <= data.caps.perDay && stolenTotal <= data.caps.lifetime).to.equal(true);
      for (const p of fleet) expect(p.blockNumber < data.freezeBlock).to.equal(true);
      const frozen = named("OwnerFrozen").filter((e) => lc(String(e.owner)) === lc(env.owners.logistics.address));
      expect(frozen.map((e) => e.blockNumber)).to.deep.equal([data.freezeBlock]);
      expect(data.afterFreeze.reasons).to.deep.equal(["PolicyFrozen"]);
      expect(data.escrowBefore - data.escrowAfter).to.equal(fleet.reduce((s, p) => s + p.amount, 0n));
    });

    it("onboarding: the fleet onboarded by owner signatures appears in DeviceAssigned; the owner has no ether", async () => {
      const { data } = await run<OnboardingData>(onboarding);
      for (const id of data.messages) expect((await env.relayer.onboardingStatus(id)).status).to.equal("confirmed");
      const { named, payments } = await chain();
      const assigned = new Set(
        named("DeviceAssigned")
          .filter((e) => Number(e.policyId) === data.policyId)
          .map((e) => lc(String(e.device))),
      );
      for (const d of data.devices) expect(assigned.has(lc(d)), d).to.equal(true);
      expect(of(payments, data.devices)).to.have.length(data.devices.length);
      expect(data.ownerEther).to.equal(0n);
      expect(data.ownerNonce).to.equal(0);
      const policy = await env.client.readContract({
        address: env.deployment.machinePay,
        abi: machinePayAbi,
        functionName: "getPolicy",
        args: [data.policyId],
      });
      expect(lc(policy.owner)).to.equal(lc(data.owner as Address));
    });

    it("across all scenarios: nothing was skipped on chain, and GET /v1/batches matches the BatchSettled events", async () => {
      const { named } = await chain();
      expect(named("PaymentSkipped")).to.have.length(0);
      expect(named("VoucherSkipped")).to.have.length(0);
      const list = async () => {
        const out: BatchInfo[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await env.relayer.batches({ limit: 500, after });
          out.push(...page.batches);
          if (!page.next) return out;
          after = page.next;
        }
      };
      // The last batch is on chain; the relayer marks it confirmed once it has followed its receipt.
      let batches = await list();
      for (let i = 0; i < 100 && !batches.every((b) => b.status === "confirmed"); i++) {
        await new Promise((r) => setTimeout(r, 100));
        batches = await list();
      }
      const settlement = batches.filter((b) => b.kind === "payment" || b.kind === "voucher");
      expect(settlement.length).to.equal(named("BatchSettled").length);
      expect(batches.filter((b) => b.status !== "confirmed").map((b) => `${b.id}:${b.status}`)).to.deep.equal([]);
    });
  });
