import type { AddressLike, BaseWallet, Signer } from "ethers";
import { ethers } from "hardhat";
import {
  type Address,
  type DeviceProof,
  type Hex,
  type MachinePayDomain,
  machinePayDomain,
  type Payment,
  type PaymentSigner,
  packPayment,
  signEnrollment,
  signPayment as signWithSdk,
} from "../sdk/src";
import type { MachinePay } from "../typechain-types";
import type { IMachinePay } from "../typechain-types/contracts/MachinePay";

export { NO_PROOF } from "../sdk/src";

export const ZERO = ethers.ZeroAddress as Address;
export const DAY = 86_400;
export const USDC = (units: number | bigint) => BigInt(units) * 1_000_000n;

/** Mocha timeout of a property test: coverage's instrumented build runs them several times slower than 120 s allows. */
export const PROPERTY_TIMEOUT = 900_000;

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

async function addressOf(account: AddressLike): Promise<Address> {
  return (await ethers.resolveAddress(account)) as Address;
}

/** The device key's proof of possession: its Enrollment(owner) signature under `domain` (no RPC call). */
export async function enrollmentFor(
  domain: MachinePayDomain,
  device: PaymentSigner,
  owner: AddressLike,
): Promise<DeviceProof> {
  return signEnrollment({ signer: device, domain, owner: await addressOf(owner) });
}

/** The device key's proof of possession for binding it to `owner` on this deployment. */
export async function enrollment(pay: MachinePay, device: PaymentSigner, owner: AddressLike): Promise<DeviceProof> {
  return enrollmentFor(await domainOf(pay), device, owner);
}

/** registerDevice from `owner`, with the device key's own proof; returns the transaction. */
export async function registerDevice(
  pay: MachinePay,
  owner: Signer,
  device: BaseWallet,
  params: IMachinePay.PolicyParamsStruct,
) {
  return pay.connect(owner).registerDevice(device.address, params, await enrollment(pay, device, owner));
}

/** assignDevices from `owner`, each device with its own proof (a proof is not checked for a key already the owner's). */
export async function assignDevices(pay: MachinePay, owner: Signer, policyId: bigint | number, devices: BaseWallet[]) {
  const domain = await domainOf(pay);
  const proofs = await Promise.all(devices.map((d) => enrollmentFor(domain, d, owner)));
  return pay.connect(owner).assignDevices(
    policyId,
    devices.map((d) => d.address),
    proofs,
  );
}
