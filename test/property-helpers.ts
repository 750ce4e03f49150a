/**
 * Reference model of MachinePay's settlement rules for the property tests (test/properties.test.ts).
 * Written from the spec in IMachinePay.sol (the Reason list and the PolicyParams docs), not from
 * MachinePay.sol: per-device counters are kept per fixed window and nonces as a plain set, so the
 * model shares no representation with the packed contract state it is checked against.
 */

import type { BaseWallet } from "ethers";
import { ethers } from "hardhat";
import {
  LIMITS,
  type MachinePayDomain,
  NONCE_WINDOW,
  type PackedPayment,
  type Payment,
  packPayment,
  paymentTypes,
  REASONS,
  type ReasonName,
} from "../sdk/src";

export const ZERO = ethers.ZeroAddress;
const WINDOW = BigInt(NONCE_WINDOW);

/** On-chain Reason number of a reason name. */
export const reasonCode = (name: ReasonName): number => REASONS.indexOf(name);
export const reasonName = (code: number | bigint): ReasonName => REASONS[Number(code)];

/** Addresses as map keys: one spelling for every address. */
export const key = (address: string): string => address.toLowerCase();

// -------------------------------------------------------------------------------------------------
// Nonces
// -------------------------------------------------------------------------------------------------

export type NonceVerdict = "ok" | "used" | "tooOld";

/**
 * Replay window as the spec states it: a nonce above the highest settled one always settles, one
 * within NONCE_WINDOW-1 below it settles once, anything lower is refused. Kept as the set of every
 * settled nonce; the contract keeps a 24-bit bitmap, `packed()` derives it for comparison.
 */
export class NonceModel {
  private readonly settled = new Set<bigint>();
  private highest: bigint | undefined;

  /** Highest settled nonce, 0 while none has settled (as the contract's nonceTop). */
  get top(): bigint {
    return this.highest ?? 0n;
  }

  get count(): number {
    return this.settled.size;
  }

  has(nonce: bigint): boolean {
    return this.settled.has(nonce);
  }

  check(nonce: bigint): NonceVerdict {
    if (nonce > this.top) return "ok";
    if (this.top - nonce >= WINDOW) return "tooOld";
    return this.settled.has(nonce) ? "used" : "ok";
  }

  mark(nonce: bigint): void {
    if (this.check(nonce) !== "ok") throw new Error(`model: nonce ${nonce} marked but not usable`);
    this.settled.add(nonce);
    if (this.highest === undefined || nonce > this.highest) this.highest = nonce;
  }

  /** The smallest nonce above every settled one (what a well-behaved device sends next). */
  next(): bigint {
    if (this.highest === undefined) return 0n;
    return this.highest < LIMITS.nonce ? this.highest + 1n : LIMITS.nonce;
  }

  /** (nonceTop, nonceWindow) as DeviceState stores them: bit i set = nonce top - i settled. */
  packed(): { top: bigint; window: bigint } {
    const top = this.top;
    let window = 0n;
    for (let i = 0n; i < WINDOW && i <= top; i++) {
      if (this.settled.has(top - i)) window |= 1n << i;
    }
    return { top, window };
  }
}

// -------------------------------------------------------------------------------------------------
// Policies, devices, ledger
// -------------------------------------------------------------------------------------------------

export type PolicyModel = {
  id: number;
  token: string;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  periodLength: bigint;
  lifetimeMax: bigint;
  validFrom: bigint;
  validUntil: bigint;
  restricted: boolean;
  allowed: Set<string>;
  paused: boolean;
  /** The owner's epoch when the policy was last set; it is frozen while this lags the owner's. */
  epoch: number;
};

export type DeviceModel = {
  address: string;
  policyId: number;
  revoked: boolean;
  paused: boolean;
  /** amount + fee settled per fixed window floor(t / periodLength). */
  spentByWindow: Map<bigint, bigint>;
  lifetime: bigint;
  nonces: NonceModel;
};

/** What the model needs to know about one item of a batch. */
export type ModelItem = {
  /** Address the signature recovers to; null when it cannot be recovered (malformed / high s). */
  signer: string | null;
  payee: string;
  amount: bigint;
  nonce: bigint;
  deadline: bigint;
  maxFee: bigint;
  fee: bigint;
};

/** One owner's escrow, policies and devices; every other account only holds a ledger balance. */
export class MachinePayModel {
  readonly policies = new Map<number, PolicyModel>();
  readonly devices = new Map<string, DeviceModel>();
  readonly ledger = new Map<string, bigint>();
  ownerEpoch = 0;

  constructor(readonly owner: string) {}

  balance(account: string): bigint {
    return this.ledger.get(key(account)) ?? 0n;
  }

  credit(account: string, amount: bigint): void {
    this.ledger.set(key(account), this.balance(account) + amount);
  }

  debit(account: string, amount: bigint): void {
    const balance = this.balance(account);
    if (balance < amount) throw new Error(`model: debit ${amount} from ${account} holding ${balance}`);
    this.ledger.set(key(account), balance - amount);
  }

  addPolicy(policy: Omit<PolicyModel, "paused" | "epoch" | "allowed"> & { allowed?: string[] }): PolicyModel {
    const model: PolicyModel = {
      ...policy,
      allowed: new Set((policy.allowed ?? []).map(key)),
      paused: false,
      epoch: this.ownerEpoch,
    };
    this.policies.set(policy.id, model);
    return model;
  }

  /** Re-setting a policy (same parameters) thaws it: it takes the owner's current epoch. */
  resetPolicy(id: number): void {
    this.policy(id).epoch = this.ownerEpoch;
  }

  policy(id: number): PolicyModel {
    const policy = this.policies.get(id);
    if (!policy) throw new Error(`model: no policy ${id}`);
    return policy;
  }

  assign(address: string, policyId: number): DeviceModel {
    const existing = this.devices.get(key(address));
    if (existing) {
      existing.policyId = policyId;
      return existing;
    }
    const device: DeviceModel = {
      address,
      policyId,
      revoked: false,
      paused: false,
      spentByWindow: new Map(),
      lifetime: 0n,
      nonces: new NonceModel(),
    };
    this.devices.set(key(address), device);
    return device;
  }

  device(address: string): DeviceModel | undefined {
    return this.devices.get(key(address));
  }

  /** Fixed window a timestamp falls in under a policy. */
  static window(policy: PolicyModel, t: bigint): bigint {
    return t / policy.periodLength;
  }

  /** amount + fee the device settled in the window that holds `t`. */
  spentInWindow(device: DeviceModel, t: bigint): bigint {
    const policy = this.policy(device.policyId);
    return device.spentByWindow.get(MachinePayModel.window(policy, t)) ?? 0n;
  }

  /** Why settle would skip `item` at block time `t` in a batch of `token`; None if it settles. */
  reason(item: ModelItem, t: bigint, token: string): ReasonName {
    if (item.signer === null) return "InvalidSignature";
    const device = this.device(item.signer);
    if (!device || device.policyId === 0) return "UnknownDevice";
    if (device.revoked) return "DeviceRevoked";
    const policy = this.policy(device.policyId);
    if (device.paused) return "DevicePaused";
    if (policy.paused) return "PolicyPaused";
    if (policy.epoch !== this.ownerEpoch) return "PolicyFrozen";
    if (t < policy.validFrom) return "NotYetValid";
    if (policy.validUntil !== 0n && t >= policy.validUntil) return "PolicyExpired";
    if (key(policy.token) !== key(token)) return "WrongToken";
    if (t >= item.deadline) return "DeadlinePassed";
    if (key(item.payee) === key(ZERO)) return "InvalidPayee";
    if (policy.restricted && !policy.allowed.has(key(item.payee))) return "PayeeNotAllowed";
    if (item.fee > item.maxFee) return "FeeAboveMax";
    const nonce = device.nonces.check(item.nonce);
    if (nonce === "used") return "NonceUsed";
    if (nonce === "tooOld") return "NonceTooOld";
    const total = item.amount + item.fee;
    if (total > policy.maxPerPayment) return "ExceedsPaymentCap";
    if (this.spentInWindow(device, t) + total > policy.maxPerPeriod) return "ExceedsPeriodCap";
    if (device.lifetime + total > policy.lifetimeMax) return "ExceedsLifetimeCap";
    if (this.balance(this.owner) < total) return "InsufficientBalance";
    return "None";
  }

  /** Settle one item as the contract should, updating the model; returns the reason. */
  settle(item: ModelItem, t: bigint, token: string, feeRecipient: string): ReasonName {
    const reason = this.reason(item, t, token);
    if (reason !== "None") return reason;
    const device = this.device(item.signer as string) as DeviceModel;
    const policy = this.policy(device.policyId);
    const total = item.amount + item.fee;
    const window = MachinePayModel.window(policy, t);
    device.spentByWindow.set(window, (device.spentByWindow.get(window) ?? 0n) + total);
    device.lifetime += total;
    device.nonces.mark(item.nonce);
    this.debit(this.owner, total);
    this.credit(item.payee, item.amount);
    this.credit(feeRecipient, item.fee);
    return reason;
  }
}

// -------------------------------------------------------------------------------------------------
// Invariants computed from PaymentSettled events only
// -------------------------------------------------------------------------------------------------

export type SettledPayment = {
  device: string;
  payee: string;
  amount: bigint;
  fee: bigint;
  nonce: bigint;
  /** Timestamp of the block the payment settled in. */
  t: bigint;
};

export type Caps = { maxPerPayment: bigint; maxPerPeriod: bigint; periodLength: bigint; lifetimeMax: bigint };

/**
 * Throws unless every device stayed within its caps: each amount + fee <= maxPerPayment, the sum
 * per fixed window <= maxPerPeriod, the lifetime sum <= lifetimeMax. Uses the events alone.
 */
export function assertWithinCaps(settled: SettledPayment[], capsOf: (device: string) => Caps): void {
  const perWindow = new Map<string, bigint>();
  const lifetime = new Map<string, bigint>();
  for (const s of settled) {
    const caps = capsOf(s.device);
    const total = s.amount + s.fee;
    if (total > caps.maxPerPayment) {
      throw new Error(`device ${s.device} settled ${total} > maxPerPayment ${caps.maxPerPayment} (nonce ${s.nonce})`);
    }
    const windowKey = `${key(s.device)}:${s.t / caps.periodLength}`;
    const inWindow = (perWindow.get(windowKey) ?? 0n) + total;
    perWindow.set(windowKey, inWindow);
    if (inWindow > caps.maxPerPeriod) {
      throw new Error(
        `device ${s.device} settled ${inWindow} > maxPerPeriod ${caps.maxPerPeriod} in window ${s.t / caps.periodLength}`,
      );
    }
    const life = (lifetime.get(key(s.device)) ?? 0n) + total;
    lifetime.set(key(s.device), life);
    if (life > caps.lifetimeMax) {
      throw new Error(`device ${s.device} settled ${life} > lifetimeMax ${caps.lifetimeMax} over its life`);
    }
  }
}

/** Throws if a (device, nonce) pair settled more than once. */
export function assertNoDoubleSettlement(settled: SettledPayment[]): void {
  const seen = new Set<string>();
  for (const s of settled) {
    const id = `${key(s.device)}:${s.nonce}`;
    if (seen.has(id)) throw new Error(`device ${s.device} nonce ${s.nonce} settled twice`);
    seen.add(id);
  }
}

// -------------------------------------------------------------------------------------------------
// Signing
// -------------------------------------------------------------------------------------------------

/** A device's signed payment, kept so it can be resubmitted (with any fee: the fee is not signed). */
export type SignedItem = { signer: BaseWallet; payment: Payment; signature: `0x${string}` };

// ethers wants mutable field lists; the SDK's are readonly.
const PAYMENT_TYPES = { Payment: [...paymentTypes.Payment] };

/** Sign a payment with a known domain (no RPC round trip per signature). */
export async function signWith(domain: MachinePayDomain, signer: BaseWallet, payment: Payment): Promise<SignedItem> {
  const signature = (await signer.signTypedData(domain, PAYMENT_TYPES, payment)) as `0x${string}`;
  return { signer, payment, signature };
}

export function pack(item: SignedItem, fee: bigint): PackedPayment {
  return packPayment(item.payment, item.signature, fee);
}

/** The same payment with an s above n/2: ECDSA.tryRecover refuses it (InvalidSignature). */
export function withHighS(packed: PackedPayment): PackedPayment {
  return { ...packed, vs: `0x${((1n << 255n) - 1n).toString(16)}` };
}

/** The signed words with the amount changed after signing: it recovers to some other key. */
export function withTamperedAmount(packed: PackedPayment): PackedPayment {
  return { ...packed, payeeAmount: packed.payeeAmount ^ 1n };
}

/** Deterministic device keys, so a fixed seed replays the same addresses and signatures. */
export function deviceWallet(label: string): BaseWallet {
  return new ethers.Wallet(ethers.id(`machinepay-property-device:${label}`)) as unknown as BaseWallet;
}
