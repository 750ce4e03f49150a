import { expect } from "chai";
import { bytesToHex, getAddress, hashTypedData, keccak256 } from "viem";
import {
  type Address,
  domainSeparator,
  FieldEncodingError,
  type Hex,
  hashPayment,
  hashVoucher,
  type MachinePayDomain,
  machinePayDomain,
  type Payment,
  PaymentEncodingError,
  paymentDigest,
  paymentDigestHex,
  paymentTypes,
  type Voucher,
  voucherDigest,
  voucherDigestHex,
  voucherTypes,
} from "../src";

// Deterministic inputs: splitmix64 from a fixed seed.
function rng(seed: bigint) {
  let state = seed;
  const next = (): bigint => {
    state = (state + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
    return z ^ (z >> 31n);
  };
  const bits = (n: number): bigint => {
    let v = 0n;
    for (let i = 0; i < n; i += 64) v = (v << 64n) | next();
    return v & ((1n << BigInt(n)) - 1n);
  };
  const int = (n: number) => Number(next() % BigInt(n));
  const hex = (bytes: number): Hex =>
    `0x${bits(bytes * 8)
      .toString(16)
      .padStart(bytes * 2, "0")}`;
  return { bits, int, hex };
}

const R = rng(20261201n);
const MAX_UINT256 = (1n << 256n) - 1n;
const BOUNDARIES = [0n, 1n, (1n << 32n) - 1n, (1n << 53n) - 1n, 1n << 53n, (1n << 96n) - 1n, MAX_UINT256];

function uint(): bigint {
  const pick = R.int(4);
  if (pick === 0) return BOUNDARIES[R.int(BOUNDARIES.length)];
  return R.bits([32, 96, 256][pick - 1]);
}

function address(): Address {
  const a = R.hex(20);
  // Lowercase or EIP-55 checksummed: both are what viem accepts.
  return R.int(2) === 0 ? a : getAddress(a);
}

function randomDomain(): MachinePayDomain {
  const chainId = [1, 31337, 0, Number.MAX_SAFE_INTEGER, R.int(1_000_000_000)][R.int(5)];
  return machinePayDomain({ chainId, verifyingContract: address() });
}

function randomPayment(): Payment {
  return {
    payee: address(),
    token: address(),
    amount: uint(),
    nonce: uint(),
    deadline: uint(),
    maxFee: uint(),
    ref: R.hex(32),
  };
}

function randomVoucher(): Voucher {
  return { payee: address(), token: address(), tabId: uint(), cumulative: uint(), deadline: uint(), maxFee: uint() };
}

const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const payment: Payment = {
  payee: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
  amount: 1_234_567n,
  nonce: 42n,
  deadline: 1_900_000_000n,
  maxFee: 1_000n,
  ref: `0x${"ab".repeat(32)}`,
};
const voucher: Voucher = {
  payee: payment.payee,
  token: payment.token,
  tabId: 7n,
  cumulative: 99n,
  deadline: 1_900_000_000n,
  maxFee: 0n,
};

function thrown(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a throw");
}

describe("sdk: fixed-layout EIP-712 digests", () => {
  it("equals viem's hashTypedData for 400 random payments and vouchers (boundaries included)", () => {
    for (let i = 0; i < 200; i++) {
      const d = randomDomain();
      const sep = domainSeparator(d);
      const p = randomPayment();
      const v = randomVoucher();
      const wantP = hashTypedData({ domain: d, types: paymentTypes, primaryType: "Payment", message: p });
      const wantV = hashTypedData({ domain: d, types: voucherTypes, primaryType: "Voucher", message: v });
      expect(bytesToHex(paymentDigest(sep, p)), `payment ${i}`).to.equal(wantP);
      expect(bytesToHex(voucherDigest(sep, v)), `voucher ${i}`).to.equal(wantV);
    }
  });

  it("equals viem on every field at 0, 2^96 - 1 and 2^256 - 1", () => {
    const sep = domainSeparator(domain);
    for (const x of [0n, (1n << 96n) - 1n, MAX_UINT256]) {
      const p = { ...payment, amount: x, nonce: x, deadline: x, maxFee: x, ref: `0x${"ff".repeat(32)}` as Hex };
      const v = { ...voucher, tabId: x, cumulative: x, deadline: x, maxFee: x };
      expect(bytesToHex(paymentDigest(sep, p))).to.equal(hashPayment(domain, p));
      expect(bytesToHex(voucherDigest(sep, v))).to.equal(hashVoucher(domain, v));
    }
  });

  it("gives hashPayment / hashVoucher from the hex helpers, as lowercase hex", () => {
    expect(paymentDigestHex(domain, payment)).to.equal(hashPayment(domain, payment));
    expect(voucherDigestHex(domain, voucher)).to.equal(hashVoucher(domain, voucher));
    expect(paymentDigestHex(domain, payment)).to.match(/^0x[0-9a-f]{64}$/);
  });

  it("does not depend on the letter case of addresses (the EIP-55 checksum is not checked)", () => {
    const lower = { ...payment, payee: payment.payee.toLowerCase() as Address };
    const upper = { ...payment, payee: `0x${payment.payee.slice(2).toUpperCase()}` as Address };
    expect(paymentDigestHex(domain, lower)).to.equal(hashPayment(domain, payment));
    expect(paymentDigestHex(domain, upper)).to.equal(hashPayment(domain, payment));
  });

  it("hashes with the keccak it is given", () => {
    let calls = 0;
    const counting = (data: Uint8Array) => {
      calls++;
      return keccak256(data, "bytes");
    };
    const sep = domainSeparator(domain, counting);
    expect(calls).to.equal(3); // name, version, the domain struct
    expect(bytesToHex(paymentDigest(sep, payment, counting))).to.equal(hashPayment(domain, payment));
    expect(calls).to.equal(5); // struct, then 0x1901 ‖ domain ‖ struct
  });

  it("returns a fresh array each time (the scratch buffers are not handed out)", () => {
    const sep = domainSeparator(domain);
    const a = paymentDigest(sep, payment);
    const before = bytesToHex(a);
    paymentDigest(sep, { ...payment, amount: 1n });
    expect(bytesToHex(a)).to.equal(before);
  });

  describe("refuses values that are not the EIP-712 type, naming the field", () => {
    const sep = domainSeparator(domain);
    const paymentCases: [string, string, Partial<Record<keyof Payment, unknown>>][] = [
      ["a negative amount", "amount", { amount: -1n }],
      ["an amount of 2^256", "amount", { amount: 1n << 256n }],
      ["a nonce that is a number", "nonce", { nonce: 5 }],
      ["a deadline that is a string", "deadline", { deadline: "1900000000" }],
      ["a maxFee of -2^255", "maxFee", { maxFee: -(1n << 255n) }],
      ["a 2-byte payee", "payee", { payee: "0x1234" }],
      ["a payee with non-hex digits", "payee", { payee: `0x${"g".repeat(40)}` }],
      ["a token without 0x", "token", { token: `${"0".repeat(42)}` }],
      ["a token ending in é", "token", { token: `0x${"0".repeat(39)}é` }],
      ["a token ending in a non-Latin-1 char", "token", { token: `0x${"0".repeat(39)}\u0130` }],
      ["a 31-byte ref", "ref", { ref: `0x${"00".repeat(31)}` }],
      ["a ref with a non-hex digit", "ref", { ref: `0x${"00".repeat(31)}0z` }],
      ["a missing ref", "ref", { ref: undefined }],
    ];
    for (const [label, field, change] of paymentCases) {
      it(label, () => {
        const err = thrown(() => paymentDigest(sep, { ...payment, ...change } as Payment));
        expect(err).to.be.instanceOf(PaymentEncodingError);
        expect(err).to.be.instanceOf(FieldEncodingError);
        expect((err as FieldEncodingError).field).to.equal(field);
        expect(err.message).to.contain(field);
      });
    }

    it("a voucher tabId of 2^256, a cumulative of -1", () => {
      for (const [field, change] of [
        ["tabId", { tabId: 1n << 256n }],
        ["cumulative", { cumulative: -1n }],
      ] as const) {
        const err = thrown(() => voucherDigest(sep, { ...voucher, ...change }));
        expect(err).to.be.instanceOf(PaymentEncodingError);
        expect((err as FieldEncodingError).field).to.equal(field);
        expect(err.message).to.contain(field);
      }
    });

    it("a domain chainId of -1 or 1.5, a 1.5-byte verifyingContract", () => {
      const badChain = thrown(() => domainSeparator({ ...domain, chainId: -1 }));
      expect((badChain as FieldEncodingError).field).to.equal("chainId");
      const badChain2 = thrown(() => domainSeparator({ ...domain, chainId: 1.5 }));
      expect((badChain2 as FieldEncodingError).field).to.equal("chainId");
      const badContract = thrown(() => domainSeparator({ ...domain, verifyingContract: "0xabc" }));
      expect((badContract as FieldEncodingError).field).to.equal("verifyingContract");
      expect(badContract).to.be.instanceOf(PaymentEncodingError);
    });

    it("a domain separator that is not 32 bytes", () => {
      const err = thrown(() => paymentDigest(new Uint8Array(31), payment));
      expect(err).to.be.instanceOf(PaymentEncodingError);
    });

    it("and still hashes correctly after a refused call left a buffer half written", () => {
      thrown(() => paymentDigest(sep, { ...payment, ref: "0x00" as Hex }));
      thrown(() => voucherDigest(sep, { ...voucher, maxFee: -1n }));
      expect(bytesToHex(paymentDigest(sep, payment))).to.equal(hashPayment(domain, payment));
      expect(bytesToHex(voucherDigest(sep, voucher))).to.equal(hashVoucher(domain, voucher));
    });
  });
});
