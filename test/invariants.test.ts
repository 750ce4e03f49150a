/**
 * Invariant suite: random sequences of every kind of operation against a fresh deployment, with
 * the invariants of test/invariant-model.ts checked after every step from the contract's events
 * and views only (no model predicts which item settles).
 *
 * Each run: three owners, two payees, a relayer, a fee recipient and a stranger; eight device keys;
 * two MockUSDC deployments and the native coin. Steps: deposits (own and for others, native
 * included), policy creates and updates (broken parameters too), device registrations and moves
 * (with Enrollment proofs, some forged), payee lists, pauses and resumes of devices and policies,
 * freezes, revocations, owner-signed onboardings and revocations (stale epochs, replayed nonces,
 * expired deadlines), settle batches (caps at their boundaries, nonces in and out of the window,
 * replays, high-s and tampered items, fees at, under and over maxFee), voucher batches (increasing,
 * stale and replayed cumulatives), tab closes by payee, owner, device signature and stranger,
 * withdrawal announcements, executions (just before, at and after readyAt), cancellations and
 * immediate withdrawals, and time jumps (seconds, period boundaries, the notice period).
 *
 * The fixed seed and fixed keys replay the same chain history: every transaction's block time is
 * set, relative to a run start aligned to the hour. INVARIANT_RUNS, INVARIANT_STEPS (the mean
 * number of steps per run) and INVARIANT_SEED change the size and seed (a longer hunt:
 * INVARIANT_RUNS=400 INVARIANT_SEED=1); INVARIANT_PATH with the seed of a failure report replays its
 * counterexample alone; INVARIANT_STATS=1 prints what the runs exercised.
 */

import { loadFixture, type SnapshotRestorer, takeSnapshot, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet, ContractTransactionResponse, ErrorFragment, Interface } from "ethers";
import fc from "fast-check";
import { ethers, network } from "hardhat";
import {
  type Address,
  type DeviceProof,
  type Hex,
  LIMITS,
  type Onboarding,
  type PackedPayment,
  type PackedVoucher,
  type Payment,
  type PolicyParams,
  packPayment,
  packVoucher,
  paymentTypes,
  type Revocation,
  tabCloseTypes,
  toCompactSignature,
  type Voucher,
  voucherTypes,
} from "../sdk/src";
import type { MachinePay, MockUSDC } from "../typechain-types";
import type { IMachinePay } from "../typechain-types/contracts/MachinePay";
import { onboardingArgs, revocationArgs, signOrder } from "./admin-helpers";
import { NOTICE_PERIOD } from "./fixtures";
import { domainOf, enrollmentFor, PROPERTY_TIMEOUT } from "./helpers";
import {
  compareViews,
  type DeviceView,
  decodeEvents,
  EventMirror,
  InvariantViolation,
  key,
  type MachinePayEvent,
  NATIVE,
  nonceFields,
  type PolicyFields,
  policyFieldsOf,
  type SubmittedPayment,
  type SubmittedVoucher,
  Tally,
  type TxContext,
  tabKeyOf,
  type ViewSnapshot,
} from "./invariant-model";

const RUNS = Number(process.env.INVARIANT_RUNS ?? 40);
/** Steps per run on average: each run has 1 to 2 * STEPS - 1 (a failure shrinks to the few it needs). */
const STEPS = Number(process.env.INVARIANT_STEPS ?? 30);
const SEED = Number(process.env.INVARIANT_SEED ?? 20261201);
/** fast-check's `path` from a failure report: with INVARIANT_SEED, replays that counterexample alone. */
const PATH = process.env.INVARIANT_PATH;
const STATS = process.env.INVARIANT_STATS === "1";
/**
 * Mocha's limit for the property, and fast-check's a minute earlier: shrinking replays whole runs,
 * so a long shrink is cut short and reported with the smallest counterexample found so far (and a
 * run that is merely slow fails as interrupted instead of passing with fewer runs).
 */
const TIMEOUT_MS = Math.max(PROPERTY_TIMEOUT, RUNS * STEPS * 300);

/** Runs start at the first hour at or after this (or after the latest block, if later). */
const START = 2_000_000_000n;
const ALIGN = 3600n; // a multiple of every periodLength the generators pick
const NOTICE = BigInt(NOTICE_PERIOD);
const ZERO = ethers.ZeroAddress as Address;
const FAR = 1_000_000n;
const U64 = (1n << 64n) - 1n;

/** Accounts by index: 0-2 own policies, 3-4 are payees (they never own one), then three roles. */
const ACCOUNT_NAMES = ["O0", "O1", "O2", "P0", "P1", "relayer", "feeRecipient", "stranger"] as const;
const RELAYER = 5;
const FEE_RECIPIENT = 6;
const STRANGER = 7;
/** Who a payment may pay: payees, owners (machines earn and spend), the stranger, address(0). */
const PAYEE_CHOICES = [3, 4, 0, 1, 2, 7, -1] as const;
/** Tabs run to P0, P1 or O2 (an owner as payee). */
const TAB_PAYEES = [3, 4, 2] as const;
const DEVICES = Array.from(
  { length: 8 },
  (_, i) => new ethers.Wallet(ethers.id(`machinepay-invariant-device:${i}`)) as unknown as BaseWallet,
);

// ethers wants mutable field lists; the SDK's are readonly.
const PAYMENT_TYPES = { Payment: [...paymentTypes.Payment] };
const VOUCHER_TYPES = { Voucher: [...voucherTypes.Voucher] };
const TAB_CLOSE_TYPES = { TabClose: [...tabCloseTypes.TabClose] };
const HIGH_S: Hex = `0x${((1n << 255n) - 1n).toString(16)}`;

async function invariantFixture() {
  const signers = (await ethers.getSigners()).slice(0, ACCOUNT_NAMES.length);
  const pay = await ethers.deployContract("MachinePay", [NOTICE_PERIOD]);
  const usdc0 = await ethers.deployContract("MockUSDC");
  const usdc1 = await ethers.deployContract("MockUSDC");
  const payAddress = await pay.getAddress();
  for (const token of [usdc0, usdc1]) {
    for (const s of signers.slice(0, 5)) {
      await token.mint(s.address, 1n << 70n);
      await token.connect(s).approve(payAddress, ethers.MaxUint256);
    }
  }
  const tokens = [await usdc0.getAddress(), await usdc1.getAddress(), ZERO] as Address[];
  return { pay, payAddress, erc20s: [usdc0, usdc1], tokens, signers, domain: await domainOf(pay) };
}
type Fixture = Awaited<ReturnType<typeof invariantFixture>>;

// -------------------------------------------------------------------------------------------------
// Arbitraries
// -------------------------------------------------------------------------------------------------

const w = <T>(weight: number, arbitrary: fc.Arbitrary<T>) => ({ weight, arbitrary });
const tokenArb = fc.oneof(w(6, fc.constant(0)), w(2, fc.constant(1)), w(2, fc.constant(2)));
/** A batch's token: mostly that of its first item's device (null), so that items settle. */
const batchTokenArb = fc.oneof(w(3, fc.constant(null)), w(1, tokenArb));
const ownerArb = fc.integer({ min: 0, max: 2 });
const deviceArb = fc.oneof(
  w(6, fc.constant(0)),
  w(4, fc.constant(1)),
  w(4, fc.constant(2)),
  w(4, fc.constant(3)),
  w(1, fc.integer({ min: 4, max: 7 })),
);
/** An item's signer: one whose policy pays in the batch's token (when `match` and there is one), or `index`. */
const signerArb = fc.record({
  match: fc.oneof(w(3, fc.constant(true)), w(2, fc.constant(false))),
  index: deviceArb,
  pick: fc.nat(),
});
const devicesArb = fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 3 });

const paramsArb = fc.record({
  token: tokenArb,
  maxPerPayment: fc.integer({ min: 2, max: 30 }),
  maxPerPeriod: fc.integer({ min: 5, max: 80 }),
  // Mostly within reach of a few payments, so that runs reach the lifetime cap.
  lifetimeMax: fc.oneof(w(2, fc.integer({ min: 5, max: 60 })), w(1, fc.integer({ min: 61, max: 400 }))),
  periodLength: fc.constantFrom(10, 60, 3600),
  /** validFrom, seconds after the step's time (null: 0). */
  validFrom: fc.oneof(w(6, fc.constant(null)), w(1, fc.integer({ min: 0, max: 600 }))),
  /** validUntil, seconds after validFrom (null: 0, no end). */
  validFor: fc.oneof(w(6, fc.constant(null)), w(1, fc.integer({ min: 1, max: 400_000 }))),
  payeesRestricted: fc.oneof(w(10, fc.constant(false)), w(1, fc.constant(true))),
  broken: fc.oneof(w(20, fc.constant("none" as const)), w(1, fc.constantFrom("period0" as const, "validity" as const))),
  /** Huge: every cap is 2^64 - 1 less the small value, so that amounts cross the uint64 caps' limit. */
  huge: fc.oneof(w(12, fc.constant(false)), w(1, fc.constant(true))),
});
type ParamsSpec = typeof paramsArb extends fc.Arbitrary<infer T> ? T : never;

const feeArb = fc.oneof(
  w(3, fc.constant("zero" as const)),
  w(3, fc.constant("max" as const)),
  w(1, fc.constant("below" as const)),
  w(1, fc.constant("over" as const)),
);
/** Seconds from the batch's block time to the deadline. */
const deadlineArb = fc.oneof(
  w(6, fc.constant(FAR)),
  w(2, fc.bigInt({ min: 1n, max: 600n })),
  w(1, fc.bigInt({ min: -1n, max: 1n })),
);
/** amount + fee: a small absolute value, or at, just under or just over one of the device's bounds. */
const totalArb = fc.oneof(
  w(2, fc.record({ kind: fc.constant("abs" as const), value: fc.integer({ min: 0, max: 12 }) })),
  w(
    3,
    fc.record({
      kind: fc.constant("rel" as const),
      to: fc.oneof(
        w(1, fc.constantFrom("perPayment" as const, "period" as const, "lifetime" as const, "balance" as const)),
        // the tightest bound, whichever it is
        w(1, fc.constant("spendable" as const)),
      ),
      delta: fc.integer({ min: -1, max: 1 }),
      /** Clamp to maxPerPayment, so that the later bounds get their turn. */
      withinPaymentCap: fc.oneof(w(3, fc.constant(true)), w(1, fc.constant(false))),
    }),
  ),
);
const nonceArb = fc.oneof(
  w(8, fc.record({ kind: fc.constant("next" as const), by: fc.constant(0) })),
  w(2, fc.record({ kind: fc.constant("ahead" as const), by: fc.integer({ min: 2, max: 40 }) })),
  w(3, fc.record({ kind: fc.constant("back" as const), by: fc.integer({ min: 0, max: 30 }) })),
  // jumps of about the replay window (24 nonces) and nonces at its bottom edge
  w(2, fc.record({ kind: fc.constant("ahead" as const), by: fc.integer({ min: 23, max: 25 }) })),
  w(3, fc.record({ kind: fc.constant("back" as const), by: fc.integer({ min: 22, max: 26 }) })),
  w(1, fc.record({ kind: fc.constant("abs" as const), by: fc.integer({ min: 0, max: 40 }) })),
  w(1, fc.record({ kind: fc.constant("nearMax" as const), by: fc.integer({ min: 0, max: 3 }) })),
);
const waitArb = fc.oneof(
  w(4, fc.record({ kind: fc.constant("secs" as const), secs: fc.integer({ min: 0, max: 30 }) })),
  w(
    2,
    fc.record({
      kind: fc.constant("boundary" as const),
      length: fc.constantFrom(10n, 60n, 3600n),
      offset: fc.integer({ min: -1, max: 1 }),
    }),
  ),
);
const feeRecipientArb = fc.oneof(
  w(3, fc.constant(null)), // address(0): the caller (the relayer)
  w(2, fc.constant(FEE_RECIPIENT)),
  w(1, fc.constantFrom(0, 1, 3)),
);

const paymentArb = fc.record({
  device: signerArb,
  form: fc.oneof(
    w(20, fc.record({ kind: fc.constant("new" as const), pick: fc.constant(0) })),
    w(4, fc.record({ kind: fc.constant("replay" as const), pick: fc.nat() })),
    w(3, fc.record({ kind: fc.constant("repeat" as const), pick: fc.nat() })),
    w(1, fc.constantFrom({ kind: "highS" as const, pick: 0 }, { kind: "tampered" as const, pick: 0 })),
  ),
  payee: fc.oneof(
    w(8, fc.constant(0)),
    w(4, fc.constant(1)),
    w(2, fc.constantFrom(2, 3, 4)),
    w(1, fc.constantFrom(5, 6)),
  ),
  total: totalArb,
  maxFee: fc.integer({ min: 0, max: 3 }),
  fee: feeArb,
  nonce: nonceArb,
  deadline: deadlineArb,
});
type PaymentSpec = typeof paymentArb extends fc.Arbitrary<infer T> ? T : never;

const voucherArb = fc.record({
  /** Pay more on a tab that already settled in the batch's token (if there is one): its device, payee and id. */
  existing: fc.oneof(w(1, fc.constant(true)), w(1, fc.constant(false))),
  pick: fc.nat(),
  device: signerArb,
  payee: fc.oneof(w(4, fc.constant(0)), w(2, fc.constant(1)), w(1, fc.constant(2))),
  tabId: fc.oneof(w(4, fc.constant(1n)), w(1, fc.constant(2n))),
  form: fc.oneof(
    w(12, fc.record({ kind: fc.constant("new" as const), pick: fc.constant(0) })),
    w(3, fc.record({ kind: fc.constant("replay" as const), pick: fc.nat() })),
    w(2, fc.record({ kind: fc.constant("repeat" as const), pick: fc.nat() })),
  ),
  cumulative: fc.oneof(
    w(4, fc.record({ kind: fc.constant("inc" as const), by: fc.integer({ min: 1, max: 10 }), to: fc.constant(null) })),
    w(
      3,
      fc.record({
        kind: fc.constant("rel" as const),
        by: fc.integer({ min: -1, max: 1 }),
        to: fc.constantFrom("perPayment" as const, "period" as const, "lifetime" as const, "balance" as const),
      }),
    ),
    w(2, fc.record({ kind: fc.constant("stale" as const), by: fc.integer({ min: 0, max: 2 }), to: fc.constant(null) })),
  ),
  maxFee: fc.integer({ min: 0, max: 3 }),
  fee: feeArb,
  deadline: deadlineArb,
  /** Bits in the low 32 of `terms`, which no signature covers and the contract ignores. */
  noise: fc.oneof(w(5, fc.constant(0n)), w(1, fc.bigInt({ min: 1n, max: (1n << 32n) - 1n }))),
});

const policyPickArb = fc.record({ mine: fc.oneof(w(6, fc.constant(true)), w(1, fc.constant(false))), pick: fc.nat() });
const proofArb = fc.oneof(w(6, fc.constant("own" as const)), w(1, fc.constant("forged" as const)));

const opArb = fc.oneof(
  w(
    30,
    fc.record({
      kind: fc.constant("settle" as const),
      token: batchTokenArb,
      items: fc.array(paymentArb, { minLength: 1, maxLength: 6 }),
      feeRecipient: feeRecipientArb,
      wait: waitArb,
    }),
  ),
  w(
    12,
    fc.record({
      kind: fc.constant("vouchers" as const),
      token: batchTokenArb,
      items: fc.array(voucherArb, { minLength: 1, maxLength: 5 }),
      feeRecipient: feeRecipientArb,
      wait: waitArb,
    }),
  ),
  w(
    5,
    fc.record({
      kind: fc.constant("deposit" as const),
      who: fc.integer({ min: 0, max: 4 }),
      token: tokenArb,
      amount: fc.oneof(w(10, fc.bigInt({ min: 1n, max: 400n })), w(1, fc.bigInt({ min: U64 - 2n, max: U64 + 2n }))),
      for: fc.oneof(w(3, fc.constant(null)), w(1, fc.integer({ min: 0, max: 7 }))),
    }),
  ),
  w(
    5,
    fc.record({
      kind: fc.constant("time" as const),
      jump: fc.oneof(
        w(3, fc.record({ kind: fc.constant("secs" as const), by: fc.integer({ min: 1, max: 120 }) })),
        w(2, fc.record({ kind: fc.constant("boundary" as const), by: fc.constantFrom(10, 60, 3600) })),
        w(1, fc.record({ kind: fc.constant("notice" as const), by: fc.integer({ min: -1, max: 1 }) })),
      ),
    }),
  ),
  w(
    5,
    fc.record({
      kind: fc.constant("announce" as const),
      who: fc.integer({ min: 0, max: 4 }),
      token: tokenArb,
      percent: fc.integer({ min: 1, max: 150 }),
    }),
  ),
  w(
    8,
    fc.record({
      kind: fc.constant("execute" as const),
      /** Execute a live announcement (if there is one), else `who`'s of `token`. */
      live: fc.oneof(w(3, fc.constant(true)), w(1, fc.constant(false))),
      pick: fc.nat(),
      who: fc.integer({ min: 0, max: 4 }),
      token: tokenArb,
      at: fc.oneof(
        w(2, fc.constant("now" as const)),
        w(2, fc.constant("justBefore" as const)),
        w(2, fc.constant("readyAt" as const)),
        w(1, fc.constant("later" as const)),
      ),
    }),
  ),
  w(1, fc.record({ kind: fc.constant("cancel" as const), who: fc.integer({ min: 0, max: 4 }), token: tokenArb })),
  w(
    3,
    fc.record({
      kind: fc.constant("withdraw" as const),
      who: fc.integer({ min: 0, max: 7 }),
      token: tokenArb,
      percent: fc.integer({ min: 1, max: 100 }),
    }),
  ),
  w(
    3,
    fc.record({
      kind: fc.constant("register" as const),
      owner: ownerArb,
      device: deviceArb,
      params: paramsArb,
      proof: proofArb,
    }),
  ),
  w(
    2,
    fc.record({
      kind: fc.constant("assign" as const),
      owner: ownerArb,
      policy: policyPickArb,
      devices: devicesArb,
      proof: proofArb,
    }),
  ),
  w(1, fc.record({ kind: fc.constant("createPolicy" as const), owner: ownerArb, params: paramsArb })),
  w(
    3,
    fc.record({
      kind: fc.constant("updatePolicy" as const),
      owner: ownerArb,
      policy: policyPickArb,
      params: fc.oneof(w(1, fc.constant("same" as const)), w(2, paramsArb)),
    }),
  ),
  w(
    2,
    fc.record({
      kind: fc.constant("setPayees" as const),
      owner: ownerArb,
      policy: policyPickArb,
      payees: fc.uniqueArray(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 3 }),
      allowed: fc.oneof(w(3, fc.constant(true)), w(1, fc.constant(false))),
    }),
  ),
  w(
    3,
    fc.record({
      kind: fc.constant("pauseDevice" as const),
      owner: ownerArb,
      /** Sent by the device's owner (if it has one) rather than by `owner`. */
      asOwner: fc.oneof(w(5, fc.constant(true)), w(1, fc.constant(false))),
      device: deviceArb,
      paused: fc.oneof(w(3, fc.constant(true)), w(2, fc.constant(false))),
    }),
  ),
  w(
    2,
    fc.record({
      kind: fc.constant("pausePolicy" as const),
      owner: ownerArb,
      policy: policyPickArb,
      paused: fc.boolean(),
    }),
  ),
  w(1, fc.record({ kind: fc.constant("freeze" as const), owner: ownerArb })),
  w(
    1,
    fc.record({
      kind: fc.constant("revoke" as const),
      owner: ownerArb,
      asOwner: fc.oneof(w(3, fc.constant(true)), w(1, fc.constant(false))),
      device: deviceArb,
    }),
  ),
  w(
    2,
    fc.record({
      kind: fc.constant("onboard" as const),
      owner: ownerArb,
      target: fc.oneof(w(2, fc.constant(null)), w(1, policyPickArb)),
      params: paramsArb,
      devices: devicesArb,
      proof: proofArb,
      fault: fc.oneof(
        w(3, fc.constant("none" as const)),
        w(1, fc.constantFrom("staleEpoch" as const, "usedNonce" as const, "expired" as const)),
      ),
    }),
  ),
  w(
    1,
    fc.record({
      kind: fc.constant("revokeBySignature" as const),
      owner: ownerArb,
      /** One of the owner's live devices (if it has one) rather than `devices`. */
      mine: fc.oneof(w(4, fc.constant(true)), w(1, fc.constant(false))),
      pick: fc.nat(),
      devices: devicesArb,
      fault: fc.oneof(
        w(3, fc.constant("none" as const)),
        w(1, fc.constantFrom("staleEpoch" as const, "usedNonce" as const, "expired" as const)),
      ),
    }),
  ),
  w(
    3,
    fc.record({
      kind: fc.constant("closeTab" as const),
      tab: fc.nat(),
      by: fc.constantFrom("payee" as const, "owner" as const, "device" as const, "stranger" as const),
    }),
  ),
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

const setupArb = fc.record({
  /** Policies 1-3 (owners O0, O1, O2): D0 and D1 on policy 1, D2 on 2, D3 on 3. */
  policies: fc.tuple(paramsArb, paramsArb, paramsArb),
  /** Each owner's first deposit, in the first token. */
  funds: fc.tuple(...[0, 1, 2].map(() => fc.integer({ min: 50, max: 600 }))),
  deposits: fc.array(fc.record({ owner: ownerArb, token: tokenArb, amount: fc.integer({ min: 10, max: 400 }) }), {
    minLength: 0,
    maxLength: 4,
  }),
});
type Setup = typeof setupArb extends fc.Arbitrary<infer T> ? T : never;

// -------------------------------------------------------------------------------------------------
// Views, read with raw eth_call (ethers' contract wrapper costs ~5x as much per call)
// -------------------------------------------------------------------------------------------------

class Views {
  constructor(private readonly fx: Fixture) {}

  private async call(to: string, data: string): Promise<string> {
    return (await network.provider.request({ method: "eth_call", params: [{ to, data }, "latest"] })) as string;
  }

  private async pay<T>(data: string, fn: string): Promise<T> {
    const raw = await this.call(this.fx.payAddress, data);
    return (this.fx.pay.interface as Interface).decodeFunctionResult(fn, raw)[0] as T;
  }

  async holdings(token: string): Promise<bigint> {
    if (key(token) === NATIVE) {
      return BigInt(
        (await network.provider.request({
          method: "eth_getBalance",
          params: [this.fx.payAddress, "latest"],
        })) as string,
      );
    }
    const erc20 = this.fx.erc20s[this.fx.tokens.indexOf(token as Address)] as MockUSDC;
    const raw = await this.call(token, erc20.interface.encodeFunctionData("balanceOf", [this.fx.payAddress]));
    return BigInt(raw);
  }

  balanceOf(account: string, token: string): Promise<bigint> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("balanceOf", [account, token]), "balanceOf");
  }

  async device(device: string): Promise<DeviceView> {
    const d = await this.pay<IMachinePay.DeviceStateStructOutput>(
      this.fx.pay.interface.encodeFunctionData("getDevice", [device]),
      "getDevice",
    );
    return {
      policyId: d.policyId,
      paused: d.paused,
      periodIndex: d.periodIndex,
      periodSpent: d.periodSpent,
      lifetimeSpent: d.lifetimeSpent,
      nonceTop: d.nonceTop,
      nonceWindow: d.nonceWindow,
    };
  }

  async policy(id: bigint): Promise<PolicyFields> {
    const p = await this.pay<IMachinePay.PolicyStructOutput>(
      this.fx.pay.interface.encodeFunctionData("getPolicy", [id]),
      "getPolicy",
    );
    return policyFieldsOf(p);
  }

  policyCount(): Promise<bigint> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("policyCount"), "policyCount");
  }

  ownerEpoch(owner: string): Promise<bigint> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("ownerEpoch", [owner]), "ownerEpoch");
  }

  ownsPolicies(account: string): Promise<boolean> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("ownsPolicies", [account]), "ownsPolicies");
  }

  isPayeeAllowed(id: bigint, payee: string): Promise<boolean> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("isPayeeAllowed", [id, payee]), "isPayeeAllowed");
  }

  async tab(t: { device: string; payee: string; token: string; tabId: bigint }) {
    const tab = await this.pay<IMachinePay.TabStructOutput>(
      this.fx.pay.interface.encodeFunctionData("getTab", [t.device, t.payee, t.token, t.tabId]),
      "getTab",
    );
    return { settled: tab.settled, closesAt: tab.closesAt };
  }

  async pendingWithdrawal(owner: string, token: string) {
    const p = await this.pay<IMachinePay.PendingWithdrawalStructOutput>(
      this.fx.pay.interface.encodeFunctionData("pendingWithdrawal", [owner, token]),
      "pendingWithdrawal",
    );
    return { amount: p.amount, readyAt: p.readyAt };
  }

  headroom(device: string): Promise<IMachinePay.HeadroomStructOutput> {
    return this.pay(this.fx.pay.interface.encodeFunctionData("headroom", [device]), "headroom");
  }
}

// -------------------------------------------------------------------------------------------------
// A run: drives the contract, replays every transaction's events into the mirror, checks the views
// -------------------------------------------------------------------------------------------------

type SignedPayment = { device: BaseWallet; payment: Payment; signature: Hex };
type SignedVoucher = { device: BaseWallet; voucher: Voucher; signature: Hex };
type TabRef = { device: string; payee: string; token: string; tabId: bigint };

class Run {
  readonly mirror: EventMirror;
  private readonly views: Views;
  private readonly accounts: string[];
  private clock = 0n;
  private refs = 0;
  private readonly payments: SignedPayment[] = [];
  private readonly vouchers: SignedVoucher[] = [];
  /** Every tab a voucher was signed for or a close was tried on, settled or not. */
  private readonly tabRefs = new Map<string, TabRef>();
  /** Every (account, token) an announcement, execution or cancellation was tried for. */
  private readonly withdrawalPairs = new Set<string>();
  private readonly ownerNonces = new Map<string, bigint[]>();
  /** What the current step named (its events, its targets); check() reads their views. */
  private readonly touched = {
    tokens: new Set<string>(),
    devices: new Set<string>(),
    policies: new Set<bigint>(),
    owners: new Set<string>(),
    tabs: new Set<string>(),
    withdrawals: new Set<string>(),
  };

  constructor(
    readonly fx: Fixture,
    readonly tally: Tally,
  ) {
    this.mirror = new EventMirror(NOTICE, tally);
    this.views = new Views(fx);
    this.accounts = fx.signers.map((s) => key(s.address));
  }

  private get pay(): MachinePay {
    return this.fx.pay;
  }

  private signer(index: number) {
    return this.fx.signers[index];
  }

  private address(index: number): string {
    return index < 0 ? ZERO : this.fx.signers[index].address;
  }

  async start(setup: Setup): Promise<void> {
    const latest = BigInt(await time.latest());
    const from = latest + 1n > START ? latest + 1n : START;
    this.clock = ((from + ALIGN - 1n) / ALIGN) * ALIGN;
    await time.increaseTo(this.clock);
    // Policies 1 and 2 pay in the first token, so that batches of several owners' devices settle.
    const [p1, p2, p3] = setup.policies.map((p, i) =>
      this.params({ ...p, token: i < 2 ? 0 : p.token, broken: "none", validFrom: null, validFor: null }),
    );
    await this.admin(0, async (o) =>
      this.pay.connect(o).registerDevice(DEVICES[0].address, p1, await this.proof(0, 0)),
    );
    await this.admin(0, async (o) =>
      this.pay.connect(o).assignDevices(1, [DEVICES[1].address], [await this.proof(1, 0)]),
    );
    await this.admin(1, async (o) =>
      this.pay.connect(o).registerDevice(DEVICES[2].address, p2, await this.proof(2, 1)),
    );
    await this.admin(2, async (o) =>
      this.pay.connect(o).registerDevice(DEVICES[3].address, p3, await this.proof(3, 2)),
    );
    for (const [owner, amount] of setup.funds.entries()) await this.deposit(owner, 0, amount, null);
    for (const d of setup.deposits) await this.deposit(d.owner, d.token, d.amount, null);
    await this.check(true);
  }

  // --- sending ---------------------------------------------------------------------------------

  /**
   * Sends `tx` in a block at `at` (or the next second), replays its events into the mirror (which
   * throws on a broken invariant) and returns them; returns the MachinePay error's name if the
   * transaction reverted with one. Any other failure is a finding and is rethrown.
   */
  private async send(
    ctx: TxContext,
    tx: () => Promise<ContractTransactionResponse>,
    at?: bigint,
  ): Promise<MachinePayEvent[] | string> {
    const t = at !== undefined && at > this.clock ? at : this.clock + 1n;
    await time.setNextBlockTimestamp(t);
    let logs: readonly { address: string; topics: readonly string[]; data: string }[];
    try {
      const receipt = await (await tx()).wait();
      if (!receipt) throw new Error("no receipt");
      logs = receipt.logs;
    } catch (e) {
      const name = this.revertName(e);
      if (name === undefined) throw e;
      this.tally.add(`revert:${name}`);
      // Nothing was mined, unless the transaction got into a block and reverted there.
      const latest = BigInt(await time.latest());
      if (latest > this.clock) this.clock = latest;
      return name;
    }
    this.clock = t;
    const events = decodeEvents(this.pay, this.fx.payAddress, logs);
    this.touchEvents(events);
    this.mirror.apply(events, t, ctx);
    return events;
  }

  private revertName(e: unknown): string | undefined {
    const err = e as { data?: unknown; message?: string };
    let name: string | undefined;
    if (typeof err.data === "string" && err.data.length >= 10) {
      name = this.pay.interface.parseError(err.data)?.name;
    }
    name ??= /reverted with custom error '(\w+)\(/.exec(err.message ?? "")?.[1];
    const known = this.pay.interface.fragments.some((f) => f.type === "error" && (f as ErrorFragment).name === name);
    return known ? name : undefined;
  }

  /** An owner's (or any account's) own transaction. */
  private admin(
    who: number,
    tx: (signer: ReturnType<Run["signer"]>) => Promise<ContractTransactionResponse>,
    ctx: TxContext = { kind: "admin" },
    at?: bigint,
  ) {
    return this.send(ctx, () => tx(this.signer(who)), at);
  }

  /** Device `device`'s Enrollment proof for owner `owner` (its own key's consent). */
  private proof(device: number, owner: number): Promise<DeviceProof> {
    return enrollmentFor(this.fx.domain, DEVICES[device], this.address(owner));
  }

  /** A proof that is not `device`'s consent to `owner`: its consent to another owner. */
  private forgedProof(device: number, owner: number): Promise<DeviceProof> {
    return enrollmentFor(this.fx.domain, DEVICES[device], this.address((owner + 1) % 3));
  }

  private params(p: ParamsSpec): PolicyParams {
    const validFrom = p.validFrom === null ? 0n : this.clock + BigInt(p.validFrom);
    const validUntil = p.validFor === null ? 0n : validFrom + BigInt(p.validFor);
    const cap = (small: number) => (p.huge ? U64 - BigInt(small) : BigInt(small));
    return {
      token: this.fx.tokens[p.token],
      maxPerPayment: cap(p.maxPerPayment),
      maxPerPeriod: cap(p.maxPerPeriod),
      periodLength: p.broken === "period0" ? 0 : p.periodLength,
      lifetimeMax: cap(p.lifetimeMax),
      validFrom: Number(validFrom),
      validUntil: p.broken === "validity" ? Number(validFrom) : Number(validUntil),
      payeesRestricted: p.payeesRestricted,
    };
  }

  /** The device's owner (when `asOwner` and it has one), else `owner`. */
  private senderFor(op: { owner: number; asOwner: boolean; device: number }): number {
    const bound = this.mirror.devices.get(key(DEVICES[op.device].address))?.owner;
    return op.asOwner && bound !== undefined ? this.accounts.indexOf(bound) : op.owner;
  }

  /** One of `owner`'s policies (or, when `mine` is false, any policy). */
  private pickPolicy(owner: number, pick: { mine: boolean; pick: number }): bigint {
    const all = [...this.mirror.policies.values()];
    const candidates = pick.mine ? all.filter((p) => p.owner === key(this.address(owner))) : all;
    if (candidates.length === 0) return 1n;
    return candidates[pick.pick % candidates.length].id;
  }

  // --- operations --------------------------------------------------------------------------------

  async apply(op: Op): Promise<void> {
    this.tally.add(`op:${op.kind}`);
    switch (op.kind) {
      case "settle":
        return this.settle(op);
      case "vouchers":
        return this.settleVouchers(op);
      case "deposit":
        await this.deposit(op.who, op.token, op.amount, op.for);
        return;
      case "time":
        return this.timeJump(op.jump);
      case "announce": {
        const token = this.fx.tokens[op.token];
        const amount = (this.mirror.balance(this.address(op.who), token) * BigInt(op.percent)) / 100n;
        this.touchPair(this.address(op.who), token);
        await this.admin(op.who, (s) => this.pay.connect(s).announceWithdrawal(token, amount > 0n ? amount : 1n));
        return;
      }
      case "execute":
        return this.execute(op);
      case "cancel": {
        const token = this.fx.tokens[op.token];
        this.touchPair(this.address(op.who), token);
        await this.admin(op.who, (s) => this.pay.connect(s).cancelWithdrawal(token));
        return;
      }
      case "withdraw": {
        const token = this.fx.tokens[op.token];
        const who = this.address(op.who);
        const amount = (this.mirror.balance(who, token) * BigInt(op.percent)) / 100n;
        const result = await this.admin(
          op.who,
          (s) => this.pay.connect(s).withdraw(token, amount > 0n ? amount : 1n, who),
          { kind: "withdraw" },
        );
        if (this.mirror.owners.has(key(who))) {
          // The rule, not only the events: an account that owns a policy cannot withdraw at once.
          expect(result, `immediate withdrawal by policy owner ${who}`).to.equal("NoticeRequired");
        }
        return;
      }
      case "register": {
        const params = this.params(op.params);
        const proof =
          op.proof === "own" ? await this.proof(op.device, op.owner) : await this.forgedProof(op.device, op.owner);
        await this.admin(
          op.owner,
          (s) => this.pay.connect(s).registerDevice(DEVICES[op.device].address, params, proof),
          { kind: "admin", forgedProofs: op.proof === "own" ? [] : [key(DEVICES[op.device].address)] },
        );
        return;
      }
      case "assign": {
        const id = this.pickPolicy(op.owner, op.policy);
        const proofs = await Promise.all(
          op.devices.map((d) => (op.proof === "own" ? this.proof(d, op.owner) : this.forgedProof(d, op.owner))),
        );
        const devices = op.devices.map((d) => DEVICES[d].address);
        await this.admin(op.owner, (s) => this.pay.connect(s).assignDevices(id, devices, proofs), {
          kind: "admin",
          forgedProofs: op.proof === "own" ? [] : devices.map(key),
        });
        return;
      }
      case "createPolicy": {
        const params = this.params(op.params);
        await this.admin(op.owner, (s) => this.pay.connect(s).createPolicy(params));
        return;
      }
      case "updatePolicy": {
        const id = this.pickPolicy(op.owner, op.policy);
        const current = this.mirror.policies.get(id);
        let params: PolicyParams;
        if (op.params === "same") {
          if (!current) return;
          // Re-setting the same parameters thaws a frozen policy.
          params = {
            token: current.token as Address,
            maxPerPayment: current.maxPerPayment,
            maxPerPeriod: current.maxPerPeriod,
            periodLength: Number(current.periodLength),
            lifetimeMax: current.lifetimeMax,
            validFrom: Number(current.validFrom),
            validUntil: Number(current.validUntil),
            payeesRestricted: current.payeesRestricted,
          };
        } else {
          params = this.params(op.params);
        }
        await this.admin(op.owner, (s) => this.pay.connect(s).updatePolicy(id, params));
        return;
      }
      case "setPayees": {
        const id = this.pickPolicy(op.owner, op.policy);
        const payees = op.payees.map((p) => this.address(PAYEE_CHOICES[p]));
        await this.admin(op.owner, (s) => this.pay.connect(s).setPayees(id, payees, op.allowed));
        return;
      }
      case "pauseDevice":
        await this.admin(this.senderFor(op), (s) =>
          this.pay.connect(s).setDevicePaused(DEVICES[op.device].address, op.paused),
        );
        return;
      case "pausePolicy": {
        const id = this.pickPolicy(op.owner, op.policy);
        await this.admin(op.owner, (s) => this.pay.connect(s).setPolicyPaused(id, op.paused));
        return;
      }
      case "freeze":
        await this.admin(op.owner, (s) => this.pay.connect(s).freezeAll());
        return;
      case "revoke":
        await this.admin(this.senderFor(op), (s) => this.pay.connect(s).revokeDevice(DEVICES[op.device].address));
        return;
      case "onboard":
        return this.onboard(op);
      case "revokeBySignature":
        return this.revokeBySignature(op);
      case "closeTab":
        return this.closeTab(op);
    }
  }

  private async deposit(who: number, tokenIndex: number, units: number | bigint, forWhom: number | null) {
    const token = this.fx.tokens[tokenIndex];
    const amount = BigInt(units);
    const value = key(token) === NATIVE ? amount : 0n;
    const result = await this.admin(who, (s) =>
      forWhom === null
        ? this.pay.connect(s).deposit(token, amount, { value })
        : this.pay.connect(s).depositFor(this.address(forWhom), token, amount, { value }),
    );
    expect(result, "a funded account's deposit").to.not.be.a("string");
  }

  private async timeJump(jump: Extract<Op, { kind: "time" }>["jump"]) {
    let target: bigint;
    if (jump.kind === "secs") target = this.clock + BigInt(jump.by);
    else if (jump.kind === "boundary") target = (this.clock / BigInt(jump.by) + 1n) * BigInt(jump.by);
    else target = this.clock + NOTICE + BigInt(jump.by);
    if (target <= this.clock) target = this.clock + 1n;
    // The latest block is at this.clock: the block mined is at `target`.
    this.clock = BigInt(await time.increase(target - this.clock));
    expect(this.clock, "time.increase").to.equal(target);
  }

  private async execute(op: Extract<Op, { kind: "execute" }>) {
    let whoIndex = op.who;
    let token = this.fx.tokens[op.token] as string;
    const lives = [...this.mirror.withdrawals.entries()].filter(([, a]) => a !== undefined);
    if (op.live && lives.length > 0) {
      const [account, t] = lives[op.pick % lives.length][0].split(":");
      whoIndex = this.accounts.indexOf(account);
      token = this.fx.tokens.find((x) => key(x) === t) as string;
    }
    const who = this.address(whoIndex);
    this.touchPair(who, token);
    const live = this.mirror.withdrawals.get(`${key(who)}:${key(token)}`);
    let at = this.clock + 1n;
    if (live && op.at === "justBefore") at = live.readyAt - 1n;
    if (live && op.at === "readyAt") at = live.readyAt;
    if (live && op.at === "later") at = live.readyAt + 1000n;
    if (at <= this.clock) at = this.clock + 1n;
    const result = await this.admin(
      whoIndex,
      (s) => this.pay.connect(s).executeWithdrawal(token, who),
      { kind: "executeWithdrawal" },
      at,
    );
    if (live && at < live.readyAt) {
      // The rule, not only the events: before readyAt the call reverts.
      expect(result, `executeWithdrawal at ${at}, ready at ${live.readyAt}`).to.equal("WithdrawalNotReady");
      this.tally.add("withdrawals:refusedBeforeReadyAt");
    }
  }

  private batchTime(wait: Extract<Op, { kind: "settle" }>["wait"]): bigint {
    if (wait.kind === "secs") return this.clock + 1n + BigInt(wait.secs);
    const target = (this.clock / wait.length + 1n) * wait.length + BigInt(wait.offset);
    return target > this.clock ? target : this.clock + 1n;
  }

  private feeOf(spec: PaymentSpec["fee"], maxFee: bigint): bigint {
    if (spec === "zero") return 0n;
    if (spec === "max") return maxFee;
    if (spec === "below") return maxFee > 0n ? maxFee - 1n : 0n;
    return maxFee + 1n;
  }

  /** amount + fee aimed at the device's headroom (less what earlier items of this batch take). */
  private async bound(device: string, to: "perPayment" | "period" | "lifetime" | "balance", taken: bigint) {
    const h = await this.views.headroom(device);
    return to === "perPayment" ? h.perPayment : h[to] - taken;
  }

  private nonceOf(spec: PaymentSpec["nonce"], device: string): bigint {
    const nonces = this.mirror.devices.get(key(device))?.nonces ?? new Set<bigint>();
    const { top } = nonceFields(nonces);
    const clamp = (n: bigint) => (n < 0n ? 0n : n > LIMITS.nonce ? LIMITS.nonce : n);
    switch (spec.kind) {
      case "next":
        return nonces.size === 0 ? 0n : clamp(top + 1n);
      case "ahead":
        return clamp(top + BigInt(spec.by));
      case "back":
        return clamp(top - BigInt(spec.by));
      case "abs":
        return BigInt(spec.by);
      case "nearMax":
        return LIMITS.nonce - BigInt(spec.by);
    }
  }

  private feeRecipientOf(spec: number | null): { arg: string; credited: string } {
    if (spec === null) return { arg: ZERO, credited: this.address(RELAYER) };
    return { arg: this.address(spec), credited: this.address(spec) };
  }

  /** The token of a batch: `spec`, or that of its first signer's policy (the first token if it has none). */
  private batchToken(spec: number | null, first: PaymentSpec["device"]): Address {
    if (spec !== null) return this.fx.tokens[spec];
    const token = this.mirror.policyOf(DEVICES[first.index].address)?.token;
    return (this.fx.tokens.find((t) => key(t) === token) ?? this.fx.tokens[0]) as Address;
  }

  private signerOf(spec: PaymentSpec["device"], token: string): BaseWallet {
    if (spec.match) {
      const matching = DEVICES.filter((d) => this.mirror.policyOf(d.address)?.token === key(token));
      if (matching.length > 0) return matching[spec.pick % matching.length];
    }
    return DEVICES[spec.index];
  }

  private async settle(op: Extract<Op, { kind: "settle" }>) {
    const t = this.batchTime(op.wait);
    const token = this.batchToken(op.token, op.items[0].device);
    const packed: PackedPayment[] = [];
    const submitted: SubmittedPayment[] = [];
    const taken = new Map<string, bigint>();
    for (const spec of op.items) {
      if (spec.form.kind === "repeat" && packed.length > 0) {
        const i = spec.form.pick % packed.length;
        packed.push(packed[i]);
        submitted.push(submitted[i]);
        this.tally.add("items:repeatedInBatch");
        continue;
      }
      if (spec.form.kind === "replay" && this.payments.length > 0) {
        const s = this.payments[spec.form.pick % this.payments.length];
        const fee = this.feeOf(spec.fee, s.payment.maxFee);
        packed.push(packPayment(s.payment, s.signature, fee));
        submitted.push({ ...s.payment, signer: s.device.address, fee });
        this.touchDevice(s.device.address);
        this.tally.add("items:replayed");
        continue;
      }
      const device = this.signerOf(spec.device, token);
      this.touchDevice(device.address);
      const maxFee = BigInt(spec.maxFee);
      const fee = this.feeOf(spec.fee, maxFee);
      const already = taken.get(device.address) ?? 0n;
      let total = BigInt(spec.total.kind === "abs" ? spec.total.value : 0);
      if (spec.total.kind === "rel") {
        const h = await this.views.headroom(device.address);
        total = (spec.total.to === "perPayment" ? h.perPayment : h[spec.total.to] - already) + BigInt(spec.total.delta);
        if (spec.total.withinPaymentCap && total > h.perPayment) total = h.perPayment;
      }
      const amount = total > fee ? total - fee : 0n;
      taken.set(device.address, already + amount + fee);
      const deadline = t + spec.deadline;
      const payment: Payment = {
        payee: this.address(PAYEE_CHOICES[spec.payee]) as Address,
        token,
        amount,
        nonce: this.nonceOf(spec.nonce, device.address),
        deadline: deadline > 0n ? deadline : 0n,
        maxFee,
        ref: ethers.toBeHex(++this.refs, 32) as Hex,
      };
      const signature = (await device.signTypedData(this.fx.domain, PAYMENT_TYPES, payment)) as Hex;
      const item = packPayment(payment, signature, fee);
      if (spec.form.kind === "highS") {
        packed.push({ ...item, vs: HIGH_S });
        submitted.push({ ...payment, signer: null, fee });
      } else if (spec.form.kind === "tampered") {
        // The amount changed after signing: the words recover to a key nobody registered.
        packed.push({ ...item, payeeAmount: item.payeeAmount ^ 1n });
        submitted.push({ ...payment, amount: payment.amount ^ 1n, signer: null, fee });
      } else {
        packed.push(item);
        submitted.push({ ...payment, signer: device.address, fee });
        this.payments.push({ device, payment, signature });
      }
    }
    const { arg, credited } = this.feeRecipientOf(op.feeRecipient);
    const result = await this.send(
      { kind: "settle", submitter: this.address(RELAYER), feeRecipient: credited, items: submitted },
      () => this.pay.connect(this.signer(RELAYER)).settle(token, packed, arg),
      t,
    );
    if (typeof result === "string")
      throw new InvariantViolation(`settle reverted with ${result}: a batch never reverts`);
  }

  private async settleVouchers(op: Extract<Op, { kind: "vouchers" }>) {
    const t = this.batchTime(op.wait);
    const token = this.batchToken(op.token, op.items[0].device);
    const packed: PackedVoucher[] = [];
    const submitted: SubmittedVoucher[] = [];
    const taken = new Map<string, bigint>();
    for (const spec of op.items) {
      if (spec.form.kind === "repeat" && packed.length > 0) {
        const i = spec.form.pick % packed.length;
        packed.push(packed[i]);
        submitted.push(submitted[i]);
        continue;
      }
      if (spec.form.kind === "replay" && this.vouchers.length > 0) {
        const s = this.vouchers[spec.form.pick % this.vouchers.length];
        const fee = this.feeOf(spec.fee, s.voucher.maxFee);
        packed.push(packVoucher(s.voucher, s.signature, fee));
        submitted.push({ ...s.voucher, signer: s.device.address, fee });
        this.touchDevice(s.device.address);
        this.touchTab({
          device: s.device.address,
          payee: s.voucher.payee,
          token: s.voucher.token,
          tabId: s.voucher.tabId,
        });
        this.tally.add("vouchers:replayed");
        continue;
      }
      let device = this.signerOf(spec.device, token);
      let payee = this.address(TAB_PAYEES[spec.payee]);
      let tabId = spec.tabId;
      const open = [...this.mirror.tabs.values()].filter((t) => t.token === key(token));
      if (spec.existing && open.length > 0) {
        const tab = open[spec.pick % open.length];
        device = DEVICES.find((d) => key(d.address) === tab.device) as BaseWallet;
        payee = ethers.getAddress(tab.payee);
        tabId = tab.tabId;
      }
      const maxFee = BigInt(spec.maxFee);
      const fee = this.feeOf(spec.fee, maxFee);
      const settled = this.mirror.tab(device.address, payee, token, tabId)?.settled ?? 0n;
      let cumulative: bigint;
      const c = spec.cumulative;
      if (c.kind === "inc") cumulative = settled + BigInt(c.by);
      else if (c.kind === "stale") cumulative = settled - BigInt(c.by);
      else {
        const already = taken.get(device.address) ?? 0n;
        cumulative = settled + (await this.bound(device.address, c.to, already)) - fee + BigInt(c.by);
      }
      if (cumulative < 0n) cumulative = 0n;
      if (cumulative > settled)
        taken.set(device.address, (taken.get(device.address) ?? 0n) + cumulative - settled + fee);
      const deadline = t + spec.deadline;
      const voucher: Voucher = {
        payee: payee as Address,
        token,
        tabId: tabId,
        cumulative,
        deadline: deadline > 0n ? deadline : 0n,
        maxFee,
      };
      const signature = (await device.signTypedData(this.fx.domain, VOUCHER_TYPES, voucher)) as Hex;
      const item = packVoucher(voucher, signature, fee);
      packed.push(spec.noise === 0n ? item : { ...item, terms: item.terms | spec.noise });
      submitted.push({ ...voucher, signer: device.address, fee });
      this.vouchers.push({ device, voucher, signature });
      this.touchDevice(device.address);
      this.touchTab({ device: device.address, payee, token, tabId: tabId });
    }
    const { arg, credited } = this.feeRecipientOf(op.feeRecipient);
    const result = await this.send(
      { kind: "settleVouchers", submitter: this.address(RELAYER), feeRecipient: credited, items: submitted },
      () => this.pay.connect(this.signer(RELAYER)).settleVouchers(token, packed, arg),
      t,
    );
    if (typeof result === "string") {
      throw new InvariantViolation(`settleVouchers reverted with ${result}: a batch never reverts`);
    }
  }

  private async closeTab(op: Extract<Op, { kind: "closeTab" }>) {
    const tabs = [...this.tabRefs.values()];
    if (tabs.length === 0) return;
    const tab = tabs[op.tab % tabs.length];
    this.touchTab(tab);
    const payeeIndex = this.accounts.indexOf(key(tab.payee));
    if (op.by === "device") {
      const device = DEVICES.find((d) => key(d.address) === key(tab.device)) as BaseWallet;
      const deadline = this.clock + 3600n;
      const message = { payee: tab.payee, token: tab.token, tabId: tab.tabId, deadline };
      const { r, vs } = toCompactSignature(
        (await device.signTypedData(this.fx.domain, TAB_CLOSE_TYPES, message)) as Hex,
      );
      await this.admin(
        STRANGER,
        (s) => this.pay.connect(s).closeTabBySignature(tab.device, tab.payee, tab.token, tab.tabId, deadline, r, vs),
        { kind: "closeTabBySignature" },
      );
      return;
    }
    let who = STRANGER;
    if (op.by === "payee") who = payeeIndex;
    if (op.by === "owner") {
      const owner = this.mirror.policyOf(tab.device)?.owner;
      who = owner === undefined ? 0 : this.accounts.indexOf(owner);
    }
    const sender = this.address(who);
    await this.admin(who, (s) => this.pay.connect(s).closeTab(tab.device, tab.payee, tab.token, tab.tabId), {
      kind: "closeTab",
      sender,
    });
  }

  private ownerNonce(owner: string, fault: string): bigint {
    const used = this.ownerNonces.get(owner) ?? [];
    if (fault === "usedNonce" && used.length > 0) return used[used.length - 1];
    return BigInt(used.length + 1) * 7n;
  }

  private orderFault(fault: "none" | "staleEpoch" | "usedNonce" | "expired", owner: string) {
    const epoch = Number(this.mirror.epoch(owner));
    const used = this.ownerNonces.get(owner) ?? [];
    const faulty =
      (fault === "staleEpoch" && epoch > 0) || (fault === "usedNonce" && used.length > 0) || fault === "expired";
    return {
      epoch: fault === "staleEpoch" && epoch > 0 ? epoch - 1 : epoch,
      nonce: this.ownerNonce(owner, fault),
      deadline: fault === "expired" ? this.clock + 1n : this.clock + 3600n,
      faulty,
    };
  }

  private async onboard(op: Extract<Op, { kind: "onboard" }>) {
    const owner = this.address(op.owner);
    const { epoch, nonce, deadline, faulty } = this.orderFault(op.fault, owner);
    const devices = op.devices.map((d) => DEVICES[d].address as Address);
    const order: Onboarding = {
      owner: owner as Address,
      policyId: op.target === null ? 0 : Number(this.pickPolicy(op.owner, op.target)),
      policy: this.params(op.params),
      devices,
      epoch,
      nonce,
      deadline,
    };
    const signature = await signOrder(this.pay, this.signer(op.owner), order);
    const proofs = await Promise.all(
      op.devices.map((d) => (op.proof === "own" ? this.proof(d, op.owner) : this.forgedProof(d, op.owner))),
    );
    const result = await this.admin(
      RELAYER,
      (s) => this.pay.connect(s).onboardBySignature(...onboardingArgs(order, proofs, signature)),
      { kind: "admin", forgedProofs: op.proof === "own" ? [] : devices.map(key) },
    );
    this.ownerOrderDone(owner, nonce, faulty, result, "onboardBySignature");
  }

  private async revokeBySignature(op: Extract<Op, { kind: "revokeBySignature" }>) {
    const owner = this.address(op.owner);
    const { epoch, nonce, deadline, faulty } = this.orderFault(op.fault, owner);
    const live = DEVICES.filter((d) => {
      const device = this.mirror.devices.get(key(d.address));
      return device !== undefined && !device.revoked && device.owner === key(owner);
    });
    const devices = op.mine && live.length > 0 ? [live[op.pick % live.length]] : op.devices.map((d) => DEVICES[d]);
    const order: Revocation = {
      owner: owner as Address,
      devices: devices.map((d) => d.address as Address),
      epoch,
      nonce,
      deadline,
    };
    const signature = await signOrder(this.pay, this.signer(op.owner), order);
    const result = await this.admin(RELAYER, (s) =>
      this.pay.connect(s).revokeBySignature(...revocationArgs(order, signature)),
    );
    this.ownerOrderDone(owner, nonce, faulty, result, "revokeBySignature");
  }

  private ownerOrderDone(owner: string, nonce: bigint, faulty: boolean, result: unknown, what: string) {
    if (faulty) {
      // The rule: an order signed before a freeze, replayed, or past its deadline never applies.
      expect(result, `${what} with a stale epoch, used nonce or passed deadline`).to.be.oneOf([
        "StaleEpoch",
        "OwnerNonceUsed",
        "SignatureExpired",
      ]);
      this.tally.add(`ownerOrders:refused:${result}`);
    } else if (typeof result !== "string") {
      this.ownerNonces.set(owner, [...(this.ownerNonces.get(owner) ?? []), nonce]);
      this.tally.add(`ownerOrders:${what}`);
    }
  }

  // --- invariants on views ---------------------------------------------------------------------

  /** Marks what a step's events name, so that the views of those entities are read after it. */
  private touchEvents(events: MachinePayEvent[]): void {
    const token = events.find((e) => e.name === "BatchSettled")?.token;
    for (const e of events) {
      if ("token" in e) this.touched.tokens.add(e.token);
      if ("device" in e && e.device !== ZERO) this.touched.devices.add(e.device);
      if ("policyId" in e) this.touched.policies.add(e.policyId);
      if ("owner" in e) this.touched.owners.add(e.owner);
      if (e.name === "WithdrawalAnnounced" || e.name === "WithdrawalCancelled") this.touchPair(e.owner, e.token);
      if (e.name === "Withdrawn") this.touchPair(e.account, e.token);
      if (e.name === "TabClosing") this.touched.tabs.add(e.tabKey);
      if (e.name === "VoucherSettled" && token) this.touched.tabs.add(tabKeyOf(e.device, e.payee, token, e.tabId));
    }
  }

  private touchDevice(device: string): void {
    this.touched.devices.add(key(device));
  }

  private touchPair(account: string, token: string): void {
    const id = `${key(account)}:${key(token)}`;
    this.withdrawalPairs.add(id);
    this.touched.withdrawals.add(id);
  }

  private touchTab(tab: TabRef): string {
    const id = tabKeyOf(tab.device, tab.payee, tab.token, tab.tabId);
    this.tabRefs.set(id, tab);
    this.touched.tabs.add(id);
    return id;
  }

  /**
   * Reads the views and compares them with the mirror (see compareViews): after every step, for
   * each token the step moved, the contract's holdings and every account's ledger balance
   * (conservation), and the devices, policies, owners, tabs and withdrawals the step named; in a
   * full sweep (start and end of a run), all of them, so that state changed behind the events'
   * back is caught too.
   */
  async check(full: boolean): Promise<void> {
    const v = this.views;
    const snapshot: ViewSnapshot = {
      holdings: new Map(),
      balances: new Map(),
      devices: new Map(),
      policyCount: await v.policyCount(),
      policies: new Map(),
      epochs: new Map(),
      ownsPolicies: new Map(),
      tabs: new Map(),
      withdrawals: new Map(),
    };
    const tokens = full ? this.fx.tokens : this.fx.tokens.filter((token) => this.touched.tokens.has(key(token)));
    for (const token of tokens) {
      snapshot.holdings.set(key(token), await v.holdings(token));
      for (const account of this.accounts) {
        snapshot.balances.set(`${account}:${key(token)}`, await v.balanceOf(account, token));
      }
    }
    const t = this.touched;
    // A touched device's policy and owner are read too: a settlement reads both.
    for (const d of t.devices) {
      const device = this.mirror.devices.get(d);
      if (device) t.policies.add(device.policyId);
    }
    for (const id of t.policies) {
      const owner = this.mirror.policies.get(id)?.owner;
      if (owner) t.owners.add(owner);
    }
    const devices = full ? DEVICES.map((d) => key(d.address)) : [...t.devices];
    for (const d of devices) snapshot.devices.set(d, await v.device(d));
    const policies = full
      ? [...this.mirror.policies.keys()]
      : [...t.policies].filter((id) => this.mirror.policies.has(id));
    for (const id of policies) snapshot.policies.set(id, await v.policy(id));
    const owners = full ? this.accounts.slice(0, 5) : [...t.owners];
    for (const account of owners) {
      snapshot.epochs.set(account, await v.ownerEpoch(account));
      snapshot.ownsPolicies.set(account, await v.ownsPolicies(account));
    }
    const tabs = new Map(this.tabRefs);
    for (const [id, tab] of this.mirror.tabs) tabs.set(id, tab);
    for (const [id, tab] of tabs) if (full || t.tabs.has(id)) snapshot.tabs.set(id, await v.tab(tab));
    const pairs = full
      ? new Set([...this.withdrawalPairs, ...this.mirror.withdrawals.keys()])
      : this.touched.withdrawals;
    for (const id of pairs) {
      const [account, token] = id.split(":");
      snapshot.withdrawals.set(id, await v.pendingWithdrawal(account, token));
    }
    if (full) {
      snapshot.allowed = new Map();
      for (const id of this.mirror.policies.keys()) {
        for (const p of PAYEE_CHOICES) {
          if (p < 0) continue;
          const payee = key(this.address(p));
          snapshot.allowed.set(`${id}:${payee}`, await v.isPayeeAllowed(id, payee));
        }
      }
    }
    compareViews(this.mirror, snapshot, tokens, this.accounts);
    for (const set of Object.values(this.touched)) set.clear();
  }
}

// -------------------------------------------------------------------------------------------------
// The property
// -------------------------------------------------------------------------------------------------

describe("MachinePay invariants over random operation sequences", () => {
  // Runs move the clock to 2e9 and days beyond; later files (properties.test.ts) start their own
  // clock at 2e9, so the chain goes back to where this file found it.
  let before: SnapshotRestorer;
  beforeEach(async () => {
    before = await takeSnapshot();
  });
  afterEach(async () => {
    await before.restore();
  });

  it("caps hold, funds are conserved, nothing settles twice, blocked devices never spend, withdrawals wait for their notice", async function () {
    this.timeout(TIMEOUT_MS);
    const tally = new Tally();
    let steps = 0;
    await fc.assert(
      fc.asyncProperty(
        setupArb,
        fc.array(opArb, { minLength: 1, maxLength: 2 * STEPS - 1, size: "max" }),
        async (setup, ops) => {
          const fx = await loadFixture(invariantFixture);
          const run = new Run(fx, tally);
          await run.start(setup);
          for (const [i, op] of ops.entries()) {
            try {
              await run.apply(op);
              await run.check(false);
            } catch (e) {
              // Which step broke it, for the report (fast-check prints the whole sequence).
              if (e instanceof InvariantViolation) e.message = `step ${i + 1} (${op.kind}): ${e.message}`;
              throw e;
            }
            steps++;
          }
          await run.check(true);
        },
      ),
      {
        numRuns: RUNS,
        seed: SEED,
        path: PATH,
        interruptAfterTimeLimit: TIMEOUT_MS - 60_000,
        markInterruptAsFailure: true,
      },
    );
    if (STATS) console.log(`      ${RUNS} runs, ${steps} steps: ${tally.summary()}`);

    // Not vacuous: each invariant had something to judge, and each blocked state was tried. The
    // counts hold for the default size and seed; smaller runs and replays skip them.
    if (RUNS * STEPS < 1200 || PATH !== undefined) return;
    const atLeast = (n: number, ...names: string[]) => {
      const seen = names.reduce((sum, name) => sum + tally.get(name), 0);
      expect(seen, names.join(" + ")).to.be.at.least(n);
    };
    atLeast(3 * RUNS, "settled:payments");
    atLeast(RUNS / 2, "settled:vouchers");
    atLeast(1, "settled:voucherIncrements");
    atLeast(1, "settled:payeeIsOwner");
    atLeast(1, "settled:feeToAnOwner");
    for (const cap of ["atPaymentCap", "atPeriodCap", "atLifetimeCap"]) atLeast(1, `spends:${cap}`);
    for (const r of ["ExceedsPaymentCap", "ExceedsPeriodCap", "ExceedsLifetimeCap", "InsufficientBalance"]) {
      atLeast(1, `payment:${r}`);
      atLeast(1, `voucher:${r}`);
    }
    for (const r of ["NonceUsed", "NonceTooOld"]) atLeast(1, `payment:${r}`);
    for (const r of ["DevicePaused", "PolicyPaused", "PolicyFrozen", "DeviceRevoked"]) {
      atLeast(1, `payment:${r}`);
      atLeast(1, `voucher:${r}`);
    }
    for (const r of ["NotYetValid", "PolicyExpired", "PayeeNotAllowed", "WrongToken"]) {
      atLeast(1, `payment:${r}`, `voucher:${r}`);
    }
    atLeast(1, "voucher:VoucherStale");
    atLeast(1, "voucher:TabClosed");
    for (const by of ["payee", "owner", "device"]) atLeast(1, `tabCloses:${by}`);
    atLeast(1, "withdrawals:afterNotice");
    atLeast(1, "withdrawals:refusedBeforeReadyAt");
    atLeast(1, "revert:NoticeRequired");
    atLeast(1, "ownerOrders:onboardBySignature");
    atLeast(1, "ownerOrders:revokeBySignature");
    atLeast(1, "revert:InvalidEnrollment");
  });
});

describe("MachinePay invariants: withdrawal notice at the limits of the deployment parameter", () => {
  // BUG: the constructor accepts any noticePeriod, and announceWithdrawal stores
  // readyAt = uint64(block.timestamp + NOTICE_PERIOD) without a check: with a noticePeriod of
  // 2^64 (or anything >= 2^64 - now) readyAt wraps around to about now, and a policy owner
  // executes its withdrawal in the very next block, with no notice at all (pendingWithdrawal shows
  // readyAt = the announcement's own timestamp). Reproduce: deploy MachinePay(2n ** 64n), create a
  // policy, deposit, announceWithdrawal, executeWithdrawal: it succeeds. A bound in the constructor
  // (noticePeriod < 2^32, say) or a checked cast would fix it. The CLI takes the period as a JS
  // number (< 2^53), so only a direct deployment reaches it. Skipped until the contract is fixed.
  it.skip("a policy owner never withdraws before its notice ends, whatever noticePeriod the contract was deployed with", async () => {
    const [owner] = await ethers.getSigners();
    const pay = await ethers.deployContract("MachinePay", [1n << 64n]);
    const usdc = await ethers.deployContract("MockUSDC");
    const token = await usdc.getAddress();
    await usdc.mint(owner.address, 1_000n);
    await usdc.approve(await pay.getAddress(), ethers.MaxUint256);
    await pay.deposit(token, 1_000n);
    await pay.createPolicy({
      token,
      maxPerPayment: 1n,
      maxPerPeriod: 1n,
      periodLength: 60,
      lifetimeMax: 1n,
      validFrom: 0,
      validUntil: 0,
      payeesRestricted: false,
    });
    await pay.announceWithdrawal(token, 1_000n);
    await expect(pay.executeWithdrawal(token, owner.address)).to.be.revertedWithCustomError(pay, "WithdrawalNotReady");
  });
});
