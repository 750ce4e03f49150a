// Group commit: calls that arrive in the same tick, or while a commit is in flight, share the next
// transaction, so one fsync acknowledges many callers and durability does not cap throughput.
// Backend-neutral: `commit` may be synchronous (better-sqlite3) or asynchronous (a pg client).

type Waiter<In, Out> = { input: In; resolve: (out: Out) => void; reject: (error: unknown) => void };

export type GroupCommitStats = { groups: number; calls: number; largestGroup: number };

export interface GroupCommitOptions<In> {
  /** Size of one input (rows it writes); a group stops growing at maxWeight (one input always fits). */
  weight?: (input: In) => number;
  /** Bounds how long one transaction holds the writer (and, for SQLite, the event loop). */
  maxWeight?: number;
}

export class GroupCommitter<In, Out> {
  private queue: Waiter<In, Out>[] = [];
  private scheduled = false;
  private flushing = false;
  readonly stats: GroupCommitStats = { groups: 0, calls: 0, largestGroup: 0 };

  private readonly weight: (input: In) => number;
  private readonly maxWeight: number;

  /** `commit` must apply every input in one transaction and return one output per input, in order. */
  constructor(
    private readonly commit: (inputs: In[]) => Out[] | Promise<Out[]>,
    options: GroupCommitOptions<In> = {},
  ) {
    this.weight = options.weight ?? (() => 1);
    this.maxWeight = options.maxWeight ?? Number.POSITIVE_INFINITY;
  }

  /** Resolves after the transaction holding `input` committed; rejects if it did not. */
  submit(input: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves once everything submitted so far has been committed or rejected. */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.scheduled || this.flushing) {
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  private schedule(): void {
    if (this.scheduled || this.flushing) return; // the running flush reschedules when it ends
    this.scheduled = true;
    // setImmediate, not a microtask: lets every request whose I/O is ready this turn join the group.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    let take = 0;
    for (let w = 0; take < this.queue.length; take++) {
      w += this.weight(this.queue[take].input);
      if (w > this.maxWeight && take > 0) break;
    }
    const group = this.queue.splice(0, take);
    try {
      const outputs = await this.commit(group.map((w) => w.input));
      this.stats.groups++;
      this.stats.calls += group.length;
      this.stats.largestGroup = Math.max(this.stats.largestGroup, group.length);
      for (let i = 0; i < group.length; i++) group[i].resolve(outputs[i]);
    } catch (error) {
      for (const w of group) w.reject(error); // no partial acknowledgement
    } finally {
      this.flushing = false;
      if (this.queue.length > 0) this.schedule();
    }
  }
}
