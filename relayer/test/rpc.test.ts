/**
 * chain/rpc: the receipt as the batcher reads it (the node's JSON, not viem's formatter), and the
 * broadcast answers it tells apart. Against a stand-in for the client's `request`; the real node's
 * answers are covered end to end (e2e, chain-faults).
 */
import { expect } from "chai";
import type { Hex, PublicClient } from "viem";
import { classifyBroadcastError, Rpc } from "../src/chain/rpc";

const HASH = `0x${"ab".repeat(32)}` as Hex;

/** An Rpc whose client answers eth_getTransactionReceipt with `answer`. */
function rpcAnswering(answer: unknown): { rpc: Rpc; calls: { method: string; params: unknown }[] } {
  const calls: { method: string; params: unknown }[] = [];
  const client = {
    request: async ({ method, params }: { method: string; params: unknown }) => {
      calls.push({ method, params });
      return answer;
    },
  } as unknown as PublicClient;
  return { rpc: new Rpc(client), calls };
}

const raw = {
  status: "0x1",
  transactionHash: HASH,
  blockNumber: "0x1f",
  blockHash: `0x${"cd".repeat(32)}`,
  gasUsed: "0x5208",
  logs: [{ address: `0x${"11".repeat(20)}`, topics: [`0x${"22".repeat(32)}`], data: "0x" }],
};

describe("relayer: chain/rpc", () => {
  it("reads a mined receipt's status, block, gas and logs from the node's JSON", async () => {
    const { rpc, calls } = rpcAnswering(raw);
    const r = await rpc.receipt(HASH);
    expect(calls).to.deep.equal([{ method: "eth_getTransactionReceipt", params: [HASH] }]);
    expect(r).to.deep.equal({
      status: "success",
      transactionHash: HASH,
      blockNumber: 31n,
      blockHash: raw.blockHash,
      gasUsed: 21_000n,
      logs: raw.logs,
    });
    expect((await rpcAnswering({ ...raw, status: "0x0" }).rpc.receipt(HASH))?.status).to.equal("reverted");
  });

  it("has no receipt while the node has none, or has one without a block (still pending)", async () => {
    expect(await rpcAnswering(null).rpc.receipt(HASH)).to.equal(null);
    expect(await rpcAnswering({ ...raw, blockNumber: null, blockHash: null }).rpc.receipt(HASH)).to.equal(null);
  });

  it("decides nothing on a receipt without a status: it throws, and the batcher asks again", async () => {
    const { status: _, ...noStatus } = raw;
    for (const answer of [noStatus, { ...raw, status: "0x2" }]) {
      let error: Error | undefined;
      try {
        await rpcAnswering(answer).rpc.receipt(HASH);
      } catch (e) {
        error = e as Error;
      }
      expect(error?.message).to.match(/neither 0x1 nor 0x0: asked again next pass/);
    }
  });

  it("tells apart the broadcast answers that mean the transaction is out there from real failures", () => {
    const err = (message: string) => ({ details: message, message: `RPC error: ${message}` });
    expect(classifyBroadcastError(err("already known")).kind).to.equal("known");
    expect(classifyBroadcastError(err("nonce too low: next nonce 5, tx nonce 4")).kind).to.equal("nonceTooLow");
    expect(classifyBroadcastError(err("replacement transaction underpriced")).kind).to.equal("underpriced");
    expect(classifyBroadcastError(err("insufficient funds for gas * price + value")).kind).to.equal(
      "insufficientFunds",
    );
    // Anything else may or may not have gone out: never reported as a failure of the batch.
    expect(classifyBroadcastError(new Error("fetch failed")).kind).to.equal("unknown");
  });
});
