// app/api/maskpaint/jobs/route.ts: queue a job on the web API, answer its id at once
import { ModalClient, httpStatusFor, isMaskpaintError, type JobRequest } from "@maskpaint/client";

const maskpaint = new ModalClient({
  baseUrl: process.env.MASKPAINT_API_URL, // https://<workspace>--maskpaint-api.modal.run
  token: process.env.MASKPAINT_API_TOKEN, // stays on the server
});

export async function POST(req: Request) {
  const body = (await req.json().catch(() => null)) as Partial<JobRequest> | null;
  if (typeof body !== "object" || body === null || typeof body.image !== "string") {
    return Response.json({ error: { code: "invalid_input", message: "image: required", field: "image", retryable: false } }, { status: 400 });
  }
  // pass on only what the browser may choose (not output URLs' lifetime, not a webhook)
  const job: JobRequest = { image: body.image, mask: body.mask, prompt: body.prompt, targets: body.targets, task: body.task, seed: body.seed };
  try {
    // the browser's Idempotency-Key travels on: a retried submit is the same job
    const sub = await maskpaint.submit(job, { signal: req.signal, idempotencyKey: req.headers.get("idempotency-key") ?? undefined });
    return Response.json(sub, { status: 202 });
  } catch (err) {
    if (!isMaskpaintError(err)) throw err;
    return Response.json({ error: { code: err.code, message: err.message, field: err.field, retryable: err.retryable } }, { status: httpStatusFor(err) });
  }
}
