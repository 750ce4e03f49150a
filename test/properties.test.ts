/**
 * Property tests of settle against the reference model in test/property-helpers.ts. Each run
 * starts from a fresh fixture, sets every block's timestamp itself and signs with fixed device
 * keys, so a fixed fast-check seed replays the same chain history (coverage figures stay put).
 * PROPERTY_STATS=1 prints how often each reason came up, to retune the generators.
 */

import { loadFixture, time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { BaseWallet, ContractTransactionResponse } from "ethers";
import fc from "fast-check";
import { ethers } from "hardhat";
import {
  type Address,
  type Hex,
  LIMITS,
  type PackedPayment,
  REASONS,
  type ReasonName,
  unpackPaymentAmounts,
} from "../sdk/src";
import type { MachinePay } from "../typechain-types";
import { NOTICE_PERIOD } from "./fixtures";
import { domainOf, enrollmentFor, PROPERTY_TIMEOUT } from "./helpers";
import {
  assertNoDoubleSettlement,
  assertWithinCaps,
  type Caps,
  deviceWallet,
  key,
  MachinePayModel,
  type ModelItem,
  pack,
  reasonName,
  type SettledPayment,
  type SignedItem,
  signWith,
  withHighS,
  withTamperedAmount,
  ZERO,
} from "./property-helpers";

/** Every run's clock starts here, so period boundaries fall at the same place on every machine. */
const START = 2_000_000_000n;
const BIG = 1n << 60n;

// Device keys: A and B share policy 1, C is alone on the restricted policy 2, D's policy pays in
// another token (its items skip as WrongToken), E was never registered.
const DEVICES = ["A", "B", "C", "D", "E"].map(deviceWallet);
const [A, B, C, D] = DEVICES;

async function propertyFixture() {
  const [owner, relayer, payee, payee2, stranger] = await ethers.getSigners();
  const usdc = await ethers.deployContract("MockUSDC");
  const pay = await ethers.deployContract("MachinePay", [NOTICE_PERIOD]);
  await usdc.mint(owner.address, 1_000_000_000n);
  await usdc.connect(owner).approve(await pay.getAddress(), ethers.MaxUint256);
  const domain = await domainOf(pay);
  const token = (await usdc.getAddress()) as Address;
  return { pay, usdc, token, domain, owner, relayer, payee, payee2, stranger };
}
type Fixture = Awaited<ReturnType<typeof propertyFixture>>;

// -------------------------------------------------------------------------------------------------
// Arbitraries
// -------------------------------------------------------------------------------------------------

const capsArb = fc.record({
  maxPerPayment: fc.integer({ min: 2, max: 30 }),
  maxPerPeriod: fc.integer({ min: 4, max: 80 }),
  lifetimeMax: fc.integer({ min: 8, max: 250 }),
  periodLength: fc.constantFrom(10, 60, 3600),
});

const setupArb = fc.record({
  p1: capsArb,
  p2: capsArb,
  /** Policy 2's validity window, seconds after the run's start (null: unbounded). */
  validFrom: fc.option(fc.integer({ min: 1, max: 300 }), { freq: 2 }),
  validUntil: fc.option(fc.integer({ min: 301, max: 20_000 }), { freq: 2 }),
  deposit: fc.integer({ min: 1, max: 400 }),
});
type Setup = typeof setupArb extends fc.Arbitrary<infer T> ? T : never;

const jumpArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("secs" as const), secs: fc.integer({ min: 0, max: 70 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("secs" as const), secs: fc.integer({ min: 0, max: 8000 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("boundary" as const),
      policy: fc.constantFrom(1, 2),
      skip: fc.integer({ min: 0, max: 1 }),
      offset: fc.integer({ min: -1, max: 1 }),
    }),
  },
);

const amountArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("abs" as const), value: fc.integer({ min: 0, max: 12 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("rel" as const),
      // amount + fee lands at, just under or just over one of the bounds
      to: fc.constantFrom("perPayment" as const, "period" as const, "lifetime" as const, "balance" as const),
      delta: fc.integer({ min: -1, max: 1 }),
      /** Keep amount + fee within maxPerPayment, so the later bounds get their turn. */
      withinPaymentCap: fc.boolean(),
    }),
  },
);

const nonceArb = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant("next" as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("ahead" as const), by: fc.integer({ min: 2, max: 40 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("back" as const), by: fc.integer({ min: 0, max: 30 }) }) },
  // around the bottom edge of the window (NONCE_WINDOW = 24)
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("back" as const), by: fc.integer({ min: 22, max: 26 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("abs" as const), value: fc.integer({ min: 0, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("nearMax" as const), by: fc.integer({ min: 0, max: 3 }) }) },
);
type NonceSpec = typeof nonceArb extends fc.Arbitrary<infer T> ? T : never;

const itemArb = fc.record({
  device: fc.oneof(
    { weight: 8, arbitrary: fc.constant(0) },
    { weight: 6, arbitrary: fc.constant(1) },
    { weight: 5, arbitrary: fc.constant(2) },
    { weight: 1, arbitrary: fc.constant(3) },
    { weight: 1, arbitrary: fc.constant(4) },
  ),
  form: fc.oneof(
    { weight: 20, arbitrary: fc.record({ kind: fc.constant("new" as const) }) },
    // resubmit a payment signed earlier in the run, with whatever fee this item picks
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("replay" as const), pick: fc.nat() }) },
    // resubmit an earlier item of this batch verbatim
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("repeat" as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("highS" as const) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("tampered" as const) }) },
  ),
  payee: fc.oneof(
    { weight: 12, arbitrary: fc.constant("payee" as const) },
    { weight: 4, arbitrary: fc.constant("payee2" as const) },
    { weight: 1, arbitrary: fc.constant("stranger" as const) },
    { weight: 1, arbitrary: fc.constant("zero" as const) },
  ),
  amount: amountArb,
  maxFee: fc.integer({ min: 0, max: 3 }),
  fee: fc.oneof(
    { weight: 3, arbitrary: fc.constant("zero" as const) },
    { weight: 3, arbitrary: fc.constant("max" as const) },
    { weight: 2, arbitrary: fc.constant("below" as const) },
    { weight: 1, arbitrary: fc.constant("over" as const) },
  ),
  nonce: nonceArb,
  /** Seconds from the batch's block time to the deadline (<= 0: already passed). */
  deadline: fc.oneof(
    { weight: 6, arbitrary: fc.constant(1_000_000) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 600 }) },
    { weight: 1, arbitrary: fc.integer({ min: -2, max: 2 }) },
  ),
  ref: fc.nat(),
});
type ItemSpec = typeof itemArb extends fc.Arbitrary<infer T> ? T : never;

const batchArb = fc.record({
  kind: fc.constant("batch" as const),
  jump: jumpArb,
  items: fc.array(itemArb, { minLength: 1, maxLength: 8 }),
  feeRecipient: fc.constantFrom("sender" as const, "zero" as const, "stranger" as const),
});

const opArb = fc.oneof(
  { weight: 40, arbitrary: batchArb },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("deposit" as const), amount: fc.integer({ min: 1, max: 200 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("withdraw" as const),
      who: fc.constantFrom("payee" as const, "payee2" as const, "relayer" as const, "stranger" as const),
      percent: fc.integer({ min: 1, max: 100 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("pauseDevice" as const),
      device: fc.integer({ min: 0, max: 3 }),
      paused: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("pausePolicy" as const),
      policy: fc.constantFrom(1, 2),
      paused: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("freezeAll" as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("thaw" as const), policy: fc.constantFrom(1, 2, 3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("revoke" as const), device: fc.integer({ min: 0, max: 3 }) }) },
);
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;
type BatchOp = Extract<Op, { kind: "batch" }>;

const opsArb = fc.array(opArb, { minLength: 1, maxLength: 12 });

// -------------------------------------------------------------------------------------------------
// Scenario: drives the contract and the model side by side
// -------------------------------------------------------------------------------------------------

/** Counts that show a property was exercised, not vacuously true. */
class Coverage {
  readonly reasons = new Map<ReasonName, number>();
  resubmittedAcrossBatches = 0;
  repeatedWithinBatch = 0;
  devicesSettlingInSeveralWindows = 0;

  count(reason: ReasonName): void {
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1);
  }

  seen(reason: ReasonName): number {
    return this.reasons.get(reason) ?? 0;
  }

  summary(): string {
    const reasons = [...this.reasons.entries()].map(([r, n]) => `${r}=${n}`).join(" ");
    return `${reasons} | resubmitted=${this.resubmittedAcrossBatches} repeated=${this.repeatedWithinBatch} multiWindow=${this.devicesSettlingInSeveralWindows}`;
  }
}

type BuiltItem = { packed: PackedPayment; item: ModelItem; expectedSigner: string | null | "tampered" };

type BatchResult = {
  expected: ReasonName[];
  returned: ReasonName[];
  emitted: ReasonName[];
  expectedSigners: (string | null | "tampered")[];
  returnedDevices: string[];
  /** Model's settled items, in batch order, and the PaymentSettled events, in log order. */
  expectedSettled: SettledPayment[];
  emittedSettled: SettledPayment[];
  batchCounts: { settled: bigint; skipped: bigint };
};

const TAMPERED = "tampered";

/** IMachinePay.PolicyParams with the types the model uses. */
type PolicyParams = {
  token: string;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  periodLength: bigint;
  lifetimeMax: bigint;
  validFrom: bigint;
  validUntil: bigint;
  payeesRestricted: boolean;
};

class Scenario {
  readonly model: MachinePayModel;
  readonly settled: SettledPayment[] = [];
  /** Every account that ever held or may hold a ledger balance. */
  readonly accounts = new Set<string>();
  private readonly pool: SignedItem[] = [];
  private readonly caps = new Map<string, Caps>();
  private readonly policyParams = new Map<number, PolicyParams>();
  private clock = START;
  private refs = 0;

  constructor(
    readonly fx: Fixture,
    readonly setup: Setup,
    readonly coverage: Coverage,
  ) {
    this.model = new MachinePayModel(fx.owner.address);
    for (const s of [fx.owner, fx.relayer, fx.payee, fx.payee2, fx.stranger]) this.accounts.add(key(s.address));
  }

  private get pay(): MachinePay {
    return this.fx.pay;
  }

  /** Send a transaction in the next second of the scenario's clock. */
  private async send(tx: () => Promise<ContractTransactionResponse>): Promise<void> {
    this.clock += 1n;
    await time.setNextBlockTimestamp(this.clock);
    await (await tx()).wait();
  }

  async init(): Promise<void> {
    const { pay, owner, token, payee } = this.fx;
    const s = this.setup;
    const params = (c: Setup["p1"], extra: Partial<PolicyParams> = {}): PolicyParams => ({
      token,
      maxPerPayment: BigInt(c.maxPerPayment),
      maxPerPeriod: BigInt(c.maxPerPeriod),
      periodLength: BigInt(c.periodLength),
      lifetimeMax: BigInt(c.lifetimeMax),
      validFrom: 0n,
      validUntil: 0n,
      payeesRestricted: false,
      ...extra,
    });
    const p1 = params(s.p1);
    const p2 = params(s.p2, {
      validFrom: s.validFrom === null ? 0n : START + BigInt(s.validFrom),
      validUntil: s.validUntil === null ? 0n : START + BigInt(s.validUntil),
      payeesRestricted: true,
    });
    const generous = { maxPerPayment: 1000, maxPerPeriod: 1000, lifetimeMax: 1000, periodLength: 60 };
    const p3 = params(generous, { token: this.fx.stranger.address });
    this.policyParams.set(1, p1).set(2, p2).set(3, p3);

    const { domain } = this.fx;
    const proof = (d: BaseWallet) => enrollmentFor(domain, d, owner);
    const [pA, pB, pC, pD] = await Promise.all([A, B, C, D].map(proof));
    await this.send(() => pay.connect(owner).registerDevice(A.address, p1, pA));
    await this.send(() => pay.connect(owner).assignDevices(1, [B.address], [pB]));
    await this.send(() => pay.connect(owner).registerDevice(C.address, p2, pC));
    await this.send(() => pay.connect(owner).setPayees(2, [payee.address], true));
    await this.send(() => pay.connect(owner).registerDevice(D.address, p3, pD));
    await this.send(() => pay.connect(owner).deposit(token, s.deposit));

    const toModel = (id: number, { payeesRestricted, ...p }: PolicyParams, allowed: string[] = []) =>
      this.model.addPolicy({ id, ...p, restricted: payeesRestricted, allowed });
    for (const [id, p, devices] of [
      [1, p1, [A, B]],
      [2, p2, [C]],
      [3, p3, [D]],
    ] as const) {
      const policy = toModel(id, p, id === 2 ? [payee.address] : []);
      for (const d of devices) {
        this.model.assign(d.address, id);
        this.caps.set(key(d.address), policy);
      }
    }
    this.model.credit(owner.address, BigInt(s.deposit));
  }

  capsOf = (device: string): Caps => {
    const caps = this.caps.get(key(device));
    if (!caps) throw new Error(`settled payment of unregistered device ${device}`);
    return caps;
  };

  /** Apply one op to chain and model. Returns the batch's results for batches. */
  async apply(op: Op): Promise<BatchResult | undefined> {
    const { pay, owner, token } = this.fx;
    switch (op.kind) {
      case "batch":
        return this.batch(op);
      case "deposit":
        await this.send(() => pay.connect(owner).deposit(token, op.amount));
        this.model.credit(owner.address, BigInt(op.amount));
        return;
      case "withdraw": {
        const who = this.fx[op.who];
        const amount = (this.model.balance(who.address) * BigInt(op.percent)) / 100n;
        if (amount === 0n) return;
        await this.send(() => pay.connect(who).withdraw(token, amount, who.address));
        this.model.debit(who.address, amount);
        return;
      }
      case "pauseDevice": {
        const device = this.model.device(DEVICES[op.device].address);
        if (!device || device.revoked) return;
        await this.send(() => pay.connect(owner).setDevicePaused(device.address, op.paused));
        device.paused = op.paused;
        return;
      }
      case "pausePolicy":
        await this.send(() => pay.connect(owner).setPolicyPaused(op.policy, op.paused));
        this.model.policy(op.policy).paused = op.paused;
        return;
      case "freezeAll":
        await this.send(() => pay.connect(owner).freezeAll());
        this.model.ownerEpoch += 1;
        return;
      case "thaw": {
        const params = this.policyParams.get(op.policy) as PolicyParams;
        await this.send(() => pay.connect(owner).updatePolicy(op.policy, params));
        this.model.resetPolicy(op.policy);
        return;
      }
      case "revoke": {
        const device = this.model.device(DEVICES[op.device].address);
        if (!device || device.revoked) return;
        await this.send(() => pay.connect(owner).revokeDevice(device.address));
        device.revoked = true;
        return;
      }
    }
  }

  private jumpTo(jump: BatchOp["jump"]): bigint {
    if (jump.kind === "secs") return this.clock + 1n + BigInt(jump.secs);
    const length = this.model.policy(jump.policy).periodLength;
    const boundary = (this.clock / length + 1n + BigInt(jump.skip)) * length;
    const target = boundary + BigInt(jump.offset);
    return target > this.clock ? target : this.clock + 1n;
  }

  private payeeOf(spec: ItemSpec["payee"]): string {
    return spec === "zero" ? ZERO : this.fx[spec].address;
  }

  private feeOf(spec: ItemSpec["fee"], maxFee: bigint): bigint {
    if (spec === "zero") return 0n;
    if (spec === "max") return maxFee;
    if (spec === "below") return maxFee > 0n ? maxFee - 1n : 0n;
    return maxFee + 1n;
  }

  private nonceOf(spec: NonceSpec, signer: BaseWallet): bigint {
    const nonces = this.model.device(signer.address)?.nonces;
    const next = nonces?.next() ?? 0n;
    const top = nonces?.top ?? 0n;
    const clamp = (n: bigint) => (n < 0n ? 0n : n > LIMITS.nonce ? LIMITS.nonce : n);
    switch (spec.kind) {
      case "next":
        return next;
      case "ahead":
        return clamp(top + BigInt(spec.by));
      case "back":
        return clamp(top - BigInt(spec.by));
      case "abs":
        return BigInt(spec.value);
      case "nearMax":
        return LIMITS.nonce - BigInt(spec.by);
    }
  }

  /** amount + fee aimed at a bound of the signer's policy (or an absolute value). */
  private totalOf(spec: ItemSpec["amount"], signer: BaseWallet, t: bigint): bigint {
    const device = this.model.device(signer.address);
    if (spec.kind === "abs" || !device) return BigInt(spec.kind === "abs" ? spec.value : 5 + spec.delta);
    const policy = this.model.policy(device.policyId);
    const delta = BigInt(spec.delta);
    const target = {
      perPayment: policy.maxPerPayment,
      period: policy.maxPerPeriod - this.model.spentInWindow(device, t),
      lifetime: policy.lifetimeMax - device.lifetime,
      balance: this.model.balance(this.fx.owner.address),
    }[spec.to];
    const total = target + delta;
    return spec.withinPaymentCap && total > policy.maxPerPayment ? policy.maxPerPayment : total;
  }

  private toModelItem(signed: SignedItem, fee: bigint, signer: string | null): ModelItem {
    const p = signed.payment;
    return { signer, payee: p.payee, amount: p.amount, nonce: p.nonce, deadline: p.deadline, maxFee: p.maxFee, fee };
  }

  private async buildItem(spec: ItemSpec, built: BuiltItem[], t: bigint): Promise<BuiltItem> {
    if (spec.form.kind === "repeat" && built.length > 0) {
      this.coverage.repeatedWithinBatch++;
      return built[spec.form.pick % built.length];
    }
    if (spec.form.kind === "replay" && this.pool.length > 0) {
      this.coverage.resubmittedAcrossBatches++;
      const signed = this.pool[spec.form.pick % this.pool.length];
      const fee = this.feeOf(spec.fee, signed.payment.maxFee);
      return {
        packed: pack(signed, fee),
        item: this.toModelItem(signed, fee, signed.signer.address),
        expectedSigner: signed.signer.address,
      };
    }
    const signer = DEVICES[spec.device];
    const maxFee = BigInt(spec.maxFee);
    const fee = this.feeOf(spec.fee, maxFee);
    const total = this.totalOf(spec.amount, signer, t);
    const amount = total - fee > 0n ? total - fee : 0n;
    const signed = await signWith(this.fx.domain, signer, {
      payee: this.payeeOf(spec.payee) as Address,
      token: this.fx.token,
      amount,
      nonce: this.nonceOf(spec.nonce, signer),
      deadline: t + BigInt(spec.deadline),
      maxFee,
      ref: ethers.toBeHex(++this.refs * 1_000_003 + spec.ref, 32) as Hex,
    });
    const packed = pack(signed, fee);
    if (spec.form.kind === "highS") {
      return { packed: withHighS(packed), item: this.toModelItem(signed, fee, null), expectedSigner: null };
    }
    if (spec.form.kind === "tampered") {
      // The amount changed after signing: the signature recovers to a key the contract never saw.
      const item = this.toModelItem(signed, fee, TAMPERED);
      item.amount ^= 1n;
      return { packed: withTamperedAmount(packed), item, expectedSigner: TAMPERED };
    }
    this.pool.push(signed);
    return { packed, item: this.toModelItem(signed, fee, signer.address), expectedSigner: signer.address };
  }

  private async batch(op: BatchOp): Promise<BatchResult> {
    const { pay, relayer, stranger, token } = this.fx;
    const t = this.jumpTo(op.jump);
    const feeRecipientArg = op.feeRecipient === "stranger" ? stranger.address : ZERO;
    const feeRecipient = op.feeRecipient === "stranger" ? stranger.address : relayer.address;

    const built: BuiltItem[] = [];
    const expected: ReasonName[] = [];
    const expectedSettled: SettledPayment[] = [];
    for (const spec of op.items) {
      const b = await this.buildItem(spec, built, t);
      built.push(b);
      const reason = this.model.settle(b.item, t, token, feeRecipient);
      expected.push(reason);
      if (reason === "None") {
        const { signer, payee, amount, fee, nonce } = b.item;
        expectedSettled.push({ device: signer as string, payee, amount, fee, nonce, t });
      }
    }
    const payments = built.map((b) => b.packed);

    // What preview says settle will do, from a call in the very block the transaction then lands in.
    await time.setNextBlockTimestamp(t);
    const [reasons, devices] = await pay
      .connect(relayer)
      .preview.staticCall(token, payments, feeRecipientArg, { blockTag: "pending" });
    await time.setNextBlockTimestamp(t);
    const receipt = await (await pay.connect(relayer).settle(token, payments, feeRecipientArg)).wait();
    if (!receipt) throw new Error("settle: no receipt");
    this.clock = t;
    const block = await ethers.provider.getBlock(receipt.blockNumber);
    expect(BigInt(block?.timestamp ?? 0), "settle block time").to.equal(t);

    const emitted: ReasonName[] = payments.map(() => "None");
    const emittedSettled: SettledPayment[] = [];
    let batchCounts = { settled: -1n, skipped: -1n };
    const payAddress = await pay.getAddress();
    for (const log of receipt.logs) {
      if (key(log.address) !== key(payAddress)) continue;
      const parsed = pay.interface.parseLog(log);
      if (parsed?.name === "PaymentSkipped") emitted[Number(parsed.args.index)] = reasonName(parsed.args.reason);
      if (parsed?.name === "PaymentSettled") {
        const { device, payee, amounts } = parsed.args;
        const { amount, fee, nonce } = unpackPaymentAmounts(amounts);
        emittedSettled.push({ device, payee, amount, fee, nonce, t });
        this.accounts.add(key(payee));
      }
      if (parsed?.name === "BatchSettled") {
        batchCounts = { settled: parsed.args.settled, skipped: parsed.args.skipped };
        this.accounts.add(key(parsed.args.feeRecipient));
      }
    }
    this.settled.push(...emittedSettled);
    const returned = [...reasons].map(reasonName);
    for (const r of returned) this.coverage.count(r);
    return {
      expected,
      returned,
      emitted,
      expectedSigners: built.map((b) => b.expectedSigner),
      returnedDevices: [...devices],
      expectedSettled,
      emittedSettled,
      batchCounts,
    };
  }

  /** Devices that settled in more than one fixed window (period rollover exercised). */
  multiWindowDevices(): number {
    const windows = new Map<string, Set<bigint>>();
    for (const s of this.settled) {
      const set = windows.get(key(s.device)) ?? new Set();
      set.add(s.t / this.capsOf(s.device).periodLength);
      windows.set(key(s.device), set);
    }
    return [...windows.values()].filter((w) => w.size > 1).length;
  }

  /** Throws unless the devices' stored state and every ledger balance match the model. */
  async expectStateMatchesModel(): Promise<void> {
    const { pay, token } = this.fx;
    for (const device of this.model.devices.values()) {
      const state = await pay.getDevice(device.address);
      const { top, window } = device.nonces.packed();
      expect(state.nonceTop, `nonceTop of ${device.address}`).to.equal(top);
      expect(state.nonceWindow, `nonceWindow of ${device.address}`).to.equal(window);
      expect(state.lifetimeSpent, `lifetimeSpent of ${device.address}`).to.equal(device.lifetime);
      if (device.lifetime > 0n) {
        expect(state.periodSpent, `periodSpent of ${device.address}`).to.equal(
          device.spentByWindow.get(state.periodIndex) ?? 0n,
        );
      }
      expect(state.paused, `paused of ${device.address}`).to.equal(device.paused);
    }
    for (const account of this.accounts) {
      expect(await pay.balanceOf(account, token), `ledger balance of ${account}`).to.equal(this.model.balance(account));
    }
  }

  /** Throws unless the ledger balances of every account seen add up to what the contract holds. */
  async expectConservation(): Promise<void> {
    const { pay, usdc, token } = this.fx;
    let sum = 0n;
    for (const account of this.accounts) sum += await pay.balanceOf(account, token);
    expect(sum, "sum of ledger balances vs token.balanceOf(MachinePay)").to.equal(
      await usdc.balanceOf(await pay.getAddress()),
    );
  }
}

async function runScenario(
  setup: Setup,
  ops: Op[],
  coverage: Coverage,
  afterOp: (s: Scenario, result: BatchResult | undefined) => Promise<void>,
): Promise<Scenario> {
  const fx = await loadFixture(propertyFixture);
  const scenario = new Scenario(fx, setup, coverage);
  await scenario.init();
  for (const op of ops) await afterOp(scenario, await scenario.apply(op));
  coverage.devicesSettlingInSeveralWindows += scenario.multiWindowDevices();
  return scenario;
}

const VERBOSE = process.env.PROPERTY_STATS === "1";

// -------------------------------------------------------------------------------------------------
// Properties
// -------------------------------------------------------------------------------------------------

describe("settle: properties over random batch sequences", () => {
  it("skips exactly what the reference model skips, for the same reason, and no device exceeds a cap", async function () {
    this.timeout(PROPERTY_TIMEOUT);
    const coverage = new Coverage();
    await fc.assert(
      fc.asyncProperty(setupArb, opsArb, async (setup, ops) => {
        const scenario = await runScenario(setup, ops, coverage, async (s, result) => {
          if (!result) return;
          expect(result.returned, "preview's reasons vs the model").to.deep.equal(result.expected);
          expect(result.emitted, "PaymentSkipped reasons vs preview's").to.deep.equal(result.returned);
          result.expectedSigners.forEach((signer, i) => {
            const device = result.returnedDevices[i];
            if (signer === null) expect(device, `device of item ${i}`).to.equal(ZERO);
            else if (signer === TAMPERED) expect(device, `device of item ${i}`).to.not.equal(ZERO);
            else expect(key(device), `device of item ${i}`).to.equal(key(signer));
          });
          const keyed = (xs: SettledPayment[]) => xs.map((x) => ({ ...x, device: key(x.device), payee: key(x.payee) }));
          expect(keyed(result.emittedSettled), "PaymentSettled events").to.deep.equal(keyed(result.expectedSettled));
          expect(result.batchCounts.settled).to.equal(BigInt(result.expectedSettled.length));
          expect(result.batchCounts.skipped).to.equal(BigInt(result.expected.length - result.expectedSettled.length));
          assertWithinCaps(s.settled, s.capsOf);
          await s.expectStateMatchesModel();
        });
        assertWithinCaps(scenario.settled, scenario.capsOf);
      }),
      { numRuns: 80, seed: 20261123 },
    );
    if (VERBOSE) console.log(`      ${coverage.summary()}`);

    // Not vacuous: payments settled, and every reason the generators aim at was produced.
    expect(coverage.seen("None")).to.be.greaterThan(50);
    // Every skip reason settle can give: InvalidSignature (1) through InsufficientBalance (19).
    const aimedAt: readonly ReasonName[] = REASONS.slice(1, REASONS.indexOf("InsufficientBalance") + 1);
    for (const reason of aimedAt) expect(coverage.seen(reason), `items skipped as ${reason}`).to.be.greaterThan(0);
    expect(coverage.devicesSettlingInSeveralWindows, "devices settling across period boundaries").to.be.greaterThan(5);
  });

  it("conserves funds: the ledger balances of all accounts add up to the contract's token balance", async function () {
    this.timeout(PROPERTY_TIMEOUT);
    const coverage = new Coverage();
    await fc.assert(
      fc.asyncProperty(setupArb, opsArb, async (setup, ops) => {
        await runScenario(setup, ops, coverage, async (s) => s.expectConservation());
      }),
      { numRuns: 40, seed: 4242 },
    );
    if (VERBOSE) console.log(`      ${coverage.summary()}`);
    expect(coverage.seen("None")).to.be.greaterThan(30);
    expect(coverage.seen("InsufficientBalance")).to.be.greaterThan(0);
  });

  it("never settles the same (device, nonce) twice, however often a signed payment is resubmitted", async function () {
    this.timeout(PROPERTY_TIMEOUT);
    const coverage = new Coverage();
    await fc.assert(
      fc.asyncProperty(setupArb, opsArb, async (setup, ops) => {
        const scenario = await runScenario(setup, ops, coverage, async (s, result) => {
          if (result) assertNoDoubleSettlement(s.settled);
        });
        assertNoDoubleSettlement(scenario.settled);
      }),
      { numRuns: 40, seed: 777 },
    );
    if (VERBOSE) console.log(`      ${coverage.summary()}`);
    expect(coverage.resubmittedAcrossBatches, "payments resubmitted in later items or batches").to.be.greaterThan(20);
    expect(coverage.repeatedWithinBatch, "items repeated within a batch").to.be.greaterThan(20);
    expect(coverage.seen("NonceUsed")).to.be.greaterThan(10);
    expect(coverage.seen("None")).to.be.greaterThan(30);
  });
});

// -------------------------------------------------------------------------------------------------
// NonceWindow: the library is internal, so it is checked through settle, getDevice and nonceStatus
// -------------------------------------------------------------------------------------------------

const windowNonceArb = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("next" as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("ahead" as const), by: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("back" as const), by: fc.integer({ min: 0, max: 30 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("abs" as const), value: fc.integer({ min: 0, max: 80 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("nearMax" as const), by: fc.integer({ min: 0, max: 30 }) }) },
);

describe("NonceWindow: properties through settle, getDevice and nonceStatus", () => {
  it("accepts, refuses and records nonces exactly as a set-of-settled-nonces window of 24 does", async function () {
    this.timeout(PROPERTY_TIMEOUT);
    const device = deviceWallet("nonces");
    const outcomes = new Map<ReasonName, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(windowNonceArb, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 5 }),
        async (batches) => {
          const { pay, owner, relayer, payee, token, domain } = await loadFixture(propertyFixture);
          let clock = START;
          const at = async () => time.setNextBlockTimestamp(++clock);
          await at();
          await pay.connect(owner).registerDevice(
            device.address,
            {
              token,
              maxPerPayment: BIG,
              maxPerPeriod: BIG,
              periodLength: 60,
              lifetimeMax: BIG,
              validFrom: 0,
              validUntil: 0,
              payeesRestricted: false,
            },
            await enrollmentFor(domain, device, owner),
          );
          await at();
          await pay.connect(owner).deposit(token, 1_000_000);
          const model = new MachinePayModel(owner.address).assign(device.address, 1).nonces;

          for (const specs of batches) {
            const expected: ReasonName[] = [];
            const payments: PackedPayment[] = [];
            for (const spec of specs) {
              const nonce = (() => {
                const clamp = (n: bigint) => (n < 0n ? 0n : n > LIMITS.nonce ? LIMITS.nonce : n);
                switch (spec.kind) {
                  case "next":
                    return model.next();
                  case "ahead":
                    return clamp(model.top + BigInt(spec.by));
                  case "back":
                    return clamp(model.top - BigInt(spec.by));
                  case "abs":
                    return BigInt(spec.value);
                  case "nearMax":
                    return LIMITS.nonce - BigInt(spec.by);
                }
              })();
              const verdict = model.check(nonce);
              if (verdict === "ok") model.mark(nonce);
              expected.push(verdict === "ok" ? "None" : verdict === "used" ? "NonceUsed" : "NonceTooOld");
              const signed = await signWith(domain, device, {
                payee: payee.address as Address,
                token,
                amount: 1n,
                nonce,
                deadline: START + 1_000_000n,
                maxFee: 0n,
                ref: ethers.ZeroHash as Hex,
              });
              payments.push(pack(signed, 0n));
            }
            await at();
            const [reasons] = await pay
              .connect(relayer)
              .preview.staticCall(token, payments, ZERO, { blockTag: "pending" });
            await time.setNextBlockTimestamp(clock);
            await (await pay.connect(relayer).settle(token, payments, ZERO)).wait();
            const returned = [...reasons].map(reasonName);
            expect(returned, "preview's reasons vs the model window").to.deep.equal(expected);
            for (const r of returned) outcomes.set(r, (outcomes.get(r) ?? 0) + 1);

            const { top, window } = model.packed();
            const state = await pay.getDevice(device.address);
            expect(state.nonceTop, "nonceTop").to.equal(top);
            expect(state.nonceWindow, "nonceWindow").to.equal(window);

            // Every nonce from below the window's bottom edge to just above the top.
            const probes: bigint[] = [];
            for (let n = top > 27n ? top - 27n : 0n; n <= top + 2n && n <= LIMITS.nonce; n++) probes.push(n);
            const statuses = await Promise.all(probes.map((n) => pay.nonceStatus(device.address, n)));
            probes.forEach((n, i) => {
              const verdict = model.check(n);
              const want = verdict === "ok" ? "None" : verdict === "used" ? "NonceUsed" : "NonceTooOld";
              expect(reasonName(statuses[i]), `nonceStatus(${n}) with top ${top}`).to.equal(want);
            });
            expect(reasonName(await pay.nonceStatus(device.address, LIMITS.nonce + 1n))).to.equal("NonceTooLarge");
          }
        },
      ),
      { numRuns: 40, seed: 24 },
    );
    if (VERBOSE) console.log(`      ${[...outcomes.entries()].map(([r, n]) => `${r}=${n}`).join(" ")}`);
    for (const reason of ["None", "NonceUsed", "NonceTooOld"] as const) {
      expect(outcomes.get(reason) ?? 0, `items with ${reason}`).to.be.greaterThan(10);
    }
  });
});
