// app/api/edit/route.ts (Next.js App Router route handler, Node or Edge runtime)
import { RunpodClient, isMaskpaintError } from "@maskpaint/client";

const maskpaint = new RunpodClient({ endpointId: process.env.RUNPOD_ENDPOINT_ID!, apiKey: process.env.RUNPOD_API_KEY! });

export async function POST(req: Request) {
  const { image, prompt } = await req.json();
  try {
    const result = await maskpaint.run({ image, prompt }, { signal: req.signal, timeoutMs: 120_000 });
    return Response.json({ url: result.image?.url, seed: result.seed });
  } catch (err) {
    if (!isMaskpaintError(err)) throw err;
    return Response.json({ code: err.code, message: err.message, field: err.field }, { status: err.code === "invalid_input" ? 400 : err.retryable ? 503 : 502 });
  }
}
