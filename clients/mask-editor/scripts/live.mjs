// The reference page's whole loop in headless Chromium against a LIVE local web API
// (`make serve` / `python -m handlers.serve`, dev weights): a bad file shows `invalid_image`;
// then the photo, the automatic mask (a `task: "mask"` job), one brush stroke and an eraser stroke
// across it (synthetic pointer events), a 2-step repaint job, progress while it runs, the result
// in the gallery. Writes the screenshot (docs/mask-editor.png), the mask the page sent, and facts
// for tests/test_mask_editor.py, which checks the pixels. Throws on any page error.
//
// Usage: node scripts/live.mjs --url 'http://127.0.0.1:PORT/mask-editor/page/?token=T' \
//   --photo bus.jpg --bad not-an-image.jpg --out shot.png --mask sent-mask.png --facts facts.json
import fs from "node:fs";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { chromiumPath, LAUNCH_ARGS } from "../test/browser/run.mjs";

// the stroke and the eraser's cut, in photo px of bus.jpg (810 x 1080): across the bus's side
export const STROKE = { from: [520, 640], to: [720, 640], brush: 40 };
export const ERASE = { from: [620, 590], to: [620, 690], brush: 20 };
const JOB_WAIT_MS = 240_000;

function assert(cond, msg) { if (!cond) throw new Error(`live check failed: ${msg}`); }

async function main() {
  const { values: v } = parseArgs({ options: { url: { type: "string" }, photo: { type: "string" }, bad: { type: "string" }, out: { type: "string" }, mask: { type: "string" }, facts: { type: "string" }, chromium: { type: "string" } } });
  if (!v.url || !v.photo || !v.bad || !v.out || !v.mask || !v.facts) throw new Error("usage: live.mjs --url U --photo P --bad F --out PNG --mask PNG --facts JSON");
  const browser = await chromium.launch({ executablePath: chromiumPath(v.chromium), args: LAUNCH_ARGS });
  const facts = { statuses: [] };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(v.url);

    // a file that is not an image: the contract's invalid_image, shown with its field
    await page.setInputFiles("#file", v.bad);
    await page.waitForSelector("#error:not([hidden])");
    facts.badFile = await page.textContent("#error");

    // the photo, then the automatic mask from the live worker
    await page.setInputFiles("#file", v.photo);
    await page.waitForSelector("#toolbar:not([hidden])");
    facts.errorHiddenAfterPhoto = await page.evaluate(() => document.querySelector("#error").hidden);
    await page.click("#auto");
    await page.waitForFunction(() => /^Mask:/.test(document.querySelector("#mask-facts").textContent) || !document.querySelector("#error").hidden, null, { timeout: JOB_WAIT_MS });
    facts.maskFacts = await page.textContent("#mask-facts");
    facts.autoError = await page.evaluate(() => (document.querySelector("#error").hidden ? null : document.querySelector("#error").textContent));

    // edit: brush one stroke, erase across it (pointer events from the mouse)
    const canvas = page.locator("#canvas");
    const size = await page.evaluate(() => ({ w: window.maskpaintPage.photo.width, h: window.maskpaintPage.photo.height }));
    const stroke = async ({ from: [x0, y0], to: [x1, y1], brush }) => {
      const b = await canvas.boundingBox();
      const css = brush * (b.width / size.w); // brush size is in CSS px of the displayed canvas
      await page.evaluate((s) => { window.maskpaintPage.editor.brushSize = s; }, css);
      const at = (x, y) => [b.x + (x / size.w) * b.width, b.y + (y / size.h) * b.height];
      await page.mouse.move(...at(x0, y0)); await page.mouse.down(); await page.mouse.move(...at(x1, y1), { steps: 12 }); await page.mouse.up();
    };
    await stroke(STROKE);
    await page.check("input[name=tool][value=eraser]");
    await stroke(ERASE);
    await page.check("input[name=tool][value=brush]");
    const sent = await page.evaluate(() => window.maskpaintPage.editor.toDataURL());
    fs.writeFileSync(v.mask, Buffer.from(sent.split(",")[1], "base64"));

    // repaint, 2 steps; record every status line shown while it runs
    await page.evaluate(() => {
      window.__statuses = [];
      new MutationObserver(() => window.__statuses.push(document.querySelector("#status .status-body").textContent))
        .observe(document.querySelector("#status"), { childList: true, subtree: true, characterData: true });
    });
    await page.fill("textarea[name=prompt]", "a red leather jacket");
    await page.fill("input[name=num_inference_steps]", "2");
    await page.fill("input[name=seed]", "42");
    await page.click("#submit");
    await page.waitForFunction(() => document.querySelector(".gallery .card") || !document.querySelector("#error").hidden, null, { timeout: JOB_WAIT_MS });
    facts.repaintError = await page.evaluate(() => (document.querySelector("#error").hidden ? null : document.querySelector("#error").textContent));
    assert(!facts.repaintError, `repaint failed: ${facts.repaintError}`);
    await page.evaluate(() => Promise.all([...document.images].map((i) => i.decode().catch(() => {}))));
    facts.statuses = await page.evaluate(() => window.__statuses);
    facts.status = await page.textContent("#status .status-body");
    facts.after = await page.evaluate(() => {
      const img = document.querySelector(".card img.after");
      return { src: img.src, width: img.naturalWidth, height: img.naturalHeight };
    });
    facts.links = await page.$$eval(".card .links a", (as) => as.map((a) => a.textContent));
    await page.evaluate(() => document.querySelector(".compare").style.setProperty("--pos", "50%"));
    await page.evaluate(() => window.scrollTo(0, 0));
    facts.errors = errors;
    await page.screenshot({ path: v.out, fullPage: true });
  } finally {
    await browser.close();
  }
  fs.writeFileSync(v.facts, JSON.stringify(facts, null, 2));
  console.log(JSON.stringify(facts));
}

main().catch((e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
