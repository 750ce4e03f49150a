/**
 * The relayer assembled from its stages: config → store → chain → ingest → batcher → api. The CLI
 * and the end-to-end tests start it through here; nothing here reads process.env (the caller
 * passes `env` for the keystore passphrase only).
 */
import { type Address, machinePayDomain } from "@machinepay/sdk";
import pino, { type Logger } from "pino";
import { createPublicClient, http, type PublicClient } from "viem";
import type { OnboardingSubmission, RevocationSubmission } from "./api/schemas";
import { buildServer } from "./api/server";
import { SharedVerifier } from "./api/verifier";
import { Batcher } from "./batcher";
import { ChainClock } from "./chain/clock";
import type { OwnerMessage } from "./chain/owner-messages";
import { Rpc } from "./chain/rpc";
import { loadSender } from "./chain/sender";
import { CachedChainState, readsClient } from "./chain/state";
import { ConfigError, loadDeployment, type RelayerConfig } from "./config";
import { Ingest } from "./ingest";
import { OwnerMessageIngest } from "./ingest/owner-messages";
import { keccakReady } from "./keccak";
import { Metrics } from "./metrics";
import { openStore, redactStoreUrl, type Store } from "./store";

export type StartRelayerParameters = {
  config: RelayerConfig;
  /** For the keystore passphrase variable the config names. */
  env?: Record<string, string | undefined>;
  logger?: Logger;
};

export type RunningRelayer = {
  /** http://host:port the API listens on. */
  url: string;
  sender: Address;
  batcher: Batcher;
  ingest: Ingest;
  /** The relayer's store (for tests and embedders: read it, leave writes to the relayer). */
  store: Store;
  /** Stop accepting, finish the batches in flight (up to drainMs), close the store. */
  stop(drainMs?: number): Promise<void>;
};

/** Pino options: one JSON line per event, secrets redacted wherever they appear. */
export function loggerOptions(level: string) {
  return {
    level,
    redact: {
      paths: [
        "req.headers.authorization",
        "*.signature",
        "*.*.signature",
        "*.privateKey",
        "*.key",
        "*.passphrase",
        "*.adminToken",
        "config.adminToken",
      ],
      censor: "[redacted]",
    },
  };
}

export async function startRelayer({ config, env = {}, logger }: StartRelayerParameters): Promise<RunningRelayer> {
  const log = logger ?? pino(loggerOptions(config.logLevel));
  const deployment = loadDeployment(config.deployment);
  const rpcOptions = { retryCount: 2, timeout: 15_000 };
  const client = createPublicClient({ transport: http(config.rpcUrl, rpcOptions) }) as PublicClient;
  let chainId: number;
  try {
    chainId = await client.getChainId();
  } catch (e) {
    throw new ConfigError(`cannot reach the chain at ${config.rpcUrl}: ${(e as Error).message}`);
  }
  if (chainId !== deployment.chainId) {
    throw new ConfigError(
      `the RPC at ${config.rpcUrl} is chain ${chainId}, the deployment file is for chain ${deployment.chainId}`,
    );
  }
  const { account, source } = loadSender(config.sender, env);
  log.info(
    { sender: account.address, source },
    source.startsWith("dev") ? "sender: Hardhat's well-known test key (dev only: its key is public)" : "sender loaded",
  );

  const store = await openStore(config.store, { thread: config.storeThread });
  const contract = deployment.machinePay as Address;
  const domain = machinePayDomain({ chainId, verifyingContract: contract });
  const metrics = new Metrics({ store });
  const clock = new ChainClock();
  const reads = readsClient(config.rpcUrl, { multicall: config.multicallReads, ...rpcOptions });
  // A device the store's registry knows untouched since its assignment needs no chain read.
  const state = new CachedChainState(reads, contract, undefined, undefined, (devices) =>
    store.untouchedDevices(devices),
  );
  // One verifier for the API's per-device rate limit and for ingest: each signature recovered once.
  await keccakReady; // the WebAssembly keccak, from the first request on
  const verifier = new SharedVerifier(domain, config.verifyWorkers);
  const ingest = await Ingest.open({
    verifier,
    chain: state,
    store,
    clock,
    deadlineMarginSeconds: config.deadlineMarginSeconds,
    fee: config.fee,
    onDecision: metrics.decision,
    onRetry: metrics.admissionRetry,
    onStage: metrics.stage,
  });
  const batcher = new Batcher({
    store,
    rpc: new Rpc(client),
    client,
    state,
    clock,
    ingest,
    sender: account,
    contract,
    chainId,
    feeRecipient: (config.feeRecipient ?? account.address.toLowerCase()) as Address,
    deploymentBlock: deployment.deploymentBlock,
    config: {
      ...config.batch,
      maxInFlight: 4,
      confirmations: config.confirmations,
      replaceAfterMs: config.replaceAfterMs,
      feeBumpPercent: config.feeBumpPercent,
      tabs: config.tabs,
      deadlineMarginSeconds: Math.max(1, Math.floor(config.deadlineMarginSeconds / 2)),
    },
    events: {
      batchMined: (b) => metrics.batchMined(b.size, b.size ? Number(b.gasUsed) / b.size : 0),
      misprediction: (reason, n) => metrics.misprediction(reason, n),
      log: (level, msg, fields) => log[level](fields ?? {}, msg),
    },
  });
  try {
    await batcher.recover();
  } catch (e) {
    // Refused at start (another live relayer holds this sender, or this SQLite file): let go of what
    // was opened, so the process exits with the reason.
    await verifier.close().catch(() => {});
    await store.close().catch(() => {});
    throw e;
  }
  batcher.start();
  const ownerMessages = new OwnerMessageIngest({
    store,
    client,
    contract,
    sender: account.address,
    domain,
    clock,
    deadlineMarginSeconds: config.deadlineMarginSeconds,
  });

  const app = await buildServer({
    config,
    deployment,
    domain,
    ingest,
    verifier,
    ledger: ingest.ledger,
    store,
    chain: state,
    clock,
    metrics,
    logger: log,
    readiness: async () => {
      // A read through the pending index: cheap however many items the store holds.
      const store_ = await store
        .pendingCounts()
        .then(() => true)
        .catch(() => false);
      const chain = await client
        .getBlockNumber()
        .then(() => true)
        .catch(() => false);
      const balance = batcher.senderBalance;
      if (balance !== undefined) metrics.senderBalance(balance);
      return {
        chain,
        store: store_,
        senderFunded: balance !== undefined && balance > 0n,
        head: batcher.head,
        senderBalance: balance?.toString(),
        details: batcher.lastError ? { lastError: batcher.lastError } : undefined,
      };
    },
    settleNow: () => batcher.settleNow(),
    ownerMessages: {
      submit: async (kind: "onboarding" | "revocation", body: OnboardingSubmission | RevocationSubmission) => {
        const r = await ownerMessages.submit({ kind, message: body } as OwnerMessage);
        return { id: r.id, status: r.status };
      },
      get: (id) => ownerMessages.get(id),
    },
  });
  const url = await app.listen({ host: config.host, port: config.port });
  log.info({ url, chainId, contract, store: redactStoreUrl(config.store) }, "relayer listening");

  let stopped = false;
  return {
    url,
    sender: account.address,
    batcher,
    ingest,
    store,
    async stop(drainMs = 10_000) {
      if (stopped) return;
      stopped = true;
      await app.close();
      await batcher.stop(drainMs);
      await store.close();
      await verifier.close();
      log.info("relayer stopped");
    },
  };
}
