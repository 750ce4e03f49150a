/**
 * What a scenario gets (the chain, the relayer, funded owners, sizes, a progress reporter) and the
 * helpers every scenario uses: owners' transactions (policies, payee allow-lists, device
 * registration split to fit the per-transaction gas cap), devices signing with the SDK, submission
 * over the relayer's HTTP API with counters, and waiting until the contract's events show that
 * what was accepted settled.
 */
import { keccak256, type PublicClient, parseEventLogs, stringToHex, type TransactionReceipt } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import {
  type Address,
  DevicePayer,
  type Hex,
  type MachinePayDomain,
  MemoryNonceBackend,
  machinePayAbi,
  NonceManager,
  type PolicyParams,
  type RelayerClient,
  type SignedPayment,
  type SignedVoucher,
  type SubmitResult,
  signEnrollment,
  Tab,
  toSignedPaymentJson,
  toSignedVoucherJson,
} from "../../sdk/src";
import { type ChainEvents, paymentKey, tabKey } from "./events";
import type { DemoEnvironment, Owner, OwnerRole } from "./harness";

export type Sizes = {
  /** Devices per fleet (fridges, cars, meters, sensors, machines, drones); the onboarded fleet is 10x. */
  devices: number;
  /** Payments per device (orders, tolls, readings, premiums); a charging session signs 3x as many vouchers. */
  payments: number;
};

/** A progress bar while devices pay (cli-progress in the demo, nothing in tests). */
export type Progress = {
  begin(label: string, total: number): void;
  tick(n?: number): void;
  end(): void;
};

export const silentProgress: Progress = { begin() {}, tick() {}, end() {} };

/** What the relayer answered, per scenario. */
export class Tally {
  /** Items signed: payments and tab vouchers. */
  signed = 0;
  accepted = 0;
  vouchersSigned = 0;
  vouchersAccepted = 0;
  duplicates = 0;
  stale = 0;
  readonly rejected = new Map<string, number>();
  /** Wall-clock ms of the first submission and of the last settlement seen (the paying phase). */
  firstSubmitAt: number | undefined;
  lastSettledAt: number | undefined;

  record(results: readonly SubmitResult[]): void {
    this.firstSubmitAt ??= Date.now();
    for (const r of results) {
      if (r.duplicate) this.duplicates++;
      else if (r.status === "rejected")
        this.rejected.set(r.reason ?? "?", (this.rejected.get(r.reason ?? "?") ?? 0) + 1);
      else if (r.status === "stale") this.stale++;
      else this.accepted++;
    }
  }

  get rejectedTotal(): number {
    let n = 0;
    for (const v of this.rejected.values()) n += v;
    return n;
  }
}

/** One claim a scenario makes about its outcome, checked against the chain. */
export type Check = { claim: string; ok: boolean; detail?: string };

export type ScenarioContext = {
  env: DemoEnvironment;
  client: PublicClient;
  relayer: RelayerClient;
  domain: MachinePayDomain;
  token: Address;
  contract: Address;
  owners: Record<OwnerRole, Owner>;
  sizes: Sizes;
  progress: Progress;
  events: ChainEvents;
  tally: Tally;
  /** A line of the scenario's story. */
  say(line: string): void;
};

/** What a scenario returns: how many devices it ran, its checks, and `data` for tests to assert on. */
export type ScenarioOutcome<D = Record<string, unknown>> = { devices: number; checks: Check[]; data: D };

export type Scenario<D = Record<string, unknown>> = {
  name: string;
  title: string;
  run(ctx: ScenarioContext): Promise<ScenarioOutcome<D>>;
};

/** A scenario's outcome with its story (the lines it said), counters and wall time. */
export type ScenarioResult<D = Record<string, unknown>> = ScenarioOutcome<D> & {
  name: string;
  title: string;
  lines: string[];
  tally: Tally;
  ms: number;
};

// ---- time and money ---------------------------------------------------------------------------

/** Chain time now (unix seconds): the head's timestamp, never behind the wall clock. */
export async function chainNow(client: PublicClient): Promise<bigint> {
  const head = await client.getBlock();
  const wall = BigInt(Math.floor(Date.now() / 1000));
  return head.timestamp > wall ? head.timestamp : wall;
}

export const usdc = (units: bigint) => {
  const whole = Number(units) / 1e6;
  return `${whole.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 })} USDC`;
};

export const short = (a: string) => `${a.slice(0, 6)}…${a.slice(-4)}`;

/** A 32-byte ref from a label (an order number, a reading): what the payee matches a payment to. */
export const refOf = (label: string): Hex => keccak256(stringToHex(label));

/** A fresh address standing for a payee that needs no key in the demo (a shop, an operator). */
export const newAddress = (): Address => privateKeyToAccount(generatePrivateKey()).address;

// ---- owners' transactions -----------------------------------------------------------------------

export async function ownerTx(
  ctx: ScenarioContext,
  owner: Owner,
  functionName: string,
  args: unknown[],
): Promise<TransactionReceipt> {
  const hash = await owner.wallet.writeContract({
    address: ctx.contract,
    abi: machinePayAbi,
    functionName: functionName as never,
    args: args as never,
    chain: owner.wallet.chain,
    account: owner.account,
  });
  const receipt = await ctx.client.waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") throw new Error(`${functionName} by ${owner.name} reverted (${hash})`);
  return receipt;
}

export const policy = (ctx: ScenarioContext, p: Partial<PolicyParams>): PolicyParams => ({
  token: ctx.token,
  maxPerPayment: 0n,
  maxPerPeriod: 0n,
  periodLength: 86_400,
  lifetimeMax: 0n,
  validFrom: 0,
  validUntil: 0,
  payeesRestricted: false,
  ...p,
});

/** Create a policy; its id comes from the receipt's PolicySet event (not policyCount: no race). */
export async function createPolicy(ctx: ScenarioContext, owner: Owner, params: PolicyParams): Promise<number> {
  const receipt = await ownerTx(ctx, owner, "createPolicy", [params]);
  const [event] = parseEventLogs({ abi: machinePayAbi, logs: receipt.logs, eventName: "PolicySet" });
  if (!event) throw new Error("createPolicy: no PolicySet event in the receipt");
  return Number(event.args.policyId);
}

export async function allowPayees(ctx: ScenarioContext, owner: Owner, policyId: number, payees: Address[]) {
  await ownerTx(ctx, owner, "setPayees", [policyId, payees, true]);
}

/** Devices per assignDevices transaction: ~30,000 gas each with its proof, well under the 16.7M cap. */
export const DEVICES_PER_TX = 200;

/**
 * Fresh device keys (or `keys`), each signing its Enrollment for `owner`, assigned to `policyId`
 * in chunks that fit the per-transaction gas cap.
 */
export async function registerFleet(
  ctx: ScenarioContext,
  owner: Owner,
  policyId: number,
  n: number,
  keys: Hex[] = Array.from({ length: n }, () => generatePrivateKey()),
): Promise<Device[]> {
  const devices = keys.map((k) => privateKeyToAccount(k));
  const proofs = await Promise.all(
    devices.map((d) => signEnrollment({ signer: d, domain: ctx.domain, owner: owner.address })),
  );
  for (let i = 0; i < n; i += DEVICES_PER_TX) {
    await ownerTx(ctx, owner, "assignDevices", [
      policyId,
      devices.slice(i, i + DEVICES_PER_TX).map((d) => d.address),
      proofs.slice(i, i + DEVICES_PER_TX),
    ]);
  }
  return devices.map((d) => deviceOf(ctx, d));
}

// ---- devices ------------------------------------------------------------------------------------

/** A device of the demo: its key (never printed) and the SDK's DevicePayer over it. */
export type Device = { account: PrivateKeyAccount; address: Address; payer: DevicePayer };

/** A device's payer: the SDK's DevicePayer with nonces in memory (a real device keeps them on flash). */
export function deviceOf(ctx: ScenarioContext, account: PrivateKeyAccount, validForSeconds = 900): Device {
  const payer = new DevicePayer({
    signer: account,
    address: account.address,
    domain: ctx.domain,
    token: ctx.token,
    nonces: new NonceManager({ backend: new MemoryNonceBackend() }),
    validForSeconds,
    now: () => Math.floor(Date.now() / 1000) + clockSkew,
  });
  return { account, address: account.address, payer };
}

/** A tab of `device` to `payee` (the SDK's Tab: running total kept, newest voucher signed). */
export function tabOf(
  ctx: ScenarioContext,
  device: Device,
  payee: Address,
  tabId: bigint,
  { validForSeconds = 3_600, deadline }: { validForSeconds?: number; deadline?: bigint } = {},
): Tab {
  return new Tab({
    signer: device.account,
    device: device.address,
    domain: ctx.domain,
    payee,
    token: ctx.token,
    tabId,
    backend: new MemoryNonceBackend(),
    // A fixed deadline (a rental's end) is the tab's clock set so that now + validFor = deadline.
    validForSeconds: deadline === undefined ? validForSeconds : 0,
    now: () => (deadline === undefined ? Math.floor(Date.now() / 1000) + clockSkew : Number(deadline)),
  });
}

/**
 * Seconds the chain runs ahead of this machine's clock: a busy local node stamps each block at
 * least one second after the last one. Deadlines are computed in chain time (refreshed by `syncClock`).
 */
let clockSkew = 0;
export async function syncClock(client: PublicClient): Promise<void> {
  const head = await client.getBlock();
  clockSkew = Math.max(0, Number(head.timestamp) - Math.floor(Date.now() / 1000));
}

/** Items per POST (the relayer takes up to 1,000): small requests keep the progress bar moving. */
const CHUNK = 50;

/** Submit signed payments over HTTP (POST /v1/payments), counted; results in the same order. */
export async function submitPayments(ctx: ScenarioContext, signed: readonly SignedPayment[]): Promise<SubmitResult[]> {
  const out: SubmitResult[] = [];
  for (let i = 0; i < signed.length; i += CHUNK) {
    const chunk = signed.slice(i, i + CHUNK);
    const results = await ctx.relayer.submitMany(chunk.map((s) => toSignedPaymentJson(s.payment, s.signature)));
    ctx.tally.record(results);
    ctx.progress.tick(chunk.length);
    out.push(...results);
  }
  return out;
}

/** Submit one signed voucher (POST /v1/vouchers), counted. */
export async function submitVoucher(ctx: ScenarioContext, signed: SignedVoucher): Promise<SubmitResult> {
  ctx.tally.signed++;
  ctx.tally.vouchersSigned++;
  const [result] = await ctx.relayer.submitVouchers([toSignedVoucherJson(signed.voucher, signed.signature)]);
  ctx.tally.record([result]);
  if (result.status === "accepted" && !result.duplicate) ctx.tally.vouchersAccepted++;
  ctx.progress.tick();
  return result;
}

export type PayJob = { device: Device; payee: Address; amount: bigint; ref?: Hex };
export type Paid = { device: Device; signed: SignedPayment; result: SubmitResult };

/**
 * Most payments of one device the demo lets wait unsettled at once. The relayer orders a batch by
 * payee, so a device's payments to several payees can land out of nonce order; more than the
 * contract's replay window (24) apart, the later-landing ones would be refused as NonceTooOld after
 * being accepted (see the demo's report). Waiting for settlement every 20 payments keeps any size safe.
 */
export const MAX_UNSETTLED_PER_DEVICE = 20;

/**
 * Devices sign (the SDK's DevicePayer: nonce reserved, EIP-712 signature) and submit, a chunk at a
 * time, so the relayer batches while the next chunk is signed. Answers in the same order as `jobs`.
 */
export async function pay(ctx: ScenarioContext, jobs: readonly PayJob[]): Promise<Paid[]> {
  const out: Paid[] = [];
  const unsettled = new Map<Device, number>();
  let wave: { device: Address; nonce: bigint }[] = [];
  for (let i = 0; i < jobs.length; ) {
    const chunk: { device: Device; signed: SignedPayment }[] = [];
    for (; i < jobs.length && chunk.length < CHUNK; i++) {
      const j = jobs[i];
      if ((unsettled.get(j.device) ?? 0) >= MAX_UNSETTLED_PER_DEVICE) break;
      unsettled.set(j.device, (unsettled.get(j.device) ?? 0) + 1);
      const signed = await j.device.payer.sign({ payee: j.payee, amount: j.amount, ref: j.ref });
      chunk.push({ device: j.device, signed });
      ctx.tally.signed++;
    }
    if (chunk.length > 0) {
      const answers = await submitPayments(
        ctx,
        chunk.map((c) => c.signed),
      );
      chunk.forEach((c, k) => {
        out.push({ ...c, result: answers[k] });
        if (answers[k].status === "accepted") wave.push({ device: c.device.address, nonce: c.signed.payment.nonce });
      });
    }
    if (i < jobs.length && (unsettled.get(jobs[i].device) ?? 0) >= MAX_UNSETTLED_PER_DEVICE) {
      await waitForSettlement(ctx, { payments: wave });
      wave = [];
      unsettled.clear();
    }
  }
  return out;
}

/** Sign one payment and submit it alone (the refused attempts a scenario shows). */
export async function payOne(ctx: ScenarioContext, job: PayJob): Promise<Paid> {
  return (await pay(ctx, [job]))[0];
}

/** device:nonce of the accepted ones. */
export const acceptedPayments = (paid: readonly Paid[]) =>
  paid
    .filter((p) => p.result.status === "accepted")
    .map((p) => ({ device: p.device.address, nonce: p.signed.payment.nonce }));

export type Expected = {
  payments?: { device: Address; nonce: bigint }[];
  /** Tabs whose newest voucher must settle, with that voucher's cumulative. */
  tabs?: { device: Address; payee: Address; tabId: bigint; cumulative: bigint }[];
};

/** Wait until the contract's events show every expected payment and tab settled. */
export async function waitForSettlement(ctx: ScenarioContext, expected: Expected, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await ctx.events.sync();
    const settled = new Set(ctx.events.payments().map((p) => paymentKey(p.device, p.nonce)));
    const tabs = new Map<string, bigint>();
    for (const v of ctx.events.vouchers()) {
      const k = tabKey(v.device, v.payee, v.tabId);
      if ((tabs.get(k) ?? -1n) < v.cumulative) tabs.set(k, v.cumulative);
    }
    const missing =
      (expected.payments ?? []).filter((p) => !settled.has(paymentKey(p.device, p.nonce))).length +
      (expected.tabs ?? []).filter((t) => (tabs.get(tabKey(t.device, t.payee, t.tabId)) ?? -1n) < t.cumulative).length;
    if (missing === 0) {
      ctx.tally.lastSettledAt = Date.now();
      return;
    }
    if (Date.now() > end) {
      throw new Error(
        `${missing} accepted items did not settle in ${timeoutMs} ms (relayer log: ${ctx.env.relayerLog})`,
      );
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** POST /v1/settle (admin): batch everything pending now. */
export async function settleNow(ctx: ScenarioContext): Promise<number[]> {
  const res = await fetch(`${ctx.env.relayerUrl}/v1/settle`, {
    method: "POST",
    headers: { authorization: `Bearer ${ctx.env.adminToken}` },
  });
  if (!res.ok) throw new Error(`POST /v1/settle answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { batches: number[] }).batches;
}

/** Poll until `predicate` holds (or throw after `timeoutMs`). */
export async function until(what: string, predicate: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const check = (claim: string, ok: boolean, detail?: string): Check => ({ claim, ok, detail });

export const sum = (xs: Iterable<bigint>) => {
  let s = 0n;
  for (const x of xs) s += x;
  return s;
};

/** "PayeeNotAllowed: <message>" for one refused answer. */
export const refusal = (r: SubmitResult) => `${r.reason}${r.message ? ` (${r.message})` : ""}`;
