/**
 * The chain-state cache against a model of the chain (no node): random reads, chain changes with
 * the invalidation an event would bring, refreshes after "our batch", failed reads and clock steps.
 * After every step: a read answers the model's value as of the last invalidation or refresh of
 * that key (never an older one), entries older than the TTL are gone once something new is read,
 * and the group index lists exactly the cached keys (memory follows what is cached).
 */
import { expect } from "chai";
import type { Address, PublicClient } from "viem";
import { CachedChainState } from "../src/chain/state";

/** Seeded PRNG (mulberry32), so a failure replays. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const addr = (i: number) => `0x${(i + 1).toString(16).padStart(40, "0")}` as Address;
const TOKEN = addr(900);
const TTL = 1_000;

/** The chain: a version per (view, args) that changes when the chain does. */
class Model {
  readonly version = new Map<string, number>();
  reads = 0;
  failNext = false;
  key = (fn: string, args: unknown[]) => `${fn}:${args.map(String).join(":").toLowerCase()}`;
  bump(fn: string, args: unknown[]) {
    const k = this.key(fn, args);
    this.version.set(k, (this.version.get(k) ?? 0) + 1);
  }
  v(fn: string, args: unknown[]) {
    return this.version.get(this.key(fn, args)) ?? 0;
  }
  client(): PublicClient {
    return {
      readContract: async ({ functionName: fn, args }: { functionName: string; args: unknown[] }) => {
        this.reads++;
        await Promise.resolve();
        if (this.failNext) {
          this.failNext = false;
          throw new Error("node unreachable");
        }
        const v = this.v(fn, args);
        if (fn === "getDevice") {
          return {
            policyId: 1,
            paused: false,
            periodIndex: 0,
            periodSpent: BigInt(v),
            lifetimeSpent: 0n,
            nonceTop: 0,
            nonceWindow: 0,
          };
        }
        if (fn === "balanceOf") return BigInt(v);
        if (fn === "ownerEpoch") return v;
        throw new Error(`unexpected view ${fn}`);
      },
    } as unknown as PublicClient;
  }
}

describe("chain-state cache (model of the chain, random operations)", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`answers as fresh as the last invalidation, forgets what expired, keeps its index exact (seed ${seed})`, async () => {
      const r = rng(seed);
      const model = new Model();
      let now = 0;
      const state = new CachedChainState(model.client(), addr(999), TTL, () => now);
      /** Per cache key: the lowest version a read may answer (the last invalidation or refresh). */
      const floor = new Map<string, number>();
      const devices = 40;
      const accounts = 25;
      for (let step = 0; step < 1500; step++) {
        const op = r();
        const d = addr(Math.floor(r() * devices));
        const a = addr(100 + Math.floor(r() * accounts));
        if (op < 0.35) {
          const fail = r() < 0.05;
          model.failNext = fail;
          try {
            const w = await state.device(d);
            expect(Number(w.periodSpent)).to.be.at.least(floor.get(`d:${d}`) ?? 0);
            expect(Number(w.periodSpent)).to.be.at.most(model.v("getDevice", [d]));
          } catch (e) {
            expect(fail, (e as Error).message).to.equal(true);
          }
          model.failNext = false; // a cached answer never asked the node
        } else if (op < 0.6) {
          const b = await state.balance(a, TOKEN);
          expect(Number(b)).to.be.at.least(floor.get(`b:${a}`) ?? 0);
          expect(Number(b)).to.be.at.most(model.v("balanceOf", [a, TOKEN]));
        } else if (op < 0.7) {
          const e = await state.ownerEpoch(a);
          expect(e).to.be.at.least(floor.get(`e:${a}`) ?? 0);
        } else if (op < 0.78) {
          // A settlement changed the device and an account's balance; its event invalidates.
          model.bump("getDevice", [d]);
          model.bump("balanceOf", [a, TOKEN]);
          state.invalidateDevice(d);
          state.invalidateBalances(TOKEN);
          floor.set(`d:${d}`, model.v("getDevice", [d]));
          for (let i = 0; i < accounts; i++) {
            const x = addr(100 + i);
            floor.set(`b:${x}`, model.v("balanceOf", [x, TOKEN]));
          }
        } else if (op < 0.84) {
          // The owner froze (epoch moved) or deposited: its own entries go.
          model.bump("ownerEpoch", [a]);
          model.bump("balanceOf", [a, TOKEN]);
          state.invalidateOwner(a);
          floor.set(`e:${a}`, model.v("ownerEpoch", [a]));
          floor.set(`b:${a}`, model.v("balanceOf", [a, TOKEN]));
        } else if (op < 0.9) {
          // Our own batch landed: refresh re-reads exactly what it changed.
          model.bump("getDevice", [d]);
          model.bump("balanceOf", [a, TOKEN]);
          await state.refresh({ devices: [d], balances: [[a, TOKEN]] });
          floor.set(`d:${d}`, model.v("getDevice", [d]));
          floor.set(`b:${a}`, model.v("balanceOf", [a, TOKEN]));
          expect(Number((await state.device(d)).periodSpent)).to.equal(model.v("getDevice", [d]));
          expect(Number(await state.balance(a, TOKEN))).to.equal(model.v("balanceOf", [a, TOKEN]));
        } else {
          now += Math.floor(r() * TTL * 0.7);
        }
        // The index lists every cached balance under its account and its token, nothing else.
        const size = state.size;
        expect(size.members).to.be.at.most(2 * size.entries);
      }
      // Everything expires: one read later, only it is cached, and the index holds only its own keys.
      now += TTL;
      await state.balance(addr(100), TOKEN);
      expect(state.size).to.deep.equal({ entries: 1, groups: 2, members: 2 });
    });
  }

  it("reads once per key within the TTL, again after it, and a failed read is not cached", async () => {
    const model = new Model();
    let now = 0;
    const state = new CachedChainState(model.client(), addr(999), TTL, () => now);
    await Promise.all([state.device(addr(1)), state.device(addr(1)), state.device(addr(1))]);
    expect(model.reads).to.equal(1);
    now += TTL - 1;
    await state.device(addr(1));
    expect(model.reads).to.equal(1);
    now += 1;
    await state.device(addr(1));
    expect(model.reads).to.equal(2);
    model.failNext = true;
    await state.device(addr(2)).then(
      () => expect.fail("the read should have failed"),
      () => {},
    );
    await state.device(addr(2));
    expect(model.reads).to.equal(4);
    expect(state.size.entries).to.equal(2);
  });

  it("forgets a fleet that paid once: 10,000 devices read, then one more after the TTL", async () => {
    const model = new Model();
    let now = 0;
    const state = new CachedChainState(model.client(), addr(999), TTL, () => now);
    for (let i = 0; i < 10_000; i++) await state.balance(addr(i), TOKEN);
    expect(state.size).to.deep.equal({ entries: 10_000, groups: 10_001, members: 20_000 });
    now += TTL;
    await state.device(addr(1));
    expect(state.size).to.deep.equal({ entries: 1, groups: 0, members: 0 });
  });
});
