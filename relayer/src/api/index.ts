// The relayer's HTTP API v1: buildServer wires routes over the stages (see server.ts).
export { ApiError, type ApiErrorCode, ERROR_STATUS, type ErrorBody, toApiError } from "./errors";
export { deviceHeadroom, type Headroom } from "./headroom";
export { DeviceRateLimiter } from "./limits";
export type { OnboardingSubmission, RevocationSubmission } from "./schemas";
export {
  type ApiDeps,
  type BuildServerOptions,
  buildServer,
  LOG_REDACT_PATHS,
  type OwnerMessageInfo,
  type OwnerMessages,
  type Readiness,
} from "./server";
export { SharedVerifier } from "./verifier";
