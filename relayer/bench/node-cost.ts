/**
 * What the `hardhat node` spends on one batch, and on single EVM operations: where the machine's
 * second core goes while the relayer settles beside it (bench:relayer). For a batch of BATCH
 * payments of devices enrolled just before (PER_DEVICE payments each, as bench:relayer signs
 * them), the node's CPU (from /proc) and the wall time of: the contract's `preview` as an eth_call
 * four times in a row (on `pending`, then `latest`, `latest` with the gas given, `latest` again),
 * then `settle` sent as a transaction (Hardhat mines it inside eth_sendRawTransaction). Then each of
 * four operations run N times in a loop inside a contract creation, as an eth_call and as a
 * transaction, against the same loop run 0 times.
 *
 *   pnpm --filter @machinepay/relayer bench:node
 *   BATCH=500 RUNS=5 N=2000 pnpm --filter @machinepay/relayer bench:node
 *   NO_PREVIEW=1 …   sends each batch without previewing it first (what its execution costs cold)
 */
import { type Hex, packPayment } from "@machinepay/sdk";
import secp256k1 from "secp256k1";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { HARDHAT_KEYS } from "../../scripts/lib/deploy-local";
import { batchCalldata } from "../src/batcher/calldata";
import { startTestChain } from "../test/support/chain";
import { cpuMs, median, nodeRpc, presigner, quietNode } from "./support";

const BATCH = Number(process.env.BATCH ?? 500);
const RUNS = Number(process.env.RUNS ?? 5);
const N = Number(process.env.N ?? 2000);

/**
 * Creation code of four loops (solc 0.8.28, optimizer on), each running its operation `n` times:
 * ecrecover of one valid signature; keccak256 of 64 bytes; SSTORE to fresh slots; SLOAD of cold
 * empty slots. Compiled from the Solidity in `LOOPS_SOURCE` by `compileLoops` at start.
 */
const LOOPS_SOURCE = `
pragma solidity 0.8.28;
contract Ecrecover { constructor(uint n, bytes32 h, uint8 v, bytes32 r, bytes32 s) { for (uint i; i < n; i++) { ecrecover(h, v, r, s); } } }
contract Keccak { constructor(uint n) { bytes32 x; for (uint i; i < n; i++) { assembly { mstore(0, x) mstore(32, i) x := keccak256(0, 64) } } assembly { mstore(0, x) } } }
contract Sstore { constructor(uint n) { for (uint i = 1; i <= n; i++) { assembly { sstore(i, i) } } } }
contract Sload { constructor(uint n) { uint acc; for (uint i = 1; i <= n; i++) { assembly { acc := add(acc, sload(add(i, 1000000))) } } assembly { mstore(0, acc) } } }
`;

function compileLoops(): Record<string, Hex> {
  const solc = require("solc");
  const out = JSON.parse(
    solc.compile(
      JSON.stringify({
        language: "Solidity",
        sources: { "loops.sol": { content: LOOPS_SOURCE } },
        settings: {
          optimizer: { enabled: true, runs: 200 },
          evmVersion: "cancun",
          outputSelection: { "*": { "*": ["evm.bytecode.object"] } },
        },
      }),
    ),
  );
  const errors = (out.errors ?? []).filter((e: { severity: string }) => e.severity === "error");
  if (errors.length > 0) throw new Error(`the loop contracts did not compile: ${JSON.stringify(errors)}`);
  const code: Record<string, Hex> = {};
  for (const [name, c] of Object.entries(
    out.contracts["loops.sol"] as Record<string, { evm: { bytecode: { object: string } } }>,
  ))
    code[name] = `0x${c.evm.bytecode.object}`;
  return code;
}

/** EIP-7825's per-transaction gas cap, which Hardhat applies to eth_call too. */
const CALL_GAS = "0x1000000";

async function main() {
  const chain = await startTestChain();
  try {
    await quietNode(chain.node.url);
    const rpc = (method: string, params: unknown[]) => nodeRpc(chain.node.url, method, params);
    /** The node's CPU and the wall time of `fn`, ms. */
    const measure = async (fn: () => Promise<unknown>) => {
      const cpu = cpuMs(chain.node.pid);
      const t = performance.now();
      await fn();
      return { wall: performance.now() - t, cpu: cpuMs(chain.node.pid) - cpu };
    };

    const presign = await presigner(chain);
    const machinePay = chain.deployment.machinePay as Hex;
    const sender = privateKeyToAccount(HARDHAT_KEYS[1]);
    const wallet = createWalletClient({
      account: sender,
      chain: { ...hardhat, id: chain.deployment.chainId },
      transport: http(chain.node.url),
    });
    const rows: string[] = [];
    const batchRow = (label: string, xs: { wall: number; cpu: number }[]) =>
      rows.push(
        `| ${label} | ${RUNS} | ${median(xs.map((x) => x.wall)).toFixed(0)} | ${median(xs.map((x) => x.cpu)).toFixed(0)} | ${((median(xs.map((x) => x.cpu)) * 1000) / BATCH).toFixed(0)} |`,
      );
    const previews: Record<"latest" | "pending" | "latestGas" | "again", { wall: number; cpu: number }[]> = {
      latest: [],
      pending: [],
      latestGas: [],
      again: [],
    };
    const sends: { wall: number; cpu: number }[] = [];
    for (let r = 0; r < RUNS; r++) {
      // A fresh fleet and batch each run, as bench:relayer's: devices the chain has not settled for yet.
      const batch = (await presign(BATCH)).map((j) =>
        packPayment(
          {
            payee: j.payment.payee as Hex,
            token: j.payment.token as Hex,
            amount: BigInt(j.payment.amount),
            nonce: BigInt(j.payment.nonce),
            deadline: BigInt(j.payment.deadline),
            maxFee: BigInt(j.payment.maxFee),
            ref: j.payment.ref as Hex,
          },
          j.signature as Hex,
        ),
      );
      const preview = batchCalldata("preview", chain.usdc, batch, sender.address);
      const previewCall = (tag: string, gas?: string) => () =>
        rpc("eth_call", [{ from: sender.address, to: machinePay, data: preview, ...(gas ? { gas } : {}) }, tag]);
      if (process.env.NO_PREVIEW !== "1") {
        previews.pending.push(await measure(previewCall("pending")));
        previews.latest.push(await measure(previewCall("latest")));
        previews.latestGas.push(await measure(previewCall("latest", CALL_GAS)));
        previews.again.push(await measure(previewCall("latest")));
      }
      const data = batchCalldata("settle", chain.usdc, batch, sender.address);
      const raw = await wallet.signTransaction({
        to: machinePay,
        data,
        gas: 16_000_000n,
        maxFeePerGas: 100_000_000_000n,
        maxPriorityFeePerGas: 1_000_000_000n,
        nonce: await chain.client.getTransactionCount({ address: sender.address }),
      });
      let hash: Hex = "0x";
      sends.push(await measure(async () => (hash = (await rpc("eth_sendRawTransaction", [raw])) as Hex)));
      const receipt = await chain.client.getTransactionReceipt({ hash });
      if (receipt.status !== "success") throw new Error("the settle transaction reverted");
    }
    if (process.env.NO_PREVIEW !== "1") {
      batchRow("preview, eth_call on pending (first)", previews.pending);
      batchRow("preview, eth_call on latest (second)", previews.latest);
      batchRow("preview, eth_call on latest with gas given (third)", previews.latestGas);
      batchRow("preview, eth_call on latest (fourth)", previews.again);
    }
    batchRow("settle, eth_sendRawTransaction (mined at once)", sends);

    // Single operations, N times in one eth_call, minus the same loop 0 times.
    const code = compileLoops();
    const key = Buffer.from(HARDHAT_KEYS[2].slice(2), "hex");
    const digest = Buffer.alloc(32, 7);
    const { signature, recid } = secp256k1.ecdsaSign(digest, key);
    const word = (x: bigint | Buffer) => (Buffer.isBuffer(x) ? x.toString("hex") : x.toString(16)).padStart(64, "0");
    // n of each operation (SSTORE to a fresh slot costs 22,100 gas: a quarter, under the 2^24 cap).
    const ops: [string, (n: number) => Hex, number][] = [
      [
        "ecrecover (precompile 0x01)",
        (n) =>
          `${code.Ecrecover}${word(BigInt(n))}${word(digest)}${word(BigInt(27 + recid))}${word(Buffer.from(signature.subarray(0, 32)))}${word(Buffer.from(signature.subarray(32)))}` as Hex,
        N,
      ],
      ["keccak256 of 64 bytes", (n) => `${code.Keccak}${word(BigInt(n))}` as Hex, N],
      ["SSTORE to a fresh slot", (n) => `${code.Sstore}${word(BigInt(n))}` as Hex, Math.floor(N / 4)],
      ["SLOAD of a cold empty slot", (n) => `${code.Sload}${word(BigInt(n))}` as Hex, N],
    ];
    const opRows: string[] = [];
    let nonce = await chain.client.getTransactionCount({ address: sender.address });
    /** The same creation as a transaction (mined inside eth_sendRawTransaction). */
    const deploy = async (data: Hex) => {
      const raw = await wallet.signTransaction({
        data,
        gas: BigInt(CALL_GAS),
        maxFeePerGas: 100_000_000_000n,
        maxPriorityFeePerGas: 1_000_000_000n,
        nonce: nonce++,
      });
      return (await measure(() => rpc("eth_sendRawTransaction", [raw]))).wall;
    };
    const call = async (data: Hex) => (await measure(() => rpc("eth_call", [{ data, gas: CALL_GAS }, "latest"]))).wall;
    for (const [label, data, n] of ops) {
      for (const [how, run] of [
        ["eth_call", call],
        ["transaction", deploy],
      ] as const) {
        const loaded: number[] = [];
        const empty: number[] = [];
        for (let r = 0; r < RUNS; r++) {
          empty.push(await run(data(0)));
          loaded.push(await run(data(n)));
        }
        opRows.push(
          `| ${label} | ${how} | ${n} | ${median(loaded).toFixed(1)} | ${median(empty).toFixed(1)} | ${(((median(loaded) - median(empty)) * 1000) / n).toFixed(1)} |`,
        );
      }
    }

    console.log(`\nOne batch of ${BATCH} payments (devices enrolled just before, ${RUNS} runs, medians):\n`);
    console.log("| call | runs | wall ms | node CPU ms | node CPU µs per payment |");
    console.log("| --- | ---: | ---: | ---: | ---: |");
    for (const r of rows) console.log(r);
    console.log(
      "\nOne EVM operation in a loop inside one contract creation, run as an eth_call and as a transaction, against the same loop run 0 times (wall, medians):\n",
    );
    console.log("| operation | run as | N | ms (N times) | ms (0 times) | µs per operation |");
    console.log("| --- | --- | ---: | ---: | ---: | ---: |");
    for (const r of opRows) console.log(r);
  } finally {
    await chain.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
