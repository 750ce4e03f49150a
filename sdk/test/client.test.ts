import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  DevicePayer,
  type Hex,
  hashPayment,
  MemoryNonceBackend,
  machinePayDomain,
  NonceManager,
  type Payment,
  PaymentRejectedError,
  RelayerClient,
  RelayerError,
  RelayerUnavailableError,
  recoverPaymentSigner,
  SettlementTimeoutError,
  type SignedPaymentJson,
  toSignedPaymentJson,
} from "../src";

// Hardhat's second well-known test key: public, never use it for value.
const KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" as Address;
const PAYEE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" as Address;

type Stored = { id: Hex; device: Address; status: string; reason?: string };

/**
 * A stub relayer on a real HTTP server: verifies and stores payments by EIP-712 digest, exactly as
 * the relayer's wire format says, and can be told to drop the connection after storing (the
 * worst case for a client: the payment landed but the answer was lost).
 */
class StubRelayer {
  readonly payments = new Map<Hex, Stored>();
  posts = 0;
  dropNextResponses = 0;
  failNext5xx = 0;
  statusScript: string[] = [];
  server!: Server;
  url = "";

  async start() {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop() {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(r));
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    let body = "";
    for await (const chunk of req) body += chunk;
    const send = (status: number, json: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(json));
    };
    if (req.method === "POST" && req.url === "/v1/payments") {
      this.posts++;
      if (this.failNext5xx > 0) {
        this.failNext5xx--;
        return send(503, { error: { code: "UNAVAILABLE", message: "restarting" } });
      }
      const { payments } = JSON.parse(body) as { payments: SignedPaymentJson[] };
      if (!Array.isArray(payments)) return send(400, { error: { code: "BAD_REQUEST", message: "payments missing" } });
      const results = [];
      for (const { payment: p, signature } of payments) {
        const payment: Payment = {
          ...p,
          amount: BigInt(p.amount),
          nonce: BigInt(p.nonce),
          deadline: BigInt(p.deadline),
          maxFee: BigInt(p.maxFee),
        };
        const id = hashPayment(domain, payment);
        const existing = this.payments.get(id);
        if (existing) {
          results.push({ id, status: existing.status });
          continue;
        }
        const device = await recoverPaymentSigner(domain, payment, signature);
        const stored: Stored = { id, device, status: "accepted" };
        if (payment.amount > 1_000_000n) Object.assign(stored, { status: "rejected", reason: "ExceedsPaymentCap" });
        this.payments.set(id, stored);
        results.push({ id, status: stored.status, reason: stored.reason });
      }
      if (this.dropNextResponses > 0) {
        this.dropNextResponses--;
        req.socket.destroy(); // stored, but the client never hears about it
        return;
      }
      return send(200, { results });
    }
    const m = req.url?.match(/^\/v1\/payments\/(0x[0-9a-f]{64})$/);
    if (req.method === "GET" && m) {
      const p = this.payments.get(m[1] as Hex);
      if (!p) return send(404, { error: { code: "NOT_FOUND", message: "no such payment" } });
      const next = this.statusScript.shift();
      if (next) p.status = next;
      return send(200, { ...p, ...(p.status === "settled" ? { txHash: `0x${"11".repeat(32)}`, blockNumber: 7 } : {}) });
    }
    return send(404, { error: { code: "NOT_FOUND", message: `no route ${req.method} ${req.url}` } });
  }
}

describe("sdk: relayer client against a real HTTP server", () => {
  let relayer: StubRelayer;
  let payer: DevicePayer;
  const client = () => new RelayerClient({ url: relayer.url, backoffMs: 5, maxBackoffMs: 20, timeoutMs: 2_000 });

  beforeEach(async () => {
    relayer = new StubRelayer();
    await relayer.start();
    const account = privateKeyToAccount(KEY);
    payer = new DevicePayer({
      signer: account,
      address: account.address,
      domain,
      token: TOKEN,
      nonces: new NonceManager({ backend: new MemoryNonceBackend() }),
      client: client(),
    });
  });
  afterEach(() => relayer.stop());

  it("retries when responses are dropped and still creates exactly one payment", async () => {
    relayer.dropNextResponses = 3;
    const { id, result } = await payer.pay({ payee: PAYEE, amount: 250_000n });
    expect(result).to.deep.include({ id, status: "accepted" });
    expect(relayer.posts).to.equal(4);
    expect(relayer.payments.size).to.equal(1);
    expect(relayer.payments.get(id)?.device).to.equal(privateKeyToAccount(KEY).address);
  });

  it("re-submitting the same signed payment later is the same payment", async () => {
    const signed = await payer.sign({ payee: PAYEE, amount: 1n });
    const a = await payer.submit(signed);
    const b = await payer.submit(signed);
    expect(a.id).to.equal(b.id);
    expect(relayer.payments.size).to.equal(1);
  });

  it("retries 5xx answers, then gives up with RelayerUnavailableError", async () => {
    relayer.failNext5xx = 2;
    await payer.pay({ payee: PAYEE, amount: 1n });
    expect(relayer.posts).to.equal(3);
    relayer.failNext5xx = 100;
    const c = new RelayerClient({ url: relayer.url, attempts: 3, backoffMs: 1 });
    const signed = await payer.sign({ payee: PAYEE, amount: 2n });
    let error: unknown;
    try {
      await c.submit(toSignedPaymentJson(signed.payment, signed.signature));
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(RelayerUnavailableError);
    expect(relayer.posts).to.equal(6);
  });

  it("does not retry a 4xx answer and surfaces its code", async () => {
    let error: unknown;
    try {
      await client().status(`0x${"00".repeat(32)}`);
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(RelayerError);
    expect((error as RelayerError).code).to.equal("NOT_FOUND");
    expect((error as RelayerError).status).to.equal(404);
  });

  it("reports a rejection as a result with the contract's reason name", async () => {
    const { result } = await payer.pay({ payee: PAYEE, amount: 2_000_000n });
    expect(result.status).to.equal("rejected");
    expect(result.reason).to.equal("ExceedsPaymentCap");
  });

  it("waits for settlement, and throws typed errors for rejection and timeout", async () => {
    const { id } = await payer.pay({ payee: PAYEE, amount: 5n });
    relayer.statusScript = ["batched", "submitted", "settled"];
    const settled = await client().waitForSettlement(id, { pollMs: 5, timeoutMs: 5_000 });
    expect(settled).to.deep.include({ status: "settled", blockNumber: 7 });

    const rejected = await payer.pay({ payee: PAYEE, amount: 3_000_000n });
    let error: unknown;
    try {
      await client().waitForSettlement(rejected.id, { pollMs: 5 });
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(PaymentRejectedError);
    expect((error as PaymentRejectedError).reason).to.equal("ExceedsPaymentCap");

    const pending = await payer.pay({ payee: PAYEE, amount: 6n });
    try {
      await client().waitForSettlement(pending.id, { pollMs: 5, timeoutMs: 30 });
      error = undefined;
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(SettlementTimeoutError);
  });
});
