"""The bench's per-job target rows (bench/job_targets.py): verdicts and rendering from raw results, and
the per-job peak-RSS reader. No timings are asserted (speed lives in the bench itself)."""

from __future__ import annotations

import numpy as np

from bench import instrument, job_targets
from bench.report import targets_table


def _job(total: float, forwards: dict[str, float], mask: float = 0.0, encode: float = 0.0,
         upload: float = 0.0, source: str = "detector+sam", rss: float = 1000.0) -> dict:
    t = {"total": total, "mask": mask, "encode": encode, "upload": upload, **forwards}
    return {"timings_ms": t, "mask_source": source, "rss_mb": rss, "detail_ms":
            {"encode.result_png": encode / 2}, "bytes": {"image": 2_000_000}}


def _raw(auto_total: float, png_store: float, peaks: list[float], after: list[float]) -> dict:
    # provided job: total 300, forwards 100 -> overhead 200
    provided = _job(300, {"inpaint.forward": 80, "mask.faces.scrfd.forward": 20}, mask=60,
                    source="provided")
    # automatic job: forwards 150 -> overhead auto_total - 150
    auto = _job(auto_total, {"inpaint.forward": 80, "mask.sam.forward": 50,
                             "mask.garments.forward": 20}, mask=200)
    png = [_job(500, {"inpaint.forward": 100}, encode=png_store - 10, upload=10)]
    mem = {"idle_rss_mb": 1000.0, "method": "VmHWM", "size": "12MP",
           "frame_bytes": job_targets.FRAME_BYTES,
           "jobs": [{"peak_rss_mb": p, "rss_after_mb": a, "cuda_peak_mb": None}
                    for p, a in zip(peaks, after)]}
    return {"auto_raw": {"auto_vs_provided": {"pairs": [{"auto": auto, "provided": provided}]}},
            "jobs_raw": {"png_output": png, "rss_12MP": mem}}


def _rows(raw: dict) -> dict[str, dict]:
    rows = job_targets.targets(job_targets.summarise(raw))
    return {r["target"].split(",")[0]: r for r in rows}


def test_frame_is_a_12mp_rgb_uint8_image():
    assert job_targets.FRAME_BYTES == 3000 * 4000 * 3


def test_rows_pass_within_goals_and_fail_beyond():
    frame = job_targets.FRAME_BYTES / 2**20
    ok = _rows(_raw(auto_total=550, png_store=150, peaks=[1000 + 4 * frame - 1] * 6,
                    after=[1100, 1100, 1100, 1100, 1100, 1150]))
    assert [r["pass"] for r in ok.values()] == [True, True, True, True]
    assert "2.00x" in ok["automatic masking"]["measured"]  # (550 - 150) / (300 - 100)
    bad = _rows(_raw(auto_total=560, png_store=151, peaks=[1010, 1000 + 4 * frame + 1] + [1020] * 5,
                     after=[1100, 1100, 1100, 1100, 1100, 1100, 1200]))
    assert [r["pass"] for r in bad.values()] == [False, False, False, False]
    assert bad["memory flat over 7 12MP jobs (RSS after job 7 vs job 5)"]["measured"] \
        .startswith("+9.1%")


def test_automatic_masking_row_says_when_the_auto_path_did_not_run():
    raw = _raw(auto_total=400, png_store=100, peaks=[1010], after=[1100])
    raw["auto_raw"]["auto_vs_provided"]["pairs"][0]["auto"]["mask_source"] = "grabcut"
    assert "automatic masking took: grabcut" in _rows(raw)["automatic masking"]["measured"]


def test_targets_table_marks_failures():
    rows = job_targets.targets(job_targets.summarise(
        _raw(auto_total=900, png_store=100, peaks=[1010], after=[1100])))
    table = targets_table({"targets": rows}).splitlines()
    auto = next(line for line in table if line.startswith("| automatic masking"))
    png = next(line for line in table if line.startswith("| PNG output"))
    assert auto.endswith("| **FAIL** |") and png.endswith("| PASS |")


def test_nothing_measured_gives_no_rows():
    assert job_targets.targets(job_targets.summarise({})) == []


def test_peak_rss_sees_a_short_lived_allocation():
    with instrument.PeakRSS() as peak:
        # the level just before (read inside: the process may shrink between reads, e.g. a GC
        # in a full test run took ~9 MiB between an outside read and the allocation)
        before = instrument.rss_mb()
        buf = np.ones((64, 2**20), np.uint8)  # 64 MiB, touched
        del buf
    assert peak.method
    assert peak.peak_mib >= before + 48
    assert instrument.rss_mb() < peak.peak_mib - 30  # it was freed: a peak, not the level


def test_results_md_keeps_the_hand_written_sections_whatever_the_out_dir(tmp_path):
    import json
    from pathlib import Path

    from bench import report, summary

    results = Path(__file__).resolve().parents[1] / "bench" / "results"
    r = json.loads((results / "latest.json").read_text())
    r.update(summary.summarise(r))
    md = report.results_md(r, tmp_path)
    assert "## Where each target stands and why" in md
    for part in ("guard.md", "conditioning.md", "drafts.md"):
        heading = (results / part).read_text().strip().splitlines()[0]
        assert heading in md


def test_automatic_masking_row_flags_overlapping_model_calls():
    # two detectors run in parallel threads: their forwards add up to more than the mask stage
    raw = _raw(auto_total=400, png_store=100, peaks=[1010], after=[1100])
    t = raw["auto_raw"]["auto_vs_provided"]["pairs"][0]["auto"]["timings_ms"]
    t["mask.faces.scrfd.forward"] = 190.0
    assert "overhead understated" in _rows(raw)["automatic masking"]["measured"]
    assert "understated" not in _rows(_raw(400, 100, [1010], [1100]))["automatic masking"]["measured"]
