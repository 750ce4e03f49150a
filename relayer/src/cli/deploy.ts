/**
 * `machinepay deploy`: runs the Ignition module (ignition/modules/MachinePay.ts, or MachinePayDev.ts
 * with MockUSDC on a local chain) through `hardhat ignition deploy` in a child process, on the
 * `machinepay` network of hardhat.config.ts whose URL and key come from environment variables set
 * for that child only. Ignition keeps a journal in ignition/deployments/<id>, so a re-run resumes
 * and an interrupted deployment never deploys twice. Then the deployment file the relayer and every
 * command read is written from Ignition's results and checked against the chain.
 *
 * Why a child process and not ignition-core's deploy(): deploy() wants an EIP-1193 provider that
 * signs, an artifact resolver and Hardhat's config; `hardhat ignition deploy` builds all of those
 * from hardhat.config.ts, and it is the interface Ignition documents.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { machinePayAbi } from "@machinepay/sdk";
import { type Command, InvalidArgumentError, Option } from "commander";
import { type Address, createPublicClient, getAddress, http, isAddress } from "viem";
import { type Deployment, deploymentSchema, loadDeployment } from "../config";
import { chainFor, rpcChainId } from "./chain";
import { assertDevChain, DEV_CHAIN_IDS, loadPrivateKey } from "./keys";
import { addJson, addKey, example, type JsonOption, type KeyOptions, parseDuration, withDefault } from "./options";
import { action, emit, keyValues, note, RuntimeError, UsageError } from "./output";

/** The monorepo root: hardhat.config.ts, contracts/, ignition/. */
const ROOT = join(__dirname, "..", "..", "..");

/** CreateX, the factory Ignition's create2 strategy deploys through (same address on every chain that has it). */
const CREATEX: Address = "0xba5Ed099633D3B313e4D5F7bdc1305d3c28ba5Ed";

/** Ignition deploys CreateX itself only on this chain id (a Hardhat node); elsewhere it must exist already. */
const HARDHAT_CHAIN_ID = 31337;

type DeployOpts = KeyOptions &
  JsonOption & {
    rpc: string;
    out: string;
    noticePeriod: number;
    strategy?: "create2" | "basic";
    deploymentId?: string;
    token?: string[];
    yes?: boolean;
  };

function parseTokens(specs: string[] = []): Record<string, Address> {
  const out: Record<string, Address> = {};
  for (const spec of specs) {
    const m = /^([A-Za-z][A-Za-z0-9._-]*)=(.+)$/.exec(spec);
    if (!m || !isAddress(m[2], { strict: false }))
      throw new UsageError(`--token ${spec}: want SYMBOL=ADDRESS (USDC=0x…)`);
    out[m[1]] = getAddress(m[2]);
  }
  return out;
}

type JournalLine = { type?: string; futureId?: string; receipt?: { blockNumber?: number } };

/** The block of the transaction that deployed `futureId`, from Ignition's journal. */
function deployBlock(journalFile: string, futureId: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(journalFile, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    if (!line.includes("TRANSACTION_CONFIRM") || !line.includes(futureId)) continue;
    const msg = JSON.parse(line) as JournalLine;
    if (msg.type === "TRANSACTION_CONFIRM" && msg.futureId === futureId && msg.receipt?.blockNumber !== undefined) {
      return Number(msg.receipt.blockNumber);
    }
  }
  return undefined;
}

function runIgnition(args: string[], env: Record<string, string>, interactive: boolean): Promise<number> {
  const cli = require.resolve("hardhat/internal/cli/cli.js", { paths: [ROOT] });
  return new Promise((resolve, reject) => {
    // Ignition's progress goes to our stderr: stdout stays the command's result.
    const child = spawn(process.execPath, [cli, ...args], {
      cwd: ROOT,
      env: { ...process.env, HARDHAT_DISABLE_TELEMETRY_PROMPT: "true", ...env },
      stdio: [interactive ? "inherit" : "ignore", 2, 2],
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function deploy(opts: DeployOpts) {
  const tokens = parseTokens(opts.token);
  const { key, dev } = await loadPrivateKey(opts, { whose: "the deployer's" });
  const chainId = await rpcChainId(opts.rpc);
  assertDevChain(chainId, dev);
  const local = DEV_CHAIN_IDS.includes(chainId);
  const client = createPublicClient({
    chain: chainFor(chainId, opts.rpc),
    transport: http(opts.rpc, { retryCount: 2 }),
  });

  let strategy = opts.strategy;
  if (!strategy) {
    const hasCreateX = (await client.getCode({ address: CREATEX })) !== undefined;
    strategy = hasCreateX || chainId === HARDHAT_CHAIN_ID ? "create2" : "basic";
    if (strategy === "basic") {
      note(
        `CreateX is not on chain ${chainId}: deploying with Ignition's basic strategy (addresses follow the deployer's nonce)`,
      );
    }
  }
  const interactive = chainId !== HARDHAT_CHAIN_ID && !opts.yes;
  if (interactive && !process.stdin.isTTY) {
    throw new UsageError(`deploying to chain ${chainId}: pass --yes to confirm without a terminal`);
  }
  const moduleName = local ? "MachinePayDev" : "MachinePay";
  const deploymentId = opts.deploymentId ?? `chain-${chainId}`;
  const dir = mkdtempSync(join(tmpdir(), "machinepay-deploy-"));
  const parameters = join(dir, "parameters.json");
  writeFileSync(parameters, JSON.stringify({ MachinePay: { noticePeriod: opts.noticePeriod } }));
  note(`deploying ${moduleName} to chain ${chainId} with Ignition (${strategy}), deployment id ${deploymentId}`);
  let code: number;
  try {
    code = await runIgnition(
      [
        "ignition",
        "deploy",
        join(ROOT, "ignition", "modules", `${moduleName}.ts`),
        "--network",
        "machinepay",
        "--strategy",
        strategy,
        "--parameters",
        parameters,
        "--deployment-id",
        deploymentId,
      ],
      {
        MACHINEPAY_DEPLOY_RPC_URL: opts.rpc,
        MACHINEPAY_DEPLOY_KEY: key,
        ...(opts.yes ? { HARDHAT_IGNITION_CONFIRM_DEPLOYMENT: "true" } : {}),
      },
      interactive,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const journalDir = join(ROOT, "ignition", "deployments", deploymentId);
  if (code !== 0) {
    throw new RuntimeError(
      `hardhat ignition deploy failed (exit ${code}): see its output above; its journal in ${journalDir} lets a re-run resume`,
    );
  }

  const addresses = JSON.parse(readFileSync(join(journalDir, "deployed_addresses.json"), "utf8")) as Record<
    string,
    string
  >;
  const machinePay = addresses["MachinePay#MachinePay"];
  if (!machinePay)
    throw new RuntimeError(`${journalDir} names no MachinePay#MachinePay: the Ignition run did not finish`);
  if (local && addresses["MachinePayDev#MockUSDC"] && !tokens.USDC)
    tokens.USDC = getAddress(addresses["MachinePayDev#MockUSDC"]);
  const noticePeriod = Number(
    await client.readContract({ address: getAddress(machinePay), abi: machinePayAbi, functionName: "NOTICE_PERIOD" }),
  );
  if (noticePeriod !== opts.noticePeriod) {
    throw new UsageError(
      `MachinePay at ${machinePay} (deployment id ${deploymentId}) has a notice period of ${noticePeriod} s, not ${opts.noticePeriod}: pass --notice-period ${noticePeriod}, or a new --deployment-id for another deployment`,
    );
  }
  let deploymentBlock = deployBlock(join(journalDir, "journal.jsonl"), "MachinePay#MachinePay");
  if (deploymentBlock === undefined) {
    note("the Ignition journal holds no receipt for MachinePay: the relayer will read events from block 0");
    deploymentBlock = 0;
  }
  const deployment: Deployment = deploymentSchema.parse({
    chainId,
    machinePay: getAddress(machinePay),
    tokens,
    deploymentBlock,
    noticePeriod,
  });
  const file = { ...deployment, machinePay: getAddress(deployment.machinePay), tokens };
  writeFileSync(opts.out, `${JSON.stringify(file, null, 2)}\n`);
  loadDeployment(opts.out); // what every command will read
  emit(opts, { ...file, file: opts.out, strategy, deploymentId }, () => [
    keyValues([
      ["chainId", chainId],
      ["machinePay", file.machinePay],
      ...Object.entries(tokens).map(([s, a]) => [s, a] as [string, unknown]),
      ["deploymentBlock", deploymentBlock],
      ["noticePeriod", `${noticePeriod} s`],
      ["strategy", strategy],
    ]),
    `wrote ${opts.out}`,
  ]);
}

export function deployCommand(cli: Command): void {
  const cmd = addJson(
    addKey(
      cli
        .command("deploy")
        .description(
          "deploy MachinePay with Hardhat Ignition (create2 where CreateX exists; MockUSDC too on a local chain) and write the deployment file",
        )
        .addOption(
          new Option("--rpc <url>", "JSON-RPC URL of the chain").env("MACHINEPAY_RPC_URL").makeOptionMandatory(),
        ),
      "the deployer's",
    ),
  )
    .option("--out <file>", "deployment file to write", "deployment.json")
    .addOption(
      withDefault(
        "--notice-period <duration>",
        "withdrawal notice period: seconds, or 12h, 2d",
        parseDuration,
        2 * 86_400,
        "2d",
      ),
    )
    .option(
      "--strategy <name>",
      "Ignition strategy: create2 or basic (default create2 where the chain allows)",
      (v: string) => {
        if (v !== "create2" && v !== "basic") throw new InvalidArgumentError("--strategy is create2 or basic");
        return v;
      },
    )
    .option(
      "--deployment-id <id>",
      "Ignition deployment id: its journal is ignition/deployments/<id> (default chain-<chainId>)",
    )
    .option(
      "--token <symbol=address>",
      "record a known token in the deployment file (repeatable): USDC=0x…",
      (v: string, p: string[] = []) => [...p, v],
    )
    .option("--yes", "deploy to a public chain without Ignition's confirmation prompt");
  example(
    cmd.action(action(deploy)),
    "machinepay deploy --rpc http://127.0.0.1:8545 --dev --out deployment.json",
    "machinepay deploy --rpc https://sepolia.example --keystore deployer.json --notice-period 2d --token USDC=0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238",
  );
}
