/** POST /v1/settle (admin: bearer token from config.adminToken) */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { ApiError } from "../errors";
import { settleAnswerSchema } from "../schemas";
import type { ApiApp, RouteContext } from "../server";
import { errorAnswers } from "./common";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Throws unless the request carries the admin token. Hashing first makes the compared buffers equal length. */
export function requireAdmin(token: string | undefined, request: FastifyRequest): void {
  if (!token) {
    throw new ApiError(
      "ADMIN_DISABLED",
      "admin routes are disabled: set adminToken (at least 16 characters) in the config file or MACHINEPAY_ADMIN_TOKEN, then restart",
    );
  }
  const header = request.headers.authorization;
  const m = typeof header === "string" ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
  if (!m) throw new ApiError("UNAUTHORIZED", "send the admin token as `Authorization: Bearer <token>`");
  if (!timingSafeEqual(digest(m[1]), digest(token))) throw new ApiError("FORBIDDEN", "the admin token is wrong");
}

export function adminRoutes(app: ApiApp, ctx: RouteContext): void {
  const { deps } = ctx;
  app.post(
    "/v1/settle",
    {
      schema: {
        summary: "Admin: close and send every batch that can be sent now",
        tags: ["admin"],
        security: [{ bearer: [] }],
        response: { 200: settleAnswerSchema, ...errorAnswers(401, 403, 503) },
      },
      onRequest: async (request, reply) => {
        try {
          requireAdmin(deps.config.adminToken, request);
        } catch (e) {
          if ((e as ApiError).code === "UNAUTHORIZED") reply.header("www-authenticate", 'Bearer realm="machinepay"');
          throw e;
        }
      },
    },
    async () => deps.settleNow(),
  );
}
