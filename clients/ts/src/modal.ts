import { MaskpaintError } from "./errors.js";
import {
  Deadline,
  DEFAULT_TIMEOUT_MS,
  fromErrorBody,
  httpError,
  isObject,
  makePoller,
  pollLoop,
  requestJson,
  trimBase,
} from "./http.js";
import type { CallOptions, CommonClientOptions, Poller, PollStep, Transport } from "./http.js";
import { checkResult, ProgressTracker } from "./progress.js";
import type { ProgressOptions } from "./progress.js";
import type { JobRequest, JobResult, ModalJobStatus, ModalSubmitResponse } from "./types.generated.js";

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
}

export type ModalRunOptions = ModalSubmitOptions & ProgressOptions;

/**
 * Client of the maskpaint Modal web endpoints:
 * `POST /jobs` -> 202 `{id, status: "queued"}`; `GET /jobs/{id}` -> `{id, status: "queued", position?}` | `{id, status: "running", progress?}` |
 * `{status: "done", output}` | `{status: "failed", error}` | 404; `GET /health`.
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
    this.transport = { provider: "modal", fetch: opts.fetch, headers };
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

  /** `POST /jobs`: queue a job; returns `{id, status: "queued"}`. */
  async submit(input: JobRequest, opts: ModalSubmitOptions = {}): Promise<ModalSubmitResponse> {
    return this.withDeadline(opts, (dl) => this.submitIn(dl, input, opts.webhook));
  }

  /** One `GET /jobs/{id}`; returns the reply as is (`failed` is not thrown here; 404 is). */
  async status(jobId: string, opts: CallOptions = {}): Promise<ModalJobStatus> {
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

  /** `submit` then `wait`. */
  async run(input: JobRequest, opts: ModalRunOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, async (dl) => {
      const progress = new ProgressTracker("modal", opts.onProgress);
      const sub = await this.submitIn(dl, input, opts.webhook);
      progress.report(sub.id, sub.status);
      return this.waitIn(dl, sub.id, progress);
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
    const dl = new Deadline("modal", opts.timeoutMs ?? this.timeoutMs, opts.signal);
    try {
      dl.throwIfDone();
      return await fn(dl);
    } finally {
      dl.dispose();
    }
  }

  private async submitIn(dl: Deadline, input: JobRequest, webhook?: string): Promise<ModalSubmitResponse> {
    // with a webhook the input goes in the `{input, webhook}` envelope; otherwise bare
    const sent = webhook ? { input, webhook } : input;
    const reply = await requestJson(this.transport, dl, "POST", `${this.baseUrl}/jobs`, sent);
    if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "submit");
    const body = reply.body;
    if (!isObject(body) || typeof body.id !== "string" || !body.id) {
      throw new MaskpaintError({ code: "bad_response", message: "POST /jobs replied without a job id", provider: "modal" });
    }
    dl.jobId = body.id;
    return { id: body.id, status: "queued" };
  }

  private async statusIn(dl: Deadline, jobId: string): Promise<ModalJobStatus> {
    const reply = await requestJson(this.transport, dl, "GET", `${this.baseUrl}/jobs/${encodeURIComponent(jobId)}`);
    if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "modal", "status", jobId);
    const body = reply.body;
    if (!isObject(body) || !["queued", "running", "done", "failed", "cancelled"].includes(body.status as string)) {
      throw new MaskpaintError({
        code: "bad_response",
        message: "GET /jobs/{id} replied without a known status",
        jobId,
        provider: "modal",
      });
    }
    return body as unknown as ModalJobStatus;
  }

  private waitIn(dl: Deadline, jobId: string, progress: ProgressTracker): Promise<JobResult> {
    return pollLoop<JobResult>(this.poller, dl, async (): Promise<PollStep<JobResult>> => {
      const st = await this.statusIn(dl, jobId);
      if (st.status === "done") return { done: true, value: checkResult(st.output, "modal", jobId) };
      if (st.status === "cancelled") {
        throw new MaskpaintError({ code: "cancelled", message: "the job was cancelled", jobId, provider: "modal", retryable: false });
      }
      if (st.status === "failed") {
        throw (
          fromErrorBody(st.error, "modal", { jobId }) ??
          new MaskpaintError({ code: "internal", message: "the job failed without an error body", jobId, provider: "modal" })
        );
      }
      progress.report(jobId, st.status, st.status === "running" ? st.progress : undefined);
      return { done: false };
    });
  }
}
