import { expect } from "chai";
import { Wallet } from "ethers";
import { privateKeyToAccount, signTypedData } from "viem/accounts";
import {
  type Address,
  hashPayment,
  machinePayDomain,
  PaymentEncodingError,
  packPayment,
  paymentTypedDataV4,
  recoverPaymentSigner,
  signPayment,
  toCompactSignature,
} from "../src";

// Hardhat's first well-known test key: public, never use it for value.
const KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const payment = {
  payee: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" as Address,
  token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512" as Address,
  amount: 1_234_567n,
  nonce: 42n,
  deadline: 1_900_000_000n,
  maxFee: 1_000n,
  ref: `0x${"ab".repeat(32)}` as const,
};

describe("sdk: signing", () => {
  it("gives the same signature and digest when the same payment is signed twice", async () => {
    const account = privateKeyToAccount(KEY);
    const a = await signPayment({ signer: account, domain, payment });
    const b = await signPayment({ signer: account, domain, payment: { ...payment } });
    expect(a).to.equal(b);
    expect(hashPayment(domain, payment)).to.equal(hashPayment(domain, { ...payment }));
  });

  it("signs identically with a viem account, an ethers signer and a raw v4 signing function", async () => {
    const viemSig = await signPayment({ signer: privateKeyToAccount(KEY), domain, payment });
    const ethersSig = await signPayment({ signer: new Wallet(KEY), domain, payment });
    const v4Sig = await signPayment({
      domain,
      payment,
      // A "foreign" signer that only understands the v4 JSON (numbers as strings).
      signer: async (typed) => {
        expect(typed.primaryType).to.equal("Payment");
        expect(typed.message.amount).to.equal("1234567");
        expect(typed.types.EIP712Domain.map((f) => f.name)).to.deep.equal([
          "name",
          "version",
          "chainId",
          "verifyingContract",
        ]);
        const { EIP712Domain: _, ...types } = typed.types;
        return signTypedData({
          privateKey: KEY,
          domain: typed.domain,
          types,
          primaryType: "Payment",
          message: typed.message,
        });
      },
    });
    expect(ethersSig).to.equal(viemSig);
    expect(v4Sig).to.equal(viemSig);
    expect(await recoverPaymentSigner(domain, payment, viemSig)).to.equal(privateKeyToAccount(KEY).address);
  });

  it("refuses a signer result that is not a 65-byte signature", async () => {
    let error: unknown;
    try {
      await signPayment({ signer: async () => "0x1234", domain, payment });
    } catch (e) {
      error = e;
    }
    expect(String(error)).to.match(/65-byte/);
  });

  it("produces v4 JSON that round-trips through JSON.stringify", () => {
    const typed = paymentTypedDataV4(domain, payment);
    expect(JSON.parse(JSON.stringify(typed))).to.deep.equal(typed);
    expect(typed.domain).to.deep.equal({ ...domain });
  });
});

describe("sdk: packing for settle", () => {
  it("packs fields into the documented bit positions", async () => {
    const sig = await signPayment({ signer: privateKeyToAccount(KEY), domain, payment });
    const packed = packPayment(payment, sig, 7n);
    expect(packed.payeeAmount >> 96n).to.equal(BigInt(payment.payee));
    expect(packed.payeeAmount & ((1n << 96n) - 1n)).to.equal(payment.amount);
    expect(packed.terms & 0xffffffffn).to.equal(payment.nonce);
    expect((packed.terms >> 32n) & 0xffffffffn).to.equal(payment.deadline);
    expect((packed.terms >> 64n) & ((1n << 96n) - 1n)).to.equal(7n);
    expect(packed.terms >> 160n).to.equal(payment.maxFee);
  });

  it("turns a 65-byte signature into EIP-2098 (r, vs) and back", async () => {
    const sig = await signPayment({ signer: privateKeyToAccount(KEY), domain, payment });
    const { r, vs } = toCompactSignature(sig);
    expect(r).to.equal(`0x${sig.slice(2, 66)}`);
    const v = Number.parseInt(sig.slice(130), 16);
    expect(BigInt(vs) >> 255n).to.equal(BigInt(v - 27));
    expect(BigInt(vs) & ((1n << 255n) - 1n)).to.equal(BigInt(`0x${sig.slice(66, 130)}`));
  });

  it("refuses high-s signatures and out-of-range fields with a message naming the field", async () => {
    const sig = await signPayment({ signer: privateKeyToAccount(KEY), domain, payment });
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const s = BigInt(`0x${sig.slice(66, 130)}`);
    const highS = `${sig.slice(0, 66)}${(n - s).toString(16).padStart(64, "0")}${sig.slice(130)}` as `0x${string}`;
    expect(() => toCompactSignature(highS)).to.throw(PaymentEncodingError, /high s/);
    expect(() => packPayment({ ...payment, nonce: 1n << 32n }, sig)).to.throw(PaymentEncodingError, /nonce/);
    expect(() => packPayment({ ...payment, amount: 1n << 96n }, sig)).to.throw(PaymentEncodingError, /amount/);
    expect(() => packPayment({ ...payment, amount: -1n }, sig)).to.throw(PaymentEncodingError, /amount/);
    expect(() => packPayment(payment, "0x12")).to.throw(PaymentEncodingError, /65 bytes/);
  });
});
