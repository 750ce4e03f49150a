/**
 * Crash points for the crash-safety suite: with MACHINEPAY_FAULT=stage:n set, the n-th time the
 * relayer reaches `stage` (default the first) it kills itself with SIGKILL, exactly there: no
 * cleanup, no flush, as a power cut would. Unset (always, outside that suite) this is one map
 * lookup. Stages, in the order an item meets them:
 *
 *   after-write          ingest committed the item, the answer is not sent
 *   after-batch-row      the batch row and its nonce are written, nothing is signed
 *   after-attempt-row    the signed transaction is written, not broadcast
 *   after-broadcast      the node took the transaction, the store does not know
 *   after-receipt        a receipt was read, the batch is not marked mined
 *   before-confirm       the batch is mined and deep enough, not marked confirmed
 */
export const FAULT_STAGES = [
  "after-write",
  "after-batch-row",
  "after-attempt-row",
  "after-broadcast",
  "after-receipt",
  "before-confirm",
] as const;
export type FaultStage = (typeof FAULT_STAGES)[number];

const armed = parse(process.env.MACHINEPAY_FAULT);
let seen = 0;

function parse(spec: string | undefined): { stage: FaultStage; at: number } | undefined {
  if (!spec) return undefined;
  const [stage, n] = spec.split(":");
  if (!(FAULT_STAGES as readonly string[]).includes(stage)) {
    throw new Error(`MACHINEPAY_FAULT=${spec}: the stage must be one of ${FAULT_STAGES.join(", ")}`);
  }
  return { stage: stage as FaultStage, at: n ? Math.max(1, Number(n)) : 1 };
}

/** Dies here if the crash-safety suite armed this stage (see the module comment). */
export function crashPoint(stage: FaultStage): void {
  if (armed?.stage !== stage || ++seen < armed.at) return;
  process.kill(process.pid, "SIGKILL");
}
