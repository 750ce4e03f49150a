/**
 * keccak-256 for every stage: item digests and ids (ingest), transaction hashes (chain, batcher).
 * Natively through the `keccak` binding, or through hash-wasm's WebAssembly keccak once it loads.
 */
import type { Keccak256 } from "@machinepay/sdk";

// The native binding, not the package's main entry: that falls back silently to pure JS when the
// prebuilt binary does not load; we want the error.
const createKeccakHash: typeof import("keccak") = require("keccak/bindings");

/**
 * keccak-256 through the native `keccak` package. `pnpm bench:verify` on the 2-core machine (one
 * core, medians, load average ~3 from other work): 64 bytes 8.8 µs native vs 21.7 µs for
 * @noble/hashes through viem, 66 bytes 8.8 vs 17.7, 224 bytes 8.6 vs 37.4, 256 bytes 9.2 vs 40.9.
 * The N-API call costs more than hashing one block; WebAssembly pays no such call, so
 * `fastKeccak256` uses this only until hash-wasm has loaded.
 */
export const nativeKeccak256: Keccak256 = (data) =>
  createKeccakHash("keccak256")
    .update(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength))
    .digest();

type WasmKeccak = { init(): unknown; update(data: Uint8Array): unknown; digest(format: "binary"): Uint8Array };
let wasmKeccak: WasmKeccak | undefined;

/**
 * Loads hash-wasm's keccak (WebAssembly: compiled asynchronously, so `fastKeccak256` answers
 * through the native binding until this resolves). Starts on import; the service awaits it
 * before it takes requests, and so does each verify worker before its first message.
 */
export const keccakReady: Promise<void> = import("hash-wasm")
  .then(async ({ createKeccak }) => {
    wasmKeccak = (await createKeccak(256)) as unknown as WasmKeccak;
  })
  .catch((e) => {
    // Not fatal (the module or its compilation failed): the native binding hashes alike, a few µs
    // slower per call.
    process.emitWarning(`hash-wasm keccak did not load (${(e as Error).message}); hashing through the native binding`);
  });

/** Which keccak `fastKeccak256` uses now. */
export const keccakBackend = (): "wasm" | "native" => (wasmKeccak ? "wasm" : "native");

/**
 * keccak-256 for the Verifier, item ids and transaction hashes: hash-wasm's WebAssembly keccak
 * once it is loaded, the native binding before. WebAssembly has no N-API call to pay: 2.1–2.6 µs
 * per call for 64 to 256 bytes here, against 7.6–9.4 µs native, and a Verifier pass ~20% faster
 * (160 → 131 µs per item, one core). One hasher per thread, used synchronously start to end: calls
 * never interleave, and `digest` returns a copy.
 */
export const fastKeccak256: Keccak256 = (data) => {
  const h = wasmKeccak;
  if (!h) return nativeKeccak256(data);
  h.init();
  h.update(data);
  return h.digest("binary");
};
