/**
 * Operator commands, all through the relayer's HTTP API: payments and batches, settle now (admin
 * token from MACHINEPAY_ADMIN_TOKEN), and status (health, queue, last batch, chain head).
 */
import {
  type BatchInfo,
  type BatchState,
  type Hex,
  type PaymentStatus,
  RelayerClient,
  RelayerError,
} from "@machinepay/sdk";
import { type Command, InvalidArgumentError, Option } from "commander";
import { createPublicClient, http } from "viem";
import { addJson, addRelayer, example, type JsonOption, parseUint, withDefault } from "./options";
import { action, emit, keyValues, RuntimeError, table, UsageError } from "./output";

type RelayerOpts = JsonOption & { relayer: string };

const BATCH_STATES = ["created", "sent", "mined", "confirmed", "reverted", "failed", "dropped"];
const ITEM_STATES = ["accepted", "batched", "submitted", "settled", "rejected", "superseded"];

const oneOf = (name: string, values: string[]) => (v: string) => {
  if (!values.includes(v)) throw new InvalidArgumentError(`${name} is one of ${values.join(", ")}`);
  return v;
};

const parseId = (v: string): Hex => {
  if (!/^0x[0-9a-fA-F]{64}$/.test(v)) throw new InvalidArgumentError(`${v} is not an item id (0x and 64 hex digits)`);
  return v.toLowerCase() as Hex;
};

const when = (ms: number | null | undefined) => (ms ? new Date(ms).toISOString() : "-");

/** A payment's status, or a voucher's when no payment has this id. */
async function itemStatus(client: RelayerClient, id: Hex): Promise<Record<string, unknown>> {
  try {
    return await client.status(id);
  } catch (e) {
    if (!(e instanceof RelayerError) || e.status !== 404) throw e;
  }
  try {
    return await client.voucherStatus(id);
  } catch (e) {
    if (e instanceof RelayerError && e.status === 404)
      throw new RuntimeError(`the relayer holds no payment or voucher ${id}`);
    throw e;
  }
}

/**
 * Payments the relayer has put into batches, newest batch first: the HTTP API lists batches (with
 * their item ids), not the queue itself; `machinepay status` counts what waits.
 */
async function listPayments(opts: RelayerOpts & { batch?: number; status?: string; limit: number }) {
  const client = new RelayerClient({ url: opts.relayer });
  const ids: Hex[] = [];
  if (opts.batch !== undefined) {
    ids.push(...(await client.batch(opts.batch)).itemIds);
  } else {
    let after: string | undefined;
    scan: for (let page = 0; page < 20; page++) {
      const { batches, next } = await client.batches({ limit: 50, after });
      for (const b of batches.filter((x) => x.kind === "payment")) {
        ids.push(...(await client.batch(b.id)).itemIds);
        if (ids.length >= opts.limit * 4) break scan;
      }
      if (!next) break;
      after = next;
    }
  }
  const rows: PaymentStatus[] = [];
  for (let i = 0; i < ids.length && rows.length < opts.limit; i += 16) {
    const chunk = await Promise.all(ids.slice(i, i + 16).map((id) => client.status(id)));
    rows.push(...chunk.filter((p) => !opts.status || p.status === opts.status));
  }
  const page = rows.slice(0, opts.limit);
  emit(opts, { payments: page }, () =>
    page.length === 0
      ? "no batched payments (payments waiting for a batch are counted by `machinepay status`)"
      : table(
          ["id", "status", "device", "payee", "amount", "nonce", "batch", "block"],
          page.map((p) => [p.id, p.status, p.device, p.payee, p.amount, p.nonce, p.batchId, p.blockNumber]),
        ),
  );
}

function batchRows(batches: BatchInfo[]) {
  return table(
    ["id", "kind", "status", "items", "gasUsed", "block", "tx", "created"],
    batches.map((b) => [b.id, b.kind, b.status, b.itemCount, b.gasUsed, b.blockNumber, b.txHash, when(b.createdAt)]),
  );
}

export function operatorCommands(cli: Command): void {
  const payments = cli.command("payments").description("payments held by the relayer");
  example(payments, "machinepay payments list --relayer http://127.0.0.1:8787");
  const list = addJson(
    addRelayer(payments.command("list").description("payments in the relayer's batches, newest first")),
  )
    .option("--batch <id>", "only this batch's items", parseUint)
    .option("--status <status>", `only items in this state (${ITEM_STATES.join(", ")})`, oneOf("--status", ITEM_STATES))
    .addOption(withDefault("--limit <n>", "at most this many", parseUint, 50, "50"))
    .action(action(listPayments));
  example(list, "machinepay payments list --relayer http://127.0.0.1:8787 --status settled --limit 20");
  const show = addJson(addRelayer(payments.command("show").description("one payment's (or voucher's) status")))
    .argument("<id>", "the item id `pay` printed", parseId)
    .action(
      action(async (id: Hex, opts: RelayerOpts) => {
        const s = await itemStatus(new RelayerClient({ url: opts.relayer }), id);
        emit(opts, s, () => keyValues(Object.entries(s)));
      }),
    );
  example(show, "machinepay payments show 0xITEMID --relayer http://127.0.0.1:8787 --json");

  const batches = cli.command("batches").description("the relayer's settlement batches");
  example(batches, "machinepay batches list --relayer http://127.0.0.1:8787");
  const blist = addJson(addRelayer(batches.command("list").description("batches, newest first")))
    .option(
      "--status <status>",
      `only batches in this state (${BATCH_STATES.join(", ")})`,
      oneOf("--status", BATCH_STATES),
    )
    .addOption(withDefault("--limit <n>", "at most this many (1 to 500)", parseUint, 20, "20"))
    .option("--after <cursor>", "the `next` cursor of the previous page")
    .action(
      action(async (opts: RelayerOpts & { status?: BatchState; limit: number; after?: string }) => {
        const page = await new RelayerClient({ url: opts.relayer }).batches({
          status: opts.status,
          limit: opts.limit,
          after: opts.after,
        });
        emit(opts, page, () => [
          page.batches.length ? batchRows(page.batches) : "no batches",
          ...(page.next ? [`more: --after ${page.next}`] : []),
        ]);
      }),
    );
  example(blist, "machinepay batches list --relayer http://127.0.0.1:8787 --limit 5");
  const bshow = addJson(addRelayer(batches.command("show").description("one batch: its transactions and items")))
    .argument("<id>", "the batch id", parseUint)
    .option("--raw", "include each attempt's signed transaction")
    .action(
      action(async (id: number, opts: RelayerOpts & { raw?: boolean }) => {
        const b = await new RelayerClient({ url: opts.relayer }).batch(id, { raw: opts.raw });
        emit(opts, b, () => [
          keyValues(Object.entries(b).filter(([k]) => k !== "attempts" && k !== "itemIds")),
          "",
          table(
            ["attempt", "nonce", "maxFeePerGas", "broadcast"],
            b.attempts.map((a) => [a.hash, a.nonce, a.maxFeePerGas, when(a.broadcastAt)]),
          ),
          "",
          `items (${b.itemIds.length}):`,
          ...b.itemIds.map((i) => `  ${i}`),
        ]);
      }),
    );
  example(bshow, "machinepay batches show 12 --relayer http://127.0.0.1:8787");

  const settle = addJson(
    addRelayer(
      cli.command("settle").description("batch and send everything pending now (admin: MACHINEPAY_ADMIN_TOKEN)"),
    ),
  )
    .addOption(
      new Option("--token-env <name>", "variable holding the admin token").default("MACHINEPAY_ADMIN_TOKEN").hideHelp(),
    )
    .action(
      action(async (opts: RelayerOpts & { tokenEnv: string }) => {
        const token = process.env[opts.tokenEnv];
        if (!token) throw new UsageError(`set ${opts.tokenEnv} to the relayer's admin token (its adminToken setting)`);
        let res: Response;
        try {
          res = await fetch(`${opts.relayer.replace(/\/+$/, "")}/v1/settle`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}` },
          });
        } catch (e) {
          throw new RuntimeError(`cannot reach the relayer at ${opts.relayer}: ${(e as Error).message}`);
        }
        const body = (await res.json().catch(() => ({}))) as {
          batches?: number[];
          error?: { code: string; message: string };
        };
        if (!res.ok) {
          throw new RuntimeError(
            `the relayer answered ${res.status} ${body.error?.code ?? ""}: ${body.error?.message ?? "no message"}`,
          );
        }
        const ids = body.batches ?? [];
        emit(opts, { batches: ids }, () =>
          ids.length ? `sent batch(es) ${ids.join(", ")}` : "nothing pending to settle",
        );
      }),
    );
  example(settle, "MACHINEPAY_ADMIN_TOKEN=... machinepay settle --relayer http://127.0.0.1:8787");

  const status = addJson(
    addRelayer(
      cli.command("status").description("relayer health: queue depth, last batch, sender balance, chain head"),
    ),
  )
    .addOption(
      new Option("--rpc <url>", "also ask the chain for its head (how far the relayer lags)").env("MACHINEPAY_RPC_URL"),
    )
    .action(
      action(async (opts: RelayerOpts & { rpc?: string }) => {
        const client = new RelayerClient({ url: opts.relayer, attempts: 2 });
        const [health, page] = await Promise.all([client.health(), client.batches({ limit: 1 })]);
        let chainHead: number | undefined;
        if (opts.rpc) {
          try {
            chainHead = Number(
              await createPublicClient({ transport: http(opts.rpc, { retryCount: 1 }) }).getBlockNumber(),
            );
          } catch (e) {
            throw new RuntimeError(`cannot reach the chain at ${opts.rpc}: ${(e as Error).message.split("\n")[0]}`);
          }
        }
        const queue = health.queue ?? {};
        const queued = Object.values(queue).reduce((a, b) => a + b, 0);
        const last = page.batches[0] ?? null;
        const data = {
          ...health,
          queueDepth: queued,
          lastBatch: last,
          ...(chainHead !== undefined ? { chainHead } : {}),
        };
        emit(opts, data, () =>
          keyValues([
            ["ok", health.ok],
            ["chain", health.chain],
            ["store", health.store],
            ["senderFunded", health.senderFunded],
            ["senderBalance", health.senderBalance !== undefined ? `${health.senderBalance} wei` : undefined],
            ["relayer head", health.head],
            ...(chainHead !== undefined ? ([["chain head", chainHead]] as [string, unknown][]) : []),
            [
              "queue",
              `${queued} (${
                Object.entries(queue)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(", ") || "empty"
              })`,
            ],
            [
              "last batch",
              last ? `${last.id} ${last.status}, ${last.itemCount} items, ${when(last.createdAt)}` : "none yet",
            ],
          ]),
        );
        if (!health.ok) process.exitCode = 1;
      }),
    );
  example(status, "machinepay status --relayer http://127.0.0.1:8787 --rpc http://127.0.0.1:8545");
}
