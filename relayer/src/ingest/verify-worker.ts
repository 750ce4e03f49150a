/** A VerifierPool worker: verifies the items it is sent with its own Verifier (see verify-pool.ts). */
import { parentPort, workerData } from "node:worker_threads";
import type { MachinePayDomain } from "@machinepay/sdk";
import { Verifier, type VerifyItem } from "./verify";

const verifier = new Verifier(workerData.domain as MachinePayDomain);

parentPort!.on("message", (m: { seq: number; items: VerifyItem[] }) => {
  parentPort!.postMessage({ seq: m.seq, results: m.items.map((it) => verifier.verify(it)) });
});
