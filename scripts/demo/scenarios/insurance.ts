/**
 * 6. Micro-insurance: industrial machines pay a small premium per shift to an insurer, under a
 * weekly period cap that holds exactly a week's premiums; one premium more in the same week is
 * refused (ExceedsPeriodCap) and never settles.
 */
import type { Address } from "../../../sdk/src";
import {
  acceptedPayments,
  allowPayees,
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
  short,
  sum,
  usdc,
  waitForSettlement,
} from "../context";
import { paymentKey } from "../events";
import { USDC } from "../harness";

const PREMIUM = USDC(0.25);
const WEEK = 7 * 86_400;

export type InsuranceData = {
  machines: Address[];
  insurer: Address;
  periodCap: bigint;
  accepted: { device: Address; nonce: bigint }[];
  extra: { device: Address; nonce: bigint; reason?: string };
};

export const insurance: Scenario<InsuranceData> = {
  name: "insurance",
  title: "Micro-insurance: machines pay a premium per shift under a weekly cap",
  async run(ctx) {
    const owner = ctx.owners.industry;
    const n = ctx.sizes.devices;
    const shifts = ctx.sizes.payments;
    const insurer = newAddress();
    const periodCap = PREMIUM * BigInt(shifts);
    const policyId = await createPolicy(
      ctx,
      owner,
      policy(ctx, {
        maxPerPayment: PREMIUM,
        maxPerPeriod: periodCap,
        periodLength: WEEK,
        lifetimeMax: periodCap * 52n,
        payeesRestricted: true,
      }),
    );
    await allowPayees(ctx, owner, policyId, [insurer]);
    const machines = await registerFleet(ctx, owner, policyId, n);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}) insures ${n} machines with ${short(insurer)}: ${usdc(PREMIUM)} a shift, at most ${usdc(periodCap)} a week each (policy ${policyId})`,
    );
    const jobs: PayJob[] = [];
    for (let k = 0; k < shifts; k++) {
      for (const [i, device] of machines.entries()) {
        jobs.push({ device, payee: insurer, amount: PREMIUM, ref: refOf(`machine-${i}-shift-${k}`) });
      }
    }
    ctx.progress.begin("machines pay premiums", jobs.length + 1);
    const paid = await pay(ctx, jobs);
    const accepted = acceptedPayments(paid);
    const extra = await payOne(ctx, {
      device: machines[0],
      payee: insurer,
      amount: PREMIUM,
      ref: refOf("machine-0-extra"),
    });
    ctx.progress.end();
    ctx.say(`${accepted.length} premiums accepted; one more shift this week: refused, ${refusal(extra.result)}`);

    await waitForSettlement(ctx, { payments: accepted });
    const settled = ctx.events.paymentsOf(machines.map((m) => m.address));
    const keys = new Set(settled.map((p) => paymentKey(p.device, p.nonce)));
    const perMachine = machines.map((m) =>
      sum(settled.filter((p) => p.device.toLowerCase() === m.address.toLowerCase()).map((p) => p.amount)),
    );
    ctx.say(`${settled.length} premiums settled: ${usdc(sum(perMachine))} to the insurer`);
    return {
      devices: n,
      checks: [
        check(
          "every accepted premium settled",
          accepted.every((a) => keys.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "the premium over the weekly cap was refused and never settled",
          extra.result.reason === "ExceedsPeriodCap" &&
            !keys.has(paymentKey(machines[0].address, extra.signed.payment.nonce)),
          extra.result.reason,
        ),
        check(
          "no machine paid more than the weekly cap",
          perMachine.every((s) => s <= periodCap),
        ),
      ],
      data: {
        machines: machines.map((m) => m.address),
        insurer,
        periodCap,
        accepted,
        extra: { device: machines[0].address, nonce: extra.signed.payment.nonce, reason: extra.result.reason },
      },
    };
  },
};
