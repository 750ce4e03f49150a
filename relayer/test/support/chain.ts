/**
 * A real local chain for relayer tests: `hardhat node` started by the project's script on a free
 * port, MachinePay and MockUSDC deployed with Hardhat's public test key, an owner funding its
 * escrow and registering devices with their Enrollment proofs.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Address,
  type Hex,
  machinePayAbi,
  machinePayDomain,
  type PolicyParams,
  signEnrollment,
} from "@machinepay/sdk";
import { createPublicClient, createWalletClient, http, type PublicClient } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { deployLocal, HARDHAT_KEYS, type LocalDeployment, mockUsdcAbi } from "../../../scripts/lib/deploy-local";
import { type HardhatNode, startHardhatNode } from "../../../scripts/lib/hardhat-node";

export type TestChain = {
  node: HardhatNode;
  dir: string;
  deploymentFile: string;
  deployment: LocalDeployment;
  client: PublicClient;
  owner: PrivateKeyAccount;
  domain: ReturnType<typeof machinePayDomain>;
  usdc: Address;
  /** Send a MachinePay transaction from the owner and wait for it. */
  ownerCall(functionName: string, args: unknown[]): Promise<void>;
  /** Create a policy and register `n` fresh device keys on it; returns the keys and the policy id. */
  fleet(
    n: number,
    params?: Partial<PolicyParams>,
  ): Promise<{ devices: PrivateKeyAccount[]; keys: Hex[]; policyId: number }>;
  stop(): Promise<void>;
};

export const USDC = (n: number) => BigInt(Math.round(n * 1_000_000));

export async function startTestChain(): Promise<TestChain> {
  const node = await startHardhatNode();
  const dir = mkdtempSync(join(tmpdir(), "machinepay-e2e-"));
  const deploymentFile = join(dir, "deployment.json");
  const deployment = await deployLocal(node.url, { file: deploymentFile });
  const chain = { ...hardhat, rpcUrls: { default: { http: [node.url] } } };
  const client = createPublicClient({ chain, transport: http(node.url) }) as PublicClient;
  const owner = privateKeyToAccount(HARDHAT_KEYS[0]);
  const wallet = createWalletClient({ account: owner, chain, transport: http(node.url) });
  const domain = machinePayDomain({ chainId: deployment.chainId, verifyingContract: deployment.machinePay });
  const usdc = deployment.tokens.USDC;
  const wait = async (hash: Hex) => {
    const r = await client.waitForTransactionReceipt({ hash });
    if (r.status !== "success") throw new Error(`transaction ${hash} reverted`);
  };
  const ownerCall = async (functionName: string, args: unknown[]) =>
    wait(
      await wallet.writeContract({
        address: deployment.machinePay,
        abi: machinePayAbi,
        functionName: functionName as never,
        args: args as never,
      }),
    );
  // Fund the owner's escrow: 100,000 USDC.
  await wait(
    await wallet.writeContract({
      address: usdc,
      abi: mockUsdcAbi(),
      functionName: "mint",
      args: [owner.address, USDC(1_000_000)],
    }),
  );
  await wait(
    await wallet.writeContract({
      address: usdc,
      abi: mockUsdcAbi(),
      functionName: "approve",
      args: [deployment.machinePay, 2n ** 256n - 1n],
    }),
  );
  await ownerCall("deposit", [usdc, USDC(100_000)]);

  const fleet = async (n: number, params: Partial<PolicyParams> = {}) => {
    const policy: PolicyParams = {
      token: usdc,
      maxPerPayment: USDC(10),
      maxPerPeriod: USDC(100),
      periodLength: 86_400,
      lifetimeMax: USDC(1_000),
      validFrom: 0,
      validUntil: 0,
      payeesRestricted: false,
      ...params,
    };
    await ownerCall("createPolicy", [policy]);
    const policyId = Number(
      await client.readContract({ address: deployment.machinePay, abi: machinePayAbi, functionName: "policyCount" }),
    );
    const keys = Array.from({ length: n }, () => generatePrivateKey());
    const devices = keys.map((k) => privateKeyToAccount(k));
    const proofs = await Promise.all(devices.map((d) => signEnrollment({ signer: d, domain, owner: owner.address })));
    for (let i = 0; i < n; i += 200) {
      await ownerCall("assignDevices", [
        policyId,
        devices.slice(i, i + 200).map((d) => d.address),
        proofs.slice(i, i + 200),
      ]);
    }
    return { devices, keys, policyId };
  };

  return {
    node,
    dir,
    deploymentFile,
    deployment,
    client,
    owner,
    domain,
    usdc,
    ownerCall,
    fleet,
    async stop() {
      await node.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const PAYEES: Address[] = [
  "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
  "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
  "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
];
