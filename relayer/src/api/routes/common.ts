/** Helpers the route modules share: error answers for OpenAPI, and item rows as JSON. */
import type { ItemRow } from "../../store/types";
import { ApiError } from "../errors";
import { errorBodySchema } from "../schemas";

/** `response` entries documenting the error answers a route can give. */
export function errorAnswers(...statuses: number[]): Record<number, typeof errorBodySchema> {
  return Object.fromEntries(statuses.map((s) => [s, errorBodySchema]));
}

/** GET /v1/payments/:id and /v1/vouchers/:id. */
export function itemJson(row: ItemRow) {
  const base = {
    id: row.id,
    kind: row.kind,
    status: row.status,
    device: row.device,
    owner: row.owner,
    payee: row.payee,
    token: row.token,
  };
  const terms =
    row.kind === "payment"
      ? { amount: row.amount.toString(), nonce: String(row.nonce), ref: row.ref ?? undefined }
      : { tabId: String(row.tabId), cumulative: row.amount.toString() };
  return {
    ...base,
    ...terms,
    deadline: row.deadline,
    maxFee: row.maxFee.toString(),
    fee: row.fee.toString(),
    ...(row.status === "rejected" && row.reason !== null ? { reason: row.reason } : {}),
    ...(row.status === "rejected" && row.message !== null ? { message: row.message } : {}),
    ...(row.batchId !== null ? { batchId: row.batchId } : {}),
    ...(row.txHash !== null ? { txHash: row.txHash } : {}),
    ...(row.blockNumber !== null ? { blockNumber: row.blockNumber } : {}),
    acceptedAt: row.acceptedAt,
    updatedAt: row.updatedAt,
  };
}

/** A chain read; a failure is a 503 the client retries, not a 500. */
export async function readChain<T>(what: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (e) {
    throw new ApiError(
      "CHAIN_UNAVAILABLE",
      `could not read ${what} from the chain (${(e as Error)?.message ?? e}): retry shortly`,
      {},
      1,
    );
  }
}
