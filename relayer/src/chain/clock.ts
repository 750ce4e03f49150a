/**
 * Chain time, as the next block will see it: the latest block's timestamp plus the wall-clock time
 * since that block was seen (never behind the block). Local nodes whose clock was moved
 * (evm_increaseTime) are judged by their own time, not by this machine's.
 */
export class ChainClock {
  private blockTimestamp = 0n;
  private seenAt = 0;

  constructor(private readonly wall: () => number = Date.now) {}

  /**
   * Record a block (its timestamp in unix seconds). Only a newer block moves the reference: the
   * same block seen again must not reset it, or chain time would stand still while no blocks come
   * (an idle automining node), and deadlines and validity windows would never pass.
   */
  observe(timestamp: bigint): void {
    if (timestamp > this.blockTimestamp || this.seenAt === 0) {
      this.blockTimestamp = timestamp;
      this.seenAt = this.wall();
    }
  }

  /** Unix seconds. Before any block was observed, the wall clock. */
  now(): bigint {
    if (this.seenAt === 0) return BigInt(Math.floor(this.wall() / 1000));
    return this.blockTimestamp + BigInt(Math.floor((this.wall() - this.seenAt) / 1000));
  }
}
