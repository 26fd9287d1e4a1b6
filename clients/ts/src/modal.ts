import { MaskpaintError } from "./errors.js";
import {
  Deadline,
  DEFAULT_TIMEOUT_MS,
  fromErrorBody,
  httpError,
  isObject,
  makePoller,
  newIdempotencyKey,
  pollLoop,
  requestJson,
  retryTransient,
  trimBase,
} from "./http.js";
import type { CallOptions, CommonClientOptions, Poller, PollStep, Transport } from "./http.js";
import { runMany as runManyWith } from "./batch.js";
import type { RunManyOptions, RunManyResult } from "./batch.js";
import { checkResult, ProgressTracker } from "./progress.js";
import type { ProgressOptions } from "./progress.js";
import type { JobErrorBody, JobProgress, JobRequest, JobResult } from "./types.generated.js";

/**
 * A job's state on the web API: `queued` (waiting for a worker; `position` when known),
 * `running`, then `done` / `failed` / `cancelled`. `pending` is what servers before `queued`
 * / `running` answered for both.
 */
export type WebJobState = "queued" | "running" | "pending" | "done" | "failed" | "cancelled";

/** `POST /jobs` -> 202 (a new job) or 200 (the same `Idempotency-Key` seen before: the same job). */
export interface WebSubmitResponse {
  id: string;
  status: WebJobState;
  /** Place in the queue (0 = next), where the dispatcher knows it. */
  position?: number | null;
}

/** `GET /jobs/{id}` and `DELETE /jobs/{id}`. */
export interface WebJobStatus {
  id?: string;
  status: WebJobState;
  position?: number | null;
  progress?: JobProgress | null;
  /** `done`: the JobResult, its URLs signed afresh at each poll. */
  output?: JobResult;
  /** `failed`: the contract's error body. */
  error?: JobErrorBody;
}

const STATES: readonly string[] = ["queued", "running", "pending", "done", "failed", "cancelled"];

export interface ModalClientOptions extends CommonClientOptions {
  /**
   * The web API's URL, e.g. `https://<workspace>--maskpaint-api.modal.run` (Modal's label is
   * `<app>-api`; `modal deploy modal_app.py` prints it). Checked on the first call.
   */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface ModalSubmitOptions extends CallOptions {
  /**
   * The web API POSTs the finished job (`{id, status: "done", output}` or
   * `{id, status: "failed", error}`) to this https URL, signed with HMAC-SHA256 in the
   * `X-Maskpaint-Signature` header (check it with `verifyWebhook`). The server needs
   * `MASKPAINT_WEBHOOK_SECRET`; the URL must be public https (the input URLs' SSRF rules).
   */
  webhook?: string;
  /**
   * Sent as `Idempotency-Key`: the same key within the server's TTL answers the same job id
   * instead of queueing a second job. Default: a fresh random key per `submit` / `run`, so a
   * submit that failed in transit (network error, 429, 5xx) is sent again safely (up to
   * `poll.maxConsecutiveErrors` tries). `null`: no key, and then no retry.
   */
  idempotencyKey?: string | null;
}

export type ModalRunOptions = ModalSubmitOptions & ProgressOptions;

/**
 * Client of the maskpaint web API (Modal, or `make serve` locally):
 * `POST /jobs` -> 202 `{id, status: "queued", position?}`; `GET /jobs/{id}` ->
 * `{status: "queued" | "running", position?, progress?}` | `{status: "done", output}` |
 * `{status: "failed", error}` | `{status: "cancelled"}` | 404 / 410; `DELETE /jobs/{id}`;
 * `GET /health`.
 */
export class ModalClient {
  private readonly rawBase: string | undefined;
  private readonly transport: Transport;
  private readonly poller: Poller;
  private readonly timeoutMs: number;

  /** Never throws: `baseUrl` is checked on the first call (MaskpaintError `invalid_config`). */
  constructor(opts: ModalClientOptions = {}) {
    this.rawBase = opts.baseUrl;
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    this.transport = { provider: "modal", fetch: opts.fetch, headers, maxResponseBytes: opts.maxResponseBytes };
    this.poller = makePoller(opts);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** The web API's URL without a trailing slash; throws `invalid_config` when unset. */
  get baseUrl(): string {
    if (!this.rawBase) {
      throw new MaskpaintError({
        code: "invalid_config",
        message: "ModalClient: baseUrl is required (https://<workspace>--maskpaint-api.modal.run)",
        provider: "modal",
      });
    }
    return trimBase(this.rawBase);
  }

  /** `POST /jobs`: queue a job; returns `{id, status: "queued", position?}`. */
  async submit(input: JobRequest, opts: ModalSubmitOptions = {}): Promise<WebSubmitResponse> {
    return this.withDeadline(opts, (dl) => this.submitIn(dl, input, opts));
  }

  /** One `GET /jobs/{id}`; returns the reply as is (`failed` / `cancelled` are not thrown here; 404 is). */
  async status(jobId: string, opts: CallOptions = {}): Promise<WebJobStatus> {
    return this.withDeadline(opts, (dl) => {
      dl.jobId = jobId;
      return this.statusIn(dl, jobId);
    });
  }

  /** Poll `GET /jobs/{id}` until done (the JobResult) or failed (a thrown MaskpaintError). */
  async wait(jobId: string, opts: ModalRunOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, (dl) => {
      dl.jobId = jobId;
      return this.waitIn(dl, jobId, new ProgressTracker("modal", opts.onProgress));
    });
  }

  /**
   * Many jobs through this client: at most `concurrency` in flight, retries of retryable
   * failures, one result per job in input order ({@link runManyWith | runMany}).
   */
  runMany(jobs: readonly JobRequest[], opts: RunManyOptions = {}): Promise<RunManyResult[]> {
    return runManyWith(this, jobs, opts);
  }

  /** `submit` then `wait`. */
  async run(input: JobRequest, opts: ModalRunOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, async (dl) => {
      const progress = new ProgressTracker("modal", opts.onProgress);
      const sub = await this.submitIn(dl, input, opts);
      progress.report(sub.id, sub.status, undefined, sub.position);
      return this.waitIn(dl, sub.id, progress);
    });
  }

  /**
   * `DELETE /jobs/{id}`: cancel a queued or running job. Returns `{id, status: "cancelled"}`,
   * or the final status when the job had already ended (`done` / `failed`). A `wait` or `run`
   * on the job then rejects with MaskpaintError `cancelled`.
   */
  async cancel(jobId: string, opts: CallOptions = {}): Promise<WebJobStatus> {
    return this.withDeadline(opts, async (dl) => {
      dl.jobId = jobId;
      const reply = await requestJson(this.transport, dl, "DELETE", `${this.baseUrl}/jobs/${encodeURIComponent(jobId)}`);
      if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "cancel", jobId);
      return this.checkStatus(reply.body, jobId, "DELETE /jobs/{id}");
    });
  }

  /** `GET /health`: the parsed body (throws MaskpaintError when not 2xx). */
  async health(opts: CallOptions = {}): Promise<unknown> {
    return this.withDeadline(opts, async (dl) => {
      const reply = await requestJson(this.transport, dl, "GET", `${this.baseUrl}/health`);
      if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "health");
      return reply.body;
    });
  }

  // ------------------------------------------------------------------------------ internals
  private async withDeadline<T>(opts: CallOptions, fn: (dl: Deadline) => Promise<T>): Promise<T> {
    if (this.poller.problem) throw new MaskpaintError({ code: "invalid_config", message: this.poller.problem, provider: "modal" });
    const dl = new Deadline("modal", opts.timeoutMs ?? this.timeoutMs, opts.signal);
    try {
      dl.throwIfDone();
      return await fn(dl);
    } finally {
      dl.dispose();
    }
  }

  private async submitIn(dl: Deadline, input: JobRequest, opts: ModalSubmitOptions): Promise<WebSubmitResponse> {
    // with a webhook the input goes in the `{input, webhook}` envelope; otherwise bare
    const sent = opts.webhook ? { input, webhook: opts.webhook } : input;
    const key = opts.idempotencyKey === undefined ? newIdempotencyKey() : opts.idempotencyKey;
    const send = async (): Promise<WebSubmitResponse> => {
      const extra = key ? { "idempotency-key": key } : undefined;
      const reply = await requestJson(this.transport, dl, "POST", `${this.baseUrl}/jobs`, sent, undefined, extra);
      if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "submit");
      const body = reply.body;
      if (!isObject(body) || typeof body.id !== "string" || !body.id) {
        throw new MaskpaintError({ code: "bad_response", message: "POST /jobs replied without a job id", provider: "modal" });
      }
      const status = STATES.includes(body.status as string) ? (body.status as WebJobState) : "queued";
      const sub: WebSubmitResponse = { id: body.id, status };
      if (typeof body.position === "number") sub.position = body.position;
      return sub;
    };
    // without a key a resend could queue the job twice: one try only
    const sub = key ? await retryTransient(this.poller, dl, send) : await send();
    dl.jobId = sub.id;
    return sub;
  }

  private async statusIn(dl: Deadline, jobId: string): Promise<WebJobStatus> {
    const reply = await requestJson(this.transport, dl, "GET", `${this.baseUrl}/jobs/${encodeURIComponent(jobId)}`);
    if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "status", jobId);
    return this.checkStatus(reply.body, jobId, "GET /jobs/{id}");
  }

  private checkStatus(body: unknown, jobId: string, what: string): WebJobStatus {
    if (!isObject(body) || !STATES.includes(body.status as string)) {
      throw new MaskpaintError({
        code: "bad_response",
        message: `${what} replied without a known status`,
        jobId,
        provider: "modal",
      });
    }
    return body as unknown as WebJobStatus;
  }

  private waitIn(dl: Deadline, jobId: string, progress: ProgressTracker): Promise<JobResult> {
    return pollLoop<JobResult>(this.poller, dl, async (): Promise<PollStep<JobResult>> => {
      const st = await this.statusIn(dl, jobId);
      if (st.status === "done") return { done: true, value: checkResult(st.output, "modal", jobId) };
      if (st.status === "failed") {
        throw (
          fromErrorBody(st.error, "modal", { jobId }) ??
          new MaskpaintError({ code: "internal", message: "the job failed without an error body", jobId, provider: "modal" })
        );
      }
      if (st.status === "cancelled") {
        throw new MaskpaintError({ code: "cancelled", message: "the job was cancelled", retryable: false, jobId, provider: "modal" });
      }
      progress.report(jobId, st.status, st.progress, st.position);
      return { done: false };
    });
  }
}
