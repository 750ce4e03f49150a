/**
 * Owner messages (signed Onboarding and Revocation) enter here, decoded, from any transport. A
 * message is checked by a dry run of the call that submits it (signature, ERC-1271, epoch, nonce,
 * deadline, every device's Enrollment proof: the contract's own checks), stored by its EIP-712
 * digest, and then submitted by the batcher like a batch of its own. The same message twice is
 * one message: the second answer carries the first's id and current status.
 */
import type { Address, Hex, MachinePayDomain } from "@machinepay/sdk";
import type { PublicClient } from "viem";
import type { ChainClock } from "../chain/clock";
import {
  checkOwnerMessage,
  deadlineOf,
  type OwnerMessage,
  ownerMessageDigest,
  ownerOf,
  toStoredBody,
} from "../chain/owner-messages";
import type { OwnerMessageRow, OwnerMessageStatus, Store } from "../store/types";

/** Refusal of an owner message; `code` is an API error code (the API maps it to 4xx/5xx). */
export class OwnerMessageRefused extends Error {
  override readonly name = "OwnerMessageRefused";
  constructor(
    readonly code: "OWNER_MESSAGE_INVALID" | "CHAIN_UNAVAILABLE",
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export type OwnerMessageIngestOptions = {
  store: Store;
  client: PublicClient;
  contract: Address;
  /** The account the batcher submits from (the dry run's caller). */
  sender: Address;
  domain: MachinePayDomain;
  clock: ChainClock;
  /** A message whose deadline is closer than this (chain seconds) is refused: it could not land in time. */
  deadlineMarginSeconds: number;
  /** Called after a new message was stored (the batcher may submit it at once). */
  onStored?(id: Hex): void;
};

export class OwnerMessageIngest {
  constructor(private readonly o: OwnerMessageIngestOptions) {}

  async submit(m: OwnerMessage): Promise<{ id: Hex; status: OwnerMessageStatus; duplicate: boolean }> {
    const { store, clock } = this.o;
    const id = ownerMessageDigest(this.o.domain, m);
    const known = await store.getOwnerMessage(id);
    if (known) return { id, status: known.status, duplicate: true };

    const deadline = deadlineOf(m);
    const left = deadline - clock.now();
    if (left < BigInt(this.o.deadlineMarginSeconds)) {
      throw new OwnerMessageRefused(
        "OWNER_MESSAGE_INVALID",
        left <= 0n
          ? `its deadline ${deadline} has passed (chain time ${clock.now()}): sign it again with a later deadline`
          : `its deadline ${deadline} leaves ${left} s, less than the ${this.o.deadlineMarginSeconds} s this relayer needs to land it: sign it again with a later deadline`,
        { error: "DEADLINE_TOO_SOON", deadline: deadline.toString(), chainTime: clock.now().toString() },
      );
    }
    let check: Awaited<ReturnType<typeof checkOwnerMessage>>;
    try {
      check = await checkOwnerMessage(this.o.client, this.o.contract, this.o.sender, m);
    } catch (e) {
      throw new OwnerMessageRefused(
        "CHAIN_UNAVAILABLE",
        `could not check the ${m.kind} against the chain: ${(e as Error).message.split("\n")[0]}; retry`,
      );
    }
    if (!check.ok) throw new OwnerMessageRefused("OWNER_MESSAGE_INVALID", check.message, check.details);

    const { inserted, message } = await store.insertOwnerMessage({
      id,
      kind: m.kind,
      owner: ownerOf(m).toLowerCase() as Hex,
      body: toStoredBody(m),
    });
    if (inserted) this.o.onStored?.(id);
    return { id, status: message.status, duplicate: !inserted };
  }

  get(id: Hex): Promise<OwnerMessageRow | null> {
    return this.o.store.getOwnerMessage(id);
  }
}
