/**
 * The node, as the batcher needs it: broadcast raw transactions, find receipts, read fees and
 * nonces, and tell apart the answers that mean "it is already out there" from real failures.
 */
import type { Hex, PublicClient } from "viem";

/**
 * What the batcher reads of a receipt. Taken from the node's JSON as it is: viem's formatter
 * rewrites every log of it (hex to numbers, checksummed addresses), and a batch's receipt holds
 * hundreds of logs (5-9 ms of the event loop per batch, measured).
 */
export type BatchReceipt = {
  status: "success" | "reverted";
  transactionHash: Hex;
  blockNumber: bigint;
  blockHash: Hex;
  gasUsed: bigint;
  logs: { address: Hex; topics: Hex[]; data: Hex }[];
};

type RawReceipt = {
  status?: Hex;
  transactionHash: Hex;
  blockNumber: Hex | null;
  blockHash: Hex | null;
  gasUsed: Hex;
  logs: { address: Hex; topics: Hex[]; data: Hex }[];
};

export type BroadcastOutcome =
  | { kind: "sent" }
  /** The node has it already (a re-broadcast after a crash or a lost answer). */
  | { kind: "known" }
  /** The nonce is used: one of our attempts (or something else) landed. Look for receipts. */
  | { kind: "nonceTooLow" }
  /** A same-nonce transaction with higher fees is pending; bump more. */
  | { kind: "underpriced" }
  /** Sender cannot pay gas. */
  | { kind: "insufficientFunds"; message: string }
  /** Network trouble or an unknown error: the transaction may or may not be out. Never assume it failed. */
  | { kind: "unknown"; message: string };

const text = (e: unknown) => {
  const err = e as { details?: string; shortMessage?: string; message?: string; cause?: unknown };
  return [err?.details, err?.shortMessage, err?.message, (err?.cause as Error | undefined)?.message]
    .filter(Boolean)
    .join(" | ");
};

/** Classify a node's answer to eth_sendRawTransaction. */
export function classifyBroadcastError(e: unknown): BroadcastOutcome {
  const m = text(e).toLowerCase();
  if (/already known|known transaction|already imported|already exists|alreadyknown/.test(m)) return { kind: "known" };
  if (/nonce too low|nonce has already been used|nonce is too low|noncetoolow|old nonce/.test(m))
    return { kind: "nonceTooLow" };
  if (/underpriced|replacement fee too low|fee too low/.test(m)) return { kind: "underpriced" };
  if (/insufficient funds|sender doesn't have enough funds/.test(m))
    return { kind: "insufficientFunds", message: text(e) };
  return { kind: "unknown", message: text(e) };
}

export class Rpc {
  constructor(readonly client: PublicClient) {}

  async broadcast(raw: Hex): Promise<BroadcastOutcome> {
    try {
      await this.client.request({ method: "eth_sendRawTransaction", params: [raw] });
      return { kind: "sent" };
    } catch (e) {
      return classifyBroadcastError(e);
    }
  }

  /** The receipt, or null while the node has none (not mined, or unknown). Throws on network errors. */
  async receipt(hash: Hex): Promise<BatchReceipt | null> {
    const r = (await this.client.request({
      method: "eth_getTransactionReceipt",
      params: [hash],
    })) as RawReceipt | null;
    // Some nodes answer for a transaction still pending with a receipt without a block.
    if (!r || r.blockNumber === null || r.blockHash === null) return null;
    // A receipt without a status (pre-Byzantium) cannot tell settled from reverted: decide nothing on it.
    if (r.status !== "0x1" && r.status !== "0x0") {
      throw new Error(
        `the receipt of ${hash} has status ${String(r.status)}, neither 0x1 nor 0x0: asked again next pass`,
      );
    }
    return {
      status: r.status === "0x1" ? "success" : "reverted",
      transactionHash: r.transactionHash,
      blockNumber: BigInt(r.blockNumber),
      blockHash: r.blockHash,
      gasUsed: BigInt(r.gasUsed),
      logs: r.logs,
    };
  }

  /** The sender's next nonce on chain: mined only (`latest`) or counting the mempool (`pending`). */
  nonce(address: Hex, blockTag: "latest" | "pending"): Promise<number> {
    return this.client.getTransactionCount({ address, blockTag });
  }

  /** EIP-1559 fees for a new transaction: twice the base fee plus the suggested tip. */
  async fees(): Promise<{ maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }> {
    const block = await this.client.getBlock({ blockTag: "latest" });
    let tip: bigint;
    try {
      tip = await this.client.estimateMaxPriorityFeePerGas();
    } catch {
      tip = 1_000_000_000n;
    }
    if (tip === 0n) tip = 1_000_000n;
    const base = block.baseFeePerGas ?? 0n;
    return { maxFeePerGas: base * 2n + tip, maxPriorityFeePerGas: tip };
  }
}
