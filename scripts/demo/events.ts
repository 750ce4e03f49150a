/**
 * MachinePay's events as the proof of what happened: every log of the contract since deployment,
 * read incrementally, decoded with the SDK (`decodeMachinePayLog`, `settlementsOf`) and kept with
 * its block, so a scenario can show that a payment settled (or never did) from chain data alone.
 */
import type { PublicClient } from "viem";
import {
  type Address,
  decodeMachinePayLog,
  type Hex,
  type ItemSkippedEvent,
  type PaymentSettledEvent,
  settlementsOf,
  type VoucherSettledEvent,
} from "../../sdk/src";

type RawLog = {
  address: Address;
  data: Hex;
  topics: Hex[];
  blockNumber: bigint | null;
  transactionHash: Hex | null;
  logIndex: number | null;
};

export type Located = { blockNumber: bigint; txHash: Hex };
export type SettledPayment = PaymentSettledEvent & Located & { token: Address };
export type SettledVoucher = VoucherSettledEvent & Located & { token: Address };
export type Skipped = ItemSkippedEvent & Located;
/** Any other event, flat: its name, its arguments and where it is. */
export type OtherEvent = { eventName: string; args: Record<string, unknown> } & Located;

const lc = (a: string) => a.toLowerCase();

export class ChainEvents {
  private next: bigint;
  private readonly logs: RawLog[] = [];
  private cache: { count: number; payments: SettledPayment[]; vouchers: SettledVoucher[] } | undefined;

  constructor(
    private readonly client: PublicClient,
    private readonly contract: Address,
    fromBlock: number,
  ) {
    this.next = BigInt(fromBlock);
  }

  /** Read every log up to the chain head. */
  async sync(): Promise<void> {
    const head = await this.client.getBlockNumber();
    while (this.next <= head) {
      const to = this.next + 1999n < head ? this.next + 1999n : head;
      const logs = await this.client.getLogs({ address: this.contract, fromBlock: this.next, toBlock: to });
      this.logs.push(...(logs as unknown as RawLog[]));
      this.next = to + 1n;
    }
  }

  private settled() {
    if (this.cache?.count === this.logs.length) return this.cache;
    const payments: SettledPayment[] = [];
    const vouchers: SettledVoucher[] = [];
    // settlementsOf per transaction: each settlement is joined to the BatchSettled closing its batch.
    const byTx = new Map<string, RawLog[]>();
    for (const log of this.logs) {
      const key = log.transactionHash ?? "";
      const list = byTx.get(key) ?? [];
      list.push(log);
      byTx.set(key, list);
    }
    for (const [txHash, logs] of byTx) {
      const where = { blockNumber: logs[0].blockNumber ?? 0n, txHash: txHash as Hex };
      for (const s of settlementsOf(logs, this.contract)) {
        if (s.eventName === "PaymentSettled") payments.push({ ...s, ...where });
        else vouchers.push({ ...s, ...where });
      }
    }
    this.cache = { count: this.logs.length, payments, vouchers };
    return this.cache;
  }

  /** Every PaymentSettled, with its token and block. */
  payments(): SettledPayment[] {
    return this.settled().payments;
  }

  /** Every VoucherSettled, with its token and block. */
  vouchers(): SettledVoucher[] {
    return this.settled().vouchers;
  }

  /** Every PaymentSkipped and VoucherSkipped (items a batch carried that the contract refused). */
  skipped(): Skipped[] {
    const out: Skipped[] = [];
    for (const log of this.logs) {
      const e = decodeMachinePayLog(log);
      if (e && (e.eventName === "PaymentSkipped" || e.eventName === "VoucherSkipped")) {
        out.push({ ...(e as ItemSkippedEvent), blockNumber: log.blockNumber ?? 0n, txHash: log.transactionHash! });
      }
    }
    return out;
  }

  /** Other events by name (DeviceAssigned, OwnerFrozen, Deposited, BatchSettled, …). */
  named(eventName: string): OtherEvent[] {
    const out: OtherEvent[] = [];
    for (const log of this.logs) {
      const e = decodeMachinePayLog(log);
      if (!e || e.eventName !== eventName) continue;
      const args = "args" in e ? (e.args as Record<string, unknown>) : (e as unknown as Record<string, unknown>);
      out.push({ eventName, args, blockNumber: log.blockNumber ?? 0n, txHash: log.transactionHash! });
    }
    return out;
  }

  /** Settled payments of these devices. */
  paymentsOf(devices: Iterable<string>): SettledPayment[] {
    const set = new Set([...devices].map(lc));
    return this.payments().filter((p) => set.has(lc(p.device)));
  }

  /** Settled vouchers of these devices. */
  vouchersOf(devices: Iterable<string>): SettledVoucher[] {
    const set = new Set([...devices].map(lc));
    return this.vouchers().filter((v) => set.has(lc(v.device)));
  }
}

/** `device:nonce`, the key of a settled payment (a nonce settles once per device). */
export const paymentKey = (device: string, nonce: bigint) => `${lc(device)}:${nonce}`;
/** `device:payee:tabId`, the key of a tab in one token. */
export const tabKey = (device: string, payee: string, tabId: bigint) => `${lc(device)}:${lc(payee)}:${tabId}`;
