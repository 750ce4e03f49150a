/**
 * The adversarial suite's cases: each spec (support/adversarial-specs.ts) becomes a request to the
 * live relayer and the answer it must get, built against the run's chain, devices and chain time
 * (bindCases). Items are signed for real (support/adversarial-sign.ts); every refused payment's ref
 * and voucher's tab is noted, so the suite can prove none of them settled.
 */
import { connect } from "node:net";
import {
  type Address,
  type DeviceProof,
  type Hex,
  itemId,
  machinePayDomain,
  NO_PROOF,
  type Onboarding,
  onboardingTypes,
  type Payment,
  type PolicyParams,
  type Revocation,
  revocationTypes,
  toOnboardingJson,
  toRevocationJson,
  toSignedPaymentJson,
  toSignedVoucherJson,
  type Voucher,
  ZERO_REF,
} from "@machinepay/sdk";
import { expect } from "chai";
import { bytesToHex, keccak256, stringToHex } from "viem";
import { generatePrivateKey } from "viem/accounts";
import type { World } from "./adversarial-chain";
import {
  enrollmentProofSync,
  highS,
  type Key,
  keyFromBytes,
  keyOf,
  paymentDigestOf,
  rawSignature,
  SECP256K1_N,
  signPaymentSync,
  signTypedSync,
  signVoucherSync,
  voucherDigestOf,
  withV,
} from "./adversarial-sign";
import {
  type AdminSpec,
  ATTACKERS,
  CONTROL_CUMULATIVE,
  CONTROL_TAB,
  IDENTITY_PRECOMPILE,
  LIMITS,
  type LimitSpec,
  MARGIN,
  NONCE_TOP,
  ONBOARDING_FAULTS,
  ONBOARDING_SCHEMA,
  type OwnerSchemaSpec,
  type OwnerSpec,
  type PaySpec,
  POOL_SIZE,
  REVOCATION_FAULTS,
  REVOCATION_SCHEMA,
  type ReadSpec,
  type ReplaySpec,
  type SchemaSpec,
  type SigMutation,
  type VoucherSpec,
  ZERO_ADDRESS,
} from "./adversarial-specs";
import { PAYEES, type TestChain, USDC } from "./chain";

// biome-ignore lint/suspicious/noExplicitAny: answers and mutated bodies are JSON walked freely
export type Json = any;
const lc = (a: string) => a.toLowerCase() as Address;
const into = (lo: bigint, hi: bigint, x: bigint) => lo + (x % (hi - lo + 1n));

/** What one submitted item must be answered. */
export type ItemExpect =
  | {
      refused: "rejected" | "stale";
      reasons: readonly string[];
      id?: Hex;
      field?: string;
      newest?: string;
      /** A word the message must contain (it names the real fault). */
      mentions?: string;
    }
  | { duplicateOf: Hex };

export type Expect =
  /** A whole-request error: this status, one of these codes, the message naming `mentions`. */
  | { kind: "error"; status: number; codes: readonly string[]; mentions?: string; check?: (body: Json) => void }
  /** 200 with one result per item, in order. */
  | { kind: "items"; route: "payment" | "voucher"; items: ItemExpect[] }
  /** 422 OWNER_MESSAGE_INVALID with the contract's (or the relayer's) error name. */
  | { kind: "owner"; errors: readonly string[]; mentions?: string }
  /** 202 answering the id of an owner message the relayer already holds. */
  | { kind: "known"; id: Hex }
  /** Reads: one of these statuses (4xx with the error body). */
  | { kind: "read"; statuses: readonly number[] };

export type Case = {
  label: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array | (() => ReadableStream<Uint8Array>);
  expect: Expect;
};

export type Answer = { status: number; headers: Headers; text: string; body: Json };

export const JSON_HEADERS = { "content-type": "application/json" };

// ---- the run the cases are built against (bindCases, in the suite's before) --------------------

let chain: TestChain;
let world: World;
let relayerUrl: string;
let adminToken: string;

/** What the cases need of the run; called again as more of it exists (the chain, then the world and relayer). */
export function bindCases(run: { chain: TestChain; adminToken: string; world?: World; relayerUrl?: string }): void {
  ({ chain, adminToken } = run);
  if (run.world) world = run.world;
  if (run.relayerUrl) relayerUrl = run.relayerUrl;
}

/**
 * Chain time as the relayer judges it (src/chain/clock.ts): the newest block's timestamp plus the
 * time since that block was first seen. Seeing the same block again does not reset it.
 */
export const clock = {
  ts: 0n,
  at: 0,
  async refresh() {
    const b = await chain.client.getBlock();
    if (b.timestamp > this.ts || this.at === 0) {
      this.ts = b.timestamp;
      this.at = Date.now();
    }
  },
  async fresh() {
    if (Date.now() - this.at > 1_000) await this.refresh();
  },
  now() {
    return this.ts + BigInt(Math.floor((Date.now() - this.at) / 1000));
  },
};

/** Keys of devices that were never registered (UnknownDevice). */
export const pool: Key[] = Array.from({ length: POOL_SIZE }, () => keyOf(generatePrivateKey()));
/** Keys that own nothing and sign what they may not (owner messages). */
export const attackers: Key[] = Array.from({ length: ATTACKERS }, () => keyOf(generatePrivateKey()));
/** The owner of the control onboarding (a fresh key with no ether: the relayer pays its gas) and its device. */
export const ownerX = keyOf(generatePrivateKey());
export const deviceX = keyOf(generatePrivateKey());
/** Every device key the cases generate (the log check looks for each). */
export const generatedKeys = new Set<Hex>();

/** The valid items the suite submits first; replays resend them, and only they may settle. */
export const controls = {
  payments: [] as { json: Json; id: Hex; device: Address; ref: Hex; amount: bigint; nonce: bigint }[],
  vouchers: [] as { json: Json; id: Hex }[],
  voucherDeadline: 0n,
  onboarding: undefined as undefined | { body: Json; id: Hex },
  controlPolicy: 0,
};

/** What no settlement may carry (refused payments' refs, refused vouchers' tabs) and the refused items' ids. */
export const refused = { refs: new Set<string>(), tabs: new Set<string>(), ids: new Map<Hex, "payment" | "voucher">() };

export const stats = {
  cases: 0,
  items: 0,
  byStatus: new Map<number, number>(),
  byProperty: new Map<string, number>(),
};

/** Forgets what a previous run recorded (the suite runs once per store backend, each on a fresh chain). */
export function resetCases(): void {
  clock.ts = 0n;
  clock.at = 0;
  controls.payments = [];
  controls.vouchers = [];
  controls.voucherDeadline = 0n;
  controls.onboarding = undefined;
  controls.controlPolicy = 0;
  refused.refs.clear();
  refused.tabs.clear();
  refused.ids.clear();
  stats.cases = 0;
  stats.items = 0;
  stats.byStatus.clear();
  stats.byProperty.clear();
}

// ---- building items ------------------------------------------------------------------------------

const domain = () => chain.domain;

export function paymentOf(over: Partial<Payment>): Payment {
  return {
    payee: PAYEES[0],
    token: chain.usdc,
    amount: 1_000n,
    nonce: 0n,
    deadline: clock.now() + 600n,
    maxFee: 0n,
    ref: ZERO_REF,
    ...over,
  };
}

export function voucherOf(over: Partial<Voucher>): Voucher {
  return {
    payee: PAYEES[1],
    token: chain.usdc,
    tabId: 1n,
    cumulative: 1_000n,
    deadline: clock.now() + 3_600n,
    maxFee: 0n,
    ...over,
  };
}

export type Built = { json: Json; expect: ItemExpect };

type Refusal = Extract<ItemExpect, { refused: string }>;
type RefusalDetails = Partial<Omit<Refusal, "reasons">>;

/** The item is refused ("rejected", unless `more` says "stale") for one of `reasons`. */
const refuse = (reasons: string | readonly string[], more: RefusalDetails = {}): Refusal => ({
  refused: "rejected",
  reasons: typeof reasons === "string" ? [reasons] : reasons,
  ...more,
});

function notePayment(p: Payment): void {
  refused.refs.add(lc(p.ref));
}
function noteVoucher(device: Address, v: Voucher): void {
  refused.tabs.add(`${lc(device)}:${v.tabId}`);
}

/** A payment signed by `key`, refused for `reasons` once the relayer knows its signer. */
function signedPayment(key: Key, p: Payment, reasons: string | readonly string[], more: RefusalDetails = {}): Built {
  notePayment(p);
  const signature = signPaymentSync(key.key, domain(), p);
  const id = itemId(paymentDigestOf(domain(), p), lc(key.address));
  return { json: toSignedPaymentJson(p, signature), expect: refuse(reasons, { id, ...more }) };
}

function signedVoucher(key: Key, v: Voucher, reasons: string | readonly string[], more: RefusalDetails = {}): Built {
  noteVoucher(key.address, v);
  const signature = signVoucherSync(key.key, domain(), v);
  const id = itemId(voucherDigestOf(domain(), v), lc(key.address));
  return { json: toSignedVoucherJson(v, signature), expect: refuse(reasons, { id, ...more }) };
}

/** The signature mutated, and what the relayer must answer for it. */
function mutate(signature: Hex, mu: SigMutation, digest: Hex): { signature: string; expect: ItemExpect } {
  const atDigest = { id: digest, field: "signature" };
  const word = (n: bigint) => n.toString(16).padStart(64, "0");
  switch (mu.m) {
    case "highS":
      return { signature: highS(signature), expect: refuse("SIGNATURE_HIGH_S", { ...atDigest, mentions: "high s" }) };
    case "v":
      return { signature: withV(signature, mu.v), expect: refuse("SIGNATURE_BAD_V", atDigest) };
    case "parity": {
      const v = Number.parseInt(signature.slice(130), 16);
      return {
        signature: withV(signature, v === 27 ? 28 : 27),
        expect: refuse(["UnknownDevice", "SIGNATURE_INVALID"]),
      };
    }
    case "length":
      return { signature: `0x${mu.hex}`, expect: refuse("SIGNATURE_LENGTH", atDigest) };
    case "compact":
      return {
        signature: signature.slice(0, 130),
        expect: refuse("SIGNATURE_LENGTH", { ...atDigest, mentions: "EIP-2098" }),
      };
    case "nonhex": {
      const i = 2 + mu.at;
      return {
        signature: `${signature.slice(0, i)}${mu.ch}${signature.slice(i + 1)}`,
        expect: refuse("SIGNATURE_LENGTH", atDigest),
      };
    }
    case "prefix":
      return { signature: `${mu.prefix}${signature.slice(2)}`, expect: refuse("SIGNATURE_LENGTH", atDigest) };
    case "zero": {
      const s =
        mu.part === "r"
          ? `0x${"0".repeat(64)}${signature.slice(66)}`
          : `${signature.slice(0, 66)}${"0".repeat(64)}${signature.slice(130)}`;
      return { signature: s, expect: refuse("SIGNATURE_INVALID", atDigest) };
    }
    case "order": {
      const bad = word(SECP256K1_N + mu.add);
      const s =
        mu.part === "r" ? `0x${bad}${signature.slice(66)}` : `${signature.slice(0, 66)}${bad}${signature.slice(130)}`;
      return { signature: s, expect: refuse("SIGNATURE_INVALID", atDigest) };
    }
    case "random":
      return { signature: rawSignature(mu.r, mu.s, mu.v), expect: refuse(["UnknownDevice", "SIGNATURE_INVALID"]) };
  }
}

const signer = (i: number) => world.signers[i % world.signers.length];

export function buildPayment(s: PaySpec): Built {
  const now = clock.now();
  switch (s.t) {
    case "refused": {
      const r = world.refused[s.which];
      const amount = into(r.amounts[0], r.amounts[1], s.amount);
      const payee = s.which === "PayeeNotAllowed" ? [PAYEES[1], PAYEES[2], s.other][s.payee] : PAYEES[s.payee];
      const p = paymentOf({ amount, payee, nonce: s.nonce, ref: s.ref, deadline: now + BigInt(s.life) });
      return signedPayment(r.device, p, s.which);
    }
    case "unknown": {
      const p = paymentOf({ amount: s.amount, nonce: s.nonce, ref: s.ref, deadline: now + BigInt(s.life) });
      return signedPayment(pool[s.pool], p, "UnknownDevice", { mentions: "not registered" });
    }
    case "range": {
      const p = paymentOf({ [s.field]: s.value, ref: s.ref, nonce: s.field === "nonce" ? s.value : 7n });
      notePayment(p);
      const signature = signPaymentSync(signer(s.signer).key, domain(), p);
      return {
        json: toSignedPaymentJson(p, signature),
        expect: refuse("FIELD_OUT_OF_RANGE", { id: paymentDigestOf(domain(), p), field: s.field, mentions: s.field }),
      };
    }
    case "ms": {
      const p = paymentOf({ deadline: s.value, ref: s.ref, nonce: s.nonce });
      notePayment(p);
      const signature = signPaymentSync(signer(s.signer).key, domain(), p);
      return {
        json: toSignedPaymentJson(p, signature),
        expect: refuse("DEADLINE_IN_MILLISECONDS", {
          id: paymentDigestOf(domain(), p),
          field: "deadline",
          mentions: "milliseconds",
        }),
      };
    }
    case "deadline": {
      const deadline = s.passed
        ? now > BigInt(s.offset)
          ? now - BigInt(s.offset)
          : 0n
        : now + 5n + BigInt(s.offset % (MARGIN - 10));
      const p = paymentOf({ deadline, ref: s.ref, nonce: s.nonce });
      return signedPayment(signer(s.signer), p, s.passed ? "DeadlinePassed" : "DEADLINE_TOO_SOON");
    }
    case "payee0":
      return signedPayment(
        signer(s.signer),
        paymentOf({ payee: ZERO_ADDRESS, ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) }),
        "InvalidPayee",
      );
    case "token": {
      const token = s.token === "zero" ? ZERO_ADDRESS : s.token === "contract" ? chain.deployment.machinePay : s.token;
      if (lc(token) === lc(chain.usdc)) throw new Error("the generated token is the policy's");
      return signedPayment(
        signer(s.signer),
        paymentOf({ token, ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) }),
        "WrongToken",
      );
    }
    case "nonce": {
      const nonce = s.old === "used" ? NONCE_TOP : s.old;
      const p = paymentOf({ nonce, ref: s.ref, amount: s.amount });
      return signedPayment(world.nonceDevice, p, s.old === "used" ? "NonceUsed" : "NonceTooOld", { mentions: "nonce" });
    }
    case "sig": {
      const p = paymentOf({ amount: s.amount, ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) });
      notePayment(p);
      const digest = paymentDigestOf(domain(), p);
      const m = mutate(signPaymentSync(signer(s.signer).key, domain(), p), s.mu, digest);
      return { json: { ...toSignedPaymentJson(p, "0x"), signature: m.signature }, expect: m.expect };
    }
    case "tamper": {
      const p = paymentOf({ ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) });
      const signature = signPaymentSync(signer(s.signer).key, domain(), p);
      const sent: Payment = { ...p };
      if (s.field === "amount") sent.amount += s.delta;
      if (s.field === "nonce") sent.nonce += s.delta;
      if (s.field === "deadline") sent.deadline += s.delta;
      if (s.field === "maxFee") sent.maxFee += s.delta;
      if (s.field === "payee") sent.payee = lc(s.other) === lc(p.payee) ? PAYEES[1] : s.other;
      if (s.field === "token") sent.token = lc(s.other) === lc(p.token) ? ZERO_ADDRESS : s.other;
      if (s.field === "ref") sent.ref = keccak256(s.ref);
      notePayment(p);
      notePayment(sent);
      return { json: toSignedPaymentJson(sent, signature), expect: refuse("UnknownDevice") };
    }
    case "domain": {
      const other = machinePayDomain({
        chainId: s.chainId ?? chain.deployment.chainId,
        verifyingContract: s.contract ?? chain.deployment.machinePay,
      });
      const p = paymentOf({ ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) });
      notePayment(p);
      return {
        json: toSignedPaymentJson(p, signPaymentSync(signer(s.signer).key, other, p)),
        expect: refuse("UnknownDevice"),
      };
    }
    case "confused": {
      // A voucher's signature over the same words, sent as a payment.
      const p = paymentOf({ ref: s.ref, nonce: s.nonce, deadline: now + BigInt(s.life) });
      notePayment(p);
      const v = voucherOf({ payee: p.payee, tabId: p.amount, cumulative: p.nonce, deadline: p.deadline });
      return {
        json: toSignedPaymentJson(p, signVoucherSync(signer(s.signer).key, domain(), v)),
        expect: refuse("UnknownDevice"),
      };
    }
  }
}

export function buildVoucher(s: VoucherSpec): Built {
  const now = clock.now();
  switch (s.t) {
    case "stale": {
      let deadline = now + BigInt(s.life);
      if (deadline === controls.voucherDeadline) deadline += 1n; // never the control voucher itself
      const v = voucherOf({ tabId: CONTROL_TAB, cumulative: s.cumulative, deadline });
      const key = world.control[0];
      const signature = signVoucherSync(key.key, domain(), v);
      const id = itemId(voucherDigestOf(domain(), v), lc(key.address));
      return {
        json: toSignedVoucherJson(v, signature),
        expect: refuse("VoucherStale", { refused: "stale", id, newest: CONTROL_CUMULATIVE.toString() }),
      };
    }
    case "zero": {
      const v = voucherOf({ tabId: s.tabId, cumulative: 0n, deadline: now + BigInt(s.life) });
      return signedVoucher(signer(s.signer), v, "VoucherStale", { refused: "stale", newest: "0" });
    }
    case "refused": {
      const r = world.refused[s.which];
      const cumulative = into(r.amounts[0], r.amounts[1], s.amount);
      const payee = s.which === "PayeeNotAllowed" ? [PAYEES[1], PAYEES[2], s.other][s.payee] : PAYEES[s.payee];
      return signedVoucher(
        r.device,
        voucherOf({ cumulative, payee, tabId: s.tabId, deadline: now + BigInt(s.life) }),
        s.which,
      );
    }
    case "unknown":
      return signedVoucher(
        pool[s.pool],
        voucherOf({ cumulative: s.amount, tabId: s.tabId, deadline: now + BigInt(s.life) }),
        "UnknownDevice",
      );
    case "range": {
      const v = voucherOf({ [s.field]: s.value, tabId: s.tabId });
      noteVoucher(signer(s.signer).address, v);
      return {
        json: toSignedVoucherJson(v, signVoucherSync(signer(s.signer).key, domain(), v)),
        expect: refuse("FIELD_OUT_OF_RANGE", { id: voucherDigestOf(domain(), v), field: s.field, mentions: s.field }),
      };
    }
    case "ms": {
      const v = voucherOf({ deadline: s.value, tabId: s.tabId });
      noteVoucher(signer(s.signer).address, v);
      return {
        json: toSignedVoucherJson(v, signVoucherSync(signer(s.signer).key, domain(), v)),
        expect: refuse("DEADLINE_IN_MILLISECONDS", { id: voucherDigestOf(domain(), v), field: "deadline" }),
      };
    }
    case "deadline": {
      const deadline = s.passed
        ? now > BigInt(s.offset)
          ? now - BigInt(s.offset)
          : 0n
        : now + 5n + BigInt(s.offset % (MARGIN - 10));
      return signedVoucher(
        signer(s.signer),
        voucherOf({ deadline, tabId: s.tabId }),
        s.passed ? "DeadlinePassed" : "DEADLINE_TOO_SOON",
      );
    }
    case "payee0":
      return signedVoucher(
        signer(s.signer),
        voucherOf({ payee: ZERO_ADDRESS, tabId: s.tabId, deadline: now + BigInt(s.life) }),
        "InvalidPayee",
      );
    case "sig": {
      const v = voucherOf({ cumulative: s.amount, tabId: s.tabId, deadline: now + BigInt(s.life) });
      noteVoucher(signer(s.signer).address, v);
      const digest = voucherDigestOf(domain(), v);
      const m = mutate(signVoucherSync(signer(s.signer).key, domain(), v), s.mu, digest);
      return { json: { ...toSignedVoucherJson(v, "0x"), signature: m.signature }, expect: m.expect };
    }
    case "tamper": {
      const v = voucherOf({ tabId: s.tabId, deadline: now + BigInt(s.life) });
      const signature = signVoucherSync(signer(s.signer).key, domain(), v);
      const sent = { ...v };
      if (s.field === "cumulative") sent.cumulative += s.delta;
      if (s.field === "tabId") sent.tabId += s.delta;
      if (s.field === "deadline") sent.deadline += s.delta;
      if (s.field === "payee") sent.payee = PAYEES[2];
      noteVoucher(signer(s.signer).address, v);
      noteVoucher(signer(s.signer).address, sent);
      return { json: toSignedVoucherJson(sent, signature), expect: refuse("UnknownDevice") };
    }
    case "domain": {
      const other = machinePayDomain({ chainId: s.chainId, verifyingContract: chain.deployment.machinePay });
      const v = voucherOf({ tabId: s.tabId, deadline: now + BigInt(s.life) });
      noteVoucher(signer(s.signer).address, v);
      return {
        json: toSignedVoucherJson(v, signVoucherSync(signer(s.signer).key, other, v)),
        expect: refuse("UnknownDevice"),
      };
    }
  }
}

export function submitCase(label: string, route: "payment" | "voucher", built: Built[]): Case {
  const field = route === "payment" ? "payments" : "vouchers";
  return {
    label,
    method: "POST",
    path: `/v1/${field}`,
    headers: JSON_HEADERS,
    body: JSON.stringify({ [field]: built.map((b) => b.json) }),
    expect: { kind: "items", route, items: built.map((b) => b.expect) },
  };
}

const upperHex = (h: string) => `0x${h.slice(2).toUpperCase()}`;

export function buildReplay(s: ReplaySpec): Case {
  const list = s.kind === "payment" ? controls.payments : controls.vouchers;
  const c = list[s.which % list.length];
  const json: Json = structuredClone(c.json);
  const body = s.kind === "payment" ? json.payment : json.voucher;
  if (s.variant === "case") {
    body.payee = upperHex(body.payee);
    body.token = upperHex(body.token);
    if (body.ref) body.ref = upperHex(body.ref);
  }
  if (s.variant === "v01") json.signature = withV(json.signature, Number.parseInt(json.signature.slice(130), 16) - 27);
  if (s.variant === "sigUpper") json.signature = upperHex(json.signature);
  const built: Built[] = [{ json, expect: { duplicateOf: c.id } }];
  if (s.twice) built.push({ json, expect: { duplicateOf: c.id } });
  // A refused payment beside the replay (twice, when the replay is twice): it is refused again, the same way.
  const extra = s.extra && s.kind === "payment" ? buildPayment(s.extra) : undefined;
  if (extra) {
    built.splice(s.which % (built.length + 1), 0, extra);
    if (s.twice) built.push(extra);
  }
  return submitCase(
    `replay ${s.kind} ${s.variant}${s.twice ? " twice" : ""}${extra ? ` + ${s.extra!.t}` : ""}`,
    s.kind,
    built,
  );
}

const badRequest = (mentions?: string, codes: readonly string[] = ["BAD_REQUEST"]): Expect => ({
  kind: "error",
  status: 400,
  codes,
  mentions,
});

function pathOf(parts: (string | number)[]): string {
  let out = "";
  for (const p of parts) out += typeof p === "number" ? `[${p}]` : out === "" ? p : `.${p}`;
  return out;
}

function setPath(target: Json, path: (string | number)[], value: unknown): Json {
  if (path.length === 0) return value;
  let node = target;
  for (const k of path.slice(0, -1)) node = node[k];
  const last = path[path.length - 1];
  if (value === undefined) delete node[last];
  else node[last] = value;
  return target;
}

export function buildSchema(s: SchemaSpec): Case {
  const post = (route: string, body: string, expect: Expect, label: string): Case => ({
    label: `schema ${label}`,
    method: "POST",
    path: route,
    headers: JSON_HEADERS,
    body,
    expect,
  });
  switch (s.t) {
    case "item": {
      const field = s.route === "payment" ? "payments" : "vouchers";
      const items = Array.from(
        { length: s.items },
        () => (s.route === "payment" ? buildPayment(s.base) : buildVoucher(s.vbase)).json,
      );
      const at = s.at % s.items;
      items[at] = setPath(structuredClone(items[at]), s.mutation.path, s.mutation.value);
      const path = pathOf([field, at, ...s.mutation.path]);
      return post(
        `/v1/${field}`,
        JSON.stringify({ [field]: items }),
        badRequest(path),
        `${path} = ${String(JSON.stringify(s.mutation.value)).slice(0, 40)}`,
      );
    }
    case "text":
      return post(s.route, s.text, badRequest(undefined, ["INVALID_JSON", "BAD_REQUEST"]), "random text");
    case "json":
      return post(s.route, JSON.stringify(s.value), badRequest(), "random JSON");
    case "truncate": {
      const whole = JSON.stringify({ payments: [buildPayment(s.base).json] });
      return post(
        s.route,
        whole.slice(0, s.at % whole.length),
        badRequest(undefined, ["INVALID_JSON", "BAD_REQUEST"]),
        "truncated",
      );
    }
    case "suffix":
      return post(
        s.route,
        `${JSON.stringify({ payments: [buildPayment(s.base).json] })}${s.junk}`,
        badRequest(undefined, ["INVALID_JSON"]),
        "trailing junk",
      );
    case "syntax":
      return post(s.route, s.text, badRequest(undefined, ["INVALID_JSON"]), `not JSON: ${s.text}`);
    case "deep": {
      const field = s.route === "payment" ? "payments" : "vouchers";
      const [open, close] = s.object ? ['{"a":', "}"] : ["[", "]"];
      const body = `{"${field}":[${open.repeat(s.depth)}1${close.repeat(s.depth)}]}`;
      return post(
        `/v1/${field}`,
        body,
        badRequest(undefined, ["BAD_REQUEST", "INVALID_JSON"]),
        `nested ${s.depth} deep`,
      );
    }
    case "proto": {
      const item = JSON.stringify(buildPayment(s.base).json);
      const bodies = [
        `{"__proto__":{"payments":[${item}]}}`,
        `{"constructor":{"prototype":{"payments":[${item}]}}}`,
        `{"payments":{"__proto__":[${item}],"length":1}}`,
        `{"payments":[{"__proto__":${item}}]}`,
      ];
      return post("/v1/payments", bodies[s.variant], badRequest(), "prototype keys");
    }
    case "shape": {
      const field = s.route === "payment" ? "payments" : "vouchers";
      const item = buildPayment(s.base).json;
      const bodies: unknown[] = [
        { [field]: [] },
        { [field]: null },
        { [field]: item },
        { [field === "payments" ? "vouchers" : "payments"]: [item] },
        { items: [item] },
        [item],
        { [field.toUpperCase()]: [item] },
      ];
      return post(`/v1/${field}`, JSON.stringify(bodies[s.variant]), badRequest(), `shape ${s.variant}`);
    }
  }
}

export function buildLimit(s: LimitSpec): Case {
  switch (s.t) {
    case "body": {
      const size = LIMITS.bodyBytes + s.extra;
      const text = s.garbage ? "x".repeat(size) : `{"payments":["${"a".repeat(size - 18)}"]}`;
      const body = s.chunked
        ? () =>
            new ReadableStream<Uint8Array>({
              start(controller) {
                const bytes = new TextEncoder().encode(text);
                for (let i = 0; i < bytes.length; i += 64 * 1024) controller.enqueue(bytes.subarray(i, i + 64 * 1024));
                controller.close();
              },
            })
        : text;
      return {
        label: `limits: ${size}-byte body${s.chunked ? " (chunked)" : ""} to ${s.route}`,
        method: "POST",
        path: s.route,
        headers: JSON_HEADERS,
        body,
        expect: {
          kind: "error",
          status: 413,
          codes: ["BODY_TOO_LARGE"],
          mentions: String(LIMITS.bodyBytes),
          check: (b) => expect(b.error.details.limit).to.equal(LIMITS.bodyBytes),
        },
      };
    }
    case "items": {
      const n = LIMITS.itemsPerRequest + s.extra;
      const field = s.route === "payment" ? "payments" : "vouchers";
      const one =
        s.route === "payment"
          ? buildPayment(s.base).json
          : buildVoucher({ t: "zero", signer: 0, tabId: 5n, life: 600 }).json;
      return {
        label: `limits: ${n} ${field}`,
        method: "POST",
        path: `/v1/${field}`,
        headers: JSON_HEADERS,
        body: JSON.stringify({ [field]: Array.from({ length: n }, () => one) }),
        expect: { kind: "error", status: 400, codes: ["TOO_MANY_ITEMS"], mentions: String(LIMITS.itemsPerRequest) },
      };
    }
    case "device": {
      // More items of one device than its per-second limit, all refused anyway (DeadlinePassed).
      const n = LIMITS.perDevicePerSecond + s.extra;
      const key = signer(s.signer);
      const now = clock.now();
      const items = Array.from(
        { length: n },
        (_, i) =>
          signedPayment(
            key,
            paymentOf({
              nonce: BigInt(i),
              deadline: now - 100n,
              ref: keccak256(stringToHex(`${now}:${i}:${s.extra}`)),
            }),
            "DeadlinePassed",
          ).json,
      );
      return {
        label: `limits: ${n} items of one device`,
        method: "POST",
        path: "/v1/payments",
        headers: JSON_HEADERS,
        body: JSON.stringify({ payments: items }),
        expect: {
          kind: "error",
          status: 400,
          codes: ["TOO_MANY_ITEMS"],
          mentions: key.address,
          check: (b) => expect(b.error.details.device).to.equal(lc(key.address)),
        },
      };
    }
    case "media": {
      const body = JSON.stringify({ payments: [buildPayment(s.base).json] });
      return {
        label: `limits: content-type ${s.type}`,
        method: "POST",
        path: s.route,
        headers: s.type === null ? {} : { "content-type": s.type },
        body: new TextEncoder().encode(body),
        expect: { kind: "error", status: 415, codes: ["UNSUPPORTED_MEDIA_TYPE"], mentions: "application/json" },
      };
    }
    case "method":
      return {
        label: `limits: ${s.method} ${s.route}`,
        method: s.method,
        path: s.route,
        headers: JSON_HEADERS,
        body: "{}",
        expect: { kind: "error", status: 404, codes: ["NOT_FOUND"], mentions: s.route },
      };
  }
}

export const defaultPolicy = (): PolicyParams => ({
  token: chain.usdc,
  maxPerPayment: USDC(1),
  maxPerPeriod: USDC(10),
  periodLength: 86_400,
  lifetimeMax: USDC(100),
  validFrom: 0,
  validUntil: 0,
  payeesRestricted: false,
});

function freshDevices(s: OwnerSpec): Key[] {
  const keys = s.keys.map(keyFromBytes).filter((k): k is Key => k !== undefined);
  if (keys.length === 0) keys.push(keyOf(generatePrivateKey()));
  const unique = [...new Map(keys.map((k) => [k.address, k])).values()];
  for (const k of unique) generatedKeys.add(k.key);
  return unique;
}

function ownerDeadline(s: OwnerSpec, fault: string): bigint {
  const now = clock.now();
  if (fault === "expired") return now > BigInt(s.offset) ? now - BigInt(s.offset) : 0n;
  if (fault === "tooSoon") return now + BigInt(s.offset % (MARGIN - 5));
  return now + BigInt(s.life);
}

export function buildOwner(s: OwnerSpec): Case {
  return s.kind === "onboarding" ? buildOnboarding(s) : buildRevocation(s);
}

function buildOnboarding(s: OwnerSpec): Case {
  const fault = ONBOARDING_FAULTS[s.fault % ONBOARDING_FAULTS.length];
  const fresh = freshDevices(s);
  const attacker = attackers[s.attacker];
  const owner0 = lc(chain.owner.address);
  let signerKey = ownerX.key;
  let signDomain = domain();
  const o: Onboarding = {
    owner: ownerX.address,
    policyId: 0,
    policy: defaultPolicy(),
    devices: fresh.map((k) => k.address),
    epoch: 0,
    nonce: s.nonce,
    deadline: ownerDeadline(s, fault),
  };
  let proofs: DeviceProof[] = fresh.map((k) => enrollmentProofSync(k.key, domain(), ownerX.address));
  let errors: string[];
  let mentions: string | undefined;
  const insert = (device: Address, proof: DeviceProof) => {
    const i = s.at % (o.devices.length + 1);
    o.devices.splice(i, 0, device);
    proofs.splice(i, 0, proof);
    return i;
  };
  switch (fault) {
    case "attacker":
      signerKey = attacker.key;
      errors = ["InvalidOwnerSignature"];
      break;
    case "claimsOther":
      o.owner = [owner0, attacker.address][s.at % 2];
      proofs = fresh.map((k) => enrollmentProofSync(k.key, domain(), o.owner));
      errors = ["InvalidOwnerSignature"];
      break;
    case "domain":
      signDomain = machinePayDomain(
        s.at % 2 === 0
          ? { chainId: 1 + (s.epoch % 100_000), verifyingContract: chain.deployment.machinePay }
          : { chainId: chain.deployment.chainId, verifyingContract: chain.usdc },
      );
      errors = ["InvalidOwnerSignature"];
      break;
    case "epoch":
      o.epoch = s.epoch;
      errors = ["StaleEpoch"];
      break;
    case "nonceUsed":
      o.nonce = 1n;
      errors = ["OwnerNonceUsed"];
      break;
    case "proof":
      proofs[s.at % proofs.length] = { r: bytesToHex(s.proof[0]), vs: bytesToHex(s.proof[1]) };
      errors = ["InvalidEnrollment"];
      mentions = "devices[";
      break;
    case "proofForOther":
      proofs[s.at % proofs.length] = enrollmentProofSync(fresh[s.at % fresh.length].key, domain(), owner0);
      errors = ["InvalidEnrollment"];
      break;
    case "noProof":
      proofs[s.at % proofs.length] = NO_PROOF;
      errors = ["InvalidEnrollment"];
      break;
    case "periodZero":
      o.policy.periodLength = 0;
      errors = ["InvalidPeriodLength"];
      break;
    case "validity":
      o.policy.validFrom = 1 + (s.epoch % 0xfffffffe);
      o.policy.validUntil = 1 + (s.offset % o.policy.validFrom);
      errors = ["InvalidValidity"];
      break;
    case "unknownPolicy":
      o.policyId = s.policyId;
      errors = ["UnknownPolicy"];
      break;
    case "otherPolicy":
      o.policyId = controls.controlPolicy;
      errors = ["NotPolicyOwner"];
      break;
    case "ownedByAnother": {
      const victim = world.control[s.at % world.control.length];
      insert(victim.address, enrollmentProofSync(victim.key, domain(), ownerX.address));
      errors = ["DeviceOwnedByAnother"];
      break;
    }
    case "revokedDevice": {
      const victim = world.refused.DeviceRevoked.device;
      insert(victim.address, enrollmentProofSync(victim.key, domain(), ownerX.address));
      errors = ["DeviceIsRevoked"];
      break;
    }
    case "zeroDevice":
      insert(ZERO_ADDRESS, NO_PROOF);
      errors = ["ZeroAddress"];
      break;
    case "expired":
    case "tooSoon":
      errors = ["DEADLINE_TOO_SOON"];
      break;
    case "contractOwner":
      o.owner = [chain.usdc, chain.deployment.machinePay, IDENTITY_PRECOMPILE, ZERO_ADDRESS][s.at % 4];
      proofs = fresh.map((k) => enrollmentProofSync(k.key, domain(), o.owner));
      errors = ["InvalidOwnerSignature"];
      break;
    default:
      errors = ["InvalidOwnerSignature"];
  }
  let signature = signTypedSync(signerKey, signDomain, onboardingTypes, "Onboarding", o as never);
  if (fault === "garbageSig") signature = bytesToHex(s.bytes);
  return {
    label: `onboarding: ${fault}`,
    method: "POST",
    path: "/v1/onboardings",
    headers: JSON_HEADERS,
    body: JSON.stringify(toOnboardingJson(o, proofs, signature)),
    expect: { kind: "owner", errors, mentions },
  };
}

function buildRevocation(s: OwnerSpec): Case {
  const fault = REVOCATION_FAULTS[s.fault % REVOCATION_FAULTS.length];
  const attacker = attackers[s.attacker];
  const victim = world.control[s.at % world.control.length];
  let signerKey = ownerX.key;
  let signDomain = domain();
  const r: Revocation = {
    owner: ownerX.address,
    devices: [deviceX.address],
    epoch: 0,
    nonce: s.nonce,
    deadline: ownerDeadline(s, fault),
  };
  let errors: string[];
  switch (fault) {
    case "attacker":
      signerKey = attacker.key;
      errors = ["InvalidOwnerSignature"];
      break;
    case "claimsOther":
      r.owner = lc(chain.owner.address);
      r.devices = [victim.address];
      errors = ["InvalidOwnerSignature"];
      break;
    case "ownsNothing":
      r.owner = attacker.address;
      r.devices = [victim.address];
      signerKey = attacker.key;
      errors = ["NotDeviceOwner"];
      break;
    case "notMine":
      r.devices = s.at % 2 === 0 ? [victim.address] : [deviceX.address, victim.address];
      errors = ["NotDeviceOwner"];
      break;
    case "unregistered":
      r.devices = [freshDevices(s)[0].address];
      errors = ["DeviceNotRegistered"];
      break;
    case "alreadyRevoked":
      r.devices = [world.refused.DeviceRevoked.device.address];
      errors = ["DeviceIsRevoked"];
      break;
    case "epoch":
      r.epoch = s.epoch;
      errors = ["StaleEpoch"];
      break;
    case "nonceUsed":
      r.nonce = 1n;
      errors = ["OwnerNonceUsed"];
      break;
    case "domain":
      signDomain = machinePayDomain({
        chainId: 1 + (s.epoch % 100_000),
        verifyingContract: chain.deployment.machinePay,
      });
      errors = ["InvalidOwnerSignature"];
      break;
    case "expired":
    case "tooSoon":
      errors = ["DEADLINE_TOO_SOON"];
      break;
    default:
      errors = ["InvalidOwnerSignature"];
  }
  let signature = signTypedSync(signerKey, signDomain, revocationTypes, "Revocation", r as never);
  if (fault === "garbageSig") signature = bytesToHex(s.bytes);
  return {
    label: `revocation: ${fault}`,
    method: "POST",
    path: "/v1/revocations",
    headers: JSON_HEADERS,
    body: JSON.stringify(toRevocationJson(r, signature)),
    expect: { kind: "owner", errors },
  };
}

export function buildOwnerSchema(s: OwnerSchemaSpec): Case {
  const devices = [deviceX.address, ...attackers.map((a) => a.address)];
  const o: Onboarding = {
    owner: ownerX.address,
    policyId: 0,
    policy: defaultPolicy(),
    devices,
    epoch: 0,
    nonce: 99n,
    deadline: clock.now() + 600n,
  };
  const proofs = devices.map(() => NO_PROOF);
  const r: Revocation = { owner: ownerX.address, devices, epoch: 0, nonce: 99n, deadline: clock.now() + 600n };
  const sig = `0x${"11".repeat(65)}` as Hex;
  const body: Json = s.kind === "onboarding" ? toOnboardingJson(o, proofs, sig) : toRevocationJson(r, sig);
  const route = s.kind === "onboarding" ? "/v1/onboardings" : "/v1/revocations";
  const list = s.kind === "onboarding" ? body.onboarding : body.revocation;
  if (s.field < 0) {
    if (s.dup === 0) {
      const n = LIMITS.itemsPerRequest + s.devices;
      list.devices = Array.from({ length: n }, (_, i) => `0x${(i + 1).toString(16).padStart(40, "0")}`);
      if (body.proofs) body.proofs = list.devices.map(() => NO_PROOF);
      return {
        label: `owner schema: ${n} devices`,
        method: "POST",
        path: route,
        headers: JSON_HEADERS,
        body: JSON.stringify(body),
        expect: { kind: "error", status: 400, codes: ["TOO_MANY_ITEMS"], mentions: String(LIMITS.itemsPerRequest) },
      };
    }
    if (s.dup === 1 || !body.proofs) {
      list.devices.push(list.devices[s.devices % list.devices.length]);
      if (body.proofs) body.proofs.push(NO_PROOF);
      return {
        label: `owner schema: ${s.kind} device twice`,
        method: "POST",
        path: route,
        headers: JSON_HEADERS,
        body: JSON.stringify(body),
        expect: badRequest("repeats"),
      };
    }
    body.proofs = body.proofs.slice(0, s.devices % body.proofs.length);
    return {
      label: "owner schema: proofs ≠ devices",
      method: "POST",
      path: route,
      headers: JSON_HEADERS,
      body: JSON.stringify(body),
      expect: badRequest("proofs"),
    };
  }
  const [path] = (s.kind === "onboarding" ? ONBOARDING_SCHEMA : REVOCATION_SCHEMA)[s.field];
  const parts = path.map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  setPath(body, parts, s.value);
  const shown = pathOf(parts);
  return {
    label: `owner schema: ${shown} = ${String(JSON.stringify(s.value)).slice(0, 40)}`,
    method: "POST",
    path: route,
    headers: JSON_HEADERS,
    body: JSON.stringify(body),
    // A whole list replaced by [] is refused as too short; anything else names its path.
    expect: badRequest(shown === "body" ? undefined : shown.split("[")[0]),
  };
}

export function buildAdmin(s: AdminSpec): Case {
  const other = s.token === adminToken ? `${s.token}x` : s.token;
  const i = s.at % adminToken.length;
  const changed = `${adminToken.slice(0, i)}${adminToken[i] === "a" ? "b" : "a"}${adminToken.slice(i + 1)}`;
  // [header or null, 401 (no bearer token) or 403 (a wrong one)]
  const variants: [string | null, 401 | 403][] = [
    [null, 401],
    ["Bearer", 401],
    [`Basic ${Buffer.from(`admin:${adminToken}`).toString("base64")}`, 401],
    [`Token ${adminToken}`, 401],
    [adminToken, 401],
    [`Bearer:${adminToken}`, 401],
    [`Bearer ${other}`, 403],
    [`Bearer ${adminToken.slice(0, -1)}`, 403],
    [`Bearer ${adminToken}${other}`, 403],
    [`Bearer ${adminToken.toUpperCase()}`, 403],
    [`Bearer ${changed}`, 403],
    [`Bearer ${adminToken.slice(0, i)}`, i === 0 ? 401 : 403],
  ];
  const [header, status] = variants[s.variant];
  return {
    label: `admin: ${status} variant ${s.variant}`,
    method: "POST",
    path: "/v1/settle",
    headers: header === null ? {} : { authorization: header },
    expect: {
      kind: "error",
      status,
      codes: [status === 401 ? "UNAUTHORIZED" : "FORBIDDEN"],
      check: (b) => expect(JSON.stringify(b)).to.not.include(adminToken),
    },
  };
}

export function buildRead(s: ReadSpec): Case {
  const bytes32 = /^0x[0-9a-f]{64}$/.test(s.id);
  const enc = s.raw ? s.id.replace(/[/?#\s]/g, "_") : encodeURIComponent(s.id);
  const a = PAYEES[0];
  const routes: [string, readonly number[]][] = [
    [`/v1/payments/${enc}`, bytes32 ? [404] : [400, 404, 414]],
    [`/v1/vouchers/${enc}`, bytes32 ? [404] : [400, 404, 414]],
    [`/v1/onboardings/${enc}`, bytes32 ? [404] : [400, 404, 414]],
    [`/v1/revocations/${enc}`, bytes32 ? [404] : [400, 404, 414]],
    [`/v1/batches/${enc}`, [200, 400, 404, 414]],
    [`/v1/batches?limit=${enc}&status=${enc}&after=${enc}`, [200, 400]],
    [`/v1/devices/${enc}`, [200, 400, 404, 414]],
    [`/v1/tabs/${a}/${a}/${enc}/${enc}`, [200, 400, 404, 414]],
    [`/v1/${enc}`, [400, 404, 414]],
    [`/v1/batches/${enc}?raw=${enc}`, [200, 400, 404, 414]],
  ];
  const [path, statuses] = routes[s.route];
  return { label: `read ${path.slice(0, 60)}`, method: "GET", path, expect: { kind: "read", statuses } };
}

// ---- sending and checking -----------------------------------------------------------------------

export async function send(c: Case): Promise<Answer> {
  // Replays of the same few control devices can pass a device's per-second limit on a fast machine:
  // a 429 the case does not ask about is waited out and the same request resent, as a client does.
  const wants429 = c.expect.kind === "error" && c.expect.status === 429;
  let res: Response;
  for (let attempt = 0; ; attempt++) {
    const body = typeof c.body === "function" ? c.body() : c.body;
    const init = { method: c.method, headers: c.headers, body, duplex: "half" } as RequestInit;
    try {
      res = await fetch(`${relayerUrl}${c.path}`, init);
    } catch (e) {
      throw new Error(`${c.label}: no answer (${(e as Error).message}: ${String((e as { cause?: unknown }).cause)})`);
    }
    if (res.status !== 429 || wants429 || attempt >= 3) break;
    await res.text();
    await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get("retry-after") ?? 1) + 50));
  }
  const text = await res.text();
  stats.cases++;
  stats.byStatus.set(res.status, (stats.byStatus.get(res.status) ?? 0) + 1);
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: json };
}

function expectErrorBody(c: Case, a: Answer): void {
  const why = `${c.label}: ${a.status} ${a.text.slice(0, 400)}`;
  expect(a.body, why).to.be.an("object");
  expect(a.body.error, why).to.be.an("object");
  expect(a.body.error.code, why).to.be.a("string").and.not.equal("");
  expect(a.body.error.message, why).to.be.a("string").and.not.equal("");
  expect(a.body.error.details, why).to.be.an("object").and.not.equal(null);
}

export function check(c: Case, a: Answer): void {
  const why = `${c.label}: ${a.status} ${a.text.slice(0, 600)}`;
  expect(a.status, why).to.be.below(500);
  if (a.status >= 400) expectErrorBody(c, a);
  const e = c.expect;
  switch (e.kind) {
    case "error":
      expect(a.status, why).to.equal(e.status);
      expect(e.codes, why).to.include(a.body.error.code);
      if (e.mentions) expect(a.body.error.message, why).to.include(e.mentions);
      e.check?.(a.body);
      return;
    case "read":
      expect(e.statuses, why).to.include(a.status);
      return;
    case "owner":
      expect(a.status, why).to.equal(422);
      expect(a.body.error.code, why).to.equal("OWNER_MESSAGE_INVALID");
      expect(e.errors, why).to.include(a.body.error.details.error);
      if (e.mentions) expect(a.body.error.message, why).to.include(e.mentions);
      return;
    case "known":
      expect(a.status, why).to.equal(202);
      expect(a.body.id, why).to.equal(e.id);
      expect(["accepted", "submitted", "confirmed"], why).to.include(a.body.status);
      return;
    case "items": {
      expect(a.status, why).to.equal(200);
      const results = a.body.results as Json[];
      expect(results, why).to.have.length(e.items.length);
      e.items.forEach((x, i) => {
        const r = results[i];
        const at = `${why}\n  item ${i}: ${JSON.stringify(r)}`;
        stats.items++;
        expect(r.kind, at).to.equal(e.route);
        expect(r.id, at).to.match(/^0x[0-9a-f]{64}$/);
        if ("duplicateOf" in x) {
          expect(r.id, at).to.equal(x.duplicateOf);
          expect(r.duplicate, at).to.equal(true);
          expect(["accepted", "batched", "submitted", "settled"], at).to.include(r.status);
          return;
        }
        expect(r.status, at).to.equal(x.refused);
        expect(x.reasons, at).to.include(r.reason);
        expect(r.message, at).to.be.a("string").and.not.equal("");
        if (x.id) expect(r.id, at).to.equal(x.id);
        if (x.field) expect(r.field, at).to.equal(x.field);
        if (x.newest !== undefined) expect(r.newest, at).to.equal(x.newest);
        if (x.mentions) expect(r.message, at).to.include(x.mentions);
        refused.ids.set(r.id, e.route);
      });
      return;
    }
  }
}

/** Raw requests for the framing test: what a broken or hostile client writes on the socket. */
export const FRAMING: [string, string][] = [
  ["garbage request line", "GARBAGE\r\n\r\n"],
  ["binary junk", "\u0000\u0001\u0002\r\n\r\n"],
  ["headers over 16 KiB", `GET /v1/payments/${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
  ["one huge header", `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(20_000)}\r\n\r\n`],
  [
    "negative Content-Length",
    "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}",
  ],
  [
    "non-numeric Content-Length",
    "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
  ],
  [
    "two Content-Lengths",
    "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
  ],
  [
    "Content-Length and chunked",
    "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ],
  [
    "bad chunk size",
    "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
  ],
  [
    "body cut short",
    'POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"payments":[',
  ],
  ["headers cut short", "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: appl"],
  ["no Host (HTTP/1.1)", "GET /healthz HTTP/1.1\r\n\r\n"],
  ["unknown method", "BREW /v1/payments HTTP/1.1\r\nHost: x\r\n\r\n"],
  ["HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
  ["header without colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"],
];

/** Write `bytes` on a fresh connection, half-close, and collect what the server answers. */
export function rawRequest(bytes: string, timeoutMs = 3_000): Promise<string> {
  const { hostname, port } = new URL(relayerUrl);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let out = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on("data", (d) => {
      out += d.toString("latin1");
    });
    socket.on("error", done);
    socket.on("close", done);
    socket.write(bytes, "latin1", () => socket.end());
  });
}
