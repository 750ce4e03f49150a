import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import {
  type Address,
  type Hex,
  hashPayment,
  hashVoucher,
  itemId,
  machinePayDomain,
  NO_PROOF,
  type Onboarding,
  onboardingTypes,
  type Payment,
  REASONS,
  type Revocation,
  revocationTypes,
  signEnrollment,
  signPayment,
  signTypedMessage,
  signVoucher,
  toSignedPaymentJson,
  type Voucher,
  ZERO_REF,
} from "@machinepay/sdk";
import { expect } from "chai";
import fc from "fast-check";
import type { FastifyInstance } from "fastify";
import pino from "pino";
import { keccak256, toHex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { type ApiDeps, buildServer, type OwnerMessageInfo, type Readiness, SharedVerifier } from "../src/api";
import { ChainClock } from "../src/chain/clock";
import {
  type ChainState,
  type DeviceWord,
  type PolicyState,
  type TabState,
  untouchedWord,
  type WithdrawalState,
} from "../src/chain/state";
import { configSchema, type Deployment, type RelayerConfig } from "../src/config";
import { Ingest, IngestUnavailableError } from "../src/ingest";
import { Metrics } from "../src/metrics";
import { openStore, type Store } from "../src/store";
import { newSchema, requirePostgres } from "./support/postgres";

const CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3" as Address;
const TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" as Address;
const PAYEE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" as Address;
const OTHER_PAYEE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC" as Address;
const ADMIN_TOKEN = "test-admin-token-0123456789abcdef";
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const lc = (a: string) => a.toLowerCase();
const now = () => BigInt(Math.floor(Date.now() / 1000));

const domain = machinePayDomain({ chainId: 31337, verifyingContract: CONTRACT });
const deployment: Deployment = {
  chainId: 31337,
  machinePay: lc(CONTRACT) as Address,
  tokens: { USDC: lc(TOKEN) as Address },
  deploymentBlock: 0,
  noticePeriod: 0,
};

function config(limits: Partial<RelayerConfig["limits"]> = {}, adminToken: string | null = ADMIN_TOKEN) {
  return configSchema.parse({
    rpcUrl: "http://127.0.0.1:8545",
    deployment: "deployment.json",
    sender: { dev: true },
    adminToken: adminToken ?? undefined,
    limits: {
      itemsPerRequest: 50,
      bodyBytes: 64 * 1024,
      perDevicePerSecond: 1000,
      perIpPerMinute: 1_000_000,
      ...limits,
    },
  });
}

/** MachinePay's state as plain maps: what ingest reads, set directly by the tests. */
class ChainModel implements ChainState {
  readonly devices = new Map<string, DeviceWord>();
  readonly policies = new Map<number, PolicyState>();
  readonly epochs = new Map<string, number>();
  readonly balances = new Map<string, bigint>();
  readonly withdrawals = new Map<string, WithdrawalState>();
  readonly allowed = new Set<string>();
  readonly tabs = new Map<string, TabState>();
  private nextPolicy = 1;

  async device(device: Address): Promise<DeviceWord> {
    return (
      this.devices.get(lc(device)) ?? {
        policyId: 0,
        paused: false,
        periodIndex: 0n,
        periodSpent: 0n,
        lifetimeSpent: 0n,
        nonceTop: 0n,
        nonceWindow: 0n,
      }
    );
  }
  async policy(policyId: number): Promise<PolicyState> {
    const p = this.policies.get(policyId);
    if (!p) throw new Error(`no policy ${policyId}`);
    return p;
  }
  async ownerEpoch(owner: Address) {
    return this.epochs.get(lc(owner)) ?? 0;
  }
  async balance(account: Address, token: Address) {
    return this.balances.get(`${lc(account)}:${lc(token)}`) ?? 0n;
  }
  async withdrawal(owner: Address, token: Address) {
    return this.withdrawals.get(`${lc(owner)}:${lc(token)}`) ?? { amount: 0n, readyAt: 0n };
  }
  async payeeAllowed(policyId: number, payee: Address) {
    return this.allowed.has(`${policyId}:${lc(payee)}`);
  }
  async tab(device: Address, payee: Address, token: Address, tabId: bigint) {
    return this.tabs.get(`${lc(device)}:${lc(payee)}:${lc(token)}:${tabId}`) ?? { settled: 0n, closesAt: 0n };
  }

  /** A new owner with a funded escrow and one policy; returns the policy id. */
  fleet(balance: bigint, over: Partial<PolicyState> = {}): { policyId: number; owner: Address } {
    const owner = lc(privateKeyToAccount(generatePrivateKey()).address) as Address;
    const policyId = this.nextPolicy++;
    this.policies.set(policyId, {
      owner,
      epoch: 0,
      validFrom: 0n,
      validUntil: 0n,
      token: lc(TOKEN) as Address,
      periodLength: 86_400n,
      payeesRestricted: false,
      paused: false,
      maxPerPayment: 1_000_000n,
      maxPerPeriod: 10_000_000n,
      lifetimeMax: 1_000_000_000n,
      ...over,
    });
    this.balances.set(`${owner}:${lc(TOKEN)}`, balance);
    return { policyId, owner };
  }

  /** A new device key registered under `policyId`. */
  device_(policyId: number, over: Partial<DeviceWord> = {}): PrivateKeyAccount {
    const account = privateKeyToAccount(generatePrivateKey());
    this.devices.set(lc(account.address), { ...untouchedWord(policyId), ...over });
    return account;
  }
}

let nonceSeq = 1n;
function paymentOf(over: Partial<Payment> = {}): Payment {
  return {
    payee: PAYEE,
    token: TOKEN,
    amount: 1_000n,
    nonce: nonceSeq++,
    deadline: now() + 600n,
    maxFee: 0n,
    ref: ZERO_REF,
    ...over,
  };
}

async function signed(account: PrivateKeyAccount, over: Partial<Payment> = {}) {
  const payment = paymentOf(over);
  const signature = await signPayment({ signer: account, domain, payment });
  const id = itemId(hashPayment(domain, payment), account.address.toLowerCase() as Address);
  return { payment, signature, id, json: toSignedPaymentJson(payment, signature) };
}

async function signedVoucher(account: PrivateKeyAccount, over: Partial<Voucher>) {
  const voucher: Voucher = {
    payee: PAYEE,
    token: TOKEN,
    tabId: 1n,
    cumulative: 0n,
    deadline: now() + 3_600n,
    maxFee: 0n,
    ...over,
  };
  const signature = await signVoucher({ signer: account, domain, voucher });
  const json = {
    voucher: {
      payee: voucher.payee,
      token: voucher.token,
      tabId: voucher.tabId.toString(),
      cumulative: voucher.cumulative.toString(),
      deadline: voucher.deadline.toString(),
      maxFee: voucher.maxFee.toString(),
    },
    signature,
  };
  return {
    voucher,
    signature,
    id: itemId(hashVoucher(domain, voucher), account.address.toLowerCase() as Address),
    json,
  };
}

/** Flip s to n - s and v to its other parity: the same signature in its high-s form. */
function highS(signature: Hex): Hex {
  const r = signature.slice(2, 66);
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  const v = Number.parseInt(signature.slice(130), 16);
  return `0x${r}${(N - s).toString(16).padStart(64, "0")}${(v === 27 ? 28 : 27).toString(16)}`;
}

// biome-ignore lint/suspicious/noExplicitAny: answers are JSON the assertions walk freely
type Json = any;
type Answer = { status: number; headers: Headers; body: Json };

class Client {
  constructor(readonly url: string) {}
  async raw(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
    const res = await fetch(`${this.url}${path}`, { method, body, headers });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, headers: res.headers, body: json };
  }
  get(path: string, headers: Record<string, string> = {}) {
    return this.raw("GET", path, undefined, headers);
  }
  post(path: string, body: unknown, headers: Record<string, string> = {}) {
    return this.raw("POST", path, JSON.stringify(body), { "content-type": "application/json", ...headers });
  }
}

function expectError(a: Answer, status: number, code?: string) {
  expect(a.status, JSON.stringify(a.body)).to.equal(status);
  expect(a.body).to.have.property("error");
  expect(a.body.error.code).to.be.a("string");
  if (code) expect(a.body.error.code).to.equal(code);
  expect(a.body.error.message).to.be.a("string").and.not.equal("");
  expect(a.body.error.details).to.be.an("object");
}

type Harness = {
  dir: string;
  store: Store;
  chain: ChainModel;
  ingest: Ingest;
  metrics: Metrics;
  deps: ApiDeps;
  logs: string[];
  readiness: Readiness;
  ownerBodies: Map<Hex, { kind: "onboarding" | "revocation"; body: Json }>;
  settled: number;
  serve(over?: Partial<ApiDeps>, options?: { now?: () => number }): Promise<Client>;
  close(): Promise<void>;
};

/** `url`: a PostgreSQL schema's; otherwise a SQLite file in the harness's temp dir. */
async function harness(url?: string): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "machinepay-api-"));
  const store = await openStore(url ?? join(dir, "relayer.db"));
  const chain = new ChainModel();
  const metrics = new Metrics({ store });
  const verifier = new SharedVerifier(domain);
  const ingest = await Ingest.open({
    verifier,
    chain,
    store,
    clock: new ChainClock(),
    deadlineMarginSeconds: 30,
    fee: 0n,
    onDecision: metrics.decision,
    onStage: metrics.stage,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  const servers: FastifyInstance[] = [];
  const h: Harness = {
    dir,
    store,
    chain,
    ingest,
    metrics,
    logs,
    readiness: { chain: true, store: true, senderFunded: true, head: 12, senderBalance: "5000000000000000000" },
    ownerBodies: new Map(),
    settled: 0,
    deps: undefined as never,
    async serve(over = {}, options = {}) {
      const app = await buildServer({ ...h.deps, ...over }, { validateResponses: true, ...options });
      await app.listen({ host: "127.0.0.1", port: 0 });
      servers.push(app);
      return new Client(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
    },
    async close() {
      for (const s of servers) await s.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  h.deps = {
    config: config(),
    deployment,
    domain,
    ingest,
    verifier,
    ledger: ingest.ledger,
    store,
    chain,
    clock: new ChainClock(),
    readiness: async () => ({ ...h.readiness }),
    settleNow: async () => {
      h.settled++;
      return { batches: [7] };
    },
    ownerMessages: {
      async submit(kind: "onboarding" | "revocation", body: Json) {
        if (body[kind].owner === lc(OTHER_PAYEE)) {
          throw Object.assign(new Error("the owner's epoch moved on: sign again with epoch 3"), {
            code: "OWNER_MESSAGE_INVALID",
          });
        }
        const id = keccak256(toHex(JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v))));
        h.ownerBodies.set(id, { kind, body });
        return { id, status: "accepted" };
      },
      async get(id: Hex): Promise<OwnerMessageInfo | null> {
        const m = h.ownerBodies.get(id);
        return m ? { id, kind: m.kind, status: "accepted", owner: m.body[m.kind].owner } : null;
      },
    },
    metrics,
    logger: pino({ level: "info" }, sink),
  };
  return h;
}

// The same tests on each backend.
for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`api: the relayer's HTTP API over a real store and ingest (${backend})`, function () {
    this.timeout(60_000);
    let h: Harness;
    let api: Client;
    let fleet: { policyId: number; owner: Address };

    before(async function () {
      h = await harness(backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url);
      api = await h.serve();
      fleet = h.chain.fleet(1_000_000_000n);
    });
    after(() => h?.close());

    describe("payments", () => {
      it("accepts a signed payment and answers its status by id, in any letter case", async () => {
        const device = h.chain.device_(fleet.policyId);
        const p = await signed(device, { amount: 250_000n });
        const json = {
          ...p.json,
          payment: { ...p.json.payment, payee: p.json.payment.payee.toUpperCase().replace("0X", "0x") },
        };
        const a = await api.post("/v1/payments", { payments: [json] });
        expect(a.status).to.equal(200);
        expect(a.body.results).to.deep.equal([{ id: p.id, kind: "payment", status: "accepted" }]);

        const s = await api.get(`/v1/payments/${p.id.toUpperCase().replace("0X", "0x")}`);
        expect(s.status).to.equal(200);
        expect(s.body).to.include({
          id: p.id,
          kind: "payment",
          status: "accepted",
          device: lc(device.address),
          payee: lc(PAYEE),
          token: lc(TOKEN),
          amount: "250000",
          nonce: p.payment.nonce.toString(),
          deadline: Number(p.payment.deadline),
          owner: fleet.owner,
        });
        expect(s.body).to.not.have.property("txHash");
        expectError(await api.get(`/v1/vouchers/${p.id}`), 404, "NOT_FOUND");
        expectError(await api.get(`/v1/payments/0x${"ab".repeat(32)}`), 404, "NOT_FOUND");
      });

      it("answers the results of a mixed request in the order of the items", async () => {
        const device = h.chain.device_(fleet.policyId);
        const good = await signed(device, { amount: 10n });
        const tooBig = await signed(device, { amount: 5_000_000n });
        const good2 = await signed(device, { amount: 20n });
        const a = await api.post("/v1/payments", { payments: [good.json, tooBig.json, good2.json] });
        expect(a.body.results.map((r: { status: string }) => r.status)).to.deep.equal([
          "accepted",
          "rejected",
          "accepted",
        ]);
        expect(a.body.results.map((r: { id: Hex }) => r.id)).to.deep.equal([good.id, tooBig.id, good2.id]);
        expect(a.body.results[1].reason).to.equal("ExceedsPaymentCap");
      });
    });

    describe("bad input is a 4xx with the error body, never a 5xx", () => {
      let valid: Awaited<ReturnType<typeof signed>>;
      before(async () => {
        valid = await signed(h.chain.device_(fleet.policyId));
      });
      const withPayment = (over: Record<string, unknown>) => ({
        payments: [{ ...valid.json, payment: { ...valid.json.payment, ...over } }],
      });

      it("malformed JSON", async () => {
        const a = await api.raw("POST", "/v1/payments", '{"payments": [', { "content-type": "application/json" });
        expectError(a, 400, "INVALID_JSON");
      });

      it("a missing or empty body, and a body of the wrong JSON type", async () => {
        expectError(
          await api.raw("POST", "/v1/payments", "", { "content-type": "application/json" }),
          400,
          "BAD_REQUEST",
        );
        expectError(await api.raw("POST", "/v1/payments"), 400, "BAD_REQUEST");
        const a = await api.post("/v1/payments", [1, 2]);
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/^body: must be an object/);
      });

      it("wrong types name the field path", async () => {
        let a = await api.post("/v1/payments", { payments: "all of them" });
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/^payments: must be an array/);
        a = await api.post("/v1/payments", withPayment({ amount: 250000 }));
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/^payments\[0\]\.payment\.amount: must be a decimal string/);
        expect(a.body.error.details.issues[0].path).to.equal("payments[0].payment.amount");
        a = await api.post("/v1/payments", withPayment({ payee: "0x1234" }));
        expect(a.body.error.message).to.match(
          /^payments\[0\]\.payment\.payee: must be a 0x-prefixed 20-byte hex address/,
        );
        a = await api.post("/v1/payments", { payments: [{ payment: valid.json.payment }] });
        expect(a.body.error.message).to.match(/^payments\[0\]\.signature: is required/);
      });

      it("numbers beyond uint256, negative or fractional", async () => {
        let a = await api.post("/v1/payments", withPayment({ amount: (1n << 256n).toString() }));
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/payments\[0\]\.payment\.amount: .* is above 2\^256 - 1/);
        a = await api.post("/v1/payments", withPayment({ nonce: "9".repeat(5000) }));
        expect(a.body.error.message).to.match(/payments\[0\]\.payment\.nonce: .* above 2\^256 - 1/);
        a = await api.post("/v1/payments", withPayment({ amount: "-5" }));
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/payments\[0\]\.payment\.amount: must not be negative/);
        a = await api.post("/v1/payments", withPayment({ deadline: "1.5" }));
        expect(a.body.error.message).to.match(/payments\[0\]\.payment\.deadline: must be a whole number/);
        a = await api.post("/v1/payments", withPayment({ amount: "1e6" }));
        expect(a.body.error.message).to.match(/no fraction or exponent/);
        a = await api.post("/v1/payments", withPayment({ amount: "0xff" }));
        expect(a.body.error.message).to.match(/not hex/);
      });

      it("too many items, or none", async () => {
        const many = Array.from({ length: 51 }, () => valid.json);
        const a = await api.post("/v1/payments", { payments: many });
        expectError(a, 400, "TOO_MANY_ITEMS");
        expect(a.body.error.message).to.match(/^payments: holds 51 items; send at most 50 per request/);
        expectError(await api.post("/v1/payments", { payments: [] }), 400, "BAD_REQUEST");
      });

      it("a body above the limit is a 413", async () => {
        const a = await api.raw("POST", "/v1/payments", JSON.stringify({ pad: "x".repeat(70 * 1024) }), {
          "content-type": "application/json",
        });
        expectError(a, 413, "BODY_TOO_LARGE");
        expect(a.body.error.message).to.include("65536 bytes");
      });

      it("unknown routes, bad parameters and other media types", async () => {
        expectError(await api.get("/v2/payments"), 404, "NOT_FOUND");
        expectError(await api.get("/v1/payments"), 404, "NOT_FOUND");
        expectError(await api.raw("DELETE", `/v1/payments/${valid.id}`), 404, "NOT_FOUND");
        const bad = await api.get("/v1/payments/0x1234");
        expectError(bad, 400, "BAD_REQUEST");
        expect(bad.body.error.message).to.match(/^params\.id: must be 0x-prefixed 32 bytes/);
        expectError(await api.get("/v1/payments/%E0%A4%A"), 400, "BAD_REQUEST");
        expectError(await api.get(`/v1/payments/${"0".repeat(300)}`), 414, "URI_TOO_LONG");
        expectError(
          await api.raw("POST", "/v1/payments", JSON.stringify({ payments: [valid.json] }), {
            "content-type": "text/plain",
          }),
          415,
          "UNSUPPORTED_MEDIA_TYPE",
        );
        expectError(await api.get("/v1/batches?limit=0"), 400, "BAD_REQUEST");
        expectError(await api.get("/v1/batches?status=lost"), 400, "BAD_REQUEST");
        expectError(await api.get("/v1/tabs/0x12/0x34/0x56/x"), 400, "BAD_REQUEST");
      });

      it("fast-check: random JSON at POST /v1/payments never gets a 5xx, and every error has a code", async () => {
        const paths = ["payee", "token", "amount", "nonce", "deadline", "maxFee", "ref"] as const;
        // Near misses of a valid body as well as arbitrary JSON: most of the space is caught by zod,
        // the near misses reach ingest with bad signatures and out-of-range fields.
        const nearMiss = fc
          .record({
            field: fc.constantFrom(...paths, "signature", "payment", "extra"),
            value: fc.oneof(
              fc.jsonValue(),
              fc.bigInt({ min: 0n, max: 1n << 40n }).map(String),
              fc.bigUintN(256).map(String),
              fc.bigInt({ min: -(1n << 300n), max: 1n << 300n }).map(String),
              fc
                .constantFrom(40, 64, 128, 130, 131)
                .chain((n) => fc.hexaString({ minLength: n, maxLength: n }).map((h) => `0x${h}`)),
            ),
            copies: fc.integer({ min: 1, max: 3 }),
          })
          .map(({ field, value, copies }) => {
            const item: Record<string, unknown> = {
              payment: { ...valid.json.payment },
              signature: valid.json.signature,
            };
            if (field === "signature" || field === "payment") item[field] = value;
            else if (field === "extra") item.extra = value;
            else (item.payment as Record<string, unknown>)[field] = value;
            return { payments: Array.from({ length: copies }, () => item) };
          });
        const body = fc.oneof(
          { arbitrary: fc.jsonValue(), weight: 1 },
          { arbitrary: fc.record({ payments: fc.array(fc.jsonValue(), { maxLength: 4 }) }), weight: 1 },
          { arbitrary: nearMiss, weight: 3 },
        );
        await fc.assert(
          fc.asyncProperty(body, async (b) => {
            const a = await api.raw("POST", "/v1/payments", JSON.stringify(b), { "content-type": "application/json" });
            expect(a.status, JSON.stringify(a.body)).to.be.below(500);
            if (a.status === 200) {
              expect(a.body.results).to.have.length((b as { payments: unknown[] }).payments.length);
              for (const r of a.body.results) expect(r.id).to.match(/^0x[0-9a-f]{64}$/);
            } else expectError(a, a.status);
          }),
          { seed: 0x5eed, numRuns: 300 },
        );
      });
    });

    describe("per-item rejections carry the contract's reason names", () => {
      const rejected = async (items: { json: unknown }[]) => {
        const a = await api.post("/v1/payments", { payments: items.map((i) => i.json) });
        expect(a.status).to.equal(200);
        return a.body.results as { id: Hex; status: string; reason?: string; message?: string; field?: string }[];
      };

      it("UnknownDevice, DevicePaused, PayeeNotAllowed, ExceedsPaymentCap", async () => {
        const stranger = privateKeyToAccount(generatePrivateKey());
        const paused = h.chain.device_(fleet.policyId, { paused: true });
        const restricted = h.chain.fleet(1_000_000n, { payeesRestricted: true });
        h.chain.allowed.add(`${restricted.policyId}:${lc(PAYEE)}`);
        const picky = h.chain.device_(restricted.policyId);
        const device = h.chain.device_(fleet.policyId);
        const results = await rejected([
          await signed(stranger),
          await signed(paused),
          await signed(picky, { payee: OTHER_PAYEE }),
          await signed(picky, { payee: PAYEE }),
          await signed(device, { amount: 1_000_001n }),
        ]);
        expect(results.map((r) => r.reason ?? r.status)).to.deep.equal([
          "UnknownDevice",
          "DevicePaused",
          "PayeeNotAllowed",
          "accepted",
          "ExceedsPaymentCap",
        ]);
        for (const r of results.filter((x) => x.status === "rejected")) {
          expect(REASONS).to.include(r.reason);
          expect(r.message).to.be.a("string").and.not.equal("");
        }
      });

      it("ExceedsPeriodCap net of pending: two payments that each fit but not together", async () => {
        const tight = h.chain.fleet(1_000_000n, { maxPerPeriod: 100n });
        const device = h.chain.device_(tight.policyId);
        const [first] = await rejected([await signed(device, { amount: 60n })]);
        expect(first.status).to.equal("accepted");
        const [second] = await rejected([await signed(device, { amount: 60n })]);
        expect(second).to.include({ status: "rejected", reason: "ExceedsPeriodCap" });
        expect(second.message).to.include("40");
      });

      it("InsufficientBalance across a fleet: two devices of one owner, one balance", async () => {
        const poor = h.chain.fleet(1_000n);
        const a = h.chain.device_(poor.policyId);
        const b = h.chain.device_(poor.policyId);
        const results = await rejected([await signed(a, { amount: 700n }), await signed(b, { amount: 700n })]);
        expect(results[0].status).to.equal("accepted");
        expect(results[1]).to.include({ status: "rejected", reason: "InsufficientBalance" });
      });

      it("NonceUsed: another payment with a pending payment's nonce", async () => {
        const device = h.chain.device_(fleet.policyId);
        const results = await rejected([
          await signed(device, { nonce: 5n, amount: 1n }),
          await signed(device, { nonce: 5n, amount: 2n }),
        ]);
        expect(results.map((r) => r.reason ?? r.status)).to.deep.equal(["accepted", "NonceUsed"]);
      });

      it("relayer codes: DEADLINE_TOO_SOON, SIGNATURE_HIGH_S, DEADLINE_IN_MILLISECONDS, FIELD_OUT_OF_RANGE", async () => {
        const device = h.chain.device_(fleet.policyId);
        const good = await signed(device);
        const high = { json: { ...good.json, signature: highS(good.signature) } };
        const results = await rejected([
          await signed(device, { deadline: now() + 10n }),
          high,
          await signed(device, { deadline: BigInt(Date.now() + 600_000) }),
          await signed(device, { amount: 1n << 100n }),
        ]);
        expect(results.map((r) => r.reason)).to.deep.equal([
          "DEADLINE_TOO_SOON",
          "SIGNATURE_HIGH_S",
          "DEADLINE_IN_MILLISECONDS",
          "FIELD_OUT_OF_RANGE",
        ]);
        // Refused before its signer is known: the answer carries the message's digest (nothing is stored).
        expect(results[1]).to.include({ id: hashPayment(domain, good.payment), field: "signature" });
        expect(results[2]).to.include({ field: "deadline" });
        expect(results[2].message).to.include("milliseconds");
        for (const r of results) expect(r.id).to.match(/^0x[0-9a-f]{64}$/);
      });
    });

    it("the same signed payment posted 20 times at once is stored once, every answer the same id", async () => {
      const device = h.chain.device_(fleet.policyId);
      const p = await signed(device, { amount: 33n });
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => api.post("/v1/payments", { payments: [p.json] })),
      );
      for (const a of answers) {
        expect(a.status).to.equal(200);
        expect(a.body.results[0]).to.include({ id: p.id, status: "accepted" });
      }
      const stored = await h.store.listItems({ device: lc(device.address) as Hex, limit: 100 });
      expect(stored.rows.map((r) => r.id)).to.deep.equal([p.id]);
      expect(h.ingest.ledger.deviceSpend(device.address)).to.equal(33n);
      const again = await api.post("/v1/payments", { payments: [p.json] });
      expect(again.body.results[0]).to.deep.equal({ id: p.id, kind: "payment", status: "accepted", duplicate: true });
    });

    describe("vouchers and tabs", () => {
      it("a newer voucher supersedes the accepted one; an older one answers stale with the newest; the tab adds up", async () => {
        const device = h.chain.device_(fleet.policyId);
        const tabId = 77n;
        h.chain.tabs.set(`${lc(device.address)}:${lc(PAYEE)}:${lc(TOKEN)}:${tabId}`, { settled: 50n, closesAt: 0n });
        const v1 = await signedVoucher(device, { tabId, cumulative: 100n });
        const v2 = await signedVoucher(device, { tabId, cumulative: 200n });
        const v3 = await signedVoucher(device, { tabId, cumulative: 150n });
        let a = await api.post("/v1/vouchers", { vouchers: [v1.json] });
        expect(a.body.results).to.deep.equal([{ id: v1.id, kind: "voucher", status: "accepted" }]);
        a = await api.post("/v1/vouchers", { vouchers: [v2.json] });
        expect(a.body.results[0]).to.include({ id: v2.id, status: "accepted" });
        expect((await api.get(`/v1/vouchers/${v1.id}`)).body).to.include({ status: "superseded", cumulative: "100" });
        expect((await api.get(`/v1/vouchers/${v2.id}`)).body).to.include({
          status: "accepted",
          kind: "voucher",
          tabId: "77",
          cumulative: "200",
        });
        a = await api.post("/v1/vouchers", { vouchers: [v3.json] });
        expect(a.body.results[0]).to.include({ id: v3.id, status: "stale", reason: "VoucherStale", newest: "200" });
        a = await api.post("/v1/vouchers", { vouchers: [v1.json] });
        expect(a.body.results[0]).to.include({ id: v1.id, status: "superseded", duplicate: true });
        expectError(await api.get(`/v1/payments/${v2.id}`), 404, "NOT_FOUND");

        const tab = await api.get(`/v1/tabs/${device.address}/${PAYEE}/${TOKEN}/77`);
        expect(tab.status).to.equal(200);
        expect(tab.body).to.deep.equal({
          device: lc(device.address),
          payee: lc(PAYEE),
          token: lc(TOKEN),
          tabId: "77",
          settled: "50",
          newest: "200",
          newestId: v2.id,
          pending: "150",
          closesAt: null,
        });
        const empty = await api.get(`/v1/tabs/${device.address}/${PAYEE}/${TOKEN}/78`);
        expect(empty.body).to.include({ settled: "0", newest: "0", pending: "0", newestId: null });
        expect(h.ingest.ledger.deviceSpend(device.address)).to.equal(150n);
      });

      it("voucher bodies are validated like payments", async () => {
        const a = await api.post("/v1/vouchers", { vouchers: [{ voucher: { tabId: "-1" }, signature: "0x" }] });
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.details.issues.map((i: { path: string }) => i.path)).to.include(
          "vouchers[0].voucher.tabId",
        );
      });
    });

    it("a device's headroom is chain state minus what is pending", async () => {
      const f = h.chain.fleet(5_000n, { maxPerPeriod: 3_000n, maxPerPayment: 2_000n });
      const device = h.chain.device_(f.policyId, { nonceTop: 4n });
      await api.post("/v1/payments", { payments: [(await signed(device, { amount: 1_200n })).json] });
      const a = await api.get(`/v1/devices/${device.address.toUpperCase().replace("0X", "0x")}`);
      expect(a.status).to.equal(200);
      expect(a.body).to.include({
        device: lc(device.address),
        status: "None",
        policyId: f.policyId,
        owner: f.owner,
        token: lc(TOKEN),
        perPayment: "2000",
        period: "1800",
        balance: "3800",
        pending: "1200",
        spendable: "1800",
        nonceTop: 4,
      });
      expect(a.body.periodEndsAt).to.be.above(Number(now()));
      const stranger = await api.get(`/v1/devices/${privateKeyToAccount(generatePrivateKey()).address}`);
      expect(stranger.body).to.include({ status: "UnknownDevice", policyId: 0, spendable: "0" });
      expectError(await api.get("/v1/devices/not-an-address"), 400, "BAD_REQUEST");
    });

    it("lists batches and shows one with its attempts (raw bytes only on request)", async () => {
      const device = h.chain.device_(fleet.policyId);
      const p = await signed(device, { amount: 9n });
      await api.post("/v1/payments", { payments: [p.json] });
      const sender = lc(privateKeyToAccount(generatePrivateKey()).address) as Hex;
      const batchId = await h.store.createBatch({
        kind: "payment",
        token: lc(TOKEN) as Hex,
        sender,
        nonce: 0,
        itemIds: [p.id],
      });
      const hash = `0x${"ab".repeat(32)}` as Hex;
      await h.store.addAttempt(batchId, { hash, raw: "0x02f8", nonce: 0, maxFeePerGas: 2n, maxPriorityFeePerGas: 1n });
      const list = await api.get("/v1/batches?limit=10");
      expect(list.status).to.equal(200);
      expect(list.body.batches[0]).to.include({ id: batchId, status: "created", itemCount: 1, sender });
      expect(list.body.next).to.equal(null);
      expect((await api.get("/v1/batches?status=confirmed")).body.batches).to.deep.equal([]);
      const detail = await api.get(`/v1/batches/${batchId}`);
      expect(detail.body.itemIds).to.deep.equal([p.id]);
      expect(detail.body.attempts[0]).to.include({ hash, maxFeePerGas: "2" });
      expect(detail.body.attempts[0]).to.not.have.property("raw");
      expect((await api.get(`/v1/batches/${batchId}?raw=true`)).body.attempts[0].raw).to.equal("0x02f8");
      expect((await api.get(`/v1/payments/${p.id}`)).body).to.include({ status: "batched", batchId });
      expectError(await api.get("/v1/batches/999999"), 404, "NOT_FOUND");
      expectError(await api.get("/v1/batches/abc"), 400, "BAD_REQUEST");
    });

    describe("owner messages", () => {
      const owner = privateKeyToAccount(generatePrivateKey());
      const devices = [privateKeyToAccount(generatePrivateKey()), privateKeyToAccount(generatePrivateKey())];
      const policy = {
        token: TOKEN,
        maxPerPayment: 1_000_000n,
        maxPerPeriod: 5_000_000n,
        periodLength: 86_400,
        lifetimeMax: 100_000_000n,
        validFrom: 0,
        validUntil: 0,
        payeesRestricted: false,
      };
      const jsonOf = (x: unknown) =>
        JSON.parse(JSON.stringify(x, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));

      async function onboarding() {
        const message: Onboarding = {
          owner: owner.address,
          policyId: 0,
          policy,
          devices: devices.map((d) => d.address),
          epoch: 0,
          nonce: 1n,
          deadline: now() + 3_600n,
        };
        const signature = await signTypedMessage({
          signer: owner,
          domain,
          types: onboardingTypes,
          primaryType: "Onboarding",
          message,
        });
        const proofs = await Promise.all(
          devices.map((d) => signEnrollment({ signer: d, domain, owner: owner.address })),
        );
        return { onboarding: jsonOf(message), proofs, signature };
      }

      it("accepts an onboarding, decodes it for the owner-message stage, and answers its status", async () => {
        const body = await onboarding();
        const a = await api.post("/v1/onboardings", body);
        expect(a.status, JSON.stringify(a.body)).to.equal(202);
        expect(a.body.status).to.equal("accepted");
        const seen = h.ownerBodies.get(a.body.id)!;
        expect(seen.kind).to.equal("onboarding");
        expect(seen.body.onboarding.policy.maxPerPayment).to.equal(1_000_000n);
        expect(seen.body.onboarding.devices).to.deep.equal(devices.map((d) => lc(d.address)));
        expect(seen.body.proofs).to.have.length(2);
        const s = await api.get(`/v1/onboardings/${a.body.id}`);
        expect(s.body).to.include({ id: a.body.id, kind: "onboarding", status: "accepted", owner: lc(owner.address) });
        expectError(await api.get(`/v1/revocations/${a.body.id}`), 404, "NOT_FOUND");
      });

      it("refuses malformed owner messages with the field path", async () => {
        const body = await onboarding();
        let a = await api.post("/v1/onboardings", { ...body, proofs: [NO_PROOF] });
        expectError(a, 400, "BAD_REQUEST");
        expect(a.body.error.message).to.match(/^proofs: holds 1 proofs for 2 devices/);
        a = await api.post("/v1/onboardings", {
          ...body,
          onboarding: { ...body.onboarding, devices: [devices[0].address, devices[0].address] },
        });
        expect(a.body.error.message).to.match(/^onboarding\.devices\[1\]: repeats devices\[0\]/);
        a = await api.post("/v1/onboardings", {
          ...body,
          onboarding: {
            ...body.onboarding,
            policy: { ...body.onboarding.policy, maxPerPayment: (1n << 64n).toString() },
          },
        });
        expect(a.body.error.message).to.match(/^onboarding\.policy\.maxPerPayment: .* above 2\^64 - 1/);
        a = await api.post("/v1/onboardings", { ...body, signature: "0xabc" });
        expect(a.body.error.message).to.match(/^signature: /);
      });

      it("accepts a revocation; the stage's refusal is a 4xx with its code", async () => {
        const message: Revocation = {
          owner: owner.address,
          devices: [devices[0].address],
          epoch: 0,
          nonce: 2n,
          deadline: now() + 600n,
        };
        const signature = await signTypedMessage({
          signer: owner,
          domain,
          types: revocationTypes,
          primaryType: "Revocation",
          message,
        });
        const a = await api.post("/v1/revocations", { revocation: jsonOf(message), signature });
        expect(a.status).to.equal(202);
        expect((await api.get(`/v1/revocations/${a.body.id}`)).body).to.include({ kind: "revocation" });
        const refused = await api.post("/v1/revocations", {
          revocation: jsonOf({ ...message, owner: OTHER_PAYEE }),
          signature,
        });
        expectError(refused, 422, "OWNER_MESSAGE_INVALID");
        expect(refused.body.error.message).to.include("epoch");
      });
    });

    describe("admin", () => {
      it("POST /v1/settle: 401 without a token, 403 with a wrong one, 200 with the right one", async () => {
        const missing = await api.raw("POST", "/v1/settle");
        expectError(missing, 401, "UNAUTHORIZED");
        expect(missing.headers.get("www-authenticate")).to.match(/^Bearer/);
        expectError(
          await api.raw("POST", "/v1/settle", undefined, { authorization: "Bearer wrong" }),
          403,
          "FORBIDDEN",
        );
        expectError(
          await api.raw("POST", "/v1/settle", undefined, { authorization: `Bearer ${ADMIN_TOKEN}x` }),
          403,
          "FORBIDDEN",
        );
        const before = h.settled;
        const ok = await api.raw("POST", "/v1/settle", undefined, { authorization: `Bearer ${ADMIN_TOKEN}` });
        expect(ok.status).to.equal(200);
        expect(ok.body).to.deep.equal({ batches: [7] });
        expect(h.settled).to.equal(before + 1);
      });

      it("answers 403 saying how to enable admin routes when no token is configured", async () => {
        const closed = await h.serve({ config: config({}, null) });
        const a = await closed.raw("POST", "/v1/settle", undefined, { authorization: `Bearer ${ADMIN_TOKEN}` });
        expectError(a, 403, "ADMIN_DISABLED");
        expect(a.body.error.message).to.include("adminToken");
      });
    });

    describe("info, health, metrics, OpenAPI", () => {
      it("GET /v1/info serves the domain, every type and the reason names", async () => {
        const a = await api.get("/v1/info");
        expect(a.status).to.equal(200);
        expect(a.body).to.include({ chainId: 31337, contract: lc(CONTRACT) });
        expect(a.body.domain).to.deep.equal({ ...domain, verifyingContract: lc(CONTRACT) });
        expect(Object.keys(a.body.types)).to.have.members([
          "Payment",
          "Voucher",
          "TabClose",
          "Enrollment",
          "Onboarding",
          "PolicyParams",
          "Revocation",
        ]);
        expect(a.body.types.Payment.map((f: { name: string }) => f.name)).to.deep.equal([
          "payee",
          "token",
          "amount",
          "nonce",
          "deadline",
          "maxFee",
          "ref",
        ]);
        expect(a.body.reasons).to.deep.equal([...REASONS]);
        expect(a.body.limits.itemsPerRequest).to.equal(50);
      });

      it("healthz is always 200; readyz is 503 naming the failing part; v1/health says ok", async () => {
        expect((await api.get("/healthz")).body).to.deep.equal({ ok: true });
        const ready = await api.get("/readyz");
        expect(ready.status).to.equal(200);
        expect(ready.body).to.include({ ready: true, chain: true, head: 12 });
        expect((await api.get("/v1/health")).body).to.include({ ok: true, store: true });
        h.readiness.senderFunded = false;
        try {
          const a = await api.get("/readyz");
          expectError(a, 503, "NOT_READY");
          expect(a.body.error.details.failing).to.deep.equal(["senderFunded"]);
          expect(a.body.error.message).to.include("senderFunded");
          const health = await api.get("/v1/health");
          expect(health.status).to.equal(200);
          expect(health.body).to.include({ ok: false, senderFunded: false });
          expect(health.body.queue.accepted).to.be.above(0);
        } finally {
          h.readiness.senderFunded = true;
        }
        const broken = await h.serve({
          readiness: async () => {
            throw new Error("rpc down");
          },
        });
        const a = await broken.get("/readyz");
        expectError(a, 503, "NOT_READY");
        expect(a.body.error.message).to.include("rpc down");
        expect((await broken.get("/healthz")).status).to.equal(200);
      });

      it("GET /metrics has the machinepay_* metrics after traffic", async () => {
        h.metrics.batchMined(10, 21_000);
        h.metrics.misprediction("NonceUsed");
        h.metrics.batch("confirmed");
        const a = await api.get("/metrics");
        expect(a.status).to.equal(200);
        expect(a.headers.get("content-type")).to.include("text/plain");
        const text = a.body as string;
        for (const line of [
          'machinepay_items_accepted_total{kind="payment"}',
          'machinepay_items_accepted_total{kind="voucher"}',
          'machinepay_items_rejected_total{kind="payment",reason="ExceedsPaymentCap"}',
          'machinepay_items_rejected_total{kind="voucher",reason="VoucherStale"}',
          'machinepay_items_duplicate_total{kind="payment"}',
          'machinepay_queue_depth{status="accepted"}',
          'machinepay_queue_depth{status="batched"} 1',
          "machinepay_batch_size_count 1",
          "machinepay_gas_per_item_bucket",
          'machinepay_ack_latency_seconds_bucket{le="0.1",kind="payment"}',
          'machinepay_ingest_mispredictions_total{reason="NonceUsed"} 1',
          "machinepay_sender_balance_wei 5000000000000000000",
          'machinepay_batches_total{status="confirmed"} 1',
          "machinepay_process_cpu_seconds_total",
          'machinepay_http_requests_total{method="POST",route="/v1/payments",status="200"}',
        ]) {
          expect(text).to.include(line);
        }
        for (const l of text.split("\n").filter((x) => x && !x.startsWith("#"))) expect(l).to.match(/^machinepay_/);
        // Every admitted request was timed in each stage it went through (accepted payments above).
        for (const stage of ["verify", "chain_read", "decide_and_store"]) {
          const count = text.match(
            new RegExp(`^machinepay_admission_stage_seconds_count\\{stage="${stage}"\\} (\\d+)$`, "m"),
          );
          expect(count, `admission stage ${stage}`).to.not.equal(null);
          expect(Number(count![1]), `admission stage ${stage}`).to.be.above(0);
        }
      });

      it("GET /v1/openapi.json is an OpenAPI document listing every route", async () => {
        const a = await api.get("/v1/openapi.json");
        expect(a.status).to.equal(200);
        expect(a.body.openapi).to.match(/^3\./);
        expect(a.body.paths).to.include.all.keys(
          "/v1/info",
          "/v1/payments",
          "/v1/payments/{id}",
          "/v1/vouchers",
          "/v1/vouchers/{id}",
          "/v1/tabs/{device}/{payee}/{token}/{tabId}",
          "/v1/devices/{address}",
          "/v1/batches",
          "/v1/batches/{id}",
          "/v1/onboardings",
          "/v1/onboardings/{id}",
          "/v1/revocations",
          "/v1/revocations/{id}",
          "/v1/settle",
          "/v1/health",
          "/healthz",
          "/readyz",
          "/metrics",
        );
        const post = a.body.paths["/v1/payments"].post;
        const schema = post.requestBody.content["application/json"].schema;
        expect(schema.properties.payments.maxItems).to.equal(50);
        expect(schema.properties.payments.items.properties.payment.properties.amount.type).to.equal("string");
        expect(post.responses).to.include.keys("200", "400", "413", "429", "503");
      });

      it("logs one JSON line per request, without the admin token or signatures", async () => {
        await api.raw("POST", "/v1/settle", undefined, { authorization: `Bearer ${ADMIN_TOKEN}` });
        const lines = h.logs.map((l) => JSON.parse(l));
        const requests = lines.filter((l) => l.msg === "request");
        expect(requests.length).to.be.above(20);
        const settle = requests.find((l) => l.route === "/v1/settle" && l.status === 200);
        expect(settle).to.include({ method: "POST" });
        expect(settle.ms).to.be.a("number");
        expect(requests.find((l) => l.route === "/v1/payments" && l.items === 3)).to.not.equal(undefined);
        expect(requests.find((l) => l.code === "TOO_MANY_ITEMS")).to.not.equal(undefined);
        const all = h.logs.join("\n");
        expect(all).to.not.include(ADMIN_TOKEN);
        expect(all).to.not.match(/0x[0-9a-f]{130}/);
      });
    });

    describe("rate limits and overload", () => {
      it("per device: 429 with Retry-After once a device is over its items per second", async () => {
        let clock = 1_000_000;
        const limited = await h.serve({ config: config({ perDevicePerSecond: 3 }) }, { now: () => clock });
        const device = h.chain.device_(fleet.policyId);
        const other = h.chain.device_(fleet.policyId);
        const three = await Promise.all([1, 2, 3].map(() => signed(device, { amount: 1n })));
        let a = await limited.post("/v1/payments", { payments: three.map((p) => p.json) });
        expect(a.body.results.map((r: { status: string }) => r.status)).to.deep.equal([
          "accepted",
          "accepted",
          "accepted",
        ]);
        const fourth = await signed(device, { amount: 1n });
        a = await limited.post("/v1/payments", { payments: [fourth.json, (await signed(other)).json] });
        expectError(a, 429, "RATE_LIMITED");
        expect(a.headers.get("retry-after")).to.equal("1");
        expect(a.body.error.details.device).to.equal(lc(device.address));
        expect(await h.store.getItem(fourth.id)).to.equal(null); // all or nothing
        clock += 400; // 1.2 tokens back
        a = await limited.post("/v1/payments", { payments: [fourth.json] });
        expect(a.body.results[0].status).to.equal("accepted");
        const four = await Promise.all([1, 2, 3, 4].map(() => signed(other, { amount: 1n })));
        a = await limited.post("/v1/payments", { payments: four.map((p) => p.json) });
        expectError(a, 400, "TOO_MANY_ITEMS");
        expect(a.body.error.message).to.include("at most 3 items of one device per request");
      });

      it("per client IP: 429 with Retry-After and the error body", async () => {
        const limited = await h.serve({ config: config({ perIpPerMinute: 3 }) });
        for (let i = 0; i < 3; i++) expect((await limited.get("/v1/info")).status).to.equal(200);
        const a = await limited.get("/v1/info");
        expectError(a, 429, "RATE_LIMITED");
        expect(Number(a.headers.get("retry-after"))).to.be.within(1, 60);
        expect((await limited.get("/healthz")).status).to.equal(200);
      });

      it("overload: too much being admitted, or too much waiting for the chain, answers 503 OVERLOADED; nothing of it is accepted", async () => {
        // The pending ledger already holds what earlier tests accepted: allow exactly 2 more.
        const pendingNow = h.ingest.ledger.size;
        const behind = await h.serve({ config: config({ pendingItems: pendingNow + 2 }) });
        const device = h.chain.device_(fleet.policyId);
        const two = await Promise.all([1, 2].map(() => signed(device, { amount: 1n })));
        let a = await behind.post("/v1/payments", { payments: two.map((p) => p.json) });
        expect(a.body.results.map((r: { status: string }) => r.status)).to.deep.equal(["accepted", "accepted"]);
        const third = await signed(device, { amount: 1n });
        a = await behind.post("/v1/payments", { payments: [third.json] });
        expectError(a, 503, "OVERLOADED");
        expect(a.headers.get("retry-after")).to.equal("5");
        expect(a.body.error.details).to.include({ pendingItems: pendingNow + 2 });
        expect(await h.store.getItem(third.id)).to.equal(null);

        // Admission back-pressure: 3 items at once while at most 2 may be admitted.
        const narrow = await h.serve({ config: config({ admittingItems: 2 }) });
        const three = await Promise.all([1, 2, 3].map(() => signed(h.chain.device_(fleet.policyId), { amount: 1n })));
        a = await narrow.post("/v1/payments", { payments: three.map((p) => p.json) });
        expectError(a, 503, "OVERLOADED");
        expect(a.headers.get("retry-after")).to.equal("1");
        for (const p of three) expect(await h.store.getItem(p.id)).to.equal(null);
        // Within the bound, the same server accepts.
        a = await narrow.post("/v1/payments", { payments: three.slice(0, 2).map((p) => p.json) });
        expect(a.body.results.map((r: { status: string }) => r.status)).to.deep.equal(["accepted", "accepted"]);
      });

      it("a store that cannot commit answers 503 with Retry-After; nothing is accepted", async () => {
        const down = await h.serve({
          ingest: {
            submit: async () => {
              throw new IngestUnavailableError(new Error("disk I/O error"));
            },
          },
        });
        const a = await down.post("/v1/payments", { payments: [(await signed(h.chain.device_(fleet.policyId))).json] });
        expectError(a, 503, "STORE_UNAVAILABLE");
        expect(a.headers.get("retry-after")).to.equal("1");
        expect(a.body.error.message).to.include("retry");
      });

      it("the real ingest over a store whose commits fail: 503 for the request and its concurrent duplicate, no unhandled rejection", async () => {
        const failing: Store = Object.create(h.store, {
          write: { value: async () => Promise.reject(new Error("disk I/O error")) },
        });
        const ingest = await Ingest.open({
          verifier: new SharedVerifier(domain),
          chain: h.chain,
          store: failing,
          clock: new ChainClock(),
          deadlineMarginSeconds: 30,
          fee: 0n,
        });
        const unhandled: unknown[] = [];
        const onUnhandled = (e: unknown) => unhandled.push(e);
        process.on("unhandledRejection", onUnhandled);
        try {
          const down = await h.serve({ ingest });
          const p = (await signed(h.chain.device_(fleet.policyId))).json;
          // The same item twice at once: the second waits for the first's admission, which fails.
          const [a, b] = await Promise.all([
            down.post("/v1/payments", { payments: [p] }),
            down.post("/v1/payments", { payments: [p, p] }),
          ]);
          for (const r of [a, b]) expectError(r, 503, "STORE_UNAVAILABLE");
          await new Promise((r) => setTimeout(r, 50));
          expect(unhandled).to.deep.equal([]);
        } finally {
          process.off("unhandledRejection", onUnhandled);
        }
      });
    });
  });
