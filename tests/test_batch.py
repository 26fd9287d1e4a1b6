"""The batch CLI (``python -m handlers.cli batch``) against the runpod SDK's local server and a
moto S3 server: exact summaries, resumption after a kill without running any job twice,
transient 503s retried, and the bad inputs a user meets (a broken line, no key, no endpoint, a
results file from another template)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from handlers.batch import cli as batch_cli
from tests.batch_stack import REPO, clean_env, gpu_runs, runpod_stack, tiny_job, tiny_photo
from tests.conftest import BUCKET
from tests.live_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(dev_weights, tmp_path_factory):
    with runpod_stack(dev_weights, tmp_path_factory.mktemp("batch-logs")) as st:
        yield st


@pytest.fixture(scope="module")
def media(photos) -> tuple[str, str]:
    return tiny_photo(photos["bus"])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _batch(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run the CLI in this process: (exit status, the JSON summary or None, stderr)."""
    rc = batch_cli.main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    return rc, summary, err


def test_forty_jobs_three_bad_give_exact_counts_and_every_result_in_s3(stack, media, tmp_path,
                                                                       capsys):
    image, mask = media
    lines = [json.dumps(tiny_job(image, mask, seed)) for seed in range(37)]
    bad = {  # what each bad job must be recorded with
        "no-prompt": ("invalid_input", {k: v for k, v in tiny_job(image, mask, 1).items()
                                        if k != "prompt"}),
        "not-an-image": ("invalid_image", tiny_job("data:image/png;base64,bm90IGFuIGltYWdl",
                                                   mask, 2)),
        "foreign-bucket": ("blocked_url", tiny_job("s3://someone-elses-bucket/x.jpg", mask, 3)),
    }
    for i, (job_id, (_code, inp)) in enumerate(bad.items()):
        lines.insert(5 + 10 * i, json.dumps({"id": job_id, "input": inp}))
    lines.insert(6, '{"image": "data:...", "prompt": ')  # cut short: line 7
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")
    results = tmp_path / "out.jsonl"

    rc, summary, err = _batch(capsys, "--jobs", str(jobs), "--target", "runpod",
                              "--url", stack["url"], "--results", str(results),
                              "--concurrency", "8", "--price-per-s", "0.001")
    assert rc == 1, err  # some failed
    assert (summary["jobs"], summary["done"], summary["failed"], summary["not_finished"]) == \
        (40, 37, 3, 0), err
    assert summary["errors"] == {"blocked_url": 1, "invalid_image": 1, "invalid_input": 1}
    assert summary["skipped_inputs"] == [{"where": "jobs.jsonl:7",
                                          "message": "not valid JSON (JSONDecodeError)"}]
    assert "skipped jobs.jsonl:7" in err
    assert summary["gpu_s"] > 0 and summary["cost"] == pytest.approx(summary["gpu_s"] * 0.001,
                                                                     abs=1e-6)
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]

    recs = _lines(results)
    assert len(recs) == 40 and len({r["id"] for r in recs}) == 40
    for job_id, (code, _inp) in bad.items():
        (rec,) = [r for r in recs if r["id"] == job_id]
        assert rec["status"] == "failed" and rec["error"]["code"] == code, rec
        assert rec["error"]["retryable"] is False and rec["attempts"] == 1
    done = [r for r in recs if r["status"] == "done"]
    for rec in done:
        assert rec["output"]["job_id"] == f"key-{rec['id']}"
        for kind in ("image", "mask", "overlay"):
            head = stack["s3"].head_object(Bucket=BUCKET, Key=rec["output"][kind]["key"])
            assert head["ContentLength"] == rec["output"][kind]["bytes"]
    runs = gpu_runs(stack["log"])
    assert all(runs[f"key-{r['id']}"] == 1 for r in done), runs

    # a rerun submits nothing: every job is settled in the results file
    rc2, again, _ = _batch(capsys, "--jobs", str(jobs), "--target", "runpod",
                           "--url", stack["url"], "--results", str(results))
    assert rc2 == 1 and again["this_run"]["to_run"] == 0
    assert (again["done"], again["failed"]) == (37, 3)
    assert len(_lines(results)) == 40 and gpu_runs(stack["log"]) == runs


def test_killed_run_resumes_and_no_job_runs_twice(stack, media, tmp_path, capsys):
    image, mask = media
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(tiny_job(image, mask, 1000 + s)) + "\n" for s in range(12)))
    results = tmp_path / "jobs.results.jsonl"
    env = {**clean_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "handlers.cli", "batch", "--jobs", str(jobs),
                             "--target", "runpod", "--url", stack["url"], "--concurrency", "4",
                             "--no-progress"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (results.exists() and len(_lines(results)) >= 3):
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no results within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no chance to write anything more
        proc.wait(timeout=30)
    first = _lines(results)
    assert 3 <= len(first) < 12

    rc, summary, err = _batch(capsys, "--jobs", str(jobs), "--target", "runpod",
                              "--url", stack["url"], "--concurrency", "4")
    assert rc == 0, err
    assert summary["this_run"]["to_run"] == 12 - len(first)
    recs = _lines(results)
    assert Counter(r["id"] for r in recs) == Counter({r["id"]: 1 for r in recs})
    assert len(recs) == 12 and all(r["status"] == "done" for r in recs)
    runs = gpu_runs(stack["log"])
    assert {r["id"]: runs[f"key-{r['id']}"] for r in recs} == {r["id"]: 1 for r in recs}


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to ``upstream``; answers 503 to the first ``fail_runs`` ``POST /run``."""

    upstream = ""
    fail_runs = 0
    failed: list[str] = []

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.command == "POST" and self.path == "/run" and type(self).fail_runs > 0:
            type(self).fail_runs -= 1
            type(self).failed.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        req = urllib.request.Request(self.upstream + self.path, data=body or None,
                                     method=self.command,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    req, timeout=300) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward

    def log_message(self, *args) -> None:
        pass


def test_transient_503_is_retried_and_the_job_succeeds(stack, media, tmp_path, capsys):
    image, mask = media
    _FlakyProxy.upstream, _FlakyProxy.fail_runs, _FlakyProxy.failed = stack["url"], 2, []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        jobs = tmp_path / "one.jsonl"
        jobs.write_text(json.dumps({"id": "flaky-1", "input": tiny_job(image, mask, 77)}) + "\n")
        rc, summary, err = _batch(capsys, "--jobs", str(jobs), "--target", "runpod",
                                  "--url", f"http://127.0.0.1:{proxy.server_port}")
    finally:
        proxy.shutdown()
    assert _FlakyProxy.failed == ["/run", "/run"]  # two 503s were served ...
    assert rc == 0 and summary["done"] == 1, err  # ... and the job still went through
    (rec,) = _lines(tmp_path / "one.results.jsonl")
    assert rec["status"] == "done" and rec["attempts"] == 1


def test_unreachable_endpoint_fails_fast_and_writes_nothing(tmp_path, media, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(tiny_job(*media, 1)) + "\n")
    rc, summary, err = _batch(capsys, "--jobs", str(jobs), "--target", "runpod",
                              "--url", f"http://127.0.0.1:{free_port()}")
    assert rc == 2 and summary is None
    assert "cannot reach the RunPod endpoint" in err and "nothing was submitted" in err
    assert not (tmp_path / "jobs.results.jsonl").exists()


def test_missing_api_key_fails_before_any_request(tmp_path, media, capsys, monkeypatch):
    import urllib3

    def no_request(*_a, **_k):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", no_request)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("MASKPAINT_API_TOKEN", raising=False)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(tiny_job(*media, 1)) + "\n")
    rc, _, err = _batch(capsys, "--jobs", str(jobs), "--target", "runpod", "--endpoint-id", "ep1")
    assert rc == 2 and "RUNPOD_API_KEY is not set" in err
    rc, _, err = _batch(capsys, "--jobs", str(jobs), "--target", "web",
                        "--url", "https://example.modal.run")
    assert rc == 2 and "MASKPAINT_API_TOKEN is not set" in err
    assert not (tmp_path / "jobs.results.jsonl").exists()


def test_results_file_of_another_template_is_refused(tmp_path, photos, capsys, monkeypatch):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "bus.jpg").write_bytes(photos["bus"].read_bytes())
    first, second = tmp_path / "red.json", tmp_path / "blue.json"
    first.write_text(json.dumps({"image": "{photo}", "prompt": "a red jacket"}))
    second.write_text(json.dumps({"image": "{photo}", "prompt": "a blue jacket"}))
    results = tmp_path / "shop.results.jsonl"
    from handlers.batch.jobs import template_fingerprint

    line = {"id": "j0", "status": "done", "output": {},
            "template": template_fingerprint(json.loads(first.read_text()))}
    results.write_text(json.dumps(line) + "\n")
    monkeypatch.setenv("MASKPAINT_API_TOKEN", "t" * 20)
    # the endpoint is unreachable: the template check must come before any request
    argv = ["--photos", str(folder), "--template", str(second), "--target", "web",
            "--url", f"http://127.0.0.1:{free_port()}"]
    rc, _, err = _batch(capsys, *argv)
    assert rc == 2 and "another job template" in err and "new results file" in err
    assert results.read_text() == json.dumps(line) + "\n"  # untouched
    rc, _, err = _batch(capsys, *argv[:3], str(first), *argv[4:])  # the same template: accepted
    assert rc == 2 and "cannot reach the web API" in err


def test_photo_folder_uploaded_to_s3_then_run(stack, photos, media, tmp_path, capsys,
                                              monkeypatch):
    from PIL import Image, ImageOps

    folder = tmp_path / "shop"
    folder.mkdir()
    img = Image.open(photos["bus"]).convert("RGB")
    img.thumbnail((96, 96))  # 72 x 96, the size of the media's mask
    img.save(folder / "front.jpg", quality=85)
    ImageOps.mirror(img).save(folder / "mirrored.jpg", quality=85)
    (folder / "notes.txt").write_text("not a photo")
    template = tmp_path / "outfit.json"
    template.write_text(json.dumps({**tiny_job("{photo}", media[1], 3), "prompt": "a green coat"}))
    for k, v in clean_env().items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASKPAINT_S3_ENDPOINT_URL", stack["s3_url"])
    monkeypatch.setenv("MASKPAINT_S3_REGION", "us-east-1")
    argv = ["--photos", str(folder), "--template", str(template), "--target", "runpod",
            "--url", stack["url"], "--upload-to", f"s3://{BUCKET}/inputs/"]
    rc, summary, err = _batch(capsys, *argv)
    assert rc == 0 and summary["done"] == 2, err
    uploaded = stack["s3"].list_objects_v2(Bucket=BUCKET, Prefix="inputs/")["Contents"]
    assert len(uploaded) == 2
    recs = _lines(tmp_path / "shop.results.jsonl")
    assert sorted(r["source"] for r in recs) == ["front.jpg", "mirrored.jpg"]
    rc, again, _ = _batch(capsys, *argv)  # content-addressed uploads: the same ids again
    assert rc == 0 and again["this_run"]["to_run"] == 0
