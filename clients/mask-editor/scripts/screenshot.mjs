// The reference page's whole loop in headless Chromium against a canned web API, then a
// screenshot (docs/mask-editor.png). The page runs unchanged with the real ModalClient;
// Playwright answers its `POST /jobs` and `GET /jobs/{id}` as the web API would (docs/web-api.md),
// with a canned mask (two garment ellipses, faces cut out) and a canned result (the
// photo with those regions recoloured): no worker, no models. It also checks what the page
// sends: a `task: "mask"` job, an error shown with its code and field, then an inpaint job whose
// `mask` is the edited mask at the photo's size. Throws on any mismatch.
//
// Usage: node scripts/screenshot.mjs --photo bus.jpg --out docs/mask-editor.png [--facts F.json]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "../test/browser/serve.mjs";
import { chromiumPath, LAUNCH_ARGS } from "../test/browser/run.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = path.resolve(HERE, "../..");

// bus.jpg (810 x 1080): the two men in front of the bus (photo px, hand-placed for the canned mask)
const FACES = [{ box: [112, 404, 162, 462], score: 0.93, detectors: ["blazeface"] }, { box: [262, 410, 306, 466], score: 0.91, detectors: ["blazeface"] }];
const HANDS = [{ box: [236, 500, 284, 542], score: 0.71, detectors: ["handpose"] }];
const GARMENTS = [{ cx: 150, cy: 600, rx: 70, ry: 112 }, { cx: 292, cy: 600, rx: 44, ry: 100 }];

function assert(cond, msg) { if (!cond) throw new Error(`screenshot check failed: ${msg}`); }

async function main() {
  const { values } = parseArgs({ options: { photo: { type: "string" }, out: { type: "string" }, facts: { type: "string" }, chromium: { type: "string" } } });
  if (!values.photo || !values.out) throw new Error("usage: screenshot.mjs --photo PATH --out PNG [--facts JSON]");
  const server = await serveStatic(CLIENTS, { "/__fixtures/photo.jpg": path.resolve(values.photo) });
  const browser = await chromium.launch({ executablePath: chromiumPath(values.chromium), args: LAUNCH_ARGS });
  const facts = { requests: [] };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));

    // canned artefacts, drawn by the browser from the photo
    await page.goto(`${server.url}/mask-editor/package.json`); // any page of the same origin
    const canned = await page.evaluate(async ({ GARMENTS, FACES }) => {
      const img = await createImageBitmap(await (await fetch("/__fixtures/photo.jpg")).blob());
      const w = img.width, h = img.height;
      const m = new OffscreenCanvas(w, h), g = m.getContext("2d");
      g.fillStyle = "#000"; g.fillRect(0, 0, w, h); g.fillStyle = "#fff";
      for (const e of GARMENTS) { g.beginPath(); g.ellipse(e.cx, e.cy, e.rx, e.ry, 0, 0, Math.PI * 2); g.fill(); }
      g.fillStyle = "#000";
      for (const f of FACES) { const [x0, y0, x1, y1] = f.box; g.fillRect(x0 - 12, y0 - 12, x1 - x0 + 24, y1 - y0 + 24); }
      const r = new OffscreenCanvas(w, h), rg = r.getContext("2d");
      rg.drawImage(img, 0, 0);
      const tint = new OffscreenCanvas(w, h), tg = tint.getContext("2d");
      tg.drawImage(m, 0, 0); tg.globalCompositeOperation = "source-in"; tg.fillStyle = "#b91c1c"; tg.fillRect(0, 0, w, h);
      // keep only the white part of the mask as the tint
      const md = g.getImageData(0, 0, w, h).data, td = tg.getImageData(0, 0, w, h);
      for (let i = 0; i < md.length; i += 4) td.data[i + 3] = md[i];
      tg.putImageData(td, 0, 0);
      rg.globalCompositeOperation = "color"; rg.drawImage(tint, 0, 0);
      const b64 = async (c, type) => {
        const buf = new Uint8Array(await (await c.convertToBlob({ type, quality: 0.9 })).arrayBuffer());
        let s = ""; for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
        return btoa(s);
      };
      return { w, h, mask: await b64(m, "image/png"), result: await b64(r, "image/jpeg") };
    }, { GARMENTS, FACES });

    const art = (kind, type, b64) => ({
      key: `jobs/demo/${kind}`, url: `data:${type};base64,${b64}`, content_type: type, width: canned.w, height: canned.h,
      bytes: Math.floor((b64.length * 3) / 4), sha256: "0".repeat(64), base64: b64,
    });
    const cannedOutput = (id, body) => {
      const task = body.task;
      return {
        job_id: id, task, seed: task === "inpaint" ? (body.seed ?? 1234567) : null,
        image: task === "inpaint" ? art("result.jpg", "image/jpeg", canned.result) : null,
        mask: art("mask.png", "image/png", canned.mask), overlay: art("overlay.png", "image/png", canned.mask),
        mask_info: { source: task === "inpaint" && body.mask ? "provided" : "auto", coverage: 0.06, detections: [{ label: "coat", group: "upper", score: 0.88, box: [80, 488, 220, 712] }, { label: "jacket", group: "upper", score: 0.84, box: [248, 500, 336, 700] }], faces: FACES, hands: HANDS, detector_issues: [] },
        model: task === "inpaint" ? "sd15-inpaint" : null, models: [],
        timings_ms: { total: task === "inpaint" ? 6210 : 840 }, size: [canned.w, canned.h],
      };
    };
    const jobs = new Map();
    let n = 0;
    await page.route(`${server.url}/jobs**`, async (route) => {
      const req = route.request();
      if (req.method() === "POST") {
        const body = req.postDataJSON();
        facts.requests.push({ task: body.task, prompt: body.prompt, targets: body.targets, hasMask: typeof body.mask === "string", output: body.output });
        if (body.task === "inpaint" && !body.prompt?.trim()) {
          return route.fulfill({ status: 422, json: { error: { code: "invalid_input", message: "prompt: required when task is 'inpaint'", field: "prompt", retryable: false } } });
        }
        const id = `demo-${++n}`;
        jobs.set(id, { body, polls: 0 });
        if (body.mask && values.facts) fs.writeFileSync(path.join(path.dirname(values.facts), `sent-mask-${id}.png`), Buffer.from(body.mask.split(",")[1], "base64"));
        return route.fulfill({ status: 202, json: { id, status: "queued" } });
      }
      const id = decodeURIComponent(new URL(req.url()).pathname.split("/").pop());
      const job = jobs.get(id);
      if (!job) return route.fulfill({ status: 404, json: { error: { code: "not_found", message: "job: unknown id", field: "id", retryable: false } } });
      if (job.polls++ < 1) return route.fulfill({ json: { id, status: "running" } });
      const task = job.body.task;
      const output = cannedOutput(id, job.body);
      return route.fulfill({ json: { status: "done", output } });
    });

    await page.goto(`${server.url}/mask-editor/page/?api=${encodeURIComponent(server.url)}`);
    await page.setInputFiles("#file", values.photo);
    await page.waitForSelector("#toolbar:not([hidden])");

    // 1. automatic mask -> editable layer with face/hand outlines
    await page.click("#auto");
    await page.waitForFunction(() => document.querySelector("#mask-facts").textContent.startsWith("Mask:"));
    const afterAuto = await page.evaluate(() => ({ coverage: window.maskpaintPage.editor.model.coverage(), canUndo: window.maskpaintPage.editor.canUndo }));
    assert(afterAuto.coverage > 0.02 && afterAuto.canUndo, `auto mask not loaded as the layer: ${JSON.stringify(afterAuto)}`);

    // 2. an error: the contract's code, message and field, with the field outlined
    await page.click("#submit");
    await page.waitForSelector("#error:not([hidden])");
    const err = await page.evaluate(() => ({ text: document.querySelector("#error").textContent, invalid: [...document.querySelectorAll(".invalid")].map((e) => e.textContent.trim().slice(0, 20)) }));
    assert(err.text.includes("invalid_input") && err.text.includes("field: prompt"), `error shown: ${err.text}`);
    assert(err.invalid.some((t) => t.startsWith("Prompt")), `prompt not outlined: ${err.invalid}`);
    facts.error = err;

    // 3. edit: a brush stroke on the bus sign, then erase across it
    // (the box is measured again before each stroke: clicking the toolbar may scroll the page)
    const canvas = page.locator("#canvas");
    const stroke = async ([x0, y0], [x1, y1]) => {
      const b = await canvas.boundingBox();
      const at = (x, y) => [b.x + (x / canned.w) * b.width, b.y + (y / canned.h) * b.height];
      await page.mouse.move(...at(x0, y0)); await page.mouse.down(); await page.mouse.move(...at(x1, y1), { steps: 8 }); await page.mouse.up();
    };
    await stroke([560, 700], [700, 700]);
    await page.check("input[name=tool][value=eraser]");
    facts.toolAfterCheck = await page.evaluate(() => window.maskpaintPage.editor.tool);
    await stroke([630, 640], [630, 760]);
    await page.check("input[name=tool][value=brush]");
    facts.edited = await page.evaluate(() => {
      const m = window.maskpaintPage.editor.model, v = (x, y) => m.data[y * m.width + x];
      return { stroke: v(580, 700), erased: v(630, 700), garment: v(150, 600), face: v(137, 433) };
    });
    const e = facts.edited;
    assert(e.stroke === 255 && e.erased === 0 && e.garment === 255 && e.face === 0, `edited mask: ${JSON.stringify(e)}`);

    // 4. repaint with a prompt: progress, then the gallery
    await page.fill("textarea[name=prompt]", "a red leather jacket");
    await page.fill("input[name=seed]", "42");
    await page.click("#submit");
    await page.waitForSelector(".gallery .card");
    await page.evaluate(() => document.querySelector(".compare").style.setProperty("--pos", "25%"));
    await page.evaluate(() => Promise.all([...document.images].map((i) => i.decode().catch(() => {}))));
    await page.evaluate(() => window.scrollTo(0, 0));
    const b = await canvas.boundingBox();
    await page.mouse.move(b.x + b.width * 0.75, b.y + b.height * 0.3); // the brush outline
    facts.status = await page.textContent("#status .status-body");
    facts.links = await page.$$eval(".card .links a", (as) => as.map((a) => a.textContent));
    facts.errors = errors;
    assert(errors.length === 0, `page errors: ${errors}`);
    await page.screenshot({ path: values.out, fullPage: true });

    // 5. the same page on a RunPod endpoint (RunpodClient): the worker's progress (stage, step) is shown
    let polls = 0;
    await page.route(`${server.url}/run`, (route) => route.fulfill({ json: { id: "rp-1", status: "IN_QUEUE" } }));
    await page.route(`${server.url}/status/**`, (route) => {
      const body = JSON.parse(route.request().postData() ?? "null");
      polls++;
      if (polls <= 3) return route.fulfill({ json: { id: "rp-1", status: "IN_PROGRESS", output: { stage: "inpaint", step: 12, steps: 30 } } });
      return route.fulfill({ json: { id: "rp-1", status: "COMPLETED", output: cannedOutput("rp-1", { task: "inpaint", seed: 7, body }) } });
    });
    await page.goto(`${server.url}/mask-editor/page/?provider=runpod&api=${encodeURIComponent(server.url)}`);
    await page.setInputFiles("#file", values.photo);
    await page.waitForSelector("#toolbar:not([hidden])");
    await page.fill("textarea[name=prompt]", "a red leather jacket");
    await page.click("#submit");
    await page.waitForFunction(() => document.querySelector("#status .status-body").textContent.includes("stage: inpaint step 12 / 30"));
    facts.runpodProgress = await page.evaluate(() => ({ text: document.querySelector("#status .status-body").textContent, bar: document.querySelector("#status progress")?.value }));
    await page.waitForSelector(".gallery .card");
    facts.runpodStatus = await page.textContent("#status .status-body");
  } finally {
    await browser.close();
    await server.close();
  }
  if (values.facts) fs.writeFileSync(values.facts, JSON.stringify(facts, null, 2));
  console.log(JSON.stringify(facts));
}

main().catch((e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
