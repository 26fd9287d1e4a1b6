import assert from "node:assert/strict";

import { MaskpaintError } from "../dist/index.js";

// Test helpers: a scripted fetch (records every request, honours AbortSignal) and fixtures.

/** A JobResult as the worker returns it (trimmed to the required fields + image). */
export function jobResult(jobId = "job-1") {
  const art = (name, type) => ({
    key: `maskpaint/${jobId}/${name}`,
    url: `https://bucket.example/maskpaint/${jobId}/${name}?X-Amz-Signature=abc`,
    content_type: type,
    width: 256,
    height: 341,
    bytes: 1234,
    sha256: "0".repeat(64),
  });
  return {
    job_id: jobId,
    task: "inpaint",
    seed: 7,
    image: art("result.png", "image/png"),
    mask: art("mask.png", "image/png"),
    overlay: art("overlay.jpg", "image/jpeg"),
    mask_info: { source: "provided", coverage: 0.2, detections: [], faces: [] },
    models: [],
    timings_ms: { total: 10 },
    size: [256, 341],
  };
}

export function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/**
 * `handler(req)` gets {method, url, path, headers, body} and returns a Response, a promise of
 * one, or throws (a network error). `hang: true` in the returned value = never answer (until
 * the request's signal aborts).
 */
export function mockFetch(handler) {
  const calls = [];
  const fetch = (url, init = {}) => {
    const headers = Object.fromEntries(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    const req = {
      method: init.method ?? "GET",
      url,
      path: new URL(url).pathname + new URL(url).search,
      headers,
      body: init.body ? JSON.parse(init.body) : undefined,
    };
    calls.push(req);
    return new Promise((resolve, reject) => {
      const signal = init.signal;
      const onAbort = () => reject(signal.reason ?? new DOMException("aborted", "AbortError"));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      Promise.resolve()
        .then(() => handler(req, calls.length - 1))
        .then((res) => {
          if (res === "hang") return; // never settles unless aborted
          signal?.removeEventListener("abort", onAbort);
          resolve(res);
        }, (err) => {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        });
    });
  };
  return { fetch, calls };
}

/** A sleep that records the requested waits and returns at once (still honours abort). */
export function recordingSleep() {
  const waits = [];
  const sleep = (ms, signal) => {
    waits.push(ms);
    return signal.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  };
  return { sleep, waits };
}

/**
 * Replies in order; the last one repeats. Each entry: a JSON body (status 200), `[status, body]`,
 * an Error (thrown: a network error), "hang", or a function returning one of those.
 */
export function sequence(...replies) {
  let i = 0;
  return (req) => {
    let r = replies[Math.min(i, replies.length - 1)];
    i++;
    if (typeof r === "function") r = r(req);
    if (r === "hang") return "hang";
    if (r instanceof Error) throw r;
    if (r instanceof Response) return r;
    if (Array.isArray(r)) return typeof r[1] === "string" ? new Response(r[1], { status: r[0] }) : json(r[1], r[0]);
    return json(r);
  };
}

/** Await a promise that must reject with a MaskpaintError; run `check` on it; return it. */
export async function rejects(promise, check) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, "expected a rejection");
  assert.ok(err instanceof MaskpaintError, `expected MaskpaintError, got ${err}`);
  check(err);
  return err;
}
