import { isErrorCode, MaskpaintError } from "./errors.js";
import {
  Deadline,
  DEFAULT_TIMEOUT_MS,
  httpError,
  isObject,
  makePoller,
  parseCodedMessage,
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
import type { JobRequest, JobResult, RunpodJobResponse } from "./types.generated.js";

/** RunPod's hosted serverless API. */
export const RUNPOD_API_BASE = "https://api.runpod.ai/v2";

/**
 * RunPod's request body caps (its serverless docs, "Endpoint operations": `/run` 10 MB,
 * `/runsync` 20 MB). The client refuses a larger body before sending it (`payload_too_large`).
 */
export const RUNPOD_MAX_RUN_BYTES = 10_000_000;
export const RUNPOD_MAX_RUNSYNC_BYTES = 20_000_000;

export type RunpodStatus = RunpodJobResponse["status"];

export interface RunpodClientOptions extends CommonClientOptions {
  /** Endpoint id: requests go to `https://api.runpod.ai/v2/{endpointId}`. */
  endpointId?: string;
  /**
   * Base URL instead of the hosted one, e.g. `http://127.0.0.1:8000` for
   * `python runpod_handler.py --rp_serve_api` (then no API key is needed).
   */
  baseUrl?: string;
  /** `RUNPOD_API_KEY`, sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /**
   * Method of `/status/{id}`: the hosted API uses GET; the runpod SDK's local server only
   * accepts POST. Default GET, switching to POST for good after a 405 reply.
   */
  statusMethod?: "GET" | "POST";
  /** `?wait=` of `/runsync` in ms (hosted API: 1000-300000, default there 90000). */
  runsyncWaitMs?: number;
}

/**
 * RunPod's `/run` takes no idempotency key: a resend is a second RunPod job. So a submit that
 * fails in transit is sent again only with `idempotencyKey` (or an input that carries its own
 * `idempotency_key`): the worker keys its write-once record by it, so the second job returns
 * the first one's stored result instead of repainting (a job racing the first may still run the
 * model; one result is stored and returned). Opt-in, unlike `ModalClient`, because the key also
 * names the job's storage folder (`key-<key>`).
 */
export interface RunpodSubmitOptions extends CallOptions {
  /** RunPod calls this URL with the job's final state. */
  webhook?: string;
  /** Sent as the input's `idempotency_key` (`[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}`); enables resends. */
  idempotencyKey?: string;
}

export type RunpodRunOptions = RunpodSubmitOptions & ProgressOptions;

/**
 * Client of a maskpaint RunPod endpoint (`/run`, `/runsync`, `/status/{id}`, `/cancel/{id}`).
 *
 * ```ts
 * const rp = new RunpodClient({ endpointId: env.RUNPOD_ENDPOINT_ID, apiKey: env.RUNPOD_API_KEY });
 * const result = await rp.run({ image: url, prompt: "a red leather jacket" }, { onProgress: console.log });
 * ```
 */
export class RunpodClient {
  private resolvedBase: string | undefined;
  private readonly opts: RunpodClientOptions;
  private statusMethod: "GET" | "POST";
  private readonly transport: Transport;
  private readonly poller: Poller;
  private readonly timeoutMs: number;
  private readonly runsyncWaitMs: number | undefined;

  /**
   * Never throws: the options are checked on the first call (which then throws MaskpaintError
   * `invalid_config`), so a client built at module scope from env vars that are unset at build
   * time (`next build` in CI or Docker) does not break the build.
   */
  constructor(opts: RunpodClientOptions = {}) {
    this.opts = opts;
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
    this.transport = { provider: "runpod", fetch: opts.fetch, headers, maxResponseBytes: opts.maxResponseBytes };
    this.poller = makePoller(opts);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.statusMethod = opts.statusMethod ?? "GET";
    this.runsyncWaitMs = opts.runsyncWaitMs;
  }

  /**
   * `baseUrl` when given, else `https://api.runpod.ai/v2/{endpointId}`. Throws MaskpaintError
   * `invalid_config` when neither is set.
   */
  get baseUrl(): string {
    if (this.resolvedBase === undefined) {
      const { baseUrl, endpointId } = this.opts;
      if (baseUrl) this.resolvedBase = trimBase(baseUrl);
      else if (endpointId) this.resolvedBase = `${RUNPOD_API_BASE}/${encodeURIComponent(endpointId)}`;
      else {
        throw new MaskpaintError({
          code: "invalid_config",
          message: "RunpodClient: give endpointId (e.g. from RUNPOD_ENDPOINT_ID) or baseUrl",
          provider: "runpod",
        });
      }
    }
    return this.resolvedBase;
  }

  /** `POST /run`: queue a job; returns RunPod's reply (`id`, `status`). */
  async submit(input: JobRequest, opts: RunpodSubmitOptions = {}): Promise<RunpodJobResponse> {
    return this.withDeadline(opts, (dl) => this.submitIn(dl, "/run", input, opts.webhook, opts.idempotencyKey));
  }

  /** One status request; returns RunPod's reply as is (FAILED is not thrown here). */
  async status(jobId: string, opts: CallOptions = {}): Promise<RunpodJobResponse> {
    return this.withDeadline(opts, (dl) => {
      dl.jobId = jobId;
      return this.statusIn(dl, jobId);
    });
  }

  /** Poll `/status/{id}` until the job ends; the JobResult, or a thrown MaskpaintError. */
  async wait(jobId: string, opts: CallOptions & ProgressOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, (dl) => {
      dl.jobId = jobId;
      return this.waitIn(dl, jobId, new ProgressTracker("runpod", opts.onProgress));
    });
  }

  /**
   * Many jobs through this client: at most `concurrency` in flight, retries of retryable
   * failures, one result per job in input order ({@link runManyWith | runMany}).
   */
  runMany(jobs: readonly JobRequest[], opts: RunManyOptions = {}): Promise<RunManyResult[]> {
    return runManyWith(this, jobs, opts);
  }

  /** `submit` then `wait`: the way for jobs of any length. */
  async run(input: JobRequest, opts: RunpodRunOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, async (dl) => {
      const progress = new ProgressTracker("runpod", opts.onProgress);
      const sub = await this.submitIn(dl, "/run", input, opts.webhook, opts.idempotencyKey);
      const done = this.settle(sub, progress);
      if (done.done) return done.value as JobResult;
      return this.waitIn(dl, sub.id, progress);
    });
  }

  /**
   * `POST /runsync`: for short jobs. When RunPod's wait ends before the job does (the reply is
   * IN_QUEUE / IN_PROGRESS), it goes on polling `/status/{id}` like `run`.
   */
  async runsync(input: JobRequest, opts: RunpodRunOptions = {}): Promise<JobResult> {
    return this.withDeadline(opts, async (dl) => {
      const progress = new ProgressTracker("runpod", opts.onProgress);
      const path = this.runsyncWaitMs ? `/runsync?wait=${Math.round(this.runsyncWaitMs)}` : "/runsync";
      const sub = await this.submitIn(dl, path, input, opts.webhook, opts.idempotencyKey);
      const done = this.settle(sub, progress);
      if (done.done) return done.value as JobResult;
      return this.waitIn(dl, sub.id, progress);
    });
  }

  /**
   * `POST /cancel/{id}` (hosted API; the SDK's local server has no such route): RunPod drops a
   * queued job and stops a running one; a `wait` or `run` on it then rejects with
   * MaskpaintError `cancelled`. Returns RunPod's reply (`{id, status: "CANCELLED"}`).
   */
  async cancel(jobId: string, opts: CallOptions = {}): Promise<RunpodJobResponse> {
    return this.withDeadline(opts, async (dl) => {
      dl.jobId = jobId;
      const reply = await requestJson(this.transport, dl, "POST", `${this.baseUrl}/cancel/${encodeURIComponent(jobId)}`);
      if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "runpod", "cancel", jobId);
      return this.envelope(reply.body, jobId);
    });
  }

  // ------------------------------------------------------------------------------ internals
  private async withDeadline<T>(opts: CallOptions, fn: (dl: Deadline) => Promise<T>): Promise<T> {
    if (this.poller.problem) throw new MaskpaintError({ code: "invalid_config", message: this.poller.problem, provider: "runpod" });
    const dl = new Deadline("runpod", opts.timeoutMs ?? this.timeoutMs, opts.signal);
    try {
      dl.throwIfDone();
      return await fn(dl);
    } finally {
      dl.dispose();
    }
  }

  private async submitIn(dl: Deadline, path: string, input: JobRequest, webhook?: string, key?: string): Promise<RunpodJobResponse> {
    const sent = key ? { ...input, idempotency_key: key } : input;
    const body: Record<string, unknown> = { input: sent };
    if (webhook) body.webhook = webhook;
    const cap = path.startsWith("/runsync") ? RUNPOD_MAX_RUNSYNC_BYTES : RUNPOD_MAX_RUN_BYTES;
    const send = async (): Promise<RunpodJobResponse> => {
      const reply = await requestJson(this.transport, dl, "POST", `${this.baseUrl}${path}`, body, cap);
      if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "runpod", path.split("?")[0]!);
      return this.envelope(reply.body);
    };
    // without a key the worker cannot tell a resend from a new job: one try only
    const env = sent.idempotency_key ? await retryTransient(this.poller, dl, send) : await send();
    dl.jobId = env.id;
    return env;
  }

  private async statusIn(dl: Deadline, jobId: string): Promise<RunpodJobResponse> {
    const url = `${this.baseUrl}/status/${encodeURIComponent(jobId)}`;
    let reply = await requestJson(this.transport, dl, this.statusMethod, url);
    if (reply.status === 405 && this.statusMethod === "GET") {
      this.statusMethod = "POST"; // the runpod SDK's local API server
      reply = await requestJson(this.transport, dl, "POST", url);
    }
    if (reply.status < 200 || reply.status >= 300) throw httpError(reply, "runpod", "status", jobId);
    return this.envelope(reply.body, jobId);
  }

  private waitIn(dl: Deadline, jobId: string, progress: ProgressTracker): Promise<JobResult> {
    return pollLoop<JobResult>(this.poller, dl, async () => this.settle(await this.statusIn(dl, jobId), progress));
  }

  private envelope(body: unknown, jobId?: string): RunpodJobResponse {
    if (!isObject(body) || typeof body.status !== "string" || (typeof body.id !== "string" && !jobId)) {
      throw new MaskpaintError({
        code: "bad_response",
        message: "RunPod replied without a job id and status",
        provider: "runpod",
        jobId,
      });
    }
    const env = body as unknown as RunpodJobResponse;
    return typeof env.id === "string" ? env : { ...env, id: jobId as string };
  }

  /** A terminal reply -> result or thrown error; otherwise report progress and go on. */
  private settle(env: RunpodJobResponse, progress: ProgressTracker): PollStep<JobResult> {
    const jobId = env.id;
    switch (env.status) {
      case "COMPLETED":
        return { done: true, value: checkResult(env.output, "runpod", jobId) };
      case "FAILED":
        throw runpodJobError(env);
      case "CANCELLED":
        throw new MaskpaintError({ code: "cancelled", message: "the job was cancelled", jobId, provider: "runpod" });
      case "TIMED_OUT":
        throw new MaskpaintError({
          code: "timeout",
          message: "the job ran past the endpoint's execution timeout (RunPod TIMED_OUT)",
          retryable: true,
          jobId,
          provider: "runpod",
        });
      default:
        progress.report(jobId, env.status, env.output);
        return { done: false };
    }
  }
}

/**
 * A FAILED RunPod reply -> MaskpaintError. The hosted API keeps the handler's other keys in
 * `output` (`error_code`, `message`, `field`, `retryable`); the SDK's local server returns only
 * the `error` string `"<code>: <message>"`, so `field` is then null and `retryable` comes from
 * the contract's table. An exception in the handler becomes a JSON `error` (code `internal`).
 */
export function runpodJobError(env: RunpodJobResponse): MaskpaintError {
  const jobId = env.id;
  const out = env.output;
  const errStr = typeof env.error === "string" ? env.error : "";
  const parsed = parseCodedMessage(errStr);
  if (isObject(out) && isErrorCode(out.error_code)) {
    return new MaskpaintError({
      code: out.error_code,
      message: typeof out.message === "string" ? out.message : (parsed?.message ?? out.error_code),
      field: typeof out.field === "string" ? out.field : null,
      retryable: typeof out.retryable === "boolean" ? out.retryable : undefined,
      jobId,
      provider: "runpod",
    });
  }
  if (parsed) return new MaskpaintError({ ...parsed, jobId, provider: "runpod" });
  if (/^job id not found$/i.test(errStr.trim())) {
    return new MaskpaintError({ code: "not_found", message: "RunPod does not know this job id", jobId, provider: "runpod" });
  }
  if (errStr.startsWith("{")) {
    // runpod's capture of an exception raised by the handler: error_type, error_message, traceback...
    return new MaskpaintError({
      code: "internal",
      message: "the worker raised an unhandled exception (see the worker log)",
      jobId,
      provider: "runpod",
    });
  }
  return new MaskpaintError({
    code: "internal",
    message: errStr ? `job failed: ${errStr.slice(0, 300)}` : "job failed without an error message",
    jobId,
    provider: "runpod",
  });
}
