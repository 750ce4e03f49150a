/**
 * The path both submit routes share: per-device rate limit, Ingest, and the answer per item.
 */

import { paymentDigest, voucherDigest } from "@machinepay/sdk";
import { bytesToHex } from "viem";
import type { IngestResult } from "../ingest";
import type { VerifyItem } from "../ingest/verify";
import { ApiError } from "./errors";
import type { RouteContext } from "./server";

export type SubmitResultJson = {
  id: `0x${string}`;
  kind: "payment" | "voucher";
  status: IngestResult["status"];
  reason?: string;
  message?: string;
  field?: string;
  newest?: string;
  duplicate?: true;
};

/**
 * Take per-device tokens for `items` and return what was taken; throws 429 (or 400 when one
 * request alone holds more items of a device than its limit).
 */
function limitDevices(ctx: RouteContext, items: readonly VerifyItem[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) {
    const v = ctx.verifier.verify(item);
    if (v.ok) counts.set(v.device, (counts.get(v.device) ?? 0) + 1);
  }
  const take = ctx.limiter.take(counts);
  if (take.ok) return counts;
  const perSecond = ctx.limiter.perSecond;
  if (take.retryAfterSeconds === undefined) {
    throw new ApiError(
      "TOO_MANY_ITEMS",
      `this request holds ${take.wanted} items of device ${take.device}, above its limit of ${perSecond} items per second: send at most ${perSecond} items of one device per request`,
      { device: take.device, items: take.wanted, perDevicePerSecond: perSecond },
    );
  }
  throw new ApiError(
    "RATE_LIMITED",
    `device ${take.device} is over its limit of ${perSecond} items per second: retry in ${take.retryAfterSeconds} s (the same signed items are safe to resend)`,
    { device: take.device, items: take.wanted, perDevicePerSecond: perSecond },
    take.retryAfterSeconds,
  );
}

/**
 * What to call an item Ingest refused before knowing its signer (a bad signature, a field out of
 * range): its EIP-712 digest, since `itemId` needs the device. Such items are never stored.
 */
function digestOf(ctx: RouteContext, item: VerifyItem): `0x${string}` {
  try {
    return bytesToHex(
      item.kind === "payment" ? paymentDigest(ctx.separator, item.payment) : voucherDigest(ctx.separator, item.voucher),
    );
  } catch {
    return "0x";
  }
}

/**
 * Shed load before doing any work for it: too many items being admitted at once (the event loop
 * or the store is behind), or too many accepted and not settled (the chain is behind). Nothing of
 * the request is accepted, so resending it later is safe.
 */
function shed(ctx: RouteContext, count: number): void {
  const { admittingItems, pendingItems } = ctx.deps.config.limits;
  const admitting = ctx.load.admitting;
  if (admitting + count > admittingItems) {
    throw new ApiError(
      "OVERLOADED",
      `the relayer is admitting ${admitting} items already (at most ${admittingItems}): retry in 1 s; nothing of this request was accepted`,
      { admitting, admittingItems },
      1,
    );
  }
  const pending = ctx.pendingCount();
  if (pending + count > pendingItems) {
    throw new ApiError(
      "OVERLOADED",
      `${pending} accepted items wait for settlement (at most ${pendingItems}): the chain is behind, retry in 5 s; nothing of this request was accepted`,
      { pending, pendingItems },
      5,
    );
  }
}

export async function submitItems(ctx: RouteContext, items: VerifyItem[]): Promise<SubmitResultJson[]> {
  shed(ctx, items.length);
  ctx.load.admitting += items.length;
  let results: Awaited<ReturnType<typeof ctx.deps.ingest.submit>>;
  let taken: Map<string, number> | undefined;
  try {
    const verifyStarted = performance.now();
    await ctx.verifier.prepare?.(items);
    ctx.deps.metrics.stage("verify", (performance.now() - verifyStarted) / 1000);
    taken = limitDevices(ctx, items);
    results = await ctx.deps.ingest.submit(items);
  } catch (e) {
    if (taken) ctx.limiter.refund(taken); // nothing was stored: the client's retry should not be throttled for it
    throw e;
  } finally {
    ctx.load.admitting -= items.length;
  }
  let duplicates = 0;
  const out = results.map((r, i): SubmitResultJson => {
    if (r.duplicate) duplicates++;
    const json: SubmitResultJson = { id: r.id ?? digestOf(ctx, items[i]), kind: items[i].kind, status: r.status };
    if (r.reason !== undefined) json.reason = r.reason;
    if (r.message !== undefined) json.message = r.message;
    if (r.field !== undefined) json.field = r.field;
    if (r.newest !== undefined) json.newest = r.newest;
    if (r.duplicate) json.duplicate = true;
    return json;
  });
  ctx.deps.metrics.duplicate(items[0]?.kind ?? "payment", duplicates);
  return out;
}
