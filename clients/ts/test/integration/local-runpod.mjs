// Drives the built client (dist/) against the runpod SDK's local API server
// (`python runpod_handler.py --rp_serve_api`). Run by tests/test_ts_client.py, which starts the
// server (and a moto S3) and checks the JSON this prints on its last line.
//
//   MASKPAINT_RUNPOD_URL=http://127.0.0.1:PORT MASKPAINT_JOB_FILE=job.json node test/integration/local-runpod.mjs
//
// job.json: {"image": "<data URL>", "mask": "<data URL>"}.
import { readFileSync } from "node:fs";

import { isMaskpaintError, RunpodClient } from "../../dist/index.js";

const baseUrl = process.env.MASKPAINT_RUNPOD_URL;
const { image, mask } = JSON.parse(readFileSync(process.env.MASKPAINT_JOB_FILE, "utf8"));
if (!baseUrl || !image) throw new Error("MASKPAINT_RUNPOD_URL and MASKPAINT_JOB_FILE are required");

const client = new RunpodClient({ baseUrl, timeoutMs: 120_000, poll: { initialDelayMs: 100, maxDelayMs: 1000 } });
const job = {
  image,
  mask,
  task: "inpaint",
  prompt: "a red leather jacket",
  num_inference_steps: 2,
  seed: 1234,
  output: { format: "png" },
};

async function fetched(artifact) {
  const res = await fetch(artifact.url);
  const body = new Uint8Array(await res.arrayBuffer());
  const digest = Buffer.from(await crypto.subtle.digest("SHA-256", body)).toString("hex");
  return { status: res.status, contentType: res.headers.get("content-type"), bytes: body.length, sha256: digest };
}

async function ok(label, fn) {
  const t0 = performance.now();
  const progress = [];
  const result = await fn((u) => progress.push({ status: u.status, stage: u.progress?.stage ?? null }));
  return {
    label,
    ms: Math.round(performance.now() - t0),
    progress,
    result,
    image: await fetched(result.image),
    mask: await fetched(result.mask),
  };
}

async function failure(label, fn) {
  const t0 = performance.now();
  try {
    const r = await fn();
    return { label, unexpectedResult: r };
  } catch (err) {
    return {
      label,
      ms: Math.round(performance.now() - t0),
      isMaskpaintError: isMaskpaintError(err),
      name: err?.name,
      code: err?.code,
      message: err?.message,
      field: err?.field,
      retryable: err?.retryable,
      httpStatus: err?.httpStatus ?? null,
      jobId: err?.jobId ?? null,
    };
  }
}

const out = {};
out.runsync = await ok("runsync", (onProgress) => client.runsync(job, { onProgress }));
out.run = await ok("run", (onProgress) => client.run(job, { onProgress }));
out.badRunsync = await failure("bad runsync", () => client.runsync({ image }));
out.badRun = await failure("bad run", () => client.run({ image }));
out.notAnObject = await failure("input not an object", () => client.runsync("not a job"));
console.log(JSON.stringify(out));
