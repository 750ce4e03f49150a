/**
 * A device's headroom: what the contract would let it spend now, from chain state minus what the
 * relayer holds pending for it (and for its owner's balance). The window and the order of the
 * checks are admission's (ingest/rules.ts), so a payment of `spendable` passes admission.
 */
import type { Address, ReasonName } from "@machinepay/sdk";
import type { ChainState } from "../chain/state";
import type { PendingLedger } from "../ingest/pending";
import { REVOKED_POLICY } from "../ingest/rules";

const ZERO = "0x0000000000000000000000000000000000000000" as Address;

export type Headroom = {
  device: Address;
  /** "None" when the device can pay; otherwise the reason every payment of it would fail. */
  status: ReasonName;
  policyId: number;
  owner: Address;
  token: Address;
  /** Per-payment cap (amount + fee). */
  perPayment: bigint;
  /** What is left of this period's allowance, pending payments counted. */
  period: bigint;
  /** What is left of the lifetime allowance, pending payments counted. */
  lifetime: bigint;
  /** The owner's escrow balance in the policy's token, less an announced withdrawal and pending spend. */
  balance: bigint;
  /** Largest amount + fee that would be accepted now. */
  spendable: bigint;
  /** Amount + fee of the device's pending items. */
  pending: bigint;
  /** Unix seconds. */
  periodEndsAt: number;
  nonceTop: number;
};

export type HeadroomParameters = {
  chain: ChainState;
  pending: Pick<PendingLedger, "deviceSpend" | "ownerSpend">;
  /** Chain time, unix seconds. */
  now: bigint;
  /** Seconds an item may take to land (config.deadlineMarginSeconds). */
  margin: bigint;
};

function min(...xs: bigint[]): bigint {
  let m = xs[0];
  for (const x of xs) if (x < m) m = x; // bigints: Math.min does not take them
  return m;
}
const clamp = (x: bigint) => (x < 0n ? 0n : x);

export async function deviceHeadroom(
  device: Address,
  { chain, pending, now, margin }: HeadroomParameters,
): Promise<Headroom> {
  const d = await chain.device(device);
  const spent = pending.deviceSpend(device);
  const base: Headroom = {
    device,
    status: "None",
    policyId: d.policyId,
    owner: ZERO,
    token: ZERO,
    perPayment: 0n,
    period: 0n,
    lifetime: 0n,
    balance: 0n,
    spendable: 0n,
    pending: spent,
    periodEndsAt: 0,
    nonceTop: Number(d.nonceTop),
  };
  if (d.policyId === 0) return { ...base, status: "UnknownDevice" };
  if (d.policyId === REVOKED_POLICY) return { ...base, status: "DeviceRevoked" };
  const p = await chain.policy(d.policyId);
  const [epoch, balance, withdrawal] = await Promise.all([
    chain.ownerEpoch(p.owner),
    chain.balance(p.owner, p.token),
    chain.withdrawal(p.owner, p.token),
  ]);
  const landBy = now + margin;
  const first = p.periodLength > 0n ? now / p.periodLength : 0n;
  const last = p.periodLength > 0n ? landBy / p.periodLength : 0n;
  const chainPeriod = d.periodIndex >= first && d.periodIndex <= last ? d.periodSpent : 0n;
  const withdrawing = withdrawal.readyAt !== 0n && withdrawal.readyAt <= landBy ? withdrawal.amount : 0n;
  const period = clamp(p.maxPerPeriod - chainPeriod - spent);
  const lifetime = clamp(p.lifetimeMax - d.lifetimeSpent - spent);
  const available = clamp(balance - withdrawing - pending.ownerSpend(p.owner, p.token));
  const status: ReasonName = d.paused
    ? "DevicePaused"
    : p.paused
      ? "PolicyPaused"
      : p.epoch !== epoch
        ? "PolicyFrozen"
        : now < p.validFrom
          ? "NotYetValid"
          : p.validUntil !== 0n && landBy >= p.validUntil
            ? "PolicyExpired"
            : "None";
  return {
    ...base,
    status,
    owner: p.owner.toLowerCase() as Address,
    token: p.token.toLowerCase() as Address,
    perPayment: p.maxPerPayment,
    period,
    lifetime,
    balance: available,
    spendable: status === "None" ? min(p.maxPerPayment, period, lifetime, available) : 0n,
    periodEndsAt: p.periodLength > 0n ? Number((first + 1n) * p.periodLength) : 0,
  };
}
