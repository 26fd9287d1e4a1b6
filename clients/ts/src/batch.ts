// runMany: many jobs through one client (RunpodClient or ModalClient), bounded concurrency,
// retries of what a retry can fix, results in input order, cancellation by AbortSignal.
import { isMaskpaintError, MaskpaintError } from "./errors.js";
import { abortableSleep, backoffDelay } from "./http.js";
import type { PollOptions } from "./http.js";
import type { ProgressUpdate } from "./progress.js";
import type { JobRequest, JobResult } from "./types.generated.js";

/** What runMany needs of a client: `run(input, {signal, onProgress})` (both clients have it). */
export interface RunManyClient {
  run(input: JobRequest, opts?: { signal?: AbortSignal; onProgress?: (u: ProgressUpdate) => void }): Promise<JobResult>;
}

/** One job's outcome, at its input's index. `key` is the `idempotency_key` it was sent with. */
export type RunManyResult =
  | { index: number; key: string; status: "done"; output: JobResult; attempts: number }
  | { index: number; key: string; status: "failed"; error: MaskpaintError; attempts: number }
  | { index: number; key: string; status: "cancelled"; error?: MaskpaintError; attempts: number };

/** Counters after each change (a job started, ended, or is being retried). */
export interface RunManyProgress {
  total: number;
  done: number;
  failed: number;
  cancelled: number;
  inFlight: number;
  /** The job this update is about and, when it ended, its result. */
  index: number;
  result?: RunManyResult;
  /** The job's own progress (queued / pending / stage), passed through from the client. */
  job?: ProgressUpdate;
}

export interface RunManyOptions {
  /** Jobs in flight at once. Default 4. */
  concurrency?: number;
  /** Stops starting jobs and aborts the running ones; runMany then resolves (not rejects). */
  signal?: AbortSignal;
  /** Submits per job when its error is retryable (`error.retryable`). Default 3. */
  maxAttempts?: number;
  /** Backoff before a resubmit. Default: 1 s doubling to 30 s, +/-50 % jitter. */
  retry?: PollOptions;
  onProgress?: (p: RunManyProgress) => void;
  /** Random source for the jitter (tests). */
  random?: () => number;
  /** Sleep between attempts (tests); must reject when the signal aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const RETRY: Required<PollOptions> = { initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2, jitter: 0.5, maxConsecutiveErrors: 0 };

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * A stable `idempotency_key` for a job input: `j` + 20 hex digits of SHA-256 over its JSON with
 * sorted keys (Web Crypto: Node, browsers, Workers). The same input gets the same key in every
 * run, so a job resubmitted after an interruption is answered from the worker's record.
 */
export async function idempotencyKey(input: JobRequest): Promise<string> {
  const { idempotency_key: _ignored, ...rest } = input;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical(rest)));
  return `j${Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("").slice(0, 20)}`;
}

/**
 * Run `jobs` through `client` with at most `concurrency` in flight; resolves with one result per
 * job, in input order (never rejects for a job's failure: each failure is a typed MaskpaintError
 * at its index). A job without `idempotency_key` gets {@link idempotencyKey}. A failure with
 * `retryable: true` (network, 429, 5xx, `gpu_oom`, `timeout`...) is submitted again after a
 * jittered exponential backoff, up to `maxAttempts`; others are final at once. When `signal`
 * aborts, no job starts any more, running ones are aborted, and every job not finished is
 * `cancelled`.
 */
export async function runMany(client: RunManyClient, jobs: readonly JobRequest[], opts: RunManyOptions = {}): Promise<RunManyResult[]> {
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 4));
  const maxAttempts = Math.max(1, Math.floor(opts.maxAttempts ?? 3));
  const retry = { ...RETRY, ...(opts.retry ?? {}) };
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? abortableSleep;
  const ctrl = new AbortController();
  const onAbort = () => ctrl.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener("abort", onAbort, { once: true });

  const keys = await Promise.all(jobs.map(async (j) => j.idempotency_key ?? idempotencyKey(j)));
  const results: RunManyResult[] = new Array(jobs.length);
  const counts = { total: jobs.length, done: 0, failed: 0, cancelled: 0, inFlight: 0 };
  const report = (index: number, result?: RunManyResult, job?: ProgressUpdate) => {
    opts.onProgress?.({ ...counts, index, ...(result ? { result } : {}), ...(job ? { job } : {}) });
  };
  const finish = (r: RunManyResult) => {
    results[r.index] = r;
    counts[r.status === "done" ? "done" : r.status === "failed" ? "failed" : "cancelled"]++;
    report(r.index, r);
  };

  const runOne = async (index: number): Promise<void> => {
    const key = keys[index]!;
    const input: JobRequest = { ...jobs[index]!, idempotency_key: key };
    counts.inFlight++;
    report(index);
    let attempts = 0;
    let result: RunManyResult | undefined;
    try {
      while (!result) {
        attempts++;
        try {
          const output = await client.run(input, { signal: ctrl.signal, onProgress: (u) => report(index, undefined, u) });
          result = { index, key, status: "done", output, attempts };
        } catch (err) {
          const error = isMaskpaintError(err)
            ? err
            : new MaskpaintError({ code: "internal", message: err instanceof Error ? err.message : String(err), cause: err });
          if (ctrl.signal.aborted) {
            result = { index, key, status: "cancelled", error, attempts };
          } else if (!error.retryable || attempts >= maxAttempts) {
            result = { index, key, status: "failed", error, attempts };
          } else {
            try {
              await sleep(backoffDelay(attempts - 1, retry, random), ctrl.signal);
            } catch {
              result = { index, key, status: "cancelled", error, attempts };
            }
          }
        }
      }
    } finally {
      counts.inFlight--;
    }
    finish(result);
  };

  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < jobs.length && !ctrl.signal.aborted) await runOne(next++);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, lane));
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
  }
  for (let i = 0; i < jobs.length; i++) {
    if (!results[i]) finish({ index: i, key: keys[i]!, status: "cancelled", attempts: 0 });
  }
  return results;
}
