"""The batch pieces that need no server: the contract's ``idempotency_key``, reading a JSONL
catalogue, what a rerun skips, RunPod's failure bodies, backoff and percentiles."""

from __future__ import annotations

import json

import pytest

from core.contract import parse_job
from core.errors import JobError
from handlers.batch.jobs import (BatchJob, ResultsFile, fill_template, job_id_for, pending_jobs,
                                 read_jsonl)
from handlers.batch.loop import backoff_s
from handlers.batch.runpod_target import runpod_error
from handlers.batch.summary import percentile

GOOD = {"image": "https://example.com/a.jpg", "prompt": "a red jacket"}


def test_idempotency_key_names_the_record_instead_of_the_provider_id():
    assert parse_job("rp-123", GOOD).id == "rp-123"
    assert parse_job("rp-123", {**GOOD, "idempotency_key": "shop-42"}).id == "key-shop-42"
    # the same key under another provider id is the same record
    assert parse_job("fc-999", {**GOOD, "idempotency_key": "shop-42"}).id == "key-shop-42"
    for bad in ("../etc", "", ".hidden", "x" * 65, "a b"):
        with pytest.raises(JobError) as exc:
            parse_job("rp-1", {**GOOD, "idempotency_key": bad})
        assert exc.value.code.value == "invalid_input"
        assert exc.value.field == "idempotency_key"
        if bad:  # the message never echoes the value
            assert bad not in exc.value.message


def test_jsonl_lines_become_jobs_or_numbered_problems(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([
        json.dumps(GOOD),
        "",
        json.dumps({"id": "a1", "input": GOOD}),
        json.dumps({"id": "a1", "input": {**GOOD, "seed": 2}}),
        json.dumps({"id": "bad id", "input": GOOD}),
        json.dumps({"input": GOOD, "webhook": "https://x"}),
        "not json",
        json.dumps([GOOD]),
        json.dumps({"input": "text"}),
    ]) + "\n")
    jobs, problems = read_jsonl(path)
    assert [(j.id, j.source) for j in jobs] == [(job_id_for(GOOD), "jobs.jsonl:1"),
                                                ("a1", "jobs.jsonl:3")]
    assert [p.where for p in problems] == [f"jobs.jsonl:{n}" for n in (4, 5, 6, 7, 8, 9)]
    assert "duplicate" in problems[0].message and "line 3" in problems[0].message
    # the id is the content's: key order does not matter, any value does
    assert job_id_for({"prompt": "a red jacket", "image": "https://example.com/a.jpg"}) == \
        job_id_for(GOOD) != job_id_for({**GOOD, "seed": 1})


def test_a_rerun_skips_settled_jobs_and_retries_retryable_failures(tmp_path):
    results = ResultsFile(tmp_path / "r.jsonl", None)
    jobs = [BatchJob(i, GOOD, "x") for i in ("done", "bad", "oom", "new")]
    results.append({"id": "oom", "status": "failed", "error": {"code": "gpu_oom", "retryable": True}})
    results.append({"id": "done", "status": "done", "output": {}})
    results.append({"id": "bad", "status": "failed",
                    "error": {"code": "invalid_image", "retryable": False}})
    (tmp_path / "r.jsonl").open("a").write('{"id": "new", "sta')  # a line cut by a crash
    assert [j.id for j in pending_jobs(jobs, results.load())] == ["oom", "new"]


def test_template_fills_every_placeholder():
    t = {"image": "{photo}", "garment_image": "https://shop/x.jpg", "notes": ["{photo}", 3]}
    assert fill_template(t, "s3://b/k.jpg") == {"image": "s3://b/k.jpg",
                                               "garment_image": "https://shop/x.jpg",
                                               "notes": ["s3://b/k.jpg", 3]}


def test_runpod_failure_bodies_hosted_and_local():
    hosted = {"status": "FAILED", "error": "gpu_oom: CUDA out of memory",
              "output": {"error_code": "gpu_oom", "message": "CUDA out of memory",
                         "field": None, "retryable": True}}
    assert runpod_error(hosted) == {"code": "gpu_oom", "message": "CUDA out of memory",
                                    "field": None, "retryable": True}
    local = {"status": "FAILED", "error": "invalid_image: image: not a decodable image"}
    assert runpod_error(local) == {"code": "invalid_image", "field": None, "retryable": False,
                                   "message": "image: not a decodable image"}
    assert runpod_error({"status": "FAILED", "error": "Job ID not found"})["code"] == "internal"
    assert runpod_error({"status": "TIMED_OUT"})["code"] == "timeout"


def test_backoff_is_full_jitter_capped():
    assert [backoff_s(n, 1.0, 30.0, rng=lambda: 1.0) for n in (1, 2, 3, 6, 9)] == \
        [1.0, 2.0, 4.0, 30.0, 30.0]
    assert backoff_s(4, rng=lambda: 0.0) == 0.0


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == \
        (50.0, 95.0, 99.0)


class _RefusingTarget:
    """Completes ``ok`` jobs; refuses the key (BatchError) on the others."""

    name = "fake"

    def __init__(self, ok):
        self.ok, self.submitted = set(ok), []

    def check(self):
        pass

    def submit(self, job, attempt):
        from handlers.batch.jobs import BatchError

        self.submitted.append(job.id)
        if job.id not in self.ok:
            raise BatchError("the web API refused the token")
        return job.id

    def wait(self, handle, stop):
        from handlers.batch.loop import Outcome

        return Outcome("done", output={"job_id": handle, "timings_ms": {"total": 5.0}})


def test_a_key_refused_mid_run_stops_the_batch_and_keeps_what_finished(tmp_path):
    from handlers.batch.jobs import BatchError
    from handlers.batch.loop import Batch

    results = ResultsFile(tmp_path / "r.jsonl", None)
    target = _RefusingTarget(ok={"a"})
    jobs = [BatchJob(i, GOOD, "x") for i in ("a", "b", "c", "d")]
    with pytest.raises(BatchError, match="refused"):
        Batch(target, results, concurrency=1).run(jobs)
    assert target.submitted == ["a", "b"]  # nothing after the refusal
    assert [(r["id"], r["status"]) for r in results.load().values()] == [("a", "done")]
