/**
 * 1. Smart fridges reorder groceries from allow-listed grocers within a monthly budget. An order to
 * a shop not on the list and one above what is left of the month's budget are refused by the
 * relayer with the contract's reasons, and never reach the chain.
 */
import type { Address, Hex } from "../../../sdk/src";
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

export type FridgeData = {
  fridges: Address[];
  grocers: Address[];
  shop: Address;
  budget: bigint;
  accepted: { device: Address; nonce: bigint }[];
  /** The two refused orders of fridge 1: to the shop off the list, and over the budget left. */
  refused: { device: Address; nonce: bigint; id: Hex; payee: Address; amount: bigint; reason?: string }[];
};

export const fridge: Scenario<FridgeData> = {
  name: "fridge",
  title: "Smart fridges reorder from allow-listed grocers within a monthly budget",
  async run(ctx) {
    const owner = ctx.owners.household;
    const n = ctx.sizes.devices;
    const orders = ctx.sizes.payments;
    const grocers = [newAddress(), newAddress()];
    const shop = newAddress();
    // Orders of 2.00 to 4.99 USDC: the budget holds every planned order with room to spare.
    const budget = USDC(5 * orders + 25);
    const policyId = await createPolicy(
      ctx,
      owner,
      policy(ctx, {
        maxPerPayment: budget,
        maxPerPeriod: budget,
        periodLength: 30 * 86_400,
        lifetimeMax: budget * 12n,
        payeesRestricted: true,
      }),
    );
    await allowPayees(ctx, owner, policyId, grocers);
    const fridges = await registerFleet(ctx, owner, policyId, n);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}) registered ${n} fridges on policy ${policyId}: ${usdc(budget)} a month each, to grocers ${grocers.map(short).join(" and ")} only`,
    );

    const jobs: PayJob[] = [];
    for (let k = 0; k < orders; k++) {
      for (const [i, device] of fridges.entries()) {
        jobs.push({
          device,
          payee: grocers[(i + k) % grocers.length],
          amount: USDC(2 + ((i * 7 + k * 13) % 300) / 100),
          ref: refOf(`fridge-${i}-order-${k}`),
        });
      }
    }
    ctx.progress.begin("fridges order", jobs.length + 2);
    const paid = await pay(ctx, jobs);
    const accepted = acceptedPayments(paid);
    const first = fridges[0];
    const spent = sum(
      paid.filter((p) => p.device === first && p.result.status === "accepted").map((p) => p.signed.payment.amount),
    );
    // Fridge 1 tries a shop that is not on its list, then an order above what is left of its budget.
    const offList = await payOne(ctx, { device: first, payee: shop, amount: USDC(3), ref: refOf("fridge-0-gadget") });
    const overBudget = await payOne(ctx, {
      device: first,
      payee: grocers[0],
      amount: budget - spent + USDC(1),
      ref: refOf("fridge-0-party"),
    });
    ctx.progress.end();
    ctx.say(`${accepted.length} of ${jobs.length} orders accepted; fridge 1 spent ${usdc(spent)} of ${usdc(budget)}`);
    ctx.say(`  order at shop ${short(shop)}, not on the list: refused, ${refusal(offList.result)}`);
    ctx.say(
      `  order of ${usdc(overBudget.signed.payment.amount)}, over the budget left: refused, ${refusal(overBudget.result)}`,
    );

    await waitForSettlement(ctx, { payments: accepted });
    const settled = ctx.events.paymentsOf(fridges.map((f) => f.address));
    const keys = new Set(settled.map((p) => paymentKey(p.device, p.nonce)));
    const refused = [offList, overBudget].map((r) => ({
      device: first.address,
      nonce: r.signed.payment.nonce,
      id: r.result.id,
      payee: r.signed.payment.payee,
      amount: r.signed.payment.amount,
      reason: r.result.reason,
    }));
    const perFridge = fridges.map((f) =>
      sum(settled.filter((p) => p.device.toLowerCase() === f.address.toLowerCase()).map((p) => p.amount)),
    );
    const grocerSet = new Set(grocers.map((g) => g.toLowerCase()));
    ctx.say(`${settled.length} orders settled (PaymentSettled events): ${usdc(sum(settled.map((p) => p.amount)))}`);
    return {
      devices: n,
      checks: [
        check(
          "every accepted order settled",
          accepted.every((a) => keys.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "the off-list order is refused as PayeeNotAllowed, the over-budget one as ExceedsPeriodCap",
          offList.result.reason === "PayeeNotAllowed" && overBudget.result.reason === "ExceedsPeriodCap",
          `${offList.result.reason}, ${overBudget.result.reason}`,
        ),
        check(
          "the refused orders never appear in PaymentSettled",
          refused.every((r) => !keys.has(paymentKey(r.device, r.nonce))),
        ),
        check(
          "only allow-listed grocers were paid",
          settled.every((p) => grocerSet.has(p.payee.toLowerCase())),
        ),
        check(
          "no fridge spent more than its monthly budget",
          perFridge.every((s) => s <= budget),
        ),
      ],
      data: { fridges: fridges.map((f) => f.address), grocers, shop, budget, accepted, refused },
    };
  },
};
