/** POST /v1/payments, GET /v1/payments/:id */
import type { Payment } from "@machinepay/sdk";
import { ApiError } from "../errors";
import { itemIdParams, itemStatusSchema, paymentsBody, submitAnswerSchema } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { submitItems } from "../submit";
import { errorAnswers, itemJson } from "./common";

export function paymentRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  app.post(
    "/v1/payments",
    {
      config: { submitKind: "payment" },
      schema: {
        summary: "Submit signed payments (1 to limits.itemsPerRequest); one result per item, same order",
        tags: ["payments"],
        body: paymentsBody(deps.config.limits.itemsPerRequest),
        response: { 200: submitAnswerSchema, ...errorAnswers(400, 413, 415, 429, 503) },
      },
    },
    async (request) => {
      const items = request.body.payments.map(({ payment, signature }) => ({
        kind: "payment" as const,
        payment: payment as Payment,
        signature: signature as `0x${string}`,
      }));
      request.itemCount = items.length;
      return { results: await submitItems(ctx, items) };
    },
  );

  app.get(
    "/v1/payments/:id",
    {
      schema: {
        summary: "A payment's status",
        tags: ["payments"],
        params: itemIdParams,
        response: { 200: itemStatusSchema, ...errorAnswers(400, 404) },
      },
    },
    async (request) => {
      const row = await deps.store.getItem(request.params.id);
      if (!row) throw new ApiError("NOT_FOUND", `no payment ${request.params.id}: submit it to POST /v1/payments`);
      if (row.kind !== "payment") {
        throw new ApiError("NOT_FOUND", `${request.params.id} is a voucher, not a payment: GET /v1/vouchers/${row.id}`);
      }
      return itemJson(row);
    },
  );
}
