/**
 * Prometheus metrics of the relayer, all named machinepay_*, on a registry of their own (never
 * prom-client's global one, so two relayers in one process, or tests, do not share counters).
 * Stages report through the typed methods below; GET /metrics renders `text()`.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { PendingCounts, Store } from "../store/types";
import { PENDING_ITEM_STATUSES } from "../store/types";

export type ItemKindLabel = "payment" | "voucher";
export type AdmissionStage = "verify" | "chain_read" | "decide_and_store";

export type MetricsOptions = {
  /** queue_depth is read from the store at each scrape. */
  store?: Pick<Store, "pendingCounts">;
  /** Process metrics (CPU, memory, event loop lag, GC), prefixed machinepay_ (default true). */
  defaultMetrics?: boolean;
};

export const METRIC_PREFIX = "machinepay_";

export class Metrics {
  readonly registry = new Registry();
  private readonly accepted: Counter<"kind">;
  private readonly rejected: Counter<"kind" | "reason">;
  private readonly duplicates: Counter<"kind">;
  private readonly mispredictions: Counter<"reason">;
  private readonly admissionRetries: Counter;
  private readonly batches: Counter<"status">;
  private readonly requests: Counter<"method" | "route" | "status">;
  private readonly batchSize: Histogram;
  private readonly gasPerItem: Histogram;
  private readonly ackLatency: Histogram<"kind">;
  private readonly admissionStage: Histogram<"stage">;
  private readonly senderBalanceWei: Gauge;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    const p = METRIC_PREFIX;
    this.accepted = new Counter({
      name: `${p}items_accepted_total`,
      help: "Items (payments, vouchers) accepted and stored durably",
      labelNames: ["kind"],
      registers,
    });
    this.rejected = new Counter({
      name: `${p}items_rejected_total`,
      help: "Items refused at ingest, by contract reason name or relayer code (stale vouchers: VoucherStale)",
      labelNames: ["kind", "reason"],
      registers,
    });
    this.duplicates = new Counter({
      name: `${p}items_duplicate_total`,
      help: "Items submitted again that the relayer already had (answered with their current status)",
      labelNames: ["kind"],
      registers,
    });
    this.mispredictions = new Counter({
      name: `${p}ingest_mispredictions_total`,
      help: "Items ingest accepted that the chain skipped, by skip reason",
      labelNames: ["reason"],
      registers,
    });
    this.admissionRetries = new Counter({
      name: `${p}admission_retries_total`,
      help: "Admissions decided again because another relayer sharing the store changed the same owner meanwhile",
      registers,
    });
    this.batches = new Counter({
      name: `${p}batches_total`,
      help: "Batches reaching a status (created, sent, mined, confirmed, reverted, failed, dropped)",
      labelNames: ["status"],
      registers,
    });
    this.requests = new Counter({
      name: `${p}http_requests_total`,
      help: "HTTP requests answered, by method, route pattern and status code",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.batchSize = new Histogram({
      name: `${p}batch_size`,
      help: "Items per mined batch",
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000],
      registers,
    });
    this.gasPerItem = new Histogram({
      name: `${p}gas_per_item`,
      help: "Gas used by a mined batch divided by its items",
      buckets: [2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000, 200_000],
      registers,
    });
    this.ackLatency = new Histogram({
      name: `${p}ack_latency_seconds`,
      help: "Seconds from a submit request's arrival to its answer (items durable)",
      labelNames: ["kind"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.admissionStage = new Histogram({
      name: `${p}admission_stage_seconds`,
      help: "Seconds spent in each stage of admission: verify (a submit request waiting for its signatures from the worker threads; near 0 with verifyWorkers 0, when recovery runs inline), and per admission pass (more than one when relayers share a store) chain_read (chain state of its devices and owners, cached) and decide_and_store (the decisions and the durable commit)",
      labelNames: ["stage"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.senderBalanceWei = new Gauge({
      name: `${p}sender_balance_wei`,
      help: "Native balance of the batch sender, wei",
      registers,
    });
    const store = options.store;
    new Gauge({
      name: `${p}queue_depth`,
      help: "Items not yet settled, by status (read from the store at scrape)",
      labelNames: ["status"],
      registers,
      async collect() {
        if (!store) return;
        let counts: PendingCounts;
        try {
          counts = await store.pendingCounts();
        } catch {
          return; // keep the last values: a scrape must not fail because the store is busy
        }
        for (const status of PENDING_ITEM_STATUSES) this.set({ status }, counts[status]);
      },
    });
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: p });
  }

  /** Ingest's `onDecision` hook (pass `metrics.decision`: it is bound). */
  readonly decision = (kind: ItemKindLabel, status: string, reason?: string): void => {
    if (status === "accepted") this.accepted.inc({ kind });
    else if (status === "rejected" || status === "stale") {
      this.rejected.inc({ kind, reason: reason ?? (status === "stale" ? "VoucherStale" : "unknown") });
    }
  };

  /** Submitted items the relayer already had. */
  duplicate(kind: ItemKindLabel, count = 1): void {
    if (count > 0) this.duplicates.inc({ kind }, count);
  }

  /** A submit request answered after `seconds`. */
  ack(kind: ItemKindLabel, seconds: number): void {
    this.ackLatency.observe({ kind }, seconds);
  }

  /** A submit request spent `seconds` in admission stage `stage` (Ingest's `onStage` hook: bound). */
  readonly stage = (stage: AdmissionStage, seconds: number): void => {
    this.admissionStage.observe({ stage }, seconds);
  };

  /** Any HTTP answer (route is the pattern, e.g. /v1/payments/:id, or "unmatched"). */
  request(method: string, route: string, status: number): void {
    this.requests.inc({ method, route, status: String(status) });
  }

  /** A batch was mined with `size` items and `gasPerItem` gas per item. */
  batchMined(size: number, gasPerItem: number): void {
    this.batchSize.observe(size);
    this.gasPerItem.observe(gasPerItem);
  }

  /** A batch reached `status`. */
  batch(status: string): void {
    this.batches.inc({ status });
  }

  /** The chain skipped an item ingest had accepted, for `reason`. */
  misprediction(reason: string, count = 1): void {
    this.mispredictions.inc({ reason }, count);
  }

  /** An admission found its owners changed by another relayer and was decided again. */
  readonly admissionRetry = (): void => {
    this.admissionRetries.inc();
  };

  senderBalance(wei: bigint): void {
    this.senderBalanceWei.set(Number(wei));
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
