"""JSON Schema export of the job contract and the handlers' replies, for other languages.

``python -m handlers.schema`` writes ``schema/*.json`` from the pydantic models where they live:
the job contract in :mod:`core.contract`, the RunPod envelope in :mod:`handlers.runpod`, the
progress event in :mod:`handlers.common`, the web API bodies in :mod:`handlers.web`;
``python -m handlers.schema --check`` writes nothing and exits 1 when the committed files differ from
what the models produce (CI and ``tests/test_schema.py`` run that check). The TypeScript client
(``clients/ts``) generates its types from ``schema/maskpaint.schema.json`` (every model under one
``$defs``, so shared types are declared once).

Output is deterministic: JSON Schema draft 2020-12, two-space indent, object keys sorted except
``properties`` (kept in model field order, so generated types read like the models), a trailing
newline. Property-level ``title``s are left out (pydantic derives them from field names; they
would only turn into stray named types in generated code); models and enums keep theirs.

The envelopes describe what each provider returns around the contract:

- RunPod (``POST /run``, ``/runsync``, ``GET /status/{id}``): ``RunpodJobResponse``. On
  success ``output`` is a :class:`~core.contract.JobResult`; while running it is a
  ``JobProgress`` (``progress_update``); on failure ``error`` is ``"<code>: <message>"``
  and ``output`` is ``RunpodErrorOutput`` (RunPod moves the handler's top-level ``error``
  string out of ``output``; its local ``--rp_serve_api`` server drops ``output`` on failure).
- The web API (``POST /jobs`` -> 202 ``ModalSubmitResponse``; ``GET /jobs/{id}`` ->
  ``ModalJobStatus``; 4xx/5xx -> ``ModalErrorResponse``).

Torch-free (pydantic only), like every handler.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from core.contract import JobErrorBody, JobRequest, JobResult
from core.errors import RETRYABLE, ErrorCode
from handlers.common import JobProgress
from handlers.runpod import RunpodErrorOutput, RunpodJobResponse
from handlers.webmodels import (ModalErrorResponse, ModalJobCancelled, ModalJobDone,
                                ModalJobFailed, ModalJobQueued, ModalJobRunning, ModalJobStatus,
                                ModalSubmitResponse, ModalWebErrorBody)

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# ------------------------------------------------------------------------------- export
#: file name -> models in it (the first is the document's root; the rest go under ``$defs``).
FILES: dict[str, list[type[BaseModel]]] = {
    "job_request.schema.json": [JobRequest],
    "job_result.schema.json": [JobResult],
    "job_error.schema.json": [JobErrorBody],
    "runpod.schema.json": [RunpodJobResponse, RunpodErrorOutput, JobProgress],
    "modal.schema.json": [ModalJobStatus, ModalSubmitResponse, ModalErrorResponse],
}
BUNDLE = "maskpaint.schema.json"
BUNDLE_MODELS: list[type[BaseModel]] = [
    JobRequest, JobResult, JobErrorBody, JobProgress, RunpodErrorOutput, RunpodJobResponse,
    ModalSubmitResponse, ModalJobQueued, ModalJobRunning, ModalJobDone, ModalJobFailed,
    ModalJobCancelled, ModalJobStatus,
    ModalWebErrorBody, ModalErrorResponse,
]


class _Gen(GenerateJsonSchema):
    def field_title_should_be_set(self, schema) -> bool:  # no per-property titles
        return False


def _annotate(node: Any) -> Any:
    """Add ``x-retryable`` (the codes a retry may fix) to the ErrorCode enum, recursively."""
    if isinstance(node, dict):
        if node.get("title") == "ErrorCode" and "enum" in node:
            node["x-retryable"] = [c.value for c in ErrorCode if c in RETRYABLE]
        for v in node.values():
            _annotate(v)
    elif isinstance(node, list):
        for v in node:
            _annotate(v)
    return node


def _ordered(node: Any, *, keep: bool = False) -> Any:
    """Sort keys everywhere except directly inside ``properties`` (field order is meaningful)."""
    if isinstance(node, dict):
        keys = list(node) if keep else sorted(node)
        return {k: _ordered(node[k], keep=(k == "properties" and not keep)) for k in keys}
    if isinstance(node, list):
        return [_ordered(v) for v in node]
    return node


def _document(models: list[type[BaseModel]]) -> dict:
    root, *extra = models
    doc = root.model_json_schema(mode="validation", schema_generator=_Gen)
    defs = doc.pop("$defs", {})
    for model in extra:
        sub = model.model_json_schema(mode="validation", schema_generator=_Gen)
        defs.update(sub.pop("$defs", {}))
        defs[sub.get("title", model.__name__)] = sub
    if defs:
        doc["$defs"] = defs
    doc["$schema"] = DIALECT
    return doc


def _bundle() -> dict:
    _, top = models_json_schema(
        [(m, "validation") for m in BUNDLE_MODELS], schema_generator=_Gen,
        title="MaskpaintContract",
        description="Every maskpaint contract model under one `$defs` (for code generators).",
    )
    defs = top.get("$defs", {})
    return {
        "$schema": DIALECT,
        "title": "MaskpaintContract",
        "description": top.get("description"),
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: {"$ref": f"#/$defs/{name}"}
            for name in [m.model_json_schema(schema_generator=_Gen).get("title", m.__name__)
                         for m in BUNDLE_MODELS]
        },
        "$defs": defs,
    }


def _dump(doc: dict) -> str:
    return json.dumps(_ordered(_annotate(doc)), indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """File name -> exact file text, for every file under ``schema/``."""
    out = {name: _dump(_document(models)) for name, models in FILES.items()}
    out[BUNDLE] = _dump(_bundle())
    return out


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Problems found comparing ``directory`` with :func:`render` (empty = up to date)."""
    problems: list[str] = []
    expected = render()
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing")
            continue
        have = path.read_text(encoding="utf-8")
        if have != text:
            diff = difflib.unified_diff(have.splitlines(), text.splitlines(),
                                        f"{name} (committed)", f"{name} (models)", lineterm="", n=1)
            problems.append(f"{name}: differs\n" + "\n".join(list(diff)[:40]))
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if path.name not in expected:
                problems.append(f"{path.name}: not produced by handlers.schema (stale?)")
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file whose text changed; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m handlers.schema", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if schema/ differs from the models")
    ap.add_argument("--dir", type=Path, default=SCHEMA_DIR,
                    help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        if problems:
            print("schema/ is out of date with the models; run `python -m handlers.schema`:",
                  file=sys.stderr)
            for p in problems:
                print("  " + p.replace("\n", "\n    "), file=sys.stderr)
            return 1
        print(f"schema/ is up to date ({len(render())} files)")
        return 0
    written = write(args.dir)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("schema/ already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
