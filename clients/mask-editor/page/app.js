// The reference page: photo -> automatic mask (task "mask") -> edit -> repaint -> gallery.
// Every call to the API goes through @maskpaint/client (ModalClient for the web API, local or
// on Modal; RunpodClient for a RunPod endpoint); there is no hand-written fetch to the API.
import { ModalClient, RunpodClient, isMaskpaintError } from "@maskpaint/client";
import { MaskEditor } from "@maskpaint/mask-editor";
import { apiOrigin, linkChoice, readSaved, safeHttpUrl, stripTokenFromAddress, tokenFor, writeSaved } from "./settings.js";

const $ = (sel) => document.querySelector(sel);
const JOB_TIMEOUT_MS = 15 * 60 * 1000;
// the worker's defaults (core/contract.py face_margin, hand_margin): the protected boxes grow
// by this fraction of their width/height on every side
const FACE_MARGIN = 0.25;
const HAND_MARGIN = 0.1;

// ------------------------------------------------------------------------------ settings
// A saved token is bound to the API origin it was saved for (settings.js): a link's ?api= to
// another origin is only used once the person agrees, and never gets a key saved for another.

const linkToken = stripTokenFromAddress(); // ?token= leaves the address bar and history at once
let saved = readSaved();
const choice = linkChoice(saved, new URLSearchParams(location.search), linkToken, location);
let settings = choice.settings;
if (choice.accepted && linkToken) saveToken(apiOrigin(settings), linkToken);
let pendingLink = choice.pending; // {settings, token} waiting for the person's answer

function saveToken(origin, token) {
  if (!origin) return;
  saved = { ...saved, tokens: { ...saved.tokens, [origin]: token } };
  writeSaved(saved);
}

function makeClient() {
  const token = tokenFor(saved, settings) || undefined;
  if (settings.provider === "runpod") {
    return new RunpodClient({ endpointId: settings.endpoint || undefined, baseUrl: settings.api || undefined, apiKey: token });
  }
  return new ModalClient({ baseUrl: settings.api || location.origin, token });
}

function showSettings() {
  const f = $("#settings");
  for (const k of ["provider", "api", "endpoint"]) f.elements[k].value = settings[k];
  f.elements.token.value = tokenFor(saved, settings);
  $("#connection").dataset.provider = settings.provider;
  $("#api-label").textContent = settings.provider === "runpod"
    ? `RunPod ${settings.endpoint || settings.api || "(not set)"}`
    : settings.api || "(not set)";
}

function formSettings() {
  const f = $("#settings").elements;
  return { provider: f.provider.value, api: f.api.value.trim(), endpoint: f.endpoint.value.trim() };
}

$("#settings").addEventListener("input", (e) => {
  if (e.target.name === "token") return;
  const next = formSettings();
  $("#connection").dataset.provider = next.provider;
  // the key field always shows the key saved for the origin now in the form, never another's
  e.currentTarget.elements.token.value = tokenFor(saved, next);
});
$("#settings").addEventListener("submit", (e) => {
  e.preventDefault();
  settings = formSettings();
  const origin = apiOrigin(settings);
  saved = { ...saved, ...settings };
  if (origin) saved.tokens = { ...saved.tokens, [origin]: e.target.elements.token.value };
  writeSaved(saved);
  showSettings();
  $("#connection").open = false;
});
showSettings();

function askAboutLink() {
  const box = $("#link-api");
  if (!pendingLink) { box.hidden = true; return; }
  $("#link-api-origin").textContent = apiOrigin(pendingLink.settings) ?? pendingLink.settings.api;
  $("#link-api-current").textContent = apiOrigin(settings) ?? "(none)";
  box.hidden = false;
}
$("#link-api-use").addEventListener("click", () => {
  settings = pendingLink.settings;
  if (pendingLink.token) saveToken(apiOrigin(settings), pendingLink.token);
  pendingLink = null;
  askAboutLink();
  showSettings();
});
$("#link-api-ignore").addEventListener("click", () => {
  pendingLink = null;
  const q = new URLSearchParams(location.search);
  for (const k of ["api", "provider", "endpoint"]) q.delete(k);
  history.replaceState(history.state, "", `${location.pathname}${q.size ? `?${q}` : ""}${location.hash}`);
  askAboutLink();
});
askAboutLink();

// ------------------------------------------------------------------------------ editor

const editor = new MaskEditor($("#canvas"), { brushSize: 40 });
let photo = null; // {dataUrl, objectUrl, name, width, height, decodedBy}
let busy = null; // {ctrl, client, jobId} of the job running now

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

/** Whether the file is HEIF (HEIC, AVIF...): an ISO BMFF `ftyp` box with a HEIF brand. */
async function isHeif(file) {
  const head = new Uint8Array(await file.slice(0, 64).arrayBuffer());
  const text = String.fromCharCode(...head);
  if (text.slice(4, 8) !== "ftyp") return false;
  return /heic|heix|hevc|hevx|heim|heis|mif1|msf1|avif|avis/.test(text.slice(8, 64));
}

async function openPhoto(file) {
  if (!file) return;
  hideError();
  let size;
  try {
    size = await editor.setPhoto(file);
  } catch {
    if (await isHeif(file).catch(() => false)) return openViaWorker(file);
    showError({ code: "invalid_image", message: "this file could not be decoded as an image", field: "image" });
    return;
  }
  if (photo?.objectUrl) URL.revokeObjectURL(photo.objectUrl);
  photo = { dataUrl: await readDataUrl(file), objectUrl: URL.createObjectURL(file), name: file.name, ...size, decodedBy: "browser" };
  photoShown(`${photo.name}: ${photo.width} x ${photo.height} px. Paint the region to repaint, or find it automatically.`);
}

/**
 * A photo this browser cannot decode (HEIC from an iPhone in Chromium or Firefox): the worker
 * decodes it (pillow-heif, EXIF orientation and colour profile applied, exactly as it will
 * for the repaint) in a `task: "mask"` job, and its preview overlay becomes the picture to
 * paint on, with the automatic mask as the editable layer. Chosen over a WASM HEIF decoder in
 * the page: no multi-megabyte (LGPL) bundle for a build-free page, and the picture is the
 * worker's own decode, so the mask lines up with what it repaints. The mask is painted at the
 * preview's size (at most 2 MP); the worker scales a mask of the same aspect ratio to the photo.
 */
async function openViaWorker(file) {
  // the browser may not know the type (".HEIC" gives application/octet-stream); the worker
  // goes by the content anyway, the type is for people reading the request
  const dataUrl = (await readDataUrl(file)).replace(/^data:(?!image\/)[^;,]*;base64,/, "data:image/heif;base64,");
  const { input } = formValues();
  let result;
  try {
    result = await runJob({ ...input, image: dataUrl, task: "mask", output: { return_base64: true } },
      `${file.name}: this browser cannot show HEIC, the worker decodes it`);
  } catch (err) {
    failed(err);
    return;
  }
  const preview = artifactSrc(result.overlay);
  if (!preview) { showError({ code: "bad_response", message: "the worker sent no preview of the photo", field: "image" }); return; }
  const size = await editor.setPhoto(preview);
  if (photo?.objectUrl) URL.revokeObjectURL(photo.objectUrl);
  photo = { dataUrl, objectUrl: preview, name: file.name, ...size, decodedBy: "worker" };
  photoShown("");
  await showAutoMask(result);
  setStatus(`${file.name} decoded by the worker (${result.size?.[0]} x ${result.size?.[1]} px), shown with its first mask: edit it, then repaint.`);
}

function photoShown(facts) {
  $("#drop").hidden = true;
  $("#stage").hidden = false;
  $("#toolbar").hidden = false;
  $("#auto").disabled = Boolean(busy);
  $("#submit").disabled = Boolean(busy);
  if (facts) $("#mask-facts").textContent = facts;
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
    image: photo?.dataUrl,
    targets,
    protect_face: f.protect_face.checked,
    protect_hands: f.protect_hands.checked,
  };
  return { input, f };
}

/**
 * A URL an <img> or a link may use for an artefact: its inline base64 as a data: URL (an
 * image type only), else its URL when it is http(s); null otherwise (a `javascript:` URL
 * from a hostile server never reaches the page).
 */
function artifactSrc(a) {
  if (a?.base64 && /^image\/[\w.+-]+$/.test(a.content_type ?? "") && /^[A-Za-z0-9+/=_-]+$/.test(a.base64)) {
    return `data:${a.content_type};base64,${a.base64}`;
  }
  return safeHttpUrl(a?.url);
}

function describeState(u) {
  if (u.status === "queued" || u.status === "IN_QUEUE") {
    return u.position != null ? `queued, ${u.position === 0 ? "next" : `${u.position} ahead`}` : "queued";
  }
  if (u.status === "running" || u.status === "IN_PROGRESS" || u.status === "pending") return "running";
  return u.status;
}

/** Submit, then wait with progress; the Cancel button cancels the job on the server too. */
async function runJob(input, label) {
  const client = makeClient();
  const job = { ctrl: new AbortController(), client, jobId: null, cancelled: false };
  busy = job;
  hideError();
  $("#auto").disabled = $("#submit").disabled = true;
  $("#cancel").hidden = false;
  $("#cancel").disabled = false;
  const started = performance.now();
  let last = [`${label}: submitting…`, undefined, started];
  setStatus(...last);
  const tick = setInterval(() => setStatus(...last), 1000); // the elapsed time keeps moving
  const onProgress = (u) => { last = [`${label}: ${describeState(u)}`, u.progress, started]; setStatus(...last); };
  try {
    const opts = { timeoutMs: JOB_TIMEOUT_MS, signal: job.ctrl.signal };
    const sub = await client.submit(input, opts);
    job.jobId = sub.id;
    if (job.cancelled) { // Cancel was pressed while the submit was in flight: cancel it now
      await cancelOnServer(job);
      throw new Error("cancelled");
    }
    onProgress({ status: sub.status, position: sub.position ?? undefined });
    return await client.wait(sub.id, { ...opts, onProgress });
  } catch (err) {
    if (job.cancelled) throw Object.assign(new Error("cancelled"), { cancelledJob: job });
    throw err;
  } finally {
    clearInterval(tick);
    busy = null;
    $("#cancel").hidden = true;
    $("#auto").disabled = $("#submit").disabled = !photo;
  }
}

async function cancelOnServer(job) {
  if (!job.jobId || job.serverReply) return;
  try {
    const reply = await job.client.cancel(job.jobId, { timeoutMs: 15_000 });
    job.serverReply = String(reply.status).toLowerCase();
  } catch (err) {
    job.serverReply = `not cancelled on the server (${isMaskpaintError(err) ? `${err.code}: ${err.message}` : err})`;
  }
}

$("#cancel").addEventListener("click", async () => {
  const job = busy;
  if (!job || job.cancelled) return;
  job.cancelled = true;
  $("#cancel").disabled = true;
  // no id yet: the submit is in flight; runJob cancels the job as soon as its id arrives
  // (aborting the submit could leave a queued job nobody can cancel)
  if (!job.jobId) return;
  await cancelOnServer(job); // before the local abort, so the reply can be shown
  job.ctrl.abort(new Error("cancelled by the user"));
});

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

/** Grow a detector box by `margin` of its size on every side, outward to whole px (core/masking/post.py grow_box). */
function grow([x0, y0, x1, y1], margin) {
  const mx = (x1 - x0) * margin, my = (y1 - y0) * margin;
  return [Math.floor(x0 - mx), Math.floor(y0 - my), Math.ceil(x1 + mx), Math.ceil(y1 + my)];
}

/**
 * Put a `task: "mask"` result into the editor: the mask as the editable layer, and the faces
 * and hands the worker protects (margins included) as the no-paint layer.
 */
async function showAutoMask(result) {
  await editor.setMask(artifactSrc(result.mask));
  const info = result.mask_info ?? {};
  const { input } = formValues();
  // mask_info boxes are in the photo's px; the editor may show a smaller preview (HEIC)
  const [pw, ph] = result.size ?? [photo.width, photo.height];
  const sx = photo.width / pw, sy = photo.height / ph;
  const scale = ([x0, y0, x1, y1]) => [x0 * sx, y0 * sy, x1 * sx, y1 * sy];
  const regions = [
    ...(input.protect_face ? info.faces ?? [] : []).map((f) => ({ box: scale(grow(f.box, FACE_MARGIN)), kind: "face", label: `face ${f.score.toFixed(2)}` })),
    ...(input.protect_hands ? info.hands ?? [] : []).map((h) => ({ box: scale(grow(h.box, HAND_MARGIN)), kind: "hand", label: `hand ${h.score.toFixed(2)}` })),
  ];
  editor.setProtected(regions);
  const why = info.reason ? ` (${info.reason})` : "";
  $("#mask-facts").textContent = `Mask: ${info.source}${why}, ${(100 * (info.coverage ?? 0)).toFixed(1)} % of the photo; `
    + `${(info.detections ?? []).length} garment(s), ${(info.faces ?? []).length} face(s) and ${(info.hands ?? []).length} hand(s) protected (hatched: the brush does not paint there).`;
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
    const card = addResult(result, job);
    setStatus(`Done in ${seconds(result.timings_ms)} (seed ${result.seed}).`);
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
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
  const line = document.createElement("div");
  const elapsed = started ? ` · ${((performance.now() - started) / 1000).toFixed(0)} s` : "";
  line.textContent = text + elapsed;
  const parts = [line];
  if (progress) {
    const p = document.createElement("div");
    const steps = Number(progress.steps) || 0;
    const step = Math.min(Number(progress.step) || 0, steps);
    p.textContent = `stage: ${progress.stage}${steps ? ` step ${step} / ${steps}` : ""}`;
    p.className = "progress-line";
    parts.push(p);
    if (steps) {
      // one unit more than the steps: decoding and upload follow the last step, so the bar is
      // full only when the job is done, never while it still runs
      const bar = document.createElement("progress");
      bar.max = steps + 1;
      bar.value = step;
      parts.push(bar);
    }
  }
  el.querySelector(".status-body").replaceChildren(...parts);
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
  if (code === "content_blocked") el.append(Object.assign(document.createElement("div"), { textContent: "Nothing was made or stored. Change the prompt (or the photo) to continue." }));
  el.hidden = false;
}

function failed(err) {
  if (err?.cancelledJob) {
    const job = err.cancelledJob;
    setStatus(job.jobId ? `Cancelled (job ${job.jobId}: ${job.serverReply ?? "cancelled"}).` : "Cancelled before the job was queued.");
    return;
  }
  $("#status").hidden = true;
  if (isMaskpaintError(err)) showError(err);
  else showError({ code: "internal", message: String(err?.message ?? err), field: null });
}

// ------------------------------------------------------------------------------ gallery

const ARTEFACTS = [["image", "result"], ["mask", "mask"], ["overlay", "overlay"]];

function extOf(a) {
  return (a.content_type ?? "image/png").split("/")[1].replace("jpeg", "jpg").replace(/[^\w]/g, "");
}

function addResult(result, job) {
  $("#gallery-wrap").hidden = false;
  const card = document.createElement("article");
  card.className = "card";
  const cmp = document.createElement("div");
  cmp.className = "compare";
  const before = Object.assign(document.createElement("img"), { src: photo.objectUrl, alt: "before" });
  const after = Object.assign(document.createElement("img"), { alt: "after", className: "after" });
  const afterSrc = artifactSrc(result.image);
  if (afterSrc) after.src = afterSrc;
  const bar = Object.assign(document.createElement("div"), { className: "bar" });
  const slider = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 100, value: 50 });
  slider.setAttribute("aria-label", "before / after");
  slider.addEventListener("input", () => cmp.style.setProperty("--pos", `${slider.value}%`));
  const tl = Object.assign(document.createElement("span"), { className: "tag l", textContent: "before" });
  const tr = Object.assign(document.createElement("span"), { className: "tag r", textContent: "after" });
  cmp.append(before, after, bar, tl, tr, slider);

  const meta = document.createElement("div");
  meta.className = "meta";
  const sp = result.sampling; // what ran: a draft's sampler, steps and guidance
  const ran = sp ? ` · ${sp.speed === "draft" ? "draft, " : ""}${sp.scheduler} ${sp.num_inference_steps} steps` : "";
  meta.textContent = `“${job.prompt}” · seed ${result.seed} · ${result.model ?? ""}${ran} · ${seconds(result.timings_ms)} · ${result.job_id}`;
  const links = document.createElement("div");
  links.className = "links";
  for (const [kind, label] of ARTEFACTS) {
    const a = result[kind];
    const href = a && artifactSrc(a);
    if (!href) continue;
    links.append(Object.assign(document.createElement("a"), {
      href, download: `${result.job_id}-${kind}.${extOf(a)}`, target: "_blank", rel: "noopener",
      textContent: `${label} (${a.width}x${a.height})`,
    }));
  }
  const all = Object.assign(document.createElement("button"), { type: "button", className: "download-all", textContent: "Download all" });
  all.addEventListener("click", () => downloadAll(result, all));
  card.append(cmp, meta, links, all);
  $("#gallery").prepend(card);
  return card;
}

/**
 * Save every artefact of a result. Its URLs are presigned for `url_ttl_s` (1 h by default):
 * on the web API a poll of a finished job answers them signed afresh, so an old card still
 * downloads; each file is fetched and saved under the job's name (a cross-origin link's
 * `download` name would be ignored; the bucket's CORS rule allows the fetch).
 */
async function downloadAll(result, button) {
  button.disabled = true;
  let output = result;
  try {
    if (settings.provider !== "runpod") {
      const st = await makeClient().status(result.job_id, { timeoutMs: 30_000 }).catch(() => null);
      if (st?.status === "done" && st.output) output = st.output;
    }
    for (const [kind] of ARTEFACTS) {
      const a = output[kind];
      const src = a && artifactSrc(a);
      if (!src) continue;
      const name = `${result.job_id}-${kind}.${extOf(a)}`;
      let href = src;
      try {
        href = URL.createObjectURL(await (await fetch(src)).blob());
      } catch { /* no CORS on the bucket: the browser opens the URL instead */ }
      const link = Object.assign(document.createElement("a"), { href, download: name, rel: "noopener" });
      document.body.append(link);
      link.click();
      link.remove();
      if (href.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(href), 60_000);
    }
  } finally {
    button.disabled = false;
  }
}

// for scripts and the screenshot (docs/mask-editor.png)
window.maskpaintPage = { editor, openPhoto, showAutoMask, addResult, showError, get photo() { return photo; }, get settings() { return settings; } };
