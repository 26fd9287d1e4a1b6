import { ModalClient, runMany } from "@maskpaint/client";
import type { JobRequest } from "@maskpaint/client";

/** One outfit over a catalogue of photo URLs; the edited photos' URLs, in input order. */
export async function catalogue(photoUrls: string[], signal?: AbortSignal): Promise<(string | null)[]> {
  const client = new ModalClient({ baseUrl: process.env.MASKPAINT_WEB_URL, token: process.env.MASKPAINT_API_TOKEN });
  const jobs: JobRequest[] = photoUrls.map((image) => ({ image, prompt: "a navy wool coat", targets: ["upper"] }));
  const results = await runMany(client, jobs, {
    concurrency: 4,
    signal,
    onProgress: (p) => console.log(`${p.done} done, ${p.failed} failed, ${p.inFlight} running`),
  });
  return results.map((r) => {
    if (r.status === "done") return r.output.image?.url ?? null;
    if (r.status === "failed") console.warn(r.index, r.error.code, r.error.field, r.error.retryable);
    return null; // failed, or cancelled by the signal
  });
}
