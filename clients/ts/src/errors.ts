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
 * | `not_found`      | HTTP 404 / 410, or the job id is unknown / expired           | no        |
 * | `rate_limited`   | HTTP 429                                                     | yes       |
 * | `http_error`     | any other non-2xx (5xx and 408: retryable; else not)         | depends   |
 * | `bad_response`   | a 2xx whose body is not the JSON the contract promises       | no        |
 * | `cancelled`      | RunPod reports the job CANCELLED                             | no        |
 * | `aborted`        | the caller's `AbortSignal` fired                             | no        |
 * | `client_timeout` | the call's `timeoutMs` passed (the job may still be running; | yes       |
 * |                  | `error.jobId` lets you resume with `wait(jobId)`)            |           |
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
  | "client_timeout";

/** Every code a {@link MaskpaintError} can carry: the server's `ErrorCode` or a client code. */
export type MaskpaintErrorCode = ErrorCode | ClientErrorCode;

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
]);

/** Whether `value` is one of the server's error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** The default `retryable` for a code (the server's table for server codes). */
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
