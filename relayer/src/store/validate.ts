// Input checks shared by every backend: callers are trusted stages, so a failure here is a bug in
// the caller, reported as INVALID_INPUT before anything is written (and before a group commit, so
// one bad call never fails the others in its group).

import { StoreError } from "./errors";
import {
  BATCH_KINDS,
  type BatchMined,
  type BatchRequeue,
  type Cursor,
  type DeviceEventRange,
  type Hex,
  type InstanceLease,
  ITEM_KINDS,
  type ItemRejection,
  type ItemUpdate,
  type NewAttempt,
  type NewBatch,
  type NewItem,
  type NewOwnerMessage,
  OWNER_MESSAGE_KINDS,
  OWNER_MESSAGE_STATUSES,
  type OwnerGuard,
  type OwnerMessageUpdate,
  type TabAdvance,
  type TabKey,
  type TabSettled,
  type WriteSet,
} from "./types";

const HEX = /^0x[0-9a-fA-F]*$/;

function invalid(field: string, value: unknown, expected: string): never {
  const shown = typeof value === "bigint" ? `${value}n` : JSON.stringify(value);
  throw new StoreError("INVALID_INPUT", `${field} must be ${expected}, got ${shown}`, { field });
}

export function hex(value: unknown, field: string, bytes?: number): Hex {
  if (typeof value !== "string" || !HEX.test(value) || value.length % 2 !== 0) invalid(field, value, "0x hex");
  if (bytes !== undefined && value.length !== 2 + 2 * bytes) invalid(field, value, `${bytes} bytes of 0x hex`);
  return value.toLowerCase() as Hex;
}

export const address = (value: unknown, field: string) => hex(value, field, 20);
export const hash32 = (value: unknown, field: string) => hex(value, field, 32);

export function uint(value: unknown, field: string): bigint {
  if (typeof value !== "bigint" || value < 0n) invalid(field, value, "a non-negative bigint");
  return value;
}

export function int(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    invalid(field, value, "a non-negative safe integer");
  }
  return value;
}

export function text(value: unknown, field: string): string {
  if (typeof value !== "string" || value === "") invalid(field, value, "a non-empty string");
  return value;
}

const optionalText = (value: unknown, field: string) =>
  value === undefined || value === null ? null : text(value, field);

export function oneOf<T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (!allowed.includes(value as T)) invalid(field, value, `one of ${allowed.join(", ")}`);
  return value as T;
}

export function limit(value: unknown, field = "limit"): number {
  const n = int(value, field);
  if (n < 1 || n > 100_000) invalid(field, value, "between 1 and 100000");
  return n;
}

export function item(raw: NewItem, now: number, field = "item"): Required<NewItem> {
  if (raw === null || typeof raw !== "object") invalid(field, raw, "an item");
  const kind = oneOf(raw.kind, ITEM_KINDS, `${field}.kind`);
  const payment = kind === "payment";
  const nonce = payment ? uint(raw.nonce, `${field}.nonce`) : null;
  if (nonce !== null && nonce > BigInt(Number.MAX_SAFE_INTEGER)) invalid(`${field}.nonce`, raw.nonce, "below 2^53");
  if (!payment && raw.nonce !== null && raw.nonce !== undefined)
    invalid(`${field}.nonce`, raw.nonce, "null for a voucher");
  if (payment && raw.tabId !== null && raw.tabId !== undefined)
    invalid(`${field}.tabId`, raw.tabId, "null for a payment");
  if (!payment && raw.ref !== null && raw.ref !== undefined) invalid(`${field}.ref`, raw.ref, "null for a voucher");
  const fee = uint(raw.fee, `${field}.fee`);
  const maxFee = uint(raw.maxFee, `${field}.maxFee`);
  if (fee > maxFee) invalid(`${field}.fee`, raw.fee, `at most maxFee (${maxFee})`);
  return {
    id: hash32(raw.id, `${field}.id`),
    kind,
    device: address(raw.device, `${field}.device`),
    owner: address(raw.owner, `${field}.owner`),
    policyId: int(raw.policyId, `${field}.policyId`),
    payee: address(raw.payee, `${field}.payee`),
    token: address(raw.token, `${field}.token`),
    amount: uint(raw.amount, `${field}.amount`),
    nonce,
    tabId: payment ? null : uint(raw.tabId, `${field}.tabId`),
    deadline: int(raw.deadline, `${field}.deadline`),
    maxFee,
    fee,
    ref: payment ? hash32(raw.ref, `${field}.ref`) : null,
    signature: hex(raw.signature, `${field}.signature`, 65),
    r: hash32(raw.r, `${field}.r`),
    vs: hash32(raw.vs, `${field}.vs`),
    spend: uint(raw.spend, `${field}.spend`),
    acceptedAt: raw.acceptedAt === undefined ? now : int(raw.acceptedAt, `${field}.acceptedAt`),
  };
}

export function tabKey(raw: TabKey, field = "tab"): TabKey {
  if (raw === null || typeof raw !== "object") invalid(field, raw, "a tab key");
  return {
    device: address(raw.device, `${field}.device`),
    payee: address(raw.payee, `${field}.payee`),
    token: address(raw.token, `${field}.token`),
    tabId: uint(raw.tabId, `${field}.tabId`),
  };
}

export function tabAdvance(raw: TabAdvance, field: string): TabAdvance {
  return {
    ...tabKey(raw, field),
    newestId: hash32(raw.newestId, `${field}.newestId`),
    newestCumulative: uint(raw.newestCumulative, `${field}.newestCumulative`),
  };
}

export function tabSettled(raw: TabSettled): { settledCumulative: bigint; closesAt: number | null | undefined } {
  if (raw === null || typeof raw !== "object") invalid("settled", raw, "{ settledCumulative, closesAt? }");
  return {
    settledCumulative: uint(raw.settledCumulative, "settledCumulative"),
    closesAt: raw.closesAt === undefined || raw.closesAt === null ? raw.closesAt : int(raw.closesAt, "closesAt"),
  };
}

export type NormalizedUpdate = { id: Hex; status: ItemUpdate["status"]; reason: string | null; message: string | null };

export function itemUpdate(raw: ItemUpdate, field: string): NormalizedUpdate {
  if (raw === null || typeof raw !== "object") invalid(field, raw, "an update");
  const status = oneOf(raw.status, ["superseded", "rejected"] as const, `${field}.status`);
  return {
    id: hash32(raw.id, `${field}.id`),
    status,
    reason: status === "rejected" ? text(raw.reason, `${field}.reason`) : optionalText(raw.reason, `${field}.reason`),
    message: optionalText(raw.message, `${field}.message`),
  };
}

export type NormalizedWriteSet = {
  items: Required<NewItem>[];
  tabs: TabAdvance[];
  updates: NormalizedUpdate[];
  guard: OwnerGuard[];
};

const list = <T>(value: readonly T[] | undefined, field: string): readonly T[] => {
  if (value === undefined) return [];
  if (!Array.isArray(value)) invalid(field, value, "an array");
  return value;
};

export function writeSet(set: WriteSet, now: number): NormalizedWriteSet {
  if (set === null || typeof set !== "object") invalid("write set", set, "an object");
  const items = list(set.items, "items").map((it, i) => item(it, now, `items[${i}]`));
  const tabs = list(set.tabs, "tabs").map((t, i) => tabAdvance(t, `tabs[${i}]`));
  // A tab advances to a voucher written in the same set: checked here, so a bad reference fails
  // this caller alone instead of the whole group's transaction (a foreign-key violation would).
  tabs.forEach((t, i) => {
    const v = items.find((it) => it.id === t.newestId);
    if (
      v?.kind !== "voucher" ||
      v.device !== t.device ||
      v.payee !== t.payee ||
      v.token !== t.token ||
      v.tabId !== t.tabId ||
      v.amount !== t.newestCumulative
    ) {
      invalid(`tabs[${i}].newestId`, t.newestId, "a voucher of this tab with this cumulative, in the same write set");
    }
  });
  const guard = list(set.guard, "guard").map((g, i) => ({
    owner: address(g?.owner, `guard[${i}].owner`),
    version: g?.version === null ? null : int(g?.version, `guard[${i}].version`),
  }));
  return { items, tabs, updates: list(set.updates, "updates").map((u, i) => itemUpdate(u, `updates[${i}]`)), guard };
}

export function instanceLease(raw: InstanceLease): InstanceLease {
  if (raw === null || typeof raw !== "object") invalid("lease", raw, "an object");
  return {
    sender: address(raw.sender, "sender"),
    holder: text(raw.holder, "holder"),
    leaseMs: int(raw.leaseMs, "leaseMs"),
  };
}

export function rejections(raw: readonly ItemRejection[]): ItemUpdate[] {
  return list(raw, "rejections").map((r, i) => ({
    id: r?.id,
    status: "rejected" as const,
    reason: text(r?.reason, `rejections[${i}].reason`),
    message: r?.message,
  }));
}

export function newBatch(raw: NewBatch): Omit<Required<NewBatch>, "itemIds"> & { itemIds: Hex[] } {
  if (raw === null || typeof raw !== "object") invalid("batch", raw, "a batch");
  const kind = oneOf(raw.kind, BATCH_KINDS, "kind");
  const itemIds = list(raw.itemIds, "itemIds").map((id, i) => hash32(id, `itemIds[${i}]`));
  const forMessage = (OWNER_MESSAGE_KINDS as readonly string[]).includes(kind);
  if (forMessage && itemIds.length > 0) invalid("itemIds", raw.itemIds, "no items in an owner message's batch");
  if (!forMessage && itemIds.length === 0) invalid("itemIds", raw.itemIds, "at least one item id");
  if (new Set(itemIds).size !== itemIds.length) invalid("itemIds", "(duplicates)", "distinct ids");
  const messageId = raw.messageId === undefined || raw.messageId === null ? null : hash32(raw.messageId, "messageId");
  if (forMessage !== (messageId !== null)) {
    invalid("messageId", raw.messageId, forMessage ? "the owner message's id" : "none for a batch of items");
  }
  return {
    kind,
    messageId,
    token: address(raw.token, "token"),
    sender: address(raw.sender, "sender"),
    nonce: int(raw.nonce, "nonce"),
    itemIds,
    gasEstimate:
      raw.gasEstimate === undefined || raw.gasEstimate === null ? null : uint(raw.gasEstimate, "gasEstimate"),
  };
}

export function newAttempt(raw: NewAttempt): NewAttempt {
  if (raw === null || typeof raw !== "object") invalid("attempt", raw, "an attempt");
  return {
    hash: hash32(raw.hash, "hash"),
    raw: hex(raw.raw, "raw"),
    nonce: int(raw.nonce, "nonce"),
    maxFeePerGas: uint(raw.maxFeePerGas, "maxFeePerGas"),
    maxPriorityFeePerGas: uint(raw.maxPriorityFeePerGas, "maxPriorityFeePerGas"),
  };
}

export function batchMined(raw: BatchMined) {
  if (raw === null || typeof raw !== "object") invalid("mined", raw, "a mined receipt");
  return {
    txHash: hash32(raw.txHash, "txHash"),
    blockNumber: int(raw.blockNumber, "blockNumber"),
    blockHash: hash32(raw.blockHash, "blockHash"),
    gasUsed: uint(raw.gasUsed, "gasUsed"),
    items: list(raw.items, "items").map((o, i) => {
      const status = oneOf(o?.status, ["settled", "rejected"] as const, `items[${i}].status`);
      return {
        id: hash32(o.id, `items[${i}].id`),
        status,
        reason: status === "rejected" ? text(o.reason, `items[${i}].reason`) : null,
        message: status === "rejected" ? optionalText(o.message, `items[${i}].message`) : null,
      };
    }),
  };
}

export function batchRequeue(raw: BatchRequeue) {
  if (raw === null || typeof raw !== "object") invalid("requeue", raw, "a requeue");
  const r = raw.receipt;
  return {
    status: oneOf(raw.status, ["reverted", "dropped", "failed"] as const, "status"),
    error: optionalText(raw.error, "error"),
    receipt:
      r === undefined || r === null
        ? null
        : {
            txHash: hash32(r.txHash, "receipt.txHash"),
            blockNumber: int(r.blockNumber, "receipt.blockNumber"),
            blockHash: hash32(r.blockHash, "receipt.blockHash"),
            gasUsed: uint(r.gasUsed, "receipt.gasUsed"),
          },
  };
}

export function cursor(name: unknown, raw: Cursor) {
  return {
    name: text(name, "name"),
    blockNumber: int(raw?.blockNumber, "blockNumber"),
    blockHash: raw.blockHash === null || raw.blockHash === undefined ? null : hash32(raw.blockHash, "blockHash"),
  };
}

export function deviceEventRange(raw: DeviceEventRange, to: number) {
  if (raw === null || typeof raw !== "object") invalid("devices", raw, "a device event range");
  const from = int(raw.from, "devices.from");
  if (from > to) invalid("devices.from", from, `a block at most the cursor's (${to})`);
  if (!Array.isArray(raw.events)) invalid("devices.events", raw.events, "an array");
  const events = raw.events.map((e, i) => {
    const f = `devices.events[${i}]`;
    const kind = oneOf(e?.kind, ["assigned", "touched"] as const, `${f}.kind`);
    const blockNumber = int(e.blockNumber, `${f}.blockNumber`);
    if (blockNumber < from || blockNumber > to)
      invalid(`${f}.blockNumber`, blockNumber, `a block from ${from} to ${to}`);
    return {
      device: address(e.device, `${f}.device`),
      kind,
      policyId: kind === "assigned" ? int(e.policyId, `${f}.policyId`) : null,
      blockNumber,
      logIndex: int(e.logIndex, `${f}.logIndex`),
    };
  });
  return { from, events, fromDeployment: raw.fromDeployment === true };
}

export function ownerMessage(raw: NewOwnerMessage): NewOwnerMessage {
  if (raw === null || typeof raw !== "object") invalid("owner message", raw, "an owner message");
  const body = text(raw.body, "body");
  try {
    JSON.parse(body);
  } catch {
    invalid("body", "(not JSON)", "JSON text");
  }
  return {
    id: hash32(raw.id, "id"),
    kind: oneOf(raw.kind, OWNER_MESSAGE_KINDS, "kind"),
    owner: address(raw.owner, "owner"),
    body,
  };
}

export function ownerMessageUpdate(raw: OwnerMessageUpdate) {
  if (raw === null || typeof raw !== "object") invalid("update", raw, "an owner message update");
  return {
    status: oneOf(raw.status, OWNER_MESSAGE_STATUSES, "status"),
    txHash: raw.txHash === undefined ? undefined : raw.txHash === null ? null : hash32(raw.txHash, "txHash"),
    error: raw.error === undefined ? undefined : optionalText(raw.error, "error"),
  };
}
