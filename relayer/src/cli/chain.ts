/**
 * The CLI's view of the chain: the deployment file (read by the relayer's own loadDeployment), a
 * viem client checked against the deployment's chain id, and transactions that are simulated first
 * so a revert comes back as the contract's custom error with its arguments and a hint.
 */
import { type Address, type Hex, machinePayAbi } from "@machinepay/sdk";
import {
  type Abi,
  BaseError,
  type Chain,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  decodeEventLog,
  defineChain,
  getAddress,
  http,
  isAddress,
  type PublicClient,
  type TransactionReceipt,
  type WalletClient,
  zeroAddress,
} from "viem";
import type { PrivateKeyAccount } from "viem/accounts";
import { type Deployment, loadDeployment } from "../config";
import { assertDevChain, loadKey } from "./keys";
import type { ChainOptions, KeyOptions } from "./options";
import { RuntimeError, UsageError } from "./output";

export type ChainContext = {
  rpc: string;
  deployment: Deployment;
  machinePay: Address;
  chain: Chain;
  client: PublicClient;
};

export type SignerContext = ChainContext & { account: PrivateKeyAccount; wallet: WalletClient };

/** A viem chain for an RPC URL whose id we already know. */
export function chainFor(id: number, rpc: string): Chain {
  return defineChain({
    id,
    name: `chain ${id}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpc] } },
  });
}

/** The chain id an RPC URL answers with; a RuntimeError naming the URL if it does not answer. */
export async function rpcChainId(rpc: string): Promise<number> {
  const client = createPublicClient({ transport: http(rpc, { retryCount: 1, timeout: 15_000 }) });
  try {
    return await client.getChainId();
  } catch (e) {
    throw new RuntimeError(`cannot reach the chain at ${rpc}: ${shortMessage(e)} (is the node running? check --rpc)`);
  }
}

/** Load the deployment file and connect to the RPC; refuses a deployment made for another chain. */
export async function connectChain(opts: ChainOptions): Promise<ChainContext> {
  const deployment = loadDeployment(opts.deployment);
  const id = await rpcChainId(opts.rpc);
  if (id !== deployment.chainId) {
    throw new UsageError(
      `${opts.deployment} is for chain ${deployment.chainId} but ${opts.rpc} is chain ${id}: pass the matching --rpc or --deployment`,
    );
  }
  const chain = chainFor(id, opts.rpc);
  const client = createPublicClient({ chain, transport: http(opts.rpc, { retryCount: 2 }), pollingInterval: 250 });
  return { rpc: opts.rpc, deployment, machinePay: getAddress(deployment.machinePay), chain, client };
}

/** connectChain plus the account that signs (--key-file / --keystore / --dev, --dev on local chains only). */
export async function connectSigner(opts: ChainOptions & KeyOptions, whose = "the owner's"): Promise<SignerContext> {
  const account = await loadKey(opts, { whose });
  const ctx = await connectChain(opts);
  assertDevChain(ctx.deployment.chainId, account.dev);
  const wallet = createWalletClient({ account, chain: ctx.chain, transport: http(opts.rpc, { retryCount: 2 }) });
  return { ...ctx, account, wallet };
}

/** Read a MachinePay view. */
export async function readMachinePay<T>(ctx: ChainContext, functionName: string, args: unknown[] = []): Promise<T> {
  try {
    return (await ctx.client.readContract({
      address: ctx.machinePay,
      abi: machinePayAbi,
      functionName: functionName as never,
      args: args as never,
    })) as T;
  } catch (e) {
    throw explain(e, `reading ${functionName}`, ctx.rpc);
  }
}

export type SendParameters = {
  address?: Address;
  abi?: Abi;
  functionName: string;
  args: unknown[];
  value?: bigint;
};

/** Simulate, send and wait for one transaction; returns its receipt (a revert is a RuntimeError). */
export async function send(ctx: SignerContext, p: SendParameters): Promise<TransactionReceipt> {
  const address = p.address ?? ctx.machinePay;
  const abi = p.abi ?? (machinePayAbi as Abi);
  const what = `${p.functionName}${address === ctx.machinePay ? "" : ` on ${address}`}`;
  let hash: Hex;
  try {
    const { request } = await ctx.client.simulateContract({
      account: ctx.account,
      address,
      abi,
      functionName: p.functionName,
      args: p.args,
      value: p.value,
    } as never);
    hash = await ctx.wallet.writeContract(request as never);
  } catch (e) {
    throw explain(e, what, ctx.rpc, ctx.account.address);
  }
  const receipt = await ctx.client.waitForTransactionReceipt({ hash, timeout: 180_000 });
  if (receipt.status !== "success")
    throw new RuntimeError(`${what}: transaction ${hash} reverted in block ${receipt.blockNumber}`);
  return receipt;
}

/** MachinePay events of a receipt, decoded. */
export function machinePayEvents(ctx: ChainContext, receipt: TransactionReceipt) {
  const out: { eventName: string; args: Record<string, unknown> }[] = [];
  for (const log of receipt.logs) {
    if (log.address.toLowerCase() !== ctx.machinePay.toLowerCase()) continue;
    try {
      const ev = decodeEventLog({ abi: machinePayAbi, data: log.data, topics: log.topics });
      out.push({ eventName: ev.eventName, args: ev.args as unknown as Record<string, unknown> });
    } catch {
      // not one of ours
    }
  }
  return out;
}

/**
 * A token by symbol (a key of the deployment's `tokens`, any case), address, or `native` for the
 * chain's coin; without one, the deployment's USDC.
 */
export function resolveToken(deployment: Deployment, spec?: string): Address {
  const tokens = deployment.tokens ?? {};
  if (spec === undefined) {
    if (tokens.USDC) return getAddress(tokens.USDC);
    throw new UsageError("give --token (a symbol in the deployment file, an address, or native)");
  }
  if (/^(native|eth)$/i.test(spec)) return zeroAddress;
  if (isAddress(spec, { strict: false })) return getAddress(spec);
  const hit = Object.entries(tokens).find(([symbol]) => symbol.toLowerCase() === spec.toLowerCase());
  if (hit) return getAddress(hit[1]);
  const known = Object.keys(tokens);
  throw new UsageError(
    `unknown token ${spec}: give an address, native${known.length ? `, or one of ${known.join(", ")}` : ""}`,
  );
}

/** What to do about each MachinePay error a CLI user can cause. */
const HINTS: Record<string, string> = {
  NoticeRequired:
    "this account owns policies: `machinepay withdraw announce`, wait the notice period, then `withdraw execute`",
  NoPendingWithdrawal: "nothing is announced for this token: `machinepay withdraw announce` first",
  WithdrawalNotReady: "the notice period has not passed yet: try again after readyAt (`machinepay withdraw show`)",
  UnknownPolicy: "no policy has this id: `machinepay policy create` prints the id of a new one",
  NotPolicyOwner: "the policy belongs to another account: sign with its owner's key",
  NotDeviceOwner: "the device is bound to another owner: sign with that owner's key",
  DeviceNotRegistered: "register the device first: `machinepay device register`",
  DeviceIsRevoked: "the key is revoked for good: make a new one with `machinepay device new`",
  DeviceOwnedByAnother: "the key is bound to another owner for good: use a new key",
  InvalidEnrollment:
    "the proof is not the device's Enrollment for this owner and deployment: sign it again with `machinepay device enroll --owner OWNER`",
  InvalidPeriodLength: "--period must be at least one second",
  InvalidValidity: "--valid-until must be 0 (no end) or after --valid-from",
  InsufficientLedgerBalance: "the escrow balance is lower: `machinepay fund` first, or ask for less",
  ZeroAmount: "the amount must be above 0",
  TooManyPolicies: "this deployment holds the most policies it can",
  TabAlreadyClosing: "the tab is closing already",
  NotTabParty: "only the tab's payee or its device's owner closes it (or the device, with --device-key)",
  PermitFailed: "the token refused the permit: run `machinepay fund --no-permit` (approve, then deposit)",
  SignatureExpired: "the signed message expired: sign a new one",
};

function shortMessage(e: unknown): string {
  if (e instanceof BaseError) return e.shortMessage;
  return (e as Error)?.message ?? String(e);
}

function formatArgs(revert: ContractFunctionRevertedError): string {
  const data = revert.data;
  if (!data?.args) return "";
  const inputs = (data.abiItem as { inputs?: readonly { name?: string }[] }).inputs ?? [];
  return data.args.map((a, i) => `${inputs[i]?.name ? `${inputs[i].name}: ` : ""}${String(a)}`).join(", ");
}

/** Turn a viem error into a message that says what went wrong and what to do. */
export function explain(e: unknown, what: string, rpc: string, from?: Address): Error {
  if (e instanceof UsageError || e instanceof RuntimeError) return e;
  if (e instanceof BaseError) {
    const revert = e.walk((x) => x instanceof ContractFunctionRevertedError);
    if (revert instanceof ContractFunctionRevertedError) {
      const name = revert.data?.errorName ?? revert.reason ?? "an unnamed revert";
      const hint = revert.data?.errorName ? HINTS[revert.data.errorName] : undefined;
      return new RuntimeError(
        `${what} would revert: ${name}(${formatArgs(revert)})${hint ? `: ${hint}` : ""}; nothing was sent`,
      );
    }
    const text = `${e.shortMessage} ${e.details ?? ""}`;
    if (/insufficient funds/i.test(text)) {
      return new RuntimeError(
        `${what}: ${from ?? "the account"} has too little of the chain's coin to pay for gas: fund it`,
      );
    }
    if (/fetch failed|ECONNREFUSED|HTTP request failed|timed out/i.test(text)) {
      return new RuntimeError(`${what}: cannot reach the chain at ${rpc}: ${e.shortMessage}`);
    }
    return new RuntimeError(`${what} failed: ${e.shortMessage}`);
  }
  return e instanceof Error ? e : new Error(String(e));
}
