/**
 * The demo's world, as real processes: a `hardhat node` on a free port, MachinePay + MockUSDC
 * deployed (`machinepay deploy --dev`, else scripts/lib/deploy-local.ts), owners' escrows funded
 * (`machinepay fund`, else viem), and the relayer started as its own process
 * (`machinepay relayer start --config FILE`: SQLite in a temp dir, Hardhat's dev sender #1).
 * Every process is stopped by its PID: on `stop()`, on Ctrl-C and on exit.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Address,
  bytesToHex,
  createPublicClient,
  createWalletClient,
  type Hex,
  http,
  type PublicClient,
  type WalletClient,
} from "viem";
import { mnemonicToAccount, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { hardhat } from "viem/chains";
import { type MachinePayDomain, machinePayAbi, machinePayDomain, RelayerClient } from "../../sdk/src";
import { deployLocal, HARDHAT_KEYS, type LocalDeployment, mockUsdcAbi } from "../lib/deploy-local";
import { freePort, type HardhatNode, startHardhatNode, stopProcess } from "../lib/hardhat-node";

const ROOT = join(__dirname, "..", "..");
const CLI = join(ROOT, "relayer", "bin", "machinepay.js");

export const USDC = (n: number) => BigInt(Math.round(n * 1_000_000));

/** An owner account: one of Hardhat's public test keys (#0, #2..#5), or a fresh key with no ether. */
export type Owner = {
  /** What it stands for in the demo ("household", "mobility fleet", …). */
  name: string;
  /** Hardhat test key index, or undefined for a fresh key. */
  keyIndex?: number;
  key: Hex;
  account: PrivateKeyAccount;
  address: Address;
  wallet: WalletClient;
};

export type OwnerRole = "household" | "mobility" | "industry" | "logistics" | "sharing";

/** Which Hardhat key stands for which owner. #1 is the relayer's dev sender and is never an owner. */
export const OWNER_KEYS: Record<OwnerRole, { index: number; name: string }> = {
  household: { index: 0, name: "household" },
  mobility: { index: 2, name: "mobility fleet" },
  industry: { index: 3, name: "industry" },
  logistics: { index: 4, name: "logistics fleet" },
  sharing: { index: 5, name: "sharing customer" },
};

/** Relayer settings the demo and the tests run with (the rest are the relayer's defaults). */
export type RelayerSettings = {
  batchMaxAgeMs: number;
  pollMs: number;
  confirmations: number;
  /** Items whose deadline is closer than this are refused; a local node mines at once, so a few seconds do. */
  deadlineMarginSeconds: number;
  /** Tabs settle on POST /v1/settle, on closing, or this close to their deadline (threshold and age kept out of the way). */
  tabBeforeDeadlineSeconds: number;
  perDevicePerSecond: number;
  logLevel: string;
};

export const DEFAULT_RELAYER: RelayerSettings = {
  batchMaxAgeMs: 400,
  pollMs: 50,
  confirmations: 1,
  deadlineMarginSeconds: 8,
  tabBeforeDeadlineSeconds: 5,
  perDevicePerSecond: 1_000,
  logLevel: "warn",
};

export type StartEnvironmentParameters = {
  /** Where set-up steps are reported (one line each). */
  log?: (line: string) => void;
  relayer?: Partial<RelayerSettings>;
  /** USDC each Hardhat owner deposits into its escrow. */
  escrow?: bigint;
  /** Use the `machinepay` CLI for deploy, fund and freeze where it works (default true). */
  useCli?: boolean;
  /** The RPC URL the relayer is given, from the node's (a benchmark puts a timing proxy between them). */
  relayerRpc?: (nodeUrl: string) => string;
  /** The relayer's store, given as `--store` (default: a SQLite file in the temp dir); a postgres:// URL works too. */
  store?: string;
};

export type DemoEnvironment = {
  dir: string;
  rpcUrl: string;
  relayerUrl: string;
  adminToken: string;
  deploymentFile: string;
  deployment: LocalDeployment;
  domain: MachinePayDomain;
  token: Address;
  client: PublicClient;
  relayer: RelayerClient;
  owners: Record<OwnerRole, Owner>;
  /** Each owner's key in a file (mode 600), for `machinepay … --key-file`. */
  keyFiles: Record<OwnerRole, string>;
  settings: RelayerSettings;
  nodePid: number;
  relayerPid: number;
  relayerLog: string;
  /** How each set-up step was done ("machinepay deploy", or the fallback and why). */
  notes: string[];
  /** Run `machinepay ARGS --json` against this chain; resolves with the parsed JSON. */
  cli(args: string[]): Promise<Record<string, unknown>>;
  useCli: boolean;
  /** An owner for a fresh key (no ether, nothing deposited). */
  freshOwner(name: string, key: Hex): Owner;
  stop(): Promise<void>;
};

/** The mnemonic Hardhat derives its test accounts from (public, in Hardhat's documentation). */
const HARDHAT_MNEMONIC = "test test test test test test test test test test test junk";

/**
 * Hardhat's test key #index, checked against the account Hardhat funds: HARDHAT_KEYS as long as it
 * matches, else the key derived from Hardhat's mnemonic (and a note saying so).
 */
export function hardhatKey(index: number, notes?: string[]): Hex {
  const derived = mnemonicToAccount(HARDHAT_MNEMONIC, { addressIndex: index });
  const listed = HARDHAT_KEYS[index];
  if (listed && privateKeyToAccount(listed).address === derived.address) return listed;
  notes?.push(
    `scripts/lib/deploy-local.ts HARDHAT_KEYS[${index}] is not the key of Hardhat's account #${index} (${derived.address}): used the key derived from Hardhat's mnemonic`,
  );
  return bytesToHex(derived.getHdKey().privateKey!);
}

const chainFor = (url: string) => ({ ...hardhat, rpcUrls: { default: { http: [url] } } });

/** Run the machinepay CLI with this Node; resolves with stdout, rejects with its stderr. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`machinepay ${args[0]} exited ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}`));
    });
  });
}

/** Processes this module started and has not stopped yet: killed by PID if the runner exits first. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

async function stopTracked(child: ChildProcess | undefined, graceMs?: number) {
  if (!child) return;
  await stopProcess(child, graceMs);
  live.delete(child);
}

async function waitReady(url: string, child: ChildProcess, logFile: string, timeoutMs = 60_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the relayer exited (${child.exitCode}) before it was ready:\n${tail(logFile)}`);
    }
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`the relayer was not ready in ${timeoutMs} ms:\n${tail(logFile)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

function tail(file: string, lines = 20) {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Start node, deploy, fund the owners, start the relayer. On failure everything started is stopped. */
export async function startEnvironment({
  log = () => undefined,
  relayer: relayerOverrides = {},
  escrow = USDC(50_000),
  useCli = true,
  relayerRpc = (url) => url,
  store,
}: StartEnvironmentParameters = {}): Promise<DemoEnvironment> {
  const settings = { ...DEFAULT_RELAYER, ...relayerOverrides };
  const dir = mkdtempSync(join(tmpdir(), "machinepay-demo-"));
  const notes: string[] = [];
  let node: HardhatNode | undefined;
  let relayerProcess: ChildProcess | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  const stopAll = async () => {
    if (heartbeat) clearInterval(heartbeat);
    await stopTracked(relayerProcess, 10_000);
    if (node) await stopTracked(node.process);
  };
  try {
    node = await startHardhatNode();
    live.add(node.process);
    const rpcUrl = node.url;
    log(`hardhat node ${rpcUrl} (pid ${node.pid})`);
    const chain = chainFor(rpcUrl);
    // A local node mines at once: poll receipts every 50 ms, not viem's default 4 s.
    const client = createPublicClient({ chain, transport: http(rpcUrl), pollingInterval: 50 }) as PublicClient;
    // A block every second even when idle, as on a real chain (transactions are still mined at once):
    // the relayer's clock moves with blocks only, and an idle automining node mines none (see the report).
    heartbeat = setInterval(() => {
      client.request({ method: "evm_mine" as never }).catch(() => undefined);
    }, 1_000);
    heartbeat.unref();
    const deploymentFile = join(dir, "deployment.json");
    const cli = async (args: string[]) => {
      const out = await runCli([...args, "--json"], {
        MACHINEPAY_RPC_URL: rpcUrl,
        MACHINEPAY_DEPLOYMENT: deploymentFile,
      });
      return JSON.parse(out) as Record<string, unknown>;
    };

    // 1. Deploy.
    let deployment: LocalDeployment | undefined;
    if (useCli) {
      // A deployment id of its own: Ignition's journal for this throwaway chain is removed right after.
      const id = `demo-${process.pid}-${randomBytes(4).toString("hex")}`;
      try {
        await runCli(["deploy", "--rpc", rpcUrl, "--dev", "--out", deploymentFile, "--deployment-id", id, "--json"]);
        deployment = JSON.parse(readFileSync(deploymentFile, "utf8")) as LocalDeployment;
        notes.push("deployed with `machinepay deploy --dev` (Hardhat Ignition, create2)");
      } catch (e) {
        notes.push(`\`machinepay deploy\` failed (${(e as Error).message.slice(0, 160)}): deployed with deployLocal`);
      } finally {
        rmSync(join(ROOT, "ignition", "deployments", id), { recursive: true, force: true });
      }
    }
    if (!deployment) {
      deployment = await deployLocal(rpcUrl, { file: deploymentFile });
      if (!useCli) notes.push("deployed with scripts/lib/deploy-local.ts");
    }
    const token = deployment.tokens.USDC;
    log(`MachinePay ${deployment.machinePay}, MockUSDC ${token} (chain ${deployment.chainId})`);

    // 2. Owners: Hardhat's public test keys #0, #2..#5 mint MockUSDC and fund their escrows.
    const makeOwner = (name: string, key: Hex, keyIndex?: number): Owner => {
      const account = privateKeyToAccount(key);
      const wallet = createWalletClient({ account, chain, transport: http(rpcUrl), pollingInterval: 50 });
      return { name, keyIndex, key, account, address: account.address, wallet };
    };
    const owners = Object.fromEntries(
      Object.entries(OWNER_KEYS).map(([role, { index, name }]) => [
        role,
        makeOwner(name, hardhatKey(index, notes), index),
      ]),
    ) as Record<OwnerRole, Owner>;
    const usdcAbi = mockUsdcAbi();
    const wait = async (hash: Hex) => {
      const r = await client.waitForTransactionReceipt({ hash });
      if (r.status !== "success") throw new Error(`transaction ${hash} reverted`);
      return r;
    };
    await Promise.all(
      Object.values(owners).map(async (o) =>
        wait(
          await o.wallet.writeContract({
            address: token,
            abi: usdcAbi,
            functionName: "mint",
            args: [o.address, escrow],
            chain,
            account: o.account,
          }),
        ),
      ),
    );
    // Key files for the CLI (mode 600, in the temp dir): the keys never appear in a flag or a log.
    const keyFiles = {} as Record<OwnerRole, string>;
    for (const [role, o] of Object.entries(owners) as [OwnerRole, Owner][]) {
      keyFiles[role] = join(dir, `${role}.key`);
      writeFileSync(keyFiles[role], `${o.key}\n`, { mode: 0o600 });
    }
    let fundedBy = "viem";
    if (useCli) {
      try {
        await Promise.all(
          (Object.keys(owners) as OwnerRole[]).map((role) =>
            cli(["fund", "--key-file", keyFiles[role], "--amount", escrow.toString()]),
          ),
        );
        fundedBy = "`machinepay fund` (EIP-2612 permit: one transaction each)";
      } catch (e) {
        notes.push(`\`machinepay fund\` failed (${(e as Error).message.slice(0, 160)}): funded with viem`);
      }
    }
    for (const o of Object.values(owners)) {
      const balance = await client.readContract({
        address: deployment.machinePay,
        abi: machinePayAbi,
        functionName: "balanceOf",
        args: [o.address, token],
      });
      if (balance >= escrow) continue;
      await wait(
        await o.wallet.writeContract({
          address: token,
          abi: usdcAbi,
          functionName: "approve",
          args: [deployment.machinePay, escrow],
          chain,
          account: o.account,
        }),
      );
      await wait(
        await o.wallet.writeContract({
          address: deployment.machinePay,
          abi: machinePayAbi,
          functionName: "deposit",
          args: [token, escrow],
          chain,
          account: o.account,
        }),
      );
    }
    notes.push(`owners funded with ${fundedBy}`);
    log(
      `owners (Hardhat's public test keys: never use them for value) each escrowed ${Number(escrow) / 1e6} USDC: ${Object.values(
        owners,
      )
        .map((o) => `#${o.keyIndex} ${o.name}`)
        .join(", ")}`,
    );

    // 3. The relayer, as its own process.
    const port = await freePort();
    const adminToken = randomBytes(16).toString("hex");
    const configFile = join(dir, "relayer.json");
    writeFileSync(
      configFile,
      JSON.stringify(
        {
          rpcUrl: relayerRpc(rpcUrl),
          deployment: deploymentFile,
          store: join(dir, "relayer.db"),
          host: "127.0.0.1",
          port,
          adminToken,
          sender: { dev: true },
          confirmations: settings.confirmations,
          deadlineMarginSeconds: settings.deadlineMarginSeconds,
          batch: { maxAgeMs: settings.batchMaxAgeMs, pollMs: settings.pollMs },
          // Tabs wait for the end of their session (POST /v1/settle) or for their deadline.
          tabs: {
            threshold: "1000000000000",
            maxAgeMs: 3_600_000,
            beforeDeadlineSeconds: settings.tabBeforeDeadlineSeconds,
          },
          limits: { perDevicePerSecond: settings.perDevicePerSecond },
          logLevel: settings.logLevel,
        },
        null,
        2,
      ),
    );
    chmodSync(configFile, 0o600);
    const relayerLog = join(dir, "relayer.log");
    const fd = openSync(relayerLog, "a");
    const storeFlag = store === undefined ? [] : ["--store", store]; // the flag overrides the file's store
    relayerProcess = spawn(process.execPath, [CLI, "relayer", "start", "--config", configFile, ...storeFlag], {
      cwd: ROOT,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    live.add(relayerProcess);
    const relayerUrl = `http://127.0.0.1:${port}`;
    await waitReady(relayerUrl, relayerProcess, relayerLog);
    log(
      `relayer ${relayerUrl} (pid ${relayerProcess.pid}; ${store?.startsWith("postgres") ? "PostgreSQL" : `SQLite in ${dir}`}; sender: Hardhat's public test key #1; ` +
        `batches close after ${settings.batchMaxAgeMs} ms; ${settings.confirmations} confirmation)`,
    );

    const nodePid = node.pid;
    const relayerPid = relayerProcess.pid!;
    let stopped = false;
    return {
      dir,
      rpcUrl,
      relayerUrl,
      adminToken,
      deploymentFile,
      deployment,
      domain: machinePayDomain({ chainId: deployment.chainId, verifyingContract: deployment.machinePay }),
      token,
      client,
      relayer: new RelayerClient({ url: relayerUrl }),
      owners,
      keyFiles,
      settings,
      nodePid,
      relayerPid,
      relayerLog,
      notes,
      cli,
      useCli,
      freshOwner: (name, key) => makeOwner(name, key),
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopAll();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
