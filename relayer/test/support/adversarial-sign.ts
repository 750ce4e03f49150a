/**
 * Synchronous signing for the adversarial suite: fast-check arbitraries must build their cases
 * without awaiting, and thousands of cases must sign in seconds. Native libsecp256k1 signs the
 * same EIP-712 digests the SDK signs (RFC 6979, low s), so a signature here equals signPayment's
 * (the suite checks that once), and the relayer recovers it with the same library.
 */
import {
  type Address,
  type DeviceProof,
  domainSeparator,
  enrollmentTypes,
  type Hex,
  type MachinePayDomain,
  type Payment,
  paymentDigest,
  toCompactSignature,
  type Voucher,
  voucherDigest,
} from "@machinepay/sdk";
import { bytesToHex, hashTypedData, hexToBytes, keccak256 } from "viem";

// The native binding, not the package's main entry (which falls back to pure JS without saying so).
const secp256k1: typeof import("secp256k1") = require("secp256k1/bindings");

export const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
export const SECP256K1_N_HALF = SECP256K1_N >> 1n;

/** A device or owner key: the private key and its address (lowercase). */
export type Key = { key: Hex; address: Address };

export function keyOf(privateKey: Hex): Key {
  const pub = secp256k1.publicKeyCreate(hexToBytes(privateKey), false);
  const address = `0x${keccak256(pub.subarray(1)).slice(-40)}` as Address;
  return { key: privateKey, address };
}

/** A key from 32 bytes (fast-check's), or undefined when they are not a valid secp256k1 key. */
export function keyFromBytes(bytes: Uint8Array): Key | undefined {
  return secp256k1.privateKeyVerify(bytes) ? keyOf(bytesToHex(bytes)) : undefined;
}

/** 65-byte r ‖ s ‖ v (v 27/28) over a 32-byte digest. */
export function signDigest(key: Hex, digest: Uint8Array | Hex): Hex {
  const d = typeof digest === "string" ? hexToBytes(digest) : digest;
  const { signature, recid } = secp256k1.ecdsaSign(d, hexToBytes(key));
  return `${bytesToHex(signature)}${(27 + recid).toString(16)}` as Hex;
}

const separators = new Map<string, Uint8Array>();
function separatorOf(domain: MachinePayDomain): Uint8Array {
  const k = `${domain.chainId}:${domain.verifyingContract.toLowerCase()}`;
  let s = separators.get(k);
  if (!s) {
    s = domainSeparator(domain);
    separators.set(k, s);
  }
  return s;
}

export function paymentDigestOf(domain: MachinePayDomain, payment: Payment): Hex {
  return bytesToHex(paymentDigest(separatorOf(domain), payment));
}

export function voucherDigestOf(domain: MachinePayDomain, voucher: Voucher): Hex {
  return bytesToHex(voucherDigest(separatorOf(domain), voucher));
}

export const signPaymentSync = (key: Hex, domain: MachinePayDomain, payment: Payment): Hex =>
  signDigest(key, paymentDigestOf(domain, payment));

export const signVoucherSync = (key: Hex, domain: MachinePayDomain, voucher: Voucher): Hex =>
  signDigest(key, voucherDigestOf(domain, voucher));

/** Any EIP-712 message (owner messages) through viem's generic encoder, signed natively. */
export function signTypedSync(
  key: Hex,
  domain: MachinePayDomain,
  types: Record<string, readonly { name: string; type: string }[]>,
  primaryType: string,
  message: Record<string, unknown>,
): Hex {
  return signDigest(key, hashTypedData({ domain, types, primaryType, message } as never));
}

/** A device key's Enrollment(owner) proof in EIP-2098 form. */
export function enrollmentProofSync(key: Hex, domain: MachinePayDomain, owner: Address): DeviceProof {
  return toCompactSignature(signTypedSync(key, domain, enrollmentTypes, "Enrollment", { owner }));
}

const word = (n: bigint) => n.toString(16).padStart(64, "0");

/** The same signature with s replaced by n - s and v flipped: valid for secp256k1, refused by the contract. */
export function highS(signature: Hex): Hex {
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  const v = Number.parseInt(signature.slice(130), 16);
  return `0x${signature.slice(2, 66)}${word(SECP256K1_N - s)}${(v === 27 ? 28 : 27).toString(16)}`;
}

/** The signature with another v byte. */
export function withV(signature: Hex, v: number): Hex {
  return `${signature.slice(0, 130)}${v.toString(16).padStart(2, "0")}` as Hex;
}

/** A signature from raw r, s and v. */
export function rawSignature(r: bigint, s: bigint, v: number): Hex {
  return `0x${word(r)}${word(s)}${v.toString(16).padStart(2, "0")}`;
}
