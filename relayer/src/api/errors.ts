/**
 * The one place that maps error codes to HTTP statuses. Every error answer is
 * `{ "error": { "code", "message", "details" } }`, with a message that says what to fix. Bad input
 * is always a 4xx: only a bug in the relayer (or a dependency it cannot reach) answers 5xx.
 */
import { IngestUnavailableError } from "../ingest";
import { StoreError } from "../store/errors";

export const ERROR_STATUS = {
  /** The body or a parameter does not match the schema (the message names the field). */
  BAD_REQUEST: 400,
  /** The body is not JSON. */
  INVALID_JSON: 400,
  /** More items in one request than the relayer takes (in all, or of one device). */
  TOO_MANY_ITEMS: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  /** Admin routes while no admin token is configured. */
  ADMIN_DISABLED: 403,
  NOT_FOUND: 404,
  /** The owner message conflicts with one the relayer holds. */
  CONFLICT: 409,
  BODY_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  /** An owner message the relayer will not submit (its stage says why). */
  OWNER_MESSAGE_INVALID: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  /** A stage that this relayer does not run (e.g. owner messages not wired yet). */
  NOT_IMPLEMENTED: 501,
  /** The store could not commit: nothing was accepted, retry. */
  STORE_UNAVAILABLE: 503,
  /** More work in flight or pending than the relayer takes: retry after Retry-After (nothing was accepted). */
  OVERLOADED: 503,
  /** A chain read failed: retry. */
  CHAIN_UNAVAILABLE: 503,
  /** /readyz: a readiness part is failing. */
  NOT_READY: 503,
} as const;

export type ApiErrorCode = keyof typeof ERROR_STATUS;

export type ErrorBody = { error: { code: string; message: string; details: Record<string, unknown> } };

/** An error the API answers as is. `retryAfter` (seconds) becomes a Retry-After header. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  body(): ErrorBody {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

const isCode = (code: unknown): code is ApiErrorCode => typeof code === "string" && Object.hasOwn(ERROR_STATUS, code);

type ValidationIssue = { instancePath?: string; message?: string; keyword?: string; params?: Record<string, unknown> };

/** `/payments/0/payment/amount` → `payments[0].payment.amount`, prefixed for params and query. */
export function fieldPath(context: string | undefined, instancePath: string | undefined): string {
  const parts = (instancePath ?? "").split("/").filter((p) => p !== "");
  let path = "";
  for (const p of parts) path += /^\d+$/.test(p) ? `[${p}]` : path === "" ? p : `.${p}`;
  const prefix =
    context === "params" ? "params" : context === "querystring" ? "query" : context === "headers" ? "headers" : "";
  if (prefix === "") return path === "" ? "body" : path;
  return path === "" ? prefix : `${prefix}.${path}`;
}

const ARRAY_FIELDS = new Set(["payments", "vouchers", "devices", "proofs"]);

/** A zod validation failure (through fastify-type-provider-zod) as a 400 naming the field paths. */
function validationError(issues: ValidationIssue[], context: string | undefined): ApiError {
  const listed = issues.slice(0, 20).map((i) => ({
    path: fieldPath(context, i.instancePath),
    message: i.message ?? "is invalid",
    code: i.keyword,
  }));
  const first = issues[0];
  const topArray = (first?.instancePath ?? "").split("/").filter(Boolean);
  const tooMany =
    first?.keyword === "too_big" && topArray.length <= 2 && ARRAY_FIELDS.has(topArray[topArray.length - 1] ?? "");
  const shown = listed
    .slice(0, 3)
    .map((i) => `${i.path}: ${i.message}`)
    .join("; ");
  const more = issues.length > 3 ? ` (and ${issues.length - 3} more problems)` : "";
  return new ApiError(tooMany ? "TOO_MANY_ITEMS" : "BAD_REQUEST", `${shown}${more}`, {
    issues: listed,
    ...(issues.length > listed.length ? { omitted: issues.length - listed.length } : {}),
  });
}

/** Fastify's own errors (body parsing, URLs) by their codes. */
function frameworkError(code: string, err: { message?: string }, bodyLimit: number): ApiError | undefined {
  switch (code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError(
        "BODY_TOO_LARGE",
        `the request body is larger than ${bodyLimit} bytes: send fewer items per request (or raise limits.bodyBytes)`,
        { limit: bodyLimit },
      );
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new ApiError("BAD_REQUEST", "the body is not as long as its Content-Length header says");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new ApiError("INVALID_JSON", "the body is empty: send a JSON object (content-type: application/json)");
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new ApiError("INVALID_JSON", "the body is not valid JSON: send a JSON object");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(
        "UNSUPPORTED_MEDIA_TYPE",
        "this route takes JSON: send the body with content-type: application/json",
      );
    case "FST_ERR_BAD_URL":
      return new ApiError(
        "BAD_REQUEST",
        "the URL is malformed (bad percent-encoding); see /v1/openapi.json for routes",
      );
    case "FST_ERR_MAX_PARAM_LENGTH":
      return new ApiError("URI_TOO_LONG", "a path parameter is too long; see /v1/openapi.json for the routes' formats");
    case "FST_ERR_NOT_FOUND":
      return new ApiError("NOT_FOUND", err.message ?? "no such route; see /v1/openapi.json");
    default:
      return undefined;
  }
}

/**
 * Any thrown value as an ApiError. Unknown errors become INTERNAL with a generic message (the
 * original is logged, not answered).
 */
export function toApiError(err: unknown, bodyLimit: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof IngestUnavailableError) return new ApiError("STORE_UNAVAILABLE", err.message, {}, 1);
  if (err instanceof StoreError) {
    if (err.code === "WRITE_FAILED" || err.code === "CLOSED" || err.code === "CANNOT_OPEN") {
      return new ApiError("STORE_UNAVAILABLE", `the store is unavailable (${err.message}); retry`, {}, 1);
    }
    if (err.code === "NOT_FOUND") return new ApiError("NOT_FOUND", err.message);
    if (err.code === "INVALID_INPUT") return new ApiError("BAD_REQUEST", err.message, err.details);
    return new ApiError("INTERNAL", "the relayer failed to answer; the error is logged");
  }
  const e = (err ?? {}) as {
    code?: unknown;
    message?: string;
    validation?: ValidationIssue[];
    validationContext?: string;
    details?: unknown;
    statusCode?: number;
  };
  if (Array.isArray(e.validation)) return validationError(e.validation, e.validationContext);
  if (typeof e.code === "string") {
    const fw = frameworkError(e.code, e, bodyLimit);
    if (fw) return fw;
    // Stages below the API (owner messages) may throw errors carrying one of our codes.
    if (isCode(e.code) && e.code !== "INTERNAL") {
      const details = e.details && typeof e.details === "object" ? (e.details as Record<string, unknown>) : {};
      return new ApiError(e.code, e.message ?? e.code, details);
    }
  }
  // Any other client error Fastify raised (4xx) stays a 4xx.
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new ApiError(e.statusCode === 404 ? "NOT_FOUND" : "BAD_REQUEST", e.message ?? "bad request");
  }
  return new ApiError("INTERNAL", "the relayer failed to answer; the error is logged");
}
