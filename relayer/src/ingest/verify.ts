import {
  type Address,
  domainSeparator,
  FieldEncodingError,
  type Hex,
  type Keccak256,
  LIMITS,
  type MachinePayDomain,
  type Payment,
  paymentDigest,
  type Voucher,
  voucherDigest,
} from "@machinepay/sdk";

// The native bindings, not the packages' main entries: those fall back silently to pure JS
// (elliptic, an order of magnitude slower) when the prebuilt binary does not load; we want the error.
const secp256k1: typeof import("secp256k1") = require("secp256k1/bindings");

// keccak-256 lives in ../keccak (the batcher's transaction hashing shares it); re-exported here.
import { fastKeccak256 } from "../keccak";

export { fastKeccak256, keccakBackend, keccakReady, nativeKeccak256 } from "../keccak";

/** A decoded signed item (the API layer parses JSON into this; the Verifier never sees HTTP). */
export type VerifyItem =
  | { kind: "payment"; payment: Payment; signature: Hex }
  | { kind: "voucher"; voucher: Voucher; signature: Hex };

/**
 * Why an item is refused before it reaches the chain: the cases where the contract would only
 * report InvalidSignature or UnknownDevice, or where its packed calldata cannot carry a value at
 * all, so the relayer names the real fault instead.
 */
export type VerifyCode =
  | "FIELD_MALFORMED" // not a bigint / not 20-byte or 32-byte 0x-hex
  | "FIELD_OUT_OF_RANGE" // beyond the bits the packed calldata gives the field
  | "DEADLINE_IN_MILLISECONDS"
  | "SIGNATURE_LENGTH"
  | "SIGNATURE_BAD_V"
  | "SIGNATURE_HIGH_S"
  | "SIGNATURE_INVALID";

/**
 * A verified item. `digest` is the EIP-712 digest (the item's id), `device` the signer's address,
 * both lowercase 0x-hex (no EIP-55 checksum: it would cost another keccak per item, and ids and
 * addresses compare as strings in the store). `r`, `vs` are the EIP-2098 compact signature the
 * contract takes.
 */
export type VerifyOk = { ok: true; digest: Hex; device: Address; r: Hex; vs: Hex };

/** A refused item: `message` says what is wrong and what to do; `field` names the offending field. */
export type VerifyRejection = { ok: false; code: VerifyCode; message: string; field?: string };

export type VerifyResult = VerifyOk | VerifyRejection;

export type VerifierOptions = {
  /** keccak-256 for the digest and the address; default fastKeccak256. */
  keccak?: Keccak256;
};

const TWO_96 = 1n << 96n;
const TWO_32 = 1n << 32n;
const TWO_256 = 1n << 256n;
// A deadline whose value in seconds would lie in 2001..2106 once divided by 1000: a ms timestamp.
const MS_FROM = 1_000_000_000_000n;
const MS_UNTIL = TWO_32 * 1000n;

const SECP256K1_N = Buffer.from("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", "hex");
const SECP256K1_N_HALF = Buffer.from("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0", "hex");
const ZERO_WORD = Buffer.alloc(32);
const SIGNATURE_HEX = /^0x[0-9a-fA-F]{130}$/;

function reject(code: VerifyCode, field: string, message: string): VerifyRejection {
  return { ok: false, code, message, field };
}

function notBigint(field: string, value: unknown): VerifyRejection {
  return reject("FIELD_MALFORMED", field, `${field} must be an integer (bigint), got ${typeof value}`);
}

/** A 96-bit token amount (amount, cumulative, maxFee). */
function checkAmount(field: string, value: bigint, advice: string): VerifyRejection | undefined {
  if (typeof value !== "bigint") return notBigint(field, value);
  if (value < 0n) {
    return reject("FIELD_OUT_OF_RANGE", field, `${field} ${value} is negative: token amounts are unsigned (0 or more)`);
  }
  if (value > LIMITS.amount) {
    return reject(
      "FIELD_OUT_OF_RANGE",
      field,
      `${field} ${value} does not fit the contract's 96-bit field: it must be below 2^96 (${TWO_96}) token units; ${advice}`,
    );
  }
  return undefined;
}

function checkDeadline(value: bigint): VerifyRejection | undefined {
  if (typeof value !== "bigint") return notBigint("deadline", value);
  if (value >= 0n && value <= LIMITS.deadline) return undefined;
  if (value >= MS_FROM && value < MS_UNTIL) {
    return reject(
      "DEADLINE_IN_MILLISECONDS",
      "deadline",
      `deadline ${value} looks like a timestamp in milliseconds: deadlines are unix seconds (did you mean ${value / 1000n}?); sign it again with the deadline in seconds`,
    );
  }
  return reject(
    "FIELD_OUT_OF_RANGE",
    "deadline",
    `deadline ${value} is out of range: deadlines are unix seconds between 0 and 2^32 - 1 (${LIMITS.deadline})`,
  );
}

function checkNonce(value: bigint): VerifyRejection | undefined {
  if (typeof value !== "bigint") return notBigint("nonce", value);
  if (value >= 0n && value <= LIMITS.nonce) return undefined;
  return reject(
    "FIELD_OUT_OF_RANGE",
    "nonce",
    `nonce ${value} is out of range: the contract packs nonces into 32 bits, so use a nonce between 0 and 2^32 - 1 (${LIMITS.nonce})`,
  );
}

// Fields in type order, so the first bad one is reported.
function checkPayment(p: Payment): VerifyRejection | undefined {
  return (
    checkAmount("amount", p.amount, "split it into several payments") ??
    checkNonce(p.nonce) ??
    checkDeadline(p.deadline) ??
    checkAmount("maxFee", p.maxFee, "sign a smaller maxFee")
  );
}

function checkVoucher(v: Voucher): VerifyRejection | undefined {
  if (typeof v.tabId !== "bigint") return notBigint("tabId", v.tabId);
  if (v.tabId < 0n || v.tabId >= TWO_256) {
    return reject("FIELD_OUT_OF_RANGE", "tabId", `tabId ${v.tabId} is not a uint256: use a tab id in 0 .. 2^256 - 1`);
  }
  return (
    checkAmount("cumulative", v.cumulative, "settle this tab and continue on a new tabId") ??
    checkDeadline(v.deadline) ??
    checkAmount("maxFee", v.maxFee, "sign a smaller maxFee")
  );
}

const SIGN_AGAIN = "sign the item again with a standard EIP-712 signer (viem, ethers) and send r ‖ s ‖ v";

/** Why a signature string is not 65 bytes of hex (the slow path: only for refused signatures). */
function lengthFault(signature: unknown): VerifyRejection {
  const field = "signature";
  if (typeof signature !== "string" || !signature.startsWith("0x")) {
    return reject("SIGNATURE_LENGTH", field, `signature must be a 0x-prefixed hex string of 65 bytes; ${SIGN_AGAIN}`);
  }
  const hex = signature.slice(2);
  const bad = hex.search(/[^0-9a-fA-F]/);
  if (bad >= 0) {
    return reject(
      "SIGNATURE_LENGTH",
      field,
      `signature has a non-hex character at position ${bad + 2}: it must be 65 bytes of hex; ${SIGN_AGAIN}`,
    );
  }
  if (hex.length % 2 === 1) {
    return reject(
      "SIGNATURE_LENGTH",
      field,
      `signature has an odd number of hex digits (${hex.length}): it must be 65 bytes (130 hex digits); ${SIGN_AGAIN}`,
    );
  }
  const compact = hex.length === 128 ? " (64 bytes is the EIP-2098 compact form: send the 65-byte form)" : "";
  return reject(
    "SIGNATURE_LENGTH",
    field,
    `signature is ${hex.length / 2} bytes, not 65 (r ‖ s ‖ v)${compact}; ${SIGN_AGAIN}`,
  );
}

/**
 * Verifies signed payments and vouchers for one deployment (domain), the way the contract will:
 * packed field ranges first, then the signature's form (65 bytes, v, r and s in range, low s),
 * then secp256k1 recovery. One instance per thread: it reuses scratch buffers, which is safe
 * because verify is synchronous.
 */
export class Verifier {
  readonly domain: MachinePayDomain;
  /** The EIP-712 domain separator, computed once. */
  readonly domainSeparator: Hex;
  private readonly separator: Uint8Array;
  private readonly keccak: Keccak256;
  private readonly sig = Buffer.alloc(65);
  private readonly sig64 = this.sig.subarray(0, 64);
  private readonly r = this.sig.subarray(0, 32);
  private readonly s = this.sig.subarray(32, 64);
  private readonly publicKey = Buffer.alloc(65);
  private readonly publicXY = this.publicKey.subarray(1);

  constructor(domain: MachinePayDomain, options: VerifierOptions = {}) {
    this.domain = domain;
    this.keccak = options.keccak ?? fastKeccak256;
    this.separator = domainSeparator(domain, this.keccak);
    this.domainSeparator = `0x${toHex(this.separator, 0, 32)}`;
  }

  /** Verify one item; never throws for bad input. */
  verify(item: VerifyItem): VerifyResult {
    const kind = item?.kind;
    const message = kind === "payment" ? item.payment : kind === "voucher" ? item.voucher : undefined;
    if (kind !== "payment" && kind !== "voucher") {
      return reject("FIELD_MALFORMED", "kind", 'kind must be "payment" or "voucher"');
    }
    if (typeof message !== "object" || message === null) {
      return reject("FIELD_MALFORMED", kind, `the item has no ${kind} object`);
    }
    let digest: Uint8Array;
    try {
      if (item.kind === "payment") {
        const fault = checkPayment(item.payment);
        if (fault) return fault;
        digest = paymentDigest(this.separator, item.payment, this.keccak);
      } else {
        const fault = checkVoucher(item.voucher);
        if (fault) return fault;
        digest = voucherDigest(this.separator, item.voucher, this.keccak);
      }
    } catch (e) {
      // Only addresses and ref get here: the numbers were range-checked above.
      if (e instanceof FieldEncodingError) return reject("FIELD_MALFORMED", e.field, e.message);
      throw e;
    }

    const signature = item.signature;
    if (typeof signature !== "string" || !SIGNATURE_HEX.test(signature)) return lengthFault(signature);
    const sig = this.sig;
    sig.write(signature.slice(2), 0, 65, "hex");
    const v = sig[64];
    if (v !== 27 && v !== 28 && v !== 0 && v !== 1) {
      return reject(
        "SIGNATURE_BAD_V",
        "signature",
        `signature v is ${v}: it must be 27 or 28 (or 0 or 1); ${SIGN_AGAIN}`,
      );
    }
    const { r, s } = this;
    const badR = r.equals(ZERO_WORD) || r.compare(SECP256K1_N) >= 0;
    if (badR || s.equals(ZERO_WORD) || s.compare(SECP256K1_N) >= 0) {
      return reject(
        "SIGNATURE_INVALID",
        "signature",
        `signature ${badR ? "r" : "s"} is zero or not below the secp256k1 group order n, so this is not a signature; ${SIGN_AGAIN}`,
      );
    }
    if (s.compare(SECP256K1_N_HALF) > 0) {
      return reject(
        "SIGNATURE_HIGH_S",
        "signature",
        "signature has a high s value (s > n/2): the contract cannot take it, because its EIP-2098 compact form puts the v parity bit in the top bit of s; sign with a low-s signer, e.g. viem/ethers (or replace s by n - s and flip v)",
      );
    }

    const parity = v >= 27 ? v - 27 : v;
    try {
      secp256k1.ecdsaRecover(this.sig64, parity, digest, false, this.publicKey);
    } catch {
      return reject(
        "SIGNATURE_INVALID",
        "signature",
        "no public key recovers from this signature and digest: it is not a valid secp256k1 signature; sign the item again",
      );
    }
    const address = this.keccak(this.publicXY);
    const rHex = toHex(sig, 0, 32);
    if (parity === 1) sig[32] |= 0x80; // vs = s | parity << 255 (s < n/2 leaves the bit free)
    return {
      ok: true,
      digest: `0x${toHex(digest, 0, 32)}`,
      device: `0x${toHex(address, 12, 32)}`,
      r: `0x${rHex}`,
      vs: `0x${toHex(sig, 32, 64)}`,
    };
  }
}

function toHex(bytes: Uint8Array, start: number, end: number): string {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return b.toString("hex", start, end);
}
