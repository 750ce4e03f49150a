/**
 * The relayer end to end against a real `hardhat node`: payments and vouchers posted over HTTP are
 * accepted, batched, settled on chain (proved from the contract's events) and reported `settled`.
 */
import { join } from "node:path";
import {
  decodeMachinePayLog,
  type Hex,
  machinePayAbi,
  type Onboarding,
  onboardingTypes,
  type Payment,
  type Revocation,
  revocationTypes,
  settlementsOf,
  signEnrollment,
  signPayment,
  signTypedMessage,
  signVoucher,
  toOnboardingJson,
  toRevocationJson,
  toSignedPaymentJson,
  type Voucher,
} from "@machinepay/sdk";
import { expect } from "chai";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { loadConfig } from "../src/config";
import { type RunningRelayer, startRelayer } from "../src/service";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";
import { newSchema, requirePostgres } from "./support/postgres";

const ZERO_REF = `0x${"00".repeat(32)}` as Hex;

// The same tests on each backend.
for (const backend of ["SQLite", "PostgreSQL"] as const)
  describe(`relayer end to end (hardhat node, ${backend}, HTTP)`, function () {
    this.timeout(120_000);
    let chain: TestChain;
    let relayer: RunningRelayer;

    before(async function () {
      const url = backend === "SQLite" ? undefined : (await newSchema(await requirePostgres(this))).url;
      chain = await startTestChain();
      const config = loadConfig({
        overrides: {
          rpcUrl: chain.node.url,
          deployment: chain.deploymentFile,
          store: url ?? join(chain.dir, "relayer.db"),
          port: 0,
          "sender.dev": true,
          confirmations: 1,
          "batch.maxAgeMs": 300,
          "batch.pollMs": 50,
          // Vouchers wait for POST /v1/settle here, so a newer one always finds the older still pending.
          "tabs.threshold": "100000000000",
          "tabs.maxAgeMs": 600_000,
          logLevel: "silent",
          adminToken: "test-admin-token-0123456789",
        },
      });
      relayer = await startRelayer({ config });
    });

    after(async () => {
      await relayer?.stop(2_000);
      await chain?.stop();
    });

    const now = async () => (await chain.client.getBlock()).timestamp;

    async function signed(device: PrivateKeyAccount, p: Partial<Payment> & { nonce: bigint }) {
      const payment: Payment = {
        payee: PAYEES[0],
        token: chain.usdc,
        amount: USDC(1),
        deadline: (await now()) + 600n,
        maxFee: 0n,
        ref: ZERO_REF,
        ...p,
      };
      return toSignedPaymentJson(payment, await signPayment({ signer: device, domain: chain.domain, payment }));
    }

    async function post(path: string, body: unknown) {
      const res = await fetch(`${relayer.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    }

    async function waitFor(id: Hex, statuses: string[], path = "payments", timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const res = await fetch(`${relayer.url}/v1/${path}/${id}`);
        const body = (await res.json()) as { status: string };
        if (statuses.includes(body.status)) return body;
        if (Date.now() > until) throw new Error(`${id} still ${body.status}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    async function settledOnChain() {
      const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
      return settlementsOf(logs as never, chain.deployment.machinePay);
    }

    it("accepts, batches and settles payments; each ends `settled`, matched by its PaymentSettled event", async () => {
      const { devices } = await chain.fleet(5);
      const items = await Promise.all(
        devices.flatMap((d, i) =>
          [0n, 1n].map((nonce) => signed(d, { nonce, amount: USDC(1) + BigInt(i), payee: PAYEES[i % 3] })),
        ),
      );
      const { status, body } = await post("/v1/payments", { payments: items });
      expect(status).to.equal(200);
      const results = body.results as { id: Hex; status: string }[];
      expect(results.map((r) => r.status)).to.deep.equal(items.map(() => "accepted"));
      for (const r of results) await waitFor(r.id, ["settled"]);
      const onChain = await settledOnChain();
      for (const [i, d] of devices.entries()) {
        const mine = onChain.filter(
          (s) => s.eventName === "PaymentSettled" && s.device.toLowerCase() === d.address.toLowerCase(),
        );
        expect(mine.map((s) => (s as { nonce: bigint }).nonce).sort()).to.deep.equal([0n, 1n]);
        for (const s of mine) {
          expect((s as { amount: bigint }).amount).to.equal(USDC(1) + BigInt(i));
          expect(s.token.toLowerCase()).to.equal(chain.usdc.toLowerCase());
        }
      }
    });

    it("a device's 60 payments to three payees in one batch all settle: the batch keeps its replay window", async () => {
      // Ordered by payee alone, nonce 1 (payee B) would follow nonce 57 (payee A): NonceTooOld.
      const { devices } = await chain.fleet(1, { maxPerPeriod: USDC(1_000) });
      const payments = await Promise.all(
        Array.from({ length: 60 }, (_, n) => signed(devices[0], { nonce: BigInt(n), payee: PAYEES[n % 3] })),
      );
      const res = await post("/v1/payments", { payments });
      const ids = (res.body.results as { id: Hex; status: string }[]).map((r) => {
        expect(r.status).to.equal("accepted");
        return r.id;
      });
      for (const id of ids) expect((await waitFor(id, ["settled", "rejected"])).status).to.equal("settled");
    });

    it("refuses at ingest the second of two payments that each fit the period cap but not together", async () => {
      const { devices } = await chain.fleet(1, { maxPerPeriod: USDC(15), maxPerPayment: USDC(10) });
      const [a, b] = await Promise.all([
        signed(devices[0], { nonce: 0n, amount: USDC(8) }),
        signed(devices[0], { nonce: 1n, amount: USDC(8) }),
      ]);
      const first = await post("/v1/payments", { payments: [a] });
      const second = await post("/v1/payments", { payments: [b] });
      expect((first.body.results as { status: string }[])[0].status).to.equal("accepted");
      const r2 = (second.body.results as { status: string; reason: string }[])[0];
      expect(r2.status).to.equal("rejected");
      expect(r2.reason).to.equal("ExceedsPeriodCap");
    });

    it("answers a signed payment posted many times at once with one id and stores it once", async () => {
      const { devices } = await chain.fleet(1);
      const item = await signed(devices[0], { nonce: 0n });
      const answers = await Promise.all(Array.from({ length: 20 }, () => post("/v1/payments", { payments: [item] })));
      const ids = new Set(answers.map((a) => (a.body.results as { id: Hex }[])[0].id));
      expect(ids.size).to.equal(1);
      const [id] = [...ids];
      await waitFor(id, ["settled"]);
      const onChain = await settledOnChain();
      expect(onChain.filter((s) => s.device.toLowerCase() === devices[0].address.toLowerCase())).to.have.length(1);
      // Sent again once settled (its nonce is used now, so the rules alone would refuse it): the
      // stored row answers, with the same id, and nothing new is stored or settled.
      const late = await post("/v1/payments", { payments: [item] });
      expect((late.body.results as unknown[])[0]).to.deep.equal({
        id,
        kind: "payment",
        status: "settled",
        duplicate: true,
      });
      await new Promise((r) => setTimeout(r, 1_000));
      const after = await settledOnChain();
      expect(after.filter((s) => s.device.toLowerCase() === devices[0].address.toLowerCase())).to.have.length(1);
    });

    it("two devices signing the very same payment message are two payments, and both settle", async () => {
      const { devices } = await chain.fleet(2);
      const deadline = (await now()) + 600n;
      const [x, y] = await Promise.all(devices.map((d) => signed(d, { nonce: 0n, deadline })));
      expect(x.payment).to.deep.equal(y.payment);
      const { body } = await post("/v1/payments", { payments: [x, y] });
      const results = body.results as { id: Hex; status: string; duplicate?: boolean }[];
      expect(results.map((r) => r.status)).to.deep.equal(["accepted", "accepted"]);
      expect(results[0].id).to.not.equal(results[1].id);
      for (const r of results) await waitFor(r.id, ["settled"]);
      const settled = (await settledOnChain()).filter((s) =>
        devices.some((d) => d.address.toLowerCase() === s.device.toLowerCase()),
      );
      expect(settled).to.have.length(2);
    });

    it("a newer voucher supersedes the pending one, an older one is stale, and only the newest settles", async () => {
      const { devices } = await chain.fleet(1);
      const device = devices[0];
      const deadline = (await now()) + 3_600n;
      const voucher = async (cumulative: bigint) => {
        const v: Voucher = { payee: PAYEES[1], token: chain.usdc, tabId: 7n, cumulative, deadline, maxFee: 0n };
        const signature = await signVoucher({ signer: device, domain: chain.domain, voucher: v });
        return {
          voucher: { ...v, tabId: "7", cumulative: cumulative.toString(), deadline: deadline.toString(), maxFee: "0" },
          signature,
        };
      };
      const v1 = await post("/v1/vouchers", { vouchers: [await voucher(USDC(1))] });
      const v2 = await post("/v1/vouchers", { vouchers: [await voucher(USDC(3))] });
      const old = await post("/v1/vouchers", { vouchers: [await voucher(USDC(2))] });
      const id1 = (v1.body.results as { id: Hex }[])[0].id;
      const id2 = (v2.body.results as { id: Hex; status: string }[])[0].id;
      expect((v2.body.results as { status: string }[])[0].status).to.equal("accepted");
      const stale = (old.body.results as { status: string; newest: string }[])[0];
      expect(stale.status).to.equal("stale");
      expect(stale.newest).to.equal(USDC(3).toString());
      await fetch(`${relayer.url}/v1/settle`, {
        method: "POST",
        headers: { authorization: "Bearer test-admin-token-0123456789" },
      });
      await waitFor(id2, ["settled"], "vouchers", 90_000);
      expect((await waitFor(id1, ["superseded"], "vouchers")).status).to.equal("superseded");
      const tab = await chain.client.readContract({
        address: chain.deployment.machinePay,
        abi: machinePayAbi,
        functionName: "getTab",
        args: [device.address, PAYEES[1], chain.usdc, 7n],
      });
      expect(tab.settled).to.equal(USDC(3));
      const vs = (await settledOnChain()).filter(
        (s) => s.eventName === "VoucherSettled" && s.device.toLowerCase() === device.address.toLowerCase(),
      );
      expect(vs).to.have.length(1);
    });

    it("onboards a fleet and revokes a device through the API: the owner signs, the relayer pays the gas", async () => {
      // A brand-new owner with no ether at all: only the relayer's sender pays gas.
      const owner = privateKeyToAccount(generatePrivateKey());
      const devices = Array.from({ length: 3 }, () => privateKeyToAccount(generatePrivateKey()));
      const proofs = await Promise.all(
        devices.map((d) => signEnrollment({ signer: d, domain: chain.domain, owner: owner.address })),
      );
      const onboarding: Onboarding = {
        owner: owner.address,
        policyId: 0,
        policy: {
          token: chain.usdc,
          maxPerPayment: USDC(1),
          maxPerPeriod: USDC(10),
          periodLength: 86_400,
          lifetimeMax: USDC(100),
          validFrom: 0,
          validUntil: 0,
          payeesRestricted: false,
        },
        devices: devices.map((d) => d.address),
        epoch: 0,
        nonce: 1n,
        deadline: (await now()) + 3_600n,
      };
      const sign = (types: object, primaryType: string, message: object) =>
        signTypedMessage({
          signer: owner,
          domain: chain.domain,
          types: types as never,
          primaryType,
          message: message as never,
        });
      const body = toOnboardingJson(onboarding, proofs, await sign(onboardingTypes, "Onboarding", onboarding));

      // Refused before anything is sent: a proof from the wrong key names the device.
      const forged = { ...body, proofs: [proofs[1], proofs[1], proofs[2]] };
      const bad = await post("/v1/onboardings", forged);
      expect(bad.status).to.equal(422);
      const err = bad.body.error as { code: string; message: string; details: { error: string } };
      expect(err.code).to.equal("OWNER_MESSAGE_INVALID");
      expect(err.details.error).to.equal("InvalidEnrollment");
      expect(err.message).to.contain("devices[0]");

      const [a, b] = await Promise.all([post("/v1/onboardings", body), post("/v1/onboardings", body)]);
      expect(a.status).to.equal(202);
      expect(b.status).to.equal(202);
      expect(b.body.id).to.equal(a.body.id);
      const done = (await waitFor(a.body.id as Hex, ["confirmed", "failed"], "onboardings")) as {
        status: string;
        txHash: Hex;
      };
      expect(done.status).to.equal("confirmed");
      const receipt = await chain.client.getTransactionReceipt({ hash: done.txHash });
      const assigned = receipt.logs
        .map((l) => decodeMachinePayLog(l as never))
        .filter((e) => e?.eventName === "DeviceAssigned")
        .map((e) => String((e as { args: Record<string, unknown> }).args.device).toLowerCase());
      expect(assigned).to.have.members(devices.map((d) => d.address.toLowerCase()));
      // Its batch is listed, with no items, pointing at the message.
      const batches = (await (await fetch(`${relayer.url}/v1/batches?limit=5`)).json()) as {
        batches: { kind: string; messageId: Hex | null; itemCount: number }[];
      };
      expect(batches.batches.find((x) => x.messageId === a.body.id)).to.include({ kind: "onboarding", itemCount: 0 });
      // Re-sending after it landed still answers the same message, not a second transaction.
      const again = await post("/v1/onboardings", body);
      expect(again.body).to.deep.include({ id: a.body.id, status: "confirmed" });
      // The same owner nonce in another message is refused with the contract's reason.
      const reuse = { ...onboarding, devices: [devices[0].address] };
      const reused = await post(
        "/v1/onboardings",
        toOnboardingJson(reuse, [proofs[0]], await sign(onboardingTypes, "Onboarding", reuse)),
      );
      expect(reused.status).to.equal(422);
      expect((reused.body.error as { details: { error: string } }).details.error).to.equal("OwnerNonceUsed");

      const revocation: Revocation = {
        owner: owner.address,
        devices: [devices[2].address],
        epoch: 0,
        nonce: 2n,
        deadline: (await now()) + 3_600n,
      };
      const r = await post(
        "/v1/revocations",
        toRevocationJson(revocation, await sign(revocationTypes, "Revocation", revocation)),
      );
      expect(r.status).to.equal(202);
      const revoked = (await waitFor(r.body.id as Hex, ["confirmed", "failed"], "revocations")) as {
        status: string;
        txHash: Hex;
      };
      expect(revoked.status).to.equal("confirmed");
      const logs = (await chain.client.getTransactionReceipt({ hash: revoked.txHash })).logs.map((l) =>
        decodeMachinePayLog(l as never),
      );
      expect(logs.some((e) => e?.eventName === "DeviceRevokedForever")).to.equal(true);
      // The revoked device's payment is refused at ingest.
      const pay = await post("/v1/payments", { payments: [await signed(devices[2], { nonce: 0n, amount: 1n })] });
      expect((pay.body.results as { status: string; reason: string }[])[0]).to.include({
        status: "rejected",
        reason: "DeviceRevoked",
      });
    });

    it("settles a tab's pending voucher at once when the tab starts closing (TabClosing), not at its age", async () => {
      const { devices } = await chain.fleet(1);
      const device = devices[0];
      const v: Voucher = {
        payee: PAYEES[1],
        token: chain.usdc,
        tabId: 9n,
        cumulative: USDC(2),
        deadline: (await now()) + 3_600n,
        maxFee: 0n,
      };
      const signature = await signVoucher({ signer: device, domain: chain.domain, voucher: v });
      const body = {
        voucher: {
          ...v,
          tabId: "9",
          cumulative: v.cumulative.toString(),
          deadline: v.deadline.toString(),
          maxFee: "0",
        },
        signature,
      };
      const res = await post("/v1/vouchers", { vouchers: [body] });
      const id = (res.body.results as { id: Hex; status: string }[])[0].id;
      // Threshold and age are far away in this suite's config: nothing would batch it for minutes.
      await new Promise((r) => setTimeout(r, 500));
      expect((await waitFor(id, ["accepted"], "vouchers")).status).to.equal("accepted");
      // The owner closes the tab: vouchers settle until closesAt (now + notice period), then never.
      // (A payee's close takes effect at once: it gives up what is unsettled.)
      await chain.ownerCall("closeTab", [device.address, PAYEES[1], chain.usdc, 9n]);
      await waitFor(id, ["settled"], "vouchers", 30_000);
      const tab = await chain.client.readContract({
        address: chain.deployment.machinePay,
        abi: machinePayAbi,
        functionName: "getTab",
        args: [device.address, PAYEES[1], chain.usdc, 9n],
      });
      expect(tab.settled).to.equal(USDC(2));
      expect(tab.closesAt).to.not.equal(0);
    });
  });
