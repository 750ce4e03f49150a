/**
 * The contract state admission needs, read through MachinePay's views and cached. Entries are
 * dropped when an event says they changed (see invalidate*) and after `ttlMs` as a safety net (read
 * again when asked for, and forgotten when not, so memory follows the devices that pay), so ingest
 * decides against fresh state without a round trip per item. Reads go to `latest`.
 */
import { machinePayAbi } from "@machinepay/sdk";
import { type Address, createPublicClient, http, type PublicClient } from "viem";

export type DeviceWord = {
  policyId: number;
  paused: boolean;
  periodIndex: bigint;
  periodSpent: bigint;
  lifetimeSpent: bigint;
  nonceTop: bigint;
  nonceWindow: bigint;
};

/** The word of a device assigned to `policyId` that nothing has written since: no counters, no nonces. */
export const untouchedWord = (policyId: number): DeviceWord => ({
  policyId,
  paused: false,
  periodIndex: 0n,
  periodSpent: 0n,
  lifetimeSpent: 0n,
  nonceTop: 0n,
  nonceWindow: 0n,
});

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
  /** Forget what is cached about a device, or an owner (epoch, balances, withdrawals). */
  invalidateDevice?(device: Address): void;
  invalidateOwner?(owner: Address): void;
}

/**
 * The client admission's view reads go through (a device's word, its policy, balances, and the
 * re-reads after each mined batch). Reads go as JSON-RPC batches: one HTTP request for the reads of
 * one tick instead of one each; bench:relayer measured 1.44x the payments/s at 100 per request and a
 * third less node CPU per payment (BENCHMARKS.md). With `multicall` the reads of one tick are also
 * folded into multicalls: Multicall3's bytecode run as the init code of a deployless `eth_call`
 * (nothing is deployed), one EVM execution for many reads; bench:relayer measured 2–4x less node CPU
 * per payment and a load settled 1.6–2.8x sooner, acceptance unchanged. A failed read fails alone
 * (aggregate3 with failures allowed). The size bound is in calldata bytes (viem's default, 1,024:
 * ~28 one-address reads). Larger multicalls break two limits of a contract creation: init code at most 49,152 bytes
 * (EIP-3860; each read encodes to ~6x its calldata) and the returned data, which the wrapper hands
 * back as the created code, at most 24,576 bytes (EIP-170; getPolicy's answer is ~480 bytes encoded).
 * Sending, receipts and previews do not come through here: each keeps a request of its own.
 */
export function readsClient(
  rpcUrl: string,
  { multicall, retryCount = 2, timeout = 15_000 }: { multicall: boolean; retryCount?: number; timeout?: number },
): PublicClient {
  return createPublicClient({
    batch: multicall ? { multicall: { deployless: true, batchSize: 1024, wait: 0 } } : undefined,
    transport: http(rpcUrl, { retryCount, timeout, batch: true }),
  }) as PublicClient;
}

const lc = (a: string) => a.toLowerCase();

type Entry<T> = { value: Promise<T>; at: number; groups: readonly string[] };

/**
 * ChainState over MachinePay's views with a cache that events invalidate. Keys: `d:device`,
 * `p:policyId`, `a:policyId:payee`, `e:owner`, `b:account:token`, `w:owner:token`,
 * `t:device:payee:token:tabId`; groups index them (`t:device`, `a:policyId`, `b:account`,
 * `bt:token`, `w:owner`) so an invalidation touches only its own entries, never the whole cache.
 */
export class CachedChainState implements ChainState {
  private readonly cache = new Map<string, Entry<unknown>>();
  private readonly groups = new Map<string, Set<string>>();

  /** Devices waiting for the registry's answer, asked together once the current turn's reads are in. */
  private lookups: { device: Address; resolve: (policyId: number | null) => void; reject: (e: unknown) => void }[] = [];

  constructor(
    private readonly client: PublicClient,
    private readonly contract: Address,
    private readonly ttlMs = 60_000,
    private readonly clock: () => number = Date.now,
    /**
     * Devices known untouched since their assignment (the store's registry, fed by the events):
     * the policy of each, or null where the chain must be asked. Their word needs no chain read.
     */
    private readonly untouched?: (devices: readonly Address[]) => Promise<(number | null)[]>,
  ) {}

  private get<T>(key: string, load: () => Promise<T>, groups: string[] = []): Promise<T> {
    const hit = this.cache.get(key) as Entry<T> | undefined;
    if (hit && this.clock() - hit.at < this.ttlMs) return hit.value;
    // Dropped and inserted again (never overwritten in place), so the map stays in the order the
    // entries were read: the oldest first, which is what `sweep` relies on.
    if (hit) this.drop(key);
    this.sweep();
    const value = load();
    const entry: Entry<T> = { value, at: this.clock(), groups };
    this.cache.set(key, entry);
    for (const g of groups) {
      const set = this.groups.get(g) ?? new Set<string>();
      set.add(key);
      this.groups.set(g, set);
    }
    // A failed read is not cached: the next caller asks again.
    value.catch(() => {
      if (this.cache.get(key) === entry) this.drop(key);
    });
    return value;
  }

  /**
   * Forget the entries older than `ttlMs`, oldest first, stopping at the first younger one: a
   * device that paid once and never again does not stay in memory for the life of the process.
   * Each entry is visited once when it expires, so the cost is spread over the reads that insert.
   */
  private sweep(): void {
    const now = this.clock();
    for (const [key, entry] of this.cache) {
      if (now - entry.at < this.ttlMs) break;
      this.drop(key);
    }
  }

  /** Remove one entry and its place in every group that lists it. */
  private drop(key: string): void {
    const entry = this.cache.get(key);
    if (!entry) return;
    this.cache.delete(key);
    for (const g of entry.groups) {
      const set = this.groups.get(g);
      if (!set) continue;
      set.delete(key);
      if (set.size === 0) this.groups.delete(g);
    }
  }

  private dropGroup(group: string): void {
    const keys = this.groups.get(group);
    if (!keys) return;
    for (const k of [...keys]) this.drop(k);
    this.groups.delete(group);
  }

  /** Entries cached, groups indexed, and keys listed over all groups (for tests). */
  get size(): { entries: number; groups: number; members: number } {
    let members = 0;
    for (const set of this.groups.values()) members += set.size;
    return { entries: this.cache.size, groups: this.groups.size, members };
  }

  /**
   * Re-read what our own mined batch changed (device words, balances, tabs) and replace each
   * entry once its new value is in, so admission keeps answering from the cache instead of
   * waiting on the chain. Reads go to `latest`, which includes the batch. Call it before the
   * pending ledger releases the batch's items: until then both count them (conservative).
   */
  async refresh(
    keys: {
      devices?: Iterable<Address>;
      balances?: Iterable<[account: Address, token: Address]>;
      tabs?: Iterable<[device: Address, payee: Address, token: Address, tabId: bigint]>;
    },
    concurrency = 16,
  ): Promise<void> {
    const jobs: (() => Promise<unknown>)[] = [];
    const fresh = <T>(key: string, load: () => Promise<T>, groups: string[] = []) =>
      jobs.push(async () => {
        const value = await load();
        this.drop(key);
        await this.get(key, () => Promise.resolve(value), groups);
      });
    for (const d of new Set([...(keys.devices ?? [])].map(lc))) {
      fresh(`d:${d}`, () => this.loadDevice(d as Address, true));
    }
    const balances = new Map<string, [Address, Address]>();
    for (const [a, t] of keys.balances ?? []) balances.set(`${lc(a)}:${lc(t)}`, [a, t]);
    for (const [k, [a, t]] of balances) {
      fresh(`b:${k}`, () => this.read<bigint>("balanceOf", [a, t]), [`b:${lc(a)}`, `bt:${lc(t)}`]);
    }
    for (const [d, p, t, id] of keys.tabs ?? []) {
      fresh(`t:${lc(d)}:${lc(p)}:${lc(t)}:${id}`, () => this.loadTab(d, p, t, id), [`t:${lc(d)}`]);
    }
    let next = 0;
    const worker = async () => {
      while (next < jobs.length) await jobs[next++]();
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
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
    return this.get(`d:${lc(device)}`, () => this.loadDevice(device));
  }

  /** Devices the registry knows untouched, asked as one lookup per turn. */
  private untouchedPolicy(device: Address): Promise<number | null> {
    return new Promise((resolve, reject) => {
      this.lookups.push({ device, resolve, reject });
      if (this.lookups.length > 1) return;
      queueMicrotask(() => {
        const asked = this.lookups;
        this.lookups = [];
        this.untouched!(asked.map((l) => l.device)).then(
          (policies) => {
            for (const [i, l] of asked.entries()) l.resolve(policies[i]);
          },
          (e) => {
            for (const l of asked) l.reject(e);
          },
        );
      });
    });
  }

  /**
   * A device's word: `{ policyId, paused: false }` with zero counters for one the registry knows
   * untouched (a failed registry read falls back to the chain), else the contract's `getDevice`.
   * `chainOnly`: always the contract's (the re-read after our own batch).
   */
  private async loadDevice(device: Address, chainOnly = false): Promise<DeviceWord> {
    if (this.untouched && !chainOnly) {
      const policyId = await this.untouchedPolicy(device).catch(() => null);
      if (policyId !== null) {
        return untouchedWord(policyId);
      }
    }
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
    return this.get(`b:${lc(account)}:${lc(token)}`, () => this.read<bigint>("balanceOf", [account, token]), [
      `b:${lc(account)}`,
      `bt:${lc(token)}`,
    ]);
  }

  withdrawal(owner: Address, token: Address) {
    return this.get(`w:${lc(owner)}:${lc(token)}`, async () => {
      const w = await this.read<{ amount: bigint; readyAt: bigint }>("pendingWithdrawal", [owner, token]);
      return { amount: w.amount, readyAt: BigInt(w.readyAt) };
    }, [`w:${lc(owner)}`]);
  }

  payeeAllowed(policyId: number, payee: Address) {
    return this.get(`a:${policyId}:${lc(payee)}`, () => this.read<boolean>("isPayeeAllowed", [policyId, payee]), [
      `a:${policyId}`,
    ]);
  }

  tab(device: Address, payee: Address, token: Address, tabId: bigint) {
    return this.get(
      `t:${lc(device)}:${lc(payee)}:${lc(token)}:${tabId}`,
      () => this.loadTab(device, payee, token, tabId),
      [`t:${lc(device)}`],
    );
  }

  private async loadTab(device: Address, payee: Address, token: Address, tabId: bigint): Promise<TabState> {
    const t = await this.read<{ settled: bigint; closesAt: bigint }>("getTab", [device, payee, token, tabId]);
    return { settled: t.settled, closesAt: BigInt(t.closesAt) };
  }

  invalidateDevice(device: Address) {
    this.drop(`d:${lc(device)}`);
    this.dropGroup(`t:${lc(device)}`);
  }
  invalidatePolicy(policyId: number) {
    this.drop(`p:${policyId}`);
    this.dropGroup(`a:${policyId}`);
  }
  invalidateOwner(owner: Address) {
    this.drop(`e:${lc(owner)}`);
    this.dropGroup(`w:${lc(owner)}`);
    this.dropGroup(`b:${lc(owner)}`);
  }
  /** One account's balance of one token. */
  invalidateBalance(account: Address, token: Address) {
    this.drop(`b:${lc(account)}:${lc(token)}`);
  }
  /** Every cached balance of `token` (or of every token). */
  invalidateBalances(token?: Address) {
    if (token) return this.dropGroup(`bt:${lc(token)}`);
    for (const g of [...this.groups.keys()]) if (g.startsWith("bt:")) this.dropGroup(g);
  }
  /** After a reorg or a gap in the event stream: forget everything. */
  invalidateAll() {
    this.cache.clear();
    this.groups.clear();
  }
}
