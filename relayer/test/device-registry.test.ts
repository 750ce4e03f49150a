/**
 * The registry of untouched devices against a real `hardhat node` and the relayer. A device the
 * contract assigned and nothing has written since is known from the events, with the word
 * `getDevice` answers for it, and its first payments are admitted without reading the device from
 * the chain. Whatever writes the word (a pause, a revocation, our own batch) ends that, and what
 * the relayer then admits is judged against the chain's word, not the zero word it started from.
 */
import { join } from "node:path";
import {
  type Hex,
  machinePayAbi,
  type Payment,
  signEnrollment,
  signPayment,
  toSignedPaymentJson,
} from "@machinepay/sdk";
import { expect } from "chai";
import { type Address, toFunctionSelector } from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { loadConfig } from "../src/config";
import { type RunningRelayer, startRelayer } from "../src/service";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { RpcProxy } from "./support/rpc-proxy";

const GET_DEVICE = toFunctionSelector("getDevice(address)").slice(2);
const ZERO_REF = `0x${"00".repeat(32)}` as Hex;

describe("untouched devices known from the events (hardhat node, relayer, SQLite)", function () {
  this.timeout(180_000);
  let chain: TestChain;
  let proxy: RpcProxy;
  let relayer: RunningRelayer;
  let early: { devices: PrivateKeyAccount[]; policyId: number };
  let late: { devices: PrivateKeyAccount[]; policyId: number };

  before(async () => {
    chain = await startTestChain();
    early = await chain.fleet(12);
    proxy = await new RpcProxy(chain.node.url).start();
    const config = loadConfig({
      overrides: {
        rpcUrl: proxy.url,
        deployment: chain.deploymentFile,
        store: join(chain.dir, "relayer.db"),
        port: 0,
        "sender.dev": true,
        confirmations: 1,
        "batch.maxAgeMs": 200,
        "batch.pollMs": 50,
        logLevel: "silent",
      },
    });
    relayer = await startRelayer({ config });
    late = await chain.fleet(4);
  });

  after(async () => {
    await relayer?.stop(2_000);
    await proxy?.stop();
    await chain?.stop();
  });

  const addresses = (ds: PrivateKeyAccount[]) => ds.map((d) => d.address.toLowerCase() as Hex);

  /** Polls the registry until it answers `want` for `devices` (the batcher reads events every pass). */
  async function registryAnswers(devices: Hex[], want: (number | null)[]) {
    const until = Date.now() + 30_000;
    for (;;) {
      const got = await relayer.store.untouchedDevices(devices);
      if (JSON.stringify(got) === JSON.stringify(want) || Date.now() > until) return got;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const word = (device: Address) =>
    chain.client.readContract({
      address: chain.deployment.machinePay,
      abi: machinePayAbi,
      functionName: "getDevice",
      args: [device],
    }) as Promise<Record<string, bigint | number | boolean>>;

  it("knows the devices assigned before and after start with the word getDevice answers, and forgets the touched", async () => {
    const [paused, revoked, moved] = early.devices;
    await chain.ownerCall("setDevicePaused", [paused.address, true]);
    await chain.ownerCall("revokeDevice", [revoked.address]);
    // Assigned again, to another policy of the same owner: counters kept, still untouched.
    const proof = await signEnrollment({ signer: moved, domain: chain.domain, owner: chain.owner.address });
    await chain.ownerCall("assignDevices", [late.policyId, [moved.address], [proof]]);

    const all = [...early.devices, ...late.devices];
    const want = all.map((d, i) =>
      d === paused || d === revoked ? null : d === moved || i >= early.devices.length ? late.policyId : early.policyId,
    );
    expect(await registryAnswers(addresses(all), want)).to.deep.equal(want);
    // What the registry stands for is what the contract says: the assignment's policy, nothing else.
    for (const [i, d] of all.entries()) {
      const w = await word(d.address);
      if (want[i] !== null) {
        expect(w).to.deep.equal({
          policyId: want[i],
          paused: false,
          periodIndex: 0,
          periodSpent: 0n,
          lifetimeSpent: 0n,
          nonceTop: 0,
          nonceWindow: 0,
        });
      } else expect(w.paused === true || Number(w.policyId) === 2 ** 32 - 1, `device ${i}`).to.equal(true);
    }
  });

  it("admits an untouched device's payments without reading it from the chain; once settled, reads its word again", async () => {
    const devices = early.devices.slice(4, 9);
    const now = (await chain.client.getBlock()).timestamp;
    const signed = async (device: PrivateKeyAccount, nonce: bigint, amount = USDC(1)) => {
      const payment: Payment = {
        payee: PAYEES[0],
        token: chain.usdc,
        amount,
        nonce,
        deadline: now + 900n,
        maxFee: 0n,
        ref: ZERO_REF,
      };
      return toSignedPaymentJson(payment, await signPayment({ signer: device, domain: chain.domain, payment }));
    };
    const post = async (payments: unknown[]) => {
      const res = await fetch(`${relayer.url}/v1/payments`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payments }),
      });
      expect(res.status).to.equal(200);
      return ((await res.json()) as { results: { id: Hex; status: string; reason?: string }[] }).results;
    };
    const deviceReads = (ds: PrivateKeyAccount[]) =>
      proxy.bodies.filter((b) =>
        ds.some((d) => b.includes(`${GET_DEVICE}${d.address.slice(2).toLowerCase().padStart(64, "0")}`)),
      ).length;

    proxy.recordBodies = true;
    const first = await post(await Promise.all(devices.flatMap((d) => [signed(d, 0n), signed(d, 1n)])));
    expect(first.map((r) => r.status)).to.deep.equal(devices.flatMap(() => ["accepted", "accepted"]));
    expect(deviceReads(devices), "getDevice reads of untouched devices while admitting").to.equal(0);
    // A device of the same fleet the registry does not vouch for (paused) is read from the chain.
    const paused = early.devices[0];
    const refused = await post([await signed(paused, 0n)]);
    expect(refused[0]).to.deep.include({ status: "rejected", reason: "DevicePaused" });
    expect(deviceReads([paused])).to.be.greaterThan(0);

    for (const r of first) {
      const until = Date.now() + 30_000;
      for (;;) {
        const s = (await (await fetch(`${relayer.url}/v1/payments/${r.id}`)).json()) as { status: string };
        if (s.status === "settled") break;
        if (Date.now() > until) throw new Error(`${r.id} still ${s.status}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    // Settled: the registry forgets them, and admission judges against the chain's word from now on.
    expect(await relayer.store.untouchedDevices(addresses(devices))).to.deep.equal(devices.map(() => null));
    // Their words were read from the chain again after their batch (the cache's refresh).
    expect(deviceReads(devices)).to.be.greaterThan(0);
    const again = await post([await signed(devices[0], 0n, USDC(2)), await signed(devices[0], 2n)]);
    expect(again.map((r) => [r.status, r.reason])).to.deep.equal([
      ["rejected", "NonceUsed"],
      ["accepted", undefined],
    ]);
  });

  it("forgets devices whose assignment a reorg took off the chain; their payments are judged by the chain", async () => {
    const node = (method: string, params: unknown[] = []) =>
      chain.client.request({ method: method as never, params: params as never });
    const snapshot = await node("evm_snapshot");
    const gone = await chain.fleet(3);
    const want = gone.devices.map(() => gone.policyId);
    expect(await registryAnswers(addresses(gone.devices), want)).to.deep.equal(want);
    await node("evm_revert", [snapshot]);
    for (let i = 0; i < 4; i++) await node("evm_mine"); // past the events cursor's block: its hash is gone
    const none = gone.devices.map(() => null);
    expect(await registryAnswers(addresses(gone.devices), none)).to.deep.equal(none);
    const payment: Payment = {
      payee: PAYEES[0],
      token: chain.usdc,
      amount: USDC(1),
      nonce: 0n,
      deadline: (await chain.client.getBlock()).timestamp + 900n,
      maxFee: 0n,
      ref: ZERO_REF,
    };
    const json = toSignedPaymentJson(
      payment,
      await signPayment({ signer: gone.devices[0], domain: chain.domain, payment }),
    );
    const res = await fetch(`${relayer.url}/v1/payments`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ payments: [json] }),
    });
    const [result] = ((await res.json()) as { results: { status: string; reason?: string }[] }).results;
    expect(result).to.deep.include({ status: "rejected", reason: "UnknownDevice" });
  });
});
