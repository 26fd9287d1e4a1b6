// The MaskEditor in real headless Chromium (Debian's `chromium`, driven by playwright-core; no
// browser download). Loads test/browser/editor.html with a photo, paints with a mouse stroke
// and a pen stroke, erases part of the first with a touch stroke (CDP input events, which
// Chromium turns into pointer events), exports the mask in both conventions, undoes the
// eraser and exports again. Writes the PNGs and facts.json to --out; tests/test_mask_editor.py
// checks the pixels with Pillow and the worker's own mask reader.
//
// Usage: node test/browser/run.mjs --photo PATH --out DIR [--chromium PATH]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "./serve.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENTS = path.resolve(HERE, "../../..");

/** The Chromium executable: --chromium, $MASKPAINT_CHROMIUM, else Debian's paths. */
export function chromiumPath(explicit) {
  const candidates = [explicit, process.env.MASKPAINT_CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"];
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  throw new Error("no Chromium found: install Debian's `chromium` (apt-get install -y chromium) or set MASKPAINT_CHROMIUM");
}

/** Launch args: headless, no sandbox (CI runs as root, where Chromium's sandbox refuses to start). */
export const LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--force-color-profile=srgb"];

async function main() {
  const { values } = parseArgs({ options: { photo: { type: "string" }, out: { type: "string" }, chromium: { type: "string" } } });
  if (!values.photo || !values.out) throw new Error("usage: run.mjs --photo PATH --out DIR [--chromium PATH]");
  fs.mkdirSync(values.out, { recursive: true });
  const server = await serveStatic(CLIENTS, { "/__fixtures/photo.jpg": path.resolve(values.photo) });
  const browser = await chromium.launch({ executablePath: chromiumPath(values.chromium), args: LAUNCH_ARGS });
  const facts = { browser: browser.version() };
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 }, hasTouch: true, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(`${server.url}/mask-editor/test/browser/editor.html`);
    await page.waitForFunction(() => window.ready === true || undefined, null, { timeout: 30_000 });
    facts.photoSize = await page.evaluate(() => window.photoSize);
    facts.rect = await page.evaluate(() => {
      const r = document.getElementById("c").getBoundingClientRect();
      return { left: r.left, top: r.top, width: r.width, height: r.height };
    });
    const cdp = await context.newCDPSession(page);

    // 1. mouse, brush 30 CSS px: client (70, 220) -> (370, 220)
    await page.evaluate(() => { window.editor.tool = "brush"; window.editor.brushSize = 30; });
    await page.mouse.move(70, 220);
    await page.mouse.down();
    await page.mouse.move(370, 220, { steps: 12 });
    await page.mouse.up();

    // 2. pen, brush 10 CSS px: client (100, 450) -> (300, 450)
    await page.evaluate(() => { window.editor.brushSize = 10; });
    const pen = (type, x, y, extra = {}) =>
      cdp.send("Input.dispatchMouseEvent", { type, x, y, pointerType: "pen", button: "left", buttons: type === "mouseReleased" ? 0 : 1, clickCount: 1, force: 0.5, ...extra });
    await pen("mouseMoved", 100, 450, { buttons: 0, button: "none" });
    await pen("mousePressed", 100, 450);
    for (let x = 120; x <= 300; x += 20) await pen("mouseMoved", x, 450);
    await pen("mouseReleased", 300, 450);

    // 3. touch, eraser 20 CSS px: client (220, 190) -> (220, 250), across stroke 1
    await page.evaluate(() => { window.editor.tool = "eraser"; window.editor.brushSize = 20; });
    const touch = (type, pts) => cdp.send("Input.dispatchTouchEvent", { type, touchPoints: pts });
    await touch("touchStart", [{ x: 220, y: 190, id: 1 }]);
    for (let y = 200; y <= 250; y += 10) await touch("touchMove", [{ x: 220, y, id: 1 }]);
    await touch("touchEnd", []);

    await page.screenshot({ path: path.join(values.out, "editor-strokes.png") });
    facts.pointerTypesSeen = await page.evaluate(() => window.pointerTypes ?? null);
    facts.changes = await page.evaluate(() => window.changes);
    facts.canUndo = await page.evaluate(() => window.editor.canUndo);

    const exportPng = async (name, convention) => {
      const b64 = await page.evaluate(async (conv) => {
        const blob = await window.editor.toBlob(conv);
        const buf = new Uint8Array(await blob.arrayBuffer());
        let s = "";
        for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
        return btoa(s);
      }, convention);
      fs.writeFileSync(path.join(values.out, name), Buffer.from(b64, "base64"));
    };
    await exportPng("mask-white-on-black.png", "white-on-black");
    await exportPng("mask-alpha.png", "alpha");
    facts.dataUrlPrefix = await page.evaluate(() => window.editor.toDataURL().slice(0, 22));

    // undo the eraser: the stroke is whole again; redo then undo twice more: pen stroke gone
    await page.evaluate(() => window.editor.undo());
    await exportPng("mask-undo-eraser.png", "white-on-black");
    await page.evaluate(() => { window.editor.redo(); window.editor.invert(); });
    await exportPng("mask-inverted.png", "white-on-black");
    await page.evaluate(() => { window.editor.clear(); });
    await exportPng("mask-cleared.png", "white-on-black");
    facts.emptyAfterClear = await page.evaluate(() => window.editor.isEmpty());
    facts.errors = errors;
  } finally {
    await browser.close();
    await server.close();
  }
  fs.writeFileSync(path.join(values.out, "facts.json"), JSON.stringify(facts, null, 2));
  console.log(JSON.stringify(facts));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
}
