/**
 * Calldata of `settle`, `settleVouchers`, `preview` and `previewVouchers`, written directly: each
 * takes (address token, tuple[] items, address feeRecipient) whose tuples are five static words,
 * so the ABI encoding is a fixed layout (selector, token, offset 0x60, fee recipient, length, then
 * five words per item). viem's generic encodeFunctionData took 8.2 ms for a 500-item batch here,
 * on the event loop, once for the preview and once per signed attempt; this takes well under one.
 * A test checks it against encodeFunctionData for random batches of both kinds.
 */
import { machinePayAbi, type PackedPayment, type PackedVoucher } from "@machinepay/sdk";
import { encodeFunctionData, type Hex } from "viem";

export type BatchFunction = "settle" | "settleVouchers" | "preview" | "previewVouchers";

const ZERO: Hex = "0x0000000000000000000000000000000000000000";
const selectorOf = (functionName: BatchFunction) =>
  encodeFunctionData({ abi: machinePayAbi, functionName, args: [ZERO, [], ZERO] as never }).slice(2, 10);
const SELECTORS: Record<BatchFunction, string> = {
  settle: selectorOf("settle"),
  settleVouchers: selectorOf("settleVouchers"),
  preview: selectorOf("preview"),
  previewVouchers: selectorOf("previewVouchers"),
};

const MAX_UINT256 = (1n << 256n) - 1n;
const HEX32 = /^0x[0-9a-fA-F]{64}$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

function uint(value: bigint, name: string): string {
  if (value < 0n || value > MAX_UINT256) throw new RangeError(`${name} ${value} does not fit a uint256`);
  return value.toString(16).padStart(64, "0");
}

function bytes32(value: Hex, name: string): string {
  if (!HEX32.test(value)) throw new TypeError(`${name} must be 32 bytes of 0x-hex, got ${value}`);
  return value.slice(2).toLowerCase();
}

function address(value: Hex, name: string): string {
  if (!ADDRESS.test(value)) throw new TypeError(`${name} must be a 20-byte 0x-hex address, got ${value}`);
  return value.slice(2).toLowerCase().padStart(64, "0");
}

/** ABI-encoded call of `fn` (payments for settle/preview, vouchers for the voucher functions). */
export function batchCalldata(
  fn: BatchFunction,
  token: Hex,
  items: readonly (PackedPayment | PackedVoucher)[],
  feeRecipient: Hex,
): Hex {
  const vouchers = fn === "settleVouchers" || fn === "previewVouchers";
  const parts: string[] = [
    SELECTORS[fn],
    address(token, "token"),
    uint(0x60n, "offset"),
    address(feeRecipient, "feeRecipient"),
    uint(BigInt(items.length), "length"),
  ];
  for (const item of items) {
    if (vouchers !== "payeeCumulative" in item) {
      throw new TypeError(
        `${fn} takes ${vouchers ? "vouchers" : "payments"}; got a packed ${vouchers ? "payment" : "voucher"}`,
      );
    }
    if ("payeeCumulative" in item) {
      parts.push(
        uint(item.payeeCumulative, "payeeCumulative"),
        uint(item.terms, "terms"),
        uint(item.tabId, "tabId"),
        bytes32(item.r, "r"),
        bytes32(item.vs, "vs"),
      );
    } else {
      parts.push(
        uint(item.payeeAmount, "payeeAmount"),
        uint(item.terms, "terms"),
        bytes32(item.ref, "ref"),
        bytes32(item.r, "r"),
        bytes32(item.vs, "vs"),
      );
    }
  }
  return `0x${parts.join("")}`;
}
