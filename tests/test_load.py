"""``make load`` for a short burst (``python -m bench.load``): Locust users on the local web API
(and on the runpod SDK's local server), then the books: no accepted job may be lost and no job
may run the model twice, resubmissions under a used key included."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.load import model_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["web", "runpod"])
def test_short_burst_loses_no_job_and_runs_none_twice(target, dev_weights, tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.load", "--target", target, "--seconds", "12",
                        "--users", "3", "--resubmit-every", "2", "--weights", str(dev_weights),
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / f"load-{target}.json").read_text())
    assert report["jobs_lost"] == 0 and report["jobs_run_twice"] == 0
    assert report["failures"] == 0 and report["jobs_done"] >= 3
    assert report["resubmitted"] >= 1  # the duplicate check saw repeats to catch
    # every job that was not a repeat ran the model once; repeats ran it never (on the web API a
    # repeat is the first job again, on RunPod a job of its own answered from the record)
    assert report["model_runs"] == report["jobs_done"] - report["repeat_jobs"]
    # one end-to-end sample per accepted submission at most (the stop cuts some)
    assert 1 <= report["stats"]["e2e"]["requests"] <= report["jobs_accepted"] + report["resubmitted"]
    assert "| jobs lost | **0** |" in r.stdout


def test_model_runs_counts_each_inpaint_stage_per_record_key(tmp_path):
    log = tmp_path / "server.log"
    line = lambda key, stage: json.dumps({"msg": "stage", "job_id": key, "stage": stage})  # noqa: E731
    log.write_text("\n".join([line("key-a", "inpaint"), line("key-a", "mask"),
                              "plain text line", line("key-b", "inpaint"),
                              line("key-a", "inpaint")]) + "\n")
    assert model_runs(log) == Counter({"key-a": 2, "key-b": 1})
