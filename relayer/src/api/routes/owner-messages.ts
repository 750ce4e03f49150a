/** POST /v1/onboardings, POST /v1/revocations, GET /v1/onboardings/:id, GET /v1/revocations/:id */
import type { OwnerMessageKind } from "../../store/types";
import { ApiError } from "../errors";
import {
  itemIdParams,
  onboardingBody,
  ownerMessageAcceptedSchema,
  ownerMessageSchema,
  revocationBody,
} from "../schemas";
import type { ApiApp, OwnerMessageInfo, RouteContext } from "../server";
import { errorAnswers } from "./common";

function messageJson(m: OwnerMessageInfo) {
  return {
    id: m.id,
    kind: m.kind,
    status: m.status,
    ...(m.owner !== undefined ? { owner: m.owner } : {}),
    ...(m.txHash !== undefined ? { txHash: m.txHash } : {}),
    ...(m.error !== undefined ? { error: m.error } : {}),
    ...(m.createdAt !== undefined ? { createdAt: m.createdAt } : {}),
    ...(m.updatedAt !== undefined ? { updatedAt: m.updatedAt } : {}),
  };
}

export function ownerMessageRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  const max = deps.config.limits.itemsPerRequest;

  app.post(
    "/v1/onboardings",
    {
      schema: {
        summary: "Submit an owner's signed Onboarding (policy + devices, one Enrollment proof per device)",
        tags: ["owners"],
        body: onboardingBody(max),
        response: { 202: ownerMessageAcceptedSchema, ...errorAnswers(400, 409, 413, 415, 422, 429, 503) },
      },
    },
    async (request, reply) => {
      request.itemCount = request.body.onboarding.devices.length;
      const r = await deps.ownerMessages.submit("onboarding", request.body);
      return reply.code(202).send({ id: r.id, status: r.status });
    },
  );

  app.post(
    "/v1/revocations",
    {
      schema: {
        summary: "Submit an owner's signed Revocation of devices",
        tags: ["owners"],
        body: revocationBody(max),
        response: { 202: ownerMessageAcceptedSchema, ...errorAnswers(400, 409, 413, 415, 422, 429, 503) },
      },
    },
    async (request, reply) => {
      request.itemCount = request.body.revocation.devices.length;
      const r = await deps.ownerMessages.submit("revocation", request.body);
      return reply.code(202).send({ id: r.id, status: r.status });
    },
  );

  const status = (kind: OwnerMessageKind, path: string) =>
    app.get(
      path,
      {
        schema: {
          summary: `An ${kind}'s status (accepted, submitted, confirmed, failed)`,
          tags: ["owners"],
          params: itemIdParams,
          response: { 200: ownerMessageSchema, ...errorAnswers(400, 404) },
        },
      },
      async (request) => {
        const m = await deps.ownerMessages.get(request.params.id);
        if (!m || m.kind !== kind) throw new ApiError("NOT_FOUND", `no ${kind} ${request.params.id}`);
        return messageJson(m);
      },
    );
  status("onboarding", "/v1/onboardings/:id");
  status("revocation", "/v1/revocations/:id");
}
