import { RunpodClient, httpStatusFor, isMaskpaintError, type JobRequest } from "@maskpaint/client";

const maskpaint = new RunpodClient({
  endpointId: process.env.RUNPOD_ENDPOINT_ID,
  apiKey: process.env.RUNPOD_API_KEY,
  baseUrl: process.env.RUNPOD_BASE_URL,
});

export async function POST(req: Request) {
  const body = (await req.json().catch(() => null)) as Partial<JobRequest> | null;
  if (typeof body !== "object" || body === null) {
    return Response.json({ code: "invalid_input", message: "the body must be a JSON object" }, { status: 400 });
  }
  try {
    const result = await maskpaint.run({ image: body.image!, prompt: body.prompt }, { signal: req.signal, timeoutMs: 120_000 });
    return Response.json({ url: result.image?.url, seed: result.seed });
  } catch (err) {
    if (!isMaskpaintError(err)) throw err;
    return Response.json({ code: err.code, message: err.message, field: err.field }, { status: httpStatusFor(err) });
  }
}
