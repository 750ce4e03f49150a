/** GET /v1/info, /v1/health, /healthz, /readyz, /metrics, /v1/openapi.json */
import {
  ENROLLMENT_TYPE,
  enrollmentTypes,
  ONBOARDING_TYPE,
  onboardingTypes,
  PAYMENT_TYPE,
  paymentTypes,
  REASONS,
  REVOCATION_TYPE,
  revocationTypes,
  TAB_CLOSE_TYPE,
  tabCloseTypes,
  VOUCHER_TYPE,
  voucherTypes,
} from "@machinepay/sdk";
import { z } from "zod";
import { PENDING_ITEM_STATUSES } from "../../store/types";
import { ApiError } from "../errors";
import { healthSchema, infoSchema, readinessSchema } from "../schemas";
import type { ApiApp, Readiness, RouteContext } from "../server";
import { errorAnswers } from "./common";

/** Codes the relayer itself gives a refused item (contract reasons are in `reasons`). */
export const RELAYER_CODES = [
  "FIELD_MALFORMED",
  "FIELD_OUT_OF_RANGE",
  "DEADLINE_IN_MILLISECONDS",
  "DEADLINE_TOO_SOON",
  "SIGNATURE_LENGTH",
  "SIGNATURE_BAD_V",
  "SIGNATURE_HIGH_S",
  "SIGNATURE_INVALID",
] as const;

const fields = (xs: readonly { readonly name: string; readonly type: string }[]) =>
  xs.map(({ name, type }) => ({ name, type }));

const PARTS = ["chain", "store", "senderFunded"] as const;

export function infoRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  const { config, deployment, domain } = deps;
  const info = {
    version: "v1",
    chainId: deployment.chainId,
    contract: deployment.machinePay.toLowerCase(),
    tokens: Object.fromEntries(Object.entries(deployment.tokens).map(([k, v]) => [k, v.toLowerCase()])),
    domain: { ...domain, verifyingContract: domain.verifyingContract.toLowerCase() },
    types: {
      Payment: fields(paymentTypes.Payment),
      Voucher: fields(voucherTypes.Voucher),
      TabClose: fields(tabCloseTypes.TabClose),
      Enrollment: fields(enrollmentTypes.Enrollment),
      Onboarding: fields(onboardingTypes.Onboarding),
      PolicyParams: fields(onboardingTypes.PolicyParams),
      Revocation: fields(revocationTypes.Revocation),
    },
    typeStrings: {
      Payment: PAYMENT_TYPE,
      Voucher: VOUCHER_TYPE,
      TabClose: TAB_CLOSE_TYPE,
      Enrollment: ENROLLMENT_TYPE,
      Onboarding: ONBOARDING_TYPE,
      Revocation: REVOCATION_TYPE,
    },
    reasons: [...REASONS],
    relayerCodes: [...RELAYER_CODES],
    fee: config.fee.toString(),
    deadlineMarginSeconds: config.deadlineMarginSeconds,
    limits: {
      itemsPerRequest: config.limits.itemsPerRequest,
      bodyBytes: config.limits.bodyBytes,
      perDevicePerSecond: config.limits.perDevicePerSecond,
      perIpPerMinute: config.limits.perIpPerMinute,
    },
  };

  app.get(
    "/v1/info",
    {
      schema: {
        summary: "Chain, contract, EIP-712 domain and types, reason names, limits",
        tags: ["info"],
        response: { 200: infoSchema },
      },
    },
    async () => info,
  );

  const ready = async (): Promise<Readiness & { error?: string }> => {
    try {
      const r = await deps.readiness();
      if (r.senderBalance !== undefined && /^[0-9]+$/.test(r.senderBalance))
        deps.metrics.senderBalance(BigInt(r.senderBalance));
      return r;
    } catch (e) {
      return { chain: false, store: false, senderFunded: false, error: (e as Error)?.message ?? String(e) };
    }
  };

  app.get(
    "/v1/health",
    {
      schema: {
        summary: "Health: ok when chain, store and the sender's funds are fine; the queue by status",
        tags: ["info"],
        response: { 200: healthSchema },
      },
    },
    async () => {
      const r = await ready();
      let queue: Record<string, number> | undefined;
      try {
        const counts = await deps.store.pendingCounts();
        queue = Object.fromEntries(PENDING_ITEM_STATUSES.map((s) => [s, counts[s]]));
      } catch {
        queue = undefined;
      }
      return { ok: PARTS.every((p) => r[p] === true), version: "v1", ...r, ...(queue ? { queue } : {}) };
    },
  );

  app.get(
    "/healthz",
    {
      config: { rateLimit: false },
      schema: {
        summary: "Liveness: 200 while the process serves",
        tags: ["info"],
        response: { 200: z.object({ ok: z.literal(true) }) },
      },
    },
    async () => ({ ok: true as const }),
  );

  app.get(
    "/readyz",
    {
      config: { rateLimit: false },
      schema: {
        summary: "Readiness: 200 when chain, store and sender funds are fine, else 503 naming the failing parts",
        tags: ["info"],
        response: { 200: readinessSchema.extend({ ready: z.literal(true) }), ...errorAnswers(503) },
      },
    },
    async () => {
      const r = await ready();
      const failing = PARTS.filter((p) => r[p] !== true);
      if (failing.length > 0) {
        throw new ApiError("NOT_READY", `not ready: ${failing.join(", ")} failing${r.error ? ` (${r.error})` : ""}`, {
          ...r,
          failing,
        });
      }
      return { ready: true as const, ...r };
    },
  );

  app.get(
    "/metrics",
    {
      config: { rateLimit: false },
      schema: { summary: "Prometheus metrics (text), all named machinepay_*", tags: ["info"] },
    },
    async (_request, reply) => reply.type(deps.metrics.contentType).send(await deps.metrics.text()),
  );

  app.get("/v1/openapi.json", { schema: { summary: "This API's OpenAPI 3.1 document", tags: ["info"] } }, async () =>
    app.swagger(),
  );
}
