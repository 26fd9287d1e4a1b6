// @maskpaint/mask-editor: a framework-free mask editor for maskpaint jobs.
// Importing touches no window/document (Next.js SSR safe); create a MaskEditor once mounted.
export { MaskEditor, CORS_HELP } from "./mask-editor.js";
export { MaskModel, readMaskRGBA, cssToPhoto, MASK_THRESHOLD, CONVENTIONS } from "./mask-model.js";
