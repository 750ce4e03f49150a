/**
 * Property tests of settleVouchers against the reference model in test/tab-helpers.ts (TabModel):
 * random voucher sequences for a few tabs, delivered in random order, split into random batches at
 * random times, with resubmissions and random submitter fees. Every run starts from a fresh
 * fixture, sets every batch's block time itself and signs with fixed device keys, so the fixed
 * seed replays the same chain history.
 */

import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import fc from "fast-check";
import { ethers } from "hardhat";
import type { Address, PackedVoucher, ReasonName } from "../sdk/src";
import { REASONS } from "../sdk/src";
import { NOTICE_PERIOD } from "./fixtures";
import { domainOf, PROPERTY_TIMEOUT, policyParams, registerDevice } from "./helpers";
import {
  assertVouchersWithinCaps,
  type ModelSettled,
  parseVoucherLogs,
  signVoucherFor,
  type TabCaps,
  TabModel,
  tabDeviceWallet,
  type VoucherSettledLog,
} from "./tab-helpers";

/**
 * Every run's clock starts at START (or, when earlier test files already moved the chain past it,
 * at the next hour after the latest block), so period windows fall at the same place in each run.
 */
const START = 2_000_000_000;
const ALIGN = 3600; // a multiple of every periodLength the generator picks
const DEVICES = ["A", "B"].map(tabDeviceWallet);

/** The tabs of a run: device A has three (two payees, two ids for one payee), device B one. */
const TABS = [
  { device: 0, payee: "payee" as const, tabId: 1n },
  { device: 0, payee: "payee2" as const, tabId: 2n },
  { device: 0, payee: "payee" as const, tabId: 3n },
  { device: 1, payee: "payee" as const, tabId: 1n },
];
const MAX_VOUCHERS_PER_TAB = 5;
const MAX_ITEMS = TABS.length * MAX_VOUCHERS_PER_TAB + 8;

async function tabPropertyFixture() {
  const [owner, relayer, payee, payee2, stranger] = await ethers.getSigners();
  const usdc = await ethers.deployContract("MockUSDC");
  const pay = await ethers.deployContract("MachinePay", [NOTICE_PERIOD]);
  await usdc.mint(owner.address, 1_000_000_000n);
  await usdc.connect(owner).approve(await pay.getAddress(), ethers.MaxUint256);
  const token = (await usdc.getAddress()) as Address;
  return { pay, usdc, token, domain: await domainOf(pay), owner, relayer, payee, payee2, stranger };
}

// -------------------------------------------------------------------------------------------------
// Arbitraries
// -------------------------------------------------------------------------------------------------

const capsArb = fc.record({
  maxPerPayment: fc.integer({ min: 3, max: 40 }),
  maxPerPeriod: fc.integer({ min: 5, max: 60 }),
  lifetimeMax: fc.integer({ min: 10, max: 150 }),
  periodLength: fc.constantFrom(60, 300),
});

/** One tab's vouchers: each adds `inc` (>= 1, so a cumulative names one voucher) and signs a maxFee. */
const tabVouchersArb = fc.array(
  fc.record({ inc: fc.integer({ min: 1, max: 8 }), maxFee: fc.integer({ min: 0, max: 3 }) }),
  { minLength: 1, maxLength: MAX_VOUCHERS_PER_TAB },
);

const feeArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant("zero" as const) },
  { weight: 3, arbitrary: fc.constant("max" as const) },
  { weight: 1, arbitrary: fc.constant("below" as const) },
  { weight: 1, arbitrary: fc.constant("over" as const) },
);

const scenarioArb = fc.record({
  caps: fc.tuple(capsArb, capsArb),
  deposit: fc.integer({ min: 5, max: 200 }),
  tabs: fc.tuple(tabVouchersArb, tabVouchersArb, tabVouchersArb, tabVouchersArb),
  /** Fully random delivery order, or each tab's vouchers mostly in signing order (keys i * 10 + jitter). */
  shuffled: fc.boolean(),
  /** Delivery sort key (or jitter) of each signed voucher (index tab * MAX_VOUCHERS_PER_TAB + i). */
  keys: fc.array(fc.nat(1000), { minLength: MAX_VOUCHERS_PER_TAB * TABS.length, maxLength: 20 }),
  /** Resubmissions of vouchers already signed, slotted into the delivery order by key. */
  extras: fc.array(fc.record({ tab: fc.integer({ min: 0, max: 3 }), pick: fc.nat(), key: fc.nat(1000) }), {
    maxLength: 8,
  }),
  fees: fc.array(feeArb, { minLength: MAX_ITEMS, maxLength: MAX_ITEMS }),
  /** Cut the delivery into a new batch after this position. */
  cuts: fc.array(
    fc.integer({ min: 0, max: 9 }).map((x) => x < 3),
    { minLength: MAX_ITEMS, maxLength: MAX_ITEMS },
  ),
  /** Seconds before each batch (1..5: same window mostly; 50..400: across windows). */
  jumps: fc.array(fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 50, max: 400 })), {
    minLength: MAX_ITEMS + 1,
    maxLength: MAX_ITEMS + 1,
  }),
  feeToStranger: fc.array(fc.boolean(), { minLength: MAX_ITEMS + 1, maxLength: MAX_ITEMS + 1 }),
});
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

// -------------------------------------------------------------------------------------------------
// A run
// -------------------------------------------------------------------------------------------------

type Signed = { tab: number; cumulative: bigint; maxFee: bigint; packed: PackedVoucher };

const counts = new Map<ReasonName, number>();
let tabsAtHighest = 0;
let tabsBelowHighest = 0;

async function run(s: Scenario) {
  const fx = await loadFixture(tabPropertyFixture);
  const { pay, usdc, token, domain, owner, relayer, payee, payee2, stranger } = fx;
  const payees = { payee: payee.address, payee2: payee2.address };
  const caps: TabCaps[] = s.caps.map((c) => ({
    maxPerPayment: BigInt(c.maxPerPayment),
    maxPerPeriod: BigInt(c.maxPerPeriod),
    periodLength: BigInt(c.periodLength),
    lifetimeMax: BigInt(c.lifetimeMax),
  }));
  for (const [i, device] of DEVICES.entries()) {
    await registerDevice(
      pay,
      owner,
      device,
      policyParams(token, {
        maxPerPayment: caps[i].maxPerPayment,
        maxPerPeriod: caps[i].maxPerPeriod,
        lifetimeMax: caps[i].lifetimeMax,
        periodLength: caps[i].periodLength,
      }),
    );
  }
  await pay.connect(owner).deposit(token, BigInt(s.deposit));
  const capsOf = (device: string) => caps[DEVICES.findIndex((d) => d.address.toLowerCase() === device.toLowerCase())];
  const model = new TabModel(owner.address, capsOf);
  model.credit(owner.address, BigInt(s.deposit));

  // Sign every tab's vouchers, in the device's order (cumulative totals strictly increasing).
  const signedByTab: Signed[][] = [];
  for (const [t, tab] of TABS.entries()) {
    let cumulative = 0n;
    const list: Signed[] = [];
    for (const v of s.tabs[t]) {
      cumulative += BigInt(v.inc);
      const spec = {
        payee: payees[tab.payee],
        token,
        tabId: tab.tabId,
        cumulative,
        maxFee: BigInt(v.maxFee),
      };
      list.push({
        tab: t,
        cumulative,
        maxFee: BigInt(v.maxFee),
        packed: await signVoucherFor(domain, DEVICES[tab.device], spec),
      });
    }
    signedByTab.push(list);
  }
  const maxFeeOf = new Map<string, bigint>();
  for (const list of signedByTab) {
    for (const v of list) maxFeeOf.set(`${v.tab}:${v.cumulative}`, v.maxFee);
  }

  // Delivery order: every voucher once, plus resubmissions, sorted by key (stable), then cut into batches.
  const delivery: { v: Signed; key: number }[] = [];
  signedByTab.forEach((list, t) => {
    list.forEach((v, i) => {
      const k = s.keys[t * MAX_VOUCHERS_PER_TAB + i];
      delivery.push({ v, key: s.shuffled ? k : i * 10 + (k % 15) });
    });
  });
  for (const e of s.extras) {
    const list = signedByTab[e.tab];
    const i = e.pick % list.length;
    delivery.push({ v: list[i], key: s.shuffled ? e.key : i * 10 + (e.key % 40) });
  }
  delivery.sort((a, b) => a.key - b.key);
  const batches: { v: Signed; fee: bigint }[][] = [[]];
  delivery.forEach(({ v }, pos) => {
    const choice = s.fees[pos];
    const fee =
      choice === "zero"
        ? 0n
        : choice === "max"
          ? v.maxFee
          : choice === "below"
            ? v.maxFee > 0n
              ? v.maxFee - 1n
              : 0n
            : v.maxFee + 1n;
    batches[batches.length - 1].push({ v, fee });
    if (s.cuts[pos] && pos < delivery.length - 1) batches.push([]);
  });
  // A last sweep: the newest voucher of every tab once more, with no fee.
  batches.push(signedByTab.map((list) => ({ v: list[list.length - 1], fee: 0n })));

  const payAddress = await pay.getAddress();
  const events: (VoucherSettledLog & { t: bigint })[] = [];
  let clock = Math.ceil(Math.max(START, (await time.latest()) + 1) / ALIGN) * ALIGN;
  for (const [b, batch] of batches.entries()) {
    clock += s.jumps[b];
    const submitterIsRecipient = !s.feeToStranger[b];
    const feeRecipient = submitterIsRecipient ? relayer.address : stranger.address;
    const items = batch.map(({ v, fee }) => ({ ...v.packed, terms: withFeeTerms(v.packed.terms, fee) }));

    // The model first: what every item should do, in order, at this block time.
    const expected: ReasonName[] = [];
    const expectedSettled: ModelSettled[] = [];
    for (const { v, fee } of batch) {
      const tab = TABS[v.tab];
      const out = model.apply(
        {
          device: DEVICES[tab.device].address,
          payee: payees[tab.payee],
          tabId: tab.tabId,
          cumulative: v.cumulative,
          maxFee: v.maxFee,
          fee,
        },
        BigInt(clock),
        feeRecipient,
      );
      expected.push(out.reason);
      if (out.settled) expectedSettled.push(out.settled);
      counts.set(out.reason, (counts.get(out.reason) ?? 0) + 1);
    }

    await time.setNextBlockTimestamp(clock);
    const tx = await pay
      .connect(relayer)
      .settleVouchers(token, items, submitterIsRecipient ? ethers.ZeroAddress : stranger.address);
    const receipt = (await tx.wait())!;
    const parsed = parseVoucherLogs(pay, receipt, items.length, payAddress, token);
    expect(
      parsed.reasons.map((r) => REASONS[r]),
      `batch ${b} reasons`,
    ).to.deep.equal(expected);
    const norm = (x: ModelSettled) => ({ ...x, device: x.device.toLowerCase(), payee: x.payee.toLowerCase() });
    expect(
      parsed.settled.map(({ token: t, ...rest }) => {
        expect(t).to.equal(token);
        return norm(rest);
      }),
      `batch ${b} VoucherSettled`,
    ).to.deep.equal(expectedSettled.map(norm));
    for (const e of parsed.settled) events.push({ ...e, t: BigInt(clock) });
  }

  // Caps, from the events alone.
  assertVouchersWithinCaps(events, capsOf);
  // Fees never above what the device signed for that voucher.
  for (const e of events) {
    const t = TABS.findIndex(
      (tab) => DEVICES[tab.device].address === e.device && payees[tab.payee] === e.payee && tab.tabId === e.tabId,
    );
    const maxFee = maxFeeOf.get(`${t}:${e.cumulative}`);
    expect(maxFee !== undefined, "a settled voucher is one the device signed").to.equal(true);
    expect(e.fee <= maxFee!, `fee ${e.fee} <= maxFee ${maxFee}`).to.equal(true);
  }
  // Per tab: what settled is the highest cumulative that settled, never above the highest signed,
  // and the increments paid add up to it.
  for (const [t, tab] of TABS.entries()) {
    const device = DEVICES[tab.device].address;
    const onChain = await pay.getTab(device, payees[tab.payee], token, tab.tabId);
    const mine = events.filter((e) => e.device === device && e.payee === payees[tab.payee] && e.tabId === tab.tabId);
    let highestSettled = 0n;
    for (const e of mine) if (e.cumulative > highestSettled) highestSettled = e.cumulative;
    const highestSigned = signedByTab[t][signedByTab[t].length - 1].cumulative;
    expect(onChain.settled, `tab ${t} settled`).to.equal(model.settled(device, payees[tab.payee], tab.tabId));
    expect(onChain.settled).to.equal(highestSettled);
    expect(mine.reduce((sum, e) => sum + e.increment, 0n)).to.equal(onChain.settled);
    expect(onChain.settled <= highestSigned).to.equal(true);
    if (onChain.settled === highestSigned) tabsAtHighest++;
    else tabsBelowHighest++;
  }
  // Payees received exactly their tabs' totals; every ledger entry is as the model says.
  const accounts = [owner.address, relayer.address, payee.address, payee2.address, stranger.address];
  for (const a of accounts) expect(await pay.balanceOf(a, token), `ledger of ${a}`).to.equal(model.balance(a));
  expect(await pay.balanceOf(payee2.address, token)).to.equal(
    (await pay.getTab(DEVICES[0].address, payee2.address, token, 2n)).settled,
  );
  // Device counters as the model sums them.
  for (const device of DEVICES) {
    const state = await pay.getDevice(device.address);
    const spent = model.spent(device.address, BigInt(clock));
    expect(state.lifetimeSpent, "lifetimeSpent").to.equal(spent.lifetime);
    if (state.periodIndex === BigInt(clock) / capsOf(device.address).periodLength) {
      expect(state.periodSpent, "periodSpent").to.equal(spent.period);
    }
  }
  // The ledger sums to what the contract holds.
  let sum = 0n;
  for (const a of accounts) sum += await pay.balanceOf(a, token);
  expect(sum, "ledger sum").to.equal(await usdc.balanceOf(payAddress));
}

function withFeeTerms(terms: bigint, fee: bigint): bigint {
  const FEE_MASK = ((1n << 96n) - 1n) << 64n;
  return (terms & ~FEE_MASK) | (fee << 64n);
}

describe("tabs: properties over random voucher sequences", () => {
  it("pays each payee exactly the highest cumulative that fit, never more, within caps and maxFee, as the model says", async function () {
    this.timeout(PROPERTY_TIMEOUT);
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => run(s)),
      { numRuns: 100, seed: 20261124 },
    );
    if (process.env.PROPERTY_STATS === "1") {
      console.log(`      ${[...counts].map(([r, n]) => `${r}=${n}`).join(" ")}`);
      console.log(`      tabs at highest: ${tabsAtHighest}, below: ${tabsBelowHighest}`);
    }
    // Not vacuous: the generators reach every reason the model can produce, and both outcomes per tab.
    const reached: ReasonName[] = [
      "None",
      "VoucherStale",
      "FeeAboveMax",
      "ExceedsPaymentCap",
      "ExceedsPeriodCap",
      "ExceedsLifetimeCap",
      "InsufficientBalance",
    ];
    for (const r of reached) expect(counts.get(r) ?? 0, r).to.be.greaterThan(0);
    expect(counts.get("None")).to.be.greaterThan(100);
    expect(tabsAtHighest).to.be.greaterThan(0);
    expect(tabsBelowHighest).to.be.greaterThan(0);
  });
});
