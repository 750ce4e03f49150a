import {
  hashTypedData,
  type LocalAccount,
  recoverTypedDataAddress,
  type TypedDataDefinition,
  type WalletClient,
} from "viem";
import { toCompactSignature } from "./encode";
import {
  type Address,
  enrollmentTypes,
  type Hex,
  type MachinePayDomain,
  type Payment,
  paymentTypes,
  type Voucher,
  voucherTypes,
} from "./types";

/** The JSON an `eth_signTypedData_v4` wallet signs: uint256 values as decimal strings. */
export type TypedDataV4 = {
  types: Record<string, { name: string; type: string }[]>;
  primaryType: string;
  domain: MachinePayDomain;
  message: Record<string, unknown>;
};

/** A viem LocalAccount (privateKeyToAccount, mnemonicToAccount, …). */
export type ViemAccountLike = LocalAccount;

/** A viem WalletClient with an account attached (JSON-RPC wallets, browser extensions). */
export type ViemWalletClientLike = WalletClient;

/** An ethers v6 Signer (Wallet, JsonRpcSigner, HDNodeWallet). */
export type EthersSignerLike = {
  getAddress: () => Promise<string>;
  signTypedData: (
    domain: MachinePayDomain,
    types: Record<string, { name: string; type: string }[]>,
    value: Record<string, unknown>,
  ) => Promise<string>;
};

/**
 * Anything that signs EIP-712 v4 JSON: a hardware wallet, a secure element, a remote signer, code
 * in another language. Receives the object (call `JSON.stringify` for a raw v4 request).
 */
export type TypedDataV4Signer = (typedData: TypedDataV4) => Promise<Hex>;

export type PaymentSigner = ViemAccountLike | ViemWalletClientLike | EthersSignerLike | TypedDataV4Signer;

export class SignerError extends Error {
  readonly code = "SIGNER";
  constructor(message: string) {
    super(message);
    this.name = "SignerError";
  }
}

function v4Types(types: Record<string, readonly { readonly name: string; readonly type: string }[]>) {
  const out: Record<string, { name: string; type: string }[]> = {};
  for (const [k, fields] of Object.entries(types)) out[k] = fields.map((f) => ({ name: f.name, type: f.type }));
  return out;
}

function toJson(value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(toJson);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  return value;
}

const EIP712_DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];

type Types = Record<string, readonly { readonly name: string; readonly type: string }[]>;

/** The `eth_signTypedData_v4` JSON for any MachinePay message (EIP712Domain included, bigints as strings). */
export function typedDataV4(
  domain: MachinePayDomain,
  types: Types,
  primaryType: string,
  message: Record<string, unknown>,
): TypedDataV4 {
  return {
    types: { EIP712Domain: EIP712_DOMAIN, ...v4Types(types) },
    primaryType,
    domain,
    message: toJson(message) as Record<string, unknown>,
  };
}

/** The `eth_signTypedData_v4` JSON for a payment. */
export function paymentTypedDataV4(domain: MachinePayDomain, payment: Payment): TypedDataV4 {
  return typedDataV4(domain, paymentTypes, "Payment", payment);
}

/** The `eth_signTypedData_v4` JSON for a tab voucher. */
export function voucherTypedDataV4(domain: MachinePayDomain, voucher: Voucher): TypedDataV4 {
  return typedDataV4(domain, voucherTypes, "Voucher", voucher);
}

/** The EIP-712 digest of a voucher. */
export function hashVoucher(domain: MachinePayDomain, voucher: Voucher): Hex {
  return hashTypedData({ domain, types: voucherTypes, primaryType: "Voucher", message: voucher });
}

/** The EIP-712 digest of a payment: what the device signs and the relayer's idempotency key. */
export function hashPayment(domain: MachinePayDomain, payment: Payment): Hex {
  return hashTypedData({ domain, types: paymentTypes, primaryType: "Payment", message: payment });
}

/** Who signed `payment` (the device address), or throws on a malformed signature. */
export function recoverPaymentSigner(domain: MachinePayDomain, payment: Payment, signature: Hex): Promise<Address> {
  return recoverTypedDataAddress({ domain, types: paymentTypes, primaryType: "Payment", message: payment, signature });
}

export type SignPaymentParameters = { signer: PaymentSigner; domain: MachinePayDomain; payment: Payment };

/**
 * Sign a payment with any supported signer kind. The result is a 65-byte signature; the same
 * payment signed twice by the same key gives the same signature (RFC 6979), so a retry re-sends
 * exactly the same bytes.
 */
export function signPayment({ signer, domain, payment }: SignPaymentParameters): Promise<Hex> {
  return signTypedMessage({ signer, domain, types: paymentTypes, primaryType: "Payment", message: payment });
}

export type SignVoucherParameters = { signer: PaymentSigner; domain: MachinePayDomain; voucher: Voucher };

/** Sign a tab voucher with any supported signer kind (see signPayment). */
export function signVoucher({ signer, domain, voucher }: SignVoucherParameters): Promise<Hex> {
  return signTypedMessage({ signer, domain, types: voucherTypes, primaryType: "Voucher", message: voucher });
}

export type SignEnrollmentParameters = { signer: PaymentSigner; domain: MachinePayDomain; owner: Address };

/** A device key's proof of possession, as `registerDevice`, `assignDevices` and `onboardBySignature` take it. */
export type DeviceProof = { r: Hex; vs: Hex };

/**
 * Sign the device key's `Enrollment(address owner)` with any signer kind: its consent to be bound to
 * `owner` (an EOA or a smart account). Returns the EIP-2098 compact form the contract takes.
 * The device signs this once, offline; whoever registers it needs the proof, so nobody who merely
 * saw the device's address can bind it (or, by binding it, burn it).
 */
export async function signEnrollment({ signer, domain, owner }: SignEnrollmentParameters): Promise<DeviceProof> {
  const signature = await signTypedMessage({
    signer,
    domain,
    types: enrollmentTypes,
    primaryType: "Enrollment",
    message: { owner },
  });
  return toCompactSignature(signature);
}

/** The proof to pass for a device already bound to the caller (its proof is not checked then). */
export const NO_PROOF: DeviceProof = { r: `0x${"00".repeat(32)}`, vs: `0x${"00".repeat(32)}` };

export type SignTypedMessageParameters = {
  signer: PaymentSigner;
  domain: MachinePayDomain;
  types: Types;
  primaryType: string;
  message: Record<string, unknown>;
};

/**
 * Sign any MachinePay EIP-712 message (Payment, Voucher, TabClose, Onboarding, Revocation) with
 * any supported signer kind; returns a 65-byte hex signature.
 */
export async function signTypedMessage({
  signer,
  domain,
  types,
  primaryType,
  message,
}: SignTypedMessageParameters): Promise<Hex> {
  let signature: string;
  const typed = { domain, types, primaryType, message } as unknown as TypedDataDefinition;
  if (typeof signer === "function") {
    signature = await signer(typedDataV4(domain, types, primaryType, message));
  } else if (isWalletClient(signer)) {
    if (!signer.account) throw new SignerError("the viem WalletClient has no account: create it with `account`");
    signature = await signer.signTypedData({ account: signer.account, ...typed });
  } else if (isLocalAccount(signer)) {
    signature = await signer.signTypedData(typed);
  } else if (isEthersSigner(signer)) {
    signature = await signer.signTypedData(domain, v4Types(types), message);
  } else {
    throw new SignerError(
      "unsupported signer: pass a viem LocalAccount or WalletClient, an ethers Signer, or a v4 signing function",
    );
  }
  if (!/^0x[0-9a-fA-F]{130}$/.test(signature)) {
    throw new SignerError(`the signer returned ${signature.length} characters, not a 65-byte hex signature`);
  }
  return signature.toLowerCase() as Hex;
}

function isWalletClient(s: object): s is ViemWalletClientLike {
  return "transport" in s && "signTypedData" in s;
}

function isLocalAccount(s: object): s is ViemAccountLike {
  return "type" in s && s.type === "local" && "signTypedData" in s;
}

function isEthersSigner(s: object): s is EthersSignerLike {
  return "getAddress" in s && "signTypedData" in s;
}
