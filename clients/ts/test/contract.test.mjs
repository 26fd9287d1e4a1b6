// The generated types and code lists agree with the committed JSON Schema.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { defaultRetryable, ERROR_CODES, isErrorCode, MaskpaintError, RETRYABLE_ERROR_CODES } from "../dist/index.js";

const schema = JSON.parse(readFileSync(new URL("../../../schema/maskpaint.schema.json", import.meta.url), "utf8"));

test("ERROR_CODES and RETRYABLE_ERROR_CODES come from schema/maskpaint.schema.json", () => {
  assert.deepEqual([...ERROR_CODES], schema.$defs.ErrorCode.enum);
  assert.deepEqual([...RETRYABLE_ERROR_CODES], schema.$defs.ErrorCode["x-retryable"]);
  assert.ok(isErrorCode("empty_mask"));
  assert.ok(!isErrorCode("network_error"));
  for (const c of ERROR_CODES) assert.equal(defaultRetryable(c), RETRYABLE_ERROR_CODES.includes(c), c);
  for (const [c, r] of [["network_error", true], ["rate_limited", true], ["client_timeout", true], ["aborted", false], ["unauthorized", false], ["bad_response", false]]) {
    assert.equal(defaultRetryable(c), r, c);
  }
});

test("MaskpaintError is an Error with stable fields", () => {
  const e = new MaskpaintError({ code: "empty_mask", message: "the mask is empty", field: "mask" });
  assert.ok(e instanceof Error);
  assert.equal(e.name, "MaskpaintError");
  assert.equal(e.retryable, false);
  assert.deepEqual(e.toJSON(), {
    name: "MaskpaintError", code: "empty_mask", message: "the mask is empty", field: "mask",
    retryable: false, httpStatus: undefined, jobId: undefined, provider: undefined,
  });
});
