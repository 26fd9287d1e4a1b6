// Drives the built client's ModalClient (dist/) against the local web API
// (`python -m handlers.serve`, the same app as on Modal). Run by tests/test_ts_client.py, which
// starts the server and checks the JSON this prints on its last line.
//
//   MASKPAINT_WEB_URL=http://127.0.0.1:PORT MASKPAINT_API_TOKEN=... MASKPAINT_WEBHOOK_SECRET=... \
//   MASKPAINT_JOB_FILE=job.json node test/integration/local-web.mjs
//
// job.json: {"image": "<data URL>", "mask": "<data URL>"}. A webhook receiver (node:http on the
// loopback) checks each delivery with verifyWebhook.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

import { isMaskpaintError, ModalClient, verifyWebhook, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER } from "../../dist/index.js";

const baseUrl = process.env.MASKPAINT_WEB_URL;
const token = process.env.MASKPAINT_API_TOKEN;
const secret = process.env.MASKPAINT_WEBHOOK_SECRET;
const { image, mask } = JSON.parse(readFileSync(process.env.MASKPAINT_JOB_FILE, "utf8"));
if (!baseUrl || !token || !secret || !image) throw new Error("MASKPAINT_WEB_URL, MASKPAINT_API_TOKEN, MASKPAINT_WEBHOOK_SECRET and MASKPAINT_JOB_FILE are required");

const deliveries = [];
let delivered;
const arrived = new Promise((resolve) => { delivered = resolve; });
const receiver = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const raw = Buffer.concat(chunks);
    const sig = req.headers[WEBHOOK_SIGNATURE_HEADER.toLowerCase()];
    const stamp = req.headers[WEBHOOK_TIMESTAMP_HEADER.toLowerCase()];
    const ok = await verifyWebhook(new Uint8Array(raw), sig, secret, stamp);
    const forged = await verifyWebhook(new Uint8Array(raw), sig, "not-the-secret", stamp);
    deliveries.push({ verified: ok, forgedVerified: forged, body: JSON.parse(raw.toString("utf8")) });
    res.writeHead(204).end();
    delivered();
  });
});
await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
const hook = `http://127.0.0.1:${receiver.address().port}/hook`;

const client = new ModalClient({ baseUrl, token, timeoutMs: 120_000, poll: { initialDelayMs: 50, maxDelayMs: 200 } });
const job = { image, mask, task: "inpaint", prompt: "a red leather jacket", num_inference_steps: 8, seed: 1234, output: { format: "png" } };

async function fetched(artifact) {
  const res = await fetch(artifact.url);
  const body = new Uint8Array(await res.arrayBuffer());
  const digest = Buffer.from(await crypto.subtle.digest("SHA-256", body)).toString("hex");
  return { status: res.status, contentType: res.headers.get("content-type"), bytes: body.length, sha256: digest };
}

const out = { health: await client.health() };
const progress = [];
const result = await client.run(job, { webhook: hook, onProgress: (u) => progress.push({ status: u.status, progress: u.progress ?? null }) });
out.run = { result, progress, image: await fetched(result.image), mask: await fetched(result.mask) };
await Promise.race([arrived, new Promise((r) => setTimeout(r, 30_000))]);
out.deliveries = deliveries;

try {
  await client.run({ ...job, mask: undefined, image: "data:image/png;base64,bm90IGFuIGltYWdl" });
  out.badImage = { thrown: false };
} catch (e) {
  out.badImage = { thrown: true, isMaskpaintError: isMaskpaintError(e), code: e.code, field: e.field };
}
try {
  await new ModalClient({ baseUrl, token: "wrong-token-0123456789" }).submit(job);
  out.badToken = { thrown: false };
} catch (e) {
  out.badToken = { thrown: true, code: e.code, status: e.httpStatus };
}
receiver.close();
console.log(JSON.stringify(out));
