// The mask as data: no DOM, so it runs (and is tested) in Node as well as in a browser.
//
// Hand-written rather than painted with a CanvasRenderingContext2D because a 2D context
// anti-aliases stroke edges into partial alpha whose exact values differ between browsers and
// GPUs, cannot be tested in Node, and keeps no history; a byte per photo pixel is exact,
// portable, and makes undo/redo a matter of copying rectangles.

/**
 * A mask pixel is repainted when its value reaches this (0-255): the alpha channel when the
 * mask has transparent pixels, else its brightest channel. Same constant as the worker's
 * `core/imageio.py` `MASK_THRESHOLD` (26 of 255, 10 %).
 */
export const MASK_THRESHOLD = 26;

/** Export conventions: `"white-on-black"` (opaque, grey = brightest channel) or `"alpha"`. */
export const CONVENTIONS = Object.freeze(["white-on-black", "alpha"]);

const DEFAULT_HISTORY_BYTES = 256 * 1024 * 1024;
const DEFAULT_HISTORY_STEPS = 100;

/**
 * Read a decoded mask image the way the worker does (docs/contract.md, `core/imageio.py`
 * `decode_mask`): a mask with any transparent pixel is its alpha channel; an opaque one is its
 * brightest R, G, B channel.
 *
 * @param {Uint8ClampedArray|Uint8Array} rgba H x W x 4 bytes, row-major (ImageData.data)
 * @param {number} width px
 * @param {number} height px
 * @returns {Uint8Array} H x W values 0-255 (repaint from MASK_THRESHOLD up)
 * @throws {RangeError} when rgba.length is not width * height * 4
 */
export function readMaskRGBA(rgba, width, height) {
  const n = width * height;
  if (rgba.length !== n * 4) throw new RangeError(`rgba: expected ${n * 4} bytes for ${width}x${height} px, got ${rgba.length}`);
  const out = new Uint8Array(n);
  let transparent = false;
  for (let i = 3; i < rgba.length; i += 4) {
    if (rgba[i] < 255) { transparent = true; break; }
  }
  if (transparent) {
    for (let i = 0; i < n; i++) out[i] = rgba[i * 4 + 3];
  } else {
    for (let i = 0; i < n; i++) {
      const j = i * 4;
      out[i] = Math.max(rgba[j], rgba[j + 1], rgba[j + 2]);
    }
  }
  return out;
}

/**
 * The editable mask of one photo: width x height values 0-255 (255 = repaint, 0 = keep), at
 * the photo's pixel size whatever size it is displayed at, with undo/redo.
 *
 * Every change (a stroke, clear, invert, fill, load) is one history step that stores the
 * changed rectangle before and after; the oldest steps are dropped beyond `maxHistorySteps` or
 * `maxHistoryBytes`.
 */
export class MaskModel {
  /**
   * @param {number} width photo width, px (integer >= 1)
   * @param {number} height photo height, px (integer >= 1)
   * @param {{maxHistorySteps?: number, maxHistoryBytes?: number}} [opts]
   * @throws {RangeError} for a non-positive or non-integer size
   */
  constructor(width, height, opts = {}) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new RangeError(`MaskModel: size must be positive integers, got ${width}x${height}`);
    }
    this.width = width;
    this.height = height;
    /** H x W values 0-255, row-major. */
    this.data = new Uint8Array(width * height);
    this.maxHistorySteps = opts.maxHistorySteps ?? DEFAULT_HISTORY_STEPS;
    this.maxHistoryBytes = opts.maxHistoryBytes ?? DEFAULT_HISTORY_BYTES;
    this._undo = [];
    this._redo = [];
    this._stroke = null;
    this._protected = [];
  }

  /**
   * Rectangles the brush never paints (the eraser still clears them): the faces and hands the
   * worker removes from any mask, so a stroke across a face stops at its edge here, as it will
   * on the worker, instead of looking painted and being cut there silently.
   *
   * @param {Array<number[]>} boxes [x0, y0, x1, y1] photo px, x1/y1 exclusive (the worker's
   *   `core/masking/post.py` `grow_box` output: margins already added, rounded outward)
   */
  setProtected(boxes) {
    this._protected = (boxes ?? [])
      .filter((b) => Array.isArray(b) && b.length === 4 && b.every(Number.isFinite))
      .map(([x0, y0, x1, y1]) => [Math.max(0, Math.floor(x0)), Math.max(0, Math.floor(y0)),
        Math.min(this.width, Math.ceil(x1)), Math.min(this.height, Math.ceil(y1))])
      .filter(([x0, y0, x1, y1]) => x1 > x0 && y1 > y0);
  }

  /** The protected rectangles (photo px, x1/y1 exclusive). */
  get protectedBoxes() { return this._protected.map((b) => [...b]); }

  /** Whether photo pixel (x, y) is inside a protected rectangle. */
  isProtected(x, y) {
    for (const [x0, y0, x1, y1] of this._protected) if (x >= x0 && x < x1 && y >= y0 && y < y1) return true;
    return false;
  }

  get canUndo() { return this._undo.length > 0 && !this._stroke; }
  get canRedo() { return this._redo.length > 0 && !this._stroke; }

  /** Fraction (0-1) of pixels that repaint (value >= MASK_THRESHOLD). */
  coverage() {
    let k = 0;
    for (let i = 0; i < this.data.length; i++) if (this.data[i] >= MASK_THRESHOLD) k++;
    return k / this.data.length;
  }

  /** True when no pixel repaints (the worker would answer `empty_mask`). */
  isEmpty() {
    for (let i = 0; i < this.data.length; i++) if (this.data[i] >= MASK_THRESHOLD) return false;
    return true;
  }

  // ------------------------------------------------------------------------------ strokes

  /**
   * Start a stroke at (x, y) photo px. Until `endStroke`, `strokeTo` extends it; the whole
   * stroke is one undo step.
   *
   * @param {number} x px
   * @param {number} y px
   * @param {number} radius brush radius, px (> 0)
   * @param {"brush"|"eraser"} mode brush writes `value`, eraser writes 0
   * @param {number} [value] 1-255, what the brush writes (default 255)
   * @returns {{x:number,y:number,w:number,h:number}|null} the rectangle changed (px), or null
   */
  beginStroke(x, y, radius, mode = "brush", value = 255) {
    if (this._stroke) this.endStroke();
    if (!(radius > 0)) throw new RangeError(`radius must be > 0 px, got ${radius}`);
    if (mode !== "brush" && mode !== "eraser") throw new RangeError(`mode must be "brush" or "eraser", got ${mode}`);
    this._stroke = {
      before: this.data.slice(),
      radius,
      value: mode === "eraser" ? 0 : Math.max(1, Math.min(255, Math.round(value))),
      last: { x, y },
      x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity,
    };
    return this._segment(x, y, x, y);
  }

  /** Extend the current stroke to (x, y) photo px; returns the rectangle changed, or null. */
  strokeTo(x, y) {
    const s = this._stroke;
    if (!s) return null;
    const r = this._segment(s.last.x, s.last.y, x, y);
    s.last = { x, y };
    return r;
  }

  /** Finish the current stroke (one history step when it changed anything). */
  endStroke() {
    const s = this._stroke;
    if (!s) return;
    this._stroke = null;
    if (s.x1 < s.x0) return;
    const rect = { x: s.x0, y: s.y0, w: s.x1 - s.x0 + 1, h: s.y1 - s.y0 + 1 };
    const before = copyRect(s.before, this.width, rect);
    const after = copyRect(this.data, this.width, rect);
    if (equalBytes(before, after)) return;
    this._push({ rect, before, after });
  }

  /** Paint the capsule around segment (ax, ay)-(bx, by): pixel centres within radius. */
  _segment(ax, ay, bx, by) {
    const s = this._stroke;
    const r = s.radius;
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r));
    const x1 = Math.min(this.width - 1, Math.ceil(Math.max(ax, bx) + r));
    const y1 = Math.min(this.height - 1, Math.ceil(Math.max(ay, by) + r));
    if (x1 < x0 || y1 < y0) return null;
    const dx = bx - ax, dy = by - ay;
    const len2 = dx * dx + dy * dy;
    const r2 = r * r;
    const v = s.value;
    const guard = v > 0 && this._protected.length > 0; // the eraser may clear protected pixels
    for (let y = y0; y <= y1; y++) {
      const py = y + 0.5;
      const row = y * this.width;
      for (let x = x0; x <= x1; x++) {
        const px = x + 0.5;
        let t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        const ex = px - (ax + t * dx), ey = py - (ay + t * dy);
        if (ex * ex + ey * ey <= r2 && !(guard && this.isProtected(x, y))) this.data[row + x] = v;
      }
    }
    s.x0 = Math.min(s.x0, x0); s.y0 = Math.min(s.y0, y0);
    s.x1 = Math.max(s.x1, x1); s.y1 = Math.max(s.y1, y1);
    return { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 };
  }

  // ------------------------------------------------------------------------------ whole mask

  /** Set every pixel to 0 (keep all). One history step; returns false when already empty. */
  clear() { return this._whole((d) => d.fill(0)); }

  /** 255 - value everywhere (repaint what was kept and the reverse). One history step. */
  invert() { return this._whole((d) => { for (let i = 0; i < d.length; i++) d[i] = 255 - d[i]; }); }

  /** Set every pixel to 255 (repaint all). One history step. */
  fill() { return this._whole((d) => d.fill(255)); }

  /**
   * Replace the mask with `values` (H x W, 0-255), e.g. an automatic mask from a
   * `task: "mask"` job read with `readMaskRGBA`. One history step (undo brings back the
   * previous mask).
   *
   * @param {Uint8Array|Uint8ClampedArray} values width * height bytes
   * @throws {RangeError} on a length mismatch
   */
  load(values) {
    if (values.length !== this.data.length) {
      throw new RangeError(`load: expected ${this.data.length} values (${this.width}x${this.height}), got ${values.length}`);
    }
    return this._whole((d) => d.set(values));
  }

  _whole(fn) {
    if (this._stroke) this.endStroke();
    const before = this.data.slice();
    fn(this.data);
    if (equalBytes(before, this.data)) return false;
    this._push({ rect: { x: 0, y: 0, w: this.width, h: this.height }, before, after: this.data.slice() });
    return true;
  }

  // ------------------------------------------------------------------------------ history

  /** Undo the last step; returns the rectangle changed (px), or null when nothing to undo. */
  undo() {
    if (this._stroke) this.endStroke();
    const step = this._undo.pop();
    if (!step) return null;
    pasteRect(this.data, this.width, step.rect, step.before);
    this._redo.push(step);
    return { ...step.rect };
  }

  /** Redo the last undone step; returns the rectangle changed (px), or null. */
  redo() {
    if (this._stroke) this.endStroke();
    const step = this._redo.pop();
    if (!step) return null;
    pasteRect(this.data, this.width, step.rect, step.after);
    this._undo.push(step);
    return { ...step.rect };
  }

  _push(step) {
    this._undo.push(step);
    this._redo = [];
    let bytes = this._undo.reduce((a, s) => a + s.before.length * 2, 0);
    while (this._undo.length > 1 && (this._undo.length > this.maxHistorySteps || bytes > this.maxHistoryBytes)) {
      const old = this._undo.shift();
      bytes -= old.before.length * 2;
    }
  }

  // ------------------------------------------------------------------------------ export

  /**
   * The mask as RGBA pixels at the photo's size, in a convention the worker reads:
   * - `"white-on-black"` (default): opaque; R = G = B = value (white = repaint, black = keep).
   * - `"alpha"`: white strokes on a transparent layer, alpha = value. A mask with no
   *   transparent pixel at all (everything painted) is then read by its brightest channel,
   *   which is white, so it still means "repaint everything".
   *
   * @param {"white-on-black"|"alpha"} [convention]
   * @returns {Uint8ClampedArray} H x W x 4 bytes (ImageData layout)
   * @throws {RangeError} for an unknown convention
   */
  toRGBA(convention = "white-on-black") {
    if (!CONVENTIONS.includes(convention)) throw new RangeError(`convention must be one of ${CONVENTIONS.join(", ")}, got ${convention}`);
    const n = this.data.length;
    const out = new Uint8ClampedArray(n * 4);
    const alpha = convention === "alpha";
    for (let i = 0; i < n; i++) {
      const v = this.data[i];
      const j = i * 4;
      if (alpha) {
        out[j] = 255; out[j + 1] = 255; out[j + 2] = 255; out[j + 3] = v;
      } else {
        out[j] = v; out[j + 1] = v; out[j + 2] = v; out[j + 3] = 255;
      }
    }
    return out;
  }
}

/**
 * Map a pointer position in CSS px (relative to the displayed element's top-left) to photo px.
 *
 * @param {number} cssX px from the element's left edge
 * @param {number} cssY px from the element's top edge
 * @param {{width:number,height:number}} displayed the element's CSS size (getBoundingClientRect)
 * @param {{width:number,height:number}} photo the photo's pixel size
 * @returns {{x:number,y:number,scale:number}} photo px, and photo px per CSS px (horizontal)
 */
export function cssToPhoto(cssX, cssY, displayed, photo) {
  const sx = photo.width / displayed.width;
  const sy = photo.height / displayed.height;
  return { x: cssX * sx, y: cssY * sy, scale: sx };
}

function copyRect(src, stride, { x, y, w, h }) {
  const out = new Uint8Array(w * h);
  for (let r = 0; r < h; r++) out.set(src.subarray((y + r) * stride + x, (y + r) * stride + x + w), r * w);
  return out;
}

function pasteRect(dst, stride, { x, y, w, h }, bytes) {
  for (let r = 0; r < h; r++) dst.set(bytes.subarray(r * w, r * w + w), (y + r) * stride + x);
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
