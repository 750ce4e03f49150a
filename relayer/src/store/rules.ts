// The state-machine checks every backend makes inside its transactions, on rows it has just read
// (and, in PostgreSQL, locked): one copy, so both backends refuse the same things with the same
// codes, messages and details.

import { hostname } from "node:os";
import { StoreError } from "./errors";
import { conflict, isOpen, notFound } from "./rows";
import {
  BATCH_TRANSITIONS,
  type BatchKind,
  type BatchRow,
  type BatchStatus,
  type Hex,
  type ItemRow,
  type ItemStatus,
  type NewAttempt,
  OWNER_MESSAGE_TRANSITIONS,
  type OwnerMessageRow,
  type OwnerMessageStatus,
} from "./types";

export type BatchCandidate = { status: ItemStatus; kind: string; token: string };

/** createBatch: every item must be accepted and of the batch's kind and token. */
export function assertBatchable(
  batch: { itemIds: readonly Hex[]; kind: BatchKind; token: Hex },
  lookup: (id: Hex) => BatchCandidate | undefined,
): void {
  const refused: { id: Hex; status: ItemStatus | null }[] = [];
  for (const id of batch.itemIds) {
    const r = lookup(id);
    if (r?.status !== "accepted" || r.kind !== batch.kind || r.token !== batch.token) {
      refused.push({ id, status: r?.status ?? null });
    }
  }
  if (refused.length > 0) {
    throw conflict(
      `${refused.length} of the batch's items are unknown, not accepted any more, or of another kind or token: ` +
        "re-read the ready items and build the batch again",
      { refused },
    );
  }
}

/** createBatch of an owner message: the message must be accepted and of the batch's kind. */
export function assertMessageBatchable(
  batch: { messageId: Hex; kind: BatchKind },
  message: OwnerMessageRow | null,
): void {
  const m = message;
  if (m?.status !== "accepted" || m.kind !== batch.kind) {
    throw conflict(
      `owner message ${batch.messageId} is ${m ? `${m.kind}, ${m.status}` : "unknown"}: only an accepted ${batch.kind} can be submitted`,
      { messageId: batch.messageId, status: m?.status ?? null },
    );
  }
}

export const nonceInUse = (sender: Hex, nonce: number) =>
  new StoreError(
    "NONCE_IN_USE",
    `nonce ${nonce} of ${sender} belongs to another batch: add an attempt to that batch, or take nextNonce`,
    { sender, nonce },
  );

export const batchNotFound = (id: number) => notFound(`batch ${id}`, { batchId: id });

/** addAttempt: only a created or sent batch takes transactions, each at the batch's nonce. */
export function assertTakesAttempt(batch: BatchRow, attempt: NewAttempt): void {
  if (batch.status !== "created" && batch.status !== "sent") {
    throw conflict(`batch ${batch.id} is ${batch.status}: it takes no new transactions`, {
      batchId: batch.id,
      status: batch.status,
    });
  }
  if (attempt.nonce !== batch.nonce) {
    throw new StoreError(
      "INVALID_INPUT",
      `attempt nonce ${attempt.nonce} is not batch ${batch.id}'s nonce ${batch.nonce}`,
      {
        batchId: batch.id,
      },
    );
  }
}

export const attemptOfAnotherBatch = (hash: Hex, batchId: number) =>
  conflict(`transaction ${hash} belongs to batch ${batchId}`);

/** markBroadcast: an ended batch's transactions must not go out any more. */
export function assertBroadcastable(batch: BatchRow): void {
  if (!isOpen(batch.status)) {
    throw conflict(`batch ${batch.id} is ${batch.status}: its transactions must not be broadcast any more`, {
      batchId: batch.id,
      status: batch.status,
    });
  }
}

/** markBatchMined: the transaction must be one of the batch's attempts. */
export function assertAttemptOf(attemptBatchId: number | undefined, batchId: number, txHash: Hex): void {
  if (attemptBatchId !== batchId) {
    throw conflict(`transaction ${txHash} is not an attempt of batch ${batchId}`, { batchId, txHash });
  }
}

/** markBatchMined: one outcome for each item the batch still holds, and nothing else. */
export function assertOutcomesCover(batchId: number, current: readonly Hex[], outcomes: readonly { id: Hex }[]): void {
  const given = new Set(outcomes.map((o) => o.id));
  const missing = current.filter((x) => !given.has(x));
  const extra = [...given].filter((x) => !current.includes(x as Hex));
  if (missing.length > 0 || extra.length > 0 || given.size !== outcomes.length) {
    throw new StoreError("INVALID_INPUT", `the outcomes must name each item of batch ${batchId} exactly once`, {
      batchId,
      missing,
      extra,
    });
  }
}

export function assertMined(batch: BatchRow): void {
  if (batch.status !== "mined")
    throw conflict(`batch ${batch.id} is ${batch.status}, not mined`, { batchId: batch.id });
}

/** markBatchConfirmed: every live item needs its mined outcome. */
export function assertDecided(batchId: number, live: readonly ItemRow[]): void {
  const undecided = live.filter((it) => it.status !== "submitted" || it.outcome === null).map((it) => it.id);
  if (undecided.length > 0) throw conflict(`batch ${batchId} has items without a mined outcome`, { undecided });
}

/** requeueBatch('failed'): only while no attempt of the open batch was ever broadcast. */
export function assertMayFail(batch: BatchRow, broadcastAttempts: number): void {
  if (isOpen(batch.status) && broadcastAttempts > 0) {
    throw conflict(
      `batch ${batch.id} was broadcast and may still land: wait until it is mined, or dropped because its nonce was used`,
      { batchId: batch.id },
    );
  }
}

export function assertBatchTransition(batch: BatchRow, to: BatchStatus): void {
  if (!BATCH_TRANSITIONS[batch.status].includes(to)) {
    throw conflict(`batch ${batch.id} is ${batch.status}: it cannot become ${to}`, {
      batchId: batch.id,
      status: batch.status,
      to,
    });
  }
}

/**
 * An owner message's next status. `sameIsFine`: a batch transition may restate the current status
 * (submitted → submitted with a new txHash); a caller's update may not, unless the machine allows it.
 */
export function assertMessageTransition(
  id: Hex,
  current: OwnerMessageRow | null,
  to: OwnerMessageStatus,
  sameIsFine: boolean,
): asserts current is OwnerMessageRow {
  if (!current) throw notFound(`owner message ${id}`, { id });
  if ((!sameIsFine || current.status !== to) && !OWNER_MESSAGE_TRANSITIONS[current.status].includes(to)) {
    throw conflict(`owner message ${id} is ${current.status}: it cannot become ${to}`, { id });
  }
}

/** What requeueBatch does to the batch's owner message: a reverted one failed, any other goes again. */
export function messageAfterRequeue(
  requeue: { status: "reverted" | "dropped" | "failed"; error: string | null },
  receiptTxHash: Hex | null,
): { status: OwnerMessageStatus; txHash: Hex | null; error: string | null } {
  return requeue.status === "reverted"
    ? { status: "failed", txHash: receiptTxHash, error: requeue.error ?? "the transaction reverted" }
    : { status: "accepted", txHash: null, error: requeue.error ?? null };
}

/**
 * Whether the process a heartbeat's holder (`host:pid:start`) names may still run: false only for
 * a holder on this host whose pid is gone (killed or crashed: its lease need not be waited out).
 */
export function holderMayBeAlive(holder: string): boolean {
  const [host, pid] = holder.split(":");
  if (host !== hostname() || !/^\d+$/.test(pid ?? "")) return true;
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** heartbeat: another live process holds the sender (or, for SQLite, the file). */
export function instanceConflict(holder: string, sender: string, where: string, oneProcess: boolean): StoreError {
  return conflict(
    oneProcess
      ? `another relayer (${holder}, sender ${sender}) uses ${where}: a SQLite store serves one relayer; stop it, ` +
          "or run several relayers on PostgreSQL (--store postgres://…)"
      : `another live relayer (${holder}) sends with ${sender} on ${where}: give each instance its own sender key, ` +
          "or stop the other one (its lease runs out a few seconds after it stops)",
    { holder, sender },
  );
}

// ---- untouched devices ----
//
// The registry lets admission know a new device's word without a chain read: a device the contract
// assigned and nothing has written since holds `{ policyId, paused: false }` and zero counters and
// nonces (assignment keeps counters, and every other write of the word emits an event naming the
// device: PaymentSettled, VoucherSettled, DevicePausedSet, DeviceRevokedForever).
//
// Relayers sharing a store each read every event, each range in chain order, in any interleaving.
// Applying `assigned` inserts a fresh row (or moves a fresh row to a newer assignment's policy);
// `touched` clears `fresh` of an existing row, and nothing sets it again. The registry's cursor
// advances only over a range that starts at most one block after it (or at the deployment, to start
// it), committed after the range before it: the chain of such ranges has applied every event up to
// the cursor in chain order. Any further application (a range read again, one read ahead of the
// cursor) is an extra `touched`, which only clears, or an extra `assigned`, which never revives a
// touched row and whose fresh row is not trusted until the cursor passes its block, by when the
// chain of ranges has applied everything before it. So a row is trusted only when fresh and at or
// below the cursor. Batches clear their devices when written (before any transaction can land),
// and a reorg clears every row above the block the cursor moved back to.

/** Whether a range [from, to] of events moves the registry's cursor (at `through`, or none yet) to `to`. */
export function registryAdvances(
  through: number | undefined,
  from: number,
  fromDeployment: boolean,
  to: number,
): boolean {
  if (through === undefined) return fromDeployment;
  return from <= through + 1 && to > through;
}

/** What a range's events do to one device's row, applied in chain order (see above). */
export type DeviceEffect = {
  device: Hex;
  /** The range's newest assignment, and whether a row it inserts is fresh (no touch after the range's first assignment). */
  assigned?: { policyId: number; blockNumber: number; logIndex: number; freshIfNew: boolean };
  /** Any touch in the range: an existing row is not fresh afterwards. */
  touched: boolean;
};

/**
 * Folds a range's events (in chain order) into one effect per device, so a backend applies them
 * as a set. Applying the effect equals applying the events one by one: on a missing row, a touch
 * before the first assignment does nothing (the contract never writes an unassigned device's
 * word) and one after it leaves the row touched; on a fresh row any touch clears it and the newest
 * assignment sets its policy (if newer than the row's); a touched row stays touched.
 */
export function deviceEffects(
  events: readonly {
    device: Hex;
    kind: "assigned" | "touched";
    policyId: number | null;
    blockNumber: number;
    logIndex: number;
  }[],
): DeviceEffect[] {
  const byDevice = new Map<Hex, DeviceEffect>();
  for (const e of events) {
    let effect = byDevice.get(e.device);
    if (!effect) {
      effect = { device: e.device, touched: false };
      byDevice.set(e.device, effect);
    }
    if (e.kind === "touched") {
      effect.touched = true;
      if (effect.assigned) effect.assigned.freshIfNew = false;
    } else {
      effect.assigned = {
        policyId: e.policyId!,
        blockNumber: e.blockNumber,
        logIndex: e.logIndex,
        freshIfNew: effect.assigned?.freshIfNew ?? true,
      };
    }
  }
  return [...byDevice.values()];
}
