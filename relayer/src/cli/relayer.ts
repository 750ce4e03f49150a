/** `machinepay relayer start`: config from --config, MACHINEPAY_* variables and flags (flags win). */
import { type Command, InvalidArgumentError } from "commander";
import { ConfigError, loadConfig } from "../config";

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};

export function relayerCommands(cli: Command): void {
  const relayer = cli.command("relayer").description("run the relayer service");
  relayer.addHelpText(
    "after",
    "\nExample:\n  machinepay relayer start --rpc http://127.0.0.1:8545 --deployment deployment.json --dev\n",
  );
  relayer
    .command("start")
    .description("start the relayer: HTTP API, durable store, batching and settlement")
    .option("-c, --config <file>", "JSON config file")
    .option("--rpc <url>", "JSON-RPC URL of the chain")
    .option("--deployment <file>", "deployment file (chain id, MachinePay address, deployment block)")
    .option("--store <path|url>", "SQLite file (default machinepay-relayer.db) or a postgres:// URL")
    .option("--host <host>", "address to listen on (default 127.0.0.1)")
    .option("--port <port>", "port to listen on (default 8787)", int("--port"))
    .option("--sender-key-file <file>", "file holding the sender's private key")
    .option(
      "--sender-keystore <file>",
      "encrypted JSON keystore of the sender (passphrase in MACHINEPAY_KEYSTORE_PASSPHRASE)",
    )
    .option("--dev", "use Hardhat's well-known test key as sender (local chains only: the key is public)")
    .option("--confirmations <n>", "blocks before an item counts as settled (default 2)", int("--confirmations"))
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent")
    .addHelpText(
      "after",
      "\nExample:\n  machinepay relayer start --rpc http://127.0.0.1:8545 --deployment deployment.json --dev\n",
    )
    .action(async (opts) => {
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig({
          file: opts.config,
          env: process.env,
          overrides: {
            rpcUrl: opts.rpc,
            deployment: opts.deployment,
            store: opts.store,
            host: opts.host,
            port: opts.port,
            "sender.keyFile": opts.senderKeyFile,
            "sender.keystore": opts.senderKeystore,
            "sender.dev": opts.dev ? true : undefined,
            confirmations: opts.confirmations,
            logLevel: opts.logLevel,
          },
        });
      } catch (e) {
        fail(e);
        return;
      }
      // Loaded here, not at the top: every other command starts faster without Fastify and SQLite.
      const { default: pino } = await import("pino");
      const { loggerOptions, startRelayer } = await import("../service");
      const log = pino(loggerOptions(config.logLevel));
      try {
        const running = await startRelayer({ config, env: process.env, logger: log });
        let stopping = false;
        const shutdown = (signal: string) => {
          if (stopping) return;
          stopping = true;
          log.info({ signal }, "draining: no new items; finishing the batches in flight");
          running.stop().then(
            () => process.exit(0),
            (e) => {
              log.error({ error: (e as Error).message }, "shutdown failed");
              process.exit(1);
            },
          );
        };
        process.on("SIGTERM", () => shutdown("SIGTERM"));
        process.on("SIGINT", () => shutdown("SIGINT"));
      } catch (e) {
        fail(e);
      }
    });
}

function fail(e: unknown): void {
  const err = e as Error & { code?: string };
  const known = e instanceof ConfigError || err.code === "SENDER_KEY" || err.name === "StoreError";
  process.stderr.write(`machinepay: ${known ? err.message : (err.stack ?? err.message)}\n`);
  process.exitCode = 2;
}
