import { bytesToHex, hexToBytes, keccak256, stringToBytes } from "viem";
import { PaymentEncodingError } from "./encode";
import {
  type Address,
  type Hex,
  type MachinePayDomain,
  PAYMENT_TYPE,
  type Payment,
  VOUCHER_TYPE,
  type Voucher,
} from "./types";

/**
 * Fixed-layout EIP-712 hashing of the two device messages (Payment, Voucher), byte-identical to
 * viem's `hashTypedData` (and to PaymentHash.sol / VoucherHash.sol) but without the generic
 * type walker: the words go straight into a preallocated buffer. Devices and the relayer share it.
 * Browser-safe (no Node imports).
 */

/** A keccak-256 implementation: the relayer passes a native one, everything else uses the default. */
export type Keccak256 = (data: Uint8Array) => Uint8Array;

const jsKeccak256: Keccak256 = (data) => keccak256(data, "bytes");

/** A field of a message or domain that is not a well-formed EIP-712 value; `field` names it. */
export class FieldEncodingError extends PaymentEncodingError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = "FieldEncodingError";
    this.field = field;
  }
}

const EIP712_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
const DOMAIN_TYPEHASH = jsKeccak256(stringToBytes(EIP712_DOMAIN_TYPE));
const PAYMENT_TYPEHASH = jsKeccak256(stringToBytes(PAYMENT_TYPE));
const VOUCHER_TYPEHASH = jsKeccak256(stringToBytes(VOUCHER_TYPE));
const MAX_UINT256 = (1n << 256n) - 1n;

// Scratch buffers, typehash prefilled. Safe to share: every call is synchronous and rewrites every
// byte after the typehash (hashStruct = keccak(typehash ‖ 32-byte word per field)).
const paymentWords = new Uint8Array(32 * 8);
paymentWords.set(PAYMENT_TYPEHASH);
const voucherWords = new Uint8Array(32 * 7);
voucherWords.set(VOUCHER_TYPEHASH);
const domainWords = new Uint8Array(32 * 5);
domainWords.set(DOMAIN_TYPEHASH);
const envelope = new Uint8Array(2 + 32 + 32); // 0x1901 ‖ domainSeparator ‖ hashStruct(message)
envelope[0] = 0x19;
envelope[1] = 0x01;
const paymentView = new DataView(paymentWords.buffer);
const voucherView = new DataView(voucherWords.buffer);
const domainView = new DataView(domainWords.buffer);

// Nibble value of an ASCII char code, -1 for anything that is not a hex digit.
const NIBBLE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) NIBBLE[48 + i] = i;
for (let i = 0; i < 6; i++) {
  NIBBLE[65 + i] = 10 + i;
  NIBBLE[97 + i] = 10 + i;
}

/** Decodes `chars` hex digits of `hex` from `start` into `out` at `offset`; false on a non-hex char. */
function decodeHex(out: Uint8Array, offset: number, hex: string, start: number, chars: number): boolean {
  for (let i = 0; i < chars; i += 2) {
    const a = hex.charCodeAt(start + i);
    const b = hex.charCodeAt(start + i + 1);
    if ((a | b) > 127) return false;
    const hi = NIBBLE[a];
    const lo = NIBBLE[b];
    if ((hi | lo) < 0) return false;
    out[offset + (i >> 1)] = (hi << 4) | lo;
  }
  return true;
}

function shown(value: unknown): string {
  const s = typeof value === "string" ? JSON.stringify(value) : typeof value === "bigint" ? `${value}` : typeof value;
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function writeAddress(out: Uint8Array, offset: number, value: unknown, field: string): void {
  if (typeof value !== "string" || value.length !== 42 || value[0] !== "0" || value[1] !== "x") {
    throw new FieldEncodingError(field, `${field} must be a 0x-prefixed 20-byte hex address, got ${shown(value)}`);
  }
  out.fill(0, offset, offset + 12);
  if (!decodeHex(out, offset + 12, value, 2, 40)) {
    throw new FieldEncodingError(field, `${field} contains a non-hex character: ${shown(value)}`);
  }
}

function writeBytes32(out: Uint8Array, offset: number, value: unknown, field: string): void {
  if (typeof value !== "string" || value.length !== 66 || value[0] !== "0" || value[1] !== "x") {
    throw new FieldEncodingError(field, `${field} must be 0x-prefixed hex of exactly 32 bytes, got ${shown(value)}`);
  }
  if (!decodeHex(out, offset, value, 2, 64)) {
    throw new FieldEncodingError(field, `${field} contains a non-hex character: ${shown(value)}`);
  }
}

function writeUint256(out: Uint8Array, dv: DataView, offset: number, value: unknown, field: string): void {
  if (typeof value !== "bigint") {
    throw new FieldEncodingError(field, `${field} must be a bigint (uint256), got ${shown(value)}`);
  }
  if (value < 0n || value > MAX_UINT256) {
    throw new FieldEncodingError(field, `${field} ${value} is out of range: a uint256 is between 0 and 2^256 - 1`);
  }
  // Nonces, deadlines and most amounts fit in 53 bits: two 32-bit stores instead of a hex round trip.
  if (value <= 0x1fffffffffffffn) {
    const n = Number(value);
    const lo = n % 0x100000000;
    out.fill(0, offset, offset + 24);
    dv.setUint32(offset + 24, (n - lo) / 0x100000000);
    dv.setUint32(offset + 28, lo);
    return;
  }
  let hex = value.toString(16);
  if (hex.length & 1) hex = `0${hex}`;
  const start = offset + 32 - (hex.length >> 1);
  out.fill(0, offset, start);
  decodeHex(out, start, hex, 0, hex.length);
}

function envelopeHash(domainSep: Uint8Array, structHash: Uint8Array, keccak: Keccak256): Uint8Array {
  if (domainSep.length !== 32) {
    throw new FieldEncodingError("domainSeparator", `the domain separator must be 32 bytes, got ${domainSep.length}`);
  }
  envelope.set(domainSep, 2);
  envelope.set(structHash, 34);
  return keccak(envelope);
}

/**
 * The EIP-712 domain separator (32 bytes) of a MachinePay deployment. Compute it once per domain
 * and pass it to paymentDigest / voucherDigest.
 */
export function domainSeparator(domain: MachinePayDomain, keccak: Keccak256 = jsKeccak256): Uint8Array {
  const { chainId } = domain;
  if (!Number.isSafeInteger(chainId) || chainId < 0) {
    throw new FieldEncodingError("chainId", `chainId must be a non-negative integer, got ${shown(chainId)}`);
  }
  if (typeof domain.name !== "string" || typeof domain.version !== "string") {
    throw new FieldEncodingError("name", "the domain's name and version must be strings");
  }
  domainWords.set(keccak(stringToBytes(domain.name)), 32);
  domainWords.set(keccak(stringToBytes(domain.version)), 64);
  writeUint256(domainWords, domainView, 96, BigInt(chainId), "chainId");
  writeAddress(domainWords, 128, domain.verifyingContract, "verifyingContract");
  return keccak(domainWords);
}

/**
 * The EIP-712 digest (32 bytes, a fresh array) of a payment under `domainSep`: what the device
 * signs. Throws FieldEncodingError (a PaymentEncodingError) naming the first field that is not a
 * uint256 / 20-byte address / 32-byte hex value. Addresses are taken in any letter case: the
 * EIP-55 checksum of a mixed-case address is not checked (viem's hashTypedData does check it).
 */
export function paymentDigest(domainSep: Uint8Array, payment: Payment, keccak: Keccak256 = jsKeccak256): Uint8Array {
  const w = paymentWords;
  writeAddress(w, 32, payment.payee, "payee");
  writeAddress(w, 64, payment.token, "token");
  writeUint256(w, paymentView, 96, payment.amount, "amount");
  writeUint256(w, paymentView, 128, payment.nonce, "nonce");
  writeUint256(w, paymentView, 160, payment.deadline, "deadline");
  writeUint256(w, paymentView, 192, payment.maxFee, "maxFee");
  writeBytes32(w, 224, payment.ref, "ref");
  return envelopeHash(domainSep, keccak(w), keccak);
}

/** The EIP-712 digest of a tab voucher under `domainSep` (see paymentDigest). */
export function voucherDigest(domainSep: Uint8Array, voucher: Voucher, keccak: Keccak256 = jsKeccak256): Uint8Array {
  const w = voucherWords;
  writeAddress(w, 32, voucher.payee, "payee");
  writeAddress(w, 64, voucher.token, "token");
  writeUint256(w, voucherView, 96, voucher.tabId, "tabId");
  writeUint256(w, voucherView, 128, voucher.cumulative, "cumulative");
  writeUint256(w, voucherView, 160, voucher.deadline, "deadline");
  writeUint256(w, voucherView, 192, voucher.maxFee, "maxFee");
  return envelopeHash(domainSep, keccak(w), keccak);
}

/** paymentDigest as lowercase 0x hex, from the domain (same value as hashPayment, faster). */
export function paymentDigestHex(domain: MachinePayDomain, payment: Payment): Hex {
  return bytesToHex(paymentDigest(domainSeparator(domain), payment));
}

/** voucherDigest as lowercase 0x hex, from the domain (same value as hashVoucher, faster). */
export function voucherDigestHex(domain: MachinePayDomain, voucher: Voucher): Hex {
  return bytesToHex(voucherDigest(domainSeparator(domain), voucher));
}

/**
 * The id of a signed item at the relayer: keccak256(digest ‖ device), 52 bytes hashed. The digest
 * alone does not name a payment: two devices can sign the very same Payment (same payee, amount,
 * nonce, deadline and ref: a fleet paying one toll gate at once), and those are two payments. With
 * low-s signatures and deterministic signing, (digest, signer) is the signed item.
 */
export function itemId(digest: Hex, device: Address, keccak: Keccak256 = jsKeccak256): Hex {
  const bytes = new Uint8Array(52);
  bytes.set(hexToBytes(digest), 0);
  bytes.set(hexToBytes(device), 32);
  return bytesToHex(keccak(bytes));
}
