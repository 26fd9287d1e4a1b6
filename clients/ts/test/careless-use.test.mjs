import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";

import { httpStatusFor, MIN_POLL_DELAY_MS, ModalClient, RunpodClient } from "../dist/index.js";
import { jobResult, json, mockFetch, recordingSleep, rejects, sequence } from "./helpers.mjs";

// What a developer who uses the client carelessly (or meets a careless server) runs into.

const BASE = "https://ws--maskpaint-api.modal.run";
const INPUT = { image: "https://example.com/a.jpg", prompt: "a red jacket" };

function web(handler, extra = {}) {
  const { fetch, calls } = mockFetch(handler);
  const { sleep, waits } = recordingSleep();
  return { c: new ModalClient({ baseUrl: BASE, fetch, sleep, random: () => 0.5, ...extra }), calls, waits };
}

const submitThen = (polls) => (req) => (req.method === "POST" ? json({ id: "j", status: "queued" }, 202) : polls(req));

describe("server errors the client does not know", () => {
  test("410 expired stays expired and retryable (submit again), with or without a body", async () => {
    const a = web(submitThen(sequence([410, { error: { code: "expired", message: "the job's record expired", field: null, retryable: true } }])));
    const e = await rejects(a.c.run(INPUT), (err) => {
      assert.equal(err.code, "expired");
      assert.equal(err.retryable, true);
    });
    assert.equal(httpStatusFor(e), 410);
    const b = web(submitThen(sequence([410, ""])));
    await rejects(b.c.wait("j"), (err) => {
      assert.equal(err.code, "expired");
      assert.equal(err.retryable, true);
    });
  });

  test("a failed job with a code from a newer server keeps its code, message, field and retryable", async () => {
    const { c } = web(submitThen(sequence({
      status: "failed",
      error: { code: "quota_exceeded", message: "over this month's quota", field: "prompt", retryable: false },
    })));
    await rejects(c.run(INPUT), (e) => {
      assert.equal(e.code, "quota_exceeded");
      assert.equal(e.message, "over this month's quota");
      assert.equal(e.field, "prompt");
      assert.equal(e.retryable, false);
      assert.equal(httpStatusFor(e), 502);
    });
    const unknownRetryable = web(submitThen(sequence({ status: "failed", error: { code: "brand_new", message: "later", field: null } })));
    await rejects(unknownRetryable.c.run(INPUT), (e) => {
      assert.equal(e.code, "brand_new");
      assert.equal(e.retryable, false, "an unknown code without retryable is not retried");
    });
  });

  test("a 404 keeps the server's field (id)", async () => {
    const { c } = web(sequence([404, { error: { code: "not_found", message: "job: unknown id", field: "id", retryable: false } }]));
    await rejects(c.status("zzz"), (e) => {
      assert.equal(e.code, "not_found");
      assert.equal(e.field, "id");
    });
  });
});

describe("onProgress that throws", () => {
  test("rejects with a MaskpaintError callback_error carrying the job id and the cause; wait(jobId) resumes", async () => {
    const { c } = web(submitThen(sequence({ status: "running", progress: { stage: "mask" } }, { status: "done", output: jobResult("j") })));
    const bug = new TypeError("cannot read properties of undefined");
    await rejects(c.run(INPUT, { onProgress: (u) => { if (u.status === "running") throw bug; } }), (e) => {
      assert.equal(e.code, "callback_error");
      assert.equal(e.jobId, "j");
      assert.equal(e.cause, bug);
      assert.equal(e.retryable, false);
      assert.equal(httpStatusFor(e), 500);
    });
    assert.equal((await c.wait("j")).job_id, "j");
  });

  test("RunPod: the same", async () => {
    const { fetch } = mockFetch((req) => (req.path.endsWith("/run")
      ? json({ id: "r", status: "IN_QUEUE" })
      : json({ id: "r", status: "IN_PROGRESS", output: { stage: "inpaint", step: 1, steps: 4 } })));
    const c = new RunpodClient({ endpointId: "e", fetch, sleep: recordingSleep().sleep });
    await rejects(c.run(INPUT, { onProgress: () => { throw new Error("boom"); } }), (e) => {
      assert.equal(e.code, "callback_error");
      assert.equal(e.jobId, "r");
    });
  });
});

describe("timeoutMs and poll options", () => {
  for (const bad of ["60000", Number.NaN, -1]) {
    test(`timeoutMs ${String(bad)} (${typeof bad}) fails the call with invalid_config, sending nothing`, async () => {
      const perCall = web(sequence({ id: "x", status: "queued" }));
      await rejects(perCall.c.submit(INPUT, { timeoutMs: bad }), (e) => {
        assert.equal(e.code, "invalid_config");
        assert.match(e.message, /timeoutMs/);
      });
      const perClient = web(sequence({ id: "x", status: "queued" }), { timeoutMs: bad });
      await rejects(perClient.c.submit(INPUT), (e) => assert.equal(e.code, "invalid_config"));
      const rp = new RunpodClient({ endpointId: "e", timeoutMs: bad, fetch: perCall.c.fetch });
      await rejects(rp.submit(INPUT), (e) => assert.equal(e.code, "invalid_config"));
      assert.equal(perCall.calls.length + perClient.calls.length, 0);
    });
  }

  test("Infinity still means no limit", async () => {
    const { c } = web(submitThen(sequence({ status: "done", output: jobResult("j") })), { timeoutMs: Infinity });
    assert.equal((await c.run(INPUT)).job_id, "j");
  });

  test("initialDelayMs 0 is floored: no wait between polls is under MIN_POLL_DELAY_MS", async () => {
    const { c, waits } = web(
      submitThen(sequence({ status: "running" }, { status: "running" }, { status: "running" }, { status: "done", output: jobResult("j") })),
      { poll: { initialDelayMs: 0, multiplier: 1, jitter: 0.25 }, random: () => 0 },
    );
    await c.run(INPUT);
    assert.equal(waits.length, 4);
    assert.ok(MIN_POLL_DELAY_MS >= 100);
    assert.ok(waits.every((w) => w >= MIN_POLL_DELAY_MS), `waits ${waits}`);
  });

  test("a poll option that is not a number fails the first call, not the constructor", async () => {
    const c = new ModalClient({ baseUrl: BASE, poll: { maxDelayMs: "8s" } });
    await rejects(c.status("j"), (e) => {
      assert.equal(e.code, "invalid_config");
      assert.match(e.message, /poll\.maxDelayMs/);
    });
  });
});

describe("response body size cap", () => {
  /** A streamed body of `total` bytes; `pulled()` says how many bytes were produced. */
  function bigBody(total, status, headers = {}) {
    let sent = 0;
    const chunk = new Uint8Array(1024 * 1024).fill(0x41);
    const stream = new ReadableStream({
      pull(ctrl) {
        if (sent >= total) return ctrl.close();
        sent += chunk.byteLength;
        ctrl.enqueue(chunk);
      },
    });
    return { res: new Response(stream, { status, headers }), pulled: () => sent };
  }

  test("a 200 MB error page is read no further than 64 KiB and mapped by its status", async () => {
    const body = bigBody(200 * 1024 * 1024, 502);
    const { c } = web(() => body.res);
    await rejects(c.submit(INPUT, { idempotencyKey: null }), (e) => {
      assert.equal(e.code, "http_error");
      assert.equal(e.httpStatus, 502);
    });
    assert.ok(body.pulled() <= 4 * 1024 * 1024, `read ${body.pulled()} bytes`);
  });

  test("a 2xx body over maxResponseBytes is refused as bad_response without reading it all", async () => {
    const body = bigBody(50 * 1024 * 1024, 200);
    const { c } = web(() => body.res, { maxResponseBytes: 1024 * 1024 });
    await rejects(c.status("j"), (e) => {
      assert.equal(e.code, "bad_response");
      assert.match(e.message, /maxResponseBytes/);
    });
    assert.ok(body.pulled() <= 4 * 1024 * 1024, `read ${body.pulled()} bytes`);
    // a declared Content-Length over the cap is refused before reading
    const declared = bigBody(50 * 1024 * 1024, 200, { "content-length": String(50 * 1024 * 1024) });
    const d = web(() => declared.res, { maxResponseBytes: 1024 * 1024 });
    await rejects(d.c.status("j"), (e) => assert.equal(e.code, "bad_response"));
    assert.ok(declared.pulled() <= 2 * 1024 * 1024);
  });

  test("an ordinary result passes under the default cap", async () => {
    const { c } = web(submitThen(sequence({ status: "done", output: jobResult("j") })));
    assert.equal((await c.run(INPUT)).job_id, "j");
  });
});

describe("types", () => {
  test("a form's string[] of targets type-checks without a cast", () => {
    const dir = mkdtempSync(join(tmpdir(), "maskpaint-types-"));
    const file = join(dir, "form.ts");
    writeFileSync(file, [
      `import type { JobRequest } from ${JSON.stringify(new URL("../dist/index.js", import.meta.url).pathname)};`,
      "declare const checked: string[];",
      "export const job: JobRequest = { image: 'https://example.com/a.jpg', targets: checked };",
      "export const known: JobRequest = { image: 'x', targets: ['upper', 'lower'] };",
      "",
    ].join("\n"));
    const tsc = new URL("../node_modules/typescript/bin/tsc", import.meta.url).pathname;
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--module", "nodenext", "--target", "es2022", "--skipLibCheck", file], { stdio: "pipe", cwd: dir });
  });
});
