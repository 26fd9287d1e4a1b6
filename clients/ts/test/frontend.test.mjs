import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";

import {
  httpStatusFor,
  isClientError,
  MaskpaintError,
  ModalClient,
  RUNPOD_MAX_RUN_BYTES,
  RUNPOD_MAX_RUNSYNC_BYTES,
  RunpodClient,
} from "../dist/index.js";
import { jobResult, mockFetch, rejects, sequence } from "./helpers.mjs";

const err = (code, extra = {}) => new MaskpaintError({ code, message: code, ...extra });

describe("httpStatusFor: the caller's mistakes are 4xx, ours 5xx", () => {
  test("each code's status", () => {
    const want = {
      invalid_input: 400, invalid_image: 400, blocked_url: 400, input_not_found: 400, empty_mask: 400,
      image_too_large: 413, payload_too_large: 413, not_found: 404, aborted: 499, client_timeout: 504,
      gpu_oom: 503, timeout: 503, storage_error: 503, input_fetch_failed: 503, network_error: 503,
      rate_limited: 503, unauthorized: 500, invalid_config: 500, model_not_found: 502,
      face_detection_unavailable: 502, bad_response: 502, cancelled: 502,
      content_blocked: 422, safety_unavailable: 502,
    };
    for (const [code, status] of Object.entries(want)) assert.equal(httpStatusFor(err(code)), status, code);
    assert.equal(httpStatusFor(err("http_error", { retryable: true })), 503);
    assert.equal(httpStatusFor(err("http_error", { retryable: false })), 502);
    assert.equal(httpStatusFor(new TypeError("a bug")), 500);
  });

  test("isClientError names exactly the 4xx input codes", () => {
    for (const c of ["invalid_input", "invalid_image", "image_too_large", "blocked_url", "input_not_found", "empty_mask", "payload_too_large", "content_blocked"]) {
      assert.ok(isClientError(err(c)), c);
    }
    for (const c of ["internal", "gpu_oom", "unauthorized", "not_found", "client_timeout", "safety_unavailable"]) assert.ok(!isClientError(err(c)), c);
    assert.ok(!isClientError(new Error("invalid_input")));
  });
});

describe("configuration is checked on first use", () => {
  test("constructors never throw; the first call rejects with invalid_config and sends nothing", async () => {
    const { fetch, calls } = mockFetch(sequence({}));
    const rp = new RunpodClient({ endpointId: undefined, apiKey: undefined, fetch });
    const md = new ModalClient({ baseUrl: undefined, fetch });
    await rejects(rp.run({ image: "https://x/a.jpg" }), (e) => {
      assert.equal(e.code, "invalid_config");
      assert.equal(e.retryable, false);
      assert.match(e.message, /endpointId/);
      assert.equal(httpStatusFor(e), 500);
    });
    await rejects(md.submit({ image: "https://x/a.jpg" }), (e) => assert.equal(e.code, "invalid_config"));
    assert.equal(calls.length, 0);
  });

  test("baseUrl wins over endpointId", async () => {
    const { fetch, calls } = mockFetch(sequence({ id: "j", status: "COMPLETED", output: jobResult("j") }));
    const rp = new RunpodClient({ endpointId: "ep", baseUrl: "http://127.0.0.1:8000/", fetch });
    await rp.runsync({ image: "https://x/a.jpg" });
    assert.equal(calls[0].url, "http://127.0.0.1:8000/runsync");
  });
});

describe("bodies over RunPod's caps are refused before sending", () => {
  const photo = (bytes) => "data:image/jpeg;base64," + "A".repeat(bytes);

  test("/run over 10 MB and /runsync over 20 MB: payload_too_large, nothing sent", async () => {
    const { fetch, calls } = mockFetch(sequence({ id: "j", status: "COMPLETED", output: jobResult("j") }));
    const rp = new RunpodClient({ endpointId: "ep", fetch });
    await rejects(rp.run({ image: photo(RUNPOD_MAX_RUN_BYTES) }), (e) => {
      assert.equal(e.code, "payload_too_large");
      assert.equal(e.retryable, false);
      assert.match(e.message, /10\.0 MB/);
      assert.match(e.message, /s3:\/\//); // points to the upload flow
      assert.ok(!e.message.includes("AAAA")); // no payload echoed
      assert.equal(httpStatusFor(e), 413);
    });
    await rejects(rp.runsync({ image: photo(RUNPOD_MAX_RUNSYNC_BYTES) }), (e) => assert.equal(e.code, "payload_too_large"));
    assert.equal(calls.length, 0);
    // 12 MB of base64 still fits /runsync (20 MB) but not /run (10 MB)
    await rp.runsync({ image: photo(12_000_000) });
    assert.equal(calls.length, 1);
    await rejects(rp.submit({ image: photo(12_000_000) }), (e) => assert.equal(e.code, "payload_too_large"));
    assert.equal(calls.length, 1);
  });
});

describe("packaging", () => {
  test("require() and import resolve the package through its exports", () => {
    const root = new URL("..", import.meta.url).pathname;
    const cjs = execFileSync(process.execPath, ["-e",
      "const m = require('@maskpaint/client'); console.log(typeof m.RunpodClient, typeof m.httpStatusFor)"],
      { cwd: root, encoding: "utf8", env: { ...process.env, NODE_PATH: "" } });
    assert.equal(cjs.trim(), "function function");
  });
});
