// Unit tests of the mask as data (no DOM): export size and convention, strokes mapped from a
// scaled display, undo/redo/clear/invert, reading a mask the worker's way.
import test from "node:test";
import assert from "node:assert/strict";

import { MaskModel, readMaskRGBA, cssToPhoto, MASK_THRESHOLD } from "../src/index.js";

const PHOTO = { width: 810, height: 1080 }; // ultralytics bus.jpg

/** Value at photo px (x, y). */
const at = (m, x, y) => m.data[y * m.width + x];

/** Paint a stroke given in CSS px of a canvas displayed at `disp` size, like the editor does. */
function strokeCss(m, disp, points, diameterCss, mode = "brush") {
  const p0 = cssToPhoto(points[0][0], points[0][1], disp, m);
  m.beginStroke(p0.x, p0.y, (diameterCss / 2) * p0.scale, mode);
  for (const [x, y] of points.slice(1)) {
    const p = cssToPhoto(x, y, disp, m);
    m.strokeTo(p.x, p.y);
  }
  m.endStroke();
}

test("export is at the photo's pixel size even when the canvas is displayed scaled", () => {
  const m = new MaskModel(PHOTO.width, PHOTO.height);
  const disp = { width: 405, height: 540 }; // shown at half size
  strokeCss(m, disp, [[100, 200], [300, 200]], 20);
  const rgba = m.toRGBA();
  assert.equal(rgba.length, PHOTO.width * PHOTO.height * 4);
  // CSS (100..300, 200) is photo (200..600, 400); a 20 CSS px brush is 20 photo px radius
  assert.equal(at(m, 200, 400), 255);
  assert.equal(at(m, 600, 400), 255);
  assert.equal(at(m, 400, 400 + 18), 255);
  assert.equal(at(m, 400, 400 + 22), 0, "the brush radius is scaled to photo px");
  assert.equal(at(m, 150, 400), 0, "nothing before the stroke's start (minus the radius)");
  assert.equal(at(m, 100, 200), 0, "CSS coordinates were not used as photo px");
});

test("white-on-black export is opaque, white where painted; the worker's reading gives back the mask", () => {
  const m = new MaskModel(40, 30);
  m.beginStroke(10, 10, 4);
  m.endStroke();
  const rgba = m.toRGBA("white-on-black");
  for (let i = 3; i < rgba.length; i += 4) assert.equal(rgba[i], 255, "opaque everywhere");
  const j = (10 * 40 + 10) * 4;
  assert.deepEqual([...rgba.slice(j, j + 4)], [255, 255, 255, 255]);
  assert.deepEqual([...rgba.slice(0, 4)], [0, 0, 0, 255]);
  assert.deepEqual(readMaskRGBA(rgba, 40, 30), m.data);
});

test("alpha export: white strokes on a transparent layer; read back by its alpha", () => {
  const m = new MaskModel(40, 30);
  m.beginStroke(10, 10, 4);
  m.endStroke();
  const rgba = m.toRGBA("alpha");
  const j = (10 * 40 + 10) * 4;
  assert.equal(rgba[j + 3], 255);
  assert.equal(rgba[3], 0, "unpainted pixels are transparent");
  assert.deepEqual(readMaskRGBA(rgba, 40, 30), m.data);
  // fully painted: no transparent pixel left, read by its brightest channel: still all repaint
  m.fill();
  const full = readMaskRGBA(m.toRGBA("alpha"), 40, 30);
  assert.ok(full.every((v) => v === 255));
  assert.throws(() => m.toRGBA("black-on-white"), RangeError);
});

test("readMaskRGBA follows the contract: alpha when transparent, else the brightest channel", () => {
  // opaque: a pure red pixel (brightest channel 255) repaints, a dark-grey one (20) does not
  const opaque = new Uint8Array([255, 0, 0, 255, 20, 20, 20, 255]);
  const v = readMaskRGBA(opaque, 2, 1);
  assert.deepEqual([...v], [255, 20]);
  assert.ok(v[0] >= MASK_THRESHOLD && v[1] < MASK_THRESHOLD);
  // one transparent pixel: alpha rules, whatever the colour (a black stroke repaints)
  const layer = new Uint8Array([0, 0, 0, 255, 255, 255, 255, 0]);
  assert.deepEqual([...readMaskRGBA(layer, 2, 1)], [255, 0]);
  assert.throws(() => readMaskRGBA(layer, 3, 1), RangeError);
});

test("eraser removes part of a stroke; undo brings it back, redo removes it again", () => {
  const m = new MaskModel(100, 50);
  m.beginStroke(10, 25, 5);
  m.strokeTo(90, 25);
  m.endStroke();
  m.beginStroke(50, 25, 8, "eraser");
  m.endStroke();
  assert.equal(at(m, 20, 25), 255);
  assert.equal(at(m, 50, 25), 0, "erased");
  assert.equal(at(m, 80, 25), 255);
  assert.ok(m.canUndo && !m.canRedo);
  m.undo();
  assert.equal(at(m, 50, 25), 255, "undo of the eraser stroke");
  assert.ok(m.canRedo);
  m.undo();
  assert.ok(m.isEmpty(), "undo of the brush stroke: empty again");
  assert.ok(!m.canUndo);
  assert.equal(m.undo(), null, "nothing left to undo");
  m.redo();
  m.redo();
  assert.equal(at(m, 50, 25), 0);
  assert.equal(at(m, 20, 25), 255);
  assert.equal(m.redo(), null);
});

test("a new edit after undo drops the redo branch", () => {
  const m = new MaskModel(20, 20);
  m.beginStroke(5, 5, 2); m.endStroke();
  m.undo();
  m.beginStroke(15, 15, 2); m.endStroke();
  assert.ok(!m.canRedo);
  assert.equal(at(m, 5, 5), 0);
  assert.equal(at(m, 15, 15), 255);
});

test("clear and invert are one undo step each; invert swaps repaint and keep", () => {
  const m = new MaskModel(30, 20);
  m.beginStroke(5, 5, 3); m.endStroke();
  const painted = m.data.slice();
  assert.ok(m.invert());
  assert.equal(at(m, 5, 5), 0);
  assert.equal(at(m, 25, 15), 255);
  assert.ok(m.coverage() > 0.9);
  assert.ok(m.clear());
  assert.ok(m.isEmpty());
  assert.equal(m.clear(), false, "clearing an empty mask is not a history step");
  m.undo();
  assert.equal(at(m, 25, 15), 255, "undo clear: the inverted mask");
  m.undo();
  assert.deepEqual(m.data, painted, "undo invert: the stroke again");
  m.redo(); m.redo();
  assert.ok(m.isEmpty());
});

test("load replaces the mask (one undo step) and checks its size", () => {
  const m = new MaskModel(4, 2);
  const auto = new Uint8Array([0, 255, 255, 0, 0, 128, 10, 0]);
  m.load(auto);
  assert.deepEqual(m.data, auto);
  assert.equal(m.coverage(), 3 / 8, "10 of 255 is below the 26 threshold");
  m.undo();
  assert.ok(m.isEmpty());
  assert.throws(() => m.load(new Uint8Array(7)), RangeError);
});

test("strokes are clipped at the photo's edges and off-photo strokes change nothing", () => {
  const m = new MaskModel(10, 10);
  m.beginStroke(-50, -50, 3); m.endStroke();
  assert.ok(m.isEmpty());
  assert.ok(!m.canUndo, "an off-photo stroke is no history step");
  m.beginStroke(0, 0, 3); m.strokeTo(20, 0); m.endStroke();
  assert.equal(at(m, 0, 0), 255);
  assert.equal(at(m, 9, 1), 255);
  assert.equal(at(m, 5, 5), 0);
});

test("history is bounded by steps", () => {
  const m = new MaskModel(10, 10, { maxHistorySteps: 3 });
  for (let i = 0; i < 6; i++) { m.beginStroke(i + 0.5, 5, 0.6); m.endStroke(); }
  let undone = 0;
  while (m.undo()) undone++;
  assert.equal(undone, 3);
  assert.equal(at(m, 0, 5), 255, "the oldest strokes stay");
  assert.equal(at(m, 5, 5), 0);
});

test("bad arguments are rejected with RangeError", () => {
  assert.throws(() => new MaskModel(0, 10), RangeError);
  assert.throws(() => new MaskModel(10.5, 10), RangeError);
  const m = new MaskModel(10, 10);
  assert.throws(() => m.beginStroke(1, 1, 0), RangeError);
  assert.throws(() => m.beginStroke(1, 1, 2, "spray"), RangeError);
});

test("importing the package touches no window or document (server-side rendering)", async () => {
  assert.equal(typeof globalThis.window, "undefined");
  assert.equal(typeof globalThis.document, "undefined");
  const mod = await import("../src/index.js");
  assert.equal(typeof mod.MaskEditor, "function");
  assert.throws(() => new mod.MaskEditor(undefined), TypeError);
});

test("protected boxes: the brush stops at their edge, the eraser still clears them", () => {
  const m = new MaskModel(40, 20);
  m.setProtected([[10, 0, 20, 20]]); // x 10-19, every row
  m.beginStroke(0, 10, 3, "brush");
  m.strokeTo(39, 10);
  m.endStroke();
  assert.equal(m.data[10 * 40 + 5], 255, "painted left of the box");
  assert.equal(m.data[10 * 40 + 30], 255, "painted right of the box");
  for (let x = 10; x < 20; x++) assert.equal(m.data[10 * 40 + x], 0, `x ${x} inside the box stays unpainted`);
  assert.ok(m.isProtected(10, 0) && !m.isProtected(20, 0) && !m.isProtected(9, 19));
  // a loaded mask may cover a box (the worker's own auto mask never does); the eraser clears it
  m.load(new Uint8Array(40 * 20).fill(255));
  m.beginStroke(15, 10, 2, "eraser");
  m.endStroke();
  assert.equal(m.data[10 * 40 + 15], 0);
  // boxes are clipped to the photo and rounded outward; junk is ignored
  m.setProtected([[-5.5, 18.2, 3.2, 99], "nope", [1, 2, 3]]);
  assert.deepEqual(m.protectedBoxes, [[0, 18, 4, 20]]);
});
