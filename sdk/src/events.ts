/**
 * Decoders for MachinePay's events, so an indexer (or a payee checking a payment) proves every
 * settlement from logs alone. PaymentSettled and VoucherSettled pack their amounts into one word to
 * save gas (IMachinePay.sol); `decodeMachinePayLog` unpacks them. The token of a settlement is in the
 * same transaction's BatchSettled (`settlementsOf` joins them).
 */
import { decodeEventLog } from "viem";
import { machinePayAbi } from "./abi";
import { type Address, type Hex, REASONS, type ReasonName } from "./types";

const U64 = (1n << 64n) - 1n;
const U96 = (1n << 96n) - 1n;
const U32 = (1n << 32n) - 1n;

/** PaymentSettled's `amounts`: amount(64) | fee(64) << 64 | nonce(32) << 128. */
export function unpackPaymentAmounts(amounts: bigint): { amount: bigint; fee: bigint; nonce: bigint } {
  return { amount: amounts & U64, fee: (amounts >> 64n) & U64, nonce: (amounts >> 128n) & U32 };
}

/** VoucherSettled's `amounts`: increment(64) | fee(64) << 64 | cumulative(96) << 128. */
export function unpackVoucherAmounts(amounts: bigint): { increment: bigint; fee: bigint; cumulative: bigint } {
  return { increment: amounts & U64, fee: (amounts >> 64n) & U64, cumulative: (amounts >> 128n) & U96 };
}

/** The inverse of unpackPaymentAmounts (for tests and indexers that re-encode). */
export function packPaymentAmounts({ amount, fee, nonce }: { amount: bigint; fee: bigint; nonce: bigint }): bigint {
  return amount | (fee << 64n) | (nonce << 128n);
}

/** The inverse of unpackVoucherAmounts. */
export function packVoucherAmounts({
  increment,
  fee,
  cumulative,
}: {
  increment: bigint;
  fee: bigint;
  cumulative: bigint;
}): bigint {
  return increment | (fee << 64n) | (cumulative << 128n);
}

export type PaymentSettledEvent = {
  eventName: "PaymentSettled";
  device: Address;
  payee: Address;
  ref: Hex;
  amount: bigint;
  fee: bigint;
  nonce: bigint;
};
export type VoucherSettledEvent = {
  eventName: "VoucherSettled";
  device: Address;
  payee: Address;
  tabId: bigint;
  increment: bigint;
  fee: bigint;
  cumulative: bigint;
};
export type ItemSkippedEvent = {
  eventName: "PaymentSkipped" | "VoucherSkipped";
  index: number;
  device: Address;
  reason: ReasonName;
};
export type BatchSettledEvent = {
  eventName: "BatchSettled";
  submitter: Address;
  feeRecipient: Address;
  token: Address;
  settled: bigint;
  skipped: bigint;
};
/** Any other MachinePay event, as viem decodes it (`args` typed from machinePayAbi). */
export type OtherMachinePayEvent = { eventName: string; args: Record<string, unknown> };
export type MachinePayEvent =
  | PaymentSettledEvent
  | VoucherSettledEvent
  | ItemSkippedEvent
  | BatchSettledEvent
  | OtherMachinePayEvent;

/** A log as any client returns it (viem, ethers, raw JSON-RPC). */
export type RawLog = { data: Hex; topics: readonly Hex[] };

/**
 * Decode one log of the MachinePay contract (check `log.address` yourself); undefined for a log
 * this ABI does not know. Settlement events come back flat with their amounts unpacked.
 */
export function decodeMachinePayLog(log: RawLog): MachinePayEvent | undefined {
  let decoded: { eventName: string; args: Record<string, unknown> };
  try {
    decoded = decodeEventLog({ abi: machinePayAbi, data: log.data, topics: log.topics as [Hex, ...Hex[]] }) as never;
  } catch {
    return undefined;
  }
  const a = decoded.args;
  switch (decoded.eventName) {
    case "PaymentSettled":
      return {
        eventName: "PaymentSettled",
        device: a.device as Address,
        payee: a.payee as Address,
        ref: a.ref as Hex,
        ...unpackPaymentAmounts(a.amounts as bigint),
      };
    case "VoucherSettled":
      return {
        eventName: "VoucherSettled",
        device: a.device as Address,
        payee: a.payee as Address,
        tabId: a.tabId as bigint,
        ...unpackVoucherAmounts(a.amounts as bigint),
      };
    case "PaymentSkipped":
    case "VoucherSkipped":
      return {
        eventName: decoded.eventName,
        index: Number(a.index),
        device: a.device as Address,
        reason: REASONS[Number(a.reason)],
      };
    case "BatchSettled":
      return {
        eventName: "BatchSettled",
        submitter: a.submitter as Address,
        feeRecipient: a.feeRecipient as Address,
        token: a.token as Address,
        settled: a.settled as bigint,
        skipped: a.skipped as bigint,
      };
    default:
      return decoded;
  }
}

export type Settlement =
  | (PaymentSettledEvent & { token: Address; logIndex: number })
  | (VoucherSettledEvent & { token: Address; logIndex: number });

/**
 * Every payment and voucher settled by the MachinePay transactions in `logs` (a receipt's logs, or
 * getLogs output sorted by block and log index), each with its token from the BatchSettled that
 * closes its batch. Logs from other contracts are ignored.
 */
export function settlementsOf(logs: (RawLog & { address: Address; logIndex?: number | null })[], contract: Address) {
  const out: Settlement[] = [];
  let open: (PaymentSettledEvent | VoucherSettledEvent)[] = [];
  let openIndex: number[] = [];
  for (const log of logs) {
    if (log.address.toLowerCase() !== contract.toLowerCase()) continue;
    const event = decodeMachinePayLog(log);
    if (!event) continue;
    if (event.eventName === "PaymentSettled" || event.eventName === "VoucherSettled") {
      open.push(event as PaymentSettledEvent | VoucherSettledEvent);
      openIndex.push(log.logIndex ?? -1);
    } else if (event.eventName === "BatchSettled") {
      const token = (event as BatchSettledEvent).token;
      for (let i = 0; i < open.length; i++) out.push({ ...open[i], token, logIndex: openIndex[i] } as Settlement);
      open = [];
      openIndex = [];
    }
  }
  return out;
}
