"""schema/*.json is the JSON Schema export of the job contract: committed, in sync, usable.

These tests never rewrite schema/: when the models change, run ``python -m handlers.schema`` (and
``npm run gen`` in clients/ts) and commit the result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from handlers import schema as S
from core.contract import JobResult
from core.errors import RETRYABLE, ErrorCode

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict:
    return json.loads((S.SCHEMA_DIR / name).read_text(encoding="utf-8"))


def _validator(name: str, ref: str | None = None) -> Draft202012Validator:
    doc = _load(name)
    if ref:  # validate against one of the document's $defs
        doc = {"$schema": doc["$schema"], "$defs": doc["$defs"], "$ref": f"#/$defs/{ref}"}
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc)


def test_committed_schema_matches_the_models():
    problems = S.check()
    assert not problems, (
        "schema/ drifted from core.contract; run `python -m handlers.schema` (then `npm run gen` in "
        "clients/ts) and commit:\n" + "\n".join(problems)
    )


def test_check_cli_fails_on_drift_and_writes_nothing(tmp_path):
    copy = tmp_path / "schema"
    shutil.copytree(S.SCHEMA_DIR, copy)
    assert S.main(["--check", "--dir", str(copy)]) == 0

    target = copy / "job_request.schema.json"
    drifted = target.read_text().replace('"minLength": 1', '"minLength": 2', 1)
    target.write_text(drifted)
    assert S.main(["--check", "--dir", str(copy)]) == 1
    assert target.read_text() == drifted  # --check never writes

    (copy / "stale.schema.json").write_text("{}\n")
    target.write_text(S.render()["job_request.schema.json"])
    assert S.main(["--check", "--dir", str(copy)]) == 1  # an extra file is drift too

    (copy / "stale.schema.json").unlink()
    (copy / "job_error.schema.json").unlink()
    assert S.main(["--check", "--dir", str(copy)]) == 1
    S.main(["--dir", str(copy)])  # the writer restores it
    assert S.check(copy) == []


def test_module_entry_point_check_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "handlers.schema", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_is_deterministic_draft_2020_12_with_trailing_newline():
    first, second = S.render(), S.render()
    assert first == second
    assert set(first) == {*S.FILES, S.BUNDLE}
    for name, text in first.items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        doc = json.loads(text)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(doc)
        assert list(doc) == sorted(doc), f"{name}: top-level keys not sorted"


def test_error_codes_and_retryable_table_are_exported():
    code = _load("job_error.schema.json")["$defs"]["ErrorCode"]
    assert code["enum"] == [c.value for c in ErrorCode]
    assert code["x-retryable"] == [c.value for c in ErrorCode if c in RETRYABLE]
    bundle = _load(S.BUNDLE)["$defs"]["ErrorCode"]
    assert bundle == code


def test_request_schema_accepts_the_readme_job_and_rejects_bad_ones():
    v = _validator("job_request.schema.json")
    ok = {
        "image": "data:image/jpeg;base64,AAAA", "mask": None, "task": "inpaint",
        "targets": ["upper"], "protect_face": True, "prompt": "a red leather jacket",
        "num_inference_steps": 30, "guidance_scale": 7.5, "strength": 1.0, "seed": 42,
        "output": {"format": "png", "url_expires_s": 3600},
    }
    assert not list(v.iter_errors(ok))
    for bad in ({**ok, "unexpected": 1}, {k: x for k, x in ok.items() if k != "image"},
                {**ok, "targets": []}, {**ok, "targets": ["hat"]}, {**ok, "seed": -1},
                {**ok, "output": {"format": "gif"}}, {**ok, "output": {"url_expires_s": 604801}}):
        assert list(v.iter_errors(bad)), bad


def _result() -> dict:
    art = {"key": "maskpaint/j/mask.png", "url": "https://b/k?sig", "content_type": "image/png",
           "width": 4, "height": 3, "bytes": 10, "sha256": "0" * 64}
    r = JobResult(job_id="j", task="inpaint", seed=1, image=art, mask=art, overlay=art,
                  mask_info={"source": "pose", "reason": "no detections", "coverage": 0.5},
                  size=[4, 3], timings_ms={"total": 1.0})
    return r.model_dump(mode="json", exclude_none=True)  # exactly what handlers return


def test_result_schema_accepts_what_handlers_return():
    v = _validator("job_result.schema.json")
    assert not list(v.iter_errors(_result()))
    assert list(v.iter_errors({**_result(), "mask": None}))


def test_runpod_envelope_matches_the_handler_and_the_local_server():
    from handlers.runpod import make_handler

    reply = make_handler(None)({"id": "j1", "input": {"image": "x"}})  # fails validation early
    assert reply["error"].startswith("invalid_input: ")
    output = {k: v for k, v in reply.items() if k != "error"}  # what RunPod keeps in `output`
    S.RunpodErrorOutput.model_validate(output)

    v = _validator("runpod.schema.json")
    for env in (
        {"id": "j1", "status": "FAILED", "error": reply["error"], "output": output},  # hosted
        {"id": "test-1", "status": "FAILED", "error": reply["error"]},  # local --rp_serve_api
        {"id": "test-1", "status": "IN_PROGRESS"},  # local /run
        {"id": "j1", "status": "IN_QUEUE", "delayTime": 12},
        {"id": "j1", "status": "IN_PROGRESS",
         "output": {"stage": "inpaint", "step": 3, "steps": 30}},
        {"id": "j1", "status": "COMPLETED", "output": _result(), "executionTime": 900},
    ):
        assert not list(v.iter_errors(env)), env
    assert list(v.iter_errors({"id": "j1", "status": "DONE"}))


def test_modal_envelopes():
    v = _validator("modal.schema.json")
    body = {"code": "gpu_oom", "message": "CUDA out of memory", "field": None, "retryable": True}
    for ok in ({"id": "j", "status": "queued"}, {"id": "j", "status": "queued", "position": 3},
               {"id": "j", "status": "running", "progress": {"stage": "mask"}},
               {"id": "j", "status": "done", "output": _result()},
               {"id": "j", "status": "failed", "error": body},
               {"id": "j", "status": "cancelled"}):
        assert not list(v.iter_errors(ok)), ok
    for bad in ({"id": "j", "status": "pending"}, {"status": "queued"}, {"id": "j", "status": "done"},
                {"id": "j", "status": "failed", "error": {"code": "nope"}}):
        assert list(v.iter_errors(bad)), bad
    assert not list(_validator("modal.schema.json", "ModalSubmitResponse").iter_errors(
        {"id": "fc-1", "status": "queued"}))
    assert not list(_validator("modal.schema.json", "ModalErrorResponse").iter_errors(
        {"error": {**body, "code": "invalid_input", "field": "prompt", "retryable": False}}))


@pytest.mark.parametrize("name", sorted({*S.FILES, S.BUNDLE}))
def test_every_ref_resolves(name):
    doc = _load(name)
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for x in node.values():
                walk(x)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(doc)
    for ref in refs:
        assert ref.startswith("#/$defs/") and ref.split("/")[-1] in doc.get("$defs", {}), ref
