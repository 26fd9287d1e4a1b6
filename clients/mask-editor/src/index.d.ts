// Types of @maskpaint/mask-editor (the package is plain ES modules, no build step).

/** A mask pixel repaints from this value (0-255) up: core/imageio.py MASK_THRESHOLD. */
export declare const MASK_THRESHOLD: 26;
export type MaskConvention = "white-on-black" | "alpha";
export declare const CONVENTIONS: readonly MaskConvention[];
export type Tool = "brush" | "eraser";
export interface Rect { x: number; y: number; w: number; h: number }

/** Read a decoded mask (H x W x 4 RGBA) the worker's way: alpha when any pixel is transparent, else the brightest channel. */
export declare function readMaskRGBA(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number): Uint8Array;
/** CSS px (relative to the displayed element) to photo px; `scale` = photo px per CSS px. */
export declare function cssToPhoto(
  cssX: number, cssY: number,
  displayed: { width: number; height: number },
  photo: { width: number; height: number },
): { x: number; y: number; scale: number };

/** The mask as data: width x height values 0-255 with undo/redo (no DOM; runs in Node). */
export declare class MaskModel {
  constructor(width: number, height: number, opts?: { maxHistorySteps?: number; maxHistoryBytes?: number });
  readonly width: number;
  readonly height: number;
  /** H x W values 0-255, row-major (255 = repaint). */
  readonly data: Uint8Array;
  readonly canUndo: boolean;
  readonly canRedo: boolean;
  coverage(): number;
  isEmpty(): boolean;
  beginStroke(x: number, y: number, radius: number, mode?: Tool, value?: number): Rect | null;
  strokeTo(x: number, y: number): Rect | null;
  endStroke(): void;
  clear(): boolean;
  invert(): boolean;
  fill(): boolean;
  load(values: Uint8Array | Uint8ClampedArray): boolean;
  undo(): Rect | null;
  redo(): Rect | null;
  /** H x W x 4 RGBA at the photo's size in the given convention (default "white-on-black"). */
  toRGBA(convention?: MaskConvention): Uint8ClampedArray;
  /** Rectangles the brush never paints ([x0, y0, x1, y1] px, x1/y1 exclusive); the eraser still clears them. */
  setProtected(boxes: number[][]): void;
  readonly protectedBoxes: number[][];
  isProtected(x: number, y: number): boolean;
}

/** Where the buckets' CORS rule is documented (named in setMask's CorsError). */
export declare const CORS_HELP: string;
export type ImageSource = Blob | string | HTMLImageElement | ImageBitmap | HTMLCanvasElement;
export interface Guide { box: [number, number, number, number] | number[]; label?: string; kind?: "face" | "hand" | string }
export interface MaskEditorOptions {
  tool?: Tool;
  /** Brush diameter in CSS px of the displayed canvas (default 40). */
  brushSize?: number;
  maskVisible?: boolean;
  maskColor?: [number, number, number];
  maskOpacity?: number;
}
export interface MaskChangeDetail { canUndo: boolean; canRedo: boolean; empty: boolean }

/** Photo + editable mask on a <canvas>: brush/eraser through pointer events, undo/redo, clear, invert, show/hide, PNG export at the photo's size. */
export declare class MaskEditor extends EventTarget {
  constructor(canvas: HTMLCanvasElement, opts?: MaskEditorOptions);
  readonly canvas: HTMLCanvasElement;
  readonly model: MaskModel | null;
  tool: Tool;
  brushSize: number;
  maskVisible: boolean;
  readonly size: { width: number; height: number } | null;
  readonly canUndo: boolean;
  readonly canRedo: boolean;
  setPhoto(source: ImageSource): Promise<{ width: number; height: number }>;
  setMask(source: ImageSource): Promise<void>;
  setMaskValues(values: Uint8Array | Uint8ClampedArray): void;
  setGuides(guides: Guide[]): void;
  /** The no-paint layer (faces, hands, margins included): drawn hatched; the brush skips it. */
  setProtected(regions: Guide[]): void;
  undo(): boolean;
  redo(): boolean;
  clear(): boolean;
  invert(): boolean;
  isEmpty(): boolean;
  toBlob(convention?: MaskConvention): Promise<Blob>;
  toDataURL(convention?: MaskConvention): string;
  render(): void;
  destroy(): void;
}
