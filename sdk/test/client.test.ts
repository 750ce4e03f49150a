import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { recoverTypedDataAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  DevicePayer,
  type Hex,
  hashPayment,
  hashVoucher,
  itemId,
  MemoryNonceBackend,
  machinePayDomain,
  NonceManager,
  type Onboarding,
  type OnboardingJson,
  onboardingTypes,
  type Payment,
  PaymentRejectedError,
  RelayerClient,
  RelayerError,
  RelayerUnavailableError,
  type RevocationJson,
  recoverPaymentSigner,
  SettlementTimeoutError,
  type SignedPaymentJson,
  type SignedVoucherJson,
  signEnrollment,
  signTypedMessage,
  signVoucher,
  toOnboardingJson,
  toRevocationJson,
  toSignedPaymentJson,
  toSignedVoucherJson,
  type Voucher,
  voucherTypes,
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
  /** Next answers to send as 429 with this Retry-After (seconds). */
  throttleNext: { count: number; retryAfter: string } = { count: 0, retryAfter: "0" };
  readonly vouchers = new Map<Hex, { id: Hex; tab: string; cumulative: bigint; status: string }>();
  readonly tabs = new Map<string, { newest: bigint; newestId: Hex }>();
  readonly ownerMessages = new Map<Hex, { kind: string; body: unknown }>();
  readonly requests: string[] = [];
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
    this.requests.push(`${req.method} ${req.url}`);
    if (this.throttleNext.count > 0) {
      this.throttleNext.count--;
      res.writeHead(429, { "content-type": "application/json", "retry-after": this.throttleNext.retryAfter });
      res.end(JSON.stringify({ error: { code: "RATE_LIMITED", message: "slow down", details: {} } }));
      return;
    }
    const handled = await this.handleMore(req, body, send);
    if (handled) return;
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
        const id = itemId(hashPayment(domain, payment), await recoverPaymentSigner(domain, payment, signature));
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

  /** Vouchers (a tab's newest supersedes, older ones are stale), tabs, owner messages, batches. */
  private async handleMore(req: IncomingMessage, body: string, send: (status: number, json: unknown) => void) {
    const url = req.url ?? "";
    if (req.method === "POST" && url === "/v1/vouchers") {
      const { vouchers } = JSON.parse(body) as { vouchers: SignedVoucherJson[] };
      const results = [];
      for (const { voucher: v, signature } of vouchers) {
        const voucher: Voucher = {
          ...v,
          tabId: BigInt(v.tabId),
          cumulative: BigInt(v.cumulative),
          deadline: BigInt(v.deadline),
          maxFee: BigInt(v.maxFee),
        };
        const id = itemId(
          hashVoucher(domain, voucher),
          await recoverTypedDataAddress({
            domain,
            types: voucherTypes,
            primaryType: "Voucher",
            message: voucher,
            signature,
          }),
        );
        const known = this.vouchers.get(id);
        if (known) {
          results.push({ id, kind: "voucher", status: known.status, duplicate: true });
          continue;
        }
        const tab = `${v.payee}:${v.token}:${v.tabId}`.toLowerCase();
        const t = this.tabs.get(tab);
        if (t && voucher.cumulative <= t.newest) {
          results.push({ id, kind: "voucher", status: "stale", reason: "VoucherStale", newest: t.newest.toString() });
          continue;
        }
        if (t) this.vouchers.get(t.newestId)!.status = "superseded";
        this.tabs.set(tab, { newest: voucher.cumulative, newestId: id });
        this.vouchers.set(id, { id, tab, cumulative: voucher.cumulative, status: "accepted" });
        results.push({ id, kind: "voucher", status: "accepted" });
      }
      if (this.dropNextResponses > 0) {
        this.dropNextResponses--;
        req.socket.destroy();
        return true;
      }
      send(200, { results });
      return true;
    }
    let m = url.match(/^\/v1\/vouchers\/(0x[0-9a-f]{64})$/);
    if (req.method === "GET" && m) {
      const v = this.vouchers.get(m[1] as Hex);
      if (!v) send(404, { error: { code: "NOT_FOUND", message: "no such voucher" } });
      else send(200, { id: v.id, kind: "voucher", status: v.status, cumulative: v.cumulative.toString() });
      return true;
    }
    m = url.match(/^\/v1\/tabs\/(0x[0-9a-fA-F]{40})\/(0x[0-9a-fA-F]{40})\/(0x[0-9a-fA-F]{40})\/(\d+)$/);
    if (req.method === "GET" && m) {
      const t = this.tabs.get(`${m[2]}:${m[3]}:${m[4]}`.toLowerCase());
      const newest = t?.newest ?? 0n;
      send(200, {
        device: m[1].toLowerCase(),
        payee: m[2].toLowerCase(),
        token: m[3].toLowerCase(),
        tabId: m[4],
        settled: "0",
        newest: newest.toString(),
        newestId: t?.newestId ?? null,
        pending: newest.toString(),
        closesAt: null,
      });
      return true;
    }
    m = url.match(/^\/v1\/(onboardings|revocations)$/);
    if (req.method === "POST" && m) {
      const kind = m[1] === "onboardings" ? "onboarding" : "revocation";
      const parsed = JSON.parse(body) as Record<string, unknown>;
      const id = `0x${String(this.ownerMessages.size + 1).padStart(64, "0")}` as Hex;
      this.ownerMessages.set(id, { kind, body: parsed });
      send(202, { id, status: "accepted" });
      return true;
    }
    m = url.match(/^\/v1\/(onboardings|revocations)\/(0x[0-9a-f]{64})$/);
    if (req.method === "GET" && m) {
      const msg = this.ownerMessages.get(m[2] as Hex);
      if (!msg) send(404, { error: { code: "NOT_FOUND", message: "no such message" } });
      else send(200, { id: m[2], kind: msg.kind, status: "submitted", txHash: `0x${"22".repeat(32)}` });
      return true;
    }
    if (req.method === "GET" && url === "/v1/batches/501") {
      send(501, { error: { code: "NOT_IMPLEMENTED", message: "not here" } });
      return true;
    }
    if (req.method === "GET" && url.startsWith("/v1/batches")) {
      m = url.match(/^\/v1\/batches\/(\d+)(\?raw=true)?$/);
      const batch = { id: 3, kind: "payment", status: "confirmed", itemCount: 2 };
      if (m) send(200, { ...batch, attempts: [{ hash: `0x${"33".repeat(32)}`, ...(m[2] ? { raw: "0x02" } : {}) }] });
      else send(200, { batches: [batch], next: null });
      return true;
    }
    return false;
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

  describe("vouchers, tabs, owner messages, batches", () => {
    const account = privateKeyToAccount(KEY);
    const voucher = async (cumulative: bigint) => {
      const v: Voucher = { payee: PAYEE, token: TOKEN, tabId: 9n, cumulative, deadline: 1_900_000_000n, maxFee: 0n };
      return {
        id: itemId(hashVoucher(domain, v), account.address),
        json: toSignedVoucherJson(v, await signVoucher({ signer: account, domain, voucher: v })),
      };
    };

    it("toSignedVoucherJson writes every uint256 as a decimal string", async () => {
      const { json } = await voucher(12_345n);
      expect(json.voucher).to.deep.equal({
        payee: PAYEE,
        token: TOKEN,
        tabId: "9",
        cumulative: "12345",
        deadline: "1900000000",
        maxFee: "0",
      });
      expect(json.signature).to.match(/^0x[0-9a-f]{130}$/);
    });

    it("submits vouchers; a stale one is a result with the tab's newest, not an error, even after a dropped answer", async () => {
      const c = client();
      const v1 = await voucher(100n);
      const v2 = await voucher(200n);
      const old = await voucher(150n);
      expect(await c.submitVoucher(v1.json)).to.deep.include({ id: v1.id, status: "accepted" });
      relayer.dropNextResponses = 1;
      const [a, stale] = await c.submitVouchers([v2.json, old.json]);
      expect(a).to.deep.include({ id: v2.id, status: "accepted" }); // the retry sees v2 already stored
      expect(stale).to.deep.include({ id: old.id, status: "stale", reason: "VoucherStale", newest: "200" });
      expect(await c.submitVouchers([])).to.deep.equal([]);
      expect((await c.voucherStatus(v1.id)).status).to.equal("superseded");
      const tab = await c.tab(account.address, PAYEE, TOKEN, 9n);
      expect(tab).to.deep.include({ tabId: "9", newest: "200", newestId: v2.id, closesAt: null });
      expect(relayer.requests).to.include(`GET /v1/tabs/${account.address}/${PAYEE}/${TOKEN}/9`);
    });

    it("submits an owner's onboarding and revocation as the relayer's JSON, and reads their status", async () => {
      const device = privateKeyToAccount(generatePrivateKey());
      const onboarding: Onboarding = {
        owner: account.address,
        policyId: 0,
        policy: {
          token: TOKEN,
          maxPerPayment: 1_000_000n,
          maxPerPeriod: 5_000_000n,
          periodLength: 86_400,
          lifetimeMax: 1n << 63n,
          validFrom: 0,
          validUntil: 0,
          payeesRestricted: true,
        },
        devices: [device.address],
        epoch: 2,
        nonce: 7n,
        deadline: 1_900_000_000n,
      };
      const signature = await signTypedMessage({
        signer: account,
        domain,
        types: onboardingTypes,
        primaryType: "Onboarding",
        message: onboarding,
      });
      const proof = await signEnrollment({ signer: device, domain, owner: account.address });
      const json: OnboardingJson = toOnboardingJson(onboarding, [proof], signature);
      expect(json.onboarding.policy).to.include({
        maxPerPayment: "1000000",
        lifetimeMax: (1n << 63n).toString(),
        periodLength: 86_400,
      });
      expect(json.onboarding).to.include({ nonce: "7", deadline: "1900000000", epoch: 2 });
      const c = client();
      const receipt = await c.submitOnboarding(json);
      expect(receipt.status).to.equal("accepted");
      expect(JSON.parse(JSON.stringify(relayer.ownerMessages.get(receipt.id)?.body))).to.deep.equal(json);
      expect(await c.onboardingStatus(receipt.id)).to.deep.include({ kind: "onboarding", status: "submitted" });

      const revocation: RevocationJson = toRevocationJson(
        { owner: account.address, devices: [device.address], epoch: 2, nonce: 8n, deadline: 1_900_000_000n },
        signature,
      );
      expect(revocation.revocation).to.include({ nonce: "8" });
      const r = await c.submitRevocation(revocation);
      expect((await c.revocationStatus(r.id)).kind).to.equal("revocation");
    });

    it("lists batches with a query and reads one, raw attempts only on request", async () => {
      const c = client();
      expect((await c.batches({ status: "confirmed", limit: 10, after: "40" })).batches[0].id).to.equal(3);
      expect(relayer.requests).to.include("GET /v1/batches?status=confirmed&limit=10&after=40");
      await c.batches();
      expect(relayer.requests).to.include("GET /v1/batches");
      expect((await c.batch(3)).attempts[0]).to.not.have.property("raw");
      expect((await c.batch(3, { raw: true })).attempts[0].raw).to.equal("0x02");
    });
  });

  it("honours a 429's Retry-After, up to the backoff ceiling", async () => {
    const { id } = await payer.pay({ payee: PAYEE, amount: 3n });
    relayer.throttleNext = { count: 1, retryAfter: "1" };
    let t = Date.now();
    await client().status(id); // backoff ceiling 20 ms
    expect(Date.now() - t).to.be.below(500);
    relayer.throttleNext = { count: 1, retryAfter: "1" };
    t = Date.now();
    await new RelayerClient({ url: relayer.url, backoffMs: 1, maxBackoffMs: 2_000 }).status(id);
    expect(Date.now() - t).to.be.at.least(900);
  });

  it("does not retry a 501 (the relayer does not run that stage)", async () => {
    const before = relayer.requests.length;
    let error: unknown;
    try {
      await new RelayerClient({ url: relayer.url, backoffMs: 1 }).batch(501);
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(RelayerError);
    expect((error as RelayerError).code).to.equal("NOT_IMPLEMENTED");
    expect(relayer.requests.length - before).to.equal(1);
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
