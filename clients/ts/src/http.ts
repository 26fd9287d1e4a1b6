// Internal plumbing shared by both clients: fetch + JSON, HTTP error mapping, a deadline that
// merges the caller's AbortSignal with timeoutMs, and the backoff poll loop. Uses only fetch,
// AbortController and setTimeout, so it runs unchanged in Workers, Next.js and Node 20+.
import { isErrorCode, MaskpaintError } from "./errors.js";
import type { Provider } from "./errors.js";
import type { JobErrorBody } from "./types.generated.js";

/** The subset of `fetch` the clients call (`globalThis.fetch` fits). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** Backoff between status polls: `min(maxDelayMs, initialDelayMs * multiplier^n)`, then +/- jitter. */
export interface PollOptions {
  /** First wait after submitting, ms. Default 500. */
  initialDelayMs?: number;
  /** Cap on any single wait (jitter included), ms. Default 8000. */
  maxDelayMs?: number;
  /** Growth per poll. Default 1.7. */
  multiplier?: number;
  /** Random spread as a fraction of the wait (0.25 = +/-25%). Default 0.25. */
  jitter?: number;
  /** Transient poll failures (network, 429, 5xx) tolerated in a row before giving up. Default 5. */
  maxConsecutiveErrors?: number;
}

export const DEFAULT_POLL: Required<PollOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 8000,
  multiplier: 1.7,
  jitter: 0.25,
  maxConsecutiveErrors: 5,
};

/** Default overall time limit of one call (`run`, `runsync`, `wait`), ms: 15 minutes. */
export const DEFAULT_TIMEOUT_MS = 15 * 60 * 1000;

/** Options both clients accept. */
export interface CommonClientOptions {
  /** `fetch` to use (default: the global one, looked up at call time). */
  fetch?: FetchLike;
  /** Default overall limit per call, ms (default 15 min; `Infinity` for none). */
  timeoutMs?: number;
  /** Backoff between status polls. */
  poll?: PollOptions;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** Hook for tests and simulations: how to wait `ms` (must reject when `signal` aborts). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Hook for tests: a source of numbers in [0, 1) for jitter (default Math.random). */
  random?: () => number;
}

/** Options of one call. */
export interface CallOptions {
  /** Abort the call (the job itself keeps running on the provider). */
  signal?: AbortSignal;
  /** Overall limit of this call, ms (overrides the client's). */
  timeoutMs?: number;
}

export function backoffDelay(
  attempt: number,
  poll: Required<PollOptions>,
  random: () => number,
): number {
  const base = Math.min(poll.maxDelayMs, poll.initialDelayMs * poll.multiplier ** attempt);
  const spread = base * poll.jitter * (2 * random() - 1);
  return Math.max(0, Math.min(poll.maxDelayMs, Math.round(base + spread)));
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** One call's cancellation: the caller's signal and/or a timeout, merged into one signal. */
export class Deadline {
  readonly signal: AbortSignal;
  private readonly ctrl = new AbortController();
  private readonly outer: AbortSignal | undefined;
  private readonly onOuterAbort: () => void;
  private readonly endsAt: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timedOut = false;
  jobId: string | undefined;

  constructor(
    readonly provider: Provider,
    timeoutMs: number,
    outer?: AbortSignal,
  ) {
    this.signal = this.ctrl.signal;
    this.outer = outer;
    this.onOuterAbort = () => this.ctrl.abort(outer?.reason);
    this.endsAt = Number.isFinite(timeoutMs) ? Date.now() + Math.max(0, timeoutMs) : Infinity;
    if (outer?.aborted) {
      this.ctrl.abort(outer.reason);
    } else {
      outer?.addEventListener("abort", this.onOuterAbort, { once: true });
      if (Number.isFinite(timeoutMs)) {
        this.timer = setTimeout(() => {
          this.timedOut = true;
          this.ctrl.abort(new Error("timeout"));
        }, Math.max(0, timeoutMs));
      }
    }
  }

  remainingMs(): number {
    return this.endsAt - Date.now();
  }

  /** The error for the current abort (call only once `signal.aborted`). */
  error(): MaskpaintError {
    if (this.timedOut) {
      return new MaskpaintError({
        code: "client_timeout",
        message: `gave up waiting for the ${this.provider} job (timeoutMs passed)`,
        jobId: this.jobId,
        provider: this.provider,
      });
    }
    return new MaskpaintError({
      code: "aborted",
      message: "the call was aborted",
      jobId: this.jobId,
      provider: this.provider,
      cause: this.outer?.reason,
    });
  }

  throwIfDone(): void {
    if (this.signal.aborted) throw this.error();
  }

  dispose(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.outer?.removeEventListener("abort", this.onOuterAbort);
  }
}

export interface HttpReply {
  status: number;
  body: unknown;
  headers: Headers;
}

export interface Transport {
  provider: Provider;
  fetch: FetchLike | undefined;
  headers: Record<string, string>;
}

/** fetch + JSON parse; throws MaskpaintError on network failure or abort, never on HTTP status. */
export async function requestJson(
  t: Transport,
  dl: Deadline,
  method: string,
  url: string,
  body?: unknown,
  maxBodyBytes?: number,
): Promise<HttpReply> {
  dl.throwIfDone();
  const headers: Record<string, string> = { accept: "application/json", ...t.headers };
  const init: RequestInit = { method, headers, signal: dl.signal };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    const text = JSON.stringify(body);
    if (maxBodyBytes !== undefined) checkBodySize(text, maxBodyBytes, t.provider, pathOf(url));
    init.body = text;
  }
  const doFetch: FetchLike = t.fetch ?? ((input, i) => globalThis.fetch(input, i));
  let res: Response;
  let text: string;
  try {
    res = await doFetch(url, init);
    text = await res.text();
  } catch (err) {
    if (dl.signal.aborted) throw dl.error();
    throw new MaskpaintError({
      code: "network_error",
      message: `${method} ${pathOf(url)} failed: ${err instanceof Error ? err.message : String(err)}`,
      jobId: dl.jobId,
      provider: t.provider,
      cause: err,
    });
  }
  let parsed: unknown = undefined;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/**
 * Refuse a JSON body over `maxBytes` (UTF-8 bytes) before it is sent: a 12 MB photo as base64
 * would otherwise travel in full only to be refused by the provider (RunPod answers 413 /
 * 400). Throws MaskpaintError `payload_too_large` (not retryable) pointing to the upload flow.
 */
export function checkBodySize(text: string, maxBytes: number, provider: Provider, path: string): void {
  // UTF-8 length without allocating: JSON.stringify output is mostly ASCII (base64).
  let bytes = text.length;
  if (bytes <= maxBytes / 3) return; // even all-3-byte characters would fit
  bytes = new TextEncoder().encode(text).length;
  if (bytes <= maxBytes) return;
  const mb = (n: number) => (n / 1_000_000).toFixed(1);
  throw new MaskpaintError({
    code: "payload_too_large",
    message:
      `the request body is ${mb(bytes)} MB, over ${provider}'s ${mb(maxBytes)} MB cap for ${path}: ` +
      "upload the photo to the input bucket (a presigned PUT) and send its s3:// or https:// URL instead of base64",
    retryable: false,
    provider,
  });
}

/** A URL's path only (no host, no query: presigned or tokenised parts never reach messages). */
export function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return "(url)";
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A contract error body (`{code, message, field, retryable}`) -> MaskpaintError, or null. */
export function fromErrorBody(
  body: unknown,
  provider: Provider,
  extra: { httpStatus?: number; jobId?: string },
): MaskpaintError | null {
  if (!isObject(body) || !isErrorCode(body.code)) return null;
  const b = body as unknown as JobErrorBody;
  return new MaskpaintError({
    code: b.code,
    message: typeof b.message === "string" ? b.message : b.code,
    field: typeof b.field === "string" ? b.field : null,
    retryable: typeof b.retryable === "boolean" ? b.retryable : undefined,
    provider,
    ...extra,
  });
}

/** A non-2xx reply -> MaskpaintError (contract body if there is one, else by status). */
export function httpError(
  reply: HttpReply,
  provider: Provider,
  what: string,
  jobId?: string,
): MaskpaintError {
  const { status, body } = reply;
  const base = { httpStatus: status, jobId, provider } as const;
  // Modal: {"error": {code, message, field, retryable}}; a bare body is accepted too.
  const fromBody =
    (isObject(body) && fromErrorBody(body.error, provider, base)) ||
    fromErrorBody(body, provider, base);
  if (fromBody) return fromBody;
  if (isObject(body) && typeof body.error === "string") {
    const parsed = parseCodedMessage(body.error);
    if (parsed) return new MaskpaintError({ ...parsed, ...base });
  }
  // A body message (e.g. Modal's web-only codes: unauthorized, not_found, expired, unavailable)
  // is the server's own wording and never carries the payload; keep it.
  const said = isObject(body) && isObject(body.error) && typeof body.error.message === "string" ? body.error.message : "";
  const msg = `${what}: HTTP ${status}${said ? ` (${said.slice(0, 200)})` : ""}`;
  if (status === 400 || status === 422) {
    return new MaskpaintError({
      code: "invalid_input",
      message: `${msg} (request rejected)`,
      field: validationField(body),
      retryable: false,
      ...base,
    });
  }
  if (status === 401 || status === 403) {
    return new MaskpaintError({ code: "unauthorized", message: `${msg} (check the API key / token)`, ...base });
  }
  if (status === 404) return new MaskpaintError({ code: "not_found", message: `${msg} (not found)`, ...base });
  if (status === 410) return new MaskpaintError({ code: "not_found", message: `${msg} (the job's result expired)`, ...base });
  if (status === 413) {
    return new MaskpaintError({
      code: "image_too_large",
      message: `${msg} (request body too large; send a URL instead of base64)`,
      retryable: false,
      ...base,
    });
  }
  if (status === 429) return new MaskpaintError({ code: "rate_limited", message: `${msg} (rate limited)`, ...base });
  return new MaskpaintError({
    code: "http_error",
    message: msg,
    retryable: status >= 500 || status === 408,
    ...base,
  });
}

/** FastAPI-style 422 `detail[0].loc` -> dotted field name (never the offending value). */
function validationField(body: unknown): string | null {
  if (!isObject(body) || !Array.isArray(body.detail) || !isObject(body.detail[0])) return null;
  const loc = body.detail[0].loc;
  if (!Array.isArray(loc)) return null;
  const parts = loc.filter((p) => p !== "body").map(String);
  return parts.length ? parts.join(".") : null;
}

/** `"<code>: <message>"` (the RunPod handler's top-level `error`) -> code + message, or null. */
export function parseCodedMessage(
  s: string,
): { code: import("./types.generated.js").ErrorCode; message: string } | null {
  const m = /^([a-z_]+):\s*([\s\S]*)$/.exec(s);
  if (!m || !isErrorCode(m[1])) return null;
  return { code: m[1], message: m[2] || m[1] };
}

/** Transient failures a poll loop should ride out. */
export function isTransient(err: unknown): boolean {
  return (
    err instanceof MaskpaintError &&
    (err.code === "network_error" ||
      err.code === "rate_limited" ||
      (err.code === "http_error" && err.retryable))
  );
}

export interface PollStep<T> {
  done: boolean;
  value?: T;
}

export interface Poller {
  poll: Required<PollOptions>;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  random: () => number;
}

/** Wait (backoff + jitter, capped, never past the deadline), then `once()`, until done. */
export async function pollLoop<T>(
  p: Poller,
  dl: Deadline,
  once: () => Promise<PollStep<T>>,
): Promise<T> {
  let errors = 0;
  for (let attempt = 0; ; attempt++) {
    const remaining = dl.remainingMs();
    const wait = Math.min(backoffDelay(attempt, p.poll, p.random), Math.max(0, remaining));
    try {
      await p.sleep(wait, dl.signal);
    } catch {
      throw dl.signal.aborted ? dl.error() : new Error("sleep failed");
    }
    dl.throwIfDone();
    let step: PollStep<T>;
    try {
      step = await once();
    } catch (err) {
      if (isTransient(err) && ++errors < p.poll.maxConsecutiveErrors) continue;
      throw err;
    }
    errors = 0;
    if (step.done) return step.value as T;
  }
}

export function makePoller(opts: CommonClientOptions): Poller {
  return {
    poll: { ...DEFAULT_POLL, ...(opts.poll ?? {}) },
    sleep: opts.sleep ?? abortableSleep,
    random: opts.random ?? Math.random,
  };
}

export function trimBase(url: string): string {
  return url.replace(/\/+$/, "");
}
