import { time } from "@nomicfoundation/hardhat-network-helpers";
import { expect } from "chai";
import type { AddressLike, BaseWallet, ContractTransactionReceipt, ContractTransactionResponse, Signer } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type Hex,
  type MachinePayDomain,
  type PackedPayment,
  type Payment,
  packPayment,
  packPaymentAmounts,
  REASONS,
  type ReasonName,
  settlementsOf,
  signPayment as signWithSdk,
  unpackPaymentAmounts,
} from "../sdk/src";
import type { IMachinePay, MachinePay } from "../typechain-types";
import { deployFixture } from "./fixtures";
import { payment, policyParams, registerDevice, signPayment, USDC, ZERO } from "./helpers";

/** Reason numbers by name (IMachinePay.Reason). */
export const R = Object.fromEntries(REASONS.map((name, i) => [name, i])) as Record<ReasonName, number>;

/** The largest deadline calldata can carry: payments signed with it never expire in a test. */
export const FAR = (1n << 32n) - 1n;

/** Order of the secp256k1 group. */
export const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
export const SECP256K1_N_HALF = SECP256K1_N / 2n;
const LOW_255 = (1n << 255n) - 1n;

/**
 * deployFixture plus a second owner (owner2, 10,000 USDC in escrow) and a second MockUSDC
 * (usdc2, the owner has 1,000 of it in escrow). No policies or devices yet.
 */
export async function settleFixture() {
  const base = await deployFixture();
  const { pay, usdc, owner } = base;
  const signers = await ethers.getSigners();
  const owner2 = signers[5];
  const payAddress = await pay.getAddress();
  await usdc.mint(owner2.address, USDC(1_000_000));
  await usdc.connect(owner2).approve(payAddress, ethers.MaxUint256);
  await pay.connect(owner2).deposit(base.usdcAddress, USDC(10_000));
  const usdc2 = await ethers.deployContract("MockUSDC");
  const usdc2Address = (await usdc2.getAddress()) as Address;
  await usdc2.mint(owner.address, USDC(1_000));
  await usdc2.connect(owner).approve(payAddress, ethers.MaxUint256);
  await pay.connect(owner).deposit(usdc2Address, USDC(1_000));
  return { ...base, owner2, usdc2, usdc2Address, accounts: signers.map((s) => s.address) };
}

export type SettleFixture = Awaited<ReturnType<typeof settleFixture>>;

/** What a test says about a payment; anything left out takes payment()'s default, and the deadline is FAR. */
export type Spec = Partial<Omit<Payment, "payee" | "token">> & { payee: string; token: string };

/** The Payment a spec stands for. */
export function toPayment(spec: Spec): Promise<Payment> {
  return payment({ deadline: FAR, ...spec, payee: spec.payee as Address, token: spec.token as Address });
}

/** Sign `spec` with `device` under the deployment's domain and pack it with the submitter's `fee`. */
export async function signed(pay: MachinePay, device: BaseWallet, spec: Spec, fee = 0n): Promise<PackedPayment> {
  return signPayment(pay, device, await toPayment(spec), fee);
}

/** Sign `spec` under an arbitrary domain (another chain id or verifying contract). */
export async function signedFor(
  domain: MachinePayDomain,
  device: BaseWallet,
  spec: Spec,
  fee = 0n,
): Promise<PackedPayment> {
  const p = await toPayment(spec);
  return packPayment(p, await signWithSdk({ signer: device, domain, payment: p }), fee);
}

/** Create a policy for `owner` in `token` and register `device` on it (with its proof); returns the policy id. */
export async function register(
  pay: MachinePay,
  owner: Signer,
  device: BaseWallet,
  token: string,
  overrides: Partial<IMachinePay.PolicyParamsStruct> = {},
): Promise<bigint> {
  await registerDevice(pay, owner, device, policyParams(token, overrides));
  return pay.policyCount();
}

/** s and the v bit as the contract reads them from an EIP-2098 `vs` word. */
export function splitVs(vs: string): { s: bigint; vBit: bigint } {
  const word = BigInt(vs);
  return { s: word & LOW_255, vBit: word >> 255n };
}

export function word(value: bigint): `0x${string}` {
  return `0x${value.toString(16).padStart(64, "0")}`;
}

export type SettledLog = {
  device: string;
  payee: string;
  /** From the transaction's BatchSettled (PaymentSettled does not carry it). */
  token: string;
  amount: bigint;
  nonce: bigint;
  ref: string;
  fee: bigint;
};

export type Outcome = {
  tx: ContractTransactionResponse;
  receipt: ContractTransactionReceipt;
  /** Per item, decoded from the logs (0 = settled). */
  reasons: number[];
  /** Per item, as preview returned them (only when the batch was previewed first), else from the logs. */
  devices: string[];
  settled: SettledLog[];
};

/** A receipt's logs in the shape the sdk's decoders take. */
export function sdkLogs(receipt: ContractTransactionReceipt) {
  return receipt.logs.map((log) => ({
    address: log.address as Address,
    data: log.data as Hex,
    topics: [...log.topics] as [Hex, ...Hex[]],
    logIndex: log.index,
  }));
}

/**
 * Settle a batch and check that its logs tell one consistent story: one PaymentSkipped per
 * skipped item in order, one PaymentSettled per settled item, BatchSettled with the counts, and
 * the sdk's settlementsOf reads the same settlements (token included) from the raw logs. Unless
 * `at` is given, the batch is first run through preview (eth_call) and the reasons and devices it
 * returns must match the logs (eth_call does not honour setNextBlockTimestamp, so batches pinned
 * to a time skip that). settle itself returns nothing.
 */
export async function settleBatch(
  pay: MachinePay,
  submitter: Signer,
  token: string,
  items: PackedPayment[],
  opts: { feeRecipient?: AddressLike; at?: number } = {},
): Promise<Outcome> {
  const feeRecipient = opts.feeRecipient ?? ZERO;
  let previewed: { reasons: number[]; devices: string[] } | undefined;
  if (opts.at === undefined) {
    const [reasons, devices] = await pay.connect(submitter).preview.staticCall(token, items, feeRecipient);
    previewed = { reasons: reasons.map(Number), devices: [...devices] };
  } else {
    await time.setNextBlockTimestamp(opts.at);
  }
  const tx = await pay.connect(submitter).settle(token, items, feeRecipient);
  const receipt = (await tx.wait())!;
  if (opts.at !== undefined) expect((await receipt.getBlock()).timestamp).to.equal(opts.at);

  const payAddress = await pay.getAddress();
  const reasons: number[] = items.map(() => 0);
  const devices: string[] = items.map(() => ZERO);
  const settled: SettledLog[] = [];
  const skippedIndexes: number[] = [];
  let batch: { settled: bigint; skipped: bigint; token: string } | undefined;
  for (const log of receipt.logs) {
    if (log.address !== payAddress) continue;
    const parsed = pay.interface.parseLog(log);
    if (!parsed) continue;
    if (parsed.name === "PaymentSkipped") {
      const index = Number(parsed.args.index);
      skippedIndexes.push(index);
      reasons[index] = Number(parsed.args.reason);
      devices[index] = parsed.args.device;
    } else if (parsed.name === "PaymentSettled") {
      const { device, payee, ref, amounts } = parsed.args;
      const { amount, fee, nonce } = unpackPaymentAmounts(amounts);
      expect(packPaymentAmounts({ amount, fee, nonce }), "PaymentSettled amounts: no bits beyond the fields").to.equal(
        amounts,
      );
      settled.push({ device, payee, token: "", amount, nonce, ref, fee });
    } else if (parsed.name === "BatchSettled") {
      batch = { settled: parsed.args.settled, skipped: parsed.args.skipped, token: parsed.args.token };
    }
  }
  expect(skippedIndexes, "skip logs in item order").to.deep.equal([...skippedIndexes].sort((a, b) => a - b));
  expect(new Set(skippedIndexes).size, "one skip log per item").to.equal(skippedIndexes.length);
  expect(settled.length + skippedIndexes.length, "every item is settled or skipped").to.equal(items.length);
  expect(batch, "BatchSettled").to.deep.equal({
    settled: BigInt(settled.length),
    skipped: BigInt(skippedIndexes.length),
    token: ethers.getAddress(token),
  });
  for (const s of settled) s.token = batch!.token;
  // The sdk's decoder reads the same settlements, with the token joined from BatchSettled.
  const fromSdk = settlementsOf(sdkLogs(receipt), payAddress as Address).map((s) => {
    if (s.eventName !== "PaymentSettled") throw new Error(`settle emitted ${s.eventName}`);
    return {
      device: s.device,
      payee: s.payee,
      token: s.token,
      amount: s.amount,
      nonce: s.nonce,
      ref: s.ref,
      fee: s.fee,
    };
  });
  expect(fromSdk, "sdk settlementsOf vs the parsed logs").to.deep.equal(settled);
  // Settled items carry their device in PaymentSettled, in item order.
  let k = 0;
  for (let i = 0; i < items.length; i++) if (reasons[i] === 0) devices[i] = settled[k++].device;
  if (previewed) {
    expect(reasons, "preview's reasons agree with settle's logs").to.deep.equal(previewed.reasons);
    expect(devices, "preview's devices agree with settle's logs").to.deep.equal(previewed.devices);
  }
  return { tx, receipt, reasons, devices, settled };
}

/**
 * `tx` emitted PaymentSettled for this payment (amounts packed as the event packs them) and the
 * batch's BatchSettled names `token`.
 */
export async function expectPaymentSettled(
  pay: MachinePay,
  tx: ContractTransactionResponse | Promise<ContractTransactionResponse>,
  p: { device: string; payee: string; token: string; amount: bigint; nonce: bigint; ref?: string; fee?: bigint },
) {
  const fee = p.fee ?? 0n;
  const ref = p.ref ?? ethers.ZeroHash;
  const response = await tx;
  await expect(response)
    .to.emit(pay, "PaymentSettled")
    .withArgs(p.device, p.payee, ref, packPaymentAmounts({ amount: p.amount, fee, nonce: p.nonce }));
  const receipt = (await response.wait())!;
  const settled = settlementsOf(sdkLogs(receipt), (await pay.getAddress()) as Address);
  expect(
    settled.some(
      (s) =>
        s.eventName === "PaymentSettled" &&
        s.device === ethers.getAddress(p.device) &&
        s.payee === ethers.getAddress(p.payee) &&
        s.token === ethers.getAddress(p.token) &&
        s.amount === p.amount &&
        s.fee === fee &&
        s.nonce === p.nonce &&
        s.ref === ref,
    ),
    "the settlement, with its batch's token",
  ).to.equal(true);
}

/** settleBatch, then: the reasons are exactly `expected`, and each skip is in a PaymentSkipped event. */
export async function settleExpect(
  pay: MachinePay,
  submitter: Signer,
  token: string,
  items: PackedPayment[],
  expected: (ReasonName | number)[],
  opts: { feeRecipient?: AddressLike; at?: number } = {},
): Promise<Outcome> {
  const outcome = await settleBatch(pay, submitter, token, items, opts);
  const want = expected.map((r) => (typeof r === "number" ? r : R[r]));
  expect(
    outcome.reasons.map((r) => REASONS[r]),
    "reasons",
  ).to.deep.equal(want.map((r) => REASONS[r]));
  for (let i = 0; i < items.length; i++) {
    if (want[i] !== 0) {
      await expect(outcome.tx).to.emit(pay, "PaymentSkipped").withArgs(i, outcome.devices[i], want[i]);
    }
  }
  return outcome;
}

/** Ledger balances of `accounts` in `token`. */
export async function ledger(pay: MachinePay, token: string, accounts: string[]): Promise<Map<string, bigint>> {
  const out = new Map<string, bigint>();
  for (const a of accounts) out.set(a, await pay.balanceOf(a, token));
  return out;
}

/** The sum of every listed ledger balance equals what the contract holds of the token. */
export async function expectLedgerMatchesHoldings(pay: MachinePay, token: string, accounts: string[]) {
  const erc20 = await ethers.getContractAt("MockUSDC", token);
  let sum = 0n;
  for (const a of new Set(accounts)) sum += await pay.balanceOf(a, token);
  expect(sum, "sum of ledger balances").to.equal(await erc20.balanceOf(await pay.getAddress()));
}

/** A settled payment as a model of its ledger effect. */
export type Move = { owner: string; payee: string; amount: bigint; fee: bigint };

/** Expected balances after `moves` (the settled items) with fees to `feeRecipient`. */
export function applyMoves(before: Map<string, bigint>, moves: Move[], feeRecipient: string): Map<string, bigint> {
  const after = new Map(before);
  const add = (a: string, v: bigint) => after.set(a, (after.get(a) ?? 0n) + v);
  for (const m of moves) {
    add(m.owner, -(m.amount + m.fee));
    add(m.payee, m.amount);
    add(feeRecipient, m.fee);
  }
  return after;
}
