import { MaskpaintError } from "./errors.js";
import type { Provider } from "./errors.js";
import { isObject } from "./http.js";
import type { JobProgress, JobResult } from "./types.generated.js";

/** What `onProgress` receives: a change of the job's status and/or its progress payload. */
export interface ProgressUpdate {
  provider: Provider;
  jobId: string;
  /**
   * The provider's word: RunPod `IN_QUEUE` / `IN_PROGRESS`; web API (Modal, local) `queued`
   * (waiting for a worker) / `running` (older servers: `pending` for both).
   */
  status: string;
  /**
   * Place in the queue of a `queued` job (0 = next), where the dispatcher knows it (the web
   * API's `position`); absent otherwise.
   */
  position?: number;
  /**
   * The worker's latest progress, e.g. `{stage: "inpaint", step: 3, steps: 30}`: RunPod's
   * `IN_PROGRESS` output, or the web API's `progress` of a pending job (Modal and local).
   */
  progress?: JobProgress;
}

export interface ProgressOptions {
  /**
   * Called whenever the status, queue position or progress payload changes (not on every
   * poll). If it throws, the call rejects with MaskpaintError `callback_error` (its `cause` is
   * what was thrown, its `jobId` lets you resume with `wait`); the job itself goes on.
   */
  onProgress?: (update: ProgressUpdate) => void;
}

export class ProgressTracker {
  private last = "";

  constructor(
    private readonly provider: Provider,
    private readonly cb: ((u: ProgressUpdate) => void) | undefined,
  ) {}

  /** @throws MaskpaintError `callback_error` when the callback throws */
  report(jobId: string, status: string, output?: unknown, position?: unknown): void {
    if (!this.cb) return;
    const progress = isObject(output) && typeof output.stage === "string" ? (output as JobProgress) : undefined;
    const pos = typeof position === "number" && Number.isInteger(position) && position >= 0 ? position : undefined;
    const key = `${status}\u0000${pos ?? ""}\u0000${progress ? JSON.stringify(progress) : ""}`;
    if (key === this.last) return;
    this.last = key;
    const update: ProgressUpdate = { provider: this.provider, jobId, status };
    if (pos !== undefined) update.position = pos;
    if (progress) update.progress = progress;
    try {
      this.cb(update);
    } catch (err) {
      throw new MaskpaintError({
        code: "callback_error",
        message: `onProgress threw: ${err instanceof Error ? err.message : String(err)} (the job goes on: wait(jobId) resumes)`,
        retryable: false,
        jobId,
        provider: this.provider,
        cause: err,
      });
    }
  }
}

/** A light shape check of a JobResult (no schema validator at run time). */
export function checkResult(output: unknown, provider: Provider, jobId: string | undefined): JobResult {
  if (
    isObject(output) &&
    typeof output.job_id === "string" &&
    isObject(output.mask) &&
    typeof output.mask.url === "string" &&
    isObject(output.mask_info)
  ) {
    return output as unknown as JobResult;
  }
  throw new MaskpaintError({
    code: "bad_response",
    message: "the job finished without a JobResult (is the endpoint a maskpaint worker?)",
    jobId,
    provider,
  });
}
