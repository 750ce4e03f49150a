/**
 * 5. Sharing economy: a courier company rents e-cargo bikes by the minute. Each rider's key is
 * valid only for the rental (the policy's validUntil) and pays the bike operator through a tab whose
 * vouchers expire when the rental does. Time-lapsed: one rented minute every 250 ms. The relayer
 * refuses vouchers that could not settle before the end, and settles each tab's newest voucher
 * shortly before its deadline; after that the key cannot pay at all.
 */
import { type Address, machinePayAbi } from "../../../sdk/src";
import {
  allowPayees,
  chainNow,
  check,
  createPolicy,
  newAddress,
  ownerTx,
  policy,
  refusal,
  registerFleet,
  type Scenario,
  short,
  submitVoucher,
  tabOf,
  until,
  usdc,
  waitForSettlement,
} from "../context";
import { tabKey } from "../events";
import { USDC } from "../harness";

const PER_MINUTE = USDC(0.05);
const MINUTE_EVERY_MS = 250;
/** The rental's length in chain seconds (time-lapsed: the demo's "minutes" are 250 ms apart). */
const RENTAL_SECONDS = 13;

export type RentalData = {
  riders: Address[];
  operator: Address;
  validUntil: bigint;
  tabs: { device: Address; tabId: bigint; newest: bigint; minutes: number; refusedWith?: string }[];
  statusAfter: string[];
};

export const rental: Scenario<RentalData> = {
  name: "rental",
  title: "Sharing economy: bikes rented per minute through a tab that expires with the rental",
  async run(ctx) {
    const owner = ctx.owners.sharing;
    const n = ctx.sizes.devices;
    const operator = newAddress();
    const terms = (validUntil: number) =>
      policy(ctx, {
        maxPerPayment: USDC(10),
        maxPerPeriod: USDC(10),
        lifetimeMax: USDC(10),
        payeesRestricted: true,
        validUntil,
      });
    // The keys are registered ahead; when the rental starts, one updatePolicy sets its end for all.
    const policyId = await createPolicy(ctx, owner, terms(Number(await chainNow(ctx.client)) + 3_600));
    await allowPayees(ctx, owner, policyId, [operator]);
    const riders = await registerFleet(ctx, owner, policyId, n);
    const validUntil = (await chainNow(ctx.client)) + BigInt(RENTAL_SECONDS);
    await ownerTx(ctx, owner, "updatePolicy", [policyId, terms(Number(validUntil))]);
    ctx.say(
      `${owner.name} (#${owner.keyIndex}) rents ${n} bikes for its riders: their keys (policy ${policyId}) are valid until ${validUntil} (chain time, ${Number(validUntil - (await chainNow(ctx.client)))} s from now) and pay bike operator ${short(operator)} ${usdc(PER_MINUTE)} a minute`,
    );

    const acceptFor = Number(validUntil - (await chainNow(ctx.client))) - ctx.env.settings.deadlineMarginSeconds;
    ctx.progress.begin("bikes rented", n * Math.max(1, Math.ceil((acceptFor * 1000) / MINUTE_EVERY_MS) + 1));
    const tabs = await Promise.all(
      riders.map(async (rider, i) => {
        const tabId = BigInt(7_000 + i);
        // Every voucher of the rental expires with it: deadline = validUntil.
        const tab = tabOf(ctx, rider, operator, tabId, { deadline: validUntil });
        let newest = 0n;
        let minutes = 0;
        let refusedWith: string | undefined;
        for (;;) {
          const next = Date.now() + MINUTE_EVERY_MS;
          const signed = await tab.pay(PER_MINUTE);
          const result = await submitVoucher(ctx, signed);
          if (result.status !== "accepted") {
            refusedWith = refusal(result);
            break;
          }
          newest = signed.voucher.cumulative;
          minutes++;
          const wait = next - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        }
        return { device: rider.address, tabId, newest, minutes, refusedWith };
      }),
    );
    ctx.progress.end();
    ctx.say(
      `riders signed ${tabs.reduce((s, t) => s + t.minutes, 0)} minutes in all; then, ${ctx.env.settings.deadlineMarginSeconds} s before the end, the relayer refused more: ${tabs[0].refusedWith}`,
    );
    await waitForSettlement(ctx, {
      tabs: tabs
        .filter((t) => t.newest > 0n)
        .map((t) => ({ device: t.device, payee: operator, tabId: t.tabId, cumulative: t.newest })),
    });
    const settledAt = await chainNow(ctx.client);
    // After the rental's end the key cannot pay at all.
    await until("the rental to end", async () => (await chainNow(ctx.client)) > validUntil, 30_000);
    const statusAfter = await Promise.all(riders.map(async (r) => (await ctx.relayer.headroom(r.address)).status));

    const settled = ctx.events.vouchersOf(riders.map((r) => r.address));
    const perTab = new Map<string, bigint[]>();
    for (const v of settled) {
      const k = tabKey(v.device, v.payee, v.tabId);
      perTab.set(k, [...(perTab.get(k) ?? []), v.cumulative]);
    }
    const onChain = await Promise.all(
      tabs.map((t) =>
        ctx.client.readContract({
          address: ctx.contract,
          abi: machinePayAbi,
          functionName: "getTab",
          args: [t.device, operator, ctx.token, t.tabId],
        }),
      ),
    );
    ctx.say(
      `each tab's newest voucher settled ${Number(validUntil - settledAt)} s before the rental ended (${settled.length} VoucherSettled); the keys now answer ${statusAfter[0]}`,
    );
    return {
      devices: n,
      checks: [
        check(
          "each rental settled once, with its newest voucher (= getTab.settled)",
          tabs.every((t, i) => {
            const got = perTab.get(tabKey(t.device, operator, t.tabId)) ?? [];
            return got.length === 1 && got[0] === t.newest && onChain[i].settled === t.newest && t.newest > 0n;
          }),
        ),
        check(
          "vouchers that could not land before the end were refused",
          tabs.every(
            (t) => t.refusedWith?.startsWith("PolicyExpired") || t.refusedWith?.startsWith("DEADLINE_TOO_SOON"),
          ),
          tabs[0].refusedWith,
        ),
        check(
          "after validUntil the rider keys are expired",
          statusAfter.every((s) => s === "PolicyExpired"),
          statusAfter[0],
        ),
      ],
      data: { riders: riders.map((r) => r.address), operator, validUntil, tabs, statusAfter },
    };
  },
};
