import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { idempotencyKey, MaskpaintError, ModalClient, RunpodClient, runMany } from "../dist/index.js";
import { jobResult, json, mockFetch, recordingSleep } from "./helpers.mjs";

const job = (n) => ({ image: `https://example.com/${n}.jpg`, prompt: "a red jacket", seed: n });

/** A client whose run() is scripted per job seed; records the concurrency it saw. */
function scripted(script) {
  const seen = { max: 0, now: 0, inputs: [] };
  const client = {
    async run(input, { signal } = {}) {
      seen.inputs.push(input);
      seen.now++;
      seen.max = Math.max(seen.max, seen.now);
      try {
        await new Promise((resolve, reject) => {
          const t = setTimeout(resolve, 5 + (input.seed % 3) * 5);
          signal?.addEventListener("abort", () => { clearTimeout(t); reject(new MaskpaintError({ code: "aborted", message: "aborted" })); }, { once: true });
        });
        const step = script(input);
        if (step instanceof Error) throw step;
        return jobResult(`key-${input.idempotency_key}`);
      } finally {
        seen.now--;
      }
    },
  };
  return { client, seen };
}

describe("client.runMany", () => {
  test("both clients offer runMany as a method, through the same loop", async () => {
    const { fetch } = mockFetch((req) => req.method === "POST"
      ? json({ id: "j-1", status: "queued" }, 202)
      : json({ id: "j-1", status: "done", output: jobResult("j-1") }));
    const { sleep } = recordingSleep();
    const c = new ModalClient({ baseUrl: "https://api.example.com", token: "t".repeat(20), fetch, sleep });
    const r = await c.runMany([job(1)], { concurrency: 1 });
    assert.deepEqual(r.map((x) => x.status), ["done"]);
    assert.equal(typeof RunpodClient.prototype.runMany, "function");
  });
});

describe("runMany", () => {
  test("results in input order, at most `concurrency` in flight, stable keys", async () => {
    const { client, seen } = scripted(() => null);
    const jobs = Array.from({ length: 9 }, (_, i) => job(i));
    const r = await runMany(client, jobs, { concurrency: 3 });
    assert.deepEqual(r.map((x) => [x.index, x.status]), jobs.map((_, i) => [i, "done"]));
    assert.equal(seen.max, 3);
    assert.equal(r[4].key, await idempotencyKey(jobs[4]));
    assert.match(r[4].key, /^j[0-9a-f]{20}$/);
    assert.equal(r[4].output.job_id, `key-${r[4].key}`);
    assert.equal(await idempotencyKey({ seed: 1, image: "a" }), await idempotencyKey({ image: "a", seed: 1 }));
    assert.notEqual(await idempotencyKey(job(1)), await idempotencyKey(job(2)));
  });

  test("retryable failures are resubmitted with backoff and the same key; others are final", async () => {
    let oom = 0;
    const { client, seen } = scripted((input) => {
      if (input.seed === 1 && oom++ < 2) return new MaskpaintError({ code: "gpu_oom", message: "oom", retryable: true });
      if (input.seed === 2) return new MaskpaintError({ code: "invalid_image", message: "bad", field: "image", retryable: false });
      return null;
    });
    const { sleep, waits } = recordingSleep();
    const r = await runMany(client, [job(0), job(1), job(2)], { sleep, random: () => 0.5 });
    assert.equal(r[1].status, "done");
    assert.equal(r[1].attempts, 3);
    assert.deepEqual(waits, [1000, 2000]); // 1 s doubling (jitter centred)
    assert.equal(new Set(seen.inputs.filter((i) => i.seed === 1).map((i) => i.idempotency_key)).size, 1);
    assert.equal(r[2].status, "failed");
    assert.equal(r[2].attempts, 1);
    assert.ok(r[2].error instanceof MaskpaintError);
    assert.equal(r[2].error.code, "invalid_image");
    assert.equal(r[2].error.field, "image");
  });

  test("a retryable failure past maxAttempts is failed, with its last error", async () => {
    const { client } = scripted(() => new MaskpaintError({ code: "rate_limited", message: "429", retryable: true }));
    const r = await runMany(client, [job(0)], { maxAttempts: 2, sleep: async () => {} });
    assert.equal(r[0].status, "failed");
    assert.equal(r[0].attempts, 2);
    assert.equal(r[0].error.code, "rate_limited");
  });

  test("AbortSignal: no new job starts, running ones are aborted, the rest cancelled", async () => {
    const ctrl = new AbortController();
    const { fetch, calls } = mockFetch((req) => {
      if (req.method === "POST") return json({ id: `fc-${calls.length}`, status: "queued" }, 202);
      return "hang"; // polls never answer: jobs stay in flight until aborted
    });
    const client = new ModalClient({ baseUrl: "https://ws--maskpaint-api.modal.run", token: "t", fetch, poll: { initialDelayMs: 1 } });
    const progress = [];
    const pending = runMany(client, Array.from({ length: 6 }, (_, i) => job(i)), {
      concurrency: 2,
      signal: ctrl.signal,
      onProgress: (p) => progress.push(p),
    });
    while (calls.filter((c) => c.method === "GET").length < 2) await new Promise((r) => setTimeout(r, 2));
    ctrl.abort();
    const r = await pending;
    assert.deepEqual(r.map((x) => x.status), Array(6).fill("cancelled"));
    assert.deepEqual(r.map((x) => x.attempts), [1, 1, 0, 0, 0, 0]);
    assert.equal(r[0].error.code, "aborted");
    assert.equal(calls.filter((c) => c.method === "POST").length, 2); // nothing after the abort
    const last = progress.at(-1);
    assert.deepEqual([last.cancelled, last.inFlight, last.done], [6, 0, 0]);
  });
});
