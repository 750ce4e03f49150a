/**
 * The chain state the adversarial suite attacks, set up before the relayer starts: on one Hardhat
 * node (support/chain.ts), devices in every state a payment can be refused for. Owner #0 (the
 * TestChain owner) holds the control fleet and most refused devices; one owner has an escrow of
 * 1 USDC (InsufficientBalance); another froze all its policies (PolicyFrozen): both fresh accounts, as
 * Hardhat's accounts #2-#4 are the payees. Hardhat key #1 is the relayer's sender, never used here.
 */
import { type Address, type Hex, machinePayAbi, type PolicyParams, signEnrollment } from "@machinepay/sdk";
import { createWalletClient, http } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { HARDHAT_KEYS, mockUsdcAbi } from "../../../scripts/lib/deploy-local";
import { type Key, keyOf } from "./adversarial-sign";
import { PAYEES, type TestChain, USDC } from "./chain";

/** Why every payment of a device is refused, by the reason the contract (and the relayer) gives. */
export type RefusedKind =
  | "DeviceRevoked"
  | "DevicePaused"
  | "PolicyPaused"
  | "PolicyFrozen"
  | "NotYetValid"
  | "PolicyExpired"
  | "PayeeNotAllowed"
  | "ExceedsPaymentCap"
  | "ExceedsPeriodCap"
  | "ExceedsLifetimeCap"
  | "InsufficientBalance";

export type World = {
  /** Registered, default caps (10 / 100 / 1,000 USDC): the only devices whose items settle. */
  control: Key[];
  /** Registered, default caps: signs refused items only (bad fields, signatures, deadlines), never a valid one. */
  signers: Key[];
  /** Registered: one control payment at nonce 1000, then only stale nonces. */
  nonceDevice: Key;
  /** One device per refusal, each refusing every item in the amount range `amounts`. */
  refused: Record<RefusedKind, { device: Key; amounts: [bigint, bigint] }>;
  /** The allow-list device's only allowed payee. */
  allowedPayee: Address;
  /** Addresses that were bound to a policy during set-up (DeviceAssigned events). */
  registered: Set<string>;
  policyOf: Map<string, number>;
  /** Every private key made here (the log check looks for them). */
  secrets: Hex[];
};

const lc = (a: string) => a.toLowerCase() as Address;

async function fleetOf(chain: TestChain, n: number, params: Partial<PolicyParams> = {}) {
  const { keys, policyId } = await chain.fleet(n, params);
  return { keys: keys.map(keyOf), policyId };
}

/**
 * A policy and one device owned by a fresh account (funded with ether by Hardhat account #0, never
 * a payee: a payee's escrow grows with every payment it receives), after depositing `deposit`.
 */
async function otherOwnerFleet(chain: TestChain, ownerKey: Hex, deposit: bigint, params: Partial<PolicyParams>) {
  const owner = privateKeyToAccount(ownerKey);
  const net = { ...hardhat, rpcUrls: { default: { http: [chain.node.url] } } };
  const funder = createWalletClient({
    account: privateKeyToAccount(HARDHAT_KEYS[0]),
    chain: net,
    transport: http(chain.node.url),
  });
  await chain.client.waitForTransactionReceipt({
    hash: await funder.sendTransaction({ to: owner.address, value: 10n ** 19n }),
  });
  const wallet = createWalletClient({ account: owner, chain: net, transport: http(chain.node.url) });
  const send = async (address: Address, abi: unknown, functionName: string, args: unknown[]) => {
    const hash = await wallet.writeContract({ address, abi: abi as never, functionName, args } as never);
    const r = await chain.client.waitForTransactionReceipt({ hash });
    if (r.status !== "success") throw new Error(`${functionName} from ${owner.address} reverted`);
  };
  const call = (functionName: string, args: unknown[]) =>
    send(chain.deployment.machinePay, machinePayAbi, functionName, args);
  if (deposit > 0n) {
    await send(chain.usdc, mockUsdcAbi(), "mint", [owner.address, deposit]);
    await send(chain.usdc, mockUsdcAbi(), "approve", [chain.deployment.machinePay, deposit]);
    await call("deposit", [chain.usdc, deposit]);
  }
  const policy: PolicyParams = {
    token: chain.usdc,
    maxPerPayment: USDC(100),
    maxPerPeriod: USDC(1_000),
    periodLength: 86_400,
    lifetimeMax: USDC(10_000),
    validFrom: 0,
    validUntil: 0,
    payeesRestricted: false,
    ...params,
  };
  await call("createPolicy", [policy]);
  const policyId = Number(
    await chain.client.readContract({
      address: chain.deployment.machinePay,
      abi: machinePayAbi,
      functionName: "policyCount",
    }),
  );
  const key = keyOf(generatePrivateKey());
  const proof = await signEnrollment({
    signer: privateKeyToAccount(key.key),
    domain: chain.domain,
    owner: owner.address,
  });
  await call("assignDevices", [policyId, [key.address], [proof]]);
  return { key, policyId, call };
}

export async function setUpWorld(chain: TestChain, now: bigint): Promise<World> {
  const registered = new Set<string>();
  const policyOf = new Map<string, number>();
  const note = (keys: Key[], policyId: number) => {
    for (const k of keys) {
      registered.add(lc(k.address));
      policyOf.set(lc(k.address), policyId);
    }
  };
  const one = async (params: Partial<PolicyParams> = {}) => {
    const f = await fleetOf(chain, 1, params);
    note(f.keys, f.policyId);
    return { device: f.keys[0], policyId: f.policyId };
  };

  const control = await fleetOf(chain, 4);
  note(control.keys, control.policyId);
  const signers = await fleetOf(chain, 8);
  note(signers.keys, signers.policyId);
  const nonceDevice = await one();

  const revoked = await one();
  await chain.ownerCall("revokeDevice", [revoked.device.address]);
  const paused = await one();
  await chain.ownerCall("setDevicePaused", [paused.device.address, true]);
  const policyPaused = await one();
  await chain.ownerCall("setPolicyPaused", [policyPaused.policyId, true]);
  const notYet = await one({ validFrom: Number(now + 10_000_000n) });
  // Ends a few seconds from now: already inside the margin a payment needs to land.
  const expired = await one({ validUntil: Number(now + 5n) });
  const allowList = await one({ payeesRestricted: true });
  await chain.ownerCall("setPayees", [allowList.policyId, [PAYEES[0]], true]);
  const paymentCap = await one({ maxPerPayment: USDC(1) });
  const periodCap = await one({ maxPerPayment: USDC(100), maxPerPeriod: USDC(1) });
  const lifetimeCap = await one({ maxPerPayment: USDC(100), maxPerPeriod: USDC(100), lifetimeMax: USDC(1) });

  const owners = [generatePrivateKey(), generatePrivateKey()];
  const poor = await otherOwnerFleet(chain, owners[0], USDC(1), {});
  note([poor.key], poor.policyId);
  const frozen = await otherOwnerFleet(chain, owners[1], USDC(100), {});
  note([frozen.key], frozen.policyId);
  await frozen.call("freezeAll", []);

  const within = (lo: bigint, hi: bigint): [bigint, bigint] => [lo, hi];
  const anyAmount = within(1n, USDC(10));
  return {
    control: control.keys,
    signers: signers.keys,
    nonceDevice: nonceDevice.device,
    refused: {
      DeviceRevoked: { device: revoked.device, amounts: anyAmount },
      DevicePaused: { device: paused.device, amounts: anyAmount },
      PolicyPaused: { device: policyPaused.device, amounts: anyAmount },
      PolicyFrozen: { device: frozen.key, amounts: anyAmount },
      NotYetValid: { device: notYet.device, amounts: anyAmount },
      PolicyExpired: { device: expired.device, amounts: anyAmount },
      PayeeNotAllowed: { device: allowList.device, amounts: anyAmount },
      ExceedsPaymentCap: { device: paymentCap.device, amounts: within(USDC(1) + 1n, (1n << 96n) - 1n) },
      ExceedsPeriodCap: { device: periodCap.device, amounts: within(USDC(1) + 1n, USDC(100)) },
      ExceedsLifetimeCap: { device: lifetimeCap.device, amounts: within(USDC(1) + 1n, USDC(100)) },
      InsufficientBalance: { device: poor.key, amounts: within(USDC(1) + 1n, USDC(100)) },
    },
    allowedPayee: lc(PAYEES[0]),
    registered,
    policyOf,
    secrets: [
      ...owners,
      ...[...control.keys, ...signers.keys, nonceDevice.device, revoked.device, paused.device, policyPaused.device]
        .concat([notYet.device, expired.device, allowList.device, paymentCap.device, periodCap.device])
        .concat([lifetimeCap.device, poor.key, frozen.key])
        .map((k) => k.key),
    ],
  };
}
