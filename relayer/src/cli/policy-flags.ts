/** The spending-policy flags `policy create|update`, `device register` and `onboard` share. */
import type { Address, PolicyParams } from "@machinepay/sdk";
import type { Command } from "commander";
import { getAddress } from "viem";
import type { Deployment } from "../config";
import { resolveToken } from "./chain";
import { parseCap, parseDuration, parseTime } from "./options";
import { UsageError } from "./output";

export type PolicyFlags = {
  token?: string;
  maxPerPayment?: bigint;
  maxPerPeriod?: bigint;
  period?: number;
  lifetimeMax?: bigint;
  validFrom?: number;
  validUntil?: number;
  payeesRestricted?: boolean;
};

export function addPolicyFlags(cmd: Command): Command {
  return cmd
    .option("--token <token>", "token the devices pay in: a symbol of the deployment file, an address, or native")
    .option("--max-per-payment <units>", "cap on amount + fee of one payment, token units", parseCap)
    .option("--max-per-period <units>", "cap on amount + fee per device per period, token units", parseCap)
    .option("--period <duration>", "period length: seconds, or 30m, 12h, 1d, 2w (default 1d)", parseDuration)
    .option("--lifetime-max <units>", "cap on amount + fee per device over its life, token units", parseCap)
    .option("--valid-from <time>", "payments settle from: unix seconds or ISO date (default 0: at once)", parseTime)
    .option("--valid-until <time>", "payments settle before: unix seconds or ISO date (default 0: no end)", parseTime)
    .option("--payees-restricted", "only payees on the policy's allow-list (`machinepay payees allow`)")
    .option("--no-payees-restricted", "any payee (the default for a new policy)");
}

/** True when any policy flag was given. */
export function hasPolicyFlags(f: PolicyFlags): boolean {
  return [
    f.token,
    f.maxPerPayment,
    f.maxPerPeriod,
    f.period,
    f.lifetimeMax,
    f.validFrom,
    f.validUntil,
    f.payeesRestricted,
  ].some((v) => v !== undefined);
}

/** Policy parameters from the flags, over `base` (an existing policy) when updating. */
export function policyFromFlags(deployment: Deployment, f: PolicyFlags, base?: PolicyParams): PolicyParams {
  if (!base) {
    const missing = [
      f.maxPerPayment === undefined && "--max-per-payment",
      f.maxPerPeriod === undefined && "--max-per-period",
      f.lifetimeMax === undefined && "--lifetime-max",
    ].filter(Boolean);
    if (missing.length) throw new UsageError(`a new policy needs ${missing.join(", ")} (token units)`);
  }
  const p: PolicyParams = {
    token: f.token !== undefined ? resolveToken(deployment, f.token) : (base?.token ?? resolveToken(deployment)),
    maxPerPayment: f.maxPerPayment ?? (base?.maxPerPayment as bigint),
    maxPerPeriod: f.maxPerPeriod ?? (base?.maxPerPeriod as bigint),
    periodLength: f.period ?? base?.periodLength ?? 86_400,
    lifetimeMax: f.lifetimeMax ?? (base?.lifetimeMax as bigint),
    validFrom: f.validFrom ?? base?.validFrom ?? 0,
    validUntil: f.validUntil ?? base?.validUntil ?? 0,
    payeesRestricted: f.payeesRestricted ?? base?.payeesRestricted ?? false,
  };
  if (p.periodLength < 1 || p.periodLength > 0xffffffff) throw new UsageError("--period must be 1 s to 136 years");
  if (p.validUntil !== 0 && p.validUntil <= p.validFrom) {
    throw new UsageError("--valid-until must be 0 (no end) or after --valid-from");
  }
  return p;
}

/** The PolicyParams part of a stored policy (getPolicy). */
export function paramsOf(policy: {
  token: Address;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  periodLength: number;
  lifetimeMax: bigint;
  validFrom: number;
  validUntil: number;
  payeesRestricted: boolean;
}): PolicyParams {
  return {
    token: getAddress(policy.token),
    maxPerPayment: policy.maxPerPayment,
    maxPerPeriod: policy.maxPerPeriod,
    periodLength: policy.periodLength,
    lifetimeMax: policy.lifetimeMax,
    validFrom: policy.validFrom,
    validUntil: policy.validUntil,
    payeesRestricted: policy.payeesRestricted,
  };
}
