/**
 * Relayer client: fetch only, no other dependency. The wire format it speaks is specified in
 * sdk/README.md ("Relayer HTTP API"); the relayer serves exactly that.
 * Retries are safe by design: a signed payment is identified by its EIP-712 digest, and the
 * relayer stores a digest once, so re-sending the same signed payment never pays twice.
 */
import type { Address, Hex, Payment, ReasonName } from "./types";

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

export type PaymentState = "accepted" | "batched" | "submitted" | "settled" | "rejected";

/** One item's answer to POST /v1/payments. `id` is the payment's EIP-712 digest. */
export type SubmitResult = {
  id: Hex;
  status: PaymentState;
  /** Set when status is "rejected": a contract reason name or a relayer code. */
  reason?: ReasonName | string;
  message?: string;
};

/** GET /v1/payments/:id */
export type PaymentStatus = SubmitResult & {
  device: Address;
  txHash?: Hex;
  blockNumber?: number;
  batchId?: string;
};

/** GET /v1/devices/:address — amounts as decimal strings of token units. */
export type DeviceHeadroom = {
  device: Address;
  status: ReasonName;
  policyId: number;
  owner: Address;
  token: Address;
  perPayment: string;
  period: string;
  lifetime: string;
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
  chainId: number;
  contract: Address;
  domain: { name: string; version: string; chainId: number; verifyingContract: Address };
  types: Record<string, { name: string; type: string }[]>;
  reasons: string[];
};

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
  async submitMany(signed: SignedPaymentJson[]): Promise<SubmitResult[]> {
    if (signed.length === 0) return [];
    const body = await this.request<{ results: SubmitResult[] }>("POST", "/v1/payments", { payments: signed });
    if (!Array.isArray(body.results) || body.results.length !== signed.length) {
      throw new RelayerError("BAD_RESPONSE", "the relayer answered with a different number of results", 200, body);
    }
    return body.results;
  }

  /** Current status of a payment by id (its EIP-712 digest). */
  status(id: Hex): Promise<PaymentStatus> {
    return this.request("GET", `/v1/payments/${id}`);
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
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      if (attempt > 0) {
        const backoff = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (attempt - 1));
        await sleep(backoff * (0.5 + Math.random()));
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
      if (response.status >= 500 || response.status === 429) {
        lastError = error;
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
