import { randomBytes } from "node:crypto";
import { machinePayAbi, type PackedPayment, type PackedVoucher, packPayment, packVoucher } from "@machinepay/sdk";
import { expect } from "chai";
import { decodeFunctionResult, encodeFunctionData, encodeFunctionResult, type Hex } from "viem";
import { type BatchFunction, batchCalldata, previewReasons } from "../src/batcher/calldata";

const hex = (n: number) => `0x${randomBytes(n).toString("hex")}` as Hex;
const below = (bits: number) => BigInt(hex(Math.ceil(bits / 8))) & ((1n << BigInt(bits)) - 1n);
/** A random low-s signature (r ‖ s ‖ v): the packers refuse high s. */
const signature = () =>
  `${hex(32)}${(below(254) | 1n).toString(16).padStart(64, "0")}${randomBytes(1)[0] & 1 ? "1b" : "1c"}` as Hex;

function payment(): PackedPayment {
  const p = {
    payee: hex(20),
    token: hex(20),
    amount: below(96),
    nonce: below(32),
    deadline: below(32),
    maxFee: below(96),
    ref: hex(32),
  };
  return packPayment(p, signature(), p.maxFee / 2n);
}

function voucher(): PackedVoucher {
  const v = {
    payee: hex(20),
    token: hex(20),
    tabId: below(256),
    cumulative: below(96),
    deadline: below(32),
    maxFee: below(96),
  };
  return packVoucher(v, signature(), v.maxFee);
}

describe("relayer: batcher/calldata (fixed-layout settle and preview calldata)", () => {
  it("encodes every batch function exactly as viem's encodeFunctionData, from 0 to 600 items", () => {
    const fns: BatchFunction[] = ["settle", "preview", "settleVouchers", "previewVouchers"];
    for (const size of [0, 1, 2, 7, 100, 600]) {
      for (const fn of fns) {
        const items = Array.from({ length: size }, () => (fn.includes("Vouchers") ? voucher() : payment()));
        const token = hex(20);
        const fee = hex(20);
        const want = encodeFunctionData({ abi: machinePayAbi, functionName: fn, args: [token, items, fee] as never });
        expect(batchCalldata(fn, token, items, fee), `${fn} with ${size} items`).to.equal(want);
      }
    }
  });

  it("accepts mixed-case addresses and refuses items of the other kind or malformed words", () => {
    const token = `0x${"aB".repeat(20)}` as Hex;
    const fee = `0x${"Cd".repeat(20)}` as Hex;
    const items = [payment()];
    const lower = [token.toLowerCase(), fee.toLowerCase()] as [Hex, Hex];
    expect(batchCalldata("settle", token, items, fee)).to.equal(
      encodeFunctionData({ abi: machinePayAbi, functionName: "settle", args: [lower[0], items, lower[1]] as never }),
    );
    expect(() => batchCalldata("settleVouchers", token, items, fee)).to.throw(
      TypeError,
      /settleVouchers takes vouchers/,
    );
    expect(() => batchCalldata("settle", token, [voucher()], fee)).to.throw(TypeError, /settle takes payments/);
    expect(() => batchCalldata("settle", token, [{ ...items[0], r: "0x12" }], fee)).to.throw(
      TypeError,
      /r must be 32 bytes/,
    );
    expect(() => batchCalldata("settle", "0x12", items, fee)).to.throw(TypeError, /token must be a 20-byte/);
    expect(() => batchCalldata("settle", token, [{ ...items[0], terms: 1n << 256n }], fee)).to.throw(
      RangeError,
      /terms/,
    );
  });

  it("reads preview's reasons exactly as viem's decodeFunctionResult, from 0 to 600 items", () => {
    for (const size of [0, 1, 2, 7, 100, 600]) {
      for (const fn of ["preview", "previewVouchers"] as const) {
        const reasons = Array.from({ length: size }, () => randomBytes(1)[0] % 24);
        const devices = Array.from({ length: size }, () => hex(20));
        const data = encodeFunctionResult({
          abi: machinePayAbi,
          functionName: fn,
          result: [reasons, devices] as never,
        });
        const [viemReasons] = decodeFunctionResult({ abi: machinePayAbi, functionName: fn, data }) as unknown as [
          number[],
        ];
        expect(previewReasons(data, size), `${fn} with ${size} items`).to.deep.equal([...viemReasons]);
        expect(viemReasons).to.deep.equal(reasons);
      }
    }
  });

  it("refuses preview return data that is not that layout, or not for that many items", () => {
    const data = encodeFunctionResult({
      abi: machinePayAbi,
      functionName: "preview",
      result: [
        [0, 3, 7],
        [hex(20), hex(20), hex(20)],
      ] as never,
    });
    expect(() => previewReasons(data, 2)).to.throw(RangeError, /returned 3 reasons for 2 items/);
    expect(() => previewReasons(data.slice(0, 200) as Hex, 3)).to.throw(/ends at word|whole 32-byte words/);
    expect(() => previewReasons("0x", 0)).to.throw(RangeError, /ends at word 0/);
    expect(() => previewReasons(`${data.slice(0, -1)}z` as Hex, 3)).to.throw(TypeError, /hex/);
    // A reason word above 255 (word 3 holds the first reason: offsets, then the length).
    const big = `0x${data.slice(2, 2 + 64 * 3)}${"ff".repeat(32)}${data.slice(2 + 64 * 4)}` as Hex;
    expect(() => previewReasons(big, 3)).to.throw(RangeError, /reason 0 is .* not a uint8/);
    // An offset pointing outside the data.
    const far = `0x${"ff".padStart(64, "0")}${data.slice(66)}` as Hex;
    expect(() => previewReasons(far, 3)).to.throw(RangeError, /offset 255 is not a word/);
  });
});
