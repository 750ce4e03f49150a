/**
 * Adversarial input against the live HTTP API: the real relayer (startRelayer: a `hardhat node`,
 * a SQLite file in a temp dir, then a PostgreSQL schema; HTTP on a random port) under fast-check cases of malformed JSON,
 * wrong types, oversized bodies and arrays, numbers beyond their fields, forged, malleable and
 * misdirected signatures, expired and millisecond deadlines, replays, items from devices in every
 * refused state, payees off the allow-list, every cap, stale vouchers, bad owner messages, admin
 * calls without the token and HTTP it cannot parse. Every case must answer a 4xx with the error
 * body, or a 200 whose item is refused with a reason and a message (or is a duplicate of a known
 * item); afterwards the chain holds exactly the control items' settlements, the server still
 * answers and its log holds no secret.
 *
 * What is sent: support/adversarial-specs.ts (arbitraries), support/adversarial-cases.ts (requests
 * and the answers they must get), support/adversarial-chain.ts (the devices, in every state).
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Writable } from "node:stream";
import {
  type Address,
  decodeMachinePayLog,
  type Hex,
  itemId,
  machinePayAbi,
  machinePayDomain,
  type Onboarding,
  onboardingTypes,
  type Payment,
  settlementsOf,
  signPayment,
  toOnboardingJson,
  toSignedPaymentJson,
  toSignedVoucherJson,
} from "@machinepay/sdk";
import { expect } from "chai";
import fc from "fast-check";
import pino from "pino";
import { keccak256, stringToHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { HARDHAT_KEYS } from "../../scripts/lib/deploy-local";
import { loadConfig } from "../src/config";
import { loggerOptions, type RunningRelayer, startRelayer } from "../src/service";
import {
  attackers,
  bindCases,
  buildAdmin,
  buildLimit,
  buildOwner,
  buildOwnerSchema,
  buildPayment,
  buildRead,
  buildReplay,
  buildSchema,
  buildVoucher,
  type Case,
  check,
  clock,
  controls,
  defaultPolicy,
  deviceX,
  FRAMING,
  generatedKeys,
  JSON_HEADERS,
  type Json,
  ownerX,
  paymentOf,
  pool,
  rawRequest,
  refused,
  resetCases,
  send,
  stats,
  submitCase,
  voucherOf,
} from "./support/adversarial-cases";
import { setUpWorld, type World } from "./support/adversarial-chain";
import {
  enrollmentProofSync,
  type Key,
  paymentDigestOf,
  signPaymentSync,
  signTypedSync,
  signVoucherSync,
} from "./support/adversarial-sign";
import {
  adminSpecArb,
  CONTROL_CUMULATIVE,
  CONTROL_TAB,
  LIMITS,
  limitSpecArb,
  NONCE_TOP,
  ownerSchemaArb,
  ownerSpecArb,
  paySpecArb,
  readSpecArb,
  replaySpecArb,
  schemaSpecArb,
  voucherSpecArb,
} from "./support/adversarial-specs";
import { PAYEES, startTestChain, type TestChain } from "./support/chain";
import { newSchema, requirePostgres } from "./support/postgres";

const SEED = 20_261_201;
/** Requests in flight at once, by default: each fast-check run sends this many cases concurrently. */
const IN_FLIGHT = 8;
const ADMIN_TOKEN = `adv-admin-${randomBytes(16).toString("hex")}`;
const PASSPHRASE = `adv-passphrase-${randomBytes(12).toString("hex")}`;

const lc = (a: string) => a.toLowerCase() as Address;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let chain: TestChain;
let relayer: RunningRelayer;
let world: World;
const logLines: string[] = [];
let startedAt = Date.now();
const domain = () => chain.domain;

/** `numRuns` fast-check runs, each sending `inFlight` cases at once and checking every answer. */
async function fuzz<S>(
  name: string,
  arb: fc.Arbitrary<S>,
  build: (s: S) => Case,
  { numRuns, seed, inFlight = IN_FLIGHT }: { numRuns: number; seed: number; inFlight?: number },
) {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(arb, { minLength: inFlight, maxLength: inFlight }), async (specs) => {
      await clock.fresh();
      const cases = specs.map(build);
      const answers = await Promise.all(cases.map(send));
      n += cases.length;
      for (const [i, c] of cases.entries()) check(c, answers[i]);
    }),
    // No shrinking: the cases run against a live, stateful relayer, and each failure names its case.
    { seed: SEED + seed, numRuns, endOnFailure: true },
  );
  stats.byProperty.set(name, n);
}

async function post(path: string, body: unknown) {
  const res = await fetch(`${relayer.url}${path}`, {
    method: "POST",
    headers: JSON_HEADERS,
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

async function waitFor(path: string, statuses: string[], timeoutMs = 60_000): Promise<Json> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const body = (await (await fetch(`${relayer.url}${path}`)).json()) as Json;
    if (statuses.includes(body.status)) return body;
    if (Date.now() > until) throw new Error(`${path} is still ${body.status}`);
    await sleep(100);
  }
}

/** Prometheus samples of `name` as label text → value. */
async function metric(name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${relayer.url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? "", Number(m[2]));
  }
  return out;
}

for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`adversarial input against the live HTTP API (hardhat node, ${backend}, HTTP)`, function () {
    this.timeout(180_000);

    before(async function () {
      const url = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      resetCases();
      logLines.length = 0;
      startedAt = Date.now();
      chain = await startTestChain();
      bindCases({ chain, adminToken: ADMIN_TOKEN });
      await clock.refresh();
      world = await setUpWorld(chain, clock.now());
      controls.controlPolicy = world.policyOf.get(lc(world.control[0].address))!;
      const config = loadConfig({
        overrides: {
          rpcUrl: chain.node.url,
          deployment: chain.deploymentFile,
          store: url ?? join(chain.dir, "relayer.db"),
          port: 0,
          "sender.dev": true,
          confirmations: 1,
          logLevel: "info",
          adminToken: ADMIN_TOKEN,
          "limits.bodyBytes": LIMITS.bodyBytes,
          "limits.itemsPerRequest": LIMITS.itemsPerRequest,
          "limits.perDevicePerSecond": LIMITS.perDevicePerSecond,
          "limits.perIpPerMinute": LIMITS.perIpPerMinute,
        },
      });
      const sink = new Writable({
        write(chunk, _encoding, done) {
          logLines.push(...String(chunk).split("\n").filter(Boolean));
          done();
        },
      });
      relayer = await startRelayer({
        config,
        env: { MACHINEPAY_KEYSTORE_PASSPHRASE: PASSPHRASE },
        logger: pino(loggerOptions("info"), sink),
      });
      bindCases({ chain, world, relayerUrl: relayer.url, adminToken: ADMIN_TOKEN });
      await clock.refresh();
    });

    after(async () => {
      await relayer?.stop(5_000);
      await chain?.stop();
      const histogram = [...stats.byStatus.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
      const properties = [...stats.byProperty.entries()].map(([p, n]) => `${p} ${n}`).join(", ");
      const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
      console.log(
        `      adversarial (${backend}): ${stats.cases} cases (${stats.items} items) in ${seconds} s; status ${histogram.join(", ")}; ${properties}`,
      );
    });

    it("signs natively exactly as the SDK signs (so the cases' signatures are the real thing)", async () => {
      const key = world.control[0];
      const p: Payment = { ...paymentOf({ amount: 123n, nonce: 9n }), deadline: 1_900_000_000n };
      const viem = await signPayment({ signer: privateKeyToAccount(key.key), domain: domain(), payment: p });
      expect(signPaymentSync(key.key, domain(), p)).to.equal(viem);
    });

    it("accepts the control items: valid payments, a zero-amount payment, a voucher and an onboarding", async () => {
      const now = clock.now();
      const payments: typeof controls.payments = [];
      const add = (key: Key, nonce: bigint, amount: bigint, payee: Address) => {
        const ref = keccak256(stringToHex(`control:${key.address}:${nonce}`));
        const p = paymentOf({ nonce, amount, payee, ref, deadline: now + 3_600n });
        const id = itemId(paymentDigestOf(domain(), p), lc(key.address));
        const json = toSignedPaymentJson(p, signPaymentSync(key.key, domain(), p));
        payments.push({ json, id, device: lc(key.address), ref, amount, nonce });
      };
      world.control.forEach((key, i) => {
        for (const n of [0n, 1n, 2n]) add(key, n, 1_000n + BigInt(i) * 10n + n, PAYEES[Number(n) % 3]);
      });
      // The contract has no minimum amount: a zero-amount payment settles like any other.
      add(world.control[3], 3n, 0n, PAYEES[0]);
      add(world.nonceDevice, NONCE_TOP, 1_000n, PAYEES[1]);
      const a = await post("/v1/payments", { payments: payments.map((p) => p.json) });
      expect(a.status).to.equal(200);
      expect(a.body.results.map((r: Json) => r.status)).to.deep.equal(payments.map(() => "accepted"));
      expect(a.body.results.map((r: Json) => r.id)).to.deep.equal(payments.map((p) => p.id));
      controls.payments.push(...payments);

      controls.voucherDeadline = now + 3_600n;
      const v = voucherOf({ tabId: CONTROL_TAB, cumulative: CONTROL_CUMULATIVE, deadline: controls.voucherDeadline });
      const vjson = toSignedVoucherJson(v, signVoucherSync(world.control[0].key, domain(), v));
      const va = await post("/v1/vouchers", { vouchers: [vjson] });
      expect(va.body.results[0]).to.include({ status: "accepted" });
      controls.vouchers.push({ json: vjson, id: va.body.results[0].id });

      const o: Onboarding = {
        owner: ownerX.address,
        policyId: 0,
        policy: defaultPolicy(),
        devices: [deviceX.address],
        epoch: 0,
        nonce: 1n,
        deadline: now + 3_600n,
      };
      const body = toOnboardingJson(
        o,
        [enrollmentProofSync(deviceX.key, domain(), ownerX.address)],
        signTypedSync(ownerX.key, domain(), onboardingTypes, "Onboarding", o as never),
      );
      const oa = await post("/v1/onboardings", body);
      expect(oa.status, JSON.stringify(oa.body)).to.equal(202);
      controls.onboarding = { body, id: oa.body.id };
      expect((await waitFor(`/v1/onboardings/${oa.body.id}`, ["confirmed", "failed"])).status).to.equal("confirmed");
    });

    it("refuses forged, malformed, misdirected and out-of-bounds payments item by item, with a reason and a message", async () => {
      await fuzz(
        "payments",
        fc.array(paySpecArb, { minLength: 1, maxLength: 2 }),
        (specs) => submitCase(`payments ${specs.map((s) => s.t).join(",")}`, "payment", specs.map(buildPayment)),
        { numRuns: 250, seed: 1, inFlight: 16 },
      );
    });

    // Found by this suite (fixed): an item signed for another domain, or changed after signing,
    // recovers a stranger's address; the UnknownDevice message now says so instead of only sending a
    // registered device's operator to register it again.
    it("says an item signed for another chain may be why its signer is unknown", async () => {
      const key = world.signers[0];
      const p = paymentOf({ nonce: 5n, ref: keccak256(stringToHex("wrong chain")) });
      const other = machinePayDomain({ chainId: 1, verifyingContract: chain.deployment.machinePay });
      const a = await post("/v1/payments", { payments: [toSignedPaymentJson(p, signPaymentSync(key.key, other, p))] });
      expect(a.body.results[0]).to.include({ status: "rejected", reason: "UnknownDevice" });
      expect(a.body.results[0].message).to.match(/chain|domain/i);
    });

    it("refuses bad vouchers and answers vouchers not above their tab's newest `stale`", async () => {
      await fuzz(
        "vouchers",
        fc.array(voucherSpecArb, { minLength: 1, maxLength: 3 }),
        (specs) => submitCase(`vouchers ${specs.map((s) => s.t).join(",")}`, "voucher", specs.map(buildVoucher)),
        { numRuns: 80, seed: 2, inFlight: 16 },
      );
    });

    it("answers a replayed item (again, in another letter case or v form, twice in a request) as a duplicate with its id", async () => {
      await fuzz("replays", replaySpecArb, buildReplay, { numRuns: 60, seed: 3 });
    });

    it("answers bodies that are not JSON or do not fit the schema 400, naming the field", async () => {
      await fuzz("schema", schemaSpecArb, buildSchema, { numRuns: 250, seed: 4 });
      // Prototype keys in bodies did not reach the process's objects.
      expect(({} as Json).payments).to.equal(undefined);
    });

    it("answers bodies over limits.bodyBytes 413, lists over limits.itemsPerRequest 400, other media types 415", async () => {
      await fuzz("limits", limitSpecArb, buildLimit, { numRuns: 25, seed: 5 });
    });

    it("refuses owner messages with bad signatures or fields (422 with the contract's error, 400 for the schema)", async () => {
      // Each refused message costs the relayer a dry run (with viem's retries on Hardhat's revert code): more in flight.
      await fuzz("owner messages", ownerSpecArb, buildOwner, { numRuns: 8, seed: 6, inFlight: 24 });
      await fuzz("owner schema", ownerSchemaArb, buildOwnerSchema, { numRuns: 60, seed: 7 });
      // The same signed onboarding again is the message the relayer holds.
      const replay: Case = {
        label: "onboarding replay",
        method: "POST",
        path: "/v1/onboardings",
        headers: JSON_HEADERS,
        body: JSON.stringify(controls.onboarding!.body),
        expect: { kind: "known", id: controls.onboarding!.id },
      };
      check(replay, await send(replay));
    });

    it("refuses POST /v1/settle without the admin token (401) or with a wrong one (403)", async () => {
      await fuzz("admin", adminSpecArb, buildAdmin, { numRuns: 100, seed: 8 });
    });

    it("answers reads of unknown or malformed ids and paths with a 4xx, never a 5xx", async () => {
      await fuzz("reads", readSpecArb, buildRead, { numRuns: 120, seed: 9 });
    });

    it("survives HTTP it cannot parse (bad request lines, oversized headers, smuggling, cut bodies) and answers it 4xx", async () => {
      for (const [label, bytes] of FRAMING) {
        const answer = await rawRequest(bytes);
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? 0);
        stats.cases++;
        stats.byStatus.set(status, (stats.byStatus.get(status) ?? 0) + 1);
        expect(status >= 400 && status < 500, `${label}: ${answer.slice(0, 300)}`).to.equal(true);
      }
      expect((await fetch(`${relayer.url}/healthz`)).status).to.equal(200);
    });

    // Found by this suite (fixed): what Node's HTTP parser refuses before Fastify routes it (bad
    // request lines, oversized headers, conflicting lengths) and HTTP/1.1 without Host got Fastify's
    // or Node's own answer; the server's clientErrorHandler and an onRequest hook now give the API's.
    it("answers HTTP it cannot parse with the API's error body { error: { code, message, details } }", async () => {
      const long = await fetch(`${relayer.url}/v1/payments/${"a".repeat(20_000)}`);
      expect(long.status).to.equal(431);
      const body = (await long.json()) as Json;
      expect(body.error).to.be.an("object");
      expect(body.error.code).to.be.a("string");
      expect(body.error.message).to.be.a("string").and.not.equal("");
      expect(body.error.details).to.be.an("object");
      for (const bytes of ["GARBAGE\r\n\r\n", "GET /healthz HTTP/1.1\r\n\r\n"]) {
        const answer = await rawRequest(bytes);
        const json = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
        expect(json.error, answer).to.be.an("object");
        expect(json.error.code, answer).to.be.a("string");
      }
    });

    it("settles the control items and none of the refused ones: the chain's events hold exactly the controls", async () => {
      expect(stats.cases).to.be.at.least(10_000);
      const settle = await fetch(`${relayer.url}/v1/settle`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(settle.status).to.equal(200);
      for (const p of controls.payments) await waitFor(`/v1/payments/${p.id}`, ["settled"]);
      for (const v of controls.vouchers) await waitFor(`/v1/vouchers/${v.id}`, ["settled"]);

      const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
      const settled = settlementsOf(logs as never, chain.deployment.machinePay);
      const payments = settled.filter((s) => s.eventName === "PaymentSettled") as Json[];
      const vouchers = settled.filter((s) => s.eventName === "VoucherSettled") as Json[];
      for (const s of payments) expect(refused.refs.has(lc(s.ref)), `refused ref ${s.ref} settled`).to.equal(false);
      for (const s of vouchers) {
        expect(refused.tabs.has(`${lc(s.device)}:${s.tabId}`), `refused tab ${s.tabId} settled`).to.equal(false);
      }
      const key = (d: string, ref: string, amount: bigint, nonce: bigint) => `${lc(d)}:${lc(ref)}:${amount}:${nonce}`;
      expect(payments.map((s) => key(s.device, s.ref, s.amount, s.nonce)).sort()).to.deep.equal(
        controls.payments.map((p) => key(p.device, p.ref, p.amount, p.nonce)).sort(),
      );
      expect(vouchers.map((s) => `${lc(s.device)}:${s.tabId}:${s.cumulative}`)).to.deep.equal([
        `${lc(world.control[0].address)}:${CONTROL_TAB}:${CONTROL_CUMULATIVE}`,
      ]);

      // No refused owner message bound or revoked a key: only set-up devices and the control onboarding's.
      const events = logs.map((l) => decodeMachinePayLog(l as never)).filter((e) => e !== undefined) as Json[];
      const assigned = events.filter((e) => e.eventName === "DeviceAssigned").map((e) => lc(String(e.args.device)));
      expect(assigned).to.include(lc(deviceX.address));
      for (const d of assigned)
        expect([...world.registered, lc(deviceX.address)], `device ${d} was bound`).to.include(d);
      const revoked = events
        .filter((e) => e.eventName === "DeviceRevokedForever")
        .map((e) => lc(String(e.args.device)));
      expect(revoked).to.deep.equal([lc(world.refused.DeviceRevoked.device.address)]);
      const control = await chain.client.readContract({
        address: chain.deployment.machinePay,
        abi: machinePayAbi,
        functionName: "getDevice",
        args: [world.control[0].address],
      });
      expect(Number(control.policyId)).to.equal(controls.controlPolicy);

      // The relayer accepted the controls and nothing else, mispredicted nothing and answered no 5xx.
      const accepted = await metric("machinepay_items_accepted_total");
      expect(accepted.get('{kind="payment"}')).to.equal(controls.payments.length);
      expect(accepted.get('{kind="voucher"}')).to.equal(controls.vouchers.length);
      expect(
        [...(await metric("machinepay_ingest_mispredictions_total")).values()].reduce((a, b) => a + b, 0),
      ).to.equal(0);
      const fivexx = [...(await metric("machinepay_http_requests_total")).entries()].filter(([l]) =>
        /status="5/.test(l),
      );
      expect(fivexx).to.deep.equal([]);

      // Refused items were never stored: a sample of their ids is unknown to the relayer.
      const ids = [...refused.ids];
      for (let i = 0; i < ids.length; i += Math.max(1, Math.floor(ids.length / 300))) {
        const [id, kind] = ids[i];
        const res = await fetch(`${relayer.url}/v1/${kind}s/${id}`);
        expect(res.status, `refused ${kind} ${id} is stored: ${await res.text()}`).to.equal(404);
      }
    });

    it("still serves after everything: /healthz, /readyz", async () => {
      const health = await fetch(`${relayer.url}/healthz`);
      expect(health.status).to.equal(200);
      expect(await health.json()).to.deep.equal({ ok: true });
      const ready = await fetch(`${relayer.url}/readyz`);
      expect(ready.status, await ready.clone().text()).to.equal(200);
    });

    it("wrote no private key, admin token or passphrase to its log", () => {
      // Requests refused before routing (414, 431, framing) have no request line: most do.
      const requests = logLines.filter((l) => l.includes('"msg":"request"'));
      expect(requests.length).to.be.at.least(stats.cases * 0.95);
      expect(
        logLines.filter((l) => l.includes('"msg":"request failed"')),
        "a request failed with a 5xx",
      ).to.deep.equal([]);
      const text = logLines.join("\n").toLowerCase();
      for (const secret of [ADMIN_TOKEN, PASSPHRASE]) {
        expect(text.includes(secret.toLowerCase()), "a secret is in the log").to.equal(false);
      }
      // Every 64-hex-digit window of the log, so a key inside a longer hex string is found too.
      const windows = new Set<string>();
      for (const run of text.match(/[0-9a-f]{64,}/g) ?? []) {
        for (let i = 0; i + 64 <= run.length; i++) windows.add(run.slice(i, i + 64));
      }
      const keys: Hex[] = [
        ...HARDHAT_KEYS,
        ...world.secrets,
        ...pool.map((k) => k.key),
        ...attackers.map((k) => k.key),
        ownerX.key,
        deviceX.key,
        ...generatedKeys,
      ];
      expect(keys.length).to.be.above(50);
      const leaked = keys.filter((k) => windows.has(k.slice(2).toLowerCase()));
      expect(leaked.length, "private keys in the log").to.equal(0);
    });
  });
