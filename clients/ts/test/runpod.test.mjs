import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { backoffDelay, DEFAULT_POLL, MaskpaintError, RunpodClient } from "../dist/index.js";
import { jobResult, json, mockFetch, recordingSleep, rejects, sequence } from "./helpers.mjs";

const INPUT = { image: "https://example.com/a.jpg", prompt: "a red jacket", num_inference_steps: 2 };

/** Dispatch on the route: submit (/run, /runsync), status (/status/{id}) or cancel. */
function runpodFetch({ submit, status, cancel }) {
  return mockFetch((req) => {
    if (/\/status\//.test(req.path)) return status(req);
    if (/\/cancel\//.test(req.path)) return cancel(req);
    return submit(req);
  });
}

function client(fetch, extra = {}) {
  const { sleep, waits } = recordingSleep();
  const c = new RunpodClient({ endpointId: "ep123", apiKey: "rp-key", fetch, sleep, random: () => 0.5, ...extra });
  return { c, waits };
}

describe("RunpodClient.run: /run then /status polling", () => {
  test("backs off exponentially, reports progress once per change, returns the typed result", async () => {
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "job-1", status: "IN_QUEUE" }),
      status: sequence(
        { id: "job-1", status: "IN_QUEUE" },
        { id: "job-1", status: "IN_PROGRESS", output: { stage: "fetch" } },
        { id: "job-1", status: "IN_PROGRESS", output: { stage: "inpaint", step: 1, steps: 2 } },
        { id: "job-1", status: "IN_PROGRESS", output: { stage: "inpaint", step: 1, steps: 2 } },
        { id: "job-1", status: "IN_PROGRESS", output: { stage: "inpaint", step: 2, steps: 2 } },
        { id: "job-1", status: "IN_PROGRESS", output: { stage: "upload" } },
        { id: "job-1", status: "COMPLETED", output: jobResult("job-1"), executionTime: 900 },
      ),
    });
    const { c, waits } = client(fetch, { poll: { initialDelayMs: 200, multiplier: 2, maxDelayMs: 1000 } });
    const updates = [];
    const result = await c.run(INPUT, { onProgress: (u) => updates.push(u) });

    assert.equal(result.job_id, "job-1");
    assert.equal(result.image.content_type, "image/png");
    // 7 polls: 200, 400, 800, then capped at 1000.
    assert.deepEqual(waits, [200, 400, 800, 1000, 1000, 1000, 1000]);
    assert.deepEqual(
      updates.map((u) => [u.status, u.progress?.stage ?? null, u.progress?.step ?? null]),
      [
        ["IN_QUEUE", null, null],
        ["IN_PROGRESS", "fetch", null],
        ["IN_PROGRESS", "inpaint", 1],
        ["IN_PROGRESS", "inpaint", 2],
        ["IN_PROGRESS", "upload", null],
      ],
    );
    assert.ok(updates.every((u) => u.provider === "runpod" && u.jobId === "job-1"));
    assert.equal(calls[0].method, "POST");
    assert.equal(calls[0].url, "https://api.runpod.ai/v2/ep123/run");
    assert.deepEqual(calls[0].body, { input: INPUT });
    assert.equal(calls[0].headers.authorization, "Bearer rp-key");
    assert.equal(calls[0].headers["content-type"], "application/json");
    assert.equal(calls[1].method, "GET");
    assert.equal(calls[1].url, "https://api.runpod.ai/v2/ep123/status/job-1");
    assert.equal(calls.length, 8);
  });

  test("jitter spreads each wait within +/-jitter and never exceeds maxDelayMs", () => {
    const poll = { ...DEFAULT_POLL, initialDelayMs: 1000, multiplier: 2, maxDelayMs: 5000, jitter: 0.25 };
    assert.equal(backoffDelay(0, poll, () => 0), 750);
    assert.equal(backoffDelay(0, poll, () => 0.5), 1000);
    assert.equal(backoffDelay(0, poll, () => 0.999999), 1250);
    assert.equal(backoffDelay(2, poll, () => 0.999999), 5000); // 4000 * 1.25 capped
    assert.equal(backoffDelay(10, poll, () => 0), 3750); // cap first, then jitter down
    for (let a = 0; a < 20; a++) {
      for (const r of [0, 0.3, 0.7, 0.99]) {
        const d = backoffDelay(a, poll, () => r);
        assert.ok(d >= 0 && d <= 5000, `attempt ${a}: ${d}`);
      }
    }
  });

  test("baseUrl replaces the hosted API (local server), no API key needed", async () => {
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "test-1", status: "IN_PROGRESS" }),
      status: sequence({ id: "test-1", status: "COMPLETED", output: jobResult("test-1") }),
    });
    const { c } = client(fetch, { endpointId: undefined, apiKey: undefined, baseUrl: "http://127.0.0.1:8123/" });
    await c.run(INPUT);
    assert.equal(calls[0].url, "http://127.0.0.1:8123/run");
    assert.equal(calls[0].headers.authorization, undefined);
    assert.equal(calls[1].url, "http://127.0.0.1:8123/status/test-1");
  });

  test("an outfit swap (garment_image, control, num_outputs) goes out as sent; the gallery comes back", async () => {
    const gallery = jobResult("outfit-1");
    gallery.images = [gallery.image, { ...gallery.image, key: "maskpaint/outfit-1/result-2.png" }];
    gallery.seeds = [7, 8];
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "outfit-1", status: "IN_PROGRESS" }),
      status: sequence({ id: "outfit-1", status: "COMPLETED", output: gallery }),
    });
    const { c } = client(fetch);
    const input = { ...INPUT, garment_image: "https://shop.example/jacket.jpg", garment_scale: 0.8,
      control: "pose", control_scale: 1.0, num_outputs: 2 };
    const result = await c.run(input);
    assert.deepEqual(calls[0].body.input, input);
    assert.deepEqual(result.seeds, [7, 8]);
    assert.equal(result.images.length, 2);
  });

  test("a 405 on GET /status switches to POST for good (the runpod SDK's local server)", async () => {
    let polls = 0;
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "test-2", status: "IN_PROGRESS" }),
      status: (req) =>
        req.method === "GET"
          ? json({ detail: "Method Not Allowed" }, 405)
          : ++polls < 2
            ? json({ id: "test-2", status: "IN_PROGRESS" })
            : json({ id: "test-2", status: "COMPLETED", output: jobResult("test-2") }),
    });
    const { c } = client(fetch);
    await c.run(INPUT);
    assert.deepEqual(calls.map((r) => r.method), ["POST", "GET", "POST", "POST"]);
  });

  test("transient poll failures (network, 429, 5xx) are ridden out", async () => {
    const { fetch } = runpodFetch({
      submit: sequence({ id: "job-3", status: "IN_QUEUE" }),
      status: sequence(
        new TypeError("fetch failed"),
        [503, "upstream unavailable"],
        [429, { error: "slow down" }],
        { id: "job-3", status: "COMPLETED", output: jobResult("job-3") },
      ),
    });
    const { c, waits } = client(fetch);
    const r = await c.run(INPUT);
    assert.equal(r.job_id, "job-3");
    assert.equal(waits.length, 4);
  });

  test("too many transient failures in a row surface as the last error", async () => {
    const { fetch } = runpodFetch({
      submit: sequence({ id: "job-4", status: "IN_QUEUE" }),
      status: sequence([502, "bad gateway"]),
    });
    const { c, waits } = client(fetch, { poll: { maxConsecutiveErrors: 3 } });
    await rejects(c.run(INPUT), (e) => {
      assert.equal(e.code, "http_error");
      assert.equal(e.httpStatus, 502);
      assert.equal(e.retryable, true);
      assert.equal(e.jobId, "job-4");
    });
    assert.equal(waits.length, 3);
  });
});

describe("RunpodClient submit resends", () => {
  test("without a key a failed submit is not sent again (a resend would be a second job)", async () => {
    const { fetch, calls } = runpodFetch({ submit: sequence([503, "upstream unavailable"], { id: "job-x", status: "IN_QUEUE" }) });
    const { c } = client(fetch);
    await rejects(c.submit(INPUT), (e) => assert.equal(e.retryable, true));
    assert.equal(calls.length, 1);
  });

  test("with idempotencyKey the input carries it and a transient failure is sent again", async () => {
    const { fetch, calls } = runpodFetch({
      submit: sequence(new TypeError("fetch failed"), [503, "upstream unavailable"], { id: "job-k", status: "IN_QUEUE" }),
    });
    const { c, waits } = client(fetch);
    const sub = await c.submit(INPUT, { idempotencyKey: "order-42" });
    assert.equal(sub.id, "job-k");
    assert.equal(calls.length, 3);
    assert.ok(calls.every((r) => r.body.input.idempotency_key === "order-42" && r.body.input.prompt === INPUT.prompt));
    assert.equal(waits.length, 2);
  });
});

describe("RunpodClient.runsync", () => {
  test("returns the result from /runsync alone when it completes", async () => {
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "sync-1", status: "COMPLETED", output: jobResult("sync-1") }),
      status: () => assert.fail("no status poll expected"),
    });
    const { c, waits } = client(fetch, { runsyncWaitMs: 120000 });
    const r = await c.runsync(INPUT);
    assert.equal(r.job_id, "sync-1");
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, "https://api.runpod.ai/v2/ep123/runsync?wait=120000");
    assert.deepEqual(waits, []);
  });

  test("falls back to polling /status when /runsync returns IN_PROGRESS / IN_QUEUE", async () => {
    for (const first of ["IN_QUEUE", "IN_PROGRESS"]) {
      const { fetch, calls } = runpodFetch({
        submit: sequence({ id: "sync-2", status: first }),
        status: sequence(
          { id: "sync-2", status: "IN_PROGRESS", output: { stage: "inpaint", step: 1, steps: 2 } },
          { id: "sync-2", status: "COMPLETED", output: jobResult("sync-2") },
        ),
      });
      const { c } = client(fetch);
      const updates = [];
      const r = await c.runsync(INPUT, { onProgress: (u) => updates.push(u.status) });
      assert.equal(r.job_id, "sync-2");
      assert.deepEqual(calls.map((q) => q.path), ["/v2/ep123/runsync", "/v2/ep123/status/sync-2", "/v2/ep123/status/sync-2"]);
      assert.deepEqual(updates, first === "IN_QUEUE" ? ["IN_QUEUE", "IN_PROGRESS"] : ["IN_PROGRESS", "IN_PROGRESS"]);
    }
  });
});

describe("RunpodClient typed errors", () => {
  test("FAILED from the hosted API: the handler's output carries code, field, retryable", async () => {
    const { fetch } = runpodFetch({
      submit: sequence({
        id: "bad-1",
        status: "FAILED",
        error: "invalid_input: prompt: required when task is 'inpaint'",
        output: { error_code: "invalid_input", message: "prompt: required when task is 'inpaint'", field: "prompt", retryable: false },
      }),
    });
    const { c } = client(fetch);
    await rejects(c.runsync({ image: "x" }), (e) => {
      assert.equal(e.name, "MaskpaintError");
      assert.equal(e.code, "invalid_input");
      assert.equal(e.field, "prompt");
      assert.equal(e.retryable, false);
      assert.equal(e.jobId, "bad-1");
      assert.equal(e.httpStatus, undefined);
      assert.equal(e.message, "prompt: required when task is 'inpaint'");
    });
  });

  test("FAILED from the local server (error string only): code parsed, retryable from the contract table", async () => {
    for (const [error, code, retryable] of [
      ["invalid_input: prompt: required when task is 'inpaint'", "invalid_input", false],
      ["storage_error: writing output failed (SlowDown)", "storage_error", true],
      ["gpu_oom: CUDA out of memory", "gpu_oom", true],
    ]) {
      const { fetch } = runpodFetch({
        submit: sequence({ id: "l-1", status: "IN_PROGRESS" }),
        status: sequence({ id: "l-1", status: "FAILED", error }),
      });
      const { c } = client(fetch);
      await rejects(c.run(INPUT), (e) => {
        assert.equal(e.code, code);
        assert.equal(e.retryable, retryable);
        assert.equal(e.field, null);
      });
    }
  });

  test("an exception in the handler (runpod's JSON error) is internal; unknown job ids are not_found", async () => {
    const { fetch } = runpodFetch({
      submit: sequence({ id: "x-1", status: "IN_QUEUE" }),
      status: sequence({ id: "x-1", status: "FAILED", error: JSON.stringify({ error_type: "<class 'KeyError'>", error_message: "'k'", error_traceback: "Traceback..." }) }),
    });
    await rejects(client(fetch).c.run(INPUT), (e) => {
      assert.equal(e.code, "internal");
      assert.equal(e.retryable, true);
      assert.ok(!e.message.includes("Traceback"));
    });
    const nf = runpodFetch({ submit: sequence({ id: "x-2", status: "IN_QUEUE" }), status: sequence({ id: "x-2", status: "FAILED", error: "Job ID not found" }) });
    await rejects(client(nf.fetch).c.run(INPUT), (e) => assert.equal(e.code, "not_found"));
  });

  test("CANCELLED -> cancelled, TIMED_OUT -> timeout (retryable)", async () => {
    const a = runpodFetch({ submit: sequence({ id: "c-1", status: "IN_QUEUE" }), status: sequence({ id: "c-1", status: "CANCELLED" }) });
    await rejects(client(a.fetch).c.run(INPUT), (e) => {
      assert.equal(e.code, "cancelled");
      assert.equal(e.retryable, false);
    });
    const b = runpodFetch({ submit: sequence({ id: "t-1", status: "IN_QUEUE" }), status: sequence({ id: "t-1", status: "TIMED_OUT" }) });
    await rejects(client(b.fetch).c.run(INPUT), (e) => {
      assert.equal(e.code, "timeout");
      assert.equal(e.retryable, true);
    });
  });

  test("HTTP and network failures map to codes", async () => {
    const cases = [
      [[401, { error: "Unauthorized" }], { code: "unauthorized", httpStatus: 401, retryable: false }],
      [[404, "not found"], { code: "not_found", httpStatus: 404, retryable: false }],
      [[413, "too large"], { code: "image_too_large", httpStatus: 413, retryable: false }],
      [[429, { error: "rate" }], { code: "rate_limited", httpStatus: 429, retryable: true }],
      [[500, "oops"], { code: "http_error", httpStatus: 500, retryable: true }],
      [[409, "conflict"], { code: "http_error", httpStatus: 409, retryable: false }],
      [
        [422, { detail: [{ type: "dict_type", loc: ["body", "input"], msg: "Input should be a valid dictionary", input: "SECRET" }] }],
        { code: "invalid_input", httpStatus: 422, retryable: false, field: "input" },
      ],
      [new TypeError("fetch failed"), { code: "network_error", httpStatus: undefined, retryable: true }],
      [[200, "<html>not json</html>"], { code: "bad_response", httpStatus: undefined, retryable: false }],
      [{ id: "j", status: "COMPLETED", output: { not: "a result" } }, { code: "bad_response", retryable: false }],
    ];
    for (const [reply, want] of cases) {
      const { fetch } = runpodFetch({ submit: sequence(reply) });
      await rejects(client(fetch).c.runsync(INPUT), (e) => {
        for (const [k, v] of Object.entries(want)) assert.deepEqual(e[k], v, `${JSON.stringify(reply)} -> ${k}`);
        assert.ok(!e.message.includes("SECRET"));
      });
    }
  });
});

describe("RunpodClient abort and timeout", () => {
  test("an already aborted signal sends nothing", async () => {
    const { fetch, calls } = runpodFetch({ submit: sequence({ id: "a", status: "IN_QUEUE" }) });
    const ctrl = new AbortController();
    ctrl.abort(new Error("user left"));
    await rejects(client(fetch).c.run(INPUT, { signal: ctrl.signal }), (e) => {
      assert.equal(e.code, "aborted");
      assert.equal(e.retryable, false);
    });
    assert.equal(calls.length, 0);
  });

  test("aborting while polling stops at once with code aborted and the job id", async () => {
    const { fetch, calls } = runpodFetch({
      submit: sequence({ id: "a-2", status: "IN_QUEUE" }),
      status: sequence({ id: "a-2", status: "IN_PROGRESS" }),
    });
    const c = new RunpodClient({ baseUrl: "http://rp.test", fetch, poll: { initialDelayMs: 5, maxDelayMs: 5 } });
    const ctrl = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ctrl.abort(), 300); // after the first poll (waits are floored at 200 ms)
    await rejects(c.run(INPUT, { signal: ctrl.signal }), (e) => {
      assert.equal(e.code, "aborted");
      assert.equal(e.jobId, "a-2");
    });
    assert.ok(Date.now() - t0 < 1000);
    assert.ok(calls.length >= 2);
  });

  test("aborting cancels an in-flight request", async () => {
    const { fetch } = runpodFetch({ submit: () => "hang" });
    const c = new RunpodClient({ baseUrl: "http://rp.test", fetch });
    const ctrl = new AbortController();
    setTimeout(() => ctrl.abort(), 20);
    await rejects(c.runsync(INPUT, { signal: ctrl.signal }), (e) => assert.equal(e.code, "aborted"));
  });

  test("timeoutMs bounds the whole call: polling and a hanging request", async () => {
    const polling = runpodFetch({
      submit: sequence({ id: "slow", status: "IN_QUEUE" }),
      status: sequence({ id: "slow", status: "IN_QUEUE" }),
    });
    const c1 = new RunpodClient({ baseUrl: "http://rp.test", fetch: polling.fetch, timeoutMs: 80, poll: { initialDelayMs: 10, maxDelayMs: 20 } });
    const t0 = Date.now();
    await rejects(c1.run(INPUT), (e) => {
      assert.equal(e.code, "client_timeout");
      assert.equal(e.retryable, true);
      assert.equal(e.jobId, "slow");
    });
    const took = Date.now() - t0;
    assert.ok(took >= 70 && took < 1000, `took ${took} ms`);

    const hanging = runpodFetch({ submit: sequence({ id: "h", status: "IN_QUEUE" }), status: () => "hang" });
    const c2 = new RunpodClient({ baseUrl: "http://rp.test", fetch: hanging.fetch, poll: { initialDelayMs: 1 } });
    await rejects(c2.run(INPUT, { timeoutMs: 50 }), (e) => {
      assert.equal(e.code, "client_timeout");
      assert.equal(e.jobId, "h");
    });
  });
});
