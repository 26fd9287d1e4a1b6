// The reference page's rules for where requests go and with which key (page/settings.js).
import test from "node:test";
import assert from "node:assert/strict";

import { apiOrigin, linkChoice, readSaved, safeHttpUrl, stripTokenFromAddress, tokenFor, writeSaved } from "../page/settings.js";

const PAGE = { origin: "http://127.0.0.1:8000", protocol: "http:", pathname: "/mask-editor/page/", hash: "" };

function memoryStorage(init = {}) {
  const m = new Map(Object.entries(init));
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), map: m };
}

const savedModal = {
  provider: "web", api: "https://ws--maskpaint-api.modal.run", endpoint: "",
  tokens: { "https://ws--maskpaint-api.modal.run": "modal-secret", "https://api.runpod.ai": "rp-secret" },
};

test("a link to another API origin is pending; the saved settings and keys stay in use", () => {
  const c = linkChoice(savedModal, new URLSearchParams("api=http://evil.example"), null, PAGE);
  assert.equal(c.accepted, false);
  assert.equal(c.settings.api, savedModal.api, "until the person agrees, the saved API is used");
  assert.equal(c.pending.settings.api, "http://evil.example");
  assert.equal(tokenFor(savedModal, c.pending.settings), "", "no saved key is bound to the link's origin");
});

test("?provider=runpod with a foreign api never gets the saved RunPod key", () => {
  const c = linkChoice(savedModal, new URLSearchParams("provider=runpod&api=https://evil.example/v2/x"), null, PAGE);
  assert.ok(c.pending);
  assert.equal(apiOrigin(c.pending.settings), "https://evil.example");
  assert.equal(tokenFor(savedModal, c.pending.settings), "");
  // RunPod's hosted API is where the RunPod key was saved: it may go there
  const hosted = linkChoice({ ...savedModal, provider: "runpod", api: "" }, new URLSearchParams("provider=runpod&endpoint=abc"), null, PAGE);
  assert.equal(hosted.accepted, true);
  assert.equal(tokenFor(savedModal, hosted.settings), "rp-secret");
});

test("a link to the same origin is used at once; a bare ?token= only for the page's own server", () => {
  const same = linkChoice(savedModal, new URLSearchParams(`api=${savedModal.api}/`), "t2", PAGE);
  assert.equal(same.accepted, true);
  const fresh = readSaved(memoryStorage());
  const own = linkChoice(fresh, new URLSearchParams(""), "serve-token", PAGE);
  assert.equal(own.accepted, true);
  assert.equal(apiOrigin(own.settings), PAGE.origin);
  const elsewhere = linkChoice(savedModal, new URLSearchParams(""), "other-token", PAGE);
  assert.equal(elsewhere.accepted, false, "a bare token is not bound to a saved remote API");
  const bad = linkChoice(savedModal, new URLSearchParams("api=javascript:alert(1)"), null, PAGE);
  assert.equal(bad.pending, null);
  assert.equal(bad.settings.api, savedModal.api);
});

test("an old saved entry's single token is bound to the origin it was saved with", () => {
  const st = memoryStorage({ "maskpaint.page.settings": JSON.stringify({ provider: "web", api: "https://a.example/x", token: "old" }) });
  const s = readSaved(st);
  assert.deepEqual(s.tokens, { "https://a.example": "old" });
  writeSaved(s, st);
  assert.deepEqual(JSON.parse(st.map.get("maskpaint.page.settings")).tokens, { "https://a.example": "old" });
  assert.equal(tokenFor(s, { provider: "web", api: "https://b.example" }), "");
});

test("?token= leaves the address at once, other parameters stay", () => {
  const calls = [];
  const loc = { ...PAGE, search: "?api=http%3A%2F%2F127.0.0.1%3A8000&token=s3cret" };
  const token = stripTokenFromAddress(loc, { state: null, replaceState: (...a) => calls.push(a) });
  assert.equal(token, "s3cret");
  assert.equal(calls.length, 1);
  assert.ok(!calls[0][2].includes("s3cret") && calls[0][2].includes("api="));
  assert.equal(stripTokenFromAddress({ ...PAGE, search: "" }, { replaceState: () => assert.fail() }), null);
});

test("only http(s) URLs from a server reach href/src", () => {
  assert.equal(safeHttpUrl("javascript:alert(1)"), null);
  assert.equal(safeHttpUrl("data:text/html,<script>"), null);
  assert.equal(safeHttpUrl("https://b.example/x.png?sig=1"), "https://b.example/x.png?sig=1");
  assert.equal(safeHttpUrl(undefined), null);
});
