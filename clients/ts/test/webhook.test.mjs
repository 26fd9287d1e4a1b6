import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, test } from "node:test";

import { verifyWebhook, WEBHOOK_SIGNATURE_HEADER } from "../dist/index.js";

const SECRET = "whsec-0123456789";
const BODY = '{"id":"fc-01","status":"done","output":{"job_id":"fc-01"}}';
// what handlers/webhook.py sends: sha256= + hex HMAC-SHA256 of the raw body
const SIG = `sha256=${createHmac("sha256", SECRET).update(BODY).digest("hex")}`;

describe("verifyWebhook", () => {
  test("accepts the server's signature over the raw body (string, bytes, ArrayBuffer)", async () => {
    assert.equal(WEBHOOK_SIGNATURE_HEADER, "X-Maskpaint-Signature");
    assert.equal(await verifyWebhook(BODY, SIG, SECRET), true);
    const bytes = new TextEncoder().encode(BODY);
    assert.equal(await verifyWebhook(bytes, SIG, SECRET), true);
    assert.equal(await verifyWebhook(bytes.buffer, SIG.toUpperCase().replace("SHA256=", "sha256="), SECRET), true);
  });

  test("rejects a changed body, another secret, and malformed or missing headers", async () => {
    assert.equal(await verifyWebhook(BODY.replace("done", "failed"), SIG, SECRET), false);
    assert.equal(await verifyWebhook(BODY, SIG, "another-secret"), false);
    for (const bad of [undefined, null, "", "sha256=", SIG.slice(0, -2), SIG.replace("sha256=", "sha1="), `${SIG}00`]) {
      assert.equal(await verifyWebhook(BODY, bad, SECRET), false, String(bad));
    }
    assert.equal(await verifyWebhook(BODY, SIG, ""), false);
  });
});
