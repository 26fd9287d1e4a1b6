// Drives the docs' Next.js page (app/outfit/page.tsx, useMaskpaintJob) in headless Chromium:
// picks a photo, presses Repaint, records every status line the hook renders, waits for the
// result image. Prints a JSON report. Used by tests/test_ts_examples.py.
//
// Usage: node hook.mjs --url http://127.0.0.1:3000/outfit --photo photo.jpg --chromium /usr/bin/chromium
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: v } = parseArgs({ options: { url: { type: "string" }, photo: { type: "string" }, chromium: { type: "string" } } });
const browser = await chromium.launch({ executablePath: v.chromium, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const report = { errors: [], requests: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(180_000);
  page.on("pageerror", (e) => report.errors.push(String(e)));
  page.on("request", (r) => { if (r.url().includes("/api/")) report.requests.push(`${r.method()} ${new URL(r.url()).pathname}`); });
  await page.goto(v.url);
  await page.waitForFunction(() => document.querySelector("#status")); // hydrated
  await page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => window.__seen.push(document.querySelector("#status").textContent))
      .observe(document.querySelector("#status"), { childList: true, subtree: true, characterData: true });
  });
  await page.setInputFiles("input[type=file]", v.photo);
  await page.waitForFunction(() => !document.querySelector("form button").disabled);
  await page.click("form button");
  await page.waitForFunction(() => document.querySelector("#result")?.complete || document.querySelector("[role=alert]"));
  report.alert = await page.evaluate(() => document.querySelector("[role=alert]")?.textContent ?? null);
  report.seen = [...new Set(await page.evaluate(() => window.__seen))];
  report.final = await page.textContent("#status");
  report.result = await page.evaluate(() => { const i = document.querySelector("#result"); return i && { src: i.src, width: i.naturalWidth, height: i.naturalHeight }; });

  // cancel: a job held in the queue (the routes' answers are canned here), then Cancel
  const held = [];
  await page.route("**/api/maskpaint/jobs**", (route) => {
    const r = route.request();
    held.push(`${r.method()} ${new URL(r.url()).pathname}`);
    if (r.method() === "POST") return route.fulfill({ status: 202, json: { id: "held-1", status: "queued", position: 1 } });
    if (r.method() === "DELETE") return route.fulfill({ json: { id: "held-1", status: "cancelled" } });
    return route.fulfill({ json: { id: "held-1", status: "queued", position: 1 } });
  });
  await page.click("form button");
  await page.waitForFunction(() => document.querySelector("#status").textContent.includes("1 ahead"));
  report.heldStatus = await page.textContent("#status");
  await page.click("text=Cancel");
  await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("cancelled"));
  report.cancelled = await page.textContent("#status");
  report.held = held;
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
