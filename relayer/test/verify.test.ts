import {
  type Address,
  type Hex,
  LIMITS,
  type MachinePayDomain,
  machinePayDomain,
  type Payment,
  paymentTypes,
  toCompactSignature,
  type Voucher,
  voucherTypes,
} from "@machinepay/sdk";
import { expect } from "chai";
import secp256k1 from "secp256k1";
import { compactSignatureToSignature, getAddress, hashTypedData, isAddress, keccak256, recoverAddress } from "viem";
import { privateKeyToAddress, signTypedData } from "viem/accounts";
import {
  fastKeccak256,
  keccakBackend,
  keccakReady,
  nativeKeccak256,
  Verifier,
  type VerifyCode,
  type VerifyItem,
  type VerifyResult,
} from "../src/ingest/verify";
import { VerifierPool } from "../src/ingest/verify-pool";

// Deterministic corpus: splitmix64 from a fixed seed.
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
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const hex = (bytes: number): Hex =>
    `0x${bits(bytes * 8)
      .toString(16)
      .padStart(bytes * 2, "0")}`;
  return { bits, int, pick, hex };
}

const SEED = 0x6d61636870617931n;
const ITEMS = 10_000;
const VIEM_SIGNED_EVERY = 32; // ~310 items signed through viem's signTypedData, the rest natively
const VIEM_RECOVERED_EVERY = 10; // and every 10th intact item also recovered through viem
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const N_HALF = N >> 1n;
const MAX_UINT256 = (1n << 256n) - 1n;

const domain = machinePayDomain({ chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" });
const otherChain = machinePayDomain({ chainId: 1, verifyingContract: domain.verifyingContract });
const otherContract = machinePayDomain({
  chainId: 31337,
  verifyingContract: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
});

type Case = {
  item: VerifyItem;
  /** What the item was built as (for coverage counts and failure messages). */
  label: string;
  /** The address whose key signed it (under `domain`, or another domain for those cases). */
  signer: Address;
  /** true when the key signed exactly this item's EIP-712 digest under `domain`. */
  intact: boolean;
};

// ---- reference: viem's generic EIP-712 + recovery, plus the contract's documented rules ----

type Verdict = { ok: true; digest: Hex; device: Address } | { ok: false; code: VerifyCode; field: string };

function referenceFields(item: VerifyItem): Verdict | undefined {
  const bad = (code: VerifyCode, field: string): Verdict => ({ ok: false, code, field });
  const u96 = (x: unknown) => typeof x === "bigint" && x >= 0n && x < 1n << 96n;
  const u32 = (x: unknown) => typeof x === "bigint" && x >= 0n && x < 1n << 32n;
  const deadline = (x: unknown): Verdict | undefined => {
    if (u32(x)) return undefined;
    if (typeof x !== "bigint") return bad("FIELD_MALFORMED", "deadline");
    // Milliseconds since 2001-09-09 whose seconds still fit in 32 bits.
    if (x >= 10n ** 12n && x / 1000n < 1n << 32n) return bad("DEADLINE_IN_MILLISECONDS", "deadline");
    return bad("FIELD_OUT_OF_RANGE", "deadline");
  };
  const number = (field: string, x: unknown, ok: (x: unknown) => boolean): Verdict | undefined =>
    ok(x) ? undefined : bad(typeof x === "bigint" ? "FIELD_OUT_OF_RANGE" : "FIELD_MALFORMED", field);
  const msg: Record<string, unknown> = item.kind === "payment" ? item.payment : item.voucher;
  const numeric =
    item.kind === "payment"
      ? (number("amount", msg.amount, u96) ??
        number("nonce", msg.nonce, u32) ??
        deadline(msg.deadline) ??
        number("maxFee", msg.maxFee, u96))
      : (number("tabId", msg.tabId, (x) => typeof x === "bigint" && x >= 0n && x <= MAX_UINT256) ??
        number("cumulative", msg.cumulative, u96) ??
        deadline(msg.deadline) ??
        number("maxFee", msg.maxFee, u96));
  if (numeric) return numeric;
  for (const field of ["payee", "token"]) {
    const a = msg[field];
    if (typeof a !== "string" || !isAddress(a, { strict: false })) return bad("FIELD_MALFORMED", field);
  }
  if (item.kind === "payment" && !/^0x[0-9a-fA-F]{64}$/.test(String(msg.ref))) return bad("FIELD_MALFORMED", "ref");
  return undefined;
}

function referenceSignature(signature: unknown): Verdict | undefined {
  const bad = (code: VerifyCode): Verdict => ({ ok: false, code, field: "signature" });
  if (typeof signature !== "string" || !/^0x[0-9a-fA-F]{130}$/.test(signature)) return bad("SIGNATURE_LENGTH");
  const v = Number.parseInt(signature.slice(130), 16);
  if (![0, 1, 27, 28].includes(v)) return bad("SIGNATURE_BAD_V");
  const r = BigInt(`0x${signature.slice(2, 66)}`);
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  if (r === 0n || s === 0n || r >= N || s >= N) return bad("SIGNATURE_INVALID");
  if (s > N_HALF) return bad("SIGNATURE_HIGH_S");
  return undefined;
}

function viemDigest(d: MachinePayDomain, item: VerifyItem): Hex {
  return item.kind === "payment"
    ? hashTypedData({ domain: d, types: paymentTypes, primaryType: "Payment", message: item.payment })
    : hashTypedData({ domain: d, types: voucherTypes, primaryType: "Voucher", message: item.voucher });
}

/**
 * The verdict for `item`. `signer`, when given, is the key that signed exactly this item's digest:
 * recovery by construction. viem's recovery costs ~4 ms an item on these machines, so the test
 * gives it every item whose signer is not known that way, and a sample of the others.
 */
async function reference(item: VerifyItem, signer?: Address): Promise<Verdict> {
  const early = referenceFields(item) ?? referenceSignature(item.signature);
  if (early) return early;
  const digest = viemDigest(domain, item);
  if (signer) return { ok: true, digest, device: signer };
  try {
    const device = await recoverAddress({ hash: digest, signature: item.signature });
    return { ok: true, digest, device };
  } catch {
    return { ok: false, code: "SIGNATURE_INVALID", field: "signature" };
  }
}

// ---- the corpus ----

const R = rng(SEED);

function word(x: bigint): string {
  return x.toString(16).padStart(64, "0");
}

function address(): Address {
  const a = R.hex(20);
  return R.int(2) === 0 ? a : getAddress(a);
}

function amount(): bigint {
  return R.pick([0n, 1n, LIMITS.amount, LIMITS.amount - 1n, R.bits(96), R.bits(40), R.bits(20)]);
}

function randomPayment(): Payment {
  return {
    payee: address(),
    token: R.int(8) === 0 ? "0x0000000000000000000000000000000000000000" : address(),
    amount: amount(),
    nonce: R.pick([0n, LIMITS.nonce, R.bits(32), R.bits(10)]),
    deadline: R.pick([0n, LIMITS.deadline, 1_700_000_000n + R.bits(28)]),
    maxFee: R.pick([0n, LIMITS.maxFee, R.bits(16)]),
    ref: R.pick([`0x${"00".repeat(32)}` as Hex, R.hex(32), `0x${R.hex(32).slice(2).toUpperCase()}` as Hex]),
  };
}

function randomVoucher(): Voucher {
  return {
    payee: address(),
    token: address(),
    tabId: R.pick([0n, MAX_UINT256, R.bits(256), R.bits(16)]),
    cumulative: amount(),
    deadline: R.pick([0n, LIMITS.deadline, 1_700_000_000n + R.bits(28)]),
    maxFee: R.pick([0n, LIMITS.maxFee, R.bits(16)]),
  };
}

type Key = { priv: Uint8Array; hex: Hex; address: Address };

function randomKeys(count: number): Key[] {
  const keys: Key[] = [];
  while (keys.length < count) {
    const priv = Buffer.from(R.hex(32).slice(2), "hex");
    if (!secp256k1.privateKeyVerify(priv)) continue;
    const hex = `0x${priv.toString("hex")}` as Hex;
    keys.push({ priv, hex, address: privateKeyToAddress(hex) });
  }
  return keys;
}

function withSignature(item: VerifyItem, signature: string): VerifyItem {
  return { ...item, signature: signature as Hex };
}

function withField(item: VerifyItem, field: string, value: unknown): VerifyItem {
  return (
    item.kind === "payment"
      ? { ...item, payment: { ...item.payment, [field]: value } }
      : { ...item, voucher: { ...item.voucher, [field]: value } }
  ) as VerifyItem;
}

/** Signature mutations: the signature no longer is what a standard signer produces. */
const signatureFaults: Record<string, (sig: Hex) => string> = {
  "high-s": (sig) => {
    const s = N - BigInt(`0x${sig.slice(66, 130)}`);
    const v = Number.parseInt(sig.slice(130), 16) === 27 ? "1c" : "1b";
    return `${sig.slice(0, 66)}${word(s)}${v}`;
  },
  "bad v": (sig) => {
    let v = R.int(256);
    while ([0, 1, 27, 28].includes(v)) v = R.int(256);
    return `${sig.slice(0, 130)}${v.toString(16).padStart(2, "0")}`;
  },
  "64 bytes": (sig) => sig.slice(0, 130),
  "66 bytes": (sig) => `${sig}${R.hex(1).slice(2)}`,
  "odd hex": (sig) => (R.int(2) ? sig.slice(0, 131) : `${sig}0`),
  "non-hex char": (sig) => {
    const at = 2 + R.int(130);
    return `${sig.slice(0, at)}${R.pick(["g", "z", " ", "x", "G", "é", "\u0130"])}${sig.slice(at + 1)}`;
  },
  "no 0x": (sig) => `${sig.slice(2)}`,
  empty: () => "",
  "r = 0": (sig) => `0x${word(0n)}${sig.slice(66)}`,
  "s = 0": (sig) => `${sig.slice(0, 66)}${word(0n)}${sig.slice(130)}`,
  "r >= n": (sig) => `0x${word(R.pick([N, N + 1n, MAX_UINT256, N + R.bits(64)]))}${sig.slice(66)}`,
  "s >= n": (sig) => `${sig.slice(0, 66)}${word(R.pick([N, MAX_UINT256, N + R.bits(64)]))}${sig.slice(130)}`,
  "random r": (sig) => `0x${word(1n + (R.bits(256) % (N - 1n)))}${sig.slice(66)}`,
};

/** Field mutations beyond what the contract's packed calldata can carry. */
function fieldFault(item: VerifyItem): [string, VerifyItem] {
  const beyond96 = () => R.pick([1n << 96n, (1n << 96n) + R.bits(64), MAX_UINT256, -1n, -(1n << 200n)]);
  const ms = () => R.pick([10n ** 12n, 1_700_000_000_000n + R.bits(36), (1n << 32n) * 1000n - 1n]);
  const deadlineBeyond = () => R.pick([1n << 32n, (1n << 32n) + R.bits(20), (1n << 32n) * 1000n, 1n << 64n, -1n]);
  const malformed = (): [string, unknown] =>
    R.pick<[string, unknown]>([
      ["payee", "0x1234"],
      ["token", `0x${"zz".repeat(20)}`],
      ["payee", 12345],
      ["deadline", 1_900_000_000],
      ["maxFee", "0"],
    ]);
  const pick =
    item.kind === "payment"
      ? R.pick<[string, () => unknown]>([
          ["amount", beyond96],
          ["maxFee", beyond96],
          ["nonce", () => R.pick([1n << 32n, 1n << 64n, -1n])],
          ["deadline", deadlineBeyond],
          ["deadline ms", ms],
          ["ref", () => R.pick(["0x00", `0x${"0".repeat(63)}`, `0x${"0g".repeat(32)}`])],
          ["malformed", malformed],
        ])
      : R.pick<[string, () => unknown]>([
          ["cumulative", beyond96],
          ["maxFee", beyond96],
          ["tabId", () => R.pick([1n << 256n, -1n, 1n << 300n])],
          ["deadline", deadlineBeyond],
          ["deadline ms", ms],
          ["malformed", malformed],
        ]);
  const [what, value] = pick;
  if (what === "malformed") {
    const [field, bad] = value() as [string, unknown];
    return [`malformed ${field}`, withField(item, field, bad)];
  }
  const field = what === "deadline ms" ? "deadline" : what;
  return [`${what} out of range`, withField(item, field, value())];
}

async function sign(key: Key, d: MachinePayDomain, item: VerifyItem, viaViem: boolean): Promise<Hex> {
  if (viaViem) {
    return item.kind === "payment"
      ? signTypedData({
          privateKey: key.hex,
          domain: d,
          types: paymentTypes,
          primaryType: "Payment",
          message: item.payment,
        })
      : signTypedData({
          privateKey: key.hex,
          domain: d,
          types: voucherTypes,
          primaryType: "Voucher",
          message: item.voucher,
        });
  }
  const digest = Buffer.from(viemDigest(d, item).slice(2), "hex");
  const { signature, recid } = secp256k1.ecdsaSign(digest, key.priv);
  return `0x${Buffer.from(signature).toString("hex")}${(27 + recid).toString(16)}`;
}

async function buildCorpus(): Promise<Case[]> {
  const keys = randomKeys(128);
  const cases: Case[] = [];
  const faultNames = Object.keys(signatureFaults);
  for (let i = 0; i < ITEMS; i++) {
    const key = R.pick(keys);
    const base: VerifyItem =
      R.int(2) === 0
        ? { kind: "payment", payment: randomPayment(), signature: "0x" }
        : { kind: "voucher", voucher: randomVoucher(), signature: "0x" };
    // 68% valid, 19% signature faults, 7% field faults, 3% another domain, 3% tampered.
    const roll = R.int(100);
    let label = "valid";
    let d = domain;
    let intact = true;
    if (roll >= 94 && roll < 97) {
      label = R.int(2) ? "other chain id" : "other contract";
      d = label === "other chain id" ? otherChain : otherContract;
      intact = false;
    }
    let item = withSignature(base, await sign(key, d, base, i % VIEM_SIGNED_EVERY === 0));
    if (roll < 5) {
      // Valid variants a signer may legitimately send: v as 0/1, upper-case hex.
      label = "valid, v = 0/1";
      const v = Number.parseInt(item.signature.slice(130), 16) - 27;
      item = withSignature(item, `${item.signature.slice(0, 130)}0${v}`);
    } else if (roll < 8) {
      label = "valid, upper-case hex";
      item = withSignature(item, `0x${item.signature.slice(2).toUpperCase()}`);
    } else if (roll >= 68 && roll < 87) {
      label = R.pick(faultNames);
      item = withSignature(item, signatureFaults[label](item.signature));
      intact = label !== "random r"; // a random r recovers, if at all, to some other key
    } else if (roll >= 87 && roll < 94) {
      [label, item] = fieldFault(item);
    } else if (roll >= 97) {
      // Tampered after signing, still in range: verifies, to some other address.
      label = "tampered";
      item = withField(item, item.kind === "payment" ? "amount" : "cumulative", R.bits(64));
      intact = false;
    }
    cases.push({ item, label, signer: key.address, intact });
  }
  return cases;
}

function describeCase(c: Case, got: VerifyResult, want: Verdict): string {
  const j = (x: unknown) => JSON.stringify(x, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
  return `${c.label}: item ${j(c.item)} got ${j(got)} want ${j(want)}`;
}

describe("relayer: ingest/verify (fast path against viem)", function () {
  this.timeout(120_000);
  let cases: Case[];
  let results: VerifyResult[];
  const verifier = new Verifier(domain);

  before(async () => {
    await keccakReady; // the default Verifier then hashes with the WebAssembly keccak
    cases = await buildCorpus();
    results = cases.map((c) => verifier.verify(c.item));
  });

  it(`agrees with viem and the contract's rules on ${ITEMS} random payments and vouchers`, async () => {
    const mismatches: string[] = [];
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i];
      const got = results[i];
      const want = await reference(c.item, c.intact && i % VIEM_RECOVERED_EVERY !== 0 ? c.signer : undefined);
      let same = got.ok === want.ok;
      if (same && got.ok && want.ok) {
        same = got.digest === want.digest.toLowerCase() && got.device === want.device.toLowerCase();
        if (c.intact) same &&= got.device === c.signer.toLowerCase();
        else same &&= got.device !== c.signer.toLowerCase();
        const compact = toCompactSignature(c.item.signature);
        same &&= got.r === compact.r && got.vs === compact.vs;
      } else if (same && !got.ok && !want.ok) {
        same = got.code === want.code && got.field === want.field;
      }
      if (!same) mismatches.push(describeCase(c, got, want));
    }
    expect(mismatches.length, mismatches.slice(0, 3).join("\n")).to.equal(0);
  });

  it("covers every verdict, with ~30% of items refused", () => {
    const byCode = new Map<string, number>();
    for (const r of results) {
      const k = r.ok ? "ok" : r.code;
      byCode.set(k, (byCode.get(k) ?? 0) + 1);
    }
    for (const code of [
      "ok",
      "FIELD_MALFORMED",
      "FIELD_OUT_OF_RANGE",
      "DEADLINE_IN_MILLISECONDS",
      "SIGNATURE_LENGTH",
      "SIGNATURE_BAD_V",
      "SIGNATURE_HIGH_S",
      "SIGNATURE_INVALID",
    ]) {
      expect(byCode.get(code) ?? 0, code).to.be.greaterThan(50);
    }
    const refused = results.filter((r) => !r.ok).length / results.length;
    expect(refused).to.be.within(0.2, 0.35);
    expect(cases.filter((c) => c.item.kind === "voucher").length).to.be.within(ITEMS * 0.45, ITEMS * 0.55);
    const labels = new Set(cases.map((c) => c.label));
    for (const l of [...Object.keys(signatureFaults), "other chain id", "other contract", "tampered"]) {
      expect(labels.has(l), l).to.equal(true);
    }
  });

  it("refuses high-s signatures that viem accepts for the same key", async () => {
    const highS = cases.filter((c) => c.label === "high-s" && c.intact);
    expect(highS.length).to.be.greaterThan(50);
    for (const c of highS.slice(0, 20)) {
      expect(await recoverAddress({ hash: viemDigest(domain, c.item), signature: c.item.signature })).to.equal(
        c.signer,
      );
      const got = verifier.verify(c.item);
      expect(got.ok).to.equal(false);
      if (!got.ok) expect(got.message).to.contain("low-s");
    }
  });

  it("returns the (r, vs) from which EIP-2098 recovery (the contract's) gives the device", async () => {
    const ok = cases.filter((c, i) => c.intact && results[i].ok).slice(0, 200);
    for (const c of ok) {
      const got = verifier.verify(c.item);
      if (!got.ok) throw new Error("expected ok");
      const signature = compactSignatureToSignature({ r: got.r, yParityAndS: got.vs });
      expect(await recoverAddress({ hash: got.digest, signature })).to.equal(c.signer);
    }
  });

  it("verifies viem-signed items too (the signing path itself)", () => {
    const viaViem = cases.filter((_c, i) => i % VIEM_SIGNED_EVERY === 0);
    expect(viaViem.length).to.be.greaterThan(300);
    const ok = viaViem.filter((c) => c.intact && c.label === "valid");
    expect(ok.length).to.be.greaterThan(100);
    for (const c of ok) {
      const got = verifier.verify(c.item);
      expect(got.ok && got.device).to.equal(c.signer.toLowerCase());
    }
  });

  it("gives the same results with the JS and the native keccak as with the default (WebAssembly) one", () => {
    for (const keccak of [(data: Uint8Array) => keccak256(data, "bytes"), nativeKeccak256]) {
      const other = new Verifier(domain, { keccak });
      expect(other.domainSeparator).to.equal(verifier.domainSeparator);
      for (let i = 0; i < 1000; i++) expect(other.verify(cases[i].item)).to.deep.equal(results[i]);
    }
    expect(nativeKeccak256(new Uint8Array(0))).to.deep.equal(keccak256(new Uint8Array(0), "bytes"));
  });

  it("hashes every length from 0 to 600 bytes alike with the WebAssembly, native and JS keccaks", () => {
    expect(keccakBackend()).to.equal("wasm");
    const kept: Uint8Array[] = [];
    for (let n = 0; n <= 600; n++) {
      const data = new Uint8Array(n).map((_, i) => (i * 131 + n * 7) & 0xff);
      // A view into a larger buffer too: the hasher must read only the view's bytes.
      const view = new Uint8Array(n + 9).fill(0xee).subarray(4, 4 + n);
      view.set(data);
      const want = keccak256(data, "bytes");
      const got = fastKeccak256(view);
      expect(got, `${n} bytes`).to.deep.equal(want);
      expect(nativeKeccak256(data), `${n} bytes, native`).to.deep.equal(want);
      kept.push(got);
    }
    // Each digest is a copy: a later call does not overwrite an earlier answer.
    expect(kept[0]).to.deep.equal(keccak256(new Uint8Array(0), "bytes"));
  });

  it("gives the same verdicts on worker threads, in order, for many small calls and one large one", async () => {
    const pool = new VerifierPool(domain, 2);
    try {
      const items = cases.slice(0, 2_000).map((c) => c.item);
      // 200 one-item calls in one turn (coalesced into a message per worker), then one of 1,800.
      const small = await Promise.all(items.slice(0, 200).map((it) => pool.verifyMany([it])));
      const large = await pool.verifyMany(items.slice(200));
      expect([...small.flat(), ...large]).to.deep.equal(results.slice(0, 2_000));
    } finally {
      await pool.close();
    }
  });

  it("verifies inline what a worker held when it dies, and replaces the worker", async () => {
    const pool = new VerifierPool(domain, 1);
    try {
      const items = cases.slice(0, 500).map((c) => c.item);
      const slots = (pool as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots;
      const first = slots[0].worker;
      const pending = pool.verifyMany(items);
      await new Promise((r) => setImmediate(r)); // the batch is posted to the worker
      await first.terminate();
      expect(await pending).to.deep.equal(results.slice(0, 500));
      expect(slots[0].worker).to.not.equal(first);
      expect(await pool.verifyMany(items.slice(0, 10))).to.deep.equal(results.slice(0, 10));
    } finally {
      await pool.close();
    }
  });

  it("returns lowercase hex digests and devices", () => {
    for (const r of results) {
      if (r.ok) {
        expect(r.digest).to.match(/^0x[0-9a-f]{64}$/);
        expect(r.device).to.match(/^0x[0-9a-f]{40}$/);
      }
    }
  });

  describe("says what is wrong and what to do", () => {
    const payment: Payment = {
      payee: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
      token: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
      amount: 1_000n,
      nonce: 1n,
      deadline: 1_900_000_000n,
      maxFee: 0n,
      ref: `0x${"00".repeat(32)}`,
    };
    const key = randomKeys(1)[0];
    let good: VerifyItem;
    before(async () => {
      const item: VerifyItem = { kind: "payment", payment, signature: "0x" };
      good = withSignature(item, await sign(key, domain, item, true));
    });
    const refuse = (item: VerifyItem) => {
      const r = verifier.verify(item);
      if (r.ok) throw new Error("expected a refusal");
      return r;
    };

    it("a deadline in milliseconds", () => {
      const r = refuse(withField(good, "deadline", 1_900_000_000_000n));
      expect(r.code).to.equal("DEADLINE_IN_MILLISECONDS");
      expect(r.message).to.contain("deadlines are unix seconds").and.contain("1900000000");
    });

    it("an amount beyond 96 bits, a nonce beyond 32 bits", () => {
      expect(refuse(withField(good, "amount", 1n << 96n))).to.include({ code: "FIELD_OUT_OF_RANGE", field: "amount" });
      const r = refuse(withField(good, "nonce", 1n << 32n));
      expect(r).to.include({ code: "FIELD_OUT_OF_RANGE", field: "nonce" });
      expect(r.message).to.contain("32 bits");
    });

    it("a high-s signature", () => {
      const r = refuse(withSignature(good, signatureFaults["high-s"](good.signature)));
      expect(r.code).to.equal("SIGNATURE_HIGH_S");
      expect(r.message).to.contain("sign with a low-s signer, e.g. viem/ethers");
    });

    it("a 64-byte (compact) signature", () => {
      const r = refuse(withSignature(good, good.signature.slice(0, 130)));
      expect(r.code).to.equal("SIGNATURE_LENGTH");
      expect(r.message).to.contain("65").and.contain("EIP-2098");
    });

    it("a bad v, a zero r, a malformed payee, an unknown kind; none of them throws", () => {
      expect(refuse(withSignature(good, `${good.signature.slice(0, 130)}1d`)).message).to.contain("v is 29");
      expect(refuse(withSignature(good, `0x${word(0n)}${good.signature.slice(66)}`)).code).to.equal(
        "SIGNATURE_INVALID",
      );
      expect(refuse(withField(good, "payee", "0xnope"))).to.include({ code: "FIELD_MALFORMED", field: "payee" });
      expect(refuse({ kind: "other" } as unknown as VerifyItem)).to.include({ code: "FIELD_MALFORMED", field: "kind" });
      for (const junk of [{ kind: "voucher", voucher: {}, signature: null }, { kind: "payment" }, null]) {
        expect(refuse(junk as unknown as VerifyItem).code).to.equal("FIELD_MALFORMED");
      }
    });
  });
});
