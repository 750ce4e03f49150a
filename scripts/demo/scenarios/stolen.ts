/**
 * 7. A stolen device tries to drain its owner. Its caps stop it first (per payment, per day); the
 * owner then freezes the whole fleet in one transaction (`machinepay freeze`), and every further
 * payment is refused. The loss is bounded by the caps, proved from the chain's events.
 */
import { type Address, machinePayAbi } from "../../../sdk/src";
import {
  acceptedPayments,
  check,
  createPolicy,
  newAddress,
  type PayJob,
  pay,
  payOne,
  policy,
  refOf,
  refusal,
  registerFleet,
  type Scenario,
  type ScenarioContext,
  short,
  sum,
  until,
  usdc,
  waitForSettlement,
} from "../context";
import { USDC } from "../harness";

const PER_PAYMENT = USDC(5);
const PER_DAY = USDC(20);
const LIFETIME = USDC(100);

export type StolenData = {
  drones: Address[];
  stolen: Address;
  thief: Address;
  caps: { perPayment: bigint; perDay: bigint; lifetime: bigint };
  stolenTotal: bigint;
  freezeBlock: bigint;
  frozenBy: string;
  afterFreeze: { tried: number; reasons: string[] };
  escrowBefore: bigint;
  escrowAfter: bigint;
  fleetSpend: bigint;
};

async function freeze(ctx: ScenarioContext): Promise<{ block: bigint; by: string }> {
  if (ctx.env.useCli) {
    try {
      const out = await ctx.env.cli(["freeze", "--key-file", ctx.env.keyFiles.logistics]);
      const receipt = await ctx.client.getTransactionReceipt({ hash: out.txHash as `0x${string}` });
      return { block: receipt.blockNumber, by: "`machinepay freeze`" };
    } catch (e) {
      ctx.env.notes.push(`\`machinepay freeze\` failed (${(e as Error).message.slice(0, 160)}): froze with viem`);
    }
  }
  const owner = ctx.owners.logistics;
  const hash = await owner.wallet.writeContract({
    address: ctx.contract,
    abi: machinePayAbi,
    functionName: "freezeAll",
    chain: owner.wallet.chain,
    account: owner.account,
  });
  return { block: (await ctx.client.waitForTransactionReceipt({ hash })).blockNumber, by: "freezeAll (viem)" };
}

export const stolen: Scenario<StolenData> = {
  name: "stolen",
  title: "A stolen device tries to drain its owner: caps stop it, one freeze stops the fleet",
  async run(ctx) {
    const owner = ctx.owners.logistics;
    const n = Math.max(2, ctx.sizes.devices);
    const pads = newAddress();
    const thief = newAddress();
    const balance = () =>
      ctx.client.readContract({
        address: ctx.contract,
        abi: machinePayAbi,
        functionName: "balanceOf",
        args: [owner.address, ctx.token],
      });
    const escrowBefore = await balance();
    const policyId = await createPolicy(
      ctx,
      owner,
      policy(ctx, { maxPerPayment: PER_PAYMENT, maxPerPeriod: PER_DAY, lifetimeMax: LIFETIME }),
    );
    const drones = await registerFleet(ctx, owner, policyId, n);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}) runs ${n} delivery drones (policy ${policyId}): ${usdc(PER_PAYMENT)} per payment, ${usdc(PER_DAY)} a day, ${usdc(LIFETIME)} for life, any payee; escrow ${usdc(escrowBefore)}`,
    );

    // A normal day: every drone pays a charging pad once.
    ctx.progress.begin("a drone is stolen", n + 42 + 10 + n);
    const work = await pay(
      ctx,
      drones.map((device, i) => ({ device, payee: pads, amount: USDC(1), ref: refOf(`drone-${i}-pad`) })),
    );
    // Drone 1 is stolen: the thief sends burst after burst to itself, then asks for everything.
    const victim = drones[0];
    const burst: PayJob[] = Array.from({ length: 40 }, (_, k) => ({
      device: victim,
      payee: thief,
      amount: PER_PAYMENT,
      ref: refOf(`thief-${k}`),
    }));
    const theft = await pay(ctx, burst);
    const big = await payOne(ctx, { device: victim, payee: thief, amount: escrowBefore, ref: refOf("thief-all") });
    const taken = acceptedPayments(theft);
    const reasons = new Map<string, number>();
    for (const t of [...theft, big]) {
      if (t.result.status === "rejected") reasons.set(t.result.reason!, (reasons.get(t.result.reason!) ?? 0) + 1);
    }
    ctx.say(
      `the thief signed ${theft.length + 1} payments to ${short(thief)}: ${taken.length} accepted, refused ${[...reasons].map(([r, k]) => `${k} ${r}`).join(", ")}`,
    );
    ctx.say(`  e.g. ${refusal(theft[theft.length - 1].result)}`);
    await waitForSettlement(ctx, { payments: [...acceptedPayments(work), ...taken] });

    // The owner sees the thief's payments settle and freezes every device in one transaction.
    const frozen = await freeze(ctx);
    await until(
      "the relayer to see the freeze",
      async () => (await ctx.relayer.headroom(victim.address)).status === "PolicyFrozen",
    );
    const again = await pay(ctx, [
      ...Array.from({ length: 10 }, (_, k) => ({
        device: victim,
        payee: thief,
        amount: USDC(1),
        ref: refOf(`thief-late-${k}`),
      })),
      ...drones.map((device, i) => ({ device, payee: pads, amount: USDC(1), ref: refOf(`drone-${i}-pad-2`) })),
    ]);
    ctx.progress.end();
    const afterReasons = [...new Set(again.map((a) => a.result.reason ?? a.result.status))];
    ctx.say(
      `the owner froze the fleet (${frozen.by}, block ${frozen.block}); ${again.length} payments tried after it (thief and fleet): refused, ${afterReasons.join(", ")}`,
    );

    await ctx.events.sync();
    const settled = ctx.events.paymentsOf(drones.map((d) => d.address));
    const stolenTotal = sum(settled.filter((p) => p.payee.toLowerCase() === thief.toLowerCase()).map((p) => p.amount));
    const fleetSpend = sum(settled.map((p) => p.amount));
    const escrowAfter = await balance();
    ctx.say(
      `loss: ${usdc(stolenTotal)} (caps: ${usdc(PER_DAY)} a day, ${usdc(LIFETIME)} for life); escrow ${usdc(escrowBefore)} → ${usdc(escrowAfter)}`,
    );
    return {
      devices: n,
      checks: [
        check(
          "the thief got at most the daily cap, and less than the lifetime cap",
          stolenTotal <= PER_DAY && stolenTotal <= LIFETIME && stolenTotal > 0n,
          usdc(stolenTotal),
        ),
        check(
          "nothing of the fleet settled after the freeze block",
          settled.every((p) => p.blockNumber < frozen.block),
        ),
        check(
          "every payment after the freeze was refused as PolicyFrozen",
          again.every((a) => a.result.reason === "PolicyFrozen"),
          afterReasons.join(", "),
        ),
        check("the owner lost only what the fleet settled", escrowBefore - escrowAfter === fleetSpend),
      ],
      data: {
        drones: drones.map((d) => d.address),
        stolen: victim.address,
        thief,
        caps: { perPayment: PER_PAYMENT, perDay: PER_DAY, lifetime: LIFETIME },
        stolenTotal,
        freezeBlock: frozen.block,
        frozenBy: frozen.by,
        afterFreeze: { tried: again.length, reasons: afterReasons },
        escrowBefore,
        escrowAfter,
        fleetSpend,
      },
    };
  },
};
