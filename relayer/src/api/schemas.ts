/**
 * zod schemas of the wire format (sdk/README.md, "Relayer HTTP API"): what every route accepts and
 * answers. Requests decode here (decimal strings → bigint, hex → lowercase), so handlers get typed,
 * trusted values. Each message says what is wrong and what is wanted; errors.ts adds the field path.
 */

import { z } from "zod";
import { BATCH_STATUSES, ITEM_STATUSES } from "../store/types";

export type Hex = `0x${string}`;

const MAX_UINT256_DIGITS = 78;

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return value.length > 40 ? `"${value.slice(0, 40)}…"` : JSON.stringify(value);
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

/** Error for a wrong JSON type: "is required" when absent. */
const want =
  (what: string) =>
  (iss: { input?: unknown }): string =>
    iss.input === undefined ? `is required (${what})` : `must be ${what}, got ${describe(iss.input)}`;

function decimalFault(input: unknown): string {
  const s = String(input);
  if (s === "") return 'must not be empty: send a decimal string such as "250000"';
  if (/^-\d/.test(s)) return `must not be negative (got ${describe(s)}): the contract's numbers are unsigned`;
  if (/^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d+)?e[+-]?\d+)$/i.test(s)) {
    return `must be a whole number of token units or seconds, got ${describe(s)} (no fraction or exponent)`;
  }
  if (/^0x[0-9a-f]+$/i.test(s)) return `must be a decimal string, not hex (got ${describe(s)})`;
  return `must be a decimal string of digits such as "250000", got ${describe(s)}`;
}

/** An unsigned integer of `bits` bits as a decimal string, decoded to bigint. */
export function uintString(bits: 32 | 64 | 256) {
  const max = (1n << BigInt(bits)) - 1n;
  const what = `a decimal string (uint${bits}, e.g. "250000")`;
  return z
    .string({ error: want(what) })
    .regex(/^[0-9]+$/, { error: (iss) => decimalFault(iss.input) })
    .transform((s, ctx) => {
      const digits = s.replace(/^0+(?=\d)/, "");
      const value = digits.length > MAX_UINT256_DIGITS ? undefined : BigInt(digits);
      if (value === undefined || value > max) {
        ctx.addIssue({
          code: "custom",
          message: `${describe(s)} is above 2^${bits} - 1, the largest uint${bits}`,
          input: s,
        });
        return z.NEVER;
      }
      return value;
    })
    .meta({ description: `uint${bits} as a decimal string`, examples: ["250000"] });
}

export const uint256 = uintString(256);
export const uint64 = uintString(64);

/** A uint32 sent as a JSON number (policy ids, epochs, unix seconds in owner messages). */
export const uint32Number = z
  .number({ error: want("a whole JSON number from 0 to 2^32 - 1") })
  .int({ error: want("a whole JSON number from 0 to 2^32 - 1") })
  .min(0, { error: "must not be negative" })
  .max(0xffffffff, { error: "must be below 2^32" });

export const address = z
  .string({ error: want("a 0x-prefixed 20-byte hex address") })
  .regex(/^0x[0-9a-fA-F]{40}$/, { error: want("a 0x-prefixed 20-byte hex address (40 hex digits)") })
  .transform((s) => s.toLowerCase() as Hex)
  .meta({ description: "20-byte address, 0x-hex, any letter case (answers are lowercase)" });

export const bytes32 = z
  .string({ error: want("0x-prefixed 32 bytes of hex") })
  .regex(/^0x[0-9a-fA-F]{64}$/, { error: want("0x-prefixed 32 bytes of hex (64 hex digits)") })
  .transform((s) => s.toLowerCase() as Hex)
  .meta({ description: "32 bytes, 0x-hex" });

/** A device signature: its form (65 bytes, v, low s) is judged per item by the Verifier, which says what is wrong. */
export const deviceSignature = z
  .string({ error: want("a 0x-prefixed 65-byte hex signature (r ‖ s ‖ v)") })
  .max(300, { error: "is far longer than a 65-byte signature (r ‖ s ‖ v)" })
  .meta({ description: "65-byte signature r ‖ s ‖ v, 0x-hex" });

/** An owner's signature bytes: 65 bytes for an EOA, anything its ERC-1271 account checks for a smart account. */
export const ownerSignature = z
  .string({ error: want("0x-prefixed signature bytes") })
  .regex(/^0x([0-9a-fA-F]{2})+$/, { error: want("0x-prefixed signature bytes (an even number of hex digits)") })
  .max(2 + 2 * 16_384, { error: "is longer than 16 KiB" })
  .transform((s) => s.toLowerCase() as Hex);

const object = <T extends z.core.$ZodLooseShape>(shape: T) => z.object(shape, { error: want("an object") });
const array = <T extends z.ZodType>(item: T) => z.array(item, { error: want("an array") });

// ---- requests --------------------------------------------------------------------------------

export const paymentJson = object({
  payee: address,
  token: address,
  amount: uint256,
  nonce: uint256,
  deadline: uint256,
  maxFee: uint256,
  ref: bytes32,
});

export const signedPaymentJson = object({ payment: paymentJson, signature: deviceSignature });

export const voucherJson = object({
  payee: address,
  token: address,
  tabId: uint256,
  cumulative: uint256,
  deadline: uint256,
  maxFee: uint256,
});

export const signedVoucherJson = object({ voucher: voucherJson, signature: deviceSignature });

const itemsOf = <T extends z.ZodType>(item: T, field: string, max: number) =>
  array(item)
    .min(1, { error: `must hold at least one ${field.slice(0, -1)}` })
    .max(max, {
      error: (iss) =>
        `holds ${Array.isArray(iss.input) ? iss.input.length : "too many"} items; send at most ${max} per request (split the rest into more requests)`,
    });

export const paymentsBody = (max: number) => object({ payments: itemsOf(signedPaymentJson, "payments", max) });
export const vouchersBody = (max: number) => object({ vouchers: itemsOf(signedVoucherJson, "vouchers", max) });

export const policyParamsJson = object({
  token: address,
  maxPerPayment: uint64,
  maxPerPeriod: uint64,
  periodLength: uint32Number,
  lifetimeMax: uint64,
  validFrom: uint32Number,
  validUntil: uint32Number,
  payeesRestricted: z.boolean({ error: want("true or false") }),
});

export const deviceProofJson = object({ r: bytes32, vs: bytes32 });

function uniqueDevices(devices: Hex[], ctx: z.core.$RefinementCtx<Hex[]>) {
  const first = new Map<string, number>();
  devices.forEach((d, i) => {
    const j = first.get(d);
    if (j !== undefined) {
      ctx.addIssue({ code: "custom", path: [i], message: `repeats devices[${j}] (${d}): list each device once` });
    } else first.set(d, i);
  });
}

const deviceList = (max: number) =>
  array(address)
    .min(1, { error: "must list at least one device" })
    .max(max, { error: `lists more than ${max} devices; split them into several messages` })
    .superRefine(uniqueDevices);

export const onboardingBody = (max: number) =>
  object({
    onboarding: object({
      owner: address,
      policyId: uint32Number,
      policy: policyParamsJson,
      devices: deviceList(max),
      epoch: uint32Number,
      nonce: uint256,
      deadline: uint256,
    }),
    proofs: array(deviceProofJson).max(max, { error: `holds more than ${max} proofs` }),
    signature: ownerSignature,
  }).superRefine((b, ctx) => {
    if (b.proofs.length !== b.onboarding.devices.length) {
      ctx.addIssue({
        code: "custom",
        path: ["proofs"],
        message: `holds ${b.proofs.length} proofs for ${b.onboarding.devices.length} devices: send one Enrollment proof { r, vs } per device, in the same order (NO_PROOF for a device already bound to the owner)`,
      });
    }
  });

export const revocationBody = (max: number) =>
  object({
    revocation: object({
      owner: address,
      devices: deviceList(max),
      epoch: uint32Number,
      nonce: uint256,
      deadline: uint256,
    }),
    signature: ownerSignature,
  });

export type OnboardingSubmission = z.output<ReturnType<typeof onboardingBody>>;
export type RevocationSubmission = z.output<ReturnType<typeof revocationBody>>;

export const itemIdParams = object({ id: bytes32 });

export const deviceParams = object({ address });

export const tabParams = object({ device: address, payee: address, token: address, tabId: uint256 });

export const batchIdParams = object({
  id: z
    .string()
    .regex(/^[0-9]{1,15}$/, { error: want("a batch id (a positive whole number)") })
    .transform(Number),
});

export const batchDetailQuery = object({
  raw: z
    .enum(["true", "false", "1", "0"], { error: want('"true" or "false"') })
    .optional()
    .transform((v) => v === "true" || v === "1"),
});

export const batchesQuery = object({
  status: z.enum(BATCH_STATUSES, { error: want(`one of ${BATCH_STATUSES.join(", ")}`) }).optional(),
  limit: z
    .string()
    .regex(/^[0-9]{1,4}$/, { error: want("a whole number from 1 to 500") })
    .transform(Number)
    .refine((n) => n >= 1 && n <= 500, { error: "must be from 1 to 500" })
    .optional(),
  after: z
    .string()
    .regex(/^[0-9]{1,15}$/, { error: want("the `next` cursor of the previous page") })
    .optional(),
});

// ---- answers -------------------------------------------------------------------------------

const hex = z.string().regex(/^0x[0-9a-f]*$/);
const decimal = z.string().regex(/^[0-9]+$/);

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.record(z.string(), z.unknown()),
    }),
  })
  .meta({ description: "Every error answer" });

export const SUBMIT_STATUSES = [...ITEM_STATUSES, "stale"] as const;

export const submitResultSchema = z.object({
  id: hex.meta({ description: "EIP-712 digest of the item" }),
  kind: z.enum(["payment", "voucher"]),
  status: z.enum(SUBMIT_STATUSES),
  reason: z.string().optional().meta({ description: "contract reason name or relayer code, when rejected or stale" }),
  message: z.string().optional(),
  field: z.string().optional(),
  newest: decimal.optional().meta({ description: "stale vouchers: the tab's newest cumulative" }),
  duplicate: z.literal(true).optional().meta({ description: "the relayer already had this item" }),
});

export const submitAnswerSchema = z.object({ results: z.array(submitResultSchema) });

export const itemStatusSchema = z.object({
  id: hex,
  kind: z.enum(["payment", "voucher"]),
  status: z.enum(ITEM_STATUSES),
  device: hex,
  owner: hex,
  payee: hex,
  token: hex,
  amount: decimal.optional().meta({ description: "payments" }),
  nonce: decimal.optional().meta({ description: "payments" }),
  ref: hex.optional().meta({ description: "payments" }),
  tabId: decimal.optional().meta({ description: "vouchers" }),
  cumulative: decimal.optional().meta({ description: "vouchers" }),
  deadline: z.number(),
  maxFee: decimal,
  fee: decimal,
  reason: z.string().optional(),
  message: z.string().optional(),
  batchId: z.number().optional(),
  txHash: hex.optional(),
  blockNumber: z.number().optional(),
  acceptedAt: z.number(),
  updatedAt: z.number(),
});

export const tabSchema = z.object({
  device: hex,
  payee: hex,
  token: hex,
  tabId: decimal,
  settled: decimal,
  newest: decimal,
  newestId: hex.nullable(),
  pending: decimal,
  closesAt: z.number().nullable(),
});

export const headroomSchema = z.object({
  device: hex,
  status: z.string(),
  policyId: z.number(),
  owner: hex,
  token: hex,
  perPayment: decimal,
  period: decimal,
  lifetime: decimal,
  balance: decimal,
  spendable: decimal,
  pending: decimal,
  periodEndsAt: z.number(),
  nonceTop: z.number(),
});

export const batchSchema = z.object({
  id: z.number(),
  kind: z.enum(["payment", "voucher", "onboarding", "revocation"]),
  messageId: hex.nullable().meta({ description: "onboarding and revocation batches: the owner message's id" }),
  token: hex,
  sender: hex,
  nonce: z.number(),
  status: z.enum(BATCH_STATUSES),
  itemCount: z.number(),
  gasEstimate: decimal.nullable(),
  gasUsed: decimal.nullable(),
  blockNumber: z.number().nullable(),
  blockHash: hex.nullable(),
  txHash: hex.nullable(),
  error: z.string().nullable(),
  createdAt: z.number(),
  updatedAt: z.number(),
});

export const batchesAnswerSchema = z.object({ batches: z.array(batchSchema), next: z.string().nullable() });

export const batchDetailSchema = batchSchema.extend({
  attempts: z.array(
    z.object({
      hash: hex,
      nonce: z.number(),
      maxFeePerGas: decimal,
      maxPriorityFeePerGas: decimal,
      createdAt: z.number(),
      broadcastAt: z.number().nullable(),
      raw: hex.optional().meta({ description: "the signed transaction, with ?raw=true" }),
    }),
  ),
  itemIds: z.array(hex),
});

export const ownerMessageAcceptedSchema = z.object({ id: hex, status: z.string() });

export const ownerMessageSchema = z.object({
  id: hex,
  kind: z.enum(["onboarding", "revocation"]),
  status: z.string(),
  owner: hex.optional(),
  txHash: hex.nullable().optional(),
  error: z.string().nullable().optional(),
  createdAt: z.number().optional(),
  updatedAt: z.number().optional(),
});

const typeField = z.object({ name: z.string(), type: z.string() });

export const infoSchema = z.object({
  version: z.string(),
  chainId: z.number(),
  contract: hex,
  tokens: z.record(z.string(), hex),
  domain: z.object({ name: z.string(), version: z.string(), chainId: z.number(), verifyingContract: hex }),
  types: z.record(z.string(), z.array(typeField)),
  typeStrings: z.record(z.string(), z.string()),
  reasons: z.array(z.string()),
  relayerCodes: z.array(z.string()),
  fee: decimal,
  deadlineMarginSeconds: z.number(),
  limits: z.object({
    itemsPerRequest: z.number(),
    bodyBytes: z.number(),
    perDevicePerSecond: z.number(),
    perIpPerMinute: z.number(),
  }),
});

export const readinessSchema = z.object({
  chain: z.boolean(),
  store: z.boolean(),
  senderFunded: z.boolean(),
  head: z.number().optional(),
  senderBalance: decimal.optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export const healthSchema = readinessSchema.extend({
  ok: z.boolean(),
  version: z.string(),
  queue: z.record(z.string(), z.number()).optional(),
  error: z.string().optional(),
});

export const settleAnswerSchema = z.object({ batches: z.array(z.number()) });
