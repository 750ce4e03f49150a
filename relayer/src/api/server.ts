/**
 * The relayer's HTTP API v1 (wire format: sdk/README.md, "Relayer HTTP API"). Fastify with zod
 * schemas on every body, parameter and answer; OpenAPI generated from them at /v1/openapi.json.
 * Thin: routes decode, call a stage through a small dependency, and encode. Errors are mapped to
 * statuses in errors.ts only. `buildServer` does not listen; the caller does.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import type { Hex, MachinePayDomain } from "@machinepay/sdk";
import { domainSeparator } from "@machinepay/sdk";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
  type RawServerDefault,
} from "fastify";
import { jsonSchemaTransform, validatorCompiler, type ZodTypeProvider } from "fastify-type-provider-zod";
import type { Logger } from "pino";
import type { ZodType } from "zod";
import { ChainClock } from "../chain/clock";
import type { ChainState } from "../chain/state";
import type { Deployment, RelayerConfig } from "../config";
import type { Ingest } from "../ingest";
import type { PendingLedger } from "../ingest/pending";
import { Verifier, type VerifyItem } from "../ingest/verify";
import type { Metrics } from "../metrics";
import type { OwnerMessageKind, Store } from "../store/types";
import { ApiError, toApiError } from "./errors";
import { DeviceRateLimiter } from "./limits";
import { adminRoutes } from "./routes/admin";
import { batchRoutes } from "./routes/batches";
import { deviceRoutes } from "./routes/devices";
import { infoRoutes } from "./routes/info";
import { ownerMessageRoutes } from "./routes/owner-messages";
import { paymentRoutes } from "./routes/payments";
import { tabRoutes } from "./routes/tabs";
import { voucherRoutes } from "./routes/vouchers";
import type { OnboardingSubmission, RevocationSubmission } from "./schemas";

export type Readiness = {
  chain: boolean;
  store: boolean;
  senderFunded: boolean;
  /** Latest block number seen. */
  head?: number;
  /** The sender's native balance, wei, decimal string. */
  senderBalance?: string;
  details?: Record<string, unknown>;
};

/** How an owner message stands; the store's OwnerMessageRow satisfies it. */
export type OwnerMessageInfo = {
  id: Hex;
  kind: OwnerMessageKind;
  status: string;
  owner?: Hex;
  txHash?: Hex | null;
  error?: string | null;
  createdAt?: number;
  updatedAt?: number;
};

/**
 * The stage that submits owners' signed onboardings and revocations. `submit` checks what it
 * needs (signature, epoch, nonce) and stores the message; it throws an error whose `code` is one
 * of errors.ts's (OWNER_MESSAGE_INVALID, CONFLICT, STORE_UNAVAILABLE) to refuse it.
 */
export interface OwnerMessages {
  submit(kind: "onboarding", body: OnboardingSubmission): Promise<{ id: Hex; status: string }>;
  submit(kind: "revocation", body: RevocationSubmission): Promise<{ id: Hex; status: string }>;
  get(id: Hex): Promise<OwnerMessageInfo | null>;
}

export interface ApiDeps {
  config: RelayerConfig;
  deployment: Deployment;
  domain: MachinePayDomain;
  ingest: Pick<Ingest, "submit">;
  /**
   * Recovers each submitted item's device for the per-device rate limit before Ingest runs. Pass
   * the SharedVerifier Ingest was opened with, so each signature is recovered once; default: a
   * Verifier of its own (correct, but every item is then recovered twice).
   */
  verifier?: Pick<Verifier, "verify"> & { prepare?(items: readonly VerifyItem[]): Promise<void> };
  /**
   * What the relayer holds pending: headroom is chain state minus this. Default: `ingest.ledger`
   * when `ingest` is an Ingest (buildServer refuses to start without either).
   */
  ledger?: Pick<PendingLedger, "deviceSpend" | "ownerSpend">;
  store: Pick<Store, "getItem" | "getTab" | "listBatches" | "getBatch" | "pendingCounts">;
  chain: ChainState;
  /** Chain time: pass the ChainClock Ingest uses (default: a ChainClock that never saw a block, i.e. wall time). */
  clock?: Pick<ChainClock, "now">;
  readiness(): Promise<Readiness>;
  /** Close and send every batch that can be sent now; the ids of the batches created. */
  settleNow(): Promise<{ batches: number[] }>;
  ownerMessages: OwnerMessages;
  metrics: Metrics;
  logger: Logger;
}

export type BuildServerOptions = {
  /** Check every answer against its zod schema (tests): a mismatch is a 500. Default false. */
  validateResponses?: boolean;
  /** Clock of the per-device rate limiter, unix ms (tests). */
  now?: () => number;
};

export type ApiApp = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, Logger, ZodTypeProvider>;

/** What route modules share: the deps with their defaults filled in. */
export type RouteContext = {
  deps: ApiDeps & Required<Pick<ApiDeps, "ledger" | "clock">>;
  verifier: Pick<Verifier, "verify"> & { prepare?(items: readonly VerifyItem[]): Promise<void> };
  limiter: DeviceRateLimiter;
  /** The deployment's EIP-712 domain separator (ids of items refused before hashing). */
  separator: Uint8Array;
  /** Items inside a submit route right now, over every request (load shedding). */
  load: { admitting: number };
  /** Accepted items not settled yet (the pending ledger's size; 0 if the ledger does not say). */
  pendingCount(): number;
};

declare module "fastify" {
  interface FastifyRequest {
    /** Items in a submit request (for the request log line). */
    itemCount: number;
    /** The error code answered, if any (for the request log line). */
    errorCode: string | undefined;
  }
  interface FastifyContextConfig {
    /** Submit routes: ack latency is observed for this kind. */
    submitKind?: "payment" | "voucher";
  }
}

/** pino redaction for API logs: bearer tokens and signatures never reach a log line. */
export const LOG_REDACT_PATHS = [
  "req.headers.authorization",
  "headers.authorization",
  "authorization",
  "signature",
  "*.signature",
  "*.*.signature",
  "*.*.*.signature",
];

const lc = (a: string) => a.toLowerCase();

export async function buildServer(deps: ApiDeps, options: BuildServerOptions = {}): Promise<FastifyInstance> {
  const { config, deployment, domain } = deps;
  if (domain.chainId !== deployment.chainId || lc(domain.verifyingContract) !== lc(deployment.machinePay)) {
    throw new Error(
      `the API's domain (chain ${domain.chainId}, ${domain.verifyingContract}) is not the deployment's (chain ${deployment.chainId}, ${deployment.machinePay})`,
    );
  }
  const ledger = deps.ledger ?? (deps.ingest as Partial<Ingest>).ledger;
  if (!ledger)
    throw new Error("ApiDeps.ledger is missing: pass the Ingest's `ledger` (pending spend per device and owner)");
  const bodyLimit = config.limits.bodyBytes;
  const logger = deps.logger.child({ component: "api" }, { redact: { paths: LOG_REDACT_PATHS, censor: "[redacted]" } });

  const sendError = (err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const e = toApiError(err, bodyLimit);
    if (e.status >= 500) request.log.error({ err, code: e.code }, "request failed");
    request.errorCode = e.code;
    if (e.retryAfter !== undefined) reply.header("retry-after", String(e.retryAfter));
    return reply.code(e.status).send(e.body());
  };

  const fastify = Fastify({
    loggerInstance: logger,
    // One line per request is ours (onResponse below), not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    routerOptions: { maxParamLength: 200 },
    // Errors raised before routing (bad URL encoding, overlong parameters) get the same body.
    frameworkErrors: (err, request, reply) => void sendError(err, request, reply),
    // Node would answer an HTTP/1.1 request without Host itself, with an empty 400; the onRequest
    // hook below answers it with the API's error body instead.
    http: { requireHostHeader: false },
    // Requests Node's HTTP parser refuses before Fastify sees them (malformed request lines or
    // headers, oversized headers, conflicting lengths) get the same error body too.
    clientErrorHandler: (err, socket) => {
      const e = err as Error & { code?: string };
      const large = e.code === "HPE_HEADER_OVERFLOW";
      const status = large ? 431 : 400;
      const body = JSON.stringify({
        error: {
          code: "BAD_REQUEST",
          message: large
            ? "the request's headers (or its URL) are too large: send a shorter URL and fewer or smaller headers"
            : `the HTTP request could not be parsed (${e.code ?? e.message}): send a well-formed HTTP/1.1 request`,
          details: { parser: e.code ?? null },
        },
      });
      if (socket.writable) {
        socket.end(
          `HTTP/1.1 ${status} ${large ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
            `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
            `Connection: close\r\n\r\n${body}`,
        );
      } else socket.destroy();
    },
  });
  const app = fastify.withTypeProvider<ZodTypeProvider>() as unknown as ApiApp;
  app.decorateRequest("itemCount", 0);
  app.decorateRequest("errorCode", undefined);

  app.setValidatorCompiler(validatorCompiler);
  const validate = options.validateResponses === true;
  app.setSerializerCompiler(({ schema, method, url }) => {
    const zod = schema as ZodType;
    return (data) => {
      if (validate) {
        const r = zod.safeParse(data);
        if (!r.success) {
          throw new Error(`answer of ${method} ${url} does not match its schema: ${JSON.stringify(r.error.issues)}`);
        }
      }
      return JSON.stringify(data);
    };
  });

  // JSON only (other media types answer 415), with our own parser so a syntax error says where it is.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    const text = body as string;
    if (text.trim() === "") {
      done(null, undefined); // routes with a body schema answer "body: is required"
      return;
    }
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(
        new ApiError("INVALID_JSON", `the body is not valid JSON (${(e as Error).message}): send a JSON object`),
        undefined,
      );
    }
  });

  app.setErrorHandler((err, request, reply) => sendError(err, request, reply));
  app.setNotFoundHandler((request, reply) =>
    sendError(
      new ApiError(
        "NOT_FOUND",
        `no route ${request.method} ${request.url.split("?")[0]}: see /v1/openapi.json for the routes`,
      ),
      request,
      reply,
    ),
  );

  await app.register(rateLimit, {
    max: config.limits.perIpPerMinute,
    timeWindow: 60_000,
    keyGenerator: (request) => request.ip,
    errorResponseBuilder: (request, context) =>
      new ApiError(
        "RATE_LIMITED",
        `more than ${context.max} requests per minute from ${request.ip}: retry in ${Math.ceil(context.ttl / 1000)} s, or send more items per request`,
        { limit: context.max, window: "1 minute" },
      ),
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "MachinePay relayer",
        version: "1",
        description:
          "Submit EIP-712 signed device payments and tab vouchers; follow them to settlement. Wire format: sdk/README.md.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "config.adminToken" } } },
    },
    transform: jsonSchemaTransform,
  });

  app.addHook("onRequest", async (request) => {
    if (request.raw.httpVersionMajor === 1 && request.raw.httpVersionMinor >= 1 && !request.headers.host) {
      throw new ApiError("BAD_REQUEST", "an HTTP/1.1 request must carry a Host header: add one", {
        header: "host",
      });
    }
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    const ms = Math.round(reply.elapsedTime * 100) / 100;
    const kind = request.routeOptions.config?.submitKind;
    if (kind && reply.statusCode < 500) deps.metrics.ack(kind, reply.elapsedTime / 1000);
    deps.metrics.request(request.method, route, reply.statusCode);
    request.log.info(
      {
        method: request.method,
        route,
        status: reply.statusCode,
        ms,
        ...(request.itemCount > 0 ? { items: request.itemCount } : {}),
        ...(request.errorCode ? { code: request.errorCode } : {}),
      },
      "request",
    );
  });

  const ctx: RouteContext = {
    deps: { ...deps, ledger, clock: deps.clock ?? new ChainClock() },
    verifier: deps.verifier ?? new Verifier(domain),
    limiter: new DeviceRateLimiter(config.limits.perDevicePerSecond, options.now),
    separator: domainSeparator(domain),
    load: { admitting: 0 },
    pendingCount: () => (ledger as { size?: number }).size ?? 0,
  };
  infoRoutes(app, ctx);
  paymentRoutes(app, ctx);
  voucherRoutes(app, ctx);
  tabRoutes(app, ctx);
  deviceRoutes(app, ctx);
  batchRoutes(app, ctx);
  ownerMessageRoutes(app, ctx);
  adminRoutes(app, ctx);

  await app.ready();
  return app as unknown as FastifyInstance;
}
