/**
 * 8. Gasless onboarding: a new owner whose key holds no ether onboards a fleet with signatures
 * only. Each device key signs its Enrollment; the owner signs one `Onboarding` per 200 devices (to
 * fit the per-transaction gas cap); the relayer dry-runs and submits each (POST /v1/onboardings,
 * GET /v1/onboardings/:id until `confirmed`). Its escrow is funded with an EIP-2612 permit that a
 * sponsor submits, and every onboarded device pays once.
 */
import { parseEventLogs, parseSignature } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { type Address, type DeviceProof, machinePayAbi, signEnrollment } from "../../../sdk/src";
import { mockUsdcAbi } from "../../lib/deploy-local";
import {
  acceptedPayments,
  chainNow,
  check,
  deviceOf,
  newAddress,
  pay,
  policy,
  refOf,
  type Scenario,
  short,
  usdc,
  waitForSettlement,
} from "../context";
import { paymentKey } from "../events";
import { USDC } from "../harness";
import { onboardThroughRelayer, waitConfirmed } from "./sensor";

/** Devices per Onboarding message: ~30,000 gas each with its proof, ~6M gas per transaction. */
export const DEVICES_PER_ONBOARDING = 200;

export type OnboardingData = {
  owner: Address;
  devices: Address[];
  messages: `0x${string}`[];
  policyId: number;
  accepted: { device: Address; nonce: bigint }[];
  ownerEther: bigint;
  ownerNonce: number;
};

export const onboarding: Scenario<OnboardingData> = {
  name: "onboarding",
  title: "Gasless onboarding: a fleet onboarded by owner signatures the relayer submits",
  async run(ctx) {
    const owner = ctx.env.freshOwner("new fleet owner", generatePrivateKey());
    const sponsor = ctx.owners.household;
    const n = ctx.sizes.devices * 10;
    const service = newAddress();
    const keys = Array.from({ length: n }, () => privateKeyToAccount(generatePrivateKey()));
    const proofs: DeviceProof[] = await Promise.all(
      keys.map((k) => signEnrollment({ signer: k, domain: ctx.domain, owner: owner.address })),
    );
    const params = policy(ctx, { maxPerPayment: USDC(1), maxPerPeriod: USDC(5), lifetimeMax: USDC(50) });
    ctx.progress.begin("fleet onboards, then pays", n + n);

    // The first message creates the policy; the others assign their devices to it.
    const chunks: number[] = [];
    for (let i = 0; i < n; i += DEVICES_PER_ONBOARDING) chunks.push(i);
    const first = await onboardThroughRelayer(
      ctx,
      owner,
      { policyId: 0, policy: params, devices: keys.slice(0, DEVICES_PER_ONBOARDING).map((k) => k.address), nonce: 1n },
      proofs.slice(0, DEVICES_PER_ONBOARDING),
    );
    await waitConfirmed(ctx, [first]);
    const firstTx = (await ctx.relayer.onboardingStatus(first)).txHash!;
    const receipt = await ctx.client.getTransactionReceipt({ hash: firstTx });
    const [set] = parseEventLogs({ abi: machinePayAbi, logs: receipt.logs, eventName: "PolicySet" });
    const policyId = Number(set.args.policyId);
    const rest = await Promise.all(
      chunks.slice(1).map((i, k) =>
        onboardThroughRelayer(
          ctx,
          owner,
          {
            policyId,
            policy: params,
            devices: keys.slice(i, i + DEVICES_PER_ONBOARDING).map((d) => d.address),
            nonce: BigInt(k + 2),
          },
          proofs.slice(i, i + DEVICES_PER_ONBOARDING),
        ),
      ),
    );
    await waitConfirmed(ctx, rest);
    const messages = [first, ...rest];
    ctx.progress.tick(n);
    ctx.say(
      `new owner ${short(owner.address)} (fresh key, no ether) signed ${messages.length} Onboarding message(s) for ${n} devices; the relayer submitted them: all confirmed (policy ${policyId})`,
    );

    // Funding without ether: the owner signs an EIP-2612 permit, a sponsor submits depositWithPermit.
    const amount = USDC(2 * n + 10);
    const mint = await sponsor.wallet.writeContract({
      address: ctx.token,
      abi: mockUsdcAbi(),
      functionName: "mint",
      args: [owner.address, amount],
      chain: sponsor.wallet.chain,
      account: sponsor.account,
    });
    await ctx.client.waitForTransactionReceipt({ hash: mint });
    const deadline = (await chainNow(ctx.client)) + 3_600n;
    const permitNonce = (await ctx.client.readContract({
      address: ctx.token,
      abi: mockUsdcAbi(),
      functionName: "nonces",
      args: [owner.address],
    })) as bigint;
    const signature = await owner.account.signTypedData({
      domain: { name: "USD Coin", version: "1", chainId: ctx.domain.chainId, verifyingContract: ctx.token },
      types: {
        Permit: [
          { name: "owner", type: "address" },
          { name: "spender", type: "address" },
          { name: "value", type: "uint256" },
          { name: "nonce", type: "uint256" },
          { name: "deadline", type: "uint256" },
        ],
      },
      primaryType: "Permit",
      message: { owner: owner.address, spender: ctx.contract, value: amount, nonce: permitNonce, deadline },
    });
    const { r, s, v } = parseSignature(signature);
    const deposit = await sponsor.wallet.writeContract({
      address: ctx.contract,
      abi: machinePayAbi,
      functionName: "depositWithPermit",
      args: [owner.address, ctx.token, amount, deadline, Number(v), r, s],
      chain: sponsor.wallet.chain,
      account: sponsor.account,
    });
    await ctx.client.waitForTransactionReceipt({ hash: deposit });
    ctx.say(
      `its escrow: ${usdc(amount)} by an EIP-2612 permit it signed, submitted by ${sponsor.name} (#${sponsor.keyIndex})`,
    );

    const devices = keys.map((k) => deviceOf(ctx, k));
    const paid = await pay(
      ctx,
      devices.map((device, i) => ({ device, payee: service, amount: USDC(0.5), ref: refOf(`onboarded-${i}`) })),
    );
    ctx.progress.end();
    const accepted = acceptedPayments(paid);
    await waitForSettlement(ctx, { payments: accepted });
    const assigned = new Set(
      ctx.events
        .named("DeviceAssigned")
        .filter((e) => Number(e.args.policyId) === policyId)
        .map((e) => String(e.args.device).toLowerCase()),
    );
    const keysSettled = new Set(ctx.events.payments().map((p) => paymentKey(p.device, p.nonce)));
    const ownerEther = await ctx.client.getBalance({ address: owner.address });
    const ownerNonce = await ctx.client.getTransactionCount({ address: owner.address });
    ctx.say(
      `${accepted.length} onboarded devices paid ${short(service)} at once; the owner's ether: ${ownerEther}, transactions sent: ${ownerNonce}`,
    );
    return {
      devices: n,
      checks: [
        check(
          "every onboarded device appears in DeviceAssigned",
          keys.every((k) => assigned.has(k.address.toLowerCase())),
        ),
        check(
          "every onboarded device's first payment settled",
          accepted.length === n && accepted.every((a) => keysSettled.has(paymentKey(a.device, a.nonce))),
        ),
        check("the owner never held ether nor sent a transaction", ownerEther === 0n && ownerNonce === 0),
      ],
      data: {
        owner: owner.address,
        devices: keys.map((k) => k.address),
        messages,
        policyId,
        accepted,
        ownerEther,
        ownerNonce,
      },
    };
  },
};
