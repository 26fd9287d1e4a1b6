import { MaskpaintError } from "./errors.js";
import type { Provider } from "./errors.js";
import { isObject } from "./http.js";
import type { JobProgress, JobResult } from "./types.generated.js";

/** What `onProgress` receives: a change of the job's status and/or its progress payload. */
export interface ProgressUpdate {
  provider: Provider;
  jobId: string;
  /** The provider's word: RunPod `IN_QUEUE` / `IN_PROGRESS`; web API (Modal, local) `queued` / `pending`. */
  status: string;
  /**
   * The worker's latest progress, e.g. `{stage: "inpaint", step: 3, steps: 30}`: RunPod's
   * `IN_PROGRESS` output, or the web API's `progress` of a pending job (Modal and local).
   */
  progress?: JobProgress;
}

export interface ProgressOptions {
  /** Called whenever the status or the progress payload changes (not on every poll). */
  onProgress?: (update: ProgressUpdate) => void;
}

export class ProgressTracker {
  private last = "";

  constructor(
    private readonly provider: Provider,
    private readonly cb: ((u: ProgressUpdate) => void) | undefined,
  ) {}

  report(jobId: string, status: string, output?: unknown): void {
    if (!this.cb) return;
    const progress = isObject(output) && typeof output.stage === "string" ? (output as JobProgress) : undefined;
    const key = `${status}\u0000${progress ? JSON.stringify(progress) : ""}`;
    if (key === this.last) return;
    this.last = key;
    this.cb(progress ? { provider: this.provider, jobId, status, progress } : { provider: this.provider, jobId, status });
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
