/** What the benchmarks share: the node's call log off, CPU of a process, pre-signed payments. */
import { readFileSync } from "node:fs";
import { domainSeparator, type Hex, type Payment, paymentDigest, toSignedPaymentJson } from "@machinepay/sdk";
import secp256k1 from "secp256k1";
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
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "hardhat_setLoggingEnabled", params: [false] }),
  });
  const body = (await res.json()) as { error?: { message: string } };
  if (body.error) throw new Error(`hardhat_setLoggingEnabled failed: ${body.error.message}`);
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
