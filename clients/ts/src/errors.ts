import { ERROR_CODES, RETRYABLE_ERROR_CODES } from "./types.generated.js";
import type { ErrorCode } from "./types.generated.js";

/**
 * Codes the client itself assigns when there is no job error to report (the request never got
 * an answer from the worker's contract):
 *
 * | code             | when                                                         | retryable |
 * | ---------------- | ------------------------------------------------------------ | --------- |
 * | `network_error`  | `fetch` threw (DNS, refused, reset, TLS)                     | yes       |
 * | `unauthorized`   | HTTP 401 / 403 (API key or bearer token)                     | no        |
 * | `not_found`      | HTTP 404, or the job id is unknown                           | no        |
 * | `expired`        | HTTP 410: the job's record is gone (submit the job again)    | yes       |
 * | `rate_limited`   | HTTP 429                                                     | yes       |
 * | `http_error`     | any other non-2xx (5xx and 408: retryable; else not)         | depends   |
 * | `bad_response`   | a 2xx whose body is not the JSON the contract promises       | no        |
 * | `cancelled`      | the job was cancelled (`cancel()`, RunPod CANCELLED)         | no        |
 * | `aborted`        | the caller's `AbortSignal` fired                             | no        |
 * | `client_timeout` | the call's `timeoutMs` passed (the job may still be running; | yes       |
 * |                  | `error.jobId` lets you resume with `wait(jobId)`)            |           |
 * | `payload_too_large` | the JSON body is over the provider's cap (RunPod: 10 MB   | no        |
 * |                  | `/run`, 20 MB `/runsync`); refused before sending: upload    |           |
 * |                  | the photo and send its `s3://` or `https://` URL instead     |           |
 * | `invalid_config` | the client's options are unusable (no endpoint id / URL, a   | no        |
 * |                  | `timeoutMs` that is not a number); raised by the first call, |           |
 * |                  | never by the constructor                                     |           |
 * | `callback_error` | your `onProgress` threw; the job goes on (`error.jobId` lets | no        |
 * |                  | you resume with `wait(jobId)`), `error.cause` is what threw  |           |
 *
 * A code the server sent that this version of the client does not know (a newer server) is
 * kept as sent, with the server's message, `field` and `retryable` (default false): `code` is
 * then a plain string, which {@link isErrorCode} tells apart.
 *
 * HTTP 400 / 422 without a contract error body map to the server code `invalid_input`, 413 to
 * `image_too_large`, and RunPod's TIMED_OUT status to `timeout`.
 */
export type ClientErrorCode =
  | "network_error"
  | "unauthorized"
  | "not_found"
  | "rate_limited"
  | "http_error"
  | "bad_response"
  | "cancelled"
  | "aborted"
  | "client_timeout"
  | "payload_too_large"
  | "invalid_config"
  | "expired"
  | "callback_error";

/**
 * Every code a {@link MaskpaintError} can carry: the server's `ErrorCode`, a client code, or a
 * code from a newer server that this client does not know yet (`string & {}` keeps the
 * editor's completion of the known ones).
 */
export type MaskpaintErrorCode = ErrorCode | ClientErrorCode | (string & {});

export type Provider = "runpod" | "modal";

export interface MaskpaintErrorInit {
  code: MaskpaintErrorCode;
  message: string;
  field?: string | null;
  retryable?: boolean;
  httpStatus?: number;
  jobId?: string;
  provider?: Provider;
  cause?: unknown;
}

const CLIENT_RETRYABLE: ReadonlySet<string> = new Set([
  "network_error",
  "rate_limited",
  "client_timeout",
  "expired",
]);

/** Whether `value` is one of the server's error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** The default `retryable` for a code (the server's table for server codes; false for unknown ones). */
export function defaultRetryable(code: MaskpaintErrorCode): boolean {
  return (RETRYABLE_ERROR_CODES as readonly string[]).includes(code) || CLIENT_RETRYABLE.has(code);
}

/**
 * A failed job or a failed call. `code` is stable (see {@link MaskpaintErrorCode}); `message`
 * is for people; `field` names the request field at fault (when the server said so);
 * `retryable` says whether sending the same request again may succeed; `httpStatus` is the
 * status of a non-2xx response (undefined for job failures reported in a 2xx body, network
 * errors, aborts and timeouts); `jobId` is the provider's job id once known.
 */
export class MaskpaintError extends Error {
  override readonly name = "MaskpaintError";
  readonly code: MaskpaintErrorCode;
  readonly field: string | null;
  readonly retryable: boolean;
  readonly httpStatus: number | undefined;
  readonly jobId: string | undefined;
  readonly provider: Provider | undefined;

  constructor(init: MaskpaintErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.field = init.field ?? null;
    this.retryable = init.retryable ?? defaultRetryable(init.code);
    this.httpStatus = init.httpStatus;
    this.jobId = init.jobId;
    this.provider = init.provider;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      field: this.field,
      retryable: this.retryable,
      httpStatus: this.httpStatus,
      jobId: this.jobId,
      provider: this.provider,
    };
  }
}

/** `instanceof` that also works across copies of this package (bundlers may duplicate it). */
export function isMaskpaintError(err: unknown): err is MaskpaintError {
  return (
    err instanceof MaskpaintError ||
    (typeof err === "object" &&
      err !== null &&
      (err as { name?: unknown }).name === "MaskpaintError" &&
      typeof (err as { code?: unknown }).code === "string")
  );
}

/** Server codes caused by the request itself: the caller must change it (4xx). */
const CALLER_CODES: ReadonlySet<string> = new Set([
  "invalid_input",
  "invalid_image",
  "image_too_large",
  "blocked_url",
  "input_not_found",
  "empty_mask",
  "payload_too_large",
  "content_blocked",
]);

/**
 * Whether `err` is the caller's mistake (a bad photo, mask, URL or field, a body too large, or
 * a request the content policy refuses): a {@link MaskpaintError} whose code is one of
 * `invalid_input`, `invalid_image`, `image_too_large`, `blocked_url`, `input_not_found`,
 * `empty_mask`, `payload_too_large`, `content_blocked`.
 * Sending the same request again cannot succeed; show the caller `message` and `field`.
 */
export function isClientError(err: unknown): boolean {
  return isMaskpaintError(err) && CALLER_CODES.has(err.code);
}

/**
 * The HTTP status a route handler (Next.js, a Worker) should answer for `err`, so a caller's
 * mistake reads as 4xx and ours as 5xx:
 *
 * | status | codes                                                                          |
 * | ------ | ------------------------------------------------------------------------------ |
 * | 400    | `invalid_input`, `invalid_image`, `blocked_url`, `input_not_found`, `empty_mask` |
 * | 413    | `image_too_large`, `payload_too_large`                                         |
 * | 422    | `content_blocked` (the prompt or an image was refused by the content policy)   |
 * | 404    | `not_found` (an unknown job id)                                                |
 * | 410    | `expired` (the job's record is gone: submit it again)                          |
 * | 499    | `aborted` (the caller went away; nobody reads the answer)                      |
 * | 504    | `client_timeout` (the job may still finish: poll again with its `jobId`)       |
 * | 503    | any other retryable error (`gpu_oom`, `timeout`, `storage_error`, `network_error`, `rate_limited`, 5xx) |
 * | 500    | `unauthorized`, `invalid_config`, `callback_error` (our key, configuration or code is wrong) |
 * | 502    | everything else (the worker failed: `internal`, `model_not_found`, `bad_response`, ...) |
 *
 * Anything that is not a {@link MaskpaintError} (a bug in the route) is 500.
 */
export function httpStatusFor(err: unknown): number {
  if (!isMaskpaintError(err)) return 500;
  switch (err.code) {
    case "image_too_large":
    case "payload_too_large":
      return 413;
    case "content_blocked":
      return 422;
    case "not_found":
      return 404;
    case "expired":
      return 410;
    case "aborted":
      return 499;
    case "client_timeout":
      return 504;
    case "unauthorized":
    case "invalid_config":
    case "callback_error":
      return 500;
  }
  if (CALLER_CODES.has(err.code)) return 400;
  return err.retryable ? 503 : 502;
}
