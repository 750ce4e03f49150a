/**
 * Keys for CLI commands: a key file or an encrypted keystore (loaded by the relayer's own
 * chain/sender.ts), or with --dev Hardhat's public test key #0. Keys never come from flags and are
 * never printed; a keystore's passphrase comes from MACHINEPAY_KEYSTORE_PASSPHRASE or, on a
 * terminal, from a prompt that does not echo.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import type { Hex } from "viem";
import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { decryptKeystore, loadSender } from "../chain/sender";
import type { KeyOptions } from "./options";
import { note, UsageError } from "./output";

/** Hardhat's account #0 (its key is in Hardhat's documentation: never use it for value). */
export const HARDHAT_KEY_0: Hex = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

export const PASSPHRASE_ENV = "MACHINEPAY_KEYSTORE_PASSPHRASE";

/** Chain ids of local development chains (Hardhat, Anvil, Ganache): the only ones --dev may touch. */
export const DEV_CHAIN_IDS = [31337, 1337];

export type LoadKeyParameters = {
  /** Whose key, for messages: "the owner's", "the device's". */
  whose: string;
  env?: Record<string, string | undefined>;
  /** Whether --dev is allowed for this command. */
  allowDev?: boolean;
};

type KeyMaterial = { key: Hex; dev: boolean };

/** The private key behind the options; exactly one of keyFile, keystore, dev. */
async function loadKeyMaterial(
  opts: KeyOptions,
  { whose, env = process.env, allowDev = true }: LoadKeyParameters,
): Promise<KeyMaterial> {
  const given = [opts.keyFile && "--key-file", opts.keystore && "--keystore", opts.dev && "--dev"].filter(Boolean);
  if (given.length !== 1) {
    const choices = allowDev ? "--key-file FILE, --keystore FILE or --dev" : "--key-file FILE or --keystore FILE";
    throw new UsageError(
      given.length === 0 ? `give ${whose} key: ${choices}` : `give only one of ${given.join(", ")} (${whose} key)`,
    );
  }
  if (opts.dev) {
    if (!allowDev) throw new UsageError(`--dev is not available here: give ${whose} key with --key-file or --keystore`);
    note(
      `--dev: signing with Hardhat's test key #0 (${privateKeyToAccount(HARDHAT_KEY_0).address}); its key is public: local chains only`,
    );
    return { key: HARDHAT_KEY_0, dev: true };
  }
  const file = (opts.keyFile ?? opts.keystore) as string;
  if (!existsSync(file)) {
    throw new UsageError(
      `${opts.keyFile ? "key file" : "keystore"} ${file} (${whose} key) does not exist: check the path` +
        (opts.keyFile && whose.includes("device") ? " (`machinepay device new --out FILE` writes one)" : ""),
    );
  }
  if (opts.keyFile) {
    // loadSender checks the format and warns about a file others can read; the key is read once more here.
    loadSender({ keyFile: file, passphraseEnv: PASSPHRASE_ENV, dev: false }, env);
    const text = readFileSync(file, "utf8").trim();
    return { key: (text.startsWith("0x") ? text : `0x${text}`) as Hex, dev: false };
  }
  const passphrase = env[PASSPHRASE_ENV] ?? (await promptPassphrase(`passphrase for ${file}: `));
  return { key: decryptKeystore(readFileSync(file, "utf8"), passphrase), dev: false };
}

/** Load the account a command signs with; exactly one of keyFile, keystore, dev. */
export async function loadKey(
  opts: KeyOptions,
  params: LoadKeyParameters,
): Promise<PrivateKeyAccount & { dev: boolean }> {
  const { key, dev } = await loadKeyMaterial(opts, params);
  return Object.assign(privateKeyToAccount(key), { dev });
}

/**
 * The key itself, for the one place that must hand it on: `deploy` gives it to its Hardhat child
 * process in an environment variable (never a flag, a file or a log).
 */
export async function loadPrivateKey(opts: KeyOptions, params: LoadKeyParameters): Promise<KeyMaterial> {
  return loadKeyMaterial(opts, params);
}

/** Refuse --dev anywhere but a local chain: its key is public, anything it holds elsewhere is gone. */
export function assertDevChain(chainId: number, dev: boolean): void {
  if (dev && !DEV_CHAIN_IDS.includes(chainId)) {
    throw new UsageError(
      `--dev signs with a public key and works only on a local chain (ids ${DEV_CHAIN_IDS.join(", ")}); this RPC is chain ${chainId}: use --key-file or --keystore`,
    );
  }
}

/** Read a passphrase from the terminal without echoing it; refuses when stdin is not a terminal. */
export async function promptPassphrase(question: string): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new UsageError(`set ${PASSPHRASE_ENV} to the keystore's passphrase (stdin is not a terminal to ask on)`);
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const out = rl as unknown as { _writeToOutput: (s: string) => void };
  let muted = false;
  out._writeToOutput = (s: string) => {
    if (!muted) process.stderr.write(s);
  };
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      process.stderr.write("\n");
      resolve(answer);
    });
    muted = true;
  });
}

/** Write a fresh private key to `path` (mode 0600, refusing to overwrite unless `force`); returns the account. */
export function writeNewKeyFile(path: string, force = false): PrivateKeyAccount {
  if (existsSync(path) && !force) {
    throw new UsageError(
      `${path} exists: pick another --out, or pass --force to replace the key in it (the old key is lost)`,
    );
  }
  const key = generatePrivateKey();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${key}\n`, { mode: 0o600, flag: force ? "w" : "wx" });
  chmodSync(path, 0o600); // an overwritten file keeps its old mode otherwise
  return privateKeyToAccount(key);
}
