/**
 * Admission's view reads folded into deployless multicalls (`multicallReads`, on by default) answer
 * what one `eth_call` per read answers, on a real `hardhat node`: every kind of read the cache makes,
 * over devices, policies, owners and accounts in different states, read concurrently as admission
 * does. The fold must also happen (far fewer calls reach the node), stay inside the init-code and
 * code-size limits of a contract creation when a tick holds hundreds of reads, and let a read that
 * fails fail alone.
 */
import { machinePayAbi } from "@machinepay/sdk";
import { expect } from "chai";
import { type Address, parseAbi } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { CachedChainState, readsClient } from "../src/chain/state";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { RpcProxy } from "./support/rpc-proxy";

describe("view reads as deployless multicalls (real node)", function () {
  this.timeout(180_000);
  let chain: TestChain;
  let proxy: RpcProxy;
  let devices: Address[];
  let policies: number[];

  before(async () => {
    chain = await startTestChain();
    proxy = await new RpcProxy(chain.node.url).start();
    // Two policies in different shapes; devices on each; one paused; a payee allowed on one.
    const a = await chain.fleet(150, { maxPerPayment: USDC(3), validUntil: 4_000_000_000 });
    const b = await chain.fleet(150, { payeesRestricted: true, periodLength: 3_600 });
    await chain.ownerCall("setPayees", [b.policyId, [PAYEES[0]], true]);
    await chain.ownerCall("setDevicePaused", [a.devices[7].address, true]);
    await chain.ownerCall("setPolicyPaused", [a.policyId, true]);
    devices = [...a.devices, ...b.devices].map((d) => d.address);
    policies = [a.policyId, b.policyId, 9_999];
  });

  after(async () => {
    await proxy?.stop();
    await chain?.stop();
  });

  /** Every read admission makes, all at once (as concurrent requests make them). */
  async function readAll(state: CachedChainState) {
    const unknown = privateKeyToAccount(generatePrivateKey()).address;
    const owner = chain.owner.address;
    const usdc = chain.usdc;
    return Promise.all([
      Promise.all([...devices, unknown].map((d) => state.device(d))),
      Promise.all(policies.map((p) => state.policy(p))),
      Promise.all([owner, unknown].map((o) => state.ownerEpoch(o))),
      Promise.all([owner, unknown, chain.deployment.machinePay].map((x) => state.balance(x, usdc))),
      state.withdrawal(owner, usdc),
      Promise.all(PAYEES.flatMap((p) => policies.map((id) => state.payeeAllowed(id, p)))),
      Promise.all(devices.slice(0, 20).map((d, i) => state.tab(d, PAYEES[0], usdc, BigInt(i)))),
    ]).then((r) => JSON.parse(JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))));
  }

  const ethCalls = (from: number) =>
    proxy.calls
      .slice(from)
      .filter((c) => c.method === "eth_call")
      .reduce((n, c) => n + c.size, 0);

  it("answers what one eth_call per read answers, with a fraction of the calls", async () => {
    const pay = chain.deployment.machinePay;
    const before = proxy.calls.length;
    const folded = await readAll(new CachedChainState(readsClient(proxy.url, { multicall: true }), pay));
    const foldedCalls = ethCalls(before);
    const mid = proxy.calls.length;
    const plain = await readAll(new CachedChainState(readsClient(proxy.url, { multicall: false }), pay));
    const plainCalls = ethCalls(mid);

    expect(folded).to.deep.equal(plain);
    // The states differ where they should: one paused device, one paused policy, one allow-list entry.
    expect(plain[0].filter((d: { paused: boolean }) => d.paused)).to.have.length(1);
    expect(plain[1].map((p: { paused: boolean }) => p.paused)).to.deep.equal([true, false, false]);
    expect(plain[5].filter(Boolean)).to.have.length(1);
    expect(plain[3][0]).to.equal(`${USDC(100_000)}n`);

    const reads = devices.length + 1 + policies.length + 2 + 3 + 1 + PAYEES.length * policies.length + 20;
    expect(plainCalls).to.equal(reads);
    // ~28 one-address reads fit a multicall's 1,024 calldata bytes; 300 device reads alone need 11.
    expect(foldedCalls).to.be.greaterThan(10);
    expect(foldedCalls).to.be.at.most(Math.ceil(reads / 10));
  });

  it("re-reads after a batch (refresh) through multicalls, and a failing read fails alone", async () => {
    const client = readsClient(proxy.url, { multicall: true });
    const state = new CachedChainState(client, chain.deployment.machinePay);
    const before = proxy.calls.length;
    await state.refresh({ devices, balances: [[chain.owner.address, chain.usdc]] });
    // 301 re-reads, folded: at most one eth_call per ten of them (one each without the fold).
    expect(ethCalls(before))
      .to.be.greaterThan(0)
      .and.at.most(Math.ceil(301 / 10));
    expect((await state.device(devices[7])).paused).to.equal(true);
    expect(await state.balance(chain.owner.address, chain.usdc)).to.equal(USDC(100_000));

    // A read of an address with no code, in the same tick as good reads: only it fails.
    const abi = parseAbi(["function policyCount() view returns (uint32)"]);
    const results = await Promise.allSettled([
      client.readContract({ address: chain.deployment.machinePay, abi: machinePayAbi, functionName: "policyCount" }),
      client.readContract({ address: PAYEES[1], abi, functionName: "policyCount" }),
      state.ownerEpoch(chain.owner.address),
    ]);
    expect(results.map((r) => r.status)).to.deep.equal(["fulfilled", "rejected", "fulfilled"]);
    expect(Number((results[0] as PromiseFulfilledResult<number>).value)).to.be.at.least(2);
  });
});
