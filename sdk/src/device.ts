import { type RelayerClient, type SubmitResult, toSignedPaymentJson } from "./client";
import { itemId } from "./digest";
import type { NonceManager } from "./nonces";
import { hashPayment, type PaymentSigner, signPayment } from "./sign";
import { type Address, type Hex, type MachinePayDomain, type Payment, ZERO_REF } from "./types";

export type DevicePayerOptions = {
  signer: PaymentSigner;
  /** The device's address (the signer's); the nonce key. */
  address: Address;
  domain: MachinePayDomain;
  /** Token of the device's policy. */
  token: Address;
  nonces: NonceManager;
  /** Needed by `pay`; `sign` works offline. */
  client?: RelayerClient;
  /** Seconds a payment stays valid (default 600). */
  validForSeconds?: number;
  /** Default maxFee in token units (default 0: the payee or owner settles for free). */
  maxFee?: bigint;
  /** Clock in unix seconds (default Date.now). */
  now?: () => number;
};

export type PayParameters = { payee: Address; amount: bigint; ref?: Hex; maxFee?: bigint; deadline?: bigint };

export type SignedPayment = { id: Hex; payment: Payment; signature: Hex };

/**
 * A device's payment helper: reserves a nonce durably, signs, and (with a client) submits.
 * Keep the returned SignedPayment until it settles: re-submitting it is the safe retry.
 */
export class DevicePayer {
  constructor(private readonly o: DevicePayerOptions) {}

  /** Sign a new payment with a freshly reserved nonce. */
  async sign({ payee, amount, ref, maxFee, deadline }: PayParameters): Promise<SignedPayment> {
    const now = this.o.now?.() ?? Math.floor(Date.now() / 1000);
    const payment: Payment = {
      payee,
      token: this.o.token,
      amount,
      nonce: await this.o.nonces.reserve(this.o.address),
      deadline: deadline ?? BigInt(now + (this.o.validForSeconds ?? 600)),
      maxFee: maxFee ?? this.o.maxFee ?? 0n,
      ref: ref ?? ZERO_REF,
    };
    const signature = await signPayment({ signer: this.o.signer, domain: this.o.domain, payment });
    return { id: itemId(hashPayment(this.o.domain, payment), this.o.address), payment, signature };
  }

  /** Sign and submit; the client retries with backoff and never creates a second payment. */
  async pay(params: PayParameters): Promise<SignedPayment & { result: SubmitResult }> {
    const signed = await this.sign(params);
    return { ...signed, result: await this.submit(signed) };
  }

  /** (Re-)submit a signed payment: idempotent. */
  submit(signed: SignedPayment): Promise<SubmitResult> {
    if (!this.o.client) throw new Error("DevicePayer has no client: pass `client` to submit payments");
    return this.o.client.submit(toSignedPaymentJson(signed.payment, signed.signature));
  }
}
