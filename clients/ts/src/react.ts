"use client";
// @maskpaint/client/react: a React hook that runs one job through your app's own routes and
// relays its state and progress to the component (docs/typescript.md, "Next.js: submit, poll").
//
// The browser never holds the API token: it talks to two routes of your app (a submit route
// and a poll route), which call the web API with the token kept on the server. Those routes
// answer the web API's own shapes, so the hook is a ModalClient pointed at them: the same
// backoff, Idempotency-Key, typed errors and progress as on the server.
import { useCallback, useEffect, useRef, useState } from "react";

import type { MaskpaintErrorCode } from "./errors.js";
import { isMaskpaintError } from "./errors.js";
import type { FetchLike, PollOptions } from "./http.js";
import { ModalClient } from "./modal.js";
import type { JobProgress, JobRequest, JobResult } from "./types.generated.js";

/** Where a job stands, as the component renders it. */
export type MaskpaintJobStatus = "idle" | "submitting" | "queued" | "running" | "done" | "failed" | "cancelled";

export interface MaskpaintJobState {
  status: MaskpaintJobStatus;
  /** The job id once submitted. */
  jobId?: string;
  /** Place in the queue (0 = next) while `queued`, where the server knows it. */
  position?: number;
  /** The worker's latest progress while `running` (`{stage, step?, steps?}`). */
  progress?: JobProgress;
  /** `done`: the JobResult (its URLs are presigned; poll the job again for fresh ones). */
  result?: JobResult;
  /** `failed`: the contract's error (`code`, `message`, `field`, `retryable`). */
  error?: { code: MaskpaintErrorCode; message: string; field: string | null; retryable: boolean };
}

export interface UseMaskpaintJobOptions {
  /**
   * Your routes' base: `POST {baseUrl}/jobs` submits, `GET {baseUrl}/jobs/{id}` polls,
   * `DELETE {baseUrl}/jobs/{id}` cancels. Default `/api/maskpaint`.
   */
  baseUrl?: string;
  /** Backoff between polls (default: first 500 ms, x1.7, at most 8 s). */
  poll?: PollOptions;
  /** Overall limit of one job, ms (default 15 min). */
  timeoutMs?: number;
  /** Extra headers on every request (e.g. your app's CSRF header). */
  headers?: Record<string, string>;
  /** `fetch` to use (tests). */
  fetch?: FetchLike;
}

export interface UseMaskpaintJob extends MaskpaintJobState {
  /** Submit a job and follow it; resolves once it is done, failed or cancelled (never rejects). */
  submit: (input: JobRequest) => Promise<MaskpaintJobState>;
  /** Cancel the job on the server (DELETE) and stop following it. */
  cancel: () => Promise<void>;
  /** Back to `idle` (stops following a running job; the job itself goes on). */
  reset: () => void;
}

/**
 * Run jobs through your app's submit and poll routes, with their state in React state.
 *
 * ```tsx
 * const job = useMaskpaintJob();
 * <button onClick={() => job.submit({ image, prompt })} disabled={job.status === "running"}>Repaint</button>
 * {job.status === "running" && job.progress?.steps && <progress max={job.progress.steps + 1} value={job.progress.step} />}
 * {job.result?.image && <img src={job.result.image.url} />}
 * ```
 *
 * Leaving the page (unmount) stops polling; the job goes on on the server. The options are
 * read once, at the first render.
 */
export function useMaskpaintJob(options: UseMaskpaintJobOptions = {}): UseMaskpaintJob {
  const [state, setState] = useState<MaskpaintJobState>({ status: "idle" });
  const current = useRef<{ ctrl: AbortController; jobId?: string } | null>(null);
  const client = useRef<ModalClient | null>(null);
  if (client.current === null) {
    client.current = new ModalClient({
      baseUrl: options.baseUrl ?? "/api/maskpaint",
      poll: options.poll,
      timeoutMs: options.timeoutMs,
      headers: options.headers,
      fetch: options.fetch,
    });
  }

  useEffect(() => () => current.current?.ctrl.abort(), []);

  const submit = useCallback(async (input: JobRequest): Promise<MaskpaintJobState> => {
    current.current?.ctrl.abort();
    const run: { ctrl: AbortController; jobId?: string } = { ctrl: new AbortController() };
    current.current = run;
    const set = (s: MaskpaintJobState): MaskpaintJobState => {
      if (current.current === run) setState(s);
      return s;
    };
    set({ status: "submitting" });
    const c = client.current!;
    try {
      const sub = await c.submit(input, { signal: run.ctrl.signal });
      run.jobId = sub.id;
      set(stateOf(sub.id, sub.status, sub.position ?? undefined));
      const result = await c.wait(sub.id, {
        signal: run.ctrl.signal,
        onProgress: (u) => set(stateOf(u.jobId, u.status, u.position, u.progress)),
      });
      return set({ status: "done", jobId: sub.id, result });
    } catch (err) {
      if (isMaskpaintError(err) && (err.code === "cancelled" || (err.code === "aborted" && run.ctrl.signal.reason === CANCELLED))) {
        return set({ status: "cancelled", jobId: run.jobId });
      }
      if (isMaskpaintError(err) && err.code === "aborted") return { status: "idle" }; // unmounted or replaced
      const e = isMaskpaintError(err)
        ? { code: err.code, message: err.message, field: err.field, retryable: err.retryable }
        : { code: "internal" as const, message: String((err as Error)?.message ?? err), field: null, retryable: false };
      return set({ status: "failed", jobId: run.jobId, error: e });
    }
  }, []);

  const cancel = useCallback(async () => {
    const run = current.current;
    if (!run) return;
    if (run.jobId) await client.current!.cancel(run.jobId).catch(() => undefined);
    run.ctrl.abort(CANCELLED);
  }, []);

  const reset = useCallback(() => {
    current.current?.ctrl.abort();
    current.current = null;
    setState({ status: "idle" });
  }, []);

  return { ...state, submit, cancel, reset };
}

const CANCELLED = new Error("cancelled by the user");

function stateOf(jobId: string, status: string, position?: number, progress?: JobProgress): MaskpaintJobState {
  const s: MaskpaintJobState = { status: status === "queued" ? "queued" : "running", jobId };
  if (position !== undefined && s.status === "queued") s.position = position;
  if (progress) s.progress = progress;
  return s;
}
