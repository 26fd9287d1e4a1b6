import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, test } from "node:test";

import { verifyWebhook, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER } from "../dist/index.js";

const SECRET = "whsec-0123456789";
const BODY = '{"id":"fc-01","status":"done","output":{"job_id":"fc-01"}}';
const NOW_MS = 1_800_000_000_000;
const STAMP = String(NOW_MS / 1000 - 30); // signed 30 s ago
// what handlers/webhook.py sends: sha256= + hex HMAC-SHA256 of "<timestamp>.<raw body>"
const sign = (stamp, body = BODY) => `sha256=${createHmac("sha256", SECRET).update(`${stamp}.${body}`).digest("hex")}`;
const SIG = sign(STAMP);
const at = { nowMs: NOW_MS };

describe("verifyWebhook", () => {
  test("accepts the server's signature over timestamp and raw body (string, bytes, ArrayBuffer)", async () => {
    assert.equal(WEBHOOK_SIGNATURE_HEADER, "X-Maskpaint-Signature");
    assert.equal(WEBHOOK_TIMESTAMP_HEADER, "X-Maskpaint-Timestamp");
    assert.equal(await verifyWebhook(BODY, SIG, SECRET, STAMP, at), true);
    const bytes = new TextEncoder().encode(BODY);
    assert.equal(await verifyWebhook(bytes, SIG, SECRET, STAMP, at), true);
    assert.equal(await verifyWebhook(bytes.buffer, SIG.toUpperCase().replace("SHA256=", "sha256="), SECRET, STAMP, at), true);
  });

  test("rejects a changed body, another secret, and malformed or missing headers", async () => {
    assert.equal(await verifyWebhook(BODY.replace("done", "failed"), SIG, SECRET, STAMP, at), false);
    assert.equal(await verifyWebhook(BODY, SIG, "another-secret", STAMP, at), false);
    for (const bad of [undefined, null, "", "sha256=", SIG.slice(0, -2), SIG.replace("sha256=", "sha1="), `${SIG}00`]) {
      assert.equal(await verifyWebhook(BODY, bad, SECRET, STAMP, at), false, String(bad));
    }
    assert.equal(await verifyWebhook(BODY, SIG, "", STAMP, at), false);
  });

  test("rejects a replay: an old (or future) timestamp, a swapped timestamp, or none", async () => {
    const old = String(NOW_MS / 1000 - 301);
    assert.equal(await verifyWebhook(BODY, sign(old), SECRET, old, at), false, "older than 5 min");
    assert.equal(await verifyWebhook(BODY, sign(old), SECRET, old, { ...at, toleranceS: 600 }), true);
    const future = String(NOW_MS / 1000 + 301);
    assert.equal(await verifyWebhook(BODY, sign(future), SECRET, future, at), false);
    assert.equal(await verifyWebhook(BODY, SIG, SECRET, String(NOW_MS / 1000), at), false, "timestamp swapped");
    for (const bad of [undefined, null, "", "abc", "-1", "1e9"]) {
      assert.equal(await verifyWebhook(BODY, SIG, SECRET, bad, at), false, String(bad));
    }
  });
});
