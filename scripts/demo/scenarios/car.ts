/**
 * 2. Cars on the road pay tolls and parking (allow-listed operators, a per-payment cap), and charge
 * at an EV charger through a tab: a voucher per 0.1 kWh, many a second, each carrying the session's
 * running total. Only the newest voucher of each tab settles; the older ones are superseded.
 */
import { type Address, type Hex, machinePayAbi } from "../../../sdk/src";
import {
  acceptedPayments,
  allowPayees,
  check,
  createPolicy,
  type Device,
  newAddress,
  type PayJob,
  pay,
  payOne,
  policy,
  refOf,
  refusal,
  registerFleet,
  type Scenario,
  settleNow,
  short,
  submitVoucher,
  sum,
  tabOf,
  usdc,
  waitForSettlement,
} from "../context";
import { paymentKey, tabKey } from "../events";
import { USDC } from "../harness";

/** 0.035 USDC per 0.1 kWh (0.35 USDC/kWh). */
const PER_TENTH_KWH = USDC(0.035);
/** A voucher every this many ms per car: 20 a second. */
const VOUCHER_EVERY_MS = 50;

export type CarData = {
  cars: Address[];
  charger: Address;
  tolls: Address[];
  parking: Address;
  cap: bigint;
  accepted: { device: Address; nonce: bigint }[];
  overCap: { device: Address; nonce: bigint; reason?: string };
  /** Per car: its tab id, every voucher id in order, and the newest cumulative. */
  tabs: { device: Address; tabId: bigint; voucherIds: Hex[]; newest: bigint }[];
};

export const car: Scenario<CarData> = {
  name: "car",
  title: "Cars pay tolls and parking, and charge through a tab: only the newest voucher settles",
  async run(ctx) {
    const owner = ctx.owners.mobility;
    const n = ctx.sizes.devices;
    const trips = ctx.sizes.payments;
    const tenths = ctx.sizes.payments * 3;
    const tolls = [newAddress(), newAddress()];
    const parking = newAddress();
    const charger = newAddress();
    // The per-payment cap holds a toll, a parking fee and one charging session's settlement.
    const session = PER_TENTH_KWH * BigInt(tenths);
    const cap = session + USDC(5) > USDC(10) ? session + USDC(5) : USDC(10);
    const policyId = await createPolicy(
      ctx,
      owner,
      policy(ctx, {
        maxPerPayment: cap,
        maxPerPeriod: cap * BigInt(trips + 2),
        periodLength: 86_400,
        lifetimeMax: cap * BigInt(trips + 2) * 30n,
        payeesRestricted: true,
      }),
    );
    await allowPayees(ctx, owner, policyId, [...tolls, parking, charger]);
    const cars = await registerFleet(ctx, owner, policyId, n);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}) registered ${n} cars on policy ${policyId}: ${usdc(cap)} per payment, to toll operators ${tolls.map(short).join(", ")}, parking ${short(parking)} and charger ${short(charger)} only`,
    );

    ctx.progress.begin("cars drive and charge", n * trips + 1 + n * tenths);
    const jobs: PayJob[] = [];
    for (let k = 0; k < trips; k++) {
      for (const [i, device] of cars.entries()) {
        const parks = k % 3 === 2;
        jobs.push({
          device,
          payee: parks ? parking : tolls[(i + k) % 2],
          amount: parks ? USDC(1.5 + (i % 4)) : USDC(0.6 + ((i + k) % 5) * 0.35),
          ref: refOf(`car-${i}-${parks ? "parking" : "toll"}-${k}`),
        });
      }
    }
    const paid = await pay(ctx, jobs);
    const accepted = acceptedPayments(paid);
    const overCapTry = await payOne(ctx, {
      device: cars[0],
      payee: parking,
      amount: cap + USDC(5),
      ref: refOf("car-0-valet"),
    });
    ctx.say(`${accepted.length} of ${jobs.length} tolls and parking fees accepted`);
    ctx.say(`  a parking fee of ${usdc(cap + USDC(5))}, above the cap: refused, ${refusal(overCapTry.result)}`);

    // Charging: every car streams vouchers at once, one per 0.1 kWh, each posted on its own.
    const started = Date.now();
    const tabs = await Promise.all(cars.map((device, i) => charge(ctx, device, charger, BigInt(1_000 + i), tenths)));
    const seconds = (Date.now() - started) / 1000;
    const vouchers = n * tenths;
    ctx.say(
      `charging: ${vouchers} vouchers (0.1 kWh each) in ${seconds.toFixed(1)} s, ${(vouchers / seconds).toFixed(0)} a second; ${usdc(session)} per car`,
    );
    // The session ends: the relayer settles each tab's newest voucher now.
    await settleNow(ctx);
    ctx.progress.end();
    await waitForSettlement(ctx, {
      payments: accepted,
      tabs: tabs.map((t) => ({ device: t.device, payee: charger, tabId: t.tabId, cumulative: t.newest })),
    });

    const settledPayments = new Set(
      ctx.events.paymentsOf(cars.map((c) => c.address)).map((p) => paymentKey(p.device, p.nonce)),
    );
    const settledVouchers = ctx.events.vouchersOf(cars.map((c) => c.address));
    const perTab = new Map<string, bigint[]>();
    for (const v of settledVouchers) {
      const k = tabKey(v.device, v.payee, v.tabId);
      perTab.set(k, [...(perTab.get(k) ?? []), v.cumulative]);
    }
    const onChain = await Promise.all(
      tabs.map((t) =>
        ctx.client.readContract({
          address: ctx.contract,
          abi: machinePayAbi,
          functionName: "getTab",
          args: [t.device, charger, ctx.token, t.tabId],
        }),
      ),
    );
    const superseded = await ctx.relayer.voucherStatus(tabs[0].voucherIds[0]);
    ctx.say(
      `${settledVouchers.length} VoucherSettled events for ${vouchers} vouchers signed (${usdc(sum(settledVouchers.map((v) => v.increment)))}); car 1's first voucher is ${superseded.status}`,
    );
    return {
      devices: n,
      checks: [
        check(
          "every accepted toll and parking fee settled",
          accepted.every((a) => settledPayments.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "the over-cap parking fee was refused (ExceedsPaymentCap) and never settled",
          overCapTry.result.reason === "ExceedsPaymentCap" &&
            !settledPayments.has(paymentKey(cars[0].address, overCapTry.signed.payment.nonce)),
          overCapTry.result.reason,
        ),
        check(
          "each tab settled exactly once, with its newest voucher",
          tabs.every((t) => {
            const got = perTab.get(tabKey(t.device, charger, t.tabId)) ?? [];
            return got.length === 1 && got[0] === t.newest;
          }),
        ),
        check(
          "getTab(...).settled equals each tab's newest voucher",
          tabs.every((t, i) => onChain[i].settled === t.newest),
        ),
        check("older vouchers are superseded at the relayer", superseded.status === "superseded", superseded.status),
      ],
      data: {
        cars: cars.map((c) => c.address),
        charger,
        tolls,
        parking,
        cap,
        accepted,
        overCap: { device: cars[0].address, nonce: overCapTry.signed.payment.nonce, reason: overCapTry.result.reason },
        tabs,
      },
    };
  },
};

/** One charging session: a voucher per 0.1 kWh, every VOUCHER_EVERY_MS, each posted at once. */
async function charge(
  ctx: Parameters<typeof car.run>[0],
  device: Device,
  charger: Address,
  tabId: bigint,
  tenths: number,
) {
  const tab = tabOf(ctx, device, charger, tabId);
  const voucherIds: Hex[] = [];
  let newest = 0n;
  for (let k = 0; k < tenths; k++) {
    const next = Date.now() + VOUCHER_EVERY_MS;
    const signed = await tab.pay(PER_TENTH_KWH);
    const result = await submitVoucher(ctx, signed);
    if (result.status === "accepted") {
      voucherIds.push(result.id);
      newest = signed.voucher.cumulative;
    }
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return { device: device.address, tabId, voucherIds, newest };
}
