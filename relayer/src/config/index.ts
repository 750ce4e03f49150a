/**
 * Relayer configuration: parsed once at start-up from (lowest to highest precedence) defaults, a
 * JSON file, MACHINEPAY_* environment variables and command-line flags, validated with zod, then
 * passed down. Nothing below this module reads process.env. A wrong value stops start-up with a
 * message naming the key and what is wanted.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isAddress } from "viem";
import { z } from "zod";

const address = z
  .string()
  .refine((s) => isAddress(s, { strict: false }), "must be a 0x-prefixed 20-byte hex address")
  .transform((s) => s.toLowerCase() as `0x${string}`);

const bigintString = z.union([z.string(), z.number(), z.bigint()]).transform((v, ctx) => {
  try {
    const b = BigInt(v);
    if (b < 0n) throw new Error();
    return b;
  } catch {
    ctx.addIssue({ code: "custom", message: "must be a non-negative integer (token units)" });
    return z.NEVER;
  }
});

/** Verify workers by default: one per core, at most 4, none on a single core (see `verifyWorkers`). */
export const defaultVerifyWorkers = (cores: number): number => (cores < 2 ? 0 : Math.min(4, cores));

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);

/** A boolean setting: true/false in JSON, or "true"/"false"/"1"/"0" from the environment. */
const flag = (fallback: boolean) =>
  z
    .union([z.boolean(), z.enum(["true", "false", "1", "0"])])
    .transform((v) => v === true || v === "true" || v === "1")
    .default(fallback);

/** The deployment file written by `machinepay deploy` (and read by every CLI command). */
export const deploymentSchema = z.object({
  chainId: int(1),
  machinePay: address,
  /** Tokens deployed or known for this chain, by symbol (MockUSDC on a dev chain). */
  tokens: z.record(z.string(), address).default({}),
  deploymentBlock: int(0),
  noticePeriod: int(0),
});
export type Deployment = z.infer<typeof deploymentSchema>;

export const configSchema = z.object({
  /** JSON-RPC URL of the chain (http or https). */
  rpcUrl: z.string().url(),
  /** Path of the deployment file (chain id, MachinePay address, deployment block). */
  deployment: z.string().min(1),
  /** Store: a SQLite file path (or sqlite:PATH), or a PostgreSQL URL (postgres://…) shared by several relayers. */
  store: z.string().min(1).default("machinepay-relayer.db"),
  /**
   * SQLite: read and write the file on a thread of its own, so commits (and their fsync) do not
   * stall request handling. On by default since two benchmark runs measured it faster at both
   * request sizes (BENCHMARKS.md); false keeps the store on the main thread.
   */
  storeThread: flag(true),
  /**
   * Fold admission's view reads into deployless multicalls (Multicall3's bytecode run by an
   * `eth_call`, nothing deployed; `readsClient` in chain/state.ts says why and within which limits).
   * false: one `eth_call` per read, still sent as JSON-RPC batches, for an RPC that refuses an
   * `eth_call` without a `to`.
   */
  multicallReads: flag(true),
  host: z.string().default("127.0.0.1"),
  port: int(0, 65535).default(8787),
  /** Bearer token for admin routes (POST /v1/settle); admin routes answer 403 while it is unset. */
  adminToken: z.string().min(16, "must be at least 16 characters").optional(),
  sender: z
    .object({
      /** File holding the sender's 0x private key (one line, mode 600). */
      keyFile: z.string().optional(),
      /** Encrypted JSON keystore (Web3 Secret Storage, as ethers and geth write). */
      keystore: z.string().optional(),
      /** Name of the environment variable holding the keystore's passphrase. */
      passphraseEnv: z.string().default("MACHINEPAY_KEYSTORE_PASSPHRASE"),
      /** Use Hardhat's well-known test key #1 (public: never for value). Logged as such. */
      dev: z.boolean().default(false),
    })
    .default({ passphraseEnv: "MACHINEPAY_KEYSTORE_PASSPHRASE", dev: false })
    .refine((s) => [s.keyFile, s.keystore, s.dev || undefined].filter(Boolean).length === 1, {
      message: "give exactly one of sender.keyFile, sender.keystore or sender.dev",
    }),
  batch: z
    .object({
      /** Items per batch at most (also bounded by gas and bytes). */
      maxItems: int(1, 2000).default(500),
      /** A batch closes when its oldest item has waited this long. */
      maxAgeMs: int(0).default(2000),
      /** Raw transaction size at most, so public mempools take it. */
      maxBytes: int(1024).default(128 * 1024),
      /** Gas per batch transaction at most (EIP-7825 caps a transaction at 16,777,216). */
      maxGas: int(100_000, 16_777_216).default(15_000_000),
      /** How often the batcher looks at the queue. */
      pollMs: int(10).default(200),
    })
    .default({ maxItems: 500, maxAgeMs: 2000, maxBytes: 128 * 1024, maxGas: 15_000_000, pollMs: 200 }),
  /** Blocks on top of a batch's block before its items are `settled`. */
  confirmations: int(1, 1000).default(2),
  /** Refuse an item whose deadline is less than this many seconds after now (it could not settle in time). */
  deadlineMarginSeconds: int(0).default(30),
  /**
   * Worker threads that recover signatures beside the event loop (0: on the main thread). Default:
   * one per core, at most 4 (none on one core). On 2 cores shared with a node, bench:relayer took
   * 8,511–8,577/s at 100 per request with 2 workers against 7,136–7,278/s with one (the scheduler
   * gives two threads a larger share of the cores), the same at one per request, and 8,151/s with 3.
   */
  verifyWorkers: int(0, 64).default(defaultVerifyWorkers(availableParallelism())),
  /** Fee the relayer charges per item, token units (never above the item's maxFee). */
  fee: bigintString.default(0n),
  /** Credited with fees; defaults to the sender. */
  feeRecipient: address.optional(),
  tabs: z
    .object({
      /** Settle a tab once its pending increment reaches this (token units). */
      threshold: bigintString.default(1_000_000n),
      /** ... or once its newest voucher has waited this long. */
      maxAgeMs: int(0).default(60_000),
      /** ... or when its deadline is this close. */
      beforeDeadlineSeconds: int(0).default(300),
    })
    .default({ threshold: 1_000_000n, maxAgeMs: 60_000, beforeDeadlineSeconds: 300 }),
  /** A transaction without a receipt after this long is replaced with higher fees (same nonce). */
  replaceAfterMs: int(1000).default(30_000),
  /** Fee bump of a replacement, percent (nodes want at least 10). */
  feeBumpPercent: int(10, 500).default(20),
  limits: z
    .object({
      /** Largest request body, bytes. */
      bodyBytes: int(1024).default(1024 * 1024),
      /** Items per POST at most. */
      itemsPerRequest: int(1, 10_000).default(1000),
      /** Requests per minute per client IP. */
      perIpPerMinute: int(1).default(60_000),
      /** Items per second per device. */
      perDevicePerSecond: int(1).default(200),
      /** Items being admitted at once at most; beyond it submissions answer 503 OVERLOADED. */
      admittingItems: int(1).default(50_000),
      /** Accepted items not yet settled at most (the chain is not keeping up); beyond it, 503 OVERLOADED. */
      pendingItems: int(1).default(1_000_000),
    })
    .default({
      bodyBytes: 1024 * 1024,
      itemsPerRequest: 1000,
      perIpPerMinute: 60_000,
      perDevicePerSecond: 200,
      admittingItems: 50_000,
      pendingItems: 1_000_000,
    }),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});
export type RelayerConfig = z.infer<typeof configSchema>;
export type RelayerConfigInput = z.input<typeof configSchema>;

export class ConfigError extends Error {
  readonly code = "CONFIG";
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Environment variables the relayer reads (all optional), and the config key each sets. */
export const ENV_KEYS: Record<string, string> = {
  MACHINEPAY_RPC_URL: "rpcUrl",
  MACHINEPAY_DEPLOYMENT: "deployment",
  MACHINEPAY_STORE: "store",
  MACHINEPAY_STORE_THREAD: "storeThread",
  MACHINEPAY_MULTICALL_READS: "multicallReads",
  MACHINEPAY_HOST: "host",
  MACHINEPAY_PORT: "port",
  MACHINEPAY_ADMIN_TOKEN: "adminToken",
  MACHINEPAY_SENDER_KEY_FILE: "sender.keyFile",
  MACHINEPAY_SENDER_KEYSTORE: "sender.keystore",
  MACHINEPAY_CONFIRMATIONS: "confirmations",
  MACHINEPAY_LOG_LEVEL: "logLevel",
  MACHINEPAY_VERIFY_WORKERS: "verifyWorkers",
};

function setPath(target: Record<string, unknown>, path: string, value: unknown) {
  const keys = path.split(".");
  let node = target;
  for (const k of keys.slice(0, -1)) {
    if (typeof node[k] !== "object" || node[k] === null) node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]] = value;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] =
      v && typeof v === "object" && !Array.isArray(v) && cur && typeof cur === "object" && !Array.isArray(cur)
        ? merge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

export type LoadConfigParameters = {
  /** Path of a JSON config file, if any. */
  file?: string;
  /** The environment (pass process.env from the CLI). */
  env?: Record<string, string | undefined>;
  /** Values from flags, as config keys (dots for nesting, e.g. "batch.maxItems"). */
  overrides?: Record<string, unknown>;
};

/** Parse and validate the configuration; throws ConfigError naming every wrong key. */
export function loadConfig({ file, env = {}, overrides = {} }: LoadConfigParameters): RelayerConfig {
  let fromFile: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
    }
    try {
      fromFile = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
    }
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_KEYS)) {
    if (env[name] !== undefined && env[name] !== "") setPath(fromEnv, key, env[name]);
  }
  const fromFlags: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(overrides)) if (value !== undefined) setPath(fromFlags, key, value);
  const raw = merge(merge(fromFile, fromEnv), fromFlags);
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new ConfigError(`invalid relayer configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}

/** Read and validate a deployment file. */
export function loadDeployment(path: string): Deployment {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      `cannot read deployment file ${path}: ${(e as Error).message} (run \`machinepay deploy\` or pass --deployment)`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`deployment file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const parsed = deploymentSchema.safeParse(json);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid deployment file ${path}:\n${lines.join("\n")}`);
  }
  return parsed.data;
}
