/**
 * What the CLI prints and how it fails. Data goes to stdout (JSON with --json, else short lines a
 * person reads); progress, warnings and errors go to stderr. Exit codes: 2 for usage and
 * configuration errors (the command line or a file is wrong), 1 for runtime failures (the chain,
 * the relayer or a transaction said no).
 */
import { PaymentRejectedError, RelayerError, RelayerUnavailableError, SettlementTimeoutError } from "@machinepay/sdk";
import { SenderKeyError } from "../chain/sender";
import { ConfigError } from "../config";

/** A usage or configuration error: the user fixes the command line or a file (exit 2). */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The world said no: an RPC failed, a transaction reverted, the relayer refused (exit 1). */
export class RuntimeError extends Error {
  readonly exitCode = 1;
  constructor(message: string) {
    super(message);
    this.name = "RuntimeError";
  }
}

/** JSON with bigints as decimal strings (the wire format's convention). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2);
}

export type OutputOptions = { json?: boolean };

/** Print a command's result: `data` as JSON with --json, else the human lines. */
export function emit(opts: OutputOptions, data: unknown, human: () => string | string[]): void {
  if (opts.json) {
    process.stdout.write(`${toJson(data)}\n`);
    return;
  }
  const lines = human();
  process.stdout.write(`${Array.isArray(lines) ? lines.join("\n") : lines}\n`);
}

/** Aligned `key  value` lines. */
export function keyValues(rows: [string, unknown][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v === undefined || v === null ? "-" : String(v)}`).join("\n");
}

/** A plain text table (header row, then rows), columns padded to their widest cell. */
export function table(header: string[], rows: unknown[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === undefined || c === null ? "-" : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** A note for the person at the terminal (stderr, so stdout stays data). */
export function note(message: string): void {
  process.stderr.write(`machinepay: ${message}\n`);
}

/** The message and exit code for any error an action throws. */
export function describeError(e: unknown): { message: string; exitCode: 1 | 2 } {
  if (e instanceof UsageError || e instanceof ConfigError || e instanceof SenderKeyError) {
    return { message: e.message, exitCode: 2 };
  }
  if (e instanceof RuntimeError) return { message: e.message, exitCode: 1 };
  if (e instanceof RelayerError) {
    return { message: `the relayer answered ${e.status} ${e.code}: ${e.message}`, exitCode: 1 };
  }
  if (e instanceof RelayerUnavailableError) {
    return { message: `${e.message} (is the relayer running at that URL? try again later)`, exitCode: 1 };
  }
  if (e instanceof PaymentRejectedError || e instanceof SettlementTimeoutError) {
    return { message: e.message, exitCode: 1 };
  }
  const err = e as Error;
  // Anything else is unexpected: keep the stack so it can be reported.
  return { message: err?.stack ?? String(e), exitCode: 1 };
}

/** Wrap an action: print its error on stderr and set the exit code, never throw out of commander. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      const { message, exitCode } = describeError(e);
      process.stderr.write(`machinepay: ${message}\n`);
      process.exitCode = exitCode;
    }
  };
}
