/**
 * What the adversarial suite throws at the relayer, as fast-check arbitraries of plain specs: which
 * fault, in which field, with which values. Specs hold no keys, times or addresses of the run;
 * support/adversarial-cases.ts turns each into a request and the answer it must get. Pure: a seed
 * gives the same specs every run.
 */
import { type Address, LIMITS as FIELD_LIMITS, type Hex, ZERO_REF } from "@machinepay/sdk";
import fc from "fast-check";
import { bytesToHex, keccak256, stringToHex } from "viem";
import type { RefusedKind } from "./adversarial-chain";
import { SECP256K1_N, SECP256K1_N_HALF } from "./adversarial-sign";
import { USDC } from "./chain";

/** The relayer's request limits in this suite (small, so requests over them stay cheap). */
export const LIMITS = {
  bodyBytes: 256 * 1024,
  itemsPerRequest: 300,
  perDevicePerSecond: 200,
  perIpPerMinute: 1_000_000,
};
/** deadlineMarginSeconds (the default). */
export const MARGIN = 30;
/** Never-registered device keys, and owners of nothing, the cases pick from. */
export const POOL_SIZE = 16;
export const ATTACKERS = 4;
/** The control voucher's tab and cumulative: every voucher of that tab at or below it is stale. */
export const CONTROL_TAB = 424_242n;
export const CONTROL_CUMULATIVE = USDC(5);
/** The nonce device's control payment: every nonce at or below NONCE_TOP - 24 is too old after it. */
export const NONCE_TOP = 1000n;
export const TWO_32 = 1n << 32n;
export const TWO_64 = 1n << 64n;
export const TWO_96 = 1n << 96n;
export const TWO_256 = 1n << 256n;
/** Deadlines the relayer reads as milliseconds: [MS_FROM, MS_UNTIL). */
export const MS_FROM = 1_000_000_000_000n;
export const MS_UNTIL = TWO_32 * 1000n;
export const ZERO_ADDRESS = `0x${"00".repeat(20)}` as Address;
export const IDENTITY_PRECOMPILE = `0x${"00".repeat(19)}04` as Address;

// ---- arbitraries: items ---------------------------------------------------------------------------

const REFUSED_KINDS: RefusedKind[] = [
  "DeviceRevoked",
  "DevicePaused",
  "PolicyPaused",
  "PolicyFrozen",
  "NotYetValid",
  "PolicyExpired",
  "PayeeNotAllowed",
  "ExceedsPaymentCap",
  "ExceedsPeriodCap",
  "ExceedsLifetimeCap",
  "InsufficientBalance",
];

const refArb = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((b) => bytesToHex(b))
  .filter((r) => r !== ZERO_REF);
const addressArb = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => bytesToHex(b) as Address);
/** A few fixed outsiders (payees off the allow-list, wrong tokens): the relayer caches what it reads of them. */
const strangerArb = fc.constantFrom(
  ...Array.from({ length: 6 }, (_, i) => `0x${keccak256(stringToHex(`stranger ${i}`)).slice(-40)}` as Address),
);
const nonceArb = fc.bigInt({ min: 0n, max: TWO_32 - 1n });
/** Seconds a valid deadline lies ahead of chain time. */
const lifeArb = fc.integer({ min: 120, max: 30 * 86_400 });
const signerArb = fc.nat({ max: 7 });
/** Mostly a few fixed tab ids (the relayer caches what it reads of a tab), sometimes any uint256. */
const tabArb = fc.oneof(
  { weight: 9, arbitrary: fc.constantFrom(0n, 1n, 2n, 77n, TWO_32, TWO_64 - 1n, TWO_256 - 2_000_000n) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: TWO_256 - 1n }).filter((t) => t !== CONTROL_TAB) },
);
const smallAmount = fc.bigInt({ min: 1n, max: USDC(1) });
const hexDigits = (min: number, max: number) =>
  fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF"), minLength: min, maxLength: max });

export type SigMutation =
  | { m: "highS" }
  | { m: "v"; v: number }
  | { m: "parity" }
  | { m: "length"; hex: string }
  | { m: "compact" }
  | { m: "nonhex"; at: number; ch: string }
  | { m: "prefix"; prefix: string }
  | { m: "zero"; part: "r" | "s" }
  | { m: "order"; part: "r" | "s"; add: bigint }
  | { m: "random"; r: bigint; s: bigint; v: number };

const sigMutationArb: fc.Arbitrary<SigMutation> = fc.oneof(
  fc.constant({ m: "highS" as const }),
  fc
    .integer({ min: 0, max: 255 })
    .filter((v) => ![0, 1, 27, 28].includes(v))
    .map((v) => ({ m: "v" as const, v })),
  fc.constant({ m: "parity" as const }),
  hexDigits(0, 296)
    .filter((h) => h.length !== 130)
    .map((hex) => ({ m: "length" as const, hex })),
  fc.constant({ m: "compact" as const }),
  fc.record({
    m: fc.constant("nonhex" as const),
    at: fc.nat({ max: 129 }),
    ch: fc.constantFrom("g", "z", "x", " ", "-", "é", "\u0000", "G"),
  }),
  fc.record({ m: fc.constant("prefix" as const), prefix: fc.constantFrom("", "0X", "0x0x", "x", " 0x") }),
  fc.record({ m: fc.constant("zero" as const), part: fc.constantFrom("r" as const, "s" as const) }),
  fc.record({
    m: fc.constant("order" as const),
    part: fc.constantFrom("r" as const, "s" as const),
    add: fc.bigInt({ min: 0n, max: TWO_256 - 1n - SECP256K1_N }),
  }),
  fc.record({
    m: fc.constant("random" as const),
    r: fc.bigInt({ min: 1n, max: SECP256K1_N - 1n }),
    s: fc.bigInt({ min: 1n, max: SECP256K1_N_HALF }),
    v: fc.constantFrom(27, 28),
  }),
);

export type PaySpec =
  | {
      t: "refused";
      which: RefusedKind;
      amount: bigint;
      payee: number;
      other: Address;
      nonce: bigint;
      ref: Hex;
      life: number;
    }
  | { t: "unknown"; pool: number; amount: bigint; nonce: bigint; ref: Hex; life: number }
  | { t: "range"; field: "amount" | "nonce" | "deadline" | "maxFee"; value: bigint; signer: number; ref: Hex }
  | { t: "ms"; value: bigint; signer: number; ref: Hex; nonce: bigint }
  | { t: "deadline"; passed: boolean; offset: number; signer: number; ref: Hex; nonce: bigint }
  | { t: "payee0"; signer: number; ref: Hex; nonce: bigint; life: number }
  | { t: "token"; token: Address | "zero" | "contract"; signer: number; ref: Hex; nonce: bigint; life: number }
  | { t: "nonce"; old: bigint | "used"; ref: Hex; amount: bigint }
  | { t: "sig"; mu: SigMutation; signer: number; ref: Hex; nonce: bigint; life: number; amount: bigint }
  | {
      t: "tamper";
      field: "amount" | "payee" | "nonce" | "deadline" | "maxFee" | "ref" | "token";
      delta: bigint;
      other: Address;
      signer: number;
      ref: Hex;
      nonce: bigint;
      life: number;
    }
  | {
      t: "domain";
      chainId: number | null;
      contract: Address | null;
      signer: number;
      ref: Hex;
      nonce: bigint;
      life: number;
    }
  | { t: "confused"; signer: number; ref: Hex; nonce: bigint; life: number };

export const paySpecArb: fc.Arbitrary<PaySpec> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("refused" as const),
      which: fc.constantFrom(...REFUSED_KINDS),
      amount: fc.bigInt({ min: 0n, max: FIELD_LIMITS.amount }),
      payee: fc.nat({ max: 2 }),
      other: strangerArb,
      nonce: nonceArb,
      ref: refArb,
      life: lifeArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("unknown" as const),
      pool: fc.nat({ max: POOL_SIZE - 1 }),
      amount: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: FIELD_LIMITS.amount })),
      nonce: nonceArb,
      ref: refArb,
      life: lifeArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.record({
        t: fc.constant("range" as const),
        field: fc.constant("amount" as const),
        value: fc.bigInt({ min: TWO_96, max: TWO_256 - 1n }),
        signer: signerArb,
        ref: refArb,
      }),
      fc.record({
        t: fc.constant("range" as const),
        field: fc.constant("maxFee" as const),
        value: fc.bigInt({ min: TWO_96, max: TWO_256 - 1n }),
        signer: signerArb,
        ref: refArb,
      }),
      fc.record({
        t: fc.constant("range" as const),
        field: fc.constant("nonce" as const),
        value: fc.bigInt({ min: TWO_32, max: TWO_256 - 1n }),
        signer: signerArb,
        ref: refArb,
      }),
      fc.record({
        t: fc.constant("range" as const),
        field: fc.constant("deadline" as const),
        value: fc.oneof(fc.bigInt({ min: TWO_32, max: MS_FROM - 1n }), fc.bigInt({ min: MS_UNTIL, max: TWO_256 - 1n })),
        signer: signerArb,
        ref: refArb,
      }),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("ms" as const),
      value: fc.oneof(
        fc.bigInt({ min: MS_FROM, max: MS_UNTIL - 1n }),
        fc.integer({ min: 0, max: 90 * 86_400_000 }).map((d) => BigInt(Date.now() + d)),
      ),
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("deadline" as const),
      passed: fc.boolean(),
      offset: fc.integer({ min: 5, max: 2_000_000_000 }),
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("payee0" as const),
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("token" as const),
      token: fc.oneof(strangerArb, fc.constantFrom("zero" as const, "contract" as const)),
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("nonce" as const),
      old: fc.oneof(fc.bigInt({ min: 0n, max: NONCE_TOP - 24n }), fc.constant("used" as const)),
      ref: refArb,
      amount: smallAmount,
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant("sig" as const),
      mu: sigMutationArb,
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
      life: lifeArb,
      amount: smallAmount,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("tamper" as const),
      field: fc.constantFrom(
        "amount" as const,
        "payee" as const,
        "nonce" as const,
        "deadline" as const,
        "maxFee" as const,
        "ref" as const,
        "token" as const,
      ),
      delta: fc.bigInt({ min: 1n, max: 1_000_000n }),
      other: addressArb,
      signer: signerArb,
      ref: refArb,
      nonce: fc.bigInt({ min: 0n, max: TWO_32 - 1_000_001n }),
      life: lifeArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({
        t: fc.constant("domain" as const),
        chainId: fc.option(
          fc
            .oneof(fc.constantFrom(1, 10, 137, 1337, 31338, 8453), fc.integer({ min: 1, max: 2 ** 48 }))
            .filter((c) => c !== 31337),
        ),
        contract: fc.option(fc.oneof(addressArb, fc.constant(ZERO_ADDRESS))),
        signer: signerArb,
        ref: refArb,
        nonce: nonceArb,
        life: lifeArb,
      })
      .filter((d) => d.chainId !== null || d.contract !== null),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("confused" as const),
      signer: signerArb,
      ref: refArb,
      nonce: nonceArb,
      life: lifeArb,
    }),
  },
);

export type VoucherSpec =
  | { t: "stale"; cumulative: bigint; life: number }
  | { t: "zero"; signer: number; tabId: bigint; life: number }
  | { t: "refused"; which: RefusedKind; amount: bigint; payee: number; other: Address; tabId: bigint; life: number }
  | { t: "unknown"; pool: number; amount: bigint; tabId: bigint; life: number }
  | { t: "range"; field: "cumulative" | "maxFee"; value: bigint; signer: number; tabId: bigint }
  | { t: "ms"; value: bigint; signer: number; tabId: bigint }
  | { t: "deadline"; passed: boolean; offset: number; signer: number; tabId: bigint }
  | { t: "payee0"; signer: number; tabId: bigint; life: number }
  | { t: "sig"; mu: SigMutation; signer: number; tabId: bigint; life: number; amount: bigint }
  | {
      t: "tamper";
      field: "cumulative" | "payee" | "tabId" | "deadline";
      delta: bigint;
      signer: number;
      tabId: bigint;
      life: number;
    }
  | { t: "domain"; chainId: number; signer: number; tabId: bigint; life: number };

export const voucherSpecArb: fc.Arbitrary<VoucherSpec> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("stale" as const),
      cumulative: fc.bigInt({ min: 0n, max: CONTROL_CUMULATIVE }),
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("zero" as const), signer: signerArb, tabId: tabArb, life: lifeArb }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("refused" as const),
      which: fc.constantFrom(...REFUSED_KINDS),
      amount: fc.bigInt({ min: 0n, max: FIELD_LIMITS.amount }),
      payee: fc.nat({ max: 2 }),
      other: strangerArb,
      tabId: tabArb,
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("unknown" as const),
      pool: fc.nat({ max: POOL_SIZE - 1 }),
      amount: fc.bigInt({ min: 0n, max: FIELD_LIMITS.amount }),
      tabId: tabArb,
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("range" as const),
      field: fc.constantFrom("cumulative" as const, "maxFee" as const),
      value: fc.bigInt({ min: TWO_96, max: TWO_256 - 1n }),
      signer: signerArb,
      tabId: tabArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("ms" as const),
      value: fc.bigInt({ min: MS_FROM, max: MS_UNTIL - 1n }),
      signer: signerArb,
      tabId: tabArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("deadline" as const),
      passed: fc.boolean(),
      offset: fc.integer({ min: 5, max: 2_000_000_000 }),
      signer: signerArb,
      tabId: tabArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("payee0" as const), signer: signerArb, tabId: tabArb, life: lifeArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("sig" as const),
      mu: sigMutationArb,
      signer: signerArb,
      tabId: tabArb,
      life: lifeArb,
      amount: smallAmount,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("tamper" as const),
      field: fc.constantFrom("cumulative" as const, "payee" as const, "tabId" as const, "deadline" as const),
      delta: fc.bigInt({ min: 1n, max: 1_000_000n }),
      signer: signerArb,
      tabId: tabArb.filter((t) => t < TWO_256 - 1_000_001n),
      life: lifeArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("domain" as const),
      chainId: fc.integer({ min: 1, max: 2 ** 48 }).filter((c) => c !== 31337),
      signer: signerArb,
      tabId: tabArb,
      life: lifeArb,
    }),
  },
);

// ---- arbitraries: replays ---------------------------------------------------------------------------

export type ReplaySpec = {
  kind: "payment" | "voucher";
  which: number;
  variant: "same" | "case" | "v01" | "sigUpper";
  twice: boolean;
  extra: PaySpec | null;
};

export const replaySpecArb: fc.Arbitrary<ReplaySpec> = fc.record({
  kind: fc.constantFrom("payment" as const, "payment" as const, "voucher" as const),
  which: fc.nat(),
  variant: fc.constantFrom("same" as const, "case" as const, "v01" as const, "sigUpper" as const),
  twice: fc.boolean(),
  extra: fc.option(paySpecArb, { freq: 2 }),
});

// ---- arbitraries: bodies that fail the schema ----------------------------------------------------

const notStringArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(fc.nat(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.nat(), { maxKeys: 2 }),
);

const badUintArb: fc.Arbitrary<unknown> = fc.oneof(
  notStringArb,
  fc.bigInt({ min: 0n, max: 10n ** 30n }).map((n) => `-${n}`),
  fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => `${a}.${b}`),
  fc.nat().map((n) => `.${n}`),
  fc
    .tuple(fc.nat({ max: 999 }), fc.nat({ max: 99 }), fc.constantFrom("e", "E", "e+", "E-"))
    .map(([a, e, s]) => `${a}${s}${e}`),
  fc.bigInt({ min: 0n, max: TWO_256 - 1n }).map((n) => `0x${n.toString(16)}`),
  fc.constantFrom(
    "",
    " 1",
    "1 ",
    "\t1",
    "+1",
    "1_000",
    "١٢٣",
    "１２３",
    "0b1",
    "0o7",
    "Infinity",
    "NaN",
    "1n",
    "٠",
    "1,000",
    "null",
  ),
  fc.bigInt({ min: TWO_256, max: 1n << 600n }).map(String),
  fc.integer({ min: 79, max: 3_000 }).map((n) => "9".repeat(n)),
);

const badAddressArb: fc.Arbitrary<unknown> = fc.oneof(
  notStringArb,
  hexDigits(40, 40),
  hexDigits(0, 80)
    .filter((h) => h.length !== 40)
    .map((h) => `0x${h}`),
  hexDigits(39, 39).map((h) => `0x${h}g`),
  hexDigits(40, 40).map((h) => `0X${h}`),
  hexDigits(40, 40).map((h) => ` 0x${h}`),
  fc.constantFrom("", "vitalik.eth", "0x", "0x0"),
);

const badBytes32Arb: fc.Arbitrary<unknown> = fc.oneof(
  notStringArb,
  hexDigits(64, 64),
  hexDigits(0, 128)
    .filter((h) => h.length !== 64)
    .map((h) => `0x${h}`),
  hexDigits(63, 63).map((h) => `0x${h}z`),
);

const badDeviceSignatureArb: fc.Arbitrary<unknown> = fc.oneof(
  notStringArb,
  hexDigits(299, 2_000).map((h) => `0x${h}`),
);
const notObjectArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 8 }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.nat(), { maxLength: 2 }),
);

type FieldMutation = { path: string[]; value: unknown };

const PAYMENT_FIELDS: [string, fc.Arbitrary<unknown>][] = [
  ["payee", badAddressArb],
  ["token", badAddressArb],
  ["amount", badUintArb],
  ["nonce", badUintArb],
  ["deadline", badUintArb],
  ["maxFee", badUintArb],
  ["ref", badBytes32Arb],
];
const VOUCHER_FIELDS: [string, fc.Arbitrary<unknown>][] = [
  ["payee", badAddressArb],
  ["token", badAddressArb],
  ["tabId", badUintArb],
  ["cumulative", badUintArb],
  ["deadline", badUintArb],
  ["maxFee", badUintArb],
];

const itemMutationArb = (inner: "payment" | "voucher"): fc.Arbitrary<FieldMutation> =>
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.oneof(
        ...(inner === "payment" ? PAYMENT_FIELDS : VOUCHER_FIELDS).map(([f, arb]) =>
          arb.map((value) => ({ path: [inner, f], value })),
        ),
      ),
    },
    { weight: 1, arbitrary: badDeviceSignatureArb.map((value) => ({ path: ["signature"], value })) },
    { weight: 1, arbitrary: fc.oneof(notObjectArb, fc.constant(undefined)).map((value) => ({ path: [inner], value })) },
    { weight: 1, arbitrary: notObjectArb.map((value) => ({ path: [], value })) },
  );

export type SchemaSpec =
  | {
      t: "item";
      route: "payment" | "voucher";
      items: number;
      at: number;
      mutation: FieldMutation;
      base: PaySpec;
      vbase: VoucherSpec;
    }
  | { t: "text"; route: string; text: string }
  | { t: "json"; route: string; value: unknown }
  | { t: "truncate"; route: string; at: number; base: PaySpec }
  | { t: "suffix"; route: string; junk: string; base: PaySpec }
  | { t: "syntax"; route: string; text: string }
  | { t: "deep"; route: "payment" | "voucher"; depth: number; object: boolean }
  | { t: "proto"; variant: number; base: PaySpec }
  | { t: "shape"; route: "payment" | "voucher"; variant: number; base: PaySpec };

export const POST_ROUTES = ["/v1/payments", "/v1/vouchers", "/v1/onboardings", "/v1/revocations"];

export const schemaSpecArb: fc.Arbitrary<SchemaSpec> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.constantFrom("payment" as const, "voucher" as const).chain((route) =>
      fc.record({
        t: fc.constant("item" as const),
        route: fc.constant(route),
        items: fc.integer({ min: 1, max: 3 }),
        at: fc.nat({ max: 2 }),
        mutation: itemMutationArb(route),
        base: paySpecArb,
        vbase: voucherSpecArb,
      }),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("text" as const),
      route: fc.constantFrom(...POST_ROUTES),
      text: fc.oneof(fc.string({ unit: "binary", maxLength: 64 }), fc.string({ maxLength: 64 })),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("json" as const),
      route: fc.constantFrom(...POST_ROUTES),
      value: fc.jsonValue({ maxDepth: 4 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("truncate" as const),
      route: fc.constantFrom("/v1/payments"),
      at: fc.nat(),
      base: paySpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("suffix" as const),
      route: fc.constantFrom("/v1/payments"),
      junk: fc.constantFrom("}", "]", ",", "x", "{}", "//c", "\u0000", "null", "'"),
      base: paySpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("syntax" as const),
      route: fc.constantFrom(...POST_ROUTES),
      text: fc.constantFrom(
        "{'payments': []}",
        '{"payments": [],}',
        '{"payments": [1,]}',
        '/* c */ {"payments": []}',
        '{"payments": NaN}',
        "{payments: []}",
        '\uFEFF{"payments": []}',
        '{"payments": 0x10}',
        '{"payments": [Infinity]}',
        '{"a":1}{"b":2}',
        "undefined",
        '{"payments": "\\x41"}',
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("deep" as const),
      route: fc.constantFrom("payment" as const, "voucher" as const),
      depth: fc.integer({ min: 2, max: 40_000 }),
      object: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("proto" as const), variant: fc.nat({ max: 3 }), base: paySpecArb }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("shape" as const),
      route: fc.constantFrom("payment" as const, "voucher" as const),
      variant: fc.nat({ max: 6 }),
      base: paySpecArb,
    }),
  },
);

// ---- arbitraries: limits, media types, methods ----------------------------------------------------

export type LimitSpec =
  | { t: "body"; route: string; extra: number; garbage: boolean; chunked: boolean }
  | { t: "items"; route: "payment" | "voucher"; extra: number; base: PaySpec }
  | { t: "device"; extra: number; signer: number }
  | { t: "media"; route: string; type: string | null; base: PaySpec }
  | { t: "method"; route: string; method: string };

export const limitSpecArb: fc.Arbitrary<LimitSpec> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("body" as const),
      route: fc.constantFrom(...POST_ROUTES),
      extra: fc.integer({ min: 1, max: LIMITS.bodyBytes }),
      garbage: fc.boolean(),
      chunked: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("items" as const),
      route: fc.constantFrom("payment" as const, "voucher" as const),
      extra: fc.integer({ min: 1, max: 100 }),
      base: paySpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("device" as const),
      extra: fc.integer({ min: 1, max: LIMITS.itemsPerRequest - LIMITS.perDevicePerSecond }),
      signer: signerArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("media" as const),
      route: fc.constantFrom(...POST_ROUTES),
      type: fc.option(
        fc.constantFrom(
          "text/plain",
          "application/x-www-form-urlencoded",
          "multipart/form-data; boundary=x",
          "application/xml",
          "application/json-patch+json",
          "application/octet-stream",
          "text/json",
          "application/jsonx",
          "json",
        ),
      ),
      base: paySpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("method" as const),
      route: fc.constantFrom(...POST_ROUTES, "/v1/settle"),
      method: fc.constantFrom("PUT", "PATCH", "DELETE"),
    }),
  },
);

// ---- arbitraries: owner messages -------------------------------------------------------------------

export const ONBOARDING_FAULTS = [
  "attacker",
  "claimsOther",
  "domain",
  "epoch",
  "nonceUsed",
  "proof",
  "proofForOther",
  "noProof",
  "periodZero",
  "validity",
  "unknownPolicy",
  "otherPolicy",
  "ownedByAnother",
  "revokedDevice",
  "zeroDevice",
  "expired",
  "tooSoon",
  "contractOwner",
  "garbageSig",
] as const;
export const REVOCATION_FAULTS = [
  "attacker",
  "claimsOther",
  "ownsNothing",
  "notMine",
  "unregistered",
  "alreadyRevoked",
  "epoch",
  "nonceUsed",
  "domain",
  "expired",
  "tooSoon",
  "garbageSig",
] as const;

export type OwnerSpec = {
  kind: "onboarding" | "revocation";
  fault: number;
  keys: Uint8Array[];
  at: number;
  nonce: bigint;
  epoch: number;
  policyId: number;
  attacker: number;
  life: number;
  offset: number;
  bytes: Uint8Array;
  proof: [Uint8Array, Uint8Array];
};

export const ownerSpecArb: fc.Arbitrary<OwnerSpec> = fc.record({
  kind: fc.constantFrom("onboarding" as const, "onboarding" as const, "revocation" as const),
  fault: fc.nat(),
  keys: fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { minLength: 1, maxLength: 3 }),
  at: fc.nat(),
  nonce: fc.bigInt({ min: 2n, max: TWO_256 - 1n }),
  epoch: fc.integer({ min: 1, max: 0xffffffff }),
  policyId: fc.integer({ min: 1_000, max: 0xffffffff }),
  attacker: fc.nat({ max: ATTACKERS - 1 }),
  life: fc.integer({ min: 600, max: 30 * 86_400 }),
  offset: fc.integer({ min: 0, max: 2_000_000 }),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 200 }),
  proof: fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 })),
});

// Owner messages that fail the schema (400 before any dry run).
const badU32Arb: fc.Arbitrary<unknown> = fc.oneof(
  fc.nat().map(String),
  fc.integer({ min: -(2 ** 31), max: -1 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
  fc.integer({ min: 2 ** 32, max: Number.MAX_SAFE_INTEGER }),
  fc.constantFrom(1e300, null, true, false, [], {}, "0x1", undefined),
);
const badU64Arb: fc.Arbitrary<unknown> = fc.oneof(
  badUintArb,
  fc.bigInt({ min: TWO_64, max: TWO_256 - 1n }).map(String),
);
const badBoolArb: fc.Arbitrary<unknown> = fc.constantFrom("true", "false", 0, 1, null, undefined, [], {}, "yes");
const badOwnerSigArb: fc.Arbitrary<unknown> = fc.oneof(
  notStringArb,
  fc.constantFrom("0x", "0x1", "0xzz", "0x123", "0X00", ""),
  hexDigits(2, 64).map((h) => (h.length % 2 === 0 ? h : `${h}0`)),
  fc.integer({ min: 16_385, max: 20_000 }).map((n) => `0x${"ab".repeat(n)}`),
);

export type OwnerSchemaSpec = {
  kind: "onboarding" | "revocation";
  field: number;
  value: unknown;
  devices: number;
  dup: number;
};

export const ONBOARDING_SCHEMA: [string[], fc.Arbitrary<unknown>][] = [
  [["onboarding", "owner"], badAddressArb],
  [["onboarding", "policyId"], badU32Arb],
  [["onboarding", "policy"], notObjectArb],
  [["onboarding", "policy", "token"], badAddressArb],
  [["onboarding", "policy", "maxPerPayment"], badU64Arb],
  [["onboarding", "policy", "maxPerPeriod"], badU64Arb],
  [["onboarding", "policy", "periodLength"], badU32Arb],
  [["onboarding", "policy", "lifetimeMax"], badU64Arb],
  [["onboarding", "policy", "validFrom"], badU32Arb],
  [["onboarding", "policy", "validUntil"], badU32Arb],
  [["onboarding", "policy", "payeesRestricted"], badBoolArb],
  [["onboarding", "devices"], fc.oneof(notObjectArb, fc.constant([]))],
  [["onboarding", "devices", "0"], badAddressArb],
  [["onboarding", "epoch"], badU32Arb],
  [["onboarding", "nonce"], badUintArb],
  [["onboarding", "deadline"], badUintArb],
  [["proofs"], notObjectArb],
  [["proofs", "0", "r"], badBytes32Arb],
  [["proofs", "0", "vs"], badBytes32Arb],
  [["signature"], badOwnerSigArb],
  [["onboarding"], fc.oneof(notObjectArb, fc.constant(undefined))],
];
export const REVOCATION_SCHEMA: [string[], fc.Arbitrary<unknown>][] = [
  [["revocation", "owner"], badAddressArb],
  [["revocation", "devices"], fc.oneof(notObjectArb, fc.constant([]))],
  [["revocation", "devices", "0"], badAddressArb],
  [["revocation", "epoch"], badU32Arb],
  [["revocation", "nonce"], badUintArb],
  [["revocation", "deadline"], badUintArb],
  [["signature"], badOwnerSigArb],
  [["revocation"], fc.oneof(notObjectArb, fc.constant(undefined))],
];

export const ownerSchemaArb: fc.Arbitrary<OwnerSchemaSpec> = fc.oneof(
  fc.nat({ max: ONBOARDING_SCHEMA.length - 1 }).chain((field) =>
    fc.record({
      kind: fc.constant("onboarding" as const),
      field: fc.constant(field),
      value: ONBOARDING_SCHEMA[field][1],
      devices: fc.constant(0),
      dup: fc.constant(0),
    }),
  ),
  fc.nat({ max: REVOCATION_SCHEMA.length - 1 }).chain((field) =>
    fc.record({
      kind: fc.constant("revocation" as const),
      field: fc.constant(field),
      value: REVOCATION_SCHEMA[field][1],
      devices: fc.constant(0),
      dup: fc.constant(0),
    }),
  ),
  // Lists: too many devices, a device twice, proofs that do not match the devices.
  fc.record({
    kind: fc.constantFrom("onboarding" as const, "revocation" as const),
    field: fc.constant(-1),
    value: fc.constant(null),
    devices: fc.integer({ min: 1, max: 60 }),
    dup: fc.nat({ max: 2 }),
  }),
);

// ---- arbitraries: admin and reads ---------------------------------------------------------------

export type AdminSpec = { variant: number; token: string; at: number };

const printable = fc.string({
  unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: 80,
});
export const adminSpecArb: fc.Arbitrary<AdminSpec> = fc.record({
  variant: fc.nat({ max: 11 }),
  token: printable,
  at: fc.nat(),
});

export type ReadSpec = { route: number; id: string; raw: boolean };

export const readSpecArb: fc.Arbitrary<ReadSpec> = fc.record({
  route: fc.nat({ max: 9 }),
  id: fc.oneof(
    fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => bytesToHex(b) as string),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: "binary", maxLength: 20 }),
    fc.integer({ min: 201, max: 4_000 }).map((n) => "a".repeat(n)),
    fc.constantFrom("%", "%E0%A4%A", "..", "-1", "0", "999999999999999999999", "1e3", "0x", "null", "%00"),
    fc.nat().map(String),
  ),
  raw: fc.boolean(),
});
