import type { AddressLike, BaseWallet, Signer, TypedDataField } from "ethers";
import { ethers } from "hardhat";
import { type Address, type Payment, paymentTypes, REASONS, type ReasonName } from "../sdk/src";
import type { IMachinePay, MachinePay } from "../typechain-types";
import { newDevices, payment, policyParams, signPayment } from "./helpers";

/** The on-chain value of a settlement reason (IMachinePay.Reason). */
export function reason(name: ReasonName): number {
  return REASONS.indexOf(name);
}

/** sdk `paymentTypes` as ethers' mutable TypedDataField records (the sdk's are `as const`). */
export const ethersPaymentTypes: Record<string, TypedDataField[]> = {
  Payment: paymentTypes.Payment.map((field) => ({ ...field })),
};

/** Register a fresh device key for `owner` on a new policy in `token`; returns the key and the policy id. */
export async function registerNewDevice(
  pay: MachinePay,
  owner: Signer,
  token: string,
  overrides: Partial<IMachinePay.PolicyParamsStruct> = {},
) {
  const [device] = newDevices(1);
  await pay.connect(owner).registerDevice(device.address, policyParams(token, overrides));
  return { device, policyId: await pay.policyCount() };
}

/** Sign one payment with `device` and settle it alone from `submitter`; returns the transaction. */
export async function settleOne(
  pay: MachinePay,
  submitter: Signer,
  device: BaseWallet,
  overrides: Partial<Omit<Payment, "payee" | "token">> & { payee: string; token: string },
  fee = 0n,
  feeRecipient: AddressLike = ethers.ZeroAddress,
) {
  const p = await payment({ ...overrides, payee: overrides.payee as Address, token: overrides.token as Address });
  return pay.connect(submitter).settle(overrides.token, [await signPayment(pay, device, p, fee)], feeRecipient);
}

/** Sum of ledger balances of `accounts` in `token`. */
export async function ledgerSum(pay: MachinePay, token: string, accounts: AddressLike[]) {
  let sum = 0n;
  for (const account of accounts) sum += await pay.balanceOf(account, token);
  return sum;
}
