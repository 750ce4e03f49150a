/**
 * A relayer process killed with SIGKILL mid-queue and restarted on the same SQLite file loses no
 * accepted payment and settles none twice (checked against the chain's PaymentSettled events).
 * The reliability issue extends this to hundreds of kills at named stages.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Hex, type Payment, settlementsOf, signPayment, toSignedPaymentJson } from "@machinepay/sdk";
import { expect } from "chai";
import { freePort, stopProcess } from "../../scripts/lib/hardhat-node";
import { PAYEES, startTestChain, type TestChain, USDC } from "./support/chain";

const BIN = join(__dirname, "..", "bin", "machinepay.js");

describe("relayer crash safety (SIGKILL mid-queue, restart)", function () {
  this.timeout(240_000);
  let chain: TestChain;
  let child: ChildProcess | undefined;

  before(async () => {
    chain = await startTestChain();
  });
  after(async () => {
    if (child) await stopProcess(child);
    await chain?.stop();
  });

  async function startChild(configFile: string, port: number): Promise<ChildProcess> {
    const p = spawn(process.execPath, [BIN, "relayer", "start", "--config", configFile], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout!.on("data", (c) => (out += c));
    p.stderr!.on("data", (c) => (out += c));
    const until = Date.now() + 60_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`relayer exited ${p.exitCode}:\n${out}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`);
        if (res.ok) return p;
      } catch {
        // not listening yet
      }
      if (Date.now() > until) throw new Error(`relayer did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it("loses nothing and settles nothing twice across a SIGKILL", async () => {
    const port = await freePort();
    const configFile = join(chain.dir, "relayer.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        rpcUrl: chain.node.url,
        deployment: chain.deploymentFile,
        store: join(chain.dir, "crash.db"),
        port,
        sender: { dev: true },
        confirmations: 1,
        batch: { maxAgeMs: 150, pollMs: 30, maxItems: 40 },
        logLevel: "warn",
      }),
    );
    const { devices } = await chain.fleet(20);
    const deadline = (await chain.client.getBlock()).timestamp + 3_600n;
    const all: ReturnType<typeof toSignedPaymentJson>[] = [];
    for (let nonce = 0n; nonce < 10n; nonce++) {
      for (const d of devices) {
        const payment: Payment = {
          payee: PAYEES[Number(nonce) % 3],
          token: chain.usdc,
          amount: USDC(0.01),
          nonce,
          deadline,
          maxFee: 0n,
          ref: `0x${(Number(nonce) + 1).toString(16).padStart(64, "0")}` as Hex,
        };
        all.push(toSignedPaymentJson(payment, await signPayment({ signer: d, domain: chain.domain, payment })));
      }
    }
    const accepted = new Set<Hex>();
    const postChunk = async (chunk: typeof all) => {
      const res = await fetch(`http://127.0.0.1:${port}/v1/payments`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payments: chunk }),
      });
      const body = (await res.json()) as { results: { id: Hex; status: string; reason?: string }[] };
      body.results.forEach((r) => {
        if (r.status !== "rejected") accepted.add(r.id);
      });
    };

    child = await startChild(configFile, port);
    // Stream the first half, then kill the process while its batches are in flight.
    const half = all.length / 2;
    const sending = (async () => {
      for (let i = 0; i < half; i += 10) await postChunk(all.slice(i, i + 10)).catch(() => undefined);
    })();
    await new Promise((r) => setTimeout(r, 400));
    child.kill("SIGKILL");
    await new Promise((r) => child!.once("exit", r));
    await sending;
    const acceptedBeforeKill = accepted.size;

    child = await startChild(configFile, port);
    // Re-send everything (idempotent: the first half answers with its stored status), then the rest.
    for (let i = 0; i < all.length; i += 20) await postChunk(all.slice(i, i + 20));
    const ids = [...accepted];
    const until = Date.now() + 120_000;
    for (;;) {
      const statuses = await Promise.all(
        ids.map(
          async (id) =>
            ((await (await fetch(`http://127.0.0.1:${port}/v1/payments/${id}`)).json()) as { status: string }).status,
        ),
      );
      if (statuses.every((s) => s === "settled")) break;
      if (Date.now() > until)
        throw new Error(`not all settled: ${JSON.stringify(statuses.filter((s) => s !== "settled"))}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    await stopProcess(child);
    child = undefined;

    const logs = await chain.client.getLogs({ address: chain.deployment.machinePay, fromBlock: 0n });
    const settled = settlementsOf(logs as never, chain.deployment.machinePay).filter(
      (s) => s.eventName === "PaymentSettled",
    );
    const mine = new Set(devices.map((d) => d.address.toLowerCase()));
    const keys = settled
      .filter((s) => mine.has(s.device.toLowerCase()))
      .map((s) => `${s.device.toLowerCase()}:${(s as { nonce: bigint }).nonce}`);
    expect(new Set(keys).size, "a payment settled twice").to.equal(keys.length);
    expect(keys.length, "every accepted payment settled").to.equal(all.length);
    expect(accepted.size).to.equal(all.length);
    expect(acceptedBeforeKill).to.be.greaterThan(0);
  });
});
