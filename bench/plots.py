"""Summarised bench results -> ``stages.png`` (per-job stages by size and masking path) and
``memory.png`` (RSS after each job: the 2 MP flatness run and the 12 MP jobs)."""

from __future__ import annotations

from pathlib import Path


def plots(r: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = {f"{k}\nfallback path": v for k, v in (r.get("jobs") or {}).items()}
    jobs.update({f"{k}\nauto path": v for k, v in (r.get("auto_path") or {}).items()})
    sizes = list(jobs)
    segs = [("fetch", "#8da0cb", None), ("decode", "#66c2a5", None),
            ("mask_model", "#fc8d62", "//"), ("mask_other", "#fc8d62", None),
            ("inpaint_model", "#e78ac3", "//"), ("inpaint_other", "#e78ac3", None),
            ("encode", "#a6d854", None), ("upload", "#ffd92f", None),
            ("handler_other", "#b3b3b3", None)]
    labels = {"mask_model": "mask: mask.*.forward", "mask_other": "mask: other (GrabCut, post)",
              "inpaint_model": "inpaint: inpaint.forward", "inpaint_other": "inpaint: crop/resize/paste",
              "handler_other": "handler (parse, reply)"}

    def val(k, seg):
        j = jobs[k]
        if seg in j["split_median"]:
            return max(0.0, j["split_median"][seg] or 0.0)
        return j["stages"][seg]["median"] or 0.0

    fig, axes = plt.subplots(1, 2, figsize=(7 + 1.6 * len(sizes), 5.4))
    for ax, norm in zip(axes, (False, True)):
        bottom = [0.0] * len(sizes)
        for seg, colour, hatch in segs:
            vals = [val(k, seg) for k in sizes]
            if norm:
                tot = [sum(val(k, s) for s, _, _ in segs) for k in sizes]
                vals = [100 * v / t if t else 0 for v, t in zip(vals, tot)]
            ax.bar(sizes, vals, bottom=bottom, color=colour, hatch=hatch, edgecolor="white",
                   label=labels.get(seg, seg))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("% of job" if norm else "ms (median)")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title("share of the job" if norm else "job time by stage (hatched = model forward)")
        if not norm:
            for i, k in enumerate(sizes):
                ax.text(i, bottom[i], f"{bottom[i]:.0f} ms\noverhead {jobs[k]['overhead']['median']:.0f}",
                        ha="center", va="bottom", fontsize=8)
            ax.set_ylim(0, max(bottom) * 1.15 if bottom else 1)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    meta = r["meta"]
    dev = (r.get("device") or {}).get("device")
    fig.suptitle(f"maskpaint per-job stages, {meta['machine']['nproc']} CPU "
                 f"{meta['machine']['cpu_model'][:40]}, device {dev}, {meta['steps']} steps, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "stages.png", dpi=110)
    plt.close(fig)

    m = r.get("memory")
    if m:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        xs = list(range(1, len(m["rss_series_mb"]) + 1))
        ax.plot(xs, m["rss_series_mb"], marker=".", lw=1, label="2 MP jobs after cold start")
        m12 = (r.get("rss_12MP") or {}).get("rss_series_mb")
        if m12:
            ax.plot(range(1, len(m12) + 1), m12, marker=".", lw=1,
                    label="12 MP jobs (after the 2 MP ones)")
            ax.legend(fontsize=8)
        ax.axvline(5, color="grey", ls=":", lw=1)
        ax.set_xlabel("job #")
        ax.set_ylabel("RSS after job (MiB)")
        g12 = (r.get("rss_12MP") or {}).get("growth_pct")
        ax.set_title(f"memory flatness, job 5 -> last: 2 MP {m['growth_pct']:+.2f}%"
                     + (f", 12 MP {g12:+.2f}%" if g12 is not None else ""))
        fig.tight_layout()
        fig.savefig(out_dir / "memory.png", dpi=110)
        plt.close(fig)
