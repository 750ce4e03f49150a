/**
 * Relayer client: fetch only, no other dependency. The wire format it speaks is specified in
 * sdk/README.md ("Relayer HTTP API"); the relayer serves exactly that.
 * Retries are safe by design: a signed item is identified by `itemId(digest, device)` (its
 * EIP-712 digest and its signer), and the relayer stores an id once, so re-sending the same signed
 * payment never pays twice.
 */
import type { DeviceProof } from "./sign";
import type { Address, Hex, Onboarding, Payment, ReasonName, Revocation, Voucher } from "./types";

/** A signed payment as JSON: uint256 fields as decimal strings. */
export type SignedPaymentJson = {
  payment: {
    payee: Address;
    token: Address;
    amount: string;
    nonce: string;
    deadline: string;
    maxFee: string;
    ref: Hex;
  };
  signature: Hex;
};

/** A signed tab voucher as JSON, as POST /v1/vouchers takes it. */
export type SignedVoucherJson = {
  voucher: {
    payee: Address;
    token: Address;
    tabId: string;
    cumulative: string;
    deadline: string;
    maxFee: string;
  };
  signature: Hex;
};

/**
 * Where an item stands at the relayer. `superseded`: a voucher replaced by a newer one of its tab
 * (which pays it); `submitted`: in a sent batch transaction (`txHash`); `settled`: confirmed.
 */
export type PaymentState = "accepted" | "batched" | "submitted" | "settled" | "rejected" | "superseded";

/** One item's answer to POST /v1/payments or /v1/vouchers. `id` is `itemId(digest, device)`. */
export type SubmitResult = {
  id: Hex;
  kind?: "payment" | "voucher";
  /** `stale`: a voucher whose cumulative is not above its tab's newest (see `newest`). */
  status: PaymentState | "stale";
  /** When rejected or stale: a contract reason name or a relayer code. */
  reason?: ReasonName | string;
  message?: string;
  /** The offending field, for refusals about one field (e.g. "deadline", "signature"). */
  field?: string;
  /** Stale vouchers: the tab's newest cumulative, decimal string. */
  newest?: string;
  /** The relayer already had this item (the answer is its current status). */
  duplicate?: true;
};

type ItemStatusBase = {
  id: Hex;
  status: PaymentState;
  device: Address;
  owner: Address;
  payee: Address;
  token: Address;
  /** Unix seconds. */
  deadline: number;
  maxFee: string;
  /** What the relayer charges, ≤ maxFee. */
  fee: string;
  /** When rejected: a contract reason name or a relayer code. */
  reason?: ReasonName | string;
  message?: string;
  batchId?: number;
  /** While submitted: the latest broadcast transaction; once mined, the one that landed. */
  txHash?: Hex;
  blockNumber?: number;
  /** Unix ms. */
  acceptedAt: number;
  updatedAt: number;
};

/** GET /v1/payments/:id */
export type PaymentStatus = ItemStatusBase & { kind: "payment"; amount: string; nonce: string; ref: Hex };

/** GET /v1/vouchers/:id */
export type VoucherStatus = ItemStatusBase & { kind: "voucher"; tabId: string; cumulative: string };

/** GET /v1/tabs/:device/:payee/:token/:tabId — amounts as decimal strings of token units. */
export type TabStatus = {
  device: Address;
  payee: Address;
  token: Address;
  tabId: string;
  /** Settled on chain. */
  settled: string;
  /** The newest cumulative the relayer accepted (or `settled`, if higher). */
  newest: string;
  /** Id of the newest accepted voucher, while it is above `settled`. */
  newestId: Hex | null;
  /** newest − settled. */
  pending: string;
  /** Unix seconds when the tab closes, null while open. */
  closesAt: number | null;
};

/** GET /v1/devices/:address — amounts as decimal strings of token units. */
export type DeviceHeadroom = {
  device: Address;
  /** "None" when the device can pay, else the reason every payment of it would fail now. */
  status: ReasonName;
  policyId: number;
  owner: Address;
  token: Address;
  /** The per-payment cap. */
  perPayment: string;
  /** What is left of this period's allowance, pending payments counted. */
  period: string;
  /** What is left of the lifetime allowance, pending payments counted. */
  lifetime: string;
  /** The owner's escrow in the policy's token, less an announced withdrawal and pending spend. */
  balance: string;
  /** Largest amount + fee that would settle now, after what the relayer already holds pending. */
  spendable: string;
  /** Amount + fee of this device's payments accepted but not yet settled. */
  pending: string;
  periodEndsAt: number;
  nonceTop: number;
};

/** GET /v1/info */
export type RelayerInfo = {
  version: string;
  chainId: number;
  contract: Address;
  tokens: Record<string, Address>;
  domain: { name: string; version: string; chainId: number; verifyingContract: Address };
  /** Payment, Voucher, TabClose, Enrollment, Onboarding, PolicyParams, Revocation. */
  types: Record<string, { name: string; type: string }[]>;
  typeStrings: Record<string, string>;
  /** Contract reason names by on-chain code. */
  reasons: string[];
  /** Codes the relayer itself gives refused items (DEADLINE_TOO_SOON, SIGNATURE_HIGH_S, …). */
  relayerCodes: string[];
  /** The relayer's fee per item, token units. */
  fee: string;
  deadlineMarginSeconds: number;
  limits: { itemsPerRequest: number; bodyBytes: number; perDevicePerSecond: number; perIpPerMinute: number };
};

/** GET /v1/health */
export type RelayerHealth = {
  ok: boolean;
  version: string;
  chain: boolean;
  store: boolean;
  senderFunded: boolean;
  head?: number;
  senderBalance?: string;
  /** Items by pending status. */
  queue?: Record<string, number>;
  details?: Record<string, unknown>;
  error?: string;
};

/** An owner's signed Onboarding as JSON (POST /v1/onboardings). */
export type OnboardingJson = {
  onboarding: {
    owner: Address;
    policyId: number;
    policy: {
      token: Address;
      maxPerPayment: string;
      maxPerPeriod: string;
      periodLength: number;
      lifetimeMax: string;
      validFrom: number;
      validUntil: number;
      payeesRestricted: boolean;
    };
    devices: Address[];
    epoch: number;
    nonce: string;
    deadline: string;
  };
  /** One Enrollment proof per device, same order. */
  proofs: DeviceProof[];
  signature: Hex;
};

/** An owner's signed Revocation as JSON (POST /v1/revocations). */
export type RevocationJson = {
  revocation: { owner: Address; devices: Address[]; epoch: number; nonce: string; deadline: string };
  signature: Hex;
};

/** Answer of POST /v1/onboardings and /v1/revocations (202). */
export type OwnerMessageReceipt = { id: Hex; status: string };

/** GET /v1/onboardings/:id, /v1/revocations/:id */
export type OwnerMessageStatus = {
  id: Hex;
  kind: "onboarding" | "revocation";
  /** accepted, submitted, confirmed or failed. */
  status: string;
  owner?: Address;
  txHash?: Hex | null;
  error?: string | null;
  createdAt?: number;
  updatedAt?: number;
};

export type BatchState = "created" | "sent" | "mined" | "confirmed" | "reverted" | "failed" | "dropped";

/** One batch (GET /v1/batches). Gas values as decimal strings. */
export type BatchInfo = {
  id: number;
  /** Payments or vouchers of one token, or one owner message (onboarding, revocation: no items). */
  kind: "payment" | "voucher" | "onboarding" | "revocation";
  /** Onboarding and revocation batches: the owner message's id (GET /v1/onboardings/:id). */
  messageId: Hex | null;
  token: Address;
  sender: Address;
  nonce: number;
  status: BatchState;
  itemCount: number;
  gasEstimate: string | null;
  gasUsed: string | null;
  blockNumber: number | null;
  blockHash: Hex | null;
  txHash: Hex | null;
  error: string | null;
  createdAt: number;
  updatedAt: number;
};

/** GET /v1/batches/:id */
export type BatchDetail = BatchInfo & {
  attempts: {
    hash: Hex;
    nonce: number;
    maxFeePerGas: string;
    maxPriorityFeePerGas: string;
    createdAt: number;
    broadcastAt: number | null;
    /** The signed transaction, when asked with `raw: true`. */
    raw?: Hex;
  }[];
  itemIds: Hex[];
};

/** GET /v1/batches: newest first; pass `next` as `after` for the next page. */
export type BatchPage = { batches: BatchInfo[]; next: string | null };

/** Any error answer of the relayer: `{ "error": { "code", "message", "details"? } }`. */
export class RelayerError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "RelayerError";
  }
}

/** The relayer refused a payment; `reason` is the contract reason name or a relayer code. */
export class PaymentRejectedError extends Error {
  readonly code = "PAYMENT_REJECTED";
  constructor(
    readonly id: Hex,
    readonly reason: string,
    message: string,
  ) {
    super(`payment ${id} rejected: ${reason}${message ? ` (${message})` : ""}`);
    this.name = "PaymentRejectedError";
  }
}

/** No answer after every retry (network down, relayer restarting, 5xx). Safe to retry later. */
export class RelayerUnavailableError extends Error {
  readonly code = "RELAYER_UNAVAILABLE";
  constructor(
    message: string,
    readonly cause?: unknown,
  ) {
    super(message);
    this.name = "RelayerUnavailableError";
  }
}

/** waitForSettlement ran out of time; the payment may still settle. */
export class SettlementTimeoutError extends Error {
  readonly code = "SETTLEMENT_TIMEOUT";
  constructor(
    readonly id: Hex,
    readonly last: PaymentStatus | undefined,
  ) {
    super(`payment ${id} not settled in time (last status: ${last?.status ?? "unknown"})`);
    this.name = "SettlementTimeoutError";
  }
}

export type RelayerClientOptions = {
  /** Base URL, e.g. http://127.0.0.1:8787 (the client adds /v1/...). */
  url: string;
  /** Attempts per request, first included (default 6). */
  attempts?: number;
  /** First backoff in ms, doubled per retry with ±50% jitter (default 200). */
  backoffMs?: number;
  /** Backoff ceiling in ms (default 5,000). */
  maxBackoffMs?: number;
  /** Per-attempt timeout in ms (default 10,000). */
  timeoutMs?: number;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
};

/** JSON form of a signed payment, as POST /v1/payments takes it. */
export function toSignedPaymentJson(payment: Payment, signature: Hex): SignedPaymentJson {
  return {
    payment: {
      payee: payment.payee,
      token: payment.token,
      amount: payment.amount.toString(),
      nonce: payment.nonce.toString(),
      deadline: payment.deadline.toString(),
      maxFee: payment.maxFee.toString(),
      ref: payment.ref,
    },
    signature,
  };
}

/** JSON form of a signed tab voucher, as POST /v1/vouchers takes it. */
export function toSignedVoucherJson(voucher: Voucher, signature: Hex): SignedVoucherJson {
  return {
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
}

/** JSON form of an owner's signed Onboarding with its devices' Enrollment proofs (same order as `devices`). */
export function toOnboardingJson(onboarding: Onboarding, proofs: DeviceProof[], signature: Hex): OnboardingJson {
  const p = onboarding.policy;
  return {
    onboarding: {
      owner: onboarding.owner,
      policyId: onboarding.policyId,
      policy: {
        token: p.token,
        maxPerPayment: p.maxPerPayment.toString(),
        maxPerPeriod: p.maxPerPeriod.toString(),
        periodLength: p.periodLength,
        lifetimeMax: p.lifetimeMax.toString(),
        validFrom: p.validFrom,
        validUntil: p.validUntil,
        payeesRestricted: p.payeesRestricted,
      },
      devices: [...onboarding.devices],
      epoch: onboarding.epoch,
      nonce: onboarding.nonce.toString(),
      deadline: onboarding.deadline.toString(),
    },
    proofs: proofs.map(({ r, vs }) => ({ r, vs })),
    signature,
  };
}

/** JSON form of an owner's signed Revocation. */
export function toRevocationJson(revocation: Revocation, signature: Hex): RevocationJson {
  return {
    revocation: {
      owner: revocation.owner,
      devices: [...revocation.devices],
      epoch: revocation.epoch,
      nonce: revocation.nonce.toString(),
      deadline: revocation.deadline.toString(),
    },
    signature,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RelayerClient {
  private readonly base: string;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: RelayerClientOptions) {
    this.base = options.url.replace(/\/+$/, "");
    this.attempts = options.attempts ?? 6;
    this.backoffMs = options.backoffMs ?? 200;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new Error("no fetch available: pass options.fetch (Node 18+ and browsers have one)");
    this.fetchImpl = f;
  }

  /** Submit one signed payment. Resolves with its id and status; a rejection is a result, not an error. */
  async submit(signed: SignedPaymentJson): Promise<SubmitResult> {
    const [result] = await this.submitMany([signed]);
    return result;
  }

  /** Submit several signed payments in one request; results come back in the same order. */
  submitMany(signed: SignedPaymentJson[]): Promise<SubmitResult[]> {
    return this.submitItems("/v1/payments", "payments", signed);
  }

  /** Submit one signed voucher. A stale voucher is a result (`status: "stale"`, `newest`), not an error. */
  async submitVoucher(signed: SignedVoucherJson): Promise<SubmitResult> {
    const [result] = await this.submitVouchers([signed]);
    return result;
  }

  /** Submit several signed vouchers in one request; results come back in the same order. */
  submitVouchers(signed: SignedVoucherJson[]): Promise<SubmitResult[]> {
    return this.submitItems("/v1/vouchers", "vouchers", signed);
  }

  /** Current status of a payment by id (`itemId(hashPayment(domain, payment), device)`). */
  status(id: Hex): Promise<PaymentStatus> {
    return this.request("GET", `/v1/payments/${id}`);
  }

  /** Current status of a voucher by id (`itemId(hashVoucher(domain, voucher), device)`). */
  voucherStatus(id: Hex): Promise<VoucherStatus> {
    return this.request("GET", `/v1/vouchers/${id}`);
  }

  /** A tab as the relayer sees it: settled on chain, newest accepted cumulative, pending between them. */
  tab(device: Address, payee: Address, token: Address, tabId: bigint): Promise<TabStatus> {
    return this.request("GET", `/v1/tabs/${device}/${payee}/${token}/${tabId}`);
  }

  /** Submit an owner's signed onboarding (see toOnboardingJson). Re-sending the same one is safe. */
  submitOnboarding(json: OnboardingJson): Promise<OwnerMessageReceipt> {
    return this.request("POST", "/v1/onboardings", json);
  }

  /** Submit an owner's signed revocation (see toRevocationJson). Re-sending the same one is safe. */
  submitRevocation(json: RevocationJson): Promise<OwnerMessageReceipt> {
    return this.request("POST", "/v1/revocations", json);
  }

  onboardingStatus(id: Hex): Promise<OwnerMessageStatus> {
    return this.request("GET", `/v1/onboardings/${id}`);
  }

  revocationStatus(id: Hex): Promise<OwnerMessageStatus> {
    return this.request("GET", `/v1/revocations/${id}`);
  }

  /** Batches, newest first (at most `limit`, default 50); pass the page's `next` as `after`. */
  batches({ status, limit, after }: { status?: BatchState; limit?: number; after?: string } = {}): Promise<BatchPage> {
    const q = new URLSearchParams();
    if (status !== undefined) q.set("status", status);
    if (limit !== undefined) q.set("limit", String(limit));
    if (after !== undefined) q.set("after", after);
    const query = q.toString();
    return this.request("GET", `/v1/batches${query ? `?${query}` : ""}`);
  }

  /** One batch with its transaction attempts (`raw: true` adds the signed transactions) and item ids. */
  batch(id: number, { raw = false } = {}): Promise<BatchDetail> {
    return this.request("GET", `/v1/batches/${id}${raw ? "?raw=true" : ""}`);
  }

  /** The relayer's health: chain, store, sender funds, queue. */
  health(): Promise<RelayerHealth> {
    return this.request("GET", "/v1/health");
  }

  private async submitItems<T>(path: string, field: string, items: T[]): Promise<SubmitResult[]> {
    if (items.length === 0) return [];
    const body = await this.request<{ results: SubmitResult[] }>("POST", path, { [field]: items });
    if (!Array.isArray(body.results) || body.results.length !== items.length) {
      throw new RelayerError("BAD_RESPONSE", "the relayer answered with a different number of results", 200, body);
    }
    return body.results;
  }

  /**
   * Poll until the payment settles. Throws PaymentRejectedError if it is rejected and
   * SettlementTimeoutError if `timeoutMs` passes first.
   */
  async waitForSettlement(id: Hex, { timeoutMs = 60_000, pollMs = 500 } = {}): Promise<PaymentStatus> {
    const until = Date.now() + timeoutMs;
    let last: PaymentStatus | undefined;
    for (;;) {
      last = await this.status(id);
      if (last.status === "settled") return last;
      if (last.status === "rejected") throw new PaymentRejectedError(id, last.reason ?? "unknown", last.message ?? "");
      if (Date.now() + pollMs > until) throw new SettlementTimeoutError(id, last);
      await sleep(pollMs);
    }
  }

  /** What a device can still spend, as the relayer sees it (chain state minus its pending payments). */
  headroom(device: Address): Promise<DeviceHeadroom> {
    return this.request("GET", `/v1/devices/${device}`);
  }

  /** Chain, contract, EIP-712 domain and types the relayer serves. */
  info(): Promise<RelayerInfo> {
    return this.request("GET", "/v1/info");
  }

  private async request<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    let lastError: unknown;
    let retryAfterMs = 0;
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      if (attempt > 0) {
        const backoff = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (attempt - 1));
        // A 429/503's Retry-After is honoured, up to the backoff ceiling.
        await sleep(Math.max(backoff * (0.5 + Math.random()), Math.min(retryAfterMs, this.maxBackoffMs)));
        retryAfterMs = 0;
      }
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), this.timeoutMs);
      let response: Response;
      try {
        response = await this.fetchImpl(`${this.base}${path}`, {
          method,
          headers: body === undefined ? { accept: "application/json" } : { "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal,
        });
      } catch (e) {
        lastError = e; // network error or timeout: the request may or may not have landed; retrying is safe
        continue;
      } finally {
        clearTimeout(timer);
      }
      let parsed: unknown;
      try {
        parsed = await response.json();
      } catch (e) {
        lastError = e; // connection dropped mid-body, or not JSON
        if (response.ok || response.status >= 500 || response.status === 429) continue;
        throw new RelayerError("BAD_RESPONSE", `relayer answered ${response.status} without JSON`, response.status);
      }
      if (response.ok) return parsed as T;
      const err = (parsed as { error?: { code?: string; message?: string; details?: unknown } }).error ?? {};
      const error = new RelayerError(
        err.code ?? `HTTP_${response.status}`,
        err.message ?? `relayer answered ${response.status}`,
        response.status,
        err.details,
      );
      if ((response.status >= 500 && response.status !== 501) || response.status === 429) {
        lastError = error;
        const after = Number(response.headers.get("retry-after"));
        if (Number.isFinite(after) && after > 0) retryAfterMs = after * 1000;
        continue;
      }
      throw error;
    }
    throw new RelayerUnavailableError(
      `no answer from ${this.base} after ${this.attempts} attempts: ${String((lastError as Error)?.message ?? lastError)}`,
      lastError,
    );
  }
}
