/**
 * Admission rules: the contract's checks (MachinePay._settleOne / _settleVoucher), in the same
 * order and with the same reason names, judged against chain state plus the pending ledger, for
 * the time window in which the item can land. Where landing time makes a rule ambiguous, the rule
 * is taken the strict way: the relayer may refuse what would have settled, never the reverse.
 *
 * `gatherSnapshot` does the (cached) reads; `decide` is synchronous and pure, so admission decides
 * and reserves without another request interleaving.
 */
import type { Address, ReasonName } from "@machinepay/sdk";
import { NONCE_WINDOW } from "@machinepay/sdk";
import type { ChainState, DeviceWord, PolicyState, TabState, WithdrawalState } from "../chain/state";
import { type PendingEntry, type PendingLedger, tabKeyOf } from "./pending";

/** Policy id of a revoked device (IMachinePay: type(uint32).max). */
export const REVOKED_POLICY = 0xffffffff;
const ZERO = "0x0000000000000000000000000000000000000000";

/** A verified item, as admission sees it. Addresses lowercase. */
export type Candidate = {
  kind: "payment" | "voucher";
  device: Address;
  payee: Address;
  token: Address;
  /** Payment amount, or the voucher's cumulative. */
  amount: bigint;
  nonce?: bigint;
  tabId?: bigint;
  deadline: bigint;
  maxFee: bigint;
  /** What the relayer will charge (≤ maxFee). */
  fee: bigint;
};

export type Snapshot = {
  device: DeviceWord;
  policy?: PolicyState;
  ownerEpoch?: number;
  balance?: bigint;
  withdrawal?: WithdrawalState;
  payeeAllowed?: boolean;
  tab?: TabState;
};

/** Chain-time window in which the item can land: now, and the latest a batch carrying it lands. */
export type Window = { now: bigint; landBy: bigint; deadlineMargin: bigint };

/** Relayer-only refusal codes (contract reasons use their contract names). */
export type RelayerReason = "DEADLINE_TOO_SOON";

export type Verdict =
  | {
      ok: true;
      spend: bigint;
      owner: Address;
      policyId: number;
      /** Vouchers: the accepted voucher of the same tab this one replaces. */
      supersedes?: PendingEntry;
    }
  | { ok: false; reason: ReasonName | RelayerReason; message: string; newest?: bigint };

/** Reads everything `decide` needs for `c` (policy reads only when the device has one). */
export async function gatherSnapshot(chain: ChainState, c: Candidate): Promise<Snapshot> {
  const device = await chain.device(c.device);
  if (device.policyId === 0 || device.policyId === REVOKED_POLICY) return { device };
  const policy = await chain.policy(device.policyId);
  const [ownerEpoch, balance, withdrawal, payeeAllowed, tab] = await Promise.all([
    chain.ownerEpoch(policy.owner),
    chain.balance(policy.owner, c.token),
    chain.withdrawal(policy.owner, c.token),
    policy.payeesRestricted ? chain.payeeAllowed(device.policyId, c.payee) : Promise.resolve(true),
    c.kind === "voucher" ? chain.tab(c.device, c.payee, c.token, c.tabId ?? 0n) : Promise.resolve(undefined),
  ]);
  return { device, policy, ownerEpoch, balance, withdrawal, payeeAllowed, tab };
}

const refuse = (reason: ReasonName | RelayerReason, message: string, newest?: bigint): Verdict => ({
  ok: false,
  reason,
  message,
  newest,
});

/** The contract's verdict for `c`, landing in window `w`, after every pending item. */
export function decide(c: Candidate, s: Snapshot, pending: PendingLedger, w: Window): Verdict {
  const d = s.device;
  if (d.policyId === 0) {
    return refuse(
      "UnknownDevice",
      `${c.device} is not registered: its owner must register it (with its Enrollment proof) first. ` +
        "If the device is registered, this is not its key's signature over this item: it was signed for " +
        "another chain id or contract (see GET /v1/info for this relayer's domain) or changed after signing",
    );
  }
  if (d.policyId === REVOKED_POLICY) return refuse("DeviceRevoked", `${c.device} was revoked for good`);
  if (d.paused) return refuse("DevicePaused", `the owner paused ${c.device}; it cannot pay until resumed`);
  const p = s.policy!;
  if (p.paused) return refuse("PolicyPaused", `the owner paused policy ${d.policyId} of this device`);
  if (p.epoch !== s.ownerEpoch) {
    return refuse("PolicyFrozen", `the owner froze all its devices; policy ${d.policyId} must be set again`);
  }
  if (w.now < p.validFrom) return refuse("NotYetValid", `the device's policy is valid from ${p.validFrom} only`);
  if (p.validUntil !== 0n && w.landBy >= p.validUntil) {
    return refuse("PolicyExpired", `the device's policy expires at ${p.validUntil}, before this could settle`);
  }
  if (p.token !== c.token) return refuse("WrongToken", `this device pays in ${p.token}, not ${c.token}`);
  if (w.now >= c.deadline) return refuse("DeadlinePassed", `deadline ${c.deadline} has passed; sign a new one`);
  if (c.deadline < w.now + w.deadlineMargin) {
    return refuse(
      "DEADLINE_TOO_SOON",
      `deadline ${c.deadline} leaves less than ${w.deadlineMargin} s to settle; sign with a later deadline (now + 600 is usual)`,
    );
  }
  if (c.payee === ZERO) return refuse("InvalidPayee", "the payee is the zero address");
  if (p.payeesRestricted && !s.payeeAllowed) {
    return refuse("PayeeNotAllowed", `${c.payee} is not on the allow-list of policy ${d.policyId}`);
  }
  if (c.fee > c.maxFee) return refuse("FeeAboveMax", `the relayer's fee ${c.fee} is above maxFee ${c.maxFee}`);

  let spend: bigint;
  let supersedes: PendingEntry | undefined;
  if (c.kind === "payment") {
    const nonce = c.nonce!;
    const verdict = checkNonce(c.device, nonce, d, pending);
    if (verdict) return verdict;
    spend = c.amount + c.fee;
  } else {
    const t = s.tab!;
    if (t.closesAt !== 0n && w.landBy >= t.closesAt) {
      return refuse("TabClosed", `the tab closes at ${t.closesAt}, before this voucher could settle`);
    }
    const key = tabKeyOf(c.device, c.payee, c.token, c.tabId!);
    const { accepted, inFlightCumulative } = pending.tab(key);
    const newest = [t.settled, inFlightCumulative ?? 0n, accepted?.cumulative ?? 0n].reduce((a, b) => (b > a ? b : a));
    if (c.amount <= newest) {
      return refuse("VoucherStale", `cumulative ${c.amount} is not above the tab's newest ${newest}`, newest);
    }
    // What this voucher pays on top of what lands before it: an in-flight voucher of the tab, or
    // the chain's settled amount. An accepted one is replaced (its reservation is given back).
    const base = inFlightCumulative !== undefined && inFlightCumulative > t.settled ? inFlightCumulative : t.settled;
    spend = c.amount - base + c.fee;
    supersedes = accepted;
  }

  // Caps, net of what is pending (the replaced voucher's reservation excluded).
  const released = supersedes?.spend ?? 0n;
  const pendingDevice = pending.deviceSpend(c.device) - released;
  const pendingOwner = pending.ownerSpend(p.owner, c.token) - released;
  if (spend > p.maxPerPayment) {
    return refuse("ExceedsPaymentCap", `amount + fee ${spend} is above the per-payment cap ${p.maxPerPayment}`);
  }
  // A pending item may land in any period from now on, so all of them count against the period
  // this one lands in; the chain's counter counts if its period is one this item can land in.
  const first = w.now / p.periodLength;
  const last = w.landBy / p.periodLength;
  const chainPeriod = d.periodIndex >= first && d.periodIndex <= last ? d.periodSpent : 0n;
  const periodLeft = p.maxPerPeriod - chainPeriod - pendingDevice;
  if (spend > periodLeft) {
    return refuse(
      "ExceedsPeriodCap",
      `amount + fee ${spend} is above what is left of this period's allowance (${periodLeft < 0n ? 0n : periodLeft}, pending payments counted)`,
    );
  }
  const lifetimeLeft = p.lifetimeMax - d.lifetimeSpent - pendingDevice;
  if (spend > lifetimeLeft) {
    return refuse(
      "ExceedsLifetimeCap",
      `amount + fee ${spend} is above what is left of the lifetime allowance (${lifetimeLeft < 0n ? 0n : lifetimeLeft})`,
    );
  }
  // An announced withdrawal counts once it could execute before this item lands.
  const withdrawing =
    s.withdrawal && s.withdrawal.readyAt !== 0n && s.withdrawal.readyAt <= w.landBy ? s.withdrawal.amount : 0n;
  const available = s.balance! - withdrawing - pendingOwner;
  if (spend > available) {
    return refuse(
      "InsufficientBalance",
      `the owner's escrow has ${available < 0n ? 0n : available} available (pending payments counted); amount + fee is ${spend}`,
    );
  }
  return { ok: true, spend, owner: p.owner, policyId: d.policyId, supersedes };
}

const WINDOW = BigInt(NONCE_WINDOW);

function checkNonce(device: Address, nonce: bigint, d: DeviceWord, pending: PendingLedger): Verdict | undefined {
  if (pending.nonceHolder(device, nonce)) {
    return refuse("NonceUsed", `nonce ${nonce} is already taken by another pending payment of this device`);
  }
  if (nonce <= d.nonceTop) {
    const distance = d.nonceTop - nonce;
    if (distance >= WINDOW) {
      return refuse(
        "NonceTooOld",
        `nonce ${nonce} is more than ${WINDOW - 1n} below the highest settled ${d.nonceTop}`,
      );
    }
    if ((d.nonceWindow >> distance) & 1n) return refuse("NonceUsed", `nonce ${nonce} already settled`);
  }
  // Pending payments of the device may land first and raise its window (the batcher keeps nonce
  // order within a batch, not across deadlines), so stay within the window of the highest of them.
  const top = pending.maxNonce(device);
  if (top !== undefined && top > nonce && top - nonce >= WINDOW) {
    return refuse("NonceTooOld", `nonce ${nonce} is more than ${WINDOW - 1n} below pending nonce ${top}`);
  }
  return undefined;
}
