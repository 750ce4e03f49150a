/**
 * The demo's summary: what devices signed and the relayer answered (the scenarios' counters), what
 * settled or was skipped (the contract's events), batches and gas (GET /v1/batches, cross-checked
 * with BatchSettled events), and the baselines one payment per transaction would cost, measured on
 * the same node with MockUSDC: an ERC-20 transfer to an existing and to a new holder, and an
 * EIP-3009 transferWithAuthorization (how x402 settles).
 */
import { randomBytes } from "node:crypto";
import { type Hex, parseSignature } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import type { BatchInfo } from "../../sdk/src";
import { mockUsdcAbi } from "../lib/deploy-local";
import type { ScenarioResult } from "./context";
import type { ChainEvents } from "./events";
import type { DemoEnvironment } from "./harness";

export type Baselines = { transferExisting: bigint; transferNew: bigint; transferWithAuthorization: bigint };

export type Summary = {
  signed: number;
  paymentsSigned: number;
  vouchersSigned: number;
  accepted: number;
  rejected: Map<string, number>;
  stale: number;
  paymentsSettled: number;
  vouchersSettled: number;
  /** Vouchers accepted: each a payment the device made; only its tab's newest settles. */
  vouchersAccepted: number;
  skipped: Map<string, number>;
  /** Accepted items the relayer's preview dropped before sending (metrics minus on-chain skips). */
  droppedAtPreview: number;
  batches: { payment: number; voucher: number; onboarding: number; revocation: number; notConfirmed: number };
  batchSettledEvents: number;
  gas: { payment: bigint; voucher: bigint; owner: bigint; total: bigint };
  baselines: Baselines;
  queueLeft: number;
  payingMs: number;
  wallMs: number;
};

/** Every batch the relayer made (GET /v1/batches, all pages). */
export async function allBatches(env: DemoEnvironment): Promise<BatchInfo[]> {
  const out: BatchInfo[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await env.relayer.batches({ limit: 500, after });
    out.push(...page.batches);
    if (!page.next) return out;
    after = page.next;
  }
}

/** Gas of one transaction per payment, on this node with MockUSDC (the household owner holds USDC). */
export async function measureBaselines(env: DemoEnvironment): Promise<Baselines> {
  const holder = env.owners.household;
  const submitter = env.owners.sharing;
  const usdcAbi = mockUsdcAbi();
  const fresh = privateKeyToAccount(generatePrivateKey()).address;
  const gasOf = async (hash: Hex) => (await env.client.waitForTransactionReceipt({ hash })).gasUsed;
  const transfer = (to: `0x${string}`) =>
    holder.wallet.writeContract({
      address: env.token,
      abi: usdcAbi,
      functionName: "transfer",
      args: [to, 1_000n],
      chain: holder.wallet.chain,
      account: holder.account,
    });
  // The holder holds USDC whichever way the set-up went (anyone may mint MockUSDC).
  await gasOf(
    await holder.wallet.writeContract({
      address: env.token,
      abi: usdcAbi,
      functionName: "mint",
      args: [holder.address, 1_000_000n],
      chain: holder.wallet.chain,
      account: holder.account,
    }),
  );
  const transferNew = await gasOf(await transfer(fresh));
  const transferExisting = await gasOf(await transfer(fresh));
  const validBefore = BigInt(Math.floor(Date.now() / 1000) + 3_600_000);
  const nonce = `0x${randomBytes(32).toString("hex")}` as Hex;
  const signature = await holder.account.signTypedData({
    domain: { name: "USD Coin", version: "1", chainId: env.deployment.chainId, verifyingContract: env.token },
    types: {
      TransferWithAuthorization: [
        { name: "from", type: "address" },
        { name: "to", type: "address" },
        { name: "value", type: "uint256" },
        { name: "validAfter", type: "uint256" },
        { name: "validBefore", type: "uint256" },
        { name: "nonce", type: "bytes32" },
      ],
    },
    primaryType: "TransferWithAuthorization",
    message: { from: holder.address, to: fresh, value: 1_000n, validAfter: 0n, validBefore, nonce },
  });
  const { r, s, v } = parseSignature(signature);
  const transferWithAuthorization = await gasOf(
    await submitter.wallet.writeContract({
      address: env.token,
      abi: usdcAbi,
      functionName: "transferWithAuthorization",
      args: [holder.address, fresh, 1_000n, 0n, validBefore, nonce, Number(v), r, s],
      chain: submitter.wallet.chain,
      account: submitter.account,
    }),
  );
  return { transferExisting, transferNew, transferWithAuthorization };
}

async function mispredictions(env: DemoEnvironment): Promise<number> {
  const text = await (await fetch(`${env.relayerUrl}/metrics`)).text();
  let n = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("machinepay_ingest_mispredictions_total")) n += Number(line.split(" ").pop());
  }
  return n;
}

export async function collectSummary(
  env: DemoEnvironment,
  events: ChainEvents,
  results: ScenarioResult<unknown>[],
  wallMs: number,
  baselines: Baselines,
): Promise<Summary> {
  await events.sync();
  const rejected = new Map<string, number>();
  let signed = 0;
  let accepted = 0;
  let stale = 0;
  let payingMs = 0;
  for (const r of results) {
    signed += r.tally.signed;
    accepted += r.tally.accepted;
    stale += r.tally.stale;
    for (const [k, v] of r.tally.rejected) rejected.set(k, (rejected.get(k) ?? 0) + v);
    if (r.tally.firstSubmitAt && r.tally.lastSettledAt) payingMs += r.tally.lastSettledAt - r.tally.firstSubmitAt;
  }
  const batches = await allBatches(env);
  const count = { payment: 0, voucher: 0, onboarding: 0, revocation: 0, notConfirmed: 0 };
  const gas = { payment: 0n, voucher: 0n, owner: 0n, total: 0n };
  for (const b of batches) {
    count[b.kind]++;
    if (b.status !== "confirmed") count.notConfirmed++;
    const used = BigInt(b.gasUsed ?? 0);
    if (b.kind === "payment") gas.payment += used;
    else if (b.kind === "voucher") gas.voucher += used;
    else gas.owner += used;
    gas.total += used;
  }
  const skipped = new Map<string, number>();
  for (const s of events.skipped()) skipped.set(s.reason, (skipped.get(s.reason) ?? 0) + 1);
  const skippedTotal = [...skipped.values()].reduce((a, b) => a + b, 0);
  const health = await env.relayer.health();
  const queueLeft = Object.values(health.queue ?? {}).reduce((a, b) => a + b, 0);
  const vouchersSigned = results.reduce((n, r) => n + r.tally.vouchersSigned, 0);
  const vouchersAccepted = results.reduce((n, r) => n + r.tally.vouchersAccepted, 0);
  return {
    signed,
    paymentsSigned: signed - vouchersSigned,
    vouchersSigned,
    accepted,
    rejected,
    stale,
    paymentsSettled: events.payments().length,
    vouchersSettled: events.vouchers().length,
    vouchersAccepted,
    skipped,
    droppedAtPreview: Math.max(0, (await mispredictions(env)) - skippedTotal),
    batches: count,
    batchSettledEvents: events.named("BatchSettled").length,
    gas,
    baselines,
    queueLeft,
    payingMs,
    wallMs,
  };
}

const int = (n: number | bigint) => Number(n).toLocaleString("en-US");
const reasons = (m: Map<string, number>) =>
  m.size === 0
    ? "0"
    : `${int([...m.values()].reduce((a, b) => a + b, 0))} (${[...m]
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${int(v)}`)
        .join(", ")})`;

/** The summary as a markdown table (the README pastes one). */
export function formatSummary(s: Summary): string[] {
  const covered = s.paymentsSettled + s.vouchersAccepted;
  const settlementGas = s.gas.payment + s.gas.voucher;
  const perPayment = s.paymentsSettled ? Number(s.gas.payment) / s.paymentsSettled : 0;
  const perCovered = covered ? Number(settlementGas) / covered : 0;
  const x = (baseline: bigint) => (perCovered ? `${(Number(baseline) / perCovered).toFixed(1)}x ours` : "-");
  const settlementBatches = s.batches.payment + s.batches.voucher;
  const rows: [string, string][] = [
    [
      "payments signed by devices",
      `${int(s.signed)} (${int(s.paymentsSigned)} payments, ${int(s.vouchersSigned)} tab vouchers)`,
    ],
    ["accepted by the relayer", int(s.accepted)],
    ["rejected at ingest, by reason", reasons(s.rejected)],
    [
      "settled on chain (events)",
      `${int(s.paymentsSettled)} payments, ${int(s.vouchersSettled)} vouchers (each tab's newest, paying for all ${int(s.vouchersAccepted)} accepted)`,
    ],
    ["skipped on chain, by reason", reasons(s.skipped)],
    ["dropped by the relayer's preview after acceptance", int(s.droppedAtPreview)],
    [
      "batches (GET /v1/batches)",
      `${int(settlementBatches)} settlement (${int(s.batches.payment)} payment, ${int(s.batches.voucher)} voucher; ${int(s.batchSettledEvents)} BatchSettled events) + ${int(s.batches.onboarding)} onboarding`,
    ],
    [
      "total gas of the relayer's transactions",
      `${int(s.gas.total)} (settlement ${int(settlementGas)}, onboarding ${int(s.gas.owner)})`,
    ],
    ["gas per settled payment (payment batches)", int(Math.round(perPayment))],
    [
      "gas per payment, tab vouchers counted",
      `${int(Math.round(perCovered))} (${int(settlementGas)} / ${int(covered)})`,
    ],
    [
      "one ERC-20 transfer per payment, existing holder",
      `${int(s.baselines.transferExisting)} gas (${x(s.baselines.transferExisting)})`,
    ],
    [
      "one ERC-20 transfer per payment, new holder",
      `${int(s.baselines.transferNew)} gas (${x(s.baselines.transferNew)})`,
    ],
    [
      "one EIP-3009 transferWithAuthorization per payment",
      `${int(s.baselines.transferWithAuthorization)} gas (${x(s.baselines.transferWithAuthorization)})`,
    ],
    [
      "payments per second, signed → settled",
      `${s.payingMs ? ((covered / s.payingMs) * 1000).toFixed(0) : "-"} (${int(covered)} in ${(s.payingMs / 1000).toFixed(1)} s of paying phases)`,
    ],
    ["left in the relayer's queue", int(s.queueLeft)],
    ["wall time", `${(s.wallMs / 1000).toFixed(1)} s`],
  ];
  return ["| what | this run |", "| --- | --- |", ...rows.map(([k, v]) => `| ${k} | ${v} |`)];
}

/** One row per scenario: devices, what was signed, accepted, refused, settled, and its checks. */
export function formatScenarios(results: ScenarioResult<unknown>[]): string[] {
  const lines = [
    "| scenario | devices | signed | accepted | refused at ingest | checks |",
    "| --- | ---: | ---: | ---: | --- | --- |",
  ];
  for (const r of results) {
    const ok = r.checks.filter((c) => c.ok).length;
    lines.push(
      `| ${r.name} | ${int(r.devices)} | ${int(r.tally.signed)} | ${int(r.tally.accepted)} | ${reasons(r.tally.rejected)} | ${ok}/${r.checks.length} ${ok === r.checks.length ? "pass" : "FAIL"} |`,
    );
  }
  return lines;
}
