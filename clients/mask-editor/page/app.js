// The reference page: photo -> automatic mask (task "mask") -> edit -> repaint -> gallery.
// Every call to the API goes through @maskpaint/client (ModalClient for the web API, local or
// on Modal; RunpodClient for a RunPod endpoint); there is no hand-written fetch to the API.
import { ModalClient, RunpodClient, isMaskpaintError } from "@maskpaint/client";
import { MaskEditor } from "@maskpaint/mask-editor";

const $ = (sel) => document.querySelector(sel);
const JOB_TIMEOUT_MS = 15 * 60 * 1000;
const SETTINGS_KEY = "maskpaint.page.settings";

// ------------------------------------------------------------------------------ settings

function loadSettings() {
  const q = new URLSearchParams(location.search);
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}"); } catch { /* private mode */ }
  const provider = q.get("provider") ?? saved.provider ?? "web";
  return {
    provider,
    api: q.get("api") ?? saved.api ?? (provider === "web" && location.protocol.startsWith("http") ? location.origin : ""),
    endpoint: q.get("endpoint") ?? saved.endpoint ?? "",
    token: q.get("token") ?? saved.token ?? "",
  };
}

let settings = loadSettings();

function makeClient() {
  if (settings.provider === "runpod") {
    return new RunpodClient({
      endpointId: settings.endpoint || undefined,
      baseUrl: settings.api || undefined,
      apiKey: settings.token || undefined,
    });
  }
  return new ModalClient({ baseUrl: settings.api || location.origin, token: settings.token || undefined });
}

function showSettings() {
  const f = $("#settings");
  for (const k of ["provider", "api", "endpoint", "token"]) f.elements[k].value = settings[k];
  $("#connection").dataset.provider = settings.provider;
  $("#api-label").textContent = settings.provider === "runpod"
    ? `RunPod ${settings.endpoint || settings.api || "(not set)"}`
    : settings.api || "(not set)";
}

$("#settings").addEventListener("change", (e) => {
  if (e.target.name === "provider") $("#connection").dataset.provider = e.target.value;
});
$("#settings").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target.elements;
  settings = { provider: f.provider.value, api: f.api.value.trim(), endpoint: f.endpoint.value.trim(), token: f.token.value };
  try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings)); } catch { /* private mode */ }
  showSettings();
  $("#connection").open = false;
});
showSettings();

// ------------------------------------------------------------------------------ editor

const editor = new MaskEditor($("#canvas"), { brushSize: 40 });
let photo = null; // {dataUrl, objectUrl, name, width, height}
let busy = false;

editor.addEventListener("change", (e) => {
  $("#undo").disabled = !e.detail.canUndo;
  $("#redo").disabled = !e.detail.canRedo;
});

for (const r of document.querySelectorAll("input[name=tool]")) {
  r.addEventListener("change", () => { if (r.checked) editor.tool = r.value; });
}
$("#size").addEventListener("input", (e) => {
  editor.brushSize = Number(e.target.value);
  $("#size-out").value = e.target.value;
});
$("#undo").addEventListener("click", () => editor.undo());
$("#redo").addEventListener("click", () => editor.redo());
$("#clear").addEventListener("click", () => editor.clear());
$("#invert").addEventListener("click", () => editor.invert());
$("#show").addEventListener("change", (e) => { editor.maskVisible = e.target.checked; });
$("#mask-download").addEventListener("click", (e) => {
  if (!photo) { e.preventDefault(); return; }
  e.currentTarget.href = editor.toDataURL(); // white = repaint, black = keep, photo's size
});
document.addEventListener("keydown", (e) => {
  if (!photo || !(e.ctrlKey || e.metaKey) || e.target.closest?.("input, textarea")) return;
  const k = e.key.toLowerCase();
  if (k === "z" && !e.shiftKey) { e.preventDefault(); editor.undo(); }
  else if ((k === "z" && e.shiftKey) || k === "y") { e.preventDefault(); editor.redo(); }
});

// ------------------------------------------------------------------------------ photo

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("could not read the file"));
    r.readAsDataURL(file);
  });
}

async function openPhoto(file) {
  if (!file) return;
  hideError();
  try {
    const size = await editor.setPhoto(file);
    if (photo?.objectUrl) URL.revokeObjectURL(photo.objectUrl);
    photo = { dataUrl: await readDataUrl(file), objectUrl: URL.createObjectURL(file), name: file.name, ...size };
  } catch {
    showError({ code: "invalid_image", message: "this file could not be decoded as an image", field: "image" });
    return;
  }
  $("#drop").hidden = true;
  $("#stage").hidden = false;
  $("#toolbar").hidden = false;
  $("#auto").disabled = busy;
  $("#submit").disabled = busy;
  $("#mask-facts").textContent = `${photo.name}: ${photo.width} x ${photo.height} px. Paint the region to repaint, or find it automatically.`;
}

$("#file").addEventListener("change", (e) => { openPhoto(e.target.files?.[0]); e.target.value = ""; });
const drop = $("#drop");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); openPhoto(e.dataTransfer?.files?.[0]); });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer?.files?.[0]) openPhoto(e.dataTransfer.files[0]); });

// ------------------------------------------------------------------------------ jobs

function formValues() {
  const f = $("#job").elements;
  const targets = [...document.querySelectorAll("input[name=targets]:checked")].map((c) => c.value);
  const input = {
    image: photo.dataUrl,
    targets,
    protect_face: f.protect_face.checked,
    protect_hands: f.protect_hands.checked,
  };
  return { input, f };
}

/** A URL an <img> can show for an artefact: its inline base64 when sent, else its URL. */
function artifactSrc(a) {
  return a?.base64 ? `data:${a.content_type};base64,${a.base64}` : a?.url;
}

async function runJob(input, label) {
  busy = true;
  hideError();
  $("#auto").disabled = $("#submit").disabled = true;
  const started = performance.now();
  let last = [`${label}: submitting…`, undefined, started];
  setStatus(...last);
  const tick = setInterval(() => setStatus(...last), 1000); // the elapsed time keeps moving
  try {
    return await makeClient().run(input, {
      timeoutMs: JOB_TIMEOUT_MS,
      onProgress: (u) => { last = [`${label}: ${u.status}`, u.progress, started]; setStatus(...last); },
    });
  } finally {
    clearInterval(tick);
    busy = false;
    $("#auto").disabled = $("#submit").disabled = !photo;
  }
}

$("#auto").addEventListener("click", async () => {
  if (!photo) return;
  const { input } = formValues();
  try {
    // base64 inline: the mask's pixels must be readable by the canvas whatever the bucket's CORS
    const result = await runJob({ ...input, task: "mask", output: { return_base64: true } }, "Finding the mask");
    await showAutoMask(result);
    setStatus(`Mask ready in ${seconds(result.timings_ms)}: edit it, then repaint.`);
  } catch (err) {
    failed(err);
  }
});

/** Put a `task: "mask"` result into the editor: the mask as the editable layer, faces/hands as outlines. */
async function showAutoMask(result) {
  await editor.setMask(artifactSrc(result.mask));
  const info = result.mask_info ?? {};
  const guides = [
    ...(info.faces ?? []).map((f) => ({ box: f.box, kind: "face", label: `face ${f.score.toFixed(2)}` })),
    ...(info.hands ?? []).map((h) => ({ box: h.box, kind: "hand", label: `hand ${h.score.toFixed(2)}` })),
  ];
  editor.setGuides(guides);
  const why = info.reason ? ` (${info.reason})` : "";
  $("#mask-facts").textContent = `Mask: ${info.source}${why}, ${(100 * (info.coverage ?? 0)).toFixed(1)} % of the photo; `
    + `${(info.detections ?? []).length} garment(s), ${(info.faces ?? []).length} face(s) and ${(info.hands ?? []).length} hand(s) protected (outlined).`;
}

$("#job").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!photo || busy) return;
  const { input, f } = formValues();
  const job = {
    ...input,
    task: "inpaint",
    prompt: f.prompt.value,
    negative_prompt: f.negative_prompt.value,
    num_inference_steps: Number(f.num_inference_steps.value),
    strength: Number(f.strength.value),
    // PNG: lossless, so every pixel outside the edit stays exactly the photo's (the default
    // `auto` would answer a JPEG photo with a JPEG, lossy everywhere)
    output: { format: "png" },
  };
  if (f.seed.value !== "") job.seed = Number(f.seed.value);
  // a draft runs the model's LCM-LoRA at its own few steps (unsent: the worker takes 4)
  if (f.draft.checked) { job.speed = "draft"; delete job.num_inference_steps; }
  if (f.scheduler.value !== "default") job.scheduler = f.scheduler.value;
  // the edited mask (white = repaint); none painted: the worker makes the mask itself
  if (!editor.isEmpty()) job.mask = editor.toDataURL();
  try {
    const result = await runJob(job, "Repainting");
    addResult(result, job);
    setStatus(`Done in ${seconds(result.timings_ms)} (seed ${result.seed}).`);
  } catch (err) {
    failed(err);
  }
});

// ------------------------------------------------------------------------------ status, errors

function seconds(timings) {
  const total = timings?.total ?? Object.values(timings ?? {}).reduce((a, b) => a + b, 0);
  return `${(total / 1000).toFixed(1)} s`;
}

function setStatus(text, progress, started) {
  const el = $("#status");
  el.hidden = false;
  el.replaceChildren();
  const line = document.createElement("div");
  const elapsed = started ? ` · ${((performance.now() - started) / 1000).toFixed(0)} s` : "";
  line.textContent = text + elapsed;
  el.append(line);
  if (progress) {
    const p = document.createElement("div");
    const steps = progress.steps ? ` step ${progress.step ?? 0} / ${progress.steps}` : "";
    p.textContent = `stage: ${progress.stage}${steps}`;
    p.className = "progress-line";
    el.append(p);
    if (progress.steps) {
      const bar = document.createElement("progress");
      bar.max = progress.steps;
      bar.value = progress.step ?? 0;
      el.append(bar);
    }
  }
}

function hideError() {
  $("#error").hidden = true;
  for (const el of document.querySelectorAll(".invalid")) el.classList.remove("invalid");
}

/** Show the contract's error: code, message, field (the form control is outlined). */
function showError({ code, message, field, retryable }) {
  const el = $("#error");
  el.replaceChildren();
  const c = document.createElement("code");
  c.textContent = code;
  el.append(c, `: ${message}`);
  if (field) {
    const f = document.createElement("div");
    f.textContent = `field: ${field}`;
    el.append(f);
    const root = String(field).split(/[.[]/)[0];
    for (const ctl of document.querySelectorAll(`[data-field="${CSS.escape(root)}"]`)) {
      (ctl.closest("label") ?? ctl).classList.add("invalid");
    }
    if (root === "image" || root === "mask") $("#stage").classList.add("invalid");
  }
  if (retryable) el.append(Object.assign(document.createElement("div"), { textContent: "This may work if you try again." }));
  el.hidden = false;
}

function failed(err) {
  $("#status").hidden = true;
  if (isMaskpaintError(err)) showError(err);
  else showError({ code: "internal", message: String(err?.message ?? err), field: null });
}

// ------------------------------------------------------------------------------ gallery

function addResult(result, job) {
  $("#gallery-wrap").hidden = false;
  const card = document.createElement("article");
  card.className = "card";
  const cmp = document.createElement("div");
  cmp.className = "compare";
  const before = Object.assign(document.createElement("img"), { src: photo.objectUrl, alt: "before" });
  const after = Object.assign(document.createElement("img"), { src: artifactSrc(result.image), alt: "after", className: "after" });
  const bar = Object.assign(document.createElement("div"), { className: "bar" });
  const slider = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 100, value: 50 });
  slider.setAttribute("aria-label", "before / after");
  slider.addEventListener("input", () => cmp.style.setProperty("--pos", `${slider.value}%`));
  const tl = Object.assign(document.createElement("span"), { className: "tag l", textContent: "before" });
  const tr = Object.assign(document.createElement("span"), { className: "tag r", textContent: "after" });
  cmp.append(before, after, bar, tl, tr, slider);

  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `“${job.prompt}” · seed ${result.seed} · ${result.model ?? ""} · ${seconds(result.timings_ms)} · ${result.job_id}`;
  const links = document.createElement("div");
  links.className = "links";
  for (const [kind, label] of [["image", "result"], ["mask", "mask"], ["overlay", "overlay"]]) {
    const a = result[kind];
    if (!a) continue;
    const ext = (a.content_type ?? "image/png").split("/")[1].replace("jpeg", "jpg");
    links.append(Object.assign(document.createElement("a"), {
      href: artifactSrc(a), download: `${result.job_id}-${kind}.${ext}`, target: "_blank", rel: "noopener",
      textContent: `${label} (${a.width}x${a.height})`,
    }));
  }
  card.append(cmp, meta, links);
  $("#gallery").prepend(card);
}

// for scripts and the screenshot (docs/mask-editor.png)
window.maskpaintPage = { editor, openPhoto, showAutoMask, addResult, showError, get photo() { return photo; } };
