/**
 * 4. Sensors sell their readings to a data buyer, per reading. Each sensor's wallet is a machine: a
 * fresh key that holds no ether and never deposits. It onboards its own sensor key by signature
 * through the relayer, earns in the escrow ledger when the buyer's payments settle, and its sensor
 * re-spends those earnings on its connectivity provider: no withdrawal, no deposit.
 */
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  machinePayAbi,
  type Onboarding,
  onboardingTypes,
  signEnrollment,
  signTypedMessage,
  toOnboardingJson,
} from "../../../sdk/src";
import {
  acceptedPayments,
  chainNow,
  check,
  createPolicy,
  deviceOf,
  newAddress,
  type PayJob,
  pay,
  policy,
  refOf,
  registerFleet,
  type Scenario,
  type ScenarioContext,
  short,
  sum,
  until,
  usdc,
  waitForSettlement,
} from "../context";
import { paymentKey } from "../events";
import type { Owner } from "../harness";
import { USDC } from "../harness";

const PER_READING = USDC(0.02);

export type SensorData = {
  sensors: Address[];
  wallets: Address[];
  buyers: Address[];
  provider: Address;
  earned: bigint[];
  spent: bigint[];
  balances: bigint[];
  accepted: { device: Address; nonce: bigint }[];
  /** The sensors' own payments to the provider, paid from their earnings. */
  respent: { device: Address; nonce: bigint }[];
  onboardings: `0x${string}`[];
};

/** An owner signs one Onboarding for `devices` (each with its Enrollment proof); the relayer submits it. */
export async function onboardThroughRelayer(
  ctx: ScenarioContext,
  owner: Owner,
  onboarding: Omit<Onboarding, "owner" | "epoch" | "deadline">,
  proofs: Awaited<ReturnType<typeof signEnrollment>>[],
): Promise<`0x${string}`> {
  const message: Onboarding = {
    ...onboarding,
    owner: owner.address,
    epoch: 0,
    deadline: (await chainNow(ctx.client)) + 3_600n,
  };
  const signature = await signTypedMessage({
    signer: owner.account,
    domain: ctx.domain,
    types: onboardingTypes as never,
    primaryType: "Onboarding",
    message: message as never,
  });
  const { id } = await ctx.relayer.submitOnboarding(toOnboardingJson(message, proofs, signature));
  return id;
}

/** Wait until the relayer reports every owner message `confirmed` (throws if one failed). */
export async function waitConfirmed(ctx: ScenarioContext, ids: readonly `0x${string}`[]): Promise<void> {
  const left = new Set(ids);
  await until(
    "onboardings to be confirmed",
    async () => {
      for (const id of [...left]) {
        const s = await ctx.relayer.onboardingStatus(id);
        if (s.status === "failed") throw new Error(`onboarding ${id} failed: ${s.error}`);
        if (s.status === "confirmed") left.delete(id);
      }
      return left.size === 0;
    },
    120_000,
  );
}

export const sensor: Scenario<SensorData> = {
  name: "sensor",
  title: "Sensors sell readings; each sensor's own wallet re-spends what it earned",
  async run(ctx) {
    const buyerOwner = ctx.owners.industry;
    const n = ctx.sizes.devices;
    const readings = ctx.sizes.payments;
    const provider = newAddress();

    // Each sensor's wallet: a fresh key with no ether, onboarding its sensor by signature.
    const wallets = Array.from({ length: n }, (_, i) =>
      ctx.env.freshOwner(`sensor wallet ${i + 1}`, generatePrivateKey()),
    );
    const sensorKeys = Array.from({ length: n }, () => privateKeyToAccount(generatePrivateKey()));
    const onboardings = await Promise.all(
      wallets.map(async (w, i) =>
        onboardThroughRelayer(
          ctx,
          w,
          {
            policyId: 0,
            policy: policy(ctx, {
              maxPerPayment: PER_READING * BigInt(readings) + USDC(1),
              maxPerPeriod: PER_READING * BigInt(readings) + USDC(1),
              lifetimeMax: (PER_READING * BigInt(readings) + USDC(1)) * 30n,
            }),
            devices: [sensorKeys[i].address],
            nonce: 1n,
          },
          [await signEnrollment({ signer: sensorKeys[i], domain: ctx.domain, owner: w.address })],
        ),
      ),
    );
    // The buyer's gateways: one per sensor feed, on one policy of the buyer's.
    const buyerPolicy = await createPolicy(
      ctx,
      buyerOwner,
      policy(ctx, {
        maxPerPayment: USDC(1),
        maxPerPeriod: PER_READING * BigInt(readings) + USDC(1),
        lifetimeMax: PER_READING * BigInt(readings) * 100n,
      }),
    );
    const buyers = await registerFleet(ctx, buyerOwner, buyerPolicy, n);
    await waitConfirmed(ctx, onboardings);
    const sensors = sensorKeys.map((k) => deviceOf(ctx, k));
    ctx.say(
      `${n} sensor wallets (fresh keys, no ether) onboarded their sensors through the relayer; ${buyerOwner.name} (#${buyerOwner.keyIndex}) buys through ${n} gateways (policy ${buyerPolicy})`,
    );

    // 1. The buyer pays each sensor's wallet per reading; the ref is the reading's hash.
    const jobs: PayJob[] = [];
    for (let k = 0; k < readings; k++) {
      for (let i = 0; i < n; i++) {
        jobs.push({
          device: buyers[i],
          payee: wallets[i].address,
          amount: PER_READING,
          ref: refOf(`sensor-${sensors[i].address}-reading-${k}`),
        });
      }
    }
    ctx.progress.begin("sensors sell, then spend", jobs.length + n);
    const paid = await pay(ctx, jobs);
    const accepted = acceptedPayments(paid);
    await waitForSettlement(ctx, { payments: accepted });
    const balanceOf = (a: Address) =>
      ctx.client.readContract({
        address: ctx.contract,
        abi: machinePayAbi,
        functionName: "balanceOf",
        args: [a, ctx.token],
      });
    const earned = await Promise.all(wallets.map((w) => balanceOf(w.address)));
    ctx.say(`${accepted.length} readings sold; each wallet earned ${usdc(earned[0])} (escrow ledger, not withdrawn)`);

    // 2. Each sensor pays its connectivity provider half of what its wallet earned, from those earnings.
    const spendJobs: PayJob[] = sensors.map((s, i) => ({
      device: s,
      payee: provider,
      amount: earned[i] / 2n,
      ref: refOf(`sensor-${i}-data-plan`),
    }));
    const spentPaid = await pay(ctx, spendJobs);
    ctx.progress.end();
    const respent = acceptedPayments(spentPaid);
    await waitForSettlement(ctx, { payments: respent });
    const balances = await Promise.all(wallets.map((w) => balanceOf(w.address)));
    const settled = ctx.events.paymentsOf(sensors.map((s) => s.address));
    const spent = sensors.map((s) =>
      sum(settled.filter((p) => p.device.toLowerCase() === s.address.toLowerCase()).map((p) => p.amount)),
    );
    const deposits = ctx.events
      .named("Deposited")
      .filter((e) => wallets.some((w) => w.address.toLowerCase() === String(e.args.account).toLowerCase()));
    const ether = await Promise.all(wallets.map((w) => ctx.client.getBalance({ address: w.address })));
    ctx.say(
      `each sensor paid ${short(provider)} ${usdc(spent[0])} for its data plan from its wallet's earnings; wallets hold ${usdc(balances[0])}, no deposit, no ether`,
    );
    const keys = new Set(ctx.events.payments().map((p) => paymentKey(p.device, p.nonce)));
    return {
      devices: 2 * n,
      checks: [
        check(
          "every reading sold settled to the sensor's wallet",
          accepted.every((a) => keys.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "every sensor re-spent its earnings (PaymentSettled from the sensor)",
          respent.length === n && respent.every((a) => keys.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "wallet balance = earned − spent, with no Deposited event and no ether",
          balances.every((b, i) => b === earned[i] - spent[i]) && deposits.length === 0 && ether.every((e) => e === 0n),
        ),
      ],
      data: {
        sensors: sensors.map((s) => s.address),
        wallets: wallets.map((w) => w.address),
        buyers: buyers.map((b) => b.address),
        provider,
        earned,
        spent,
        balances,
        accepted,
        respent,
        onboardings,
      },
    };
  },
};
