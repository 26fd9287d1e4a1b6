"""``modal run modal_app.py::batch`` without a Modal account: the local entrypoint maps the GPU
class's ``run`` (here through Modal's own ``.local()``, the real job logic on the tiny models and
moto S3) over a JSONL file, caps the containers through ``with_options``, and writes the same
results lines as the batch CLI; a crashed input is recorded and a rerun runs only what is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.batch_stack import tiny_job, tiny_photo
from tests.conftest import BUCKET

pytestmark = pytest.mark.slow


class _LocalMap:
    """``MaskPaint().run`` with Modal's ``map`` done here, input by input, through ``.local()``;
    the ids in ``crash`` raise like a lost container (returned, as with return_exceptions)."""

    def __init__(self, method, crash=()):
        self.method, self.crash, self.calls = method, set(crash), []

    def map(self, inputs, ids, *, return_exceptions=False, order_outputs=True):
        assert return_exceptions and order_outputs  # one crash must not end the map
        for job, job_id in zip(inputs, ids):
            self.calls.append(job_id)
            yield (RuntimeError("container lost") if job_id in self.crash
                   else self.method.local(job, job_id))


@pytest.fixture
def modal_stage(monkeypatch, dev_weights, model_set, s3, tmp_path):
    """The Modal class's container environment on moto S3 with the session's models."""
    from core.models import ModelSet

    for k in ("MASKPAINT_S3_ENDPOINT_URL", "MASKPAINT_S3_PREFIX", "MASKPAINT_INPUT_BUCKETS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"MASKPAINT_WEIGHTS_DIR": str(dev_weights), "MASKPAINT_S3_BUCKET": BUCKET,
                 "MASKPAINT_S3_REGION": "us-east-1", "MASKPAINT_DEVICE": "cpu",
                 "MASKPAINT_OUTPUT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(ModelSet, "load", staticmethod(lambda settings, manifest=None: model_set))
    import modal_app

    return modal_app


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_modal_batch_maps_the_class_and_resumes(modal_stage, photos, s3, tmp_path, monkeypatch,
                                                capsys):
    modal_app = modal_stage
    image, mask = tiny_photo(photos["bus"])
    lines = [json.dumps({"id": f"m{i}", "input": tiny_job(image, mask, i)}) for i in range(4)]
    lines.append(json.dumps({"id": "no-prompt", "input": {"image": image, "mask": mask}}))
    lines.insert(2, "[1, 2]")  # line 3: not an object
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")

    caps: list[dict] = []
    mapper = _LocalMap(modal_app.MaskPaint().run, crash={"m3"})

    class Stand:  # MaskPaint as the entrypoint uses it: with_options(...)().run
        @staticmethod
        def with_options(**kw):
            caps.append(kw)
            return lambda: type("Obj", (), {"run": mapper})()

    monkeypatch.setattr(modal_app, "MaskPaint", Stand)
    entry = modal_app.batch.info.raw_f  # the function `modal run modal_app.py::batch` calls
    entry(jobs=str(jobs), max_containers=3, price_per_s=0.002)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert caps == [{"max_containers": 3}]
    assert (summary["jobs"], summary["done"], summary["failed"]) == (5, 3, 2)
    assert summary["errors"] == {"internal": 1, "invalid_input": 1}
    assert summary["skipped_inputs"] == [{"where": "jobs.jsonl:3", "message": "not a JSON object"}]
    recs = {r["id"]: r for r in _lines(tmp_path / "jobs.results.jsonl")}
    assert recs["m3"]["error"]["retryable"] is True  # a crash: a rerun tries again
    assert recs["no-prompt"]["error"]["retryable"] is False
    for i in range(3):
        out = recs[f"m{i}"]["output"]
        assert out["job_id"] == f"key-m{i}"
        s3.head_object(Bucket=BUCKET, Key=out["image"]["key"])

    # the rerun maps only the crashed job (settled ones are skipped)
    mapper.crash, mapper.calls = set(), []
    entry(jobs=str(jobs), max_containers=3)
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mapper.calls == ["m3"]
    assert (again["done"], again["failed"], again["errors"]) == (4, 1, {"invalid_input": 1})
