/**
 * 3. Smart meters pay the energy company per reading (the payment's `ref` is the reading's hash, so
 * the company matches each payment to its reading), and thermostats buy off-peak energy only in the
 * slots where the price is low.
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
  policy,
  refOf,
  registerFleet,
  type Scenario,
  short,
  sum,
  usdc,
  waitForSettlement,
} from "../context";
import { paymentKey } from "../events";
import { USDC } from "../harness";

/** USDC per kWh a meter pays per reading, and the thermostat's price ceiling for buying ahead. */
const TARIFF = 0.3;
const OFF_PEAK_BELOW = 0.2;

/** A day of prices (USDC per kWh) in `slots` steps: cheap at night, dear at the evening peak. */
export function priceAt(slot: number, slots: number): number {
  const hour = (24 * slot) / slots;
  return Math.round((0.22 + 0.12 * Math.sin(((hour - 10) / 24) * 2 * Math.PI)) * 1000) / 1000;
}

export type EnergyData = {
  meters: Address[];
  thermostats: Address[];
  company: Address;
  accepted: { device: Address; nonce: bigint }[];
  /** ref of every accepted reading payment, by device:nonce. */
  readingRefs: Record<string, `0x${string}`>;
  offPeakSlots: number;
  slots: number;
};

export const energy: Scenario<EnergyData> = {
  name: "energy",
  title: "Smart meters pay per reading; thermostats buy off-peak energy when the price is low",
  async run(ctx) {
    const owner = ctx.owners.household;
    const homes = ctx.sizes.devices;
    const slots = ctx.sizes.payments;
    const company = newAddress();
    const params = {
      maxPerPayment: USDC(5),
      maxPerPeriod: USDC(5 * slots + 10),
      lifetimeMax: USDC(200 * slots),
      payeesRestricted: true,
    };
    const meterPolicy = await createPolicy(ctx, owner, policy(ctx, params));
    const thermoPolicy = await createPolicy(ctx, owner, policy(ctx, { ...params, maxPerPayment: USDC(2) }));
    await allowPayees(ctx, owner, meterPolicy, [company]);
    await allowPayees(ctx, owner, thermoPolicy, [company]);
    const meters = await registerFleet(ctx, owner, meterPolicy, homes);
    const thermostats = await registerFleet(ctx, owner, thermoPolicy, homes);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}): ${homes} homes, each a meter (policy ${meterPolicy}) and a thermostat (policy ${thermoPolicy}, 2 USDC per purchase), paying energy company ${short(company)} only`,
    );

    const jobs: PayJob[] = [];
    const readingRefs: Record<string, `0x${string}`> = {};
    let offPeakSlots = 0;
    for (let slot = 0; slot < slots; slot++) {
      const price = priceAt(slot, slots);
      const offPeak = price < OFF_PEAK_BELOW;
      if (offPeak) offPeakSlots++;
      for (const [h, meter] of meters.entries()) {
        const kwh = 0.4 + ((h * 3 + slot * 7) % 10) / 10;
        jobs.push({
          device: meter,
          payee: company,
          amount: USDC(kwh * TARIFF),
          ref: refOf(`meter-${meter.address}-reading-${slot}-${kwh.toFixed(1)}kWh`),
        });
        // The thermostat pre-heats with 5 kWh bought ahead, only when energy is cheap.
        if (offPeak) {
          jobs.push({
            device: thermostats[h],
            payee: company,
            amount: USDC(5 * price),
            ref: refOf(`thermostat-${h}-offpeak-${slot}`),
          });
        }
      }
    }
    ctx.progress.begin("meters and thermostats pay", jobs.length);
    const paid = await pay(ctx, jobs);
    ctx.progress.end();
    const accepted = acceptedPayments(paid);
    for (const p of paid) {
      if (p.result.status === "accepted" && meters.includes(p.device)) {
        readingRefs[paymentKey(p.device.address, p.signed.payment.nonce)] = p.signed.payment.ref;
      }
    }
    const readings = homes * slots;
    const bought = jobs.length - readings;
    ctx.say(
      `${readings} readings paid at ${TARIFF} USDC/kWh; thermostats bought in ${offPeakSlots} of ${slots} price slots (below ${OFF_PEAK_BELOW} USDC/kWh): ${bought} purchases`,
    );

    await waitForSettlement(ctx, { payments: accepted });
    const settled = ctx.events.paymentsOf([...meters, ...thermostats].map((d) => d.address));
    const keys = new Map(settled.map((p) => [paymentKey(p.device, p.nonce), p]));
    const thermoSet = new Set(thermostats.map((t) => t.address.toLowerCase()));
    const thermoSettled = settled.filter((p) => thermoSet.has(p.device.toLowerCase()));
    ctx.say(
      `${settled.length} settled: ${usdc(sum(settled.filter((p) => !thermoSet.has(p.device.toLowerCase())).map((p) => p.amount)))} for readings, ${usdc(sum(thermoSettled.map((p) => p.amount)))} off-peak`,
    );
    return {
      devices: 2 * homes,
      checks: [
        check(
          "every accepted reading and purchase settled",
          accepted.every((a) => keys.has(paymentKey(a.device, a.nonce))),
        ),
        check(
          "each reading's payment carries the reading's hash as ref",
          Object.entries(readingRefs).every(([k, ref]) => keys.get(k)?.ref === ref),
        ),
        check(
          "thermostats bought only in off-peak slots",
          thermoSettled.length === homes * offPeakSlots &&
            thermoSettled.every((p) => p.amount <= USDC(5 * OFF_PEAK_BELOW)),
        ),
      ],
      data: {
        meters: meters.map((m) => m.address),
        thermostats: thermostats.map((t) => t.address),
        company,
        accepted,
        readingRefs,
        offPeakSlots,
        slots,
      },
    };
  },
};
