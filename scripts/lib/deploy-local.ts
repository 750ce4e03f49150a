/**
 * Deploy MachinePay (and MockUSDC) to a running local node with Hardhat's well-known test account
 * #0 (its key is public: local chains only), and return the deployment file's content. The
 * Ignition module and `machinepay deploy` replace this for real networks (issue 13).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Address, createPublicClient, createWalletClient, type Hex, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";

const ROOT = join(__dirname, "..", "..");
/** Compiled artifacts (`hardhat compile` writes them); MACHINEPAY_ARTIFACTS points elsewhere. */
const ARTIFACTS = process.env.MACHINEPAY_ARTIFACTS ?? join(ROOT, "artifacts");

/** Hardhat's test accounts #0..#8 (public keys from its documentation: never use them for value). */
export const HARDHAT_KEYS: Hex[] = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
  "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
  "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
  "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
  "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
];

function artifact(name: string, file = `contracts/${name}.sol`) {
  const a = JSON.parse(readFileSync(join(ARTIFACTS, file, `${name}.json`), "utf8"));
  return { abi: a.abi, bytecode: a.bytecode as Hex };
}

export type LocalDeployment = {
  chainId: number;
  machinePay: Address;
  tokens: { USDC: Address };
  deploymentBlock: number;
  noticePeriod: number;
};

export async function deployLocal(
  rpcUrl: string,
  { noticePeriod = 2 * 86_400, file }: { noticePeriod?: number; file?: string } = {},
) {
  const account = privateKeyToAccount(HARDHAT_KEYS[0]);
  const chain = { ...hardhat, rpcUrls: { default: { http: [rpcUrl] } } };
  const wallet = createWalletClient({ account, chain, transport: http(rpcUrl) });
  const client = createPublicClient({ chain, transport: http(rpcUrl) });
  const deploy = async (name: string, args: unknown[], file?: string) => {
    const { abi, bytecode } = artifact(name, file);
    const hash = await wallet.deployContract({ abi, bytecode, args: args as never });
    const receipt = await client.waitForTransactionReceipt({ hash });
    return { address: receipt.contractAddress as Address, block: Number(receipt.blockNumber) };
  };
  const usdc = await deploy("MockUSDC", [], "contracts/test/MockUSDC.sol");
  const pay = await deploy("MachinePay", [BigInt(noticePeriod)]);
  const deployment: LocalDeployment = {
    chainId: await client.getChainId(),
    machinePay: pay.address,
    tokens: { USDC: usdc.address },
    deploymentBlock: pay.block,
    noticePeriod,
  };
  if (file) writeFileSync(file, `${JSON.stringify(deployment, null, 2)}\n`);
  return deployment;
}

export const mockUsdcAbi = () => artifact("MockUSDC", "contracts/test/MockUSDC.sol").abi;

// `ts-node scripts/lib/deploy-local.ts [RPC_URL] [FILE]`: deploy to a local node, write the deployment file.
if (require.main === module) {
  const [rpc = "http://127.0.0.1:8545", file = "deployment.json"] = process.argv.slice(2);
  deployLocal(rpc, { file }).then(
    (d) => console.log(`MachinePay ${d.machinePay} and MockUSDC ${d.tokens.USDC} on chain ${d.chainId}: wrote ${file}`),
    (e) => {
      console.error(`deploy failed: ${(e as Error).message}`);
      process.exitCode = 1;
    },
  );
}
