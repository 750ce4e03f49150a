/**
 * Owners' signed Onboarding and Revocation messages as the chain sees them: their EIP-712 digest
 * (the message's id), the `onboardBySignature` / `revokeBySignature` call that submits them, a
 * dry run of that call (what the contract would refuse, and why), and the JSON the store keeps.
 */
import {
  type Address,
  type Hex,
  type MachinePayDomain,
  machinePayAbi,
  onboardingTypes,
  revocationTypes,
} from "@machinepay/sdk";
import { BaseError, ContractFunctionRevertedError, encodeFunctionData, hashTypedData, type PublicClient } from "viem";

export type OwnerMessageKind = "onboarding" | "revocation";

export type OnboardingMessage = {
  onboarding: {
    owner: Address;
    policyId: number;
    policy: {
      token: Address;
      maxPerPayment: bigint;
      maxPerPeriod: bigint;
      periodLength: number;
      lifetimeMax: bigint;
      validFrom: number;
      validUntil: number;
      payeesRestricted: boolean;
    };
    devices: Address[];
    epoch: number;
    nonce: bigint;
    deadline: bigint;
  };
  proofs: { r: Hex; vs: Hex }[];
  signature: Hex;
};

export type RevocationMessage = {
  revocation: { owner: Address; devices: Address[]; epoch: number; nonce: bigint; deadline: bigint };
  signature: Hex;
};

export type OwnerMessage =
  | { kind: "onboarding"; message: OnboardingMessage }
  | { kind: "revocation"; message: RevocationMessage };

export const ownerOf = (m: OwnerMessage): Address =>
  m.kind === "onboarding" ? m.message.onboarding.owner : m.message.revocation.owner;

export const deadlineOf = (m: OwnerMessage): bigint =>
  m.kind === "onboarding" ? m.message.onboarding.deadline : m.message.revocation.deadline;

/** The EIP-712 digest the owner signed: the message's id (the same message twice is one). */
export function ownerMessageDigest(domain: MachinePayDomain, m: OwnerMessage): Hex {
  if (m.kind === "onboarding") {
    return hashTypedData({
      domain,
      types: onboardingTypes,
      primaryType: "Onboarding",
      message: m.message.onboarding,
    });
  }
  return hashTypedData({ domain, types: revocationTypes, primaryType: "Revocation", message: m.message.revocation });
}

/** The contract call that submits the message (anyone may send it; only the signature counts). */
export function ownerMessageCall(m: OwnerMessage) {
  if (m.kind === "onboarding") {
    const { devices, ...onboarding } = m.message.onboarding;
    return {
      abi: machinePayAbi,
      functionName: "onboardBySignature" as const,
      args: [onboarding, devices, m.message.proofs, m.message.signature] as const,
    };
  }
  const { devices, ...revocation } = m.message.revocation;
  return {
    abi: machinePayAbi,
    functionName: "revokeBySignature" as const,
    args: [revocation, devices, m.message.signature] as const,
  };
}

export function ownerMessageCalldata(m: OwnerMessage): Hex {
  return encodeFunctionData(ownerMessageCall(m) as never);
}

/** Devices touched by the message (their cached chain state changes when it lands). */
export const devicesOf = (m: OwnerMessage): Address[] =>
  m.kind === "onboarding" ? m.message.onboarding.devices : m.message.revocation.devices;

// ---- stored form: JSON with bigints as decimal strings ---------------------------------------------

export function toStoredBody(m: OwnerMessage): string {
  return JSON.stringify(m.message, (_, v) => (typeof v === "bigint" ? v.toString() : v));
}

export function fromStoredBody(kind: OwnerMessageKind, body: string): OwnerMessage {
  const raw = JSON.parse(body);
  if (kind === "onboarding") {
    const o = raw.onboarding;
    return {
      kind,
      message: {
        ...raw,
        onboarding: {
          ...o,
          nonce: BigInt(o.nonce),
          deadline: BigInt(o.deadline),
          policy: {
            ...o.policy,
            maxPerPayment: BigInt(o.policy.maxPerPayment),
            maxPerPeriod: BigInt(o.policy.maxPerPeriod),
            lifetimeMax: BigInt(o.policy.lifetimeMax),
          },
        },
      },
    };
  }
  const r = raw.revocation;
  return { kind, message: { ...raw, revocation: { ...r, nonce: BigInt(r.nonce), deadline: BigInt(r.deadline) } } };
}

// ---- dry run -------------------------------------------------------------------------------------

export type OwnerMessageCheck =
  | { ok: true; gas: bigint }
  | { ok: false; error: string; message: string; details: Record<string, unknown> };

/**
 * Runs the submitting call against `blockTag` (default `pending`) from `from` without sending it:
 * `ok` with a gas estimate, or the contract's custom error and a sentence on what to fix.
 */
export async function checkOwnerMessage(
  client: PublicClient,
  contract: Address,
  from: Address,
  m: OwnerMessage,
  blockTag: "latest" | "pending" = "pending",
): Promise<OwnerMessageCheck> {
  const call = { ...ownerMessageCall(m), address: contract, account: from, blockTag };
  try {
    await client.simulateContract(call as never);
    const gas = await client.estimateContractGas(call as never);
    return { ok: true, gas };
  } catch (e) {
    const reverted = e instanceof BaseError ? e.walk((x) => x instanceof ContractFunctionRevertedError) : undefined;
    if (reverted instanceof ContractFunctionRevertedError && reverted.data?.errorName) {
      const name = reverted.data.errorName;
      const args = (reverted.data.args ?? []).map((a) => (typeof a === "bigint" ? a.toString() : a));
      return { ok: false, error: name, message: explain(name, args, m), details: { error: name, args } };
    }
    throw e;
  }
}

function explain(name: string, args: unknown[], m: OwnerMessage): string {
  const devices = devicesOf(m);
  const at = (device: unknown) => {
    const i = devices.findIndex((d) => d.toLowerCase() === String(device).toLowerCase());
    return i >= 0 ? `devices[${i}] (${device})` : String(device);
  };
  switch (name) {
    case "SignatureExpired":
      return `its deadline ${args[0]} has passed (chain time ${args[1]}): sign it again with a later deadline`;
    case "InvalidOwnerSignature":
      return "the signature is not the owner's over this message (for a smart-account owner: its ERC-1271 check refused it); sign it with the owner's key for this chain and contract";
    case "StaleEpoch":
      return `it was signed for epoch ${args[1]} but the owner's epoch is ${args[2]} (a freeze moves it on): sign it again with epoch ${args[2]}`;
    case "OwnerNonceUsed":
      return `owner nonce ${args[1]} was used already: sign it again with an unused nonce`;
    case "InvalidEnrollment":
      return `${at(args[0])}: its Enrollment proof was not signed by that device key for owner ${args[1]}`;
    case "DeviceOwnedByAnother":
      return `${at(args[0])} belongs to another owner (${args[1]})`;
    case "DeviceIsRevoked":
      return `${at(args[0])} is revoked for good and cannot be assigned again`;
    case "DeviceNotRegistered":
      return `${at(args[0])} is not registered: only registered devices can be revoked`;
    case "NotDeviceOwner":
      return `${at(args[0])} is not this owner's device`;
    case "UnknownPolicy":
      return `policy ${args[0]} does not exist: use policyId 0 to create a new policy`;
    case "NotPolicyOwner":
      return `policy ${args[0]} belongs to another owner`;
    case "InvalidPeriodLength":
      return `periodLength ${args[0]} is not allowed (see the README's policy bounds)`;
    case "InvalidValidity":
      return `validFrom ${args[0]} / validUntil ${args[1]} do not make a valid window`;
    case "TooManyPolicies":
      return "the owner has the most policies allowed: update an existing one instead";
    case "LengthMismatch":
      return `${args[0]} devices but ${args[1]} proofs: send one proof per device`;
    default:
      return `the contract refuses it with ${name}(${args.join(", ")})`;
  }
}
