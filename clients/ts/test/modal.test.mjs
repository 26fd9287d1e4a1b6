import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { isMaskpaintError, MaskpaintError, ModalClient } from "../dist/index.js";
import { jobResult, json, mockFetch, recordingSleep, rejects, sequence } from "./helpers.mjs";

const BASE = "https://ws--maskpaint-web.modal.run";
const INPUT = { image: "https://example.com/a.jpg", prompt: "a red jacket" };

function modalFetch({ submit, status, health }) {
  return mockFetch((req) => {
    if (req.path === "/health") return health(req);
    if (req.path === "/jobs") return submit(req);
    return status(req);
  });
}

function client(fetch, extra = {}) {
  const { sleep, waits } = recordingSleep();
  return { c: new ModalClient({ baseUrl: `${BASE}/`, token: "tok", fetch, sleep, random: () => 0.5, ...extra }), waits };
}

describe("ModalClient", () => {
  test("queued -> running -> done: POST /jobs, poll GET /jobs/{id} with backoff, typed result", async () => {
    const { fetch, calls } = modalFetch({
      submit: sequence([202, { id: "fc-01", status: "queued" }]),
      status: sequence({ status: "running" }, { status: "running" }, { status: "running" }, { status: "done", output: jobResult("fc-01") }),
    });
    const { c, waits } = client(fetch);
    const updates = [];
    const r = await c.run(INPUT, { onProgress: (u) => updates.push(`${u.provider}:${u.jobId}:${u.status}`) });
    assert.equal(r.job_id, "fc-01");
    assert.equal(r.mask.content_type, "image/png");
    assert.deepEqual(updates, ["modal:fc-01:queued", "modal:fc-01:running"]);
    assert.deepEqual(waits, [500, 850, 1445, 2456]);
    assert.deepEqual(calls.map((q) => `${q.method} ${q.url}`), [
      `POST ${BASE}/jobs`,
      `GET ${BASE}/jobs/fc-01`,
      `GET ${BASE}/jobs/fc-01`,
      `GET ${BASE}/jobs/fc-01`,
      `GET ${BASE}/jobs/fc-01`,
    ]);
    assert.deepEqual(calls[0].body, INPUT); // the JobRequest is the body itself
    assert.ok(calls.every((q) => q.headers.authorization === "Bearer tok"));
  });

  test("failed -> MaskpaintError with the job's code, field and retryable", async () => {
    const { fetch } = modalFetch({
      submit: sequence([202, { id: "fc-02", status: "queued" }]),
      status: sequence({ status: "running" }, {
        status: "failed",
        error: { code: "gpu_oom", message: "CUDA out of memory; try a smaller image", field: null, retryable: true },
      }),
    });
    await rejects(client(fetch).c.run(INPUT), (e) => {
      assert.ok(isMaskpaintError(e));
      assert.equal(e.code, "gpu_oom");
      assert.equal(e.retryable, true);
      assert.equal(e.field, null);
      assert.equal(e.jobId, "fc-02");
      assert.equal(e.provider, "modal");
      assert.equal(e.httpStatus, undefined);
      assert.deepEqual(JSON.parse(JSON.stringify(e)).code, "gpu_oom");
    });
  });

  test("400/422 with an error body -> that code and field, with httpStatus", async () => {
    for (const status of [400, 422]) {
      const { fetch } = modalFetch({
        submit: sequence([status, { error: { code: "invalid_input", message: "prompt: required when task is 'inpaint'", field: "prompt", retryable: false } }]),
      });
      await rejects(client(fetch).c.run({ image: "x" }), (e) => {
        assert.equal(e.code, "invalid_input");
        assert.equal(e.field, "prompt");
        assert.equal(e.retryable, false);
        assert.equal(e.httpStatus, status);
      });
    }
  });

  test("unknown job id (404) -> not_found; 401 -> unauthorized", async () => {
    const a = modalFetch({ submit: sequence([202, { id: "gone", status: "queued" }]), status: sequence([404, { detail: "Not Found" }]) });
    await rejects(client(a.fetch).c.run(INPUT), (e) => {
      assert.equal(e.code, "not_found");
      assert.equal(e.httpStatus, 404);
      assert.equal(e.jobId, "gone");
    });
    const b = modalFetch({ submit: sequence([401, { error: "missing bearer token" }]) });
    await rejects(client(b.fetch).c.submit(INPUT), (e) => assert.equal(e.code, "unauthorized"));
  });

  test("410 expired -> expired, retryable as the server says; 503 while polling is ridden out", async () => {
    const a = modalFetch({ submit: sequence([202, { id: "old", status: "queued" }]), status: sequence([410, { status: "expired", error: { code: "expired", message: "result expired", field: null, retryable: true } }]) });
    await rejects(client(a.fetch).c.run(INPUT), (e) => {
      assert.equal(e.code, "expired");
      assert.equal(e.retryable, true);
      assert.equal(e.httpStatus, 410);
      assert.match(e.message, /expired/);
    });
    const b = modalFetch({
      submit: sequence([202, { id: "fc-04", status: "queued" }]),
      status: sequence([503, { error: { code: "unavailable", message: "try again", field: null, retryable: true } }], { status: "done", output: jobResult("fc-04") }),
    });
    assert.equal((await client(b.fetch).c.run(INPUT)).job_id, "fc-04");
    const c = modalFetch({ submit: sequence([503, { error: { code: "unavailable", message: "Modal could not take the call", field: null, retryable: true } }]) });
    await rejects(client(c.fetch).c.submit(INPUT), (e) => {
      assert.equal(e.code, "unavailable");
      assert.equal(e.retryable, true);
      assert.equal(e.httpStatus, 503);
    });
  });

  test("status() returns the raw reply; health() the body", async () => {
    const { fetch, calls } = modalFetch({
      status: sequence({ status: "running" }),
      health: sequence({ ok: true }),
    });
    const { c } = client(fetch);
    assert.deepEqual(await c.status("a/b"), { status: "running" });
    assert.equal(calls[0].url, `${BASE}/jobs/a%2Fb`);
    assert.deepEqual(await c.health(), { ok: true });
  });

  test("timeoutMs and AbortSignal apply to Modal polling too", async () => {
    const { fetch } = modalFetch({
      submit: sequence([202, { id: "fc-03", status: "queued" }]),
      status: sequence({ status: "running" }),
    });
    const c = new ModalClient({ baseUrl: BASE, fetch, poll: { initialDelayMs: 5, maxDelayMs: 10 } });
    await rejects(c.run(INPUT, { timeoutMs: 60 }), (e) => {
      assert.equal(e.code, "client_timeout");
      assert.equal(e.jobId, "fc-03");
    });
    const ctrl = new AbortController();
    setTimeout(() => ctrl.abort(), 30);
    await rejects(c.run(INPUT, { signal: ctrl.signal }), (e) => assert.equal(e.code, "aborted"));
  });
});

describe("ModalClient progress and webhook", () => {
  test("a running job's progress reaches onProgress (once per change)", async () => {
    const { fetch } = modalFetch({
      submit: sequence([202, { id: "fc-09", status: "queued" }]),
      status: sequence(
        { status: "running" },
        { status: "running", progress: { stage: "mask" } },
        { status: "running", progress: { stage: "inpaint", step: 1, steps: 2 } },
        { status: "running", progress: { stage: "inpaint", step: 1, steps: 2 } },
        { status: "done", output: jobResult("fc-09") },
      ),
    });
    const updates = [];
    await client(fetch).c.run(INPUT, { onProgress: (u) => updates.push([u.status, u.progress ?? null]) });
    assert.deepEqual(updates, [
      ["queued", null],
      ["running", null],
      ["running", { stage: "mask" }],
      ["running", { stage: "inpaint", step: 1, steps: 2 }],
    ]);
  });

  test("webhook: the input goes in the {input, webhook} envelope", async () => {
    const { fetch, calls } = modalFetch({
      submit: sequence([202, { id: "fc-10", status: "queued" }]),
      status: sequence({ status: "done", output: jobResult("fc-10") }),
    });
    await client(fetch).c.run(INPUT, { webhook: "https://hooks.example.com/maskpaint" });
    assert.deepEqual(calls[0].body, { input: INPUT, webhook: "https://hooks.example.com/maskpaint" });
  });
});
