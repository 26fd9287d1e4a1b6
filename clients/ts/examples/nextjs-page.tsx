// app/outfit/page.tsx: a photo, a prompt, progress while it runs, the result
"use client";
import { useState } from "react";
import { useMaskpaintJob } from "@maskpaint/client/react";

export default function Outfit() {
  const job = useMaskpaintJob(); // talks to /api/maskpaint/jobs (the two routes above)
  const [image, setImage] = useState<string>();
  const busy = job.status === "submitting" || job.status === "queued" || job.status === "running";
  const steps = job.progress?.steps ?? 0;
  const step = Math.min(job.progress?.step ?? 0, steps);

  function pick(e: React.ChangeEvent<HTMLInputElement>) {
    const file = e.target.files?.[0];
    if (!file) return;
    const r = new FileReader();
    r.onload = () => setImage(r.result as string);
    r.readAsDataURL(file); // fine up to ~3 MB: see "Large photos" for the upload flow
  }

  return (
    <form onSubmit={(e) => { e.preventDefault(); if (image) job.submit({ image, prompt: new FormData(e.currentTarget).get("prompt") as string }); }}>
      <input type="file" accept="image/*" onChange={pick} />
      <input name="prompt" defaultValue="a red leather jacket" />
      <button disabled={!image || busy}>Repaint</button>
      {busy && <button type="button" onClick={job.cancel}>Cancel</button>}
      <p id="status">
        {job.status}
        {job.position !== undefined && ` (${job.position} ahead)`}
        {job.progress && ` · ${job.progress.stage}${steps ? ` ${step} / ${steps}` : ""}`}
      </p>
      {steps > 0 && busy && <progress max={steps + 1} value={step} />}
      {job.error && <p role="alert">{job.error.code}: {job.error.message}</p>}
      {job.result?.image && <img id="result" src={job.result.image.url} alt="result" width={320} />}
    </form>
  );
}
