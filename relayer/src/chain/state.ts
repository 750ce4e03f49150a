/**
 * The contract state admission needs, read through MachinePay's views and cached. Entries are
 * dropped when an event says they changed (see invalidate*) and after `ttlMs` as a safety net, so
 * ingest decides against fresh state without a round trip per item. Reads go to `latest`.
 */
import { machinePayAbi } from "@machinepay/sdk";
import type { Address, PublicClient } from "viem";

export type DeviceWord = {
  policyId: number;
  paused: boolean;
  periodIndex: bigint;
  periodSpent: bigint;
  lifetimeSpent: bigint;
  nonceTop: bigint;
  nonceWindow: bigint;
};

export type PolicyState = {
  owner: Address;
  epoch: number;
  validFrom: bigint;
  validUntil: bigint;
  token: Address;
  periodLength: bigint;
  payeesRestricted: boolean;
  paused: boolean;
  maxPerPayment: bigint;
  maxPerPeriod: bigint;
  lifetimeMax: bigint;
};

export type TabState = { settled: bigint; closesAt: bigint };
export type WithdrawalState = { amount: bigint; readyAt: bigint };

/** What admission reads; a test can implement it over a model. */
export interface ChainState {
  device(device: Address): Promise<DeviceWord>;
  policy(policyId: number): Promise<PolicyState>;
  ownerEpoch(owner: Address): Promise<number>;
  balance(account: Address, token: Address): Promise<bigint>;
  withdrawal(owner: Address, token: Address): Promise<WithdrawalState>;
  payeeAllowed(policyId: number, payee: Address): Promise<boolean>;
  tab(device: Address, payee: Address, token: Address, tabId: bigint): Promise<TabState>;
}

const lc = (a: string) => a.toLowerCase();

type Entry<T> = { value: Promise<T>; at: number };

/** ChainState over MachinePay's views with a cache that events invalidate. */
export class CachedChainState implements ChainState {
  private readonly cache = new Map<string, Entry<unknown>>();

  constructor(
    private readonly client: PublicClient,
    private readonly contract: Address,
    private readonly ttlMs = 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  private get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.cache.get(key) as Entry<T> | undefined;
    if (hit && this.clock() - hit.at < this.ttlMs) return hit.value;
    const value = load();
    const entry = { value, at: this.clock() };
    this.cache.set(key, entry);
    // A failed read is not cached: the next caller asks again.
    value.catch(() => {
      if (this.cache.get(key) === entry) this.cache.delete(key);
    });
    return value;
  }

  private read<T>(functionName: string, args: unknown[]): Promise<T> {
    return this.client.readContract({
      address: this.contract,
      abi: machinePayAbi,
      functionName: functionName as never,
      args: args as never,
    }) as Promise<T>;
  }

  device(device: Address) {
    return this.get(`d:${lc(device)}`, async () => {
      const d = await this.read<{
        policyId: number;
        paused: boolean;
        periodIndex: number;
        periodSpent: bigint;
        lifetimeSpent: bigint;
        nonceTop: number;
        nonceWindow: number;
      }>("getDevice", [device]);
      return {
        policyId: Number(d.policyId),
        paused: d.paused,
        periodIndex: BigInt(d.periodIndex),
        periodSpent: d.periodSpent,
        lifetimeSpent: d.lifetimeSpent,
        nonceTop: BigInt(d.nonceTop),
        nonceWindow: BigInt(d.nonceWindow),
      };
    });
  }

  policy(policyId: number) {
    return this.get(`p:${policyId}`, async () => {
      const p = await this.read<PolicyState & { validFrom: number; validUntil: number; periodLength: number }>(
        "getPolicy",
        [policyId],
      );
      return {
        owner: lc(p.owner) as Address,
        epoch: Number(p.epoch),
        validFrom: BigInt(p.validFrom),
        validUntil: BigInt(p.validUntil),
        token: lc(p.token) as Address,
        periodLength: BigInt(p.periodLength),
        payeesRestricted: p.payeesRestricted,
        paused: p.paused,
        maxPerPayment: p.maxPerPayment,
        maxPerPeriod: p.maxPerPeriod,
        lifetimeMax: p.lifetimeMax,
      };
    });
  }

  ownerEpoch(owner: Address) {
    return this.get(`e:${lc(owner)}`, async () => Number(await this.read<number>("ownerEpoch", [owner])));
  }

  balance(account: Address, token: Address) {
    return this.get(`b:${lc(account)}:${lc(token)}`, () => this.read<bigint>("balanceOf", [account, token]));
  }

  withdrawal(owner: Address, token: Address) {
    return this.get(`w:${lc(owner)}:${lc(token)}`, async () => {
      const w = await this.read<{ amount: bigint; readyAt: bigint }>("pendingWithdrawal", [owner, token]);
      return { amount: w.amount, readyAt: BigInt(w.readyAt) };
    });
  }

  payeeAllowed(policyId: number, payee: Address) {
    return this.get(`a:${policyId}:${lc(payee)}`, () => this.read<boolean>("isPayeeAllowed", [policyId, payee]));
  }

  tab(device: Address, payee: Address, token: Address, tabId: bigint) {
    return this.get(`t:${lc(device)}:${lc(payee)}:${lc(token)}:${tabId}`, async () => {
      const t = await this.read<{ settled: bigint; closesAt: bigint }>("getTab", [device, payee, token, tabId]);
      return { settled: t.settled, closesAt: BigInt(t.closesAt) };
    });
  }

  /** Drop every cached entry whose key starts with one of `prefixes` (see the key scheme above). */
  invalidate(...prefixes: string[]) {
    for (const key of [...this.cache.keys()]) if (prefixes.some((p) => key.startsWith(p))) this.cache.delete(key);
  }

  invalidateDevice(device: Address) {
    this.invalidate(`d:${lc(device)}`, `t:${lc(device)}:`);
  }
  invalidatePolicy(policyId: number) {
    this.invalidate(`p:${policyId}`, `a:${policyId}:`);
  }
  invalidateOwner(owner: Address) {
    this.invalidate(`e:${lc(owner)}`, `w:${lc(owner)}:`, `b:${lc(owner)}:`);
  }
  invalidateBalances(token?: Address) {
    if (!token) return this.invalidate("b:");
    for (const key of [...this.cache.keys()])
      if (key.startsWith("b:") && key.endsWith(`:${lc(token)}`)) this.cache.delete(key);
  }
  /** After a reorg or a gap in the event stream: forget everything. */
  invalidateAll() {
    this.cache.clear();
  }
}
