"""Output storage: S3 / R2 / MinIO through boto3, or a local directory when no bucket is set.

At-least-once delivery, by design
---------------------------------
RunPod and Modal may deliver one job id more than once: after a crash mid-job, after a lost
reply, or twice at the same time. A redelivery may run on another worker whose numerics differ
(another GPU type of a fallback list, another thread count), so its output bytes may differ from
the first run's. Storage is laid out so that this is always safe:

- **Artefacts are content-addressed and written once.** ``<prefix>/<job key>/<stem>-<h>.<ext>``
  (``result-3f9c…​.png``, ``mask-….png``, ``overlay-….jpg``), ``h`` = the first
  :data:`ARTEFACT_HASH_CHARS` hex digits of the sha256 of the bytes. Writes are conditional
  (S3 ``IfNoneMatch="*"``; locally an atomic ``link`` that fails when the name exists): the same
  bytes find themselves (identity = sha256 in the object's metadata), different bytes land under
  a different name, so no attempt ever overwrites another attempt's artefact.
- **A small job record is written last, once.** ``<prefix>/<job key>/job.json``
  (:data:`RECORD_NAME`), with the same conditional write, holds the sha256 of the canonical
  request (:func:`request_sha256`) and the finished :class:`~core.contract.JobResult`, which
  names the winning artefacts. The first attempt to finish wins; every other attempt (a
  concurrent duplicate, or a late one) reads the record and returns *that* result, so every
  caller gets the one recorded result. Artefacts of losing attempts stay as unreferenced
  orphans (a bucket lifecycle rule can expire them).
- **A redelivered job whose record exists returns the stored result at once** (fresh presigned
  URLs, inline base64 re-read if asked), with no fetch, decode, masking or inpainting.
- **A refused job records its refusal instead** (:func:`write_refusal`); a redelivery fails
  the same way, without any work.
- **The same job id with a different request** (another request hash in the record) is
  ``storage_conflict``, never a silent reuse of the other request's outputs; so is a record that
  is not ours (unparseable).

The job key is :func:`core.contract.safe_job_id` of the platform id (injective). Presigned URLs
are SigV4 and at most 7 days long; local storage returns ``file://`` URLs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from core.contract import MAX_PRESIGN_SECONDS, JobRequest
from core.errors import ErrorCode, JobError
from core.localfs import check_output_dir, local_error, write_all  # noqa: F401 (re-export)
from core.settings import Settings

#: Name of the job record under the job's folder.
RECORD_NAME = "job.json"
RECORD_VERSION = 1
#: Hex digits of the artefact's sha256 in its name: 64 bits, so two attempts' different bytes
#: never share a name in practice (and if they ever did, the conditional write refuses).
ARTEFACT_HASH_CHARS = 16
#: Output options that change how a result is delivered, not what is computed: a redelivery
#: that differs only in these gets the recorded result (with its own URL lifetime / inlining).
DELIVERY_ONLY = {"url_expires_s", "return_base64"}


@dataclass(frozen=True)
class Stored:
    key: str
    url: str
    sha256: str
    bytes: int


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        """Write ``data`` at ``key`` unless an identical object is there; return where it is.

        Raises:
            JobError(storage_conflict): a different object already exists at ``key``.
            JobError(storage_error): the write failed (retryable).
        """

    def create(self, key: str, data: bytes, content_type: str) -> bytes | None:
        """Write ``data`` at ``key`` only if nothing is there (atomically).

        Returns:
            None when this call wrote it; otherwise the bytes already at ``key`` (untouched).

        Raises:
            JobError(storage_error): the write or the read-back failed.
        """

    def get(self, key: str) -> bytes | None:
        """The bytes at ``key`` (a key this storage returned), or None when absent.

        Raises:
            JobError(storage_error): the read failed.
        """

    def url(self, key: str, url_expires_s: int) -> str:
        """A GET URL for ``key`` (presigned, at most 7 days; or ``file://``)."""

    def key_for(self, job_id: str, name: str) -> str: ...


def make_s3_client(settings: Settings):
    """A boto3 S3 client configured for S3 and its look-alikes.

    - ``signature_version="s3v4"``: presigned URLs must be SigV4 (R2 and new regions accept only
      that).
    - ``request_checksum_calculation="when_required"``: boto3 >= 1.36 otherwise sends CRC
      trailers that R2, MinIO and B2 reject.
    - ``standard`` retries, ``total_max_attempts`` = ``s3_max_attempts``, the first try
      included (botocore's ``max_attempts`` counts retries: one attempt more than set); bounded
      connect and read timeouts (the job's deadline bounds a call further: core.bounded).
    """
    import boto3
    from botocore.config import Config

    cfg = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url,
                        region_name=settings.s3_region, config=cfg)


def _client_error(exc) -> tuple[str, int | None]:
    return (exc.response.get("Error", {}).get("Code", ""),
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class S3Storage:
    """Conditional ``put_object`` (``IfNoneMatch="*"``) plus presigned GET URLs."""

    #: S3 answers 409 ``ConditionalRequestConflict`` while another conditional write of the same
    #: key is in flight; read back (or write again) this many times, this far apart (s).
    CONFLICT_TRIES = 5
    CONFLICT_WAIT_S = 0.2

    def __init__(self, client, bucket: str, prefix: str = "maskpaint") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key_for(self, job_id: str, name: str) -> str:
        return f"{self.prefix}/{job_id}/{name}" if self.prefix else f"{job_id}/{name}"

    def _presign(self, key: str, expires_s: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=max(1, min(int(expires_s), MAX_PRESIGN_SECONDS)),
        )

    def url(self, key: str, url_expires_s: int) -> str:
        try:
            return self._presign(key, url_expires_s)
        except Exception as exc:
            raise JobError(ErrorCode.storage_error,
                           f"presigning failed ({type(exc).__name__})") from None

    def _put_if_absent(self, key: str, data: bytes, content_type: str, digest: str) -> bool:
        """True when written; False when the key already exists (412, or 409 in flight)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                IfNoneMatch="*", Metadata={"sha256": digest},
            )
            return True
        except ClientError as exc:
            code, status = _client_error(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            # 403/404 (credentials, bucket) will not heal by retrying the same job
            raise JobError(ErrorCode.storage_error, f"writing output failed ({code or status})",
                           retryable=status not in (400, 403, 404)) from None
        except BotoCoreError as exc:
            raise JobError(ErrorCode.storage_error,
                           f"writing output failed ({type(exc).__name__})") from None

    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        digest = hashlib.sha256(data).hexdigest()
        if not self._put_if_absent(key, data, content_type, digest):
            self._check_existing(key, digest)
        return Stored(key=key, url=self.url(key, url_expires_s), sha256=digest, bytes=len(data))

    def create(self, key: str, data: bytes, content_type: str) -> bytes | None:
        digest = hashlib.sha256(data).hexdigest()
        for _ in range(self.CONFLICT_TRIES):
            if self._put_if_absent(key, data, content_type, digest):
                return None
            existing = self.get(key)
            if existing is not None:
                return existing
            time.sleep(self.CONFLICT_WAIT_S)  # 409: the other write has not landed yet
        raise JobError(ErrorCode.storage_error, "writing the job record kept conflicting")

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code, status = _client_error(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise JobError(ErrorCode.storage_error, f"reading stored output failed "
                           f"({code or status})", retryable=status not in (400, 403)) from None
        except BotoCoreError as exc:
            raise JobError(ErrorCode.storage_error,
                           f"reading stored output failed ({type(exc).__name__})") from None

    def _check_existing(self, key: str, digest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise JobError(ErrorCode.storage_error,
                           f"checking existing output failed ({type(exc).__name__})") from None
        if head.get("Metadata", {}).get("sha256") != digest:
            raise JobError(ErrorCode.storage_conflict,
                           "a different object already exists at this job's output key; "
                           "use a new job id", retryable=False)


class LocalStorage:
    """Files under a directory; the result carries ``file://`` URLs. Never overwrites.

    Write-once is an atomic ``os.link`` of a fully written temporary file (it fails when the
    name exists, like ``O_EXCL``, and a reader never sees a half-written file).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def key_for(self, job_id: str, name: str) -> str:
        return f"{job_id}/{name}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()  # an absolute key (a stored path) stays itself
        if path != self.root and self.root not in path.parents:
            raise JobError(ErrorCode.storage_conflict, "a stored key points outside the output "
                           "directory", retryable=False)
        return path

    def _link_new(self, path: Path, data: bytes) -> bool:
        """Write ``data`` to ``path`` unless it exists; True when written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic, fails if the name exists: no overwrite
                return True
            except FileExistsError:
                return False
        finally:
            os.unlink(tmp)

    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        try:
            if not self._link_new(path, data):
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    raise JobError(ErrorCode.storage_conflict,
                                   "a different file already exists at this job's output path; "
                                   "use a new job id", retryable=False)
        except OSError as exc:
            raise local_error("writing output", exc) from None
        return Stored(key=str(path), url=path.as_uri(), sha256=digest, bytes=len(data))

    def create(self, key: str, data: bytes, content_type: str) -> bytes | None:
        path = self._path(key)
        try:
            return None if self._link_new(path, data) else path.read_bytes()
        except OSError as exc:
            raise local_error("writing the job record", exc) from None

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise local_error("reading stored output", exc) from None

    def url(self, key: str, url_expires_s: int) -> str:
        return self._path(key).as_uri()


def make_storage(settings: Settings, s3_client=None) -> Storage:
    """S3 when ``settings.s3_bucket`` is set, else the local ``settings.output_dir``."""
    if settings.s3_bucket:
        return S3Storage(s3_client or make_s3_client(settings), settings.s3_bucket,
                         settings.s3_prefix)
    return LocalStorage(settings.output_dir)


# ------------------------------------------------------------------------------ job records
def request_sha256(request: JobRequest) -> str:
    """sha256 (hex) of the canonical request: its validated fields with defaults filled in, as
    sorted compact JSON, without the delivery-only output options (:data:`DELIVERY_ONLY`)."""
    body = request.model_dump(mode="json", exclude={"output": DELIVERY_ONLY})
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def artefact_name(filename: str, data: bytes) -> str:
    """Content-addressed file name: ``result.png`` -> ``result-<16 hex of sha256>.png``."""
    p = PurePosixPath(filename)
    return f"{p.stem}-{hashlib.sha256(data).hexdigest()[:ARTEFACT_HASH_CHARS]}{p.suffix}"


def _conflict(message: str) -> JobError:
    return JobError(ErrorCode.storage_conflict, message, retryable=False)


def _parse_record(raw: bytes, request_sha: str) -> dict:
    """The recorded result dict of a record that belongs to this request.

    Raises:
        JobError(storage_conflict): unreadable, or recorded for a different request.
        JobError(<recorded code>): the record holds a refusal (:func:`write_refusal`).
    """
    try:
        record = json.loads(raw)
        ok = (isinstance(record, dict) and record.get("version") == RECORD_VERSION
              and (isinstance(record.get("result"), dict)
                   or isinstance(record.get("refusal"), dict)))
    except ValueError:
        ok = False
    if not ok:
        raise _conflict("this job id's record is not a maskpaint job record; use a new job id")
    if record.get("request_sha256") != request_sha:
        raise _conflict("this job id was already used for a different request; "
                        "use a new job id")
    if isinstance(record.get("refusal"), dict):
        ref = record["refusal"]
        code = ref.get("code") if ref.get("code") in ErrorCode.__members__ else "content_blocked"
        raise JobError(code, str(ref.get("message", "")), field=ref.get("field"),
                       retryable=bool(ref.get("retryable", False)))
    return record["result"]


def read_record(storage: Storage, job_id: str, request_sha: str) -> dict | None:
    """The recorded result (JobResult as JSON) of ``job_id``, or None when it has none yet.

    Raises:
        JobError(content_blocked, ...): the record holds a refusal; raised as recorded.
        JobError(storage_conflict): the record is for a different request, or unreadable.
        JobError(storage_error): reading failed.
    """
    raw = storage.get(storage.key_for(job_id, RECORD_NAME))
    return None if raw is None else _parse_record(raw, request_sha)


def write_record(storage: Storage, job_id: str, request_sha: str, result: dict) -> dict:
    """Record ``result`` for ``job_id`` unless a record exists; return the one recorded result.

    Args:
        result: the JobResult as JSON (inline base64 already removed).

    Returns:
        ``result`` when this call wrote the record, else the result recorded first.

    Raises:
        JobError(storage_conflict): the existing record is for a different request/unreadable.
        JobError(storage_error): the write failed.
    """
    return _create_record(storage, job_id, request_sha, "result", result)


def write_refusal(storage: Storage, job_id: str, request_sha: str, err: JobError) -> dict | None:
    """Record that ``job_id`` was refused (``err``, e.g. ``content_blocked``) unless a record
    exists; later deliveries then raise the same error from :func:`read_record`.

    Returns None when the refusal is (now) recorded, else the result another attempt recorded
    first. Raises as :func:`write_record` (or the refusal another attempt recorded).
    """
    body = {"code": err.code.value, "message": err.message, "field": err.field,
            "retryable": err.retryable}
    out = _create_record(storage, job_id, request_sha, "refusal", body)
    return None if out is body else out


def _create_record(storage: Storage, job_id: str, request_sha: str, kind: str,
                   payload: dict) -> dict:
    record = {"version": RECORD_VERSION, "job_id": job_id, "request_sha256": request_sha,
              "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              kind: payload}
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    existing = storage.create(storage.key_for(job_id, RECORD_NAME), data, "application/json")
    return payload if existing is None else _parse_record(existing, request_sha)
