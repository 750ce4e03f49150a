import {
  hashTypedData,
  type LocalAccount,
  recoverTypedDataAddress,
  type TypedDataDefinition,
  type WalletClient,
} from "viem";
import {
  type Address,
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
  message: Record<string, string>;
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

function stringify(message: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(message)) out[k] = typeof v === "bigint" ? v.toString() : String(v);
  return out;
}

const EIP712_DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];

/** The `eth_signTypedData_v4` JSON for a payment (EIP712Domain included, numbers as strings). */
export function paymentTypedDataV4(domain: MachinePayDomain, payment: Payment): TypedDataV4 {
  return {
    types: { EIP712Domain: EIP712_DOMAIN, ...v4Types(paymentTypes) },
    primaryType: "Payment",
    domain,
    message: stringify(payment),
  };
}

/** The `eth_signTypedData_v4` JSON for a tab voucher. */
export function voucherTypedDataV4(domain: MachinePayDomain, voucher: Voucher): TypedDataV4 {
  return {
    types: { EIP712Domain: EIP712_DOMAIN, ...v4Types(voucherTypes) },
    primaryType: "Voucher",
    domain,
    message: stringify(voucher),
  };
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
  return signTyped(signer, paymentTypedDataV4(domain, payment), {
    domain,
    types: paymentTypes,
    primaryType: "Payment",
    message: payment,
  });
}

export type SignVoucherParameters = { signer: PaymentSigner; domain: MachinePayDomain; voucher: Voucher };

/** Sign a tab voucher with any supported signer kind (see signPayment). */
export function signVoucher({ signer, domain, voucher }: SignVoucherParameters): Promise<Hex> {
  return signTyped(signer, voucherTypedDataV4(domain, voucher), {
    domain,
    types: voucherTypes,
    primaryType: "Voucher",
    message: voucher,
  });
}

type Typed =
  | { domain: MachinePayDomain; types: typeof paymentTypes; primaryType: "Payment"; message: Payment }
  | { domain: MachinePayDomain; types: typeof voucherTypes; primaryType: "Voucher"; message: Voucher };

async function signTyped(signer: PaymentSigner, v4: TypedDataV4, typed: Typed): Promise<Hex> {
  let signature: string;
  if (typeof signer === "function") {
    signature = await signer(v4);
  } else if (isWalletClient(signer)) {
    if (!signer.account) throw new SignerError("the viem WalletClient has no account: create it with `account`");
    signature = await signer.signTypedData({ account: signer.account, ...(typed as TypedDataDefinition) });
  } else if (isLocalAccount(signer)) {
    signature = await signer.signTypedData(typed as TypedDataDefinition);
  } else if (isEthersSigner(signer)) {
    const { EIP712Domain: _, ...types } = v4.types;
    signature = await signer.signTypedData(typed.domain, types, typed.message);
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
