/**
 * The relayer's sender key: from a key file, an encrypted JSON keystore (Web3 Secret Storage v3,
 * as geth and ethers write it) or, with an explicit dev flag, Hardhat's well-known test key. The
 * key is never logged; only the address and where it came from are.
 */
import { createDecipheriv, pbkdf2Sync, scryptSync, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { type Hex, keccak256, serializeTransaction, type TransactionSerializable } from "viem";
import { type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import { fastKeccak256 } from "../keccak";

// The native binding (not the package's main entry, which falls back silently to pure JS).
const secp256k1: typeof import("secp256k1") = require("secp256k1/bindings");

/** Hardhat's account #1 (account #0 deploys): public test keys, never for value. */
export const HARDHAT_DEV_SENDER_KEY: Hex = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

export class SenderKeyError extends Error {
  readonly code = "SENDER_KEY";
  constructor(message: string) {
    super(message);
    this.name = "SenderKeyError";
  }
}

export type SenderKeySource = { keyFile?: string; keystore?: string; passphraseEnv: string; dev: boolean };

export type LoadedSender = {
  account: PrivateKeyAccount;
  source: "key file" | "keystore" | "dev (Hardhat test key, public)";
};

const KEY = /^(0x)?[0-9a-fA-F]{64}$/;

/** The transaction hash of a signed raw transaction (keccak-256 of its bytes). */
export function transactionHash(raw: Hex): Hex {
  return `0x${Buffer.from(fastKeccak256(Buffer.from(raw.slice(2), "hex"))).toString("hex")}`;
}

/**
 * viem's account for `key`, whose transactions are signed with native secp256k1 over the
 * WebAssembly keccak instead of viem's JavaScript ones: the same bytes (both sign by RFC 6979, low
 * s), in ~4 ms instead of ~23 for a 500-item batch (80 KB of calldata), which the event loop spent
 * blocked. Everything else is viem's account as it is.
 */
export function accountOf(key: Hex): PrivateKeyAccount {
  const account = privateKeyToAccount(key);
  const secret = Buffer.from(key.slice(2), "hex");
  const signTransaction = async (
    transaction: TransactionSerializable,
    options?: { serializer?: (tx: TransactionSerializable, signature?: unknown) => Hex | Promise<Hex> },
  ): Promise<Hex> => {
    const serializer = options?.serializer ?? serializeTransaction;
    // As viem does: a blob transaction is signed without its sidecars.
    const signable = transaction.type === "eip4844" ? { ...transaction, sidecars: false } : transaction;
    const unsigned = await serializer(signable as TransactionSerializable);
    const digest = fastKeccak256(Buffer.from(unsigned.slice(2), "hex"));
    const { signature, recid } = secp256k1.ecdsaSign(digest, secret);
    const hex = (b: Uint8Array) => `0x${Buffer.from(b).toString("hex")}` as Hex;
    return serializer(transaction, {
      r: hex(signature.subarray(0, 32)),
      s: hex(signature.subarray(32, 64)),
      v: BigInt(27 + recid),
      yParity: recid,
    });
  };
  return { ...account, signTransaction: signTransaction as PrivateKeyAccount["signTransaction"] };
}

/** Load the sender account; `env` supplies the keystore passphrase (from the variable the config names). */
export function loadSender(source: SenderKeySource, env: Record<string, string | undefined>): LoadedSender {
  if (source.dev) return { account: accountOf(HARDHAT_DEV_SENDER_KEY), source: "dev (Hardhat test key, public)" };
  if (source.keyFile) {
    let text: string;
    try {
      text = readFileSync(source.keyFile, "utf8").trim();
    } catch (e) {
      throw new SenderKeyError(`cannot read the sender key file ${source.keyFile}: ${(e as Error).message}`);
    }
    if (!KEY.test(text)) {
      throw new SenderKeyError(`${source.keyFile} must hold one 32-byte hex private key (64 hex digits, optional 0x)`);
    }
    const mode = statSync(source.keyFile).mode & 0o077;
    if (mode !== 0 && process.platform !== "win32") {
      // Not fatal: say so, so the operator tightens it.
      process.emitWarning(`sender key file ${source.keyFile} is readable by group or others: chmod 600 it`);
    }
    return { account: accountOf((text.startsWith("0x") ? text : `0x${text}`) as Hex), source: "key file" };
  }
  if (source.keystore) {
    const passphrase = env[source.passphraseEnv];
    if (passphrase === undefined) {
      throw new SenderKeyError(`set ${source.passphraseEnv} to the keystore's passphrase (it is never logged)`);
    }
    return {
      account: accountOf(decryptKeystore(readFileSync(source.keystore, "utf8"), passphrase)),
      source: "keystore",
    };
  }
  throw new SenderKeyError("no sender key: give sender.keyFile, sender.keystore, or sender.dev for a local chain");
}

type Keystore = {
  crypto?: KeystoreCrypto;
  Crypto?: KeystoreCrypto;
};
type KeystoreCrypto = {
  cipher: string;
  ciphertext: string;
  cipherparams: { iv: string };
  kdf: "scrypt" | "pbkdf2";
  kdfparams: { dklen: number; salt: string; n?: number; r?: number; p?: number; c?: number; prf?: string };
  mac: string;
};

/** Decrypt a Web3 Secret Storage v3 keystore (scrypt or pbkdf2, aes-128-ctr); returns the private key. */
export function decryptKeystore(json: string, passphrase: string): Hex {
  let ks: Keystore;
  try {
    ks = JSON.parse(json);
  } catch {
    throw new SenderKeyError("the keystore is not valid JSON");
  }
  const c = ks.crypto ?? ks.Crypto;
  if (c?.cipher !== "aes-128-ctr")
    throw new SenderKeyError("unsupported keystore: want a v3 keystore with aes-128-ctr");
  const salt = Buffer.from(c.kdfparams.salt, "hex");
  const password = Buffer.from(passphrase.normalize("NFKC"), "utf8");
  let derived: Buffer;
  if (c.kdf === "scrypt") {
    const { n = 0, r = 8, p = 1, dklen } = c.kdfparams;
    derived = scryptSync(password, salt, dklen, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 });
  } else if (c.kdf === "pbkdf2") {
    if (c.kdfparams.prf !== "hmac-sha256") throw new SenderKeyError("unsupported keystore pbkdf2 prf");
    derived = pbkdf2Sync(password, salt, c.kdfparams.c ?? 0, c.kdfparams.dklen, "sha256");
  } else {
    throw new SenderKeyError(`unsupported keystore kdf ${String(c.kdf)}`);
  }
  const ciphertext = Buffer.from(c.ciphertext, "hex");
  const mac = Buffer.from(keccak256(Buffer.concat([derived.subarray(16, 32), ciphertext])).slice(2), "hex");
  const expected = Buffer.from(c.mac, "hex");
  if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) {
    throw new SenderKeyError("wrong keystore passphrase (or a damaged keystore)");
  }
  const decipher = createDecipheriv("aes-128-ctr", derived.subarray(0, 16), Buffer.from(c.cipherparams.iv, "hex"));
  const key = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  return `0x${key.toString("hex")}` as Hex;
}
