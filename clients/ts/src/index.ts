// @maskpaint/client: typed client of the maskpaint RunPod and Modal endpoints.
// Uses only fetch, AbortController and setTimeout: Cloudflare Workers, Next.js, Node 20+.
export { RunpodClient, RUNPOD_API_BASE, RUNPOD_MAX_RUN_BYTES, RUNPOD_MAX_RUNSYNC_BYTES, runpodJobError } from "./runpod.js";
export type { RunpodClientOptions, RunpodRunOptions, RunpodStatus, RunpodSubmitOptions } from "./runpod.js";
export { ModalClient } from "./modal.js";
export type { ModalClientOptions, ModalRunOptions, ModalSubmitOptions, WebJobState, WebJobStatus, WebSubmitResponse } from "./modal.js";
export { verifyWebhook, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_TOLERANCE_S } from "./webhook.js";
export type { VerifyWebhookOptions } from "./webhook.js";
export { idempotencyKey, runMany } from "./batch.js";
export type { RunManyClient, RunManyOptions, RunManyProgress, RunManyResult } from "./batch.js";
export { MaskpaintError, isMaskpaintError, isErrorCode, defaultRetryable, httpStatusFor, isClientError } from "./errors.js";
export type { ClientErrorCode, MaskpaintErrorCode, MaskpaintErrorInit, Provider } from "./errors.js";
export { backoffDelay, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_POLL, DEFAULT_TIMEOUT_MS, MIN_POLL_DELAY_MS, newIdempotencyKey } from "./http.js";
export type { CallOptions, CommonClientOptions, FetchLike, PollOptions } from "./http.js";
export type { ProgressOptions, ProgressUpdate } from "./progress.js";
export { ERROR_CODES, RETRYABLE_ERROR_CODES } from "./types.generated.js";
export type * from "./types.generated.js";
