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
  /** First wait after submitting, ms. Default 500; at least {@link MIN_POLL_DELAY_MS}. */
  initialDelayMs?: number;
  /** Cap on any single wait (jitter included), ms. Default 8000. */
  maxDelayMs?: number;
  /** Growth per poll. Default 1.7. */
  multiplier?: number;
  /** Random spread as a fraction of the wait (0.25 = +/-25%). Default 0.25. */
  jitter?: number;
  /**
   * Transient failures (network, 429, 5xx) tolerated in a row before giving up. Default 5.
   * Also the number of tries of a submit that carries an idempotency key.
   */
  maxConsecutiveErrors?: number;
}

/**
 * The shortest wait between two requests of one poll loop, ms: `initialDelayMs: 0` would
 * otherwise poll hundreds of times a second (each poll is a billed request on RunPod).
 */
export const MIN_POLL_DELAY_MS = 200;

/**
 * Default cap on a 2xx response body, bytes (128 MiB: a JobResult with `return_base64` of a
 * 12 MP PNG and its overlay is well under it). A larger body is refused (`bad_response`)
 * without being read in full.
 */
export const DEFAULT_MAX_RESPONSE_BYTES = 128 * 1024 * 1024;

/**
 * Cap on a non-2xx response body, bytes: an error body is a few hundred bytes; a proxy's
 * 200 MB error page is read no further than this, then mapped by its HTTP status alone.
 */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;

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
  /**
   * Default overall limit per call, ms (default 15 min; `Infinity` for none). A value that is
   * not a number >= 0 (`"60000"`, NaN) fails the first call with `invalid_config`.
   */
  timeoutMs?: number;
  /** Cap on a 2xx response body, bytes (default {@link DEFAULT_MAX_RESPONSE_BYTES}). */
  maxResponseBytes?: number;
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
  return Math.max(MIN_POLL_DELAY_MS, Math.min(poll.maxDelayMs, Math.round(base + spread)));
}

/** Why `timeoutMs` is unusable, or null: it must be a number >= 0 (`Infinity` = no limit). */
export function timeoutProblem(timeoutMs: unknown): string | null {
  if (typeof timeoutMs !== "number" || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    return `timeoutMs must be a number of ms >= 0 (or Infinity), got ${JSON.stringify(timeoutMs) ?? String(timeoutMs)}`;
  }
  return null;
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

  /** @throws MaskpaintError `invalid_config` when `timeoutMs` is not a number >= 0 */
  constructor(
    readonly provider: Provider,
    timeoutMs: number,
    outer?: AbortSignal,
  ) {
    const problem = timeoutProblem(timeoutMs);
    if (problem) throw new MaskpaintError({ code: "invalid_config", message: problem, provider });
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
  /** Cap on a 2xx body, bytes (default {@link DEFAULT_MAX_RESPONSE_BYTES}). */
  maxResponseBytes?: number;
}

/** fetch + JSON parse; throws MaskpaintError on network failure or abort, never on HTTP status. */
export async function requestJson(
  t: Transport,
  dl: Deadline,
  method: string,
  url: string,
  body?: unknown,
  maxBodyBytes?: number,
  extraHeaders?: Record<string, string>,
): Promise<HttpReply> {
  dl.throwIfDone();
  const headers: Record<string, string> = { accept: "application/json", ...t.headers, ...extraHeaders };
  const init: RequestInit = { method, headers, signal: dl.signal };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    const text = JSON.stringify(body);
    if (maxBodyBytes !== undefined) checkBodySize(text, maxBodyBytes, t.provider, pathOf(url));
    init.body = text;
  }
  const doFetch: FetchLike = t.fetch ?? ((input, i) => globalThis.fetch(input, i));
  let res: Response;
  let text: string | null;
  try {
    res = await doFetch(url, init);
    const ok = res.status >= 200 && res.status < 300;
    text = await readCapped(res, ok ? (t.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES) : MAX_ERROR_BODY_BYTES);
    if (text === null && ok) {
      throw new MaskpaintError({
        code: "bad_response",
        message: `${method} ${pathOf(url)} answered a body over ${t.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES} bytes (maxResponseBytes)`,
        retryable: false,
        jobId: dl.jobId,
        provider: t.provider,
      });
    }
  } catch (err) {
    if (err instanceof MaskpaintError) throw err;
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
  if (text !== null && text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/**
 * A response body as text, or null when it is over `maxBytes` (then no more of it is read and
 * the stream is cancelled): `Response.text()` would buffer a body of any size.
 */
async function readCapped(res: Response, maxBytes: number): Promise<string | null> {
  const declared = Number(res.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel().catch(() => {});
    return null;
  }
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const all = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
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

/** What an error code looks like (a code from a newer server is kept as sent). */
const CODE_SHAPE = /^[a-z][a-z0-9_]{0,63}$/;

/**
 * A contract error body (`{code, message, field, retryable}`) -> MaskpaintError, or null.
 * Codes this client does not know (a newer server's, or the web API's `not_found`, `expired`,
 * `unauthorized`) are kept as sent with their message, field and retryable.
 */
export function fromErrorBody(
  body: unknown,
  provider: Provider,
  extra: { httpStatus?: number; jobId?: string },
): MaskpaintError | null {
  if (!isObject(body) || typeof body.code !== "string" || !CODE_SHAPE.test(body.code)) return null;
  const b = body as unknown as Omit<JobErrorBody, "code"> & { code: string };
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
  if (status === 410) {
    return new MaskpaintError({ code: "expired", message: `${msg} (the job's record expired: submit it again)`, ...base });
  }
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

/**
 * Transient failures a poll loop (or a keyed submit) should ride out: no answer, 429, or a
 * 5xx / 408 the server did not mark as final (`retryable: false` in its error body).
 */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof MaskpaintError)) return false;
  if (err.code === "network_error" || err.code === "rate_limited") return true;
  const s = err.httpStatus;
  return s !== undefined && (s >= 500 || s === 408) && err.retryable;
}

export interface PollStep<T> {
  done: boolean;
  value?: T;
}

export interface Poller {
  poll: Required<PollOptions>;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  random: () => number;
  /** Why the options are unusable (checked by each call, never by a constructor), or null. */
  problem: string | null;
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
  const poll = { ...DEFAULT_POLL, ...(opts.poll ?? {}) };
  let problem: string | null = null;
  for (const [k, v] of Object.entries(poll)) {
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) problem = `poll.${k} must be a finite number >= 0, got ${JSON.stringify(v)}`;
  }
  if (!problem && poll.maxConsecutiveErrors < 1) problem = "poll.maxConsecutiveErrors must be >= 1";
  if (!problem && opts.maxResponseBytes !== undefined && !(opts.maxResponseBytes > 0)) {
    problem = `maxResponseBytes must be a number > 0, got ${JSON.stringify(opts.maxResponseBytes)}`;
  }
  if (!problem && opts.timeoutMs != null) problem = timeoutProblem(opts.timeoutMs);
  poll.initialDelayMs = Math.max(MIN_POLL_DELAY_MS, poll.initialDelayMs);
  poll.maxDelayMs = Math.max(poll.initialDelayMs, poll.maxDelayMs);
  return { poll, sleep: opts.sleep ?? abortableSleep, random: opts.random ?? Math.random, problem };
}

/**
 * Run `send` (one submit) again after a transient failure (network, 429, 5xx), with the poll
 * backoff, up to `poll.maxConsecutiveErrors` tries. Only for a request the server
 * de-duplicates (an `Idempotency-Key`): otherwise a lost reply would queue a second job.
 */
export async function retryTransient<T>(p: Poller, dl: Deadline, send: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await send();
    } catch (err) {
      if (!isTransient(err) || attempt + 1 >= p.poll.maxConsecutiveErrors) throw err;
    }
    const wait = Math.min(backoffDelay(attempt, p.poll, p.random), Math.max(0, dl.remainingMs()));
    try {
      await p.sleep(wait, dl.signal);
    } catch {
      throw dl.signal.aborted ? dl.error() : new Error("sleep failed");
    }
    dl.throwIfDone();
  }
}

/**
 * A fresh idempotency key (a random UUID v4). `crypto.randomUUID` exists only in secure
 * contexts (https, localhost); `getRandomValues` exists everywhere fetch does.
 */
export function newIdempotencyKey(): string {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function trimBase(url: string): string {
  return url.replace(/\/+$/, "");
}
