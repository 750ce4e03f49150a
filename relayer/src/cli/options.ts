/**
 * Argument parsers and the options many commands share. Amounts are token units (integers, as the
 * contract and the HTTP API count them: 1 USDC = 1000000), `_` allowed as a digit separator.
 */

import type { Address, Hex } from "@machinepay/sdk";
import { type Command, InvalidArgumentError, Option } from "commander";
import { getAddress, isAddress, isHex } from "viem";

const U64 = (1n << 64n) - 1n;

export function parseAddress(value: string): Address {
  if (!isAddress(value, { strict: false })) {
    throw new InvalidArgumentError(`${value} is not an address (0x and 40 hex digits)`);
  }
  return getAddress(value);
}

/** Token units: a non-negative integer, `_` allowed ("2_500_000"). */
export function parseUnits(value: string): bigint {
  const s = value.replaceAll("_", "");
  if (!/^\d+$/.test(s)) {
    throw new InvalidArgumentError(
      `${value} is not an amount in token units (a whole number, e.g. 2500000 = 2.5 USDC)`,
    );
  }
  return BigInt(s);
}

/** A cap: token units that fit the contract's uint64. */
export function parseCap(value: string): bigint {
  const n = parseUnits(value);
  if (n > U64) throw new InvalidArgumentError(`${value} is above the uint64 cap limit (${U64})`);
  return n;
}

export function parseUint(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`${value} is not a non-negative integer`);
  }
  return Number(value);
}

export function parseBigUint(value: string): bigint {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${value} is not a non-negative integer`);
  return BigInt(value);
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400, w: 604_800 };

/** Seconds: `86400`, or with a unit: `90s`, `30m`, `12h`, `1d`, `2w`. */
export function parseDuration(value: string): number {
  const m = /^(\d+)([smhdw]?)$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${value} is not a duration (seconds, or 30m, 12h, 1d, 2w)`);
  const seconds = Number(m[1]) * UNIT_SECONDS[m[2] || "s"];
  if (!Number.isSafeInteger(seconds)) throw new InvalidArgumentError(`${value} is too long`);
  return seconds;
}

/** A point in time as unix seconds: `0`, `1795000000`, or an ISO 8601 date (`2027-01-31T00:00:00Z`). */
export function parseTime(value: string): number {
  if (/^\d+$/.test(value)) {
    const n = Number(value);
    if (n > 0xffffffff) throw new InvalidArgumentError(`${value} is beyond 2106: give unix seconds, not milliseconds`);
    return n;
  }
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new InvalidArgumentError(`${value} is neither unix seconds nor an ISO 8601 date`);
  return Math.floor(ms / 1000);
}

/** 32 bytes of hex, or a short text (up to 31 bytes) written left-aligned as bytes32. */
export function parseRef(value: string): Hex {
  if (isHex(value) && value.length === 66) return value.toLowerCase() as Hex;
  const bytes = Buffer.from(value, "utf8");
  if (bytes.length > 31)
    throw new InvalidArgumentError("a text --ref has at most 31 bytes; or give 0x and 64 hex digits");
  return `0x${bytes.toString("hex").padEnd(64, "0")}` as Hex;
}

/** Collect a repeatable option into an array. */
export function collect<T>(parse: (v: string) => T) {
  return (value: string, previous: T[] = []) => [...previous, parse(value)];
}

export type ChainOptions = { rpc: string; deployment: string };
export type KeyOptions = { keyFile?: string; keystore?: string; dev?: boolean };
export type JsonOption = { json?: boolean };

export function addJson(cmd: Command): Command {
  return cmd.option("--json", "print the result as JSON");
}

/** --rpc and --deployment (from MACHINEPAY_RPC_URL / MACHINEPAY_DEPLOYMENT when not given). */
export function addChain(cmd: Command): Command {
  return cmd
    .addOption(new Option("--rpc <url>", "JSON-RPC URL of the chain").env("MACHINEPAY_RPC_URL").makeOptionMandatory())
    .addOption(
      new Option("--deployment <file>", "deployment file written by `machinepay deploy`")
        .env("MACHINEPAY_DEPLOYMENT")
        .default("deployment.json"),
    );
}

/** The signing key: exactly one of --key-file, --keystore, --dev (checked when the command runs). */
export function addKey(cmd: Command, whose: string, dev = true): Command {
  cmd
    .option("--key-file <file>", `file holding ${whose} private key (one hex line, chmod 600)`)
    .option(
      "--keystore <file>",
      `encrypted JSON keystore holding ${whose} key (passphrase: prompted on a terminal, else MACHINEPAY_KEYSTORE_PASSPHRASE)`,
    );
  if (dev) cmd.option("--dev", "use Hardhat's test key #0 (public: local chains only)");
  return cmd;
}

/** --relayer (MACHINEPAY_RELAYER_URL), default the relayer's own default address. */
export function addRelayer(cmd: Command, required = true): Command {
  const option = new Option("--relayer <url>", "relayer base URL").env("MACHINEPAY_RELAYER_URL");
  return cmd.addOption(required ? option.default("http://127.0.0.1:8787") : option);
}

/** "Example:" help text after the options. */
export function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText(
    "after",
    `\nExample${lines.length > 1 ? "s" : ""}:\n${lines.map((l) => `  ${l}`).join("\n")}\n`,
  );
}

/** An option with a parser and a default shown as written (`10m`, not 600; bigints, which commander cannot print). */
export function withDefault<T>(flags: string, description: string, parse: (v: string) => T, value: T, shown: string) {
  return new Option(flags, description).argParser(parse).default(value, shown);
}
