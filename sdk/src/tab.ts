import { itemId } from "./digest";
import type { NonceBackend } from "./nonces";
import { hashVoucher, type PaymentSigner, signVoucher } from "./sign";
import type { Address, Hex, MachinePayDomain, Voucher } from "./types";

export type TabOptions = {
  signer: PaymentSigner;
  /** The device's address: part of the tab's identity and of the storage key. */
  device: Address;
  domain: MachinePayDomain;
  payee: Address;
  token: Address;
  tabId: bigint;
  /** Where the running total is kept across restarts (same interface as nonces). */
  backend: NonceBackend;
  validForSeconds?: number;
  maxFee?: bigint;
  now?: () => number;
};

export type SignedVoucher = { id: Hex; voucher: Voucher; signature: Hex };

/**
 * One tab between a device and a payee: keeps the cumulative amount owed and signs the next
 * voucher in one call. The new total is stored before the voucher is signed, so after a crash the
 * device never signs a total below one it already gave out (which would short the payee).
 */
export class Tab {
  private total: bigint | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: TabOptions) {}

  /** The backend key of this tab. */
  get key(): string {
    return `tab:${this.o.device}:${this.o.payee}:${this.o.token}:${this.o.tabId}`.toLowerCase();
  }

  /** The cumulative amount signed so far, token units. */
  async cumulative(): Promise<bigint> {
    await this.queue;
    return this.total ?? (await this.o.backend.load(this.key)) ?? 0n;
  }

  /** Add `amount` to the tab and sign a voucher for the new cumulative total. */
  pay(amount: bigint): Promise<SignedVoucher> {
    if (amount < 0n) throw new RangeError(`amount must not be negative, got ${amount}`);
    const run = this.queue.then(async () => {
      const before = this.total ?? (await this.o.backend.load(this.key)) ?? 0n;
      const cumulative = before + amount;
      await this.o.backend.save(this.key, cumulative);
      this.total = cumulative;
      const now = this.o.now?.() ?? Math.floor(Date.now() / 1000);
      const voucher: Voucher = {
        payee: this.o.payee,
        token: this.o.token,
        tabId: this.o.tabId,
        cumulative,
        deadline: BigInt(now + (this.o.validForSeconds ?? 3_600)),
        maxFee: this.o.maxFee ?? 0n,
      };
      const signature = await signVoucher({ signer: this.o.signer, domain: this.o.domain, voucher });
      return { id: itemId(hashVoucher(this.o.domain, voucher), this.o.device), voucher, signature };
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}
