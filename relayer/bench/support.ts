/** What the benchmarks share: the node's call log off, CPU of a process, pre-signed payments, paced load. */
import { readFileSync } from "node:fs";
import { domainSeparator, type Hex, type Payment, paymentDigest, toSignedPaymentJson } from "@machinepay/sdk";
import secp256k1 from "secp256k1";
import { Pool } from "undici";
import { nativeKeccak256 } from "../src/ingest/verify";
import { PAYEES, type TestChain, USDC } from "../test/support/chain";

/** Payments each device signs: 20 brings a device the relayer has not seen every 20 payments. */
export const PER_DEVICE = Number(process.env.PER_DEVICE ?? 20);

export type Json = ReturnType<typeof toSignedPaymentJson>;

/**
 * Turn off the `hardhat node` console log of every call it serves (it decodes each transaction and
 * call for the log): CPU a production node does not spend. NODE_LOGGING=1 keeps it on.
 */
export async function quietNode(url: string): Promise<void> {
  if (process.env.NODE_LOGGING === "1") return;
  await nodeRpc(url, "hardhat_setLoggingEnabled", [false]);
}

/** One JSON-RPC call to the node, straight over HTTP (no client library's retries or formatting). */
export async function nodeRpc(url: string, method: string, params: unknown[]): Promise<unknown> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const body = (await res.json()) as { result?: unknown; error?: { message: string } };
  if (body.error) throw new Error(`${method} failed: ${body.error.message}`);
  return body.result;
}

/** user + system CPU of a process, ms (Linux /proc). */
export function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/**
 * Pre-signs payments of fresh devices (a new policy each call, PER_DEVICE payments per device) with
 * native secp256k1 over the fixed-layout digest (RFC 6979: the same signatures viem makes).
 */
export async function presigner(chain: TestChain, perDevice = PER_DEVICE): Promise<(count: number) => Promise<Json[]>> {
  const deadline = (await chain.client.getBlock()).timestamp + 7_200n;
  const sep = domainSeparator(chain.domain, nativeKeccak256);
  return async (count) => {
    const { devices, keys: hexKeys } = await chain.fleet(Math.ceil(count / perDevice), {
      maxPerPayment: USDC(10),
      maxPerPeriod: USDC(10_000),
      lifetimeMax: USDC(100_000),
    });
    const out: Json[] = [];
    const keys = hexKeys.map((k) => Buffer.from(k.slice(2), "hex"));
    for (let n = 0; n < perDevice; n++) {
      for (let i = 0; i < devices.length && out.length < count; i++) {
        const payment: Payment = {
          payee: PAYEES[(i + n) % 3],
          token: chain.usdc,
          amount: 10_000n + BigInt(n),
          nonce: BigInt(n),
          deadline,
          maxFee: 0n,
          ref: `0x${(out.length + 1).toString(16).padStart(64, "0")}` as Hex,
        };
        const { signature, recid } = secp256k1.ecdsaSign(paymentDigest(sep, payment, nativeKeccak256), keys[i]);
        out.push(
          toSignedPaymentJson(payment, `0x${Buffer.from(signature).toString("hex")}${(27 + recid).toString(16)}`),
        );
      }
    }
    return out;
  };
}

export type PacedResult = {
  /** Per request, ms from when it was due (its place in the schedule) to its answer. */
  latencies: number[];
  /** From the first request's due time to the last answer. */
  seconds: number;
  non2xx: number;
  errors: number;
};

/**
 * Open-loop load at `rate` requests per second, evenly spaced: request i is due at i / rate s and
 * sent then, whatever the answers before it (at most `connections` in flight, then queued in the
 * pool). Latency runs from the due time, so a relayer (or a load generator) that falls behind
 * shows it in the figures instead of slowing the schedule (no coordinated omission).
 *
 * autocannon's `overallRate` is not this: each connection sends its quota for the second as fast
 * as answers come, then waits for the next one-second tick, so "half load" was a burst at full
 * speed every second followed by silence; and its correction for coordinated omission assumes an
 * expected interval of 1 ms, which adds samples for every answer slower than that.
 */
export async function pacedLoad(o: {
  url: string;
  bodies: string[];
  rate: number;
  connections: number;
  onBody: (status: number, body: string) => void;
}): Promise<PacedResult> {
  const target = new URL(o.url);
  const pool = new Pool(target.origin, { connections: o.connections, pipelining: 1 });
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const start = performance.now() + 5;
  const dueAt = (i: number) => start + (i * 1000) / o.rate;
  let next = 0;
  let open = 0;
  let last = start;
  try {
    await new Promise<void>((resolve) => {
      const settle = () => {
        open--;
        if (next >= o.bodies.length && open === 0) resolve();
      };
      const tick = () => {
        const now = performance.now();
        while (next < o.bodies.length && dueAt(next) <= now) {
          const due = dueAt(next);
          const body = o.bodies[next++];
          open++;
          pool
            .request({ path: target.pathname, method: "POST", headers: { "content-type": "application/json" }, body })
            .then(async (res) => {
              const text = await res.body.text();
              last = performance.now();
              latencies.push(last - due);
              if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
              o.onBody(res.statusCode, text);
            })
            .catch(() => {
              errors++;
            })
            .finally(settle);
        }
        if (next < o.bodies.length) setTimeout(tick, Math.max(0, dueAt(next) - performance.now()));
      };
      tick();
    });
  } finally {
    await pool.close();
  }
  return { latencies, seconds: (last - start) / 1000, non2xx, errors };
}

/** The middle of `xs` (the upper of the two middles for an even count). */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The q-th quantile (0..1) of `xs`, nearest rank. */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
