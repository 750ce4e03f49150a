import type { BaseWallet, Signer } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type Hex,
  machinePayDomain,
  type Payment,
  packPayment,
  signPayment as signWithSdk,
} from "../sdk/src";
import type { MachinePay } from "../typechain-types";
import type { IMachinePay } from "../typechain-types/contracts/MachinePay";

export const ZERO = ethers.ZeroAddress as Address;
export const DAY = 86_400;
export const USDC = (units: number | bigint) => BigInt(units) * 1_000_000n;

/** Policy parameters with generous defaults; override what a test is about. */
export function policyParams(token: string, overrides: Partial<IMachinePay.PolicyParamsStruct> = {}) {
  return {
    token,
    maxPerPayment: USDC(10),
    maxPerPeriod: USDC(100),
    periodLength: DAY,
    lifetimeMax: USDC(1_000),
    validFrom: 0,
    validUntil: 0,
    payeesRestricted: false,
    ...overrides,
  } satisfies IMachinePay.PolicyParamsStruct;
}

export async function domainOf(pay: MachinePay) {
  const { chainId } = await ethers.provider.getNetwork();
  return machinePayDomain({ chainId, verifyingContract: (await pay.getAddress()) as Address });
}

/** A payment with defaults: 1 USDC, deadline in an hour, no fee, zero ref. */
export async function payment(overrides: Partial<Payment> & Pick<Payment, "payee" | "token">): Promise<Payment> {
  const now = (await ethers.provider.getBlock("latest"))!.timestamp;
  return {
    amount: USDC(1),
    nonce: 0n,
    deadline: BigInt(now + 3600),
    maxFee: 0n,
    ref: ethers.ZeroHash as Hex,
    ...overrides,
  };
}

/** Sign with ethers' EIP-712 signer and pack for settle. */
export async function signPayment(pay: MachinePay, device: Signer | BaseWallet, p: Payment, fee = 0n) {
  const signature = await signWithSdk({ signer: device, domain: await domainOf(pay), payment: p });
  return packPayment(p, signature, fee);
}

/** Random device wallets (not funded: devices never send transactions). */
export function newDevices(n: number): BaseWallet[] {
  return Array.from({ length: n }, () => ethers.Wallet.createRandom() as unknown as BaseWallet);
}
