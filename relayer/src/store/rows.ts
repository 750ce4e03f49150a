// Row mapping shared by the SQL backends: both store bigints as decimal strings on the way in and
// read them back as strings (SQLite TEXT, PostgreSQL NUMERIC), and every other number as a JS number.

import { StoreError } from "./errors";
import {
  type AttemptRow,
  type BatchKind,
  type BatchRow,
  type BatchStatus,
  type Hex,
  type ItemKind,
  type ItemRow,
  type ItemStatus,
  type NewItem,
  OPEN_BATCH_STATUSES,
  type OwnerMessageRow,
  type TabRow,
} from "./types";

export type Row = Record<string, unknown>;

export const big = (x: unknown) => BigInt(x as string);
export const bigOrNull = (x: unknown) => (x === null ? null : BigInt(x as string));
export const s = (x: bigint) => x.toString();
export const sOrNull = (x: bigint | null) => (x === null ? null : x.toString());

export function toItem(r: Row): ItemRow {
  return {
    id: r.id as Hex,
    kind: r.kind as ItemKind,
    device: r.device as Hex,
    owner: r.owner as Hex,
    policyId: r.policy_id as number,
    payee: r.payee as Hex,
    token: r.token as Hex,
    amount: big(r.amount),
    nonce: r.nonce === null ? null : BigInt(r.nonce as number),
    tabId: bigOrNull(r.tab_id),
    deadline: r.deadline as number,
    maxFee: big(r.max_fee),
    fee: big(r.fee),
    ref: r.ref as Hex | null,
    signature: r.signature as Hex,
    r: r.r as Hex,
    vs: r.vs as Hex,
    spend: big(r.spend),
    acceptedAt: r.accepted_at as number,
    status: r.status as ItemStatus,
    reason: r.reason as string | null,
    message: r.message as string | null,
    outcome: r.outcome as ItemRow["outcome"],
    batchId: r.batch_id as number | null,
    position: r.position as number | null,
    txHash: r.tx_hash as Hex | null,
    blockNumber: r.block_number as number | null,
    blockHash: r.block_hash as Hex | null,
    updatedAt: r.updated_at as number,
  };
}

export function toTab(r: Row): TabRow {
  return {
    device: r.device as Hex,
    payee: r.payee as Hex,
    token: r.token as Hex,
    tabId: big(r.tab_id),
    newestId: r.newest_id as Hex | null,
    newestCumulative: big(r.newest_cumulative),
    settledCumulative: big(r.settled_cumulative),
    closesAt: r.closes_at as number | null,
    updatedAt: r.updated_at as number,
  };
}

export function toBatch(r: Row): BatchRow {
  return {
    id: r.id as number,
    kind: r.kind as BatchKind,
    messageId: (r.message_id as Hex | null) ?? null,
    token: r.token as Hex,
    sender: r.sender as Hex,
    nonce: r.nonce as number,
    status: r.status as BatchStatus,
    itemCount: r.item_count as number,
    gasEstimate: bigOrNull(r.gas_estimate),
    gasUsed: bigOrNull(r.gas_used),
    blockNumber: r.block_number as number | null,
    blockHash: r.block_hash as Hex | null,
    txHash: r.tx_hash as Hex | null,
    error: r.error as string | null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

export function toAttempt(r: Row): AttemptRow {
  return {
    batchId: r.batch_id as number,
    hash: r.hash as Hex,
    raw: r.raw as Hex,
    nonce: r.nonce as number,
    maxFeePerGas: big(r.max_fee_per_gas),
    maxPriorityFeePerGas: big(r.max_priority_fee_per_gas),
    createdAt: r.created_at as number,
    broadcastAt: r.broadcast_at as number | null,
  };
}

export function toOwnerMessage(r: Row): OwnerMessageRow {
  return {
    id: r.id as Hex,
    kind: r.kind as OwnerMessageRow["kind"],
    owner: r.owner as Hex,
    body: r.body as string,
    status: r.status as OwnerMessageRow["status"],
    txHash: r.tx_hash as Hex | null,
    error: r.error as string | null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

export const conflict = (message: string, details: Record<string, unknown> = {}) =>
  new StoreError("CONFLICT", message, details);
export const notFound = (what: string, details: Record<string, unknown>) =>
  new StoreError("NOT_FOUND", `${what} is not in the store`, details);

/**
 * The row just inserted, built here: reading it back (RETURNING *) doubles the cost of an insert,
 * and so does an object spread here. Tests compare it with the row read from the database.
 */
export function newItemRow(it: Required<NewItem>, now: number): ItemRow {
  return {
    id: it.id,
    kind: it.kind,
    device: it.device,
    owner: it.owner,
    policyId: it.policyId,
    payee: it.payee,
    token: it.token,
    amount: it.amount,
    nonce: it.nonce,
    tabId: it.tabId,
    deadline: it.deadline,
    maxFee: it.maxFee,
    fee: it.fee,
    ref: it.ref,
    signature: it.signature,
    r: it.r,
    vs: it.vs,
    spend: it.spend,
    acceptedAt: it.acceptedAt,
    status: "accepted",
    reason: null,
    message: null,
    outcome: null,
    batchId: null,
    position: null,
    txHash: null,
    blockNumber: null,
    blockHash: null,
    updatedAt: now,
  };
}

export const isOpen = (status: BatchStatus) => (OPEN_BATCH_STATUSES as readonly string[]).includes(status);

export function cursorNumber(after: string): number {
  const n = Number(after);
  if (typeof after !== "string" || !Number.isSafeInteger(n) || n < 0) {
    throw new StoreError("INVALID_INPUT", `after must be a cursor returned as next, got ${JSON.stringify(after)}`);
  }
  return n;
}
