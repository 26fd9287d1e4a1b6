// The reference page in headless Chromium against canned APIs (Playwright answers the
// requests; no worker): where the saved key may go, cancel, a HEIC photo, a phone's width,
// the no-paint layer, a synthetic pen, a mask from another origin without CORS, "Download
// all". Writes facts.json (and screenshots) to --out; tests/test_mask_editor.py checks them.
//
// Usage: node test/browser/page.mjs --photo bus.jpg --heic photo.heic --out DIR [--chromium PATH]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "./serve.mjs";
import { chromiumPath, LAUNCH_ARGS } from "./run.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = path.resolve(HERE, "../../..");
const EVIL = "http://evil.test";
const FACES = [{ box: [112, 404, 162, 462], score: 0.93, detectors: ["blazeface"] }];
const HANDS = [{ box: [236, 500, 284, 542], score: 0.71, detectors: ["palm"] }];
const STEP_MS = 20_000; // any single wait below

const { values: v } = parseArgs({ options: { photo: { type: "string" }, heic: { type: "string" }, out: { type: "string" }, chromium: { type: "string" } } });
if (!v.photo || !v.heic || !v.out) throw new Error("usage: page.mjs --photo JPG --heic HEIC --out DIR");
fs.mkdirSync(v.out, { recursive: true });
const facts = {};

/** Canned task "mask" / "inpaint" outputs built in the browser from the photo (base64 inline). */
async function cannedArt(page) {
  return page.evaluate(async () => {
    const img = await createImageBitmap(await (await fetch("/__fixtures/photo.jpg")).blob());
    const w = img.width, h = img.height;
    const m = new OffscreenCanvas(w, h), g = m.getContext("2d");
    g.fillStyle = "#000"; g.fillRect(0, 0, w, h); g.fillStyle = "#fff"; g.fillRect(80, 500, 140, 200);
    const b64 = async (c, type) => {
      const buf = new Uint8Array(await (await c.convertToBlob({ type })).arrayBuffer());
      let s = ""; for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
      return btoa(s);
    };
    const p = new OffscreenCanvas(w, h); p.getContext("2d").drawImage(img, 0, 0);
    return { w, h, mask: await b64(m, "image/png"), photo: await b64(p, "image/jpeg") };
  });
}

function output(art, id, task, extra = {}) {
  const a = (kind, type, b64) => ({ key: `jobs/${id}/${kind}`, url: `https://bucket.test/${id}/${kind}`, content_type: type, width: art.w, height: art.h, bytes: 1, sha256: "0".repeat(64), base64: b64 });
  return {
    job_id: id, task, seed: 7, model: "sd15-inpaint", models: [],
    image: task === "inpaint" ? a("result.jpg", "image/jpeg", art.photo) : null,
    mask: a("mask.png", "image/png", art.mask), overlay: a("overlay.jpg", "image/jpeg", art.photo),
    mask_info: { source: "auto", coverage: 0.03, detections: [], faces: FACES, hands: HANDS, detector_issues: [] },
    timings_ms: { total: 500 }, size: [art.w, art.h], ...extra,
  };
}

/**
 * A canned web API on `base`: records every request; `script(body, polls)` gives a poll's
 * reply for a job (default: done at the second poll).
 */
async function cannedWeb(page, base, art, log, script) {
  const jobs = new Map();
  let n = 0;
  await page.route(`${base}/**`, async (route) => {
    const req = route.request();
    const url = new URL(req.url());
    if (!url.pathname.startsWith("/jobs") && !url.pathname.startsWith("/run") && !url.pathname.startsWith("/status")) return route.fallback();
    const headers = await req.allHeaders();
    const rec = { method: req.method(), origin: url.origin, path: url.pathname, authorization: headers.authorization ?? null };
    log.push(rec);
    if (req.method() === "POST" && (url.pathname === "/jobs" || url.pathname === "/run")) {
      const body = req.postDataJSON();
      const input = body.input ?? body;
      rec.task = input.task;
      rec.image = String(input.image).slice(0, 40);
      rec.idempotencyKey = headers["idempotency-key"] ?? null;
      const id = `job-${++n}`;
      jobs.set(id, { input, polls: 0, cancelled: false });
      return route.fulfill({ status: 202, json: url.pathname === "/run" ? { id, status: "IN_QUEUE" } : { id, status: "queued", position: 2 } });
    }
    const id = decodeURIComponent(url.pathname.split("/").pop());
    const job = jobs.get(id);
    if (!job) return route.fulfill({ status: 404, json: { error: { code: "not_found", message: "unknown id", field: "id", retryable: false } } });
    if (req.method() === "DELETE") {
      job.cancelled = true;
      return route.fulfill({ json: { id, status: "cancelled" } });
    }
    if (job.cancelled) return route.fulfill({ json: { id, status: "cancelled" } });
    job.polls++;
    const reply = script?.(job.input, job.polls, id) ?? (job.polls < 2 ? { id, status: "running" } : { id, status: "done", output: output(art, id, job.input.task) });
    if (url.pathname.startsWith("/status")) {
      const rp = reply.status === "done" ? { id, status: "COMPLETED", output: reply.output } : { id, status: "IN_PROGRESS" };
      return route.fulfill({ json: rp });
    }
    return route.fulfill({ json: reply });
  });
}

const server = await serveStatic(CLIENTS, { "/__fixtures/photo.jpg": path.resolve(v.photo), "/__fixtures/mask.png": path.resolve(v.photo) });
const browser = await chromium.launch({ executablePath: chromiumPath(v.chromium), args: LAUNCH_ARGS });
const PAGE = `${server.url}/mask-editor/page/`;
const errors = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  ctx.setDefaultTimeout(STEP_MS);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${server.url}/mask-editor/package.json`);
  const art = await cannedArt(page);
  const log = [];
  await cannedWeb(page, server.url, art, log);
  await cannedWeb(page, EVIL, art, log);

  // 1. ?token= leaves the address bar at once and is saved for this origin only
  await page.goto(`${PAGE}?token=tok-own`);
  facts.toolbarBeforePhoto = await page.evaluate(() => getComputedStyle(document.querySelector("#toolbar")).display);
  facts.addressAfterToken = await page.evaluate(() => location.href);
  facts.historyLength = await page.evaluate(() => history.length);
  facts.savedAfterToken = await page.evaluate(() => JSON.parse(localStorage.getItem("maskpaint.page.settings")));

  // 2. a crafted link to another API: asked first; the saved API (and its key) until agreed
  await page.goto(`${PAGE}?api=${encodeURIComponent(EVIL)}`);
  facts.askShown = await page.isVisible("#link-api");
  facts.askText = await page.textContent("#link-api");
  await page.setInputFiles("#file", v.photo);
  await page.click("#auto");
  await page.waitForFunction(() => document.querySelector("#mask-facts").textContent.startsWith("Mask:"));
  facts.beforeAgreeing = log.splice(0);
  await page.click("#link-api-use");
  await page.click("#auto");
  await page.waitForFunction(() => document.querySelector("#status .status-body").textContent.startsWith("Mask ready"));
  facts.afterAgreeing = log.splice(0);
  facts.savedAfterAgreeing = await page.evaluate(() => JSON.parse(localStorage.getItem("maskpaint.page.settings")));

  // 3. the same with a saved RunPod key and ?provider=runpod
  await page.evaluate(() => localStorage.setItem("maskpaint.page.settings", JSON.stringify({ provider: "runpod", api: "", endpoint: "ep1", tokens: { "https://api.runpod.ai": "rp-key" } })));
  await page.goto(`${PAGE}?provider=runpod&api=${encodeURIComponent(EVIL)}`);
  facts.runpodAskShown = await page.isVisible("#link-api");
  await page.click("#link-api-use");
  await page.setInputFiles("#file", v.photo);
  await page.click("#auto");
  await page.waitForFunction(() => document.querySelector("#status .status-body").textContent.startsWith("Mask ready"));
  facts.runpodRequests = log.splice(0);

  // 4. a server-given javascript: URL never becomes a link or an image source
  await page.evaluate(() => localStorage.clear());
  await page.goto(PAGE);
  await page.setInputFiles("#file", v.photo);
  await page.waitForSelector("#toolbar:not([hidden])");
  await page.evaluate(({ art }) => {
    const a = (kind) => ({ key: kind, url: "javascript:alert(document.domain)", content_type: "image/png", width: art.w, height: art.h, bytes: 1, sha256: "0" });
    window.maskpaintPage.addResult({ job_id: "x", seed: 1, image: a("image"), mask: a("mask"), overlay: { ...a("overlay"), base64: "PHNjcmlwdD4=", content_type: "text/html" }, timings_ms: {} }, { prompt: "p" });
  }, { art });
  facts.hostileUrls = await page.evaluate(() => [...document.querySelectorAll(".gallery a, .gallery img")].map((e) => e.getAttribute("href") ?? e.getAttribute("src")).filter((u) => u && !u.startsWith("blob:")));

  // 5. cancel a queued, then running job: DELETE /jobs/{id}; the bar is never full while it runs
  await page.unroute(`${server.url}/**`);
  await cannedWeb(page, server.url, art, log, (input, polls, id) => (polls < 3
    ? { id, status: "queued", position: 3 - polls }
    : { id, status: "running", progress: { stage: "inpaint", step: 8, steps: 8 } }));
  await page.goto(PAGE);
  await page.setInputFiles("#file", v.photo);
  await page.fill("textarea[name=prompt]", "a red coat");
  await page.click("#submit");
  await page.waitForFunction(() => /queued, \d ahead/.test(document.querySelector("#status").textContent));
  facts.queuedText = await page.textContent("#status .status-body");
  await page.waitForFunction(() => document.querySelector("#status progress"));
  facts.runningBar = await page.evaluate(() => { const b = document.querySelector("#status progress"); return { value: b.value, max: b.max, text: document.querySelector("#status .status-body").textContent }; });
  facts.cancelVisible = await page.isVisible("#cancel");
  await page.click("#cancel");
  await page.waitForFunction(() => document.querySelector("#status .status-body").textContent.startsWith("Cancelled"));
  facts.cancelledText = await page.textContent("#status .status-body");
  facts.cancelRequests = log.splice(0).filter((r) => r.method !== "GET");
  facts.buttonsAfterCancel = await page.evaluate(() => ({ submit: document.querySelector("#submit").disabled, cancelHidden: document.querySelector("#cancel").hidden }));

  // 6. a HEIC photo (Chromium cannot decode it): the worker's decoded preview is shown
  await page.unroute(`${server.url}/**`);
  await cannedWeb(page, server.url, art, log);
  await page.goto(PAGE);
  await page.setInputFiles("#file", v.heic);
  await page.waitForFunction(() => document.querySelector("#mask-facts").textContent.startsWith("Mask:") || !document.querySelector("#error").hidden);
  facts.heic = await page.evaluate(() => ({
    error: document.querySelector("#error").hidden ? null : document.querySelector("#error").textContent,
    size: window.maskpaintPage.editor.size, toolbar: !document.querySelector("#toolbar").hidden,
    decodedBy: window.maskpaintPage.photo?.decodedBy, photoIsHeicDataUrl: window.maskpaintPage.photo?.dataUrl.startsWith("data:"),
  }));
  facts.heicRequests = log.splice(0).filter((r) => r.method === "POST");

  // 7. the no-paint layer: drawn over faces and hands; a brush stroke across a face stops there
  await page.goto(PAGE);
  await page.setInputFiles("#file", v.photo);
  await page.click("#auto");
  await page.waitForFunction(() => document.querySelector("#mask-facts").textContent.startsWith("Mask:"));
  facts.protection = await page.evaluate(async () => {
    const ed = window.maskpaintPage.editor;
    const px = () => { ed.render(); return [...ed.canvas.getContext("2d").getImageData(137, 410, 1, 1).data]; };
    const drawn = px();
    const boxes = ed.model.protectedBoxes;
    const regions = ed._protectedGuides;
    ed.setProtected([]);
    const bare = px();
    ed.setProtected(regions);
    // a synthetic pen stroke across the face (dispatched events: no active pointer to capture)
    const r = ed.canvas.getBoundingClientRect();
    const at = (x, y) => ({ clientX: r.left + (x / ed.size.width) * r.width, clientY: r.top + (y / ed.size.height) * r.height });
    const opts = { pointerId: 77, pointerType: "pen", isPrimary: true, bubbles: true, button: 0, buttons: 1, pressure: 0.5 };
    ed.canvas.dispatchEvent(new PointerEvent("pointerdown", { ...opts, ...at(40, 433) }));
    for (let x = 60; x <= 240; x += 20) ed.canvas.dispatchEvent(new PointerEvent("pointermove", { ...opts, ...at(x, 433) }));
    ed.canvas.dispatchEvent(new PointerEvent("pointerup", { ...opts, ...at(240, 433), buttons: 0 }));
    const v = (x, y) => ed.model.data[y * ed.model.width + x];
    return { boxes, drawn, bare, before: v(45, 433), face: v(137, 433), after: v(230, 433) };
  });
  await page.screenshot({ path: path.join(v.out, "protected.png") });

  // 8. setMask of an image on another origin without CORS: says it is CORS
  const otherOrigin = server.url.replace("127.0.0.1", "localhost");
  facts.corsError = await page.evaluate(async (u) => {
    try { await window.maskpaintPage.editor.setMask(u); return null; } catch (e) { return `${e.name}: ${e.message}`; }
  }, `${otherOrigin}/__fixtures/mask.png`);

  // 9. Download all: the three artefacts, named after the job
  await page.fill("textarea[name=prompt]", "a red coat");
  await page.click("#submit");
  await page.waitForSelector(".gallery .card");
  facts.resultInView = await page.evaluate(() => new Promise((res) => setTimeout(() => {
    const r = document.querySelector(".gallery .card").getBoundingClientRect();
    res(r.top < innerHeight && r.bottom > 0);
  }, 1200)));
  const names = [];
  page.on("download", (d) => names.push(d.suggestedFilename()));
  await page.click(".gallery .card .download-all");
  const t0 = Date.now();
  while (names.length < 3 && Date.now() - t0 < STEP_MS) await page.waitForTimeout(100);
  facts.downloads = names.sort();
  await ctx.close();

  // 10. a phone, 390 px wide: no horizontal scroll before a photo, with one, with a result
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true, deviceScaleFactor: 2 });
  phone.setDefaultTimeout(STEP_MS);
  const p2 = await phone.newPage();
  p2.on("pageerror", (e) => errors.push(String(e)));
  await cannedWeb(p2, server.url, art, []);
  const width = () => p2.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth, toolbar: getComputedStyle(document.querySelector("#toolbar")).display, auto: document.querySelector("#auto").getBoundingClientRect().right }));
  await p2.goto(PAGE);
  facts.phone = { empty: await width() };
  await p2.setInputFiles("#file", v.photo);
  await p2.waitForSelector("#toolbar:not([hidden])");
  facts.phone.photo = await width();
  facts.phone.toolbarRows = await p2.evaluate(() => { const t = document.querySelector("#toolbar").getBoundingClientRect(); return { width: t.width, right: t.right, height: t.height }; });
  await p2.fill("textarea[name=prompt]", "a red coat");
  await p2.click("#submit");
  await p2.waitForSelector(".gallery .card");
  facts.phone.result = await width();
  await p2.screenshot({ path: path.join(v.out, "phone.png"), fullPage: true });
  await phone.close();
} finally {
  facts.errors = errors;
  fs.writeFileSync(path.join(v.out, "facts.json"), JSON.stringify(facts, null, 2));
  await browser.close();
  await server.close();
}
