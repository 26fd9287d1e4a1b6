import { RunpodClient, httpStatusFor, isMaskpaintError, type JobRequest } from "@maskpaint/client";

interface Env { RUNPOD_ENDPOINT_ID?: string; RUNPOD_API_KEY?: string; RUNPOD_BASE_URL?: string }

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const client = new RunpodClient({ endpointId: env.RUNPOD_ENDPOINT_ID, apiKey: env.RUNPOD_API_KEY, baseUrl: env.RUNPOD_BASE_URL });
    const id = new URL(request.url).pathname.match(/^\/edit\/([\w-]+)$/)?.[1];
    try {
      if (request.method === "POST") {
        const input = (await request.json().catch(() => null)) as JobRequest | null;
        if (typeof input !== "object" || input === null) {
          return Response.json({ status: "failed", code: "invalid_input", message: "the body must be a JSON object" }, { status: 400 });
        }
        const { id: jobId } = await client.submit(input, { signal: request.signal });
        return Response.json({ id: jobId }, { status: 202 });
      }
      if (!id) return new Response("not found", { status: 404 });
      const result = await client.wait(id, { signal: request.signal, timeoutMs: 20_000 });
      return Response.json({ status: "done", image: result.image?.url, mask: result.mask.url });
    } catch (err) {
      if (!isMaskpaintError(err)) throw err;
      if (err.code === "client_timeout") return Response.json({ status: "pending" }, { status: 202 });
      return Response.json({ status: "failed", code: err.code, message: err.message, field: err.field, retryable: err.retryable }, { status: httpStatusFor(err) });
    }
  },
};
