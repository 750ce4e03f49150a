/**
 * Signature recovery on worker threads. Recovery is the costliest step of ingest (~130 µs per item
 * on one core here); a pool runs it beside the event loop, which keeps parsing, admission and the
 * store on the main thread. Items that arrive in the same turn of the event loop (many one-item
 * requests) travel to a worker in one message. A worker that dies is replaced, and what it held is
 * verified inline: a verdict is never lost, only slower.
 */
import { Worker } from "node:worker_threads";
import type { MachinePayDomain } from "@machinepay/sdk";
import { workerSource } from "../threads";
import { Verifier, type VerifyItem, type VerifyResult } from "./verify";

type Job = { items: VerifyItem[]; resolve: (r: VerifyResult[]) => void; reject: (e: unknown) => void };
type Slot = { worker: Worker; busy: Map<number, Job> };

const WORKER_SOURCE = workerSource(__dirname, "verify-worker", __filename.endsWith(".ts"));

export class VerifierPool {
  private readonly slots: Slot[] = [];
  private readonly inline: Verifier;
  private next = 0;
  private seq = 0;
  private queued: Job[] = [];
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly domain: MachinePayDomain,
    readonly size: number,
  ) {
    this.inline = new Verifier(domain);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { domain: this.domain },
    });
    const slot: Slot = { worker, busy: new Map() };
    worker.unref();
    worker.on("message", (m: { seq: number; results: VerifyResult[] }) => {
      const job = slot.busy.get(m.seq);
      if (!job) return;
      slot.busy.delete(m.seq);
      job.resolve(m.results);
    });
    const fail = () => {
      // Verify what the dead worker held on this thread, and replace it.
      const held = [...slot.busy.values()];
      slot.busy.clear();
      for (const job of held) this.runInline(job);
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => {
      if (code !== 0 || slot.busy.size > 0) fail();
    });
    return slot;
  }

  private runInline(job: Job): void {
    try {
      job.resolve(job.items.map((it) => this.inline.verify(it)));
    } catch (e) {
      job.reject(e);
    }
  }

  /** Verdicts for `items`, in order (the same as Verifier.verify gives each). */
  verifyMany(items: VerifyItem[]): Promise<VerifyResult[]> {
    if (items.length === 0) return Promise.resolve([]);
    if (this.closed || this.slots.length === 0) return Promise.resolve(items.map((it) => this.inline.verify(it)));
    return new Promise((resolve, reject) => {
      this.queued.push({ items, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Everything queued this turn: split over the workers, each part in one message. */
  private flush(): void {
    this.scheduled = false;
    const jobs = this.queued;
    this.queued = [];
    const all = jobs.flatMap((j) => j.items);
    const parts = Math.min(this.slots.length, Math.max(1, Math.ceil(all.length / 50)));
    const per = Math.ceil(all.length / parts);
    const verdicts: VerifyResult[] = new Array(all.length);
    let pending = parts;
    const done = () => {
      let at = 0;
      for (const j of jobs) {
        j.resolve(verdicts.slice(at, at + j.items.length));
        at += j.items.length;
      }
    };
    for (let p = 0; p < parts; p++) {
      const from = p * per;
      const chunk = all.slice(from, from + per);
      const slot = this.slots[this.next++ % this.slots.length];
      const seq = this.seq++;
      slot.busy.set(seq, {
        items: chunk,
        resolve: (r) => {
          for (let i = 0; i < r.length; i++) verdicts[from + i] = r[i];
          if (--pending === 0) done();
        },
        reject: (e) => {
          for (const j of jobs) j.reject(e);
        },
      });
      slot.worker.postMessage({ seq, items: chunk });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
