import { type Hex, LIMITS, type Payment, type Voucher } from "./types";

/** A signed payment in the packed form `MachinePay.settle` takes (IMachinePay.SignedPayment). */
export type PackedPayment = { payeeAmount: bigint; terms: bigint; ref: Hex; r: Hex; vs: Hex };

export class PaymentEncodingError extends Error {
  readonly code = "PAYMENT_ENCODING";
  constructor(message: string) {
    super(message);
    this.name = "PaymentEncodingError";
  }
}

const SECP256K1_N_HALF = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;

function checkRange(name: keyof typeof LIMITS, value: bigint): void {
  if (value < 0n || value > LIMITS[name]) {
    throw new PaymentEncodingError(`${name} ${value} is out of range: it must be between 0 and ${LIMITS[name]}`);
  }
}

/**
 * EIP-2098 compact form of a 65-byte signature (r ‖ s ‖ v): `vs = s | (v - 27) << 255`.
 * Refuses high-s signatures, which the contract would skip as InvalidSignature.
 */
export function toCompactSignature(signature: Hex): { r: Hex; vs: Hex } {
  const hex = signature.slice(2);
  if (hex.length !== 130) {
    throw new PaymentEncodingError(`signature must be 65 bytes (r, s, v), got ${hex.length / 2} bytes`);
  }
  const r = BigInt(`0x${hex.slice(0, 64)}`);
  const s = BigInt(`0x${hex.slice(64, 128)}`);
  let v = Number.parseInt(hex.slice(128, 130), 16);
  if (v < 27) v += 27;
  if (v !== 27 && v !== 28) throw new PaymentEncodingError(`signature v must be 27 or 28, got ${v}`);
  if (s > SECP256K1_N_HALF) throw new PaymentEncodingError("signature has a high s value (malleable); sign again");
  const vs = s | (BigInt(v - 27) << 255n);
  return { r: toWord(r), vs: toWord(vs) };
}

/**
 * Pack a signed payment for `settle`. `fee` is the submitter's fee for this item (not signed by
 * the device; must not exceed `payment.maxFee` or the contract skips the item with FeeAboveMax).
 */
export function packPayment(payment: Payment, signature: Hex, fee = 0n): PackedPayment {
  checkRange("amount", payment.amount);
  checkRange("nonce", payment.nonce);
  checkRange("deadline", payment.deadline);
  checkRange("maxFee", payment.maxFee);
  checkRange("maxFee", fee);
  const payee = BigInt(payment.payee);
  const payeeAmount = (payee << 96n) | payment.amount;
  const terms = (payment.maxFee << 160n) | (fee << 64n) | (payment.deadline << 32n) | payment.nonce;
  return { payeeAmount, terms, ref: payment.ref, ...toCompactSignature(signature) };
}

function toWord(value: bigint): Hex {
  return `0x${value.toString(16).padStart(64, "0")}`;
}

/** A signed voucher in the packed form `MachinePay.settleVouchers` takes (IMachinePay.SignedVoucher). */
export type PackedVoucher = { payeeCumulative: bigint; terms: bigint; tabId: bigint; r: Hex; vs: Hex };

/** Pack a signed voucher for `settleVouchers`; `fee` as in packPayment (at most `voucher.maxFee`). */
export function packVoucher(voucher: Voucher, signature: Hex, fee = 0n): PackedVoucher {
  checkRange("amount", voucher.cumulative);
  checkRange("deadline", voucher.deadline);
  checkRange("maxFee", voucher.maxFee);
  checkRange("maxFee", fee);
  if (voucher.tabId < 0n || voucher.tabId >= 1n << 256n) {
    throw new PaymentEncodingError(`tabId ${voucher.tabId} is out of range: it must be a uint256`);
  }
  const payeeCumulative = (BigInt(voucher.payee) << 96n) | voucher.cumulative;
  const terms = (voucher.maxFee << 160n) | (fee << 64n) | (voucher.deadline << 32n);
  return { payeeCumulative, terms, tabId: voucher.tabId, ...toCompactSignature(signature) };
}
