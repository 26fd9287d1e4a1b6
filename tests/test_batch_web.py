"""The batch CLI against the local web API (``python -m handlers.serve``, the app Modal serves):
jobs through ``POST /jobs`` + polls with typed failures, keyed by the batch's ids; and Ctrl-C,
which stops submitting, writes what finished and exits 130, after which a rerun finishes the
rest with every job written once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from handlers.batch import cli as batch_cli
from tests.batch_stack import REPO, clean_env, tiny_job, tiny_photo
from tests.live_server import local_web

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web(dev_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch-web")
    with local_web(dev_weights, tmp / "out", tmp / "serve.log") as srv:
        yield srv


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_web_api_batch_records_results_and_typed_failures(web, photos, tmp_path, capsys,
                                                         monkeypatch):
    image, mask = tiny_photo(photos["bus"])
    jobs = tmp_path / "jobs.jsonl"
    lines = [json.dumps(tiny_job(image, mask, s)) for s in range(4)]
    lines.append(json.dumps({"id": "bad-steps", "input": {**tiny_job(image, mask, 9),
                                                          "num_inference_steps": 0}}))
    jobs.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("MASKPAINT_API_TOKEN", web["token"])
    rc = batch_cli.main(["--jobs", str(jobs), "--target", "web", "--url", web["url"],
                         "--concurrency", "3", "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1
    assert (summary["done"], summary["failed"], summary["errors"]) == (4, 1, {"invalid_input": 1})
    recs = {r["id"]: r for r in _lines(tmp_path / "jobs.results.jsonl")}
    assert recs["bad-steps"]["error"]["field"] == "num_inference_steps"
    for rec in recs.values():
        if rec["status"] == "done":
            assert rec["output"]["job_id"] == f"key-{rec['id']}"
            assert rec["output"]["image"]["url"].startswith(web["url"] + "/outputs/")

    monkeypatch.setenv("MASKPAINT_API_TOKEN", "a-wrong-token-0123456789")
    rc = batch_cli.main(["--jobs", str(jobs), "--target", "web", "--url", web["url"],
                         "--results", str(tmp_path / "other.jsonl"), "--no-progress"])
    assert rc == 2 and "refused the token" in capsys.readouterr().err


def test_ctrl_c_writes_what_finished_and_a_rerun_completes(web, photos, tmp_path, capsys,
                                                           monkeypatch):
    image, mask = tiny_photo(photos["bus"])
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(tiny_job(image, mask, 500 + s)) + "\n" for s in range(10)))
    results = tmp_path / "jobs.results.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", "batch", "--jobs", str(jobs), "--target", "web",
         "--url", web["url"], "--concurrency", "2", "--no-progress"], cwd=REPO,
        env={**clean_env(), "MASKPAINT_API_TOKEN": web["token"]}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (results.exists() and _lines(results)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["this_run"]["interrupted"] is True
    written = _lines(results)
    assert 1 <= len(written) < 10 and all(r["status"] == "done" for r in written)
    assert summary["done"] == len(written)

    monkeypatch.setenv("MASKPAINT_API_TOKEN", web["token"])
    rc = batch_cli.main(["--jobs", str(jobs), "--target", "web", "--url", web["url"],
                         "--no-progress"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and again["this_run"]["to_run"] == 10 - len(written)
    recs = _lines(results)
    assert len(recs) == 10 and Counter(r["id"] for r in recs).most_common(1)[0][1] == 1
