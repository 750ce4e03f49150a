import { time } from "@nomicfoundation/hardhat-network-helpers";
import type { AddressLike, BaseWallet, Signer, TypedDataField } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type DeviceProof,
  type Hex,
  type Onboarding,
  onboardingTypes,
  type Payment,
  type PaymentSigner,
  type PolicyParams,
  paymentTypes,
  REASONS,
  type ReasonName,
  type Revocation,
  revocationTypes,
  signTypedMessage,
} from "../sdk/src";
import type { IMachinePay, MachinePay } from "../typechain-types";
import { domainOf, newDevices, payment, policyParams, registerDevice, signPayment } from "./helpers";

/** The on-chain value of a settlement reason (IMachinePay.Reason). */
export function reason(name: ReasonName): number {
  return REASONS.indexOf(name);
}

/** sdk `paymentTypes` as ethers' mutable TypedDataField records (the sdk's are `as const`). */
export const ethersPaymentTypes: Record<string, TypedDataField[]> = {
  Payment: paymentTypes.Payment.map((field) => ({ ...field })),
};

/** Register a fresh device key (with its proof) for `owner` on a new policy in `token`; returns the key and the policy id. */
export async function registerNewDevice(
  pay: MachinePay,
  owner: Signer,
  token: string,
  overrides: Partial<IMachinePay.PolicyParamsStruct> = {},
) {
  const [device] = newDevices(1);
  await registerDevice(pay, owner, device, policyParams(token, overrides));
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

/** What an owner's signed order says, besides its devices; anything left out takes a default. */
export type OrderFields = Partial<Omit<Onboarding, "owner" | "devices">>;

/**
 * An Onboarding order of `owner` (an EOA or a smart account address) for `devices`: a new policy
 * with `policyParams(token)`, epoch 0, nonce 1, deadline an hour from the latest block.
 */
export async function onboardingOrder(
  owner: AddressLike,
  token: string,
  devices: AddressLike[],
  fields: OrderFields = {},
): Promise<Onboarding> {
  return {
    owner: (await ethers.resolveAddress(owner)) as Address,
    policyId: 0,
    policy: policyParams(token) as unknown as PolicyParams,
    devices: (await Promise.all(devices.map((d) => ethers.resolveAddress(d)))) as Address[],
    epoch: 0,
    nonce: 1n,
    deadline: BigInt((await time.latest()) + 3_600),
    ...fields,
  };
}

/** A Revocation order of `owner` for `devices`: epoch 0, nonce 1, deadline an hour from the latest block. */
export async function revocationOrder(
  owner: AddressLike,
  devices: AddressLike[],
  fields: Partial<Omit<Revocation, "owner" | "devices">> = {},
): Promise<Revocation> {
  return {
    owner: (await ethers.resolveAddress(owner)) as Address,
    devices: (await Promise.all(devices.map((d) => ethers.resolveAddress(d)))) as Address[],
    epoch: 0,
    nonce: 1n,
    deadline: BigInt((await time.latest()) + 3_600),
    ...fields,
  };
}

/** `signer`'s 65-byte EIP-712 signature of an owner order (an EOA's, or the EOA behind a smart account). */
export async function signOrder(pay: MachinePay, signer: PaymentSigner, order: Onboarding | Revocation): Promise<Hex> {
  const domain = await domainOf(pay);
  return "policy" in order
    ? signTypedMessage({ signer, domain, types: onboardingTypes, primaryType: "Onboarding", message: order })
    : signTypedMessage({ signer, domain, types: revocationTypes, primaryType: "Revocation", message: order });
}

/** onboardBySignature's arguments for `order` (its devices go alongside the struct). */
export function onboardingArgs(order: Onboarding, proofs: DeviceProof[], signature: Hex) {
  const { devices, ...fields } = order;
  return [fields, devices, proofs, signature] as const;
}

/** revokeBySignature's arguments for `order`. */
export function revocationArgs(order: Revocation, signature: Hex) {
  const { devices, ...fields } = order;
  return [fields, devices, signature] as const;
}
