"""Batch inputs (a JSONL file, or a folder of photos plus a template) and the results file.

A job's id is its ``id`` field when the line gives one, else ``j`` + 20 hex digits of the
sha256 of its input as canonical JSON (sorted keys, compact): the same line always gets the same
id, so a rerun recognises what it already did and the worker's record recognises a resubmission.

The results file is JSONL, one line per finished job (``id``, ``status``, ``output`` or
``error``, ``template``, ``source``, ``attempts``, ``latency_ms``); a job finished twice (a
retried failure) has two lines and the last one counts. Every line carries the fingerprint of the
template it came from (``null`` for a JSONL input), and a results file holding another
fingerprint is refused rather than mixed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A job id: what the worker accepts as ``idempotency_key`` (the contract's pattern).
JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
#: The placeholder a template's strings carry for the photo (a data URL or an ``s3://`` URL).
PHOTO_PLACEHOLDER = "{photo}"
#: Photo files a folder input picks up (by suffix, case-insensitive); others are ignored.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif"})
#: Final statuses of a results line. ``failed`` with ``retryable: true`` is run again on a rerun.
FINAL_STATUSES = ("done", "failed")


class BatchError(RuntimeError):
    """The batch cannot start or go on (unreachable endpoint, missing key, mixed results file);
    the message says what to do. Nothing was submitted when it is raised before the loop."""


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch: its stable ``id``, its ``input`` (the job contract's fields) and where
    it came from (``jobs.jsonl:12`` or the photo's file name)."""

    id: str
    input: dict
    source: str


@dataclass(frozen=True)
class InputProblem:
    """A line or file that is not a job (reported and skipped; the run goes on)."""

    where: str
    message: str


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, compact, ASCII): the input of every fingerprint."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def job_id_for(inp: dict) -> str:
    """``j`` + the first 20 hex digits (80 bits) of sha256(canonical JSON of ``inp``)."""
    return "j" + hashlib.sha256(canonical(inp)).hexdigest()[:20]


def template_fingerprint(template: dict | None) -> str | None:
    """16 hex digits of sha256(canonical template); None for a JSONL input (no template)."""
    return None if template is None else hashlib.sha256(canonical(template)).hexdigest()[:16]


def read_jsonl(path: Path) -> tuple[list[BatchJob], list[InputProblem]]:
    """Jobs of a JSONL file: each non-blank line a job input, or ``{"id"?, "input": {...}}``.

    Returns:
        (jobs in file order, problems): a line that is not JSON, not an object, has fields
        beside ``id``/``input``, an id outside :data:`JOB_ID`, or an id already used is a
        problem (``where`` = ``<file>:<line number>``), never a job.

    Raises:
        BatchError: the file cannot be read.
    """
    jobs: list[BatchJob] = []
    problems: list[InputProblem] = []
    first_line: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        where = f"{path.name}:{number}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            problems.append(InputProblem(where, f"not valid JSON ({type(exc).__name__})"))
            continue
        if not isinstance(obj, dict):
            problems.append(InputProblem(where, "not a JSON object"))
            continue
        job_id = None
        if "input" in obj:
            extra = sorted(set(obj) - {"id", "input"})
            if extra:
                problems.append(InputProblem(where, f"unknown field beside 'input': {extra[0]!r:.40}"))
                continue
            job_id, obj = obj.get("id"), obj["input"]
            if not isinstance(obj, dict):
                problems.append(InputProblem(where, "'input' is not a JSON object"))
                continue
        if job_id is None:
            job_id = job_id_for(obj)
        elif not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            problems.append(InputProblem(where, "'id' must be 1-64 of A-Za-z0-9._- "
                                                "(not starting with '.')"))
            continue
        if job_id in first_line:
            problems.append(InputProblem(where, f"duplicate job (same id as line "
                                                f"{first_line[job_id]})"))
            continue
        first_line[job_id] = number
        jobs.append(BatchJob(job_id, obj, where))
    return jobs, problems


def fill_template(template: Any, photo: str) -> Any:
    """``template`` with every :data:`PHOTO_PLACEHOLDER` in its strings replaced by ``photo``."""
    if isinstance(template, str):
        return template.replace(PHOTO_PLACEHOLDER, photo)
    if isinstance(template, dict):
        return {k: fill_template(v, photo) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, photo) for v in template]
    return template


def read_template(path: Path) -> dict:
    """A job template: a JSON object whose strings hold :data:`PHOTO_PLACEHOLDER` at least once.

    Raises:
        BatchError: unreadable, not an object, or no placeholder.
    """
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BatchError(f"cannot read the template {path}: {exc}") from None
    if not isinstance(template, dict) or PHOTO_PLACEHOLDER not in json.dumps(template):
        raise BatchError(f"the template {path} must be a JSON object with "
                         f"{PHOTO_PLACEHOLDER!r} in a value (e.g. \"image\": \"{{photo}}\")")
    return template


def data_url(path: Path) -> str:
    """The file's bytes as a ``data:<type>;base64,`` URL (the worker decides the real type)."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def photo_files(folder: Path) -> list[Path]:
    """The photo files directly in ``folder`` (:data:`PHOTO_SUFFIXES`), sorted by name.

    Raises:
        BatchError: not a folder, or no photo in it.
    """
    if not folder.is_dir():
        raise BatchError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise BatchError(f"no photo ({', '.join(sorted(PHOTO_SUFFIXES))}) in {folder}")
    return files


def read_folder(folder: Path, template: dict,
                photo_ref: Callable[[Path], str] = data_url) -> list[BatchJob]:
    """One job per photo in ``folder``: ``template`` filled with ``photo_ref(photo)`` (a data URL
    by default; an ``s3://`` URL after an upload). The id hashes the filled input, so it changes
    when the photo's bytes (data URL) or its uploaded key (content-addressed) change."""
    jobs = []
    for path in photo_files(folder):
        inp = fill_template(template, photo_ref(path))
        jobs.append(BatchJob(job_id_for(inp), inp, path.name))
    return jobs


class ResultsFile:
    """The results JSONL: read once at start (resume), then appended to, one line per job.

    Thread-safe; each line is flushed and fsynced before :meth:`append` returns, so a killed run
    loses at most the jobs it had not written yet (and those are resubmitted with their ids).

    Args:
        path: the results file (created with its folder when missing).
        template: the fingerprint (:func:`template_fingerprint`) of this run's template.
    """

    def __init__(self, path: Path, template: str | None) -> None:
        self.path = path
        self.template = template
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict]:
        """The last line of each job id already in the file.

        Raises:
            BatchError: a line was written for another template (or a JSONL input where this run
                has a template, or the reverse): use another results file.
        """
        last: dict[str, dict] = {}
        if not self.path.exists():
            return last
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write: that job runs again
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                continue
            if rec.get("template") != self.template:
                raise BatchError(
                    f"{self.path}:{number} was written for another job template "
                    f"({rec.get('template')!r}, this run: {self.template!r}); "
                    "write to a new results file (--results) instead of mixing them")
            last[rec["id"]] = rec
        return last

    def append(self, record: dict) -> None:
        """Write one line (with this run's template fingerprint) durably."""
        line = json.dumps({**record, "template": self.template}, separators=(",", ":"))
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())


def is_final(record: dict | None) -> bool:
    """Whether a results line settles its job (a rerun skips it): done, or failed for good."""
    if record is None or record.get("status") not in FINAL_STATUSES:
        return False
    if record["status"] == "failed":
        return not (record.get("error") or {}).get("retryable", False)
    return True


def pending_jobs(jobs: Iterable[BatchJob], recorded: dict[str, dict]) -> list[BatchJob]:
    """The jobs a run still has to do: not yet settled in the results file (:func:`is_final`)."""
    return [j for j in jobs if not is_final(recorded.get(j.id))]
