// Type-checked against src/index.d.ts (npm run typecheck, and tests/test_mask_editor.py): the README's usage, in TypeScript.
import { CORS_HELP, MaskEditor, MaskModel, readMaskRGBA, MASK_THRESHOLD, type MaskChangeDetail } from "../src/index.js";

export async function mount(canvas: HTMLCanvasElement, photo: File, maskUrl?: string): Promise<string> {
  const editor = new MaskEditor(canvas, { brushSize: 40, tool: "brush" });
  const size: { width: number; height: number } = await editor.setPhoto(photo);
  if (maskUrl) await editor.setMask(maskUrl);
  editor.setGuides([{ box: [10, 10, 50, 60], kind: "other", label: "note" }]);
  editor.setProtected([{ box: [0, 0, 64, 72], kind: "face", label: "face 0.93" }]);
  try {
    await editor.setMask("https://bucket.example/mask.png");
  } catch (err) {
    if ((err as Error).name === "CorsError") console.log(CORS_HELP);
  }
  editor.addEventListener("change", (e) => {
    const d = (e as CustomEvent<MaskChangeDetail>).detail;
    if (d.empty) console.log("nothing to repaint yet");
  });
  editor.tool = "eraser";
  editor.brushSize = 24;
  editor.maskVisible = false;
  editor.undo();
  editor.redo();
  editor.invert();
  const blob: Blob = await editor.toBlob("alpha");
  const model = new MaskModel(size.width, size.height);
  model.setProtected([[0, 0, 8, 8]]);
  console.log(model.isProtected(1, 1), model.protectedBoxes.length);
  model.load(readMaskRGBA(new Uint8ClampedArray(size.width * size.height * 4), size.width, size.height));
  console.log(blob.size, model.coverage() >= 0, MASK_THRESHOLD);
  editor.destroy();
  return editor.toDataURL();
}
