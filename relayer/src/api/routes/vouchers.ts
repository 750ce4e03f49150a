/** POST /v1/vouchers, GET /v1/vouchers/:id */
import type { Voucher } from "@machinepay/sdk";
import { ApiError } from "../errors";
import { itemIdParams, itemStatusSchema, submitAnswerSchema, vouchersBody } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { submitItems } from "../submit";
import { errorAnswers, itemJson } from "./common";

export function voucherRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  app.post(
    "/v1/vouchers",
    {
      config: { submitKind: "voucher" },
      schema: {
        summary:
          "Submit signed tab vouchers; a newer voucher supersedes the tab's accepted one, an older one answers stale with the tab's newest cumulative",
        tags: ["vouchers"],
        body: vouchersBody(deps.config.limits.itemsPerRequest),
        response: { 200: submitAnswerSchema, ...errorAnswers(400, 413, 415, 429, 503) },
      },
    },
    async (request) => {
      const items = request.body.vouchers.map(({ voucher, signature }) => ({
        kind: "voucher" as const,
        voucher: voucher as Voucher,
        signature: signature as `0x${string}`,
      }));
      request.itemCount = items.length;
      return { results: await submitItems(ctx, items) };
    },
  );

  app.get(
    "/v1/vouchers/:id",
    {
      schema: {
        summary: "A voucher's status (superseded once a newer voucher of its tab was accepted)",
        tags: ["vouchers"],
        params: itemIdParams,
        response: { 200: itemStatusSchema, ...errorAnswers(400, 404) },
      },
    },
    async (request) => {
      const row = await deps.store.getItem(request.params.id);
      if (!row) throw new ApiError("NOT_FOUND", `no voucher ${request.params.id}: submit it to POST /v1/vouchers`);
      if (row.kind !== "voucher") {
        throw new ApiError("NOT_FOUND", `${request.params.id} is a payment, not a voucher: GET /v1/payments/${row.id}`);
      }
      return itemJson(row);
    },
  );
}
