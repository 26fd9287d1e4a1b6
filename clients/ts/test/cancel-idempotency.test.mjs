import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ModalClient, RunpodClient } from "../dist/index.js";
import { jobResult, mockFetch, recordingSleep, rejects, sequence } from "./helpers.mjs";

// Cancel, idempotent submit and the queued / running states, as a caller of the web API
// (ModalClient, also `make serve`) and of RunPod sees them.

const BASE = "https://ws--maskpaint-api.modal.run";
const INPUT = { image: "https://example.com/a.jpg", prompt: "a red jacket" };

function web(handler, extra = {}) {
  const { fetch, calls } = mockFetch(handler);
  const { sleep, waits } = recordingSleep();
  return { c: new ModalClient({ baseUrl: BASE, token: "tok", fetch, sleep, random: () => 0.5, ...extra }), calls, waits };
}

describe("ModalClient.cancel", () => {
  test("DELETE /jobs/{id} with the token; a wait on the job then rejects with cancelled", async () => {
    let cancelled = false;
    const { c, calls } = web((req) => {
      if (req.method === "POST") return sequence([202, { id: "j 1", status: "queued", position: 2 }])(req);
      if (req.method === "DELETE") {
        cancelled = true;
        return sequence({ id: "j 1", status: "cancelled" })(req);
      }
      return sequence(cancelled ? { id: "j 1", status: "cancelled" } : { id: "j 1", status: "running" })(req);
    });
    const sub = await c.submit(INPUT);
    assert.deepEqual(sub, { id: "j 1", status: "queued", position: 2 });
    const reply = await c.cancel(sub.id);
    assert.deepEqual(reply, { id: "j 1", status: "cancelled" });
    const del = calls.find((r) => r.method === "DELETE");
    assert.equal(del.url, `${BASE}/jobs/j%201`);
    assert.equal(del.headers.authorization, "Bearer tok");
    await rejects(c.wait(sub.id), (e) => {
      assert.equal(e.code, "cancelled");
      assert.equal(e.retryable, false);
      assert.equal(e.jobId, "j 1");
    });
  });

  test("cancelling a finished job answers its final status; an unknown id is not_found with field id", async () => {
    const { c } = web((req) => {
      if (req.path.endsWith("/done-1")) return sequence({ id: "done-1", status: "done", output: jobResult("done-1") })(req);
      return sequence([404, { error: { code: "not_found", message: "no such job", field: "id", retryable: false } }])(req);
    });
    assert.equal((await c.cancel("done-1")).status, "done");
    await rejects(c.cancel("nope"), (e) => {
      assert.equal(e.code, "not_found");
      assert.equal(e.field, "id");
      assert.equal(e.httpStatus, 404);
      assert.equal(e.message, "no such job");
    });
  });
});

describe("RunpodClient.cancel", () => {
  test("POST /cancel/{id}; a wait on the job then rejects with cancelled", async () => {
    const { fetch, calls } = mockFetch((req) => {
      if (req.path.startsWith("/v2/ep1/cancel/")) return sequence({ id: "rp-9", status: "CANCELLED" })(req);
      return sequence({ id: "rp-9", status: "CANCELLED" })(req);
    });
    const { sleep } = recordingSleep();
    const c = new RunpodClient({ endpointId: "ep1", apiKey: "k", fetch, sleep });
    assert.equal((await c.cancel("rp-9")).status, "CANCELLED");
    assert.equal(calls[0].method, "POST");
    assert.equal(calls[0].url, "https://api.runpod.ai/v2/ep1/cancel/rp-9");
    assert.equal(calls[0].headers.authorization, "Bearer k");
    await rejects(c.wait("rp-9"), (e) => assert.equal(e.code, "cancelled"));
  });
});

describe("ModalClient idempotent submit", () => {
  test("every submit carries a fresh Idempotency-Key (a UUID) by default", async () => {
    const { c, calls } = web(sequence([202, { id: "a", status: "queued" }]));
    await c.submit(INPUT);
    await c.submit(INPUT);
    const keys = calls.map((r) => r.headers["idempotency-key"]);
    assert.match(keys[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(keys[0], keys[1], "two submits are two jobs");
  });

  test("a 5xx or a network error is retried with the same key; the server's one job id comes back", async () => {
    const { c, calls, waits } = web(sequence(
      new TypeError("fetch failed"),
      [502, "<html>bad gateway</html>"],
      [200, { id: "same", status: "queued" }],
    ));
    const sub = await c.submit(INPUT, { idempotencyKey: "order-42" });
    assert.equal(sub.id, "same");
    assert.equal(calls.length, 3);
    assert.deepEqual(calls.map((r) => r.headers["idempotency-key"]), ["order-42", "order-42", "order-42"]);
    assert.equal(waits.length, 2, "backoff between tries");
  });

  test("without a key (idempotencyKey: null) a failed submit is not sent again", async () => {
    const { c, calls } = web(sequence([503, { error: { code: "unavailable", message: "busy", field: null, retryable: true } }], [202, { id: "x", status: "queued" }]));
    await rejects(c.submit(INPUT, { idempotencyKey: null }), (e) => assert.equal(e.httpStatus, 503));
    assert.equal(calls.length, 1);
    assert.equal(calls[0].headers["idempotency-key"], undefined);
  });

  test("a 4xx is never retried, key or not", async () => {
    const { c, calls } = web(sequence([422, { error: { code: "invalid_input", message: "prompt: required", field: "prompt", retryable: false } }]));
    await rejects(c.submit(INPUT), (e) => assert.equal(e.field, "prompt"));
    assert.equal(calls.length, 1);
  });

  test("retries stop after poll.maxConsecutiveErrors tries", async () => {
    const { c, calls } = web(sequence(new TypeError("socket hang up")), { poll: { maxConsecutiveErrors: 3 } });
    await rejects(c.submit(INPUT), (e) => assert.equal(e.code, "network_error"));
    assert.equal(calls.length, 3);
  });

  test("RunpodClient sends /run once: RunPod has no idempotency key, a resend could run the job twice", async () => {
    const { fetch, calls } = mockFetch(sequence(new TypeError("fetch failed"), { id: "r", status: "IN_QUEUE" }));
    const c = new RunpodClient({ endpointId: "ep", fetch, sleep: recordingSleep().sleep });
    await rejects(c.submit(INPUT), (e) => assert.equal(e.code, "network_error"));
    assert.equal(calls.length, 1);
  });
});

describe("queued and running", () => {
  test("queued with its position, then running with progress, reach onProgress in order", async () => {
    const { c } = web((req) => {
      if (req.method === "POST") return sequence([202, { id: "q", status: "queued", position: 3 }])(req);
      return polls(req);
    });
    const polls = sequence(
      { id: "q", status: "queued", position: 3 },
      { id: "q", status: "queued", position: 1 },
      { id: "q", status: "queued", position: 0 },
      { id: "q", status: "running", progress: { stage: "mask" } },
      { id: "q", status: "running", progress: { stage: "inpaint", step: 4, steps: 8 } },
      { id: "q", status: "done", output: jobResult("q") },
    );
    const seen = [];
    const result = await c.run(INPUT, { onProgress: (u) => seen.push([u.status, u.position ?? null, u.progress?.stage ?? null]) });
    assert.equal(result.job_id, "q");
    assert.deepEqual(seen, [
      ["queued", 3, null],
      ["queued", 1, null],
      ["queued", 0, null],
      ["running", null, "mask"],
      ["running", null, "inpaint"],
    ]);
  });

  test("an older server's pending is still a job in progress", async () => {
    const { c } = web((req) => (req.method === "POST"
      ? sequence([202, { id: "p", status: "queued" }])(req)
      : polls(req)));
    const polls = sequence({ status: "pending" }, { status: "done", output: jobResult("p") });
    assert.equal((await c.run(INPUT)).job_id, "p");
  });
});
