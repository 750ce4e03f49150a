/** GET /v1/batches, GET /v1/batches/:id */
import type { BatchRow } from "../../store/types";
import { ApiError } from "../errors";
import { batchDetailQuery, batchDetailSchema, batchesAnswerSchema, batchesQuery, batchIdParams } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { errorAnswers } from "./common";

const str = (x: bigint | null) => (x === null ? null : x.toString());

function batchJson(b: BatchRow) {
  return {
    id: b.id,
    kind: b.kind,
    messageId: b.messageId,
    token: b.token,
    sender: b.sender,
    nonce: b.nonce,
    status: b.status,
    itemCount: b.itemCount,
    gasEstimate: str(b.gasEstimate),
    gasUsed: str(b.gasUsed),
    blockNumber: b.blockNumber,
    blockHash: b.blockHash,
    txHash: b.txHash,
    error: b.error,
    createdAt: b.createdAt,
    updatedAt: b.updatedAt,
  };
}

export function batchRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  app.get(
    "/v1/batches",
    {
      schema: {
        summary: "Batches, newest first; pass `next` as `after` for the next page",
        tags: ["batches"],
        querystring: batchesQuery,
        response: { 200: batchesAnswerSchema, ...errorAnswers(400) },
      },
    },
    async (request) => {
      const { status, limit, after } = request.query;
      const page = await deps.store.listBatches({ status, limit: limit ?? 50, after });
      return { batches: page.rows.map(batchJson), next: page.next };
    },
  );

  app.get(
    "/v1/batches/:id",
    {
      schema: {
        summary: "A batch with its transaction attempts (signed bytes with ?raw=true) and item ids",
        tags: ["batches"],
        params: batchIdParams,
        querystring: batchDetailQuery,
        response: { 200: batchDetailSchema, ...errorAnswers(400, 404) },
      },
    },
    async (request) => {
      const b = await deps.store.getBatch(request.params.id);
      if (!b) throw new ApiError("NOT_FOUND", `no batch ${request.params.id}: GET /v1/batches lists them`);
      const raw = request.query.raw;
      return {
        ...batchJson(b),
        attempts: b.attempts.map((a) => ({
          hash: a.hash,
          nonce: a.nonce,
          maxFeePerGas: a.maxFeePerGas.toString(),
          maxPriorityFeePerGas: a.maxPriorityFeePerGas.toString(),
          createdAt: a.createdAt,
          broadcastAt: a.broadcastAt,
          ...(raw ? { raw: a.raw } : {}),
        })),
        itemIds: b.itemIds,
      };
    },
  );
}
