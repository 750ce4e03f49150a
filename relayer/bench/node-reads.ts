/**
 * What one device read (`getDevice`) costs the `hardhat node`, by how it is asked: why the registry
 * of untouched devices (the store, from the events) pays where bigger multicalls would not. For
 * READS devices enrolled just before, the node's CPU (from /proc) and the wall time per read:
 * one eth_call at a time; one eth_call each in one JSON-RPC batch; the relayer's own reads client
 * (deployless multicalls of ~28 reads, viem's 1,024-byte bound); and Multicall3 deployed on the
 * chain, at that bound and at 16 KiB (no init-code or code-size limit applies to a deployed one).
 * ROUNDS rounds over fresh devices each, medians.
 *
 *   pnpm --filter @machinepay/relayer bench:reads
 *   READS=400 ROUNDS=3 pnpm --filter @machinepay/relayer bench:reads
 */
import { createRequire } from "node:module";
import { machinePayAbi } from "@machinepay/sdk";
import { type Address, createPublicClient, createWalletClient, type Hex, http, type PublicClient } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { HARDHAT_KEYS } from "../../scripts/lib/deploy-local";
import { readsClient } from "../src/chain/state";
import { startTestChain } from "../test/support/chain";
import { cpuMs, median, quietNode } from "./support";

const READS = Number(process.env.READS ?? 400);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
/** One read at a time is slow: this many of them per round. */
const SEQUENTIAL = Math.min(READS, 100);

/** Multicall3's creation code, as viem ships it (its deployless reads run the same code). */
function multicall3Bytecode(): Hex {
  const require = createRequire(__filename);
  const file = require.resolve("viem").replace(/_cjs[\\/]index\.js$/, "_cjs/constants/contracts.js");
  return require(file).multicall3Bytecode as Hex;
}

async function main() {
  const chain = await startTestChain();
  try {
    await quietNode(chain.node.url);
    const ways = 5;
    const { devices } = await chain.fleet(ROUNDS * (SEQUENTIAL + (ways - 1) * READS));
    const pay = chain.deployment.machinePay;
    const deployer = createWalletClient({
      account: privateKeyToAccount(HARDHAT_KEYS[1]),
      chain: hardhat,
      transport: http(chain.node.url),
    });
    const hash = await deployer.sendTransaction({ data: multicall3Bytecode() });
    const multicall3 = (await chain.client.waitForTransactionReceipt({ hash })).contractAddress!;
    const deployed = (batchSize: number) =>
      createPublicClient({
        chain: { ...hardhat, contracts: { multicall3: { address: multicall3 } } },
        batch: { multicall: { batchSize, wait: 0 } },
        transport: http(chain.node.url, { batch: true }),
      }) as PublicClient;
    const clients: [string, PublicClient, boolean][] = [
      ["one eth_call at a time", createPublicClient({ transport: http(chain.node.url) }) as PublicClient, true],
      [
        "one eth_call each, one JSON-RPC batch",
        createPublicClient({ transport: http(chain.node.url, { batch: true }) }) as PublicClient,
        false,
      ],
      ["the relayer's reads: deployless multicalls, 1,024 B", readsClient(chain.node.url, { multicall: true }), false],
      ["Multicall3 deployed, 1,024 B", deployed(1024), false],
      ["Multicall3 deployed, 16 KiB", deployed(16_384), false],
    ];
    const read = (c: PublicClient, d: Address) =>
      c.readContract({ address: pay, abi: machinePayAbi, functionName: "getDevice", args: [d] });
    const results = clients.map(() => ({ cpu: [] as number[], wall: [] as number[] }));
    let next = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const [w, [, client, oneAtATime]] of clients.entries()) {
        const n = oneAtATime ? SEQUENTIAL : READS;
        const mine = devices.slice(next, next + n).map((d) => d.address);
        next += n;
        const cpu0 = cpuMs(chain.node.pid);
        const t0 = performance.now();
        if (oneAtATime) for (const d of mine) await read(client, d);
        else await Promise.all(mine.map((d) => read(client, d)));
        results[w].wall.push(((performance.now() - t0) * 1000) / n);
        results[w].cpu.push(((cpuMs(chain.node.pid) - cpu0) * 1000) / n);
      }
    }
    console.log(`\n${READS} getDevice reads per way (${SEQUENTIAL} one at a time), ${ROUNDS} rounds, medians:\n`);
    console.log("| how the reads are asked | node CPU µs per read | wall µs per read |");
    console.log("| --- | ---: | ---: |");
    for (const [w, [label]] of clients.entries()) {
      console.log(`| ${label} | ${Math.round(median(results[w].cpu))} | ${Math.round(median(results[w].wall))} |`);
    }
  } finally {
    await chain.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
