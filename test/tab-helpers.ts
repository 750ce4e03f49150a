/**
 * Helpers for the tab (cumulative voucher) tests: signing and packing vouchers and TabClose
 * messages, and settling a voucher batch while checking that previewVouchers and its logs tell
 * one consistent story (as settleBatch in settle-helpers.ts does for payments).
 */

import { time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type {
  AddressLike,
  BaseWallet,
  ContractTransactionReceipt,
  ContractTransactionResponse,
  Signer,
  TypedDataField,
} from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type Hex,
  type MachinePayDomain,
  type PackedVoucher,
  packVoucher,
  packVoucherAmounts,
  REASONS,
  type ReasonName,
  tabCloseTypes as sdkTabCloseTypes,
  settlementsOf,
  signVoucher,
  toCompactSignature,
  unpackVoucherAmounts,
  type Voucher,
  voucherTypes,
} from "../sdk/src";
import type { MachinePay } from "../typechain-types";
import { NOTICE_PERIOD } from "./fixtures";
import { domainOf, newDevices } from "./helpers";
import { FAR, R, register, sdkLogs, settleFixture } from "./settle-helpers";

export { NOTICE_PERIOD };

/** One period for the life of the test chain: no period rollover unless a test asks for one. */
export const HUGE_PERIOD = 2 ** 32 - 1;

/** sdk `tabCloseTypes` as ethers' mutable TypedDataField records (the sdk's are `as const`). */
export const tabCloseTypes: Record<string, TypedDataField[]> = {
  TabClose: sdkTabCloseTypes.TabClose.map((field) => ({ ...field })),
};

/** sdk `voucherTypes` as ethers' mutable TypedDataField records (the sdk's are `as const`). */
export const ethersVoucherTypes: Record<string, TypedDataField[]> = {
  Voucher: voucherTypes.Voucher.map((field) => ({ ...field })),
};

/** What a test says about a voucher: payee, token and cumulative; tabId 1, deadline FAR and maxFee 0 unless given. */
export type VoucherSpec = Partial<Omit<Voucher, "payee" | "token" | "cumulative">> & {
  payee: string;
  token: string;
  cumulative: bigint;
};

export function toVoucher(spec: VoucherSpec): Voucher {
  return {
    tabId: 1n,
    deadline: FAR,
    maxFee: 0n,
    ...spec,
    payee: spec.payee as Address,
    token: spec.token as Address,
  };
}

/** Sign `spec` with `device` (an ethers wallet, through the sdk) under `domain` and pack it with the submitter's `fee`. */
export async function signVoucherFor(
  domain: MachinePayDomain,
  device: BaseWallet,
  spec: VoucherSpec,
  fee = 0n,
): Promise<PackedVoucher> {
  const v = toVoucher(spec);
  return packVoucher(v, await signVoucher({ signer: device, domain, voucher: v }), fee);
}

/** signVoucherFor under the deployment's own domain. */
export async function voucherBy(
  pay: MachinePay,
  device: BaseWallet,
  spec: VoucherSpec,
  fee = 0n,
): Promise<PackedVoucher> {
  return signVoucherFor(await domainOf(pay), device, spec, fee);
}

/** The same packed voucher with another submitter fee (the fee is not signed). */
export function withFee(v: PackedVoucher, fee: bigint): PackedVoucher {
  const FEE_MASK = ((1n << 96n) - 1n) << 64n;
  return { ...v, terms: (v.terms & ~FEE_MASK) | (fee << 64n) };
}

export type TabCloseMessage = { payee: string; token: string; tabId: bigint; deadline: bigint };

/** The device's EIP-712 TabClose signature in compact form (r, vs). */
export async function signTabClose(pay: MachinePay, device: BaseWallet, msg: TabCloseMessage) {
  const signature = (await device.signTypedData(await domainOf(pay), tabCloseTypes, msg)) as Hex;
  return toCompactSignature(signature);
}

export type VoucherSettledLog = {
  device: string;
  payee: string;
  token: string;
  tabId: bigint;
  increment: bigint;
  cumulative: bigint;
  fee: bigint;
};

export type VoucherOutcome = {
  tx: ContractTransactionResponse;
  receipt: ContractTransactionReceipt;
  /** Per item, from the logs (0 = settled). */
  reasons: number[];
  /** Per item: from the skip logs or VoucherSettled (and equal to what previewVouchers returned). */
  devices: string[];
  settled: VoucherSettledLog[];
  /** The block time the batch settled at. */
  timestamp: number;
};

/** The batch's logs, checked for one consistent story; `token`, if given, must be BatchSettled's. */
export function parseVoucherLogs(
  pay: MachinePay,
  receipt: ContractTransactionReceipt,
  n: number,
  payAddress: string,
  token?: string,
) {
  const reasons: number[] = Array.from({ length: n }, () => 0);
  const devices: string[] = Array.from({ length: n }, () => ethers.ZeroAddress);
  const settled: VoucherSettledLog[] = [];
  const skippedIndexes: number[] = [];
  let batch: { settled: bigint; skipped: bigint; token: string } | undefined;
  for (const log of receipt.logs) {
    if (log.address !== payAddress) continue;
    const parsed = pay.interface.parseLog(log);
    if (!parsed) continue;
    if (parsed.name === "VoucherSkipped") {
      const index = Number(parsed.args.index);
      skippedIndexes.push(index);
      reasons[index] = Number(parsed.args.reason);
      devices[index] = parsed.args.device;
    } else if (parsed.name === "VoucherSettled") {
      const { device, payee, tabId, amounts } = parsed.args;
      const { increment, fee, cumulative } = unpackVoucherAmounts(amounts);
      expect(
        packVoucherAmounts({ increment, fee, cumulative }),
        "VoucherSettled amounts: no bits beyond the fields",
      ).to.equal(amounts);
      settled.push({ device, payee, token: "", tabId, increment, cumulative, fee });
    } else if (parsed.name === "BatchSettled") {
      batch = { settled: parsed.args.settled, skipped: parsed.args.skipped, token: parsed.args.token };
    } else if (parsed.name === "PaymentSettled" || parsed.name === "PaymentSkipped") {
      throw new Error(`settleVouchers emitted ${parsed.name}`);
    }
  }
  expect(skippedIndexes, "skip logs in item order").to.deep.equal([...skippedIndexes].sort((a, b) => a - b));
  expect(new Set(skippedIndexes).size, "one skip log per item").to.equal(skippedIndexes.length);
  expect(settled.length + skippedIndexes.length, "every item is settled or skipped").to.equal(n);
  expect(batch && { settled: batch.settled, skipped: batch.skipped }, "BatchSettled").to.deep.equal({
    settled: BigInt(settled.length),
    skipped: BigInt(skippedIndexes.length),
  });
  if (token !== undefined) expect(batch?.token, "BatchSettled token").to.equal(ethers.getAddress(token));
  for (const s of settled) s.token = batch!.token;
  // The sdk's decoder reads the same settlements, with the token joined from BatchSettled.
  const fromSdk = settlementsOf(sdkLogs(receipt), payAddress as Address).map((s) => {
    if (s.eventName !== "VoucherSettled") throw new Error(`settleVouchers emitted ${s.eventName}`);
    const { device, payee, token, tabId, increment, cumulative, fee } = s;
    return { device, payee, token, tabId, increment, cumulative, fee };
  });
  expect(fromSdk, "sdk settlementsOf vs the parsed logs").to.deep.equal(settled);
  let k = 0;
  for (let i = 0; i < n; i++) if (reasons[i] === 0) devices[i] = settled[k++].device;
  return { reasons, devices, settled };
}

/**
 * `tx` emitted VoucherSettled for this voucher (amounts packed as the event packs them) and the
 * batch's BatchSettled names `token`.
 */
export async function expectVoucherSettled(
  pay: MachinePay,
  tx: ContractTransactionResponse | Promise<ContractTransactionResponse>,
  v: {
    device: string;
    payee: string;
    token: string;
    tabId: bigint;
    increment: bigint;
    cumulative: bigint;
    fee?: bigint;
  },
) {
  const fee = v.fee ?? 0n;
  const response = await tx;
  await expect(response)
    .to.emit(pay, "VoucherSettled")
    .withArgs(
      v.device,
      v.payee,
      v.tabId,
      packVoucherAmounts({ increment: v.increment, fee, cumulative: v.cumulative }),
    );
  const receipt = (await response.wait())!;
  const settled = settlementsOf(sdkLogs(receipt), (await pay.getAddress()) as Address);
  expect(
    settled.some(
      (s) =>
        s.eventName === "VoucherSettled" &&
        s.device === ethers.getAddress(v.device) &&
        s.payee === ethers.getAddress(v.payee) &&
        s.token === ethers.getAddress(v.token) &&
        s.tabId === v.tabId &&
        s.increment === v.increment &&
        s.cumulative === v.cumulative &&
        s.fee === fee,
    ),
    "the settlement, with its batch's token",
  ).to.equal(true);
}

/**
 * settleVouchers a batch and check its logs: one VoucherSkipped per skipped item in order, one
 * VoucherSettled per settled item, BatchSettled with the counts. Unless `at` is given, the batch is
 * first run through previewVouchers (eth_call) and the reasons and devices it returns must match
 * the logs (settleVouchers itself returns nothing).
 */
export async function settleVoucherBatch(
  pay: MachinePay,
  submitter: Signer,
  token: string,
  items: PackedVoucher[],
  opts: { feeRecipient?: AddressLike; at?: number } = {},
): Promise<VoucherOutcome> {
  const feeRecipient = opts.feeRecipient ?? ethers.ZeroAddress;
  let previewed: { reasons: number[]; devices: string[] } | undefined;
  if (opts.at === undefined) {
    const [reasons, devices] = await pay.connect(submitter).previewVouchers.staticCall(token, items, feeRecipient);
    previewed = { reasons: reasons.map(Number), devices: [...devices] };
  } else {
    await time.setNextBlockTimestamp(opts.at);
  }
  const tx = await pay.connect(submitter).settleVouchers(token, items, feeRecipient);
  const receipt = (await tx.wait())!;
  const timestamp = (await receipt.getBlock()).timestamp;
  if (opts.at !== undefined) expect(timestamp).to.equal(opts.at);
  const parsed = parseVoucherLogs(pay, receipt, items.length, await pay.getAddress(), token);
  if (previewed) {
    expect(parsed.reasons, "previewVouchers' reasons agree with settleVouchers' logs").to.deep.equal(previewed.reasons);
    expect(parsed.devices, "previewVouchers' devices agree with settleVouchers' logs").to.deep.equal(previewed.devices);
  }
  return { tx, receipt, timestamp, ...parsed };
}

/** settleVoucherBatch, then: the reasons are exactly `expected`. */
export async function settleVouchersExpect(
  pay: MachinePay,
  submitter: Signer,
  token: string,
  items: PackedVoucher[],
  expected: ReasonName[],
  opts: { feeRecipient?: AddressLike; at?: number } = {},
): Promise<VoucherOutcome> {
  const outcome = await settleVoucherBatch(pay, submitter, token, items, opts);
  expect(
    outcome.reasons.map((r) => REASONS[r]),
    "reasons",
  ).to.deep.equal(expected);
  for (let i = 0; i < items.length; i++) {
    if (expected[i] !== "None") {
      await expect(outcome.tx).to.emit(pay, "VoucherSkipped").withArgs(i, outcome.devices[i], R[expected[i]]);
    }
  }
  return outcome;
}

/** settleFixture plus one device of the owner on a USDC policy with `overrides` (HUGE_PERIOD unless given). */
export async function tabFixtureWith(overrides: Parameters<typeof register>[4] = {}) {
  const f = await settleFixture();
  const [device] = newDevices(1);
  const policyId = await register(f.pay, f.owner, device, f.usdcAddress, { periodLength: HUGE_PERIOD, ...overrides });
  return { ...f, device, policyId, domain: await domainOf(f.pay) };
}

/** The deployment's tab `tabId` between `device` and `payee` in `token`. */
export async function tabOf(pay: MachinePay, device: string, payee: string, token: string, tabId = 1n) {
  const t = await pay.getTab(device, payee, token, tabId);
  return { settled: t.settled, closesAt: t.closesAt };
}

/** The start of the next period window of `length` seconds after the latest block. */
export async function nextWindow(length: number): Promise<number> {
  return (Math.floor((await time.latest()) / length) + 1) * length;
}

// -------------------------------------------------------------------------------------------------
// Reference model for the property tests (test/tab-properties.test.ts)
// -------------------------------------------------------------------------------------------------

/** A device's caps as its policy sets them, token units and seconds. */
export type TabCaps = { maxPerPayment: bigint; maxPerPeriod: bigint; periodLength: bigint; lifetimeMax: bigint };

/** What the model needs of one submitted voucher. */
export type ModelVoucher = {
  device: string;
  payee: string;
  tabId: bigint;
  cumulative: bigint;
  maxFee: bigint;
  fee: bigint;
};

/** A settled voucher as the model predicts it (the fields of VoucherSettled, plus its block time). */
export type ModelSettled = {
  device: string;
  payee: string;
  tabId: bigint;
  increment: bigint;
  cumulative: bigint;
  fee: bigint;
};

/**
 * The tab rules written from the spec (IMachinePay's docs), not from MachinePay.sol: one owner
 * funds every device, no device or policy switch changes, deadlines far away and tabs open. Per
 * device it keeps every settled spend with its time and sums the current window on demand, so it
 * shares no representation with the packed device word.
 */
export class TabModel {
  private readonly settledOf = new Map<string, bigint>();
  private readonly spends = new Map<string, { t: bigint; total: bigint }[]>();
  readonly ledger = new Map<string, bigint>();

  constructor(
    private readonly owner: string,
    private readonly capsOf: (device: string) => TabCaps,
  ) {}

  static tabId(device: string, payee: string, tabId: bigint): string {
    return `${device.toLowerCase()}:${payee.toLowerCase()}:${tabId}`;
  }

  credit(account: string, amount: bigint): void {
    const k = account.toLowerCase();
    this.ledger.set(k, (this.ledger.get(k) ?? 0n) + amount);
  }

  balance(account: string): bigint {
    return this.ledger.get(account.toLowerCase()) ?? 0n;
  }

  settled(device: string, payee: string, tabId: bigint): bigint {
    return this.settledOf.get(TabModel.tabId(device, payee, tabId)) ?? 0n;
  }

  /** What the device has spent in the window containing `t`, and over its life. */
  spent(device: string, t: bigint): { period: bigint; lifetime: bigint } {
    const { periodLength } = this.capsOf(device);
    let period = 0n;
    let lifetime = 0n;
    for (const s of this.spends.get(device.toLowerCase()) ?? []) {
      lifetime += s.total;
      if (s.t / periodLength === t / periodLength) period += s.total;
    }
    return { period, lifetime };
  }

  /** Apply one voucher at block time `t`; returns the reason and, if it settled, what was paid. */
  apply(v: ModelVoucher, t: bigint, feeRecipient: string): { reason: ReasonName; settled?: ModelSettled } {
    if (v.fee > v.maxFee) return { reason: "FeeAboveMax" };
    const tab = TabModel.tabId(v.device, v.payee, v.tabId);
    const before = this.settledOf.get(tab) ?? 0n;
    if (v.cumulative <= before) return { reason: "VoucherStale" };
    const increment = v.cumulative - before;
    const total = increment + v.fee;
    const caps = this.capsOf(v.device);
    if (total > caps.maxPerPayment) return { reason: "ExceedsPaymentCap" };
    const spent = this.spent(v.device, t);
    if (spent.period + total > caps.maxPerPeriod) return { reason: "ExceedsPeriodCap" };
    if (spent.lifetime + total > caps.lifetimeMax) return { reason: "ExceedsLifetimeCap" };
    if (this.balance(this.owner) < total) return { reason: "InsufficientBalance" };
    this.settledOf.set(tab, v.cumulative);
    const list = this.spends.get(v.device.toLowerCase()) ?? [];
    list.push({ t, total });
    this.spends.set(v.device.toLowerCase(), list);
    this.credit(this.owner, -total);
    this.credit(v.payee, increment);
    this.credit(feeRecipient, v.fee);
    return {
      reason: "None",
      settled: { device: v.device, payee: v.payee, tabId: v.tabId, increment, cumulative: v.cumulative, fee: v.fee },
    };
  }
}

/**
 * Throws unless every device stayed within its caps, from VoucherSettled events alone (with their
 * block times): increment + fee <= maxPerPayment, the sum per fixed window <= maxPerPeriod, the sum
 * over all time <= lifetimeMax.
 */
export function assertVouchersWithinCaps(
  settled: (VoucherSettledLog & { t: bigint })[],
  capsOf: (device: string) => TabCaps,
): void {
  const perWindow = new Map<string, bigint>();
  const lifetime = new Map<string, bigint>();
  for (const s of settled) {
    const caps = capsOf(s.device);
    const total = s.increment + s.fee;
    if (total > caps.maxPerPayment) throw new Error(`${s.device} paid ${total} > maxPerPayment ${caps.maxPerPayment}`);
    const w = `${s.device.toLowerCase()}:${s.t / caps.periodLength}`;
    const inWindow = (perWindow.get(w) ?? 0n) + total;
    perWindow.set(w, inWindow);
    if (inWindow > caps.maxPerPeriod) throw new Error(`${s.device} paid ${inWindow} > maxPerPeriod in window ${w}`);
    const life = (lifetime.get(s.device.toLowerCase()) ?? 0n) + total;
    lifetime.set(s.device.toLowerCase(), life);
    if (life > caps.lifetimeMax) throw new Error(`${s.device} paid ${life} > lifetimeMax ${caps.lifetimeMax}`);
  }
}

/** Deterministic device keys, so a fixed seed replays the same addresses and signatures. */
export function tabDeviceWallet(label: string): BaseWallet {
  return new ethers.Wallet(ethers.id(`machinepay-tab-property-device:${label}`)) as unknown as BaseWallet;
}
