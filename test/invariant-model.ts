/**
 * What the invariant suite (test/invariants.test.ts) knows about a MachinePay deployment: state
 * rebuilt from the contract's events alone (EventMirror), the invariants judged on each event as it
 * is replayed, and the comparison of that state with the contract's views after every step.
 *
 * Nothing here predicts which item settles: the rules of settlement are only used as invariants
 * on what did settle (caps, nonces, tabs, device and policy state, withdrawal notice), so a wrong
 * guess about the contract's behaviour can only hide a bug behind a false alarm, never pass one.
 */

import { ethers } from "hardhat";
import {
  NONCE_WINDOW,
  packPaymentAmounts,
  REASONS,
  type ReasonName,
  unpackPaymentAmounts,
  unpackVoucherAmounts,
} from "../sdk/src";
import type { MachinePay } from "../typechain-types";

/** The policy id a revoked device points to (MachinePay.REVOKED). */
export const REVOKED = 0xffffffffn;
/** The native coin's token address, and the zero address. */
export const NATIVE = ethers.ZeroAddress.toLowerCase();
const ZERO = NATIVE;

/** Addresses as map keys: one spelling for every address. */
export const key = (address: string): string => address.toLowerCase();
const pair = (account: string, token: string) => `${key(account)}:${key(token)}`;

export class InvariantViolation extends Error {
  constructor(message: string) {
    super(`invariant violated: ${message}`);
    this.name = "InvariantViolation";
  }
}

/** min of two bigints (Math.min takes numbers). */
function smaller(a: bigint, b: bigint): bigint {
  if (a < b) return a;
  return b;
}

function must(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new InvariantViolation(message());
}

// -------------------------------------------------------------------------------------------------
// Events, decoded
// -------------------------------------------------------------------------------------------------

export type PolicyFields = {
  owner: string;
  epoch: bigint;
  validFrom: bigint;
  validUntil: bigint;
  token: string;
  periodLength: bigint;
  payeesRestricted: boolean;
  paused: boolean;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  lifetimeMax: bigint;
};

/** A policy as the contract returns or emits it, addresses in lower case. */
export function policyFieldsOf(
  p: { [K in keyof PolicyFields]: PolicyFields[K] extends string ? string : PolicyFields[K] },
): PolicyFields {
  return {
    owner: key(p.owner),
    epoch: p.epoch,
    validFrom: p.validFrom,
    validUntil: p.validUntil,
    token: key(p.token),
    periodLength: p.periodLength,
    payeesRestricted: p.payeesRestricted,
    paused: p.paused,
    maxPerPayment: p.maxPerPayment,
    maxPerPeriod: p.maxPerPeriod,
    lifetimeMax: p.lifetimeMax,
  };
}

/** MachinePay's events as plain values, addresses in lower case. */
export type MachinePayEvent =
  | { name: "Deposited"; account: string; token: string; amount: bigint }
  | { name: "Withdrawn"; account: string; token: string; to: string; amount: bigint }
  | { name: "WithdrawalAnnounced"; owner: string; token: string; amount: bigint; readyAt: bigint }
  | { name: "WithdrawalCancelled"; owner: string; token: string }
  | { name: "PolicySet"; policyId: bigint; owner: string; policy: PolicyFields }
  | { name: "PayeesSet"; policyId: bigint; payees: string[]; allowed: boolean }
  | { name: "PolicyPausedSet"; policyId: bigint; paused: boolean }
  | { name: "DeviceAssigned"; device: string; policyId: bigint }
  | { name: "DevicePausedSet"; device: string; paused: boolean }
  | { name: "DeviceRevokedForever"; device: string; owner: string }
  | { name: "OwnerFrozen"; owner: string; epoch: bigint }
  | { name: "PaymentSettled"; device: string; payee: string; ref: string; amount: bigint; fee: bigint; nonce: bigint }
  | { name: "PaymentSkipped" | "VoucherSkipped"; index: number; device: string; reason: ReasonName }
  | {
      name: "VoucherSettled";
      device: string;
      payee: string;
      tabId: bigint;
      increment: bigint;
      fee: bigint;
      cumulative: bigint;
      /** The raw word: no bits beyond the three fields may be set. */
      amounts: bigint;
    }
  | {
      name: "TabClosing";
      tabKey: string;
      device: string;
      payee: string;
      token: string;
      tabId: bigint;
      closesAt: bigint;
      by: string;
    }
  | { name: "BatchSettled"; submitter: string; feeRecipient: string; token: string; settled: bigint; skipped: bigint };

type Log = { address: string; topics: readonly string[]; data: string };

/** The MachinePay events among `logs` (a receipt's), in log order. Unknown MachinePay logs are a violation. */
export function decodeEvents(pay: MachinePay, payAddress: string, logs: readonly Log[]): MachinePayEvent[] {
  const out: MachinePayEvent[] = [];
  for (const log of logs) {
    if (key(log.address) !== key(payAddress)) continue;
    const parsed = pay.interface.parseLog({ topics: [...log.topics], data: log.data });
    must(parsed !== null, () => `MachinePay emitted a log its ABI does not know: ${log.topics[0]}`);
    const a = parsed.args;
    switch (parsed.name) {
      case "Deposited":
        out.push({ name: parsed.name, account: key(a.account), token: key(a.token), amount: a.amount });
        break;
      case "Withdrawn":
        out.push({ name: parsed.name, account: key(a.account), token: key(a.token), to: key(a.to), amount: a.amount });
        break;
      case "WithdrawalAnnounced":
        out.push({ name: parsed.name, owner: key(a.owner), token: key(a.token), amount: a.amount, readyAt: a.readyAt });
        break;
      case "WithdrawalCancelled":
        out.push({ name: parsed.name, owner: key(a.owner), token: key(a.token) });
        break;
      case "PolicySet": {
        const p = a.policy;
        out.push({
          name: parsed.name,
          policyId: a.policyId,
          owner: key(a.owner),
          policy: policyFieldsOf(p),
        });
        break;
      }
      case "PayeesSet":
        out.push({ name: parsed.name, policyId: a.policyId, payees: [...a.payees].map(key), allowed: a.allowed });
        break;
      case "PolicyPausedSet":
        out.push({ name: parsed.name, policyId: a.policyId, paused: a.paused });
        break;
      case "DeviceAssigned":
        out.push({ name: parsed.name, device: key(a.device), policyId: a.policyId });
        break;
      case "DevicePausedSet":
        out.push({ name: parsed.name, device: key(a.device), paused: a.paused });
        break;
      case "DeviceRevokedForever":
        out.push({ name: parsed.name, device: key(a.device), owner: key(a.owner) });
        break;
      case "OwnerFrozen":
        out.push({ name: parsed.name, owner: key(a.owner), epoch: a.epoch });
        break;
      case "PaymentSettled":
        out.push({
          name: parsed.name,
          device: key(a.device),
          payee: key(a.payee),
          ref: a.ref,
          ...unpackPaymentAmounts(a.amounts),
        });
        must(
          packPaymentAmounts(unpackPaymentAmounts(a.amounts)) === a.amounts,
          () => `PaymentSettled amounts ${a.amounts} has bits beyond its fields`,
        );
        break;
      case "PaymentSkipped":
      case "VoucherSkipped":
        out.push({
          name: parsed.name,
          index: Number(a.index),
          device: key(a.device),
          reason: REASONS[Number(a.reason)],
        });
        break;
      case "VoucherSettled":
        out.push({
          name: parsed.name,
          device: key(a.device),
          payee: key(a.payee),
          tabId: a.tabId,
          ...unpackVoucherAmounts(a.amounts),
          amounts: a.amounts,
        });
        break;
      case "TabClosing":
        out.push({
          name: parsed.name,
          tabKey: a.tabKey,
          device: key(a.device),
          payee: key(a.payee),
          token: key(a.token),
          tabId: a.tabId,
          closesAt: a.closesAt,
          by: key(a.by),
        });
        break;
      case "BatchSettled":
        out.push({
          name: parsed.name,
          submitter: key(a.submitter),
          feeRecipient: key(a.feeRecipient),
          token: key(a.token),
          settled: a.settled,
          skipped: a.skipped,
        });
        break;
      default:
        throw new InvariantViolation(`MachinePay emitted ${parsed.name}, which this suite does not know`);
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// What the driver says about the transaction whose events are replayed
// -------------------------------------------------------------------------------------------------

/** A payment as submitted: `signer` is the key that signed it (null: no key signed these words). */
export type SubmittedPayment = {
  signer: string | null;
  payee: string;
  amount: bigint;
  nonce: bigint;
  ref: string;
  deadline: bigint;
  maxFee: bigint;
  fee: bigint;
};

export type SubmittedVoucher = {
  signer: string;
  payee: string;
  tabId: bigint;
  cumulative: bigint;
  deadline: bigint;
  maxFee: bigint;
  fee: bigint;
};

/** The function the step called: the events of each are judged against what it may do. */
export type TxContext =
  | { kind: "settle"; submitter: string; feeRecipient: string; items: SubmittedPayment[] }
  | { kind: "settleVouchers"; submitter: string; feeRecipient: string; items: SubmittedVoucher[] }
  | { kind: "withdraw" }
  | { kind: "executeWithdrawal" }
  | { kind: "closeTab"; sender: string }
  | { kind: "closeTabBySignature" }
  /** `forgedProofs`: devices whose proof in this call is not their key's Enrollment over the owner. */
  | { kind: "admin"; forgedProofs?: string[] };

// -------------------------------------------------------------------------------------------------
// State rebuilt from events
// -------------------------------------------------------------------------------------------------

export type MirrorPolicy = PolicyFields & { id: bigint; allowed: Set<string> };

export type MirrorDevice = {
  address: string;
  /** The owner the key is bound to, for good. */
  owner: string;
  policyId: bigint;
  paused: boolean;
  revoked: boolean;
  /** amount + fee over the device's life, every token (one counter, as the README says). */
  lifetime: bigint;
  /** The window the device last settled in and what it settled there (see settleSpend). */
  window: { index: bigint; spent: bigint } | undefined;
  nonces: Set<bigint>;
};

export type MirrorTab = {
  device: string;
  payee: string;
  token: string;
  tabId: bigint;
  settled: bigint;
  closesAt: bigint;
  /** Every settled cumulative, in order. */
  history: bigint[];
};

export type Announcement = { amount: bigint; readyAt: bigint };

/** Counts that show the invariants were exercised rather than vacuously true. */
export class Tally {
  readonly counts = new Map<string, number>();

  add(name: string, n = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + n);
  }

  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }

  summary(): string {
    return [...this.counts.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  }
}

export function tabKeyOf(device: string, payee: string, token: string, tabId: bigint): string {
  return ethers.keccak256(
    ethers.AbiCoder.defaultAbiCoder().encode(
      ["address", "address", "address", "uint256"],
      [device, payee, token, tabId],
    ),
  );
}

/**
 * MachinePay's state as its events tell it, and the invariants that every event must keep. `apply`
 * replays one transaction's events (in log order, at its block time) and throws an
 * InvariantViolation at the first event that breaks one.
 */
export class EventMirror {
  readonly policies = new Map<bigint, MirrorPolicy>();
  readonly devices = new Map<string, MirrorDevice>();
  readonly epochs = new Map<string, bigint>();
  readonly owners = new Set<string>();
  /** Ledger balance per `account:token`. */
  readonly ledger = new Map<string, bigint>();
  readonly tabs = new Map<string, MirrorTab>();
  /** Live announcement per `owner:token`; also every pair ever announced (value undefined once gone). */
  readonly withdrawals = new Map<string, Announcement | undefined>();

  constructor(
    readonly noticePeriod: bigint,
    readonly tally: Tally,
  ) {}

  balance(account: string, token: string): bigint {
    return this.ledger.get(pair(account, token)) ?? 0n;
  }

  epoch(owner: string): bigint {
    return this.epochs.get(key(owner)) ?? 0n;
  }

  tab(device: string, payee: string, token: string, tabId: bigint): MirrorTab | undefined {
    return this.tabs.get(tabKeyOf(device, payee, token, tabId));
  }

  /** The device's policy if it is bound and not revoked. */
  policyOf(device: string): MirrorPolicy | undefined {
    const d = this.devices.get(key(device));
    if (!d || d.revoked) return undefined;
    return this.policies.get(d.policyId);
  }

  private move(account: string, token: string, delta: bigint, what: () => string): void {
    const after = this.balance(account, token) + delta;
    must(after >= 0n, () => `${what()}: ledger balance of ${account} in ${token} would be ${after}`);
    this.ledger.set(pair(account, token), after);
  }

  apply(events: MachinePayEvent[], t: bigint, ctx: TxContext): void {
    const batch = events.find((e) => e.name === "BatchSettled");
    const settlements = events.filter((e) => e.name === "PaymentSettled" || e.name === "VoucherSettled").length;
    const skips = events.filter((e) => e.name === "PaymentSkipped" || e.name === "VoucherSkipped").length;
    if (ctx.kind === "settle" || ctx.kind === "settleVouchers") {
      must(batch !== undefined, () => `${ctx.kind} emitted no BatchSettled`);
      must(
        events.filter((e) => e.name === "BatchSettled").length === 1,
        () => `${ctx.kind} emitted several BatchSettled`,
      );
      must(
        batch.settled === BigInt(settlements) && batch.skipped === BigInt(skips),
        () => `BatchSettled counts ${batch.settled}/${batch.skipped}, events ${settlements}/${skips}`,
      );
      must(
        settlements + skips === ctx.items.length,
        () => `${ctx.items.length} items, ${settlements} settled and ${skips} skipped`,
      );
      must(batch.submitter === key(ctx.submitter), () => `BatchSettled submitter ${batch.submitter}`);
      must(
        batch.feeRecipient === key(ctx.feeRecipient),
        () => `BatchSettled feeRecipient ${batch.feeRecipient}, expected ${ctx.feeRecipient}`,
      );
    } else {
      must(batch === undefined && settlements + skips === 0, () => `${ctx.kind} emitted settlement events`);
    }
    const skippedIndexes: number[] = [];
    for (const e of events) {
      switch (e.name) {
        case "Deposited":
          must(e.amount > 0n, () => "a deposit of 0");
          this.move(e.account, e.token, e.amount, () => "Deposited");
          this.tally.add("deposits");
          break;
        case "Withdrawn":
          this.withdrawn(e, t, ctx);
          break;
        case "WithdrawalAnnounced":
          must(e.readyAt === t + this.noticePeriod, () => `announced at ${t}, ready at ${e.readyAt}`);
          this.withdrawals.set(pair(e.owner, e.token), { amount: e.amount, readyAt: e.readyAt });
          this.tally.add("announcements");
          break;
        case "WithdrawalCancelled":
          must(this.withdrawals.get(pair(e.owner, e.token)) !== undefined, () => `cancelled nothing of ${e.owner}`);
          this.withdrawals.set(pair(e.owner, e.token), undefined);
          break;
        case "PolicySet":
          this.policySet(e);
          break;
        case "PayeesSet": {
          const p = this.policies.get(e.policyId);
          must(p !== undefined, () => `PayeesSet for unknown policy ${e.policyId}`);
          for (const payee of e.payees) {
            if (e.allowed) p.allowed.add(payee);
            else p.allowed.delete(payee);
          }
          break;
        }
        case "PolicyPausedSet": {
          const p = this.policies.get(e.policyId);
          must(p !== undefined, () => `PolicyPausedSet for unknown policy ${e.policyId}`);
          p.paused = e.paused;
          break;
        }
        case "DeviceAssigned":
          this.deviceAssigned(e, ctx);
          break;
        case "DevicePausedSet": {
          const d = this.devices.get(e.device);
          must(d !== undefined && !d.revoked, () => `DevicePausedSet for ${e.device}, unbound or revoked`);
          d.paused = e.paused;
          break;
        }
        case "DeviceRevokedForever": {
          const d = this.devices.get(e.device);
          must(d !== undefined && !d.revoked, () => `DeviceRevokedForever for ${e.device}, unbound or revoked`);
          must(d.owner === e.owner, () => `${e.owner} revoked ${e.device}, bound to ${d.owner}`);
          d.revoked = true;
          this.tally.add("revocations");
          break;
        }
        case "OwnerFrozen":
          must(e.epoch === this.epoch(e.owner) + 1n, () => `OwnerFrozen epoch ${e.epoch} after ${this.epoch(e.owner)}`);
          this.epochs.set(e.owner, e.epoch);
          this.tally.add("freezes");
          break;
        case "PaymentSettled":
          if (ctx.kind !== "settle" || !batch) throw new InvariantViolation(`PaymentSettled from ${ctx.kind}`);
          this.paymentSettled(e, t, batch.token, batch.feeRecipient, ctx.items);
          break;
        case "VoucherSettled":
          if (ctx.kind !== "settleVouchers" || !batch) throw new InvariantViolation(`VoucherSettled from ${ctx.kind}`);
          this.voucherSettled(e, t, batch.token, batch.feeRecipient, ctx.items);
          break;
        case "PaymentSkipped":
        case "VoucherSkipped":
          must((e.name === "PaymentSkipped") === (ctx.kind === "settle"), () => `${e.name} from ${ctx.kind}`);
          must(e.reason !== undefined && e.reason !== "None", () => `item ${e.index} skipped without a reason`);
          skippedIndexes.push(e.index);
          this.tally.add(`${e.name === "PaymentSkipped" ? "payment" : "voucher"}:${e.reason}`);
          break;
        case "TabClosing":
          this.tabClosing(e, t, ctx);
          break;
        case "BatchSettled":
          break;
      }
    }
    must(
      skippedIndexes.every((index, i) => i === 0 || skippedIndexes[i - 1] < index),
      () => `skip events out of item order: ${skippedIndexes}`,
    );
  }

  private withdrawn(e: Extract<MachinePayEvent, { name: "Withdrawn" }>, t: bigint, ctx: TxContext): void {
    const id = pair(e.account, e.token);
    if (ctx.kind === "withdraw") {
      must(!this.owners.has(e.account), () => `${e.account} owns policies and withdrew ${e.amount} without notice`);
      this.tally.add("withdrawals:immediate");
    } else if (ctx.kind === "executeWithdrawal") {
      const a = this.withdrawals.get(id);
      must(a !== undefined, () => `${e.account} withdrew ${e.amount} of ${e.token} with nothing announced`);
      must(t >= a.readyAt, () => `${e.account} withdrew at ${t}, before its notice ends at ${a.readyAt}`);
      const balance = this.balance(e.account, e.token);
      const expected = smaller(a.amount, balance);
      must(e.amount === expected, () => `executeWithdrawal took ${e.amount}, min(announced, balance) is ${expected}`);
      this.withdrawals.set(id, undefined);
      this.tally.add(this.owners.has(e.account) ? "withdrawals:afterNotice" : "withdrawals:announcedByPayee");
    } else {
      throw new InvariantViolation(`Withdrawn from ${ctx.kind}`);
    }
    must(e.amount > 0n, () => "a withdrawal of 0");
    this.move(e.account, e.token, -e.amount, () => `Withdrawn ${e.amount}`);
  }

  private policySet(e: Extract<MachinePayEvent, { name: "PolicySet" }>): void {
    const existing = this.policies.get(e.policyId);
    must(e.owner === e.policy.owner, () => `PolicySet topic owner ${e.owner}, struct owner ${e.policy.owner}`);
    must(e.policy.epoch === this.epoch(e.owner), () => `policy ${e.policyId} set at epoch ${e.policy.epoch}`);
    must(e.policy.periodLength > 0n, () => `policy ${e.policyId} has periodLength 0`);
    if (existing) {
      must(existing.owner === e.owner, () => `policy ${e.policyId} moved from ${existing.owner} to ${e.owner}`);
      must(existing.paused === e.policy.paused, () => `updating policy ${e.policyId} changed its paused flag`);
      this.policies.set(e.policyId, { ...e.policy, id: e.policyId, allowed: existing.allowed });
      this.tally.add("policyUpdates");
    } else {
      must(
        e.policyId === BigInt(this.policies.size + 1),
        () => `new policy id ${e.policyId} after ${this.policies.size}`,
      );
      must(!e.policy.paused, () => `new policy ${e.policyId} starts paused`);
      this.policies.set(e.policyId, { ...e.policy, id: e.policyId, allowed: new Set() });
      this.owners.add(e.owner);
      this.tally.add("policies");
    }
  }

  private deviceAssigned(e: Extract<MachinePayEvent, { name: "DeviceAssigned" }>, ctx: TxContext): void {
    const policy = this.policies.get(e.policyId);
    must(policy !== undefined, () => `${e.device} assigned to unknown policy ${e.policyId}`);
    const d = this.devices.get(e.device);
    if (d) {
      must(!d.revoked, () => `revoked device ${e.device} assigned again (policy ${e.policyId})`);
      must(d.owner === policy.owner, () => `${e.device}, bound to ${d.owner}, moved to ${policy.owner}'s policy`);
      d.policyId = e.policyId;
      this.tally.add("deviceMoves");
    } else {
      must(
        !(ctx.kind === "admin" && ctx.forgedProofs?.includes(e.device)),
        () => `${e.device} bound to ${policy.owner} without its key's Enrollment`,
      );
      this.devices.set(e.device, {
        address: e.device,
        owner: policy.owner,
        policyId: e.policyId,
        paused: false,
        revoked: false,
        lifetime: 0n,
        window: undefined,
        nonces: new Set(),
      });
      this.tally.add("deviceBindings");
    }
  }

  /** Why `device` may not spend at `t` in a batch of `token`, if it may not (from events alone). */
  private blocked(device: MirrorDevice | undefined, t: bigint, token: string, payee: string): string | undefined {
    if (!device) return "it was never registered";
    if (device.revoked) return "it is revoked";
    if (device.paused) return "it is paused";
    const p = this.policies.get(device.policyId);
    if (!p) return `its policy ${device.policyId} does not exist`;
    if (p.paused) return `its policy ${p.id} is paused`;
    if (p.epoch !== this.epoch(p.owner))
      return `its owner froze it (policy epoch ${p.epoch}, owner ${this.epoch(p.owner)})`;
    if (t < p.validFrom) return `its policy is valid from ${p.validFrom}`;
    if (p.validUntil !== 0n && t >= p.validUntil) return `its policy expired at ${p.validUntil}`;
    if (p.token !== token) return `its policy pays in ${p.token}`;
    if (payee === ZERO) return "the payee is the zero address";
    if (p.payeesRestricted && !p.allowed.has(payee)) return `payee ${payee} is not on policy ${p.id}'s allow-list`;
    return undefined;
  }

  /**
   * The caps, judged on one settled spend of `total` (amount + fee) at `t` by the policy in force:
   * total <= maxPerPayment; what the device settled in the current fixed window
   * [k*len, (k+1)*len) <= maxPerPeriod; over its life <= lifetimeMax. A device that last settled
   * in another window (or under another periodLength: README, "a new periodLength can start a fresh
   * window") starts the window's count at 0. Block times only grow, so a device's settlements in
   * one window are consecutive and the count is their sum.
   */
  private settleSpend(device: MirrorDevice, total: bigint, t: bigint, what: string): MirrorPolicy {
    const p = this.policies.get(device.policyId) as MirrorPolicy;
    must(total <= p.maxPerPayment, () => `${what}: amount + fee ${total} > maxPerPayment ${p.maxPerPayment}`);
    const index = t / p.periodLength;
    const before = device.window && device.window.index === index ? device.window.spent : 0n;
    const inWindow = before + total;
    must(
      inWindow <= p.maxPerPeriod,
      () =>
        `${what}: ${inWindow} settled in window ${index} (length ${p.periodLength}) > maxPerPeriod ${p.maxPerPeriod}`,
    );
    const lifetime = device.lifetime + total;
    must(lifetime <= p.lifetimeMax, () => `${what}: ${lifetime} settled over its life > lifetimeMax ${p.lifetimeMax}`);
    device.window = { index, spent: inWindow };
    device.lifetime = lifetime;
    if (inWindow === p.maxPerPeriod) this.tally.add("spends:atPeriodCap");
    if (lifetime === p.lifetimeMax) this.tally.add("spends:atLifetimeCap");
    if (total === p.maxPerPayment) this.tally.add("spends:atPaymentCap");
    return p;
  }

  /**
   * One of the submitted items the settlement can be (a device may sign the same amounts twice
   * with other terms) allows its fee and had not expired.
   */
  private signedTermsHold(submitted: { maxFee: bigint; deadline: bigint }[], fee: bigint, t: bigint, what: string) {
    must(
      submitted.some((i) => fee <= i.maxFee),
      () => `${what}: fee ${fee} > the signed maxFee (${submitted.map((i) => i.maxFee).join(", ")})`,
    );
    must(
      submitted.some((i) => fee <= i.maxFee && t < i.deadline),
      () => `${what} settled at ${t}, at or after the deadline of every item with its terms`,
    );
  }

  private paymentSettled(
    e: Extract<MachinePayEvent, { name: "PaymentSettled" }>,
    t: bigint,
    token: string,
    feeRecipient: string,
    items: SubmittedPayment[],
  ): void {
    const what = `payment ${e.device} nonce ${e.nonce}`;
    const device = this.devices.get(e.device);
    const why = this.blocked(device, t, token, e.payee);
    must(why === undefined, () => `${what} settled although ${why}`);
    if (!device) return;
    must(!device.nonces.has(e.nonce), () => `${what} settled twice`);
    const submitted = items.filter(
      (i) =>
        i.signer !== null &&
        key(i.signer) === e.device &&
        key(i.payee) === e.payee &&
        i.amount === e.amount &&
        i.nonce === e.nonce &&
        i.ref === e.ref &&
        i.fee === e.fee,
    );
    must(
      submitted.length > 0,
      () => `${what} settled (${e.amount} to ${e.payee}, fee ${e.fee}): nobody submitted it signed`,
    );
    this.signedTermsHold(submitted, e.fee, t, what);
    const total = e.amount + e.fee;
    const p = this.settleSpend(device, total, t, what);
    device.nonces.add(e.nonce);
    this.move(p.owner, token, -total, () => what);
    this.move(e.payee, token, e.amount, () => what);
    this.move(feeRecipient, token, e.fee, () => what);
    this.tally.add("settled:payments");
    if (e.payee === p.owner) this.tally.add("settled:payeeIsOwner");
    else if (this.owners.has(e.payee)) this.tally.add("settled:payeeOwnsPolicies");
    if (e.fee > 0n && this.owners.has(feeRecipient)) this.tally.add("settled:feeToAnOwner");
  }

  private voucherSettled(
    e: Extract<MachinePayEvent, { name: "VoucherSettled" }>,
    t: bigint,
    token: string,
    feeRecipient: string,
    items: SubmittedVoucher[],
  ): void {
    const what = `voucher ${e.device} → ${e.payee} tab ${e.tabId} cumulative ${e.cumulative}`;
    must(
      (e.increment | (e.fee << 64n) | (e.cumulative << 128n)) === e.amounts,
      () => `${what}: VoucherSettled amounts has bits beyond its fields`,
    );
    const device = this.devices.get(e.device);
    const why = this.blocked(device, t, token, e.payee);
    must(why === undefined, () => `${what} settled although ${why}`);
    if (!device) return;
    const id = tabKeyOf(e.device, e.payee, token, e.tabId);
    const tab = this.tabs.get(id) ?? {
      device: e.device,
      payee: e.payee,
      token,
      tabId: e.tabId,
      settled: 0n,
      closesAt: 0n,
      history: [],
    };
    must(tab.closesAt === 0n || t < tab.closesAt, () => `${what} settled at ${t}, tab closed at ${tab.closesAt}`);
    must(e.cumulative > tab.settled, () => `${what} settled, not above the tab's ${tab.settled}`);
    must(
      e.increment === e.cumulative - tab.settled,
      () => `${what} paid ${e.increment}, the increase is ${e.cumulative - tab.settled}`,
    );
    const submitted = items.filter(
      (i) =>
        key(i.signer) === e.device &&
        key(i.payee) === e.payee &&
        i.tabId === e.tabId &&
        i.cumulative === e.cumulative &&
        i.fee === e.fee,
    );
    must(submitted.length > 0, () => `${what} settled: nobody submitted it signed`);
    this.signedTermsHold(submitted, e.fee, t, what);
    const total = e.increment + e.fee;
    const p = this.settleSpend(device, total, t, what);
    tab.settled = e.cumulative;
    tab.history.push(e.cumulative);
    this.tabs.set(id, tab);
    this.move(p.owner, token, -total, () => what);
    this.move(e.payee, token, e.increment, () => what);
    this.move(feeRecipient, token, e.fee, () => what);
    this.tally.add("settled:vouchers");
    if (tab.history.length > 1) this.tally.add("settled:voucherIncrements");
  }

  private tabClosing(e: Extract<MachinePayEvent, { name: "TabClosing" }>, t: bigint, ctx: TxContext): void {
    const what = `tab ${e.device} → ${e.payee} (${e.token}, ${e.tabId})`;
    must(e.tabKey === tabKeyOf(e.device, e.payee, e.token, e.tabId), () => `${what}: TabClosing key ${e.tabKey}`);
    const tab = this.tabs.get(e.tabKey) ?? {
      device: e.device,
      payee: e.payee,
      token: e.token,
      tabId: e.tabId,
      settled: 0n,
      closesAt: 0n,
      history: [],
    };
    if (ctx.kind === "closeTab" && key(ctx.sender) === e.payee) {
      must(
        e.by === e.payee && e.closesAt === t,
        () => `${what}: the payee's close by ${e.by} takes effect at ${e.closesAt}`,
      );
      this.tally.add("tabCloses:payee");
    } else if (ctx.kind === "closeTab") {
      const d = this.devices.get(e.device);
      const owner = d && !d.revoked ? this.policies.get(d.policyId)?.owner : undefined;
      must(
        e.by === key(ctx.sender) && e.by === owner,
        () => `${what} closed by ${e.by}, who is not its device's owner`,
      );
      must(e.closesAt === t + this.noticePeriod, () => `${what}: the owner's close takes effect at ${e.closesAt}`);
      this.tally.add("tabCloses:owner");
    } else if (ctx.kind === "closeTabBySignature") {
      must(e.by === e.device, () => `${what}: a signed close by ${e.by}`);
      must(e.closesAt === t + this.noticePeriod, () => `${what}: the device's close takes effect at ${e.closesAt}`);
      this.tally.add("tabCloses:device");
    } else {
      throw new InvariantViolation(`TabClosing from ${ctx.kind}`);
    }
    must(
      tab.closesAt === 0n || e.closesAt < tab.closesAt,
      () => `${what}: closing moved from ${tab.closesAt} to ${e.closesAt} (only ever earlier)`,
    );
    tab.closesAt = e.closesAt;
    this.tabs.set(e.tabKey, tab);
  }
}

// -------------------------------------------------------------------------------------------------
// The contract's views, against the mirror
// -------------------------------------------------------------------------------------------------

export type DeviceView = {
  policyId: bigint;
  paused: boolean;
  periodIndex: bigint;
  periodSpent: bigint;
  lifetimeSpent: bigint;
  nonceTop: bigint;
  nonceWindow: bigint;
};

/** What the views return after a step, for every entity the suite has touched. */
export type ViewSnapshot = {
  /** token.balanceOf(MachinePay) (native: the contract's coin balance), by token. */
  holdings: Map<string, bigint>;
  /** balanceOf(account, token), by `account:token`, for every tracked account and token. */
  balances: Map<string, bigint>;
  devices: Map<string, DeviceView>;
  policyCount: bigint;
  policies: Map<bigint, PolicyFields>;
  epochs: Map<string, bigint>;
  ownsPolicies: Map<string, boolean>;
  tabs: Map<string, { settled: bigint; closesAt: bigint }>;
  withdrawals: Map<string, Announcement>;
  /** isPayeeAllowed, by `policyId:payee` (only in full sweeps). */
  allowed?: Map<string, boolean>;
};

/** The nonce fields DeviceState keeps for a set of settled nonces (bit i: nonce top - i settled). */
export function nonceFields(nonces: Set<bigint>): { top: bigint; window: bigint } {
  let top = 0n;
  for (const n of nonces) if (n > top) top = n;
  let window = 0n;
  for (let i = 0n; i < BigInt(NONCE_WINDOW) && i <= top; i++) if (nonces.has(top - i)) window |= 1n << i;
  return { top, window };
}

/**
 * Throws unless the views tell the mirror's story. Conservation: per token, the contract's holdings
 * equal the sum of the ledger balances of every account that ever held one (no balance is set
 * aside for announced withdrawals: executeWithdrawal takes min(announced, balance) from the
 * ledger, so there is no gap by design).
 */
export function compareViews(
  mirror: EventMirror,
  v: ViewSnapshot,
  tokens: readonly string[],
  accounts: readonly string[],
) {
  for (const id of mirror.ledger.keys()) {
    must(accounts.includes(id.split(":")[0]), () => `ledger account ${id} is not tracked by the suite`);
  }
  for (const token of tokens) {
    let sum = 0n;
    for (const account of accounts) {
      const viewed = v.balances.get(pair(account, token)) as bigint;
      must(
        viewed === mirror.balance(account, token),
        () => `balanceOf(${account}, ${token}) = ${viewed}, its events say ${mirror.balance(account, token)}`,
      );
      sum += viewed;
    }
    const held = v.holdings.get(key(token)) as bigint;
    must(held === sum, () => `MachinePay holds ${held} of ${token}, its ledger balances add up to ${sum}`);
  }

  for (const [address, view] of v.devices) {
    const d = mirror.devices.get(address);
    if (!d) {
      must(
        view.policyId === 0n && view.lifetimeSpent === 0n && view.nonceTop === 0n && view.nonceWindow === 0n,
        () => `never-registered device ${address} has state (policy ${view.policyId})`,
      );
      continue;
    }
    must(
      view.policyId === (d.revoked ? REVOKED : d.policyId),
      () => `getDevice(${address}).policyId ${view.policyId}, events say ${d.revoked ? "revoked" : d.policyId}`,
    );
    must(view.paused === d.paused, () => `getDevice(${address}).paused ${view.paused}`);
    must(
      view.lifetimeSpent === d.lifetime,
      () => `getDevice(${address}).lifetimeSpent ${view.lifetimeSpent}, its settlements add up to ${d.lifetime}`,
    );
    if (d.window) {
      must(
        view.periodIndex === d.window.index && view.periodSpent === d.window.spent,
        () =>
          `getDevice(${address}) period ${view.periodIndex}/${view.periodSpent}, settlements say ${d.window?.index}/${d.window?.spent}`,
      );
    }
    const { top, window } = nonceFields(d.nonces);
    must(
      view.nonceTop === top && view.nonceWindow === window,
      () =>
        `getDevice(${address}) nonces ${view.nonceTop}/${view.nonceWindow.toString(2)}, settled ${top}/${window.toString(2)}`,
    );
  }

  must(
    v.policyCount === BigInt(mirror.policies.size),
    () => `policyCount ${v.policyCount}, ${mirror.policies.size} set`,
  );
  for (const [id, view] of v.policies) {
    const p = mirror.policies.get(id);
    must(p !== undefined, () => `getPolicy(${id}) exists without a PolicySet`);
    for (const field of Object.keys(view) as (keyof PolicyFields)[]) {
      must(view[field] === p[field], () => `getPolicy(${id}).${field} = ${view[field]}, events say ${p[field]}`);
    }
  }
  for (const [account, epoch] of v.epochs) {
    must(epoch === mirror.epoch(account), () => `ownerEpoch(${account}) ${epoch}, events say ${mirror.epoch(account)}`);
  }
  for (const [account, owns] of v.ownsPolicies) {
    must(owns === mirror.owners.has(account), () => `ownsPolicies(${account}) ${owns}`);
  }
  for (const [id, view] of v.tabs) {
    const tab = mirror.tabs.get(id);
    const settled = tab?.settled ?? 0n;
    let highest = 0n;
    for (const c of tab?.history ?? []) if (c > highest) highest = c;
    must(
      view.settled === settled && settled === highest,
      () => `getTab(${id}).settled ${view.settled}, highest settled cumulative ${highest}`,
    );
    must(
      view.closesAt === (tab?.closesAt ?? 0n),
      () => `getTab(${id}).closesAt ${view.closesAt}, events say ${tab?.closesAt}`,
    );
  }
  for (const [id, view] of v.withdrawals) {
    const a = mirror.withdrawals.get(id);
    must(
      view.readyAt === (a?.readyAt ?? 0n) && view.amount === (a?.amount ?? 0n),
      () => `pendingWithdrawal(${id}) ${view.amount}@${view.readyAt}, events say ${a?.amount}@${a?.readyAt}`,
    );
  }
  for (const [id, allowed] of v.allowed ?? []) {
    const [policyId, payee] = id.split(":");
    const p = mirror.policies.get(BigInt(policyId));
    must(allowed === (p?.allowed.has(payee) ?? false), () => `isPayeeAllowed(${id}) ${allowed}`);
  }
}
