// A Cloudflare Worker receiving the web API's webhooks (the same code runs in a Next.js route).
import { verifyWebhook, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER } from "@maskpaint/client";
import type { JobErrorBody, JobResult } from "@maskpaint/client";

type JobEvent = { id: string } & ({ status: "done"; output: JobResult } | { status: "failed"; error: JobErrorBody } | { status: "cancelled" });

export default {
  async fetch(request: Request, env: { MASKPAINT_WEBHOOK_SECRET: string }): Promise<Response> {
    const raw = await request.text(); // the raw body, before JSON.parse
    const signature = request.headers.get(WEBHOOK_SIGNATURE_HEADER);
    const timestamp = request.headers.get(WEBHOOK_TIMESTAMP_HEADER); // signed too: no replays after 5 min
    if (!(await verifyWebhook(raw, signature, env.MASKPAINT_WEBHOOK_SECRET, timestamp))) {
      return new Response("bad signature", { status: 401 });
    }
    const event = JSON.parse(raw) as JobEvent; // deliveries may repeat: dedupe on event.id
    console.log(event.id, event.status === "done" ? event.output.image?.url : event.status === "failed" ? event.error.code : "cancelled");
    return new Response(null, { status: 204 });
  },
};
