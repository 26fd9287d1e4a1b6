// src/index.ts (Cloudflare Worker): POST /edit queues a job, GET /edit/:id polls it once.
import { ModalClient, isMaskpaintError, type JobRequest } from "@maskpaint/client";

interface Env { MASKPAINT_MODAL_URL: string; MASKPAINT_TOKEN: string }

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const client = new ModalClient({ baseUrl: env.MASKPAINT_MODAL_URL, token: env.MASKPAINT_TOKEN });
    const id = new URL(request.url).pathname.match(/^\/edit\/([\w-]+)$/)?.[1];
    try {
      if (request.method === "POST") {
        const { id: jobId } = await client.submit((await request.json()) as JobRequest, { signal: request.signal });
        return Response.json({ id: jobId }, { status: 202 });
      }
      if (!id) return new Response("not found", { status: 404 });
      // wait() with a short timeout: the result if it is ready within 20 s, else "pending".
      const result = await client.wait(id, { signal: request.signal, timeoutMs: 20_000 });
      return Response.json({ status: "done", image: result.image?.url, mask: result.mask.url });
    } catch (err) {
      if (!isMaskpaintError(err)) throw err;
      if (err.code === "client_timeout") return Response.json({ status: "pending" });
      return Response.json({ status: "failed", code: err.code, message: err.message, field: err.field, retryable: err.retryable }, { status: err.code === "invalid_input" ? 400 : 502 });
    }
  },
};
