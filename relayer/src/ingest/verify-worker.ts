/** A VerifierPool worker: verifies the items it is sent with its own Verifier (see verify-pool.ts). */
import { parentPort, workerData } from "node:worker_threads";
import type { MachinePayDomain } from "@machinepay/sdk";
import { keccakReady, Verifier, type VerifyItem } from "./verify";

const verifier = new Verifier(workerData.domain as MachinePayDomain);

// Messages that arrive while the WebAssembly keccak loads wait for it (a few ms, once).
parentPort!.on("message", async (m: { seq: number; items: VerifyItem[] }) => {
  await keccakReady;
  parentPort!.postMessage({ seq: m.seq, results: m.items.map((it) => verifier.verify(it)) });
});
