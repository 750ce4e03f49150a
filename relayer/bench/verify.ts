// Verifications per second on one core: viem's generic EIP-712 path against the fast path
// (fixed-layout digest + native secp256k1). `pnpm bench:verify`; ITEMS=20000 RUNS=5 by default.
import {
  domainSeparator,
  type Hex,
  machinePayDomain,
  type Payment,
  paymentDigest,
  paymentTypes,
  type Voucher,
  voucherDigest,
  voucherTypes,
} from "@machinepay/sdk";
import secp256k1 from "secp256k1";
import { hashTypedData, keccak256, recoverTypedDataAddress } from "viem";
import { nativeKeccak256, Verifier, type VerifyItem } from "../src/ingest/verify";

const ITEMS = Number(process.env.ITEMS ?? 20_000);
const RUNS = Number(process.env.RUNS ?? 5);
// A run of the slow paths over every item would take minutes: they time the first items only.
const SLOW_ITEMS = Math.min(ITEMS, 1_000);
const HASH_ITEMS = Math.min(ITEMS, 5_000);

const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const jsKeccak = (data: Uint8Array) => keccak256(data, "bytes");

let seed = 0x12345678;
function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    b[i] = seed >>> 24;
  }
  return b;
}
const hex = (n: number): Hex => `0x${randomBytes(n).toString("hex")}`;

function generate(): VerifyItem[] {
  const keys: Buffer[] = [];
  while (keys.length < 64) {
    const k = randomBytes(32);
    if (secp256k1.privateKeyVerify(k)) keys.push(k);
  }
  const items: VerifyItem[] = [];
  for (let i = 0; i < ITEMS; i++) {
    // Alternate payments and vouchers; realistic magnitudes (amounts < 2^40, current deadlines).
    let item: VerifyItem;
    let digest: Hex;
    if (i % 2 === 0) {
      const payment: Payment = {
        payee: hex(20),
        token: hex(20),
        amount: BigInt(randomBytes(5).readUIntBE(0, 5)),
        nonce: BigInt(i),
        deadline: 1_800_000_000n + BigInt(i),
        maxFee: 1_000n,
        ref: hex(32),
      };
      digest = hashTypedData({ domain, types: paymentTypes, primaryType: "Payment", message: payment });
      item = { kind: "payment", payment, signature: "0x" };
    } else {
      const voucher: Voucher = {
        payee: hex(20),
        token: hex(20),
        tabId: BigInt(i),
        cumulative: BigInt(randomBytes(5).readUIntBE(0, 5)),
        deadline: 1_800_000_000n + BigInt(i),
        maxFee: 0n,
      };
      digest = hashTypedData({ domain, types: voucherTypes, primaryType: "Voucher", message: voucher });
      item = { kind: "voucher", voucher, signature: "0x" };
    }
    const { signature, recid } = secp256k1.ecdsaSign(Buffer.from(digest.slice(2), "hex"), keys[i % keys.length]);
    item.signature = `0x${Buffer.from(signature).toString("hex")}${(27 + recid).toString(16)}`;
    items.push(item);
  }
  return items;
}

type Op = { name: string; n: number; run: () => unknown };

/**
 * Per-second rate of each op, median over RUNS. The runs are interleaved (run 1 of every op, then
 * run 2, ...) after one warm-up pass, so a load change on a shared machine hits every op alike
 * and the ratios stay meaningful.
 */
async function rates(ops: Op[]): Promise<number[]> {
  for (const op of ops) await op.run();
  const samples = ops.map((): number[] => []);
  for (let r = 0; r < RUNS; r++) {
    for (const [i, op] of ops.entries()) {
      const t = process.hrtime.bigint();
      await op.run();
      samples[i].push(op.n / (Number(process.hrtime.bigint() - t) / 1e9));
    }
  }
  return samples.map((xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
}

const fmt = (x: number) => Math.round(x).toLocaleString("en-US");

async function main(): Promise<void> {
  process.stdout.write(`generating ${ITEMS} signed items (half payments, half vouchers)... `);
  const items = generate();
  console.log("done");
  const slow = items.slice(0, SLOW_ITEMS);
  const some = items.slice(0, HASH_ITEMS);
  const sep = domainSeparator(domain);
  const digestWith = (keccak: typeof jsKeccak) => () => {
    for (const it of items) {
      if (it.kind === "payment") paymentDigest(sep, it.payment, keccak);
      else voucherDigest(sep, it.voucher, keccak);
    }
  };
  const verifier = new Verifier(domain);
  const jsVerifier = new Verifier(domain, { keccak: jsKeccak });
  const sig64 = Buffer.from(items[0].signature.slice(2, 130), "hex");
  const msg = Buffer.from(items[0].signature.slice(2, 66), "hex");

  const ops: Op[] = [
    {
      name: "viem `recoverTypedDataAddress`",
      n: slow.length,
      run: async () => {
        for (const it of slow) {
          if (it.kind === "payment") {
            const m = { domain, types: paymentTypes, primaryType: "Payment", message: it.payment } as const;
            await recoverTypedDataAddress({ ...m, signature: it.signature });
          } else {
            const m = { domain, types: voucherTypes, primaryType: "Voucher", message: it.voucher } as const;
            await recoverTypedDataAddress({ ...m, signature: it.signature });
          }
        }
      },
    },
    {
      name: "viem `hashTypedData` alone",
      n: some.length,
      run: () => {
        for (const it of some) {
          if (it.kind === "payment") {
            hashTypedData({ domain, types: paymentTypes, primaryType: "Payment", message: it.payment });
          } else {
            hashTypedData({ domain, types: voucherTypes, primaryType: "Voucher", message: it.voucher });
          }
        }
      },
    },
    { name: "fast digest, JS keccak (@noble/hashes via viem)", n: items.length, run: digestWith(jsKeccak) },
    { name: "fast digest, native keccak", n: items.length, run: digestWith(nativeKeccak256) },
    {
      name: "native `ecdsaRecover` alone",
      n: items.length,
      run: () => {
        const out = Buffer.alloc(65);
        for (let i = 0; i < items.length; i++) secp256k1.ecdsaRecover(sig64, 0, msg, false, out);
      },
    },
    {
      name: "`Verifier.verify`, JS keccak",
      n: items.length,
      run: () => {
        for (const it of items) jsVerifier.verify(it);
      },
    },
    {
      name: "`Verifier.verify` (native keccak: the relayer's)",
      n: items.length,
      run: () => {
        for (const it of items) if (!verifier.verify(it).ok) throw new Error("bench item refused");
      },
    },
  ];
  console.log(`timing ${ops.length} operations, ${RUNS} interleaved runs...`);
  const measured = await rates(ops);
  const rows = ops.map((op, i) => [op.name, measured[i], op.n] as const);

  const sizes = [64, 66, 224, 256];
  const K = 20_000;
  const keccakOps = sizes.flatMap((size): Op[] => {
    const data = Buffer.from(randomBytes(size));
    return [
      {
        name: `js ${size}`,
        n: K,
        run: () => {
          for (let i = 0; i < K; i++) jsKeccak(data);
        },
      },
      {
        name: `native ${size}`,
        n: K,
        run: () => {
          for (let i = 0; i < K; i++) nativeKeccak256(data);
        },
      },
    ];
  });
  const keccakRates = await rates(keccakOps);
  const keccakRows = sizes.map((size, i) => [`${size} bytes`, keccakRates[2 * i], keccakRates[2 * i + 1]] as const);

  const viem = rows[0][1];
  const fast = rows[rows.length - 1][1];
  console.log(`\nNode ${process.version}, one core, median of ${RUNS} interleaved runs (after a warm-up pass)\n`);
  console.log("| operation | per second | items per run |");
  console.log("| --- | ---: | ---: |");
  for (const [name, r, n] of rows) console.log(`| ${name} | ${fmt(r)} | ${fmt(n)} |`);
  console.log(
    `| **ratio \`Verifier.verify\` / viem \`recoverTypedDataAddress\`** | **${(fast / viem).toFixed(1)}x** | |`,
  );
  console.log("\n| keccak-256 input | @noble/hashes (µs) | native `keccak` (µs) |");
  console.log("| --- | ---: | ---: |");
  for (const [size, js, native] of keccakRows) {
    console.log(`| ${size} | ${(1e6 / js).toFixed(1)} | ${(1e6 / native).toFixed(1)} |`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
