// Drives runMany (dist/) with a ModalClient against the local web API (`python -m handlers.serve`).
// Run by tests/test_ts_batch.py, which starts the server and checks the JSON printed last.
//
//   MASKPAINT_WEB_URL=http://127.0.0.1:PORT MASKPAINT_API_TOKEN=... MASKPAINT_JOB_FILE=job.json \
//   node test/integration/local-batch.mjs
//
// job.json: {"image": "<data URL>", "mask": "<data URL>"}.
import { readFileSync } from "node:fs";

import { ModalClient, runMany } from "../../dist/index.js";

const baseUrl = process.env.MASKPAINT_WEB_URL;
const token = process.env.MASKPAINT_API_TOKEN;
const { image, mask } = JSON.parse(readFileSync(process.env.MASKPAINT_JOB_FILE, "utf8"));
if (!baseUrl || !token || !image) throw new Error("MASKPAINT_WEB_URL, MASKPAINT_API_TOKEN and MASKPAINT_JOB_FILE are required");

const client = new ModalClient({ baseUrl, token, timeoutMs: 120_000, poll: { initialDelayMs: 50, maxDelayMs: 200 } });
const job = (seed) => ({ image, mask, prompt: "a red jacket", num_inference_steps: 1, seed, protect_face: false, output: { format: "jpeg" } });
const brief = (r) => ({
  index: r.index,
  key: r.key,
  status: r.status,
  attempts: r.attempts,
  jobId: r.output?.job_id ?? null,
  imageKey: r.output?.image?.key ?? null,
  code: r.error?.code ?? null,
  field: r.error?.field ?? null,
});

const jobs = [job(1), job(2), { ...job(3), image: "data:image/png;base64,bm90IGFuIGltYWdl" }, job(4), job(5)];
const out = {};
const progress = [];
out.first = (await runMany(client, jobs, { concurrency: 2, onProgress: (p) => progress.push({ done: p.done, failed: p.failed, inFlight: p.inFlight }) })).map(brief);
out.maxInFlight = Math.max(...progress.map((p) => p.inFlight));
out.last = progress.at(-1);
out.again = (await runMany(client, jobs, { concurrency: 2 })).map(brief);

// cancellation: abort once the first job is done; nothing new starts, the rest is cancelled
const ctrl = new AbortController();
const many = Array.from({ length: 8 }, (_, i) => job(100 + i));
out.aborted = (await runMany(client, many, {
  concurrency: 2,
  signal: ctrl.signal,
  onProgress: (p) => { if (p.done >= 1) ctrl.abort(); },
})).map(brief);
console.log(JSON.stringify(out));
