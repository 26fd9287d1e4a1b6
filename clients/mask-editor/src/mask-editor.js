// MaskEditor: a photo with an editable mask layer, bound to one <canvas>.
//
// Importing this module touches no `window` or `document` (safe under Next.js SSR); only the
// constructor and methods do, so create the editor once the canvas is mounted (useEffect).
import { MaskModel, readMaskRGBA, cssToPhoto, MASK_THRESHOLD } from "./mask-model.js";

const DEFAULTS = {
  tool: "brush",
  brushSize: 40,
  maskVisible: true,
  maskColor: [255, 0, 96],
  maskOpacity: 0.55,
  // the worker's overlay colours (core/overlay.py FACE_COLOUR, HAND_COLOUR, DET_COLOUR), so a
  // face is the same colour in the editor and in the server's preview
  guideColors: { face: "#00dc50", hand: "#00aaff", other: "#ffc800" },
};

/**
 * Where the buckets' CORS rule is documented (a canvas can read another origin's image only
 * when its server allows it): maskpaint's docs/typescript.md, section "Bucket CORS".
 */
export const CORS_HELP = "docs/typescript.md#bucket-cors";

/**
 * Photo + mask editor on a `<canvas>`: brush and eraser (mouse, pen, touch through pointer
 * events), undo/redo, clear, invert, show/hide, and export of the mask as a PNG at the
 * photo's pixel size whatever size the canvas is displayed at.
 *
 * The canvas's backing store is set to the photo's size; lay it out with CSS (e.g.
 * `width: 100%; height: auto`) and no padding or border, so a CSS px maps linearly to photo px.
 *
 * Events (`addEventListener`): `"change"` after every mask change (stroke, undo, redo, clear,
 * invert, load) with `detail = {canUndo, canRedo, empty}`; `"photo"` when a photo is loaded
 * with `detail = {width, height}`.
 */
export class MaskEditor extends EventTarget {
  /**
   * @param {HTMLCanvasElement} canvas the mounted canvas to draw on and listen to
   * @param {object} [opts]
   * @param {"brush"|"eraser"} [opts.tool] default "brush"
   * @param {number} [opts.brushSize] brush diameter in CSS px of the displayed canvas (default 40)
   * @param {boolean} [opts.maskVisible] default true
   * @param {[number,number,number]} [opts.maskColor] RGB of the mask tint (display only)
   * @param {number} [opts.maskOpacity] 0-1, tint opacity of a fully painted pixel (display only)
   */
  constructor(canvas, opts = {}) {
    super();
    if (!canvas || typeof canvas.getContext !== "function") throw new TypeError("MaskEditor: a <canvas> element is required");
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.opts = { ...DEFAULTS, ...opts };
    this._tool = this.opts.tool;
    this._brushSize = this.opts.brushSize;
    this._maskVisible = this.opts.maskVisible;
    this.photo = null; // ImageBitmap | HTMLImageElement | HTMLCanvasElement
    this.model = null;
    this._guides = [];
    this._protectedGuides = [];
    this._overlay = null; // photo-size canvas holding the tinted mask
    this._pointer = null; // {id} of the pointer drawing now
    this._hover = null; // {x, y} photo px, for the brush outline
    this._frame = 0;
    canvas.style.touchAction = "none"; // pointer events, not scrolling/zooming, on touch and pen
    this._on = {
      pointerdown: (e) => this._down(e),
      pointermove: (e) => this._move(e),
      pointerup: (e) => this._up(e),
      pointercancel: (e) => this._up(e),
      pointerleave: () => { this._hover = null; this._schedule(); },
      contextmenu: (e) => e.preventDefault(),
    };
    for (const [k, f] of Object.entries(this._on)) canvas.addEventListener(k, f);
  }

  /** Remove the listeners (call on unmount); the canvas keeps its last picture. */
  destroy() {
    for (const [k, f] of Object.entries(this._on)) this.canvas.removeEventListener(k, f);
    if (this._frame) cancelAnimationFrame(this._frame);
    this._frame = 0;
  }

  // ------------------------------------------------------------------------------ settings

  get tool() { return this._tool; }
  set tool(t) {
    if (t !== "brush" && t !== "eraser") throw new RangeError(`tool must be "brush" or "eraser", got ${t}`);
    this._tool = t;
  }

  /** Brush diameter in CSS px of the displayed canvas (1-1000). */
  get brushSize() { return this._brushSize; }
  set brushSize(px) {
    const v = Number(px);
    if (!(v >= 1 && v <= 1000)) throw new RangeError(`brushSize must be 1-1000 CSS px, got ${px}`);
    this._brushSize = v;
    this._schedule();
  }

  get maskVisible() { return this._maskVisible; }
  set maskVisible(v) { this._maskVisible = Boolean(v); this._schedule(); }

  /** The photo's pixel size, or null before `setPhoto`. */
  get size() { return this.model ? { width: this.model.width, height: this.model.height } : null; }

  get canUndo() { return Boolean(this.model?.canUndo); }
  get canRedo() { return Boolean(this.model?.canRedo); }

  // ------------------------------------------------------------------------------ loading

  /**
   * Show a photo and start an empty mask at its pixel size (EXIF orientation applied, as the
   * worker does).
   *
   * @param {Blob|string|HTMLImageElement|ImageBitmap|HTMLCanvasElement} source a File/Blob,
   *   a URL (data:, blob:, or http(s) with CORS), or an already decoded image
   * @returns {Promise<{width:number,height:number}>} px
   * @throws when the image cannot be decoded
   */
  async setPhoto(source) {
    const img = await decodeImage(source);
    const width = img.naturalWidth ?? img.width;
    const height = img.naturalHeight ?? img.height;
    this.photo = img;
    this._pointer = null; // a stroke in progress belonged to the previous photo
    this._hover = null;
    this.model = new MaskModel(width, height);
    this.canvas.width = width;
    this.canvas.height = height;
    this._overlay = document.createElement("canvas");
    this._overlay.width = width;
    this._overlay.height = height;
    this._guides = [];
    this._protectedGuides = [];
    this._render();
    this.dispatchEvent(new CustomEvent("photo", { detail: { width, height } }));
    this._changed();
    return { width, height };
  }

  /**
   * Replace the mask with an image read the worker's way (transparent pixels: alpha;
   * opaque: brightest channel), e.g. the `mask` artefact of a `task: "mask"` job. A mask of
   * another size is scaled to the photo's (nearest neighbour). One undo step.
   *
   * @param {Blob|string|HTMLImageElement|ImageBitmap|HTMLCanvasElement} source
   * @throws {Error} before `setPhoto`; `name: "CorsError"` when `source` is a URL of another
   *   origin that does not allow this page (its bucket needs a CORS rule, see CORS_HELP)
   */
  async setMask(source) {
    this._needPhoto();
    let img;
    try {
      img = await decodeImage(source);
    } catch (err) {
      throw corsError(source, err) ?? err;
    }
    const { width, height } = this.model;
    const c = document.createElement("canvas");
    c.width = width;
    c.height = height;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.imageSmoothingEnabled = false;
    g.drawImage(img, 0, 0, width, height);
    let pixels;
    try {
      pixels = g.getImageData(0, 0, width, height).data;
    } catch (err) { // a tainted canvas: the image came without CORS
      throw corsError(source, err) ?? err;
    }
    this.setMaskValues(readMaskRGBA(pixels, width, height));
  }

  /** Replace the mask with H x W values 0-255 (255 = repaint). One undo step. */
  setMaskValues(values) {
    this._needPhoto();
    if (this.model.load(values)) this._afterEdit(null);
  }

  /**
   * Outlines drawn over the photo (not part of the mask), e.g. the faces and hands the worker
   * protects: `mask_info.faces` / `mask_info.hands` boxes.
   *
   * @param {Array<{box:number[], label?:string, kind?:"face"|"hand"|string}>} guides
   *   box = [x0, y0, x1, y1] photo px
   */
  setGuides(guides) {
    this._guides = (guides ?? []).filter((g) => Array.isArray(g?.box) && g.box.length === 4);
    this._schedule();
  }

  /**
   * The no-paint layer: regions the worker removes from any mask (faces and hands, their
   * margins included). They are drawn hatched over the photo, and the brush does not paint
   * inside them (the eraser still can), so what is painted is what the worker will repaint.
   *
   * @param {Array<{box:number[], label?:string, kind?:"face"|"hand"|string}>} regions
   *   box = [x0, y0, x1, y1] photo px, margins included (x1/y1 exclusive)
   * @throws {Error} before `setPhoto`
   */
  setProtected(regions) {
    this._needPhoto();
    this._protectedGuides = (regions ?? []).filter((g) => Array.isArray(g?.box) && g.box.length === 4);
    this.model.setProtected(this._protectedGuides.map((g) => g.box));
    this._schedule();
  }

  // ------------------------------------------------------------------------------ editing

  undo() { this._needPhoto(); const r = this.model.undo(); if (r) this._afterEdit(r); return Boolean(r); }
  redo() { this._needPhoto(); const r = this.model.redo(); if (r) this._afterEdit(r); return Boolean(r); }
  clear() { this._needPhoto(); const ok = this.model.clear(); if (ok) this._afterEdit(null); return ok; }
  invert() { this._needPhoto(); const ok = this.model.invert(); if (ok) this._afterEdit(null); return ok; }

  /** True when nothing repaints (sending it would be answered `empty_mask`). */
  isEmpty() { return !this.model || this.model.isEmpty(); }

  // ------------------------------------------------------------------------------ export

  /**
   * The mask as a PNG at the photo's pixel size.
   *
   * @param {"white-on-black"|"alpha"} [convention] "white-on-black" (default, opaque: white =
   *   repaint, black = keep) or "alpha" (white strokes on a transparent layer)
   * @returns {Promise<Blob>} image/png
   */
  async toBlob(convention = "white-on-black") {
    const c = this._exportCanvas(convention);
    return new Promise((resolve, reject) => {
      c.toBlob((b) => (b ? resolve(b) : reject(new Error("mask PNG encoding failed"))), "image/png");
    });
  }

  /** The mask PNG as a `data:image/png;base64,...` URL, ready for a job's `mask` field. */
  toDataURL(convention = "white-on-black") {
    return this._exportCanvas(convention).toDataURL("image/png");
  }

  _exportCanvas(convention) {
    this._needPhoto();
    const { width, height } = this.model;
    const rgba = this.model.toRGBA(convention);
    const c = document.createElement("canvas");
    c.width = width;
    c.height = height;
    c.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
    return c;
  }

  // ------------------------------------------------------------------------------ pointer

  _toPhoto(e) {
    const r = this.canvas.getBoundingClientRect();
    return cssToPhoto(e.clientX - r.left, e.clientY - r.top, r, this.model);
  }

  _down(e) {
    if (!this.model || this._pointer) return;
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    // a synthetic event (a test, a stylus bridge) has no active pointer to capture: capture is
    // a convenience (strokes that leave the canvas), so go on without it
    try { this.canvas.setPointerCapture?.(e.pointerId); } catch { /* NotFoundError */ }
    this._pointer = { id: e.pointerId };
    const p = this._toPhoto(e);
    this._hover = p;
    const rect = this.model.beginStroke(p.x, p.y, (this._brushSize / 2) * p.scale, this._tool);
    this._paintOverlay(rect);
    this._schedule();
  }

  _move(e) {
    if (!this.model) return;
    const p = this._toPhoto(e);
    this._hover = p;
    if (!this._pointer || e.pointerId !== this._pointer.id) { this._schedule(); return; }
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const q = this._toPhoto(ev);
      this._paintOverlay(this.model.strokeTo(q.x, q.y));
    }
    this._schedule();
  }

  _up(e) {
    if (!this._pointer || e.pointerId !== this._pointer.id) return;
    this._pointer = null;
    try { this.canvas.releasePointerCapture?.(e.pointerId); } catch { /* never captured */ }
    this.model.endStroke();
    if (e.pointerType !== "mouse") this._hover = null;
    this._changed();
    this._schedule();
  }

  // ------------------------------------------------------------------------------ drawing

  _needPhoto() {
    if (!this.model) throw new Error("MaskEditor: call setPhoto() first");
  }

  _afterEdit(rect) {
    this._paintOverlay(rect ?? { x: 0, y: 0, w: this.model.width, h: this.model.height });
    this._changed();
    this._schedule();
  }

  _changed() {
    this.dispatchEvent(new CustomEvent("change", {
      detail: { canUndo: this.canUndo, canRedo: this.canRedo, empty: this.isEmpty() },
    }));
  }

  /** Copy a rectangle of the mask into the tinted overlay canvas (display only). */
  _paintOverlay(rect) {
    if (!rect || !this._overlay) return;
    const { x, y, w, h } = rect;
    const img = new ImageData(w, h);
    const d = img.data;
    const [cr, cg, cb] = this.opts.maskColor;
    const a = this.opts.maskOpacity;
    const src = this.model.data;
    const W = this.model.width;
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const v = src[(y + r) * W + x + c];
        const j = (r * w + c) * 4;
        d[j] = cr; d[j + 1] = cg; d[j + 2] = cb;
        // below the worker's threshold a value keeps the pixel: show it faintly
        d[j + 3] = Math.round(v * a * (v >= MASK_THRESHOLD ? 1 : 0.3));
      }
    }
    this._overlay.getContext("2d").putImageData(img, x, y);
  }

  _schedule() {
    if (this._frame || typeof requestAnimationFrame !== "function") return;
    this._frame = requestAnimationFrame(() => { this._frame = 0; this._render(); });
  }

  /** A protected region: a translucent hatch in its kind's colour, a solid edge, a label. */
  _drawNoPaint(g, gd, px) {
    const [x0, y0, x1, y1] = gd.box;
    const color = this.opts.guideColors[gd.kind] ?? this.opts.guideColors.other;
    g.save();
    g.beginPath();
    g.rect(x0, y0, x1 - x0, y1 - y0);
    g.clip();
    g.globalAlpha = 0.22;
    g.fillStyle = color;
    g.fillRect(x0, y0, x1 - x0, y1 - y0);
    g.globalAlpha = 0.8;
    g.strokeStyle = color;
    g.lineWidth = 2 * px;
    const step = 10 * px;
    for (let d = -(y1 - y0); d < x1 - x0; d += step) {
      g.beginPath();
      g.moveTo(x0 + d, y1);
      g.lineTo(x0 + d + (y1 - y0), y0);
      g.stroke();
    }
    g.restore();
    g.strokeStyle = color;
    g.lineWidth = 2 * px;
    g.strokeRect(x0, y0, x1 - x0, y1 - y0);
    if (gd.label) {
      g.font = `${Math.round(12 * px)}px system-ui, sans-serif`;
      g.fillStyle = color;
      g.fillText(gd.label, x0 + 3 * px, Math.max(12 * px, y0 - 4 * px));
    }
  }

  /** Redraw now: photo, tinted mask (when visible), no-paint regions, guides, brush outline. */
  render() { this._render(); }

  _render() {
    if (!this.photo) return;
    const g = this.ctx;
    const { width, height } = this.model;
    g.clearRect(0, 0, width, height);
    g.drawImage(this.photo, 0, 0, width, height);
    if (this._maskVisible && this._overlay) g.drawImage(this._overlay, 0, 0);
    const cssW = this.canvas.getBoundingClientRect().width || width;
    const px = width / cssW; // photo px per CSS px
    for (const gd of this._protectedGuides) this._drawNoPaint(g, gd, px);
    for (const gd of this._guides) {
      const [x0, y0, x1, y1] = gd.box;
      const color = this.opts.guideColors[gd.kind] ?? this.opts.guideColors.other;
      g.strokeStyle = color;
      g.lineWidth = 2 * px;
      g.setLineDash([6 * px, 4 * px]);
      g.strokeRect(x0, y0, x1 - x0, y1 - y0);
      g.setLineDash([]);
      if (gd.label) {
        g.font = `${Math.round(12 * px)}px system-ui, sans-serif`;
        g.fillStyle = color;
        g.fillText(gd.label, x0 + 3 * px, Math.max(12 * px, y0 - 4 * px));
      }
    }
    if (this._hover) {
      g.beginPath();
      g.arc(this._hover.x, this._hover.y, (this._brushSize / 2) * px, 0, Math.PI * 2);
      g.lineWidth = 1.5 * px;
      g.strokeStyle = this._tool === "eraser" ? "#ffffff" : "#111111";
      g.stroke();
    }
  }
}

/**
 * A clear error for an image of another origin that this page may not read (no CORS rule on
 * its bucket), or null when `source` is not such a URL. Chromium reports it only as
 * "EncodingError: The source image cannot be decoded" or a SecurityError.
 */
function corsError(source, cause) {
  if (typeof source !== "string" || typeof location === "undefined") return null;
  let url;
  try { url = new URL(source, location.href); } catch { return null; }
  if (!/^https?:$/.test(url.protocol) || url.origin === location.origin) return null;
  const err = new Error(
    `the mask at ${url.origin} could not be read by this page (${location.origin}): its server must allow it with CORS `
    + `(Access-Control-Allow-Origin; for an S3/R2 bucket, the CORS rule in ${CORS_HELP}), `
    + "or ask the job for output.return_base64 and pass the data: URL",
    { cause },
  );
  err.name = "CorsError";
  return err;
}

/** Decode a Blob, URL or image into something drawImage takes, with its pixel size. */
async function decodeImage(source) {
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    // EXIF orientation applied, like the worker (docs/contract.md: "EXIF orientation is applied first")
    return createImageBitmap(source, { imageOrientation: "from-image" });
  }
  if (typeof source === "string") {
    const img = new Image();
    if (!/^(data|blob):/.test(source)) img.crossOrigin = "anonymous"; // readable pixels need CORS
    img.decoding = "async";
    img.src = source;
    await img.decode();
    return img;
  }
  if (source && typeof source === "object" && ("width" in source || "naturalWidth" in source)) {
    if ("decode" in source && typeof source.decode === "function" && !source.complete) await source.decode();
    return source;
  }
  throw new TypeError("MaskEditor: expected a Blob, a URL or an image");
}
