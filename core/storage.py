"""Output storage: S3 / R2 / MinIO through boto3, or a local directory when no bucket is set.

Keys are deterministic, ``<prefix>/<job_id>/<name>``, and writes are conditional: a re-run of the
same job (both RunPod and Modal deliver at least once) finds its own identical object and returns
it; it never overwrites a different one (``storage_conflict``). Identity is the sha256 of the
bytes, stored as object metadata.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.contract import MAX_PRESIGN_SECONDS
from core.errors import ErrorCode, JobError
from core.settings import Settings


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

    def key_for(self, job_id: str, name: str) -> str: ...


def make_s3_client(settings: Settings):
    """A boto3 S3 client configured for S3 and its look-alikes.

    - ``signature_version="s3v4"``: presigned URLs must be SigV4 (R2 and new regions accept only
      that).
    - ``request_checksum_calculation="when_required"``: boto3 >= 1.36 otherwise sends CRC
      trailers that R2, MinIO and B2 reject.
    - retries in botocore's ``standard`` mode with a set attempt count; bounded timeouts.
    """
    import boto3
    from botocore.config import Config

    cfg = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url,
                        region_name=settings.s3_region, config=cfg)


class S3Storage:
    """Conditional ``put_object`` (``IfNoneMatch="*"``) plus presigned GET URLs."""

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

    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = hashlib.sha256(data).hexdigest()
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                IfNoneMatch="*", Metadata={"sha256": digest},
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                self._check_existing(key, digest)
            else:
                # 403/404 (credentials, bucket) will not heal by retrying the same job
                raise JobError(ErrorCode.storage_error, f"writing output failed ({code or status})",
                               retryable=status not in (400, 403, 404)) from None
        except BotoCoreError as exc:
            raise JobError(ErrorCode.storage_error,
                           f"writing output failed ({type(exc).__name__})") from None
        try:
            url = self._presign(key, url_expires_s)
        except Exception as exc:
            raise JobError(ErrorCode.storage_error,
                           f"presigning failed ({type(exc).__name__})") from None
        return Stored(key=key, url=url, sha256=digest, bytes=len(data))

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
    """Files under a directory; the result carries ``file://`` URLs. Never overwrites."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def key_for(self, job_id: str, name: str) -> str:
        return f"{job_id}/{name}"

    def put(self, key: str, data: bytes, content_type: str, url_expires_s: int) -> Stored:
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # atomic, fails if the name exists: no overwrite
            except FileExistsError:
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    raise JobError(ErrorCode.storage_conflict,
                                   "a different file already exists at this job's output path; "
                                   "use a new job id", retryable=False) from None
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise JobError(ErrorCode.storage_error,
                           f"writing output failed ({type(exc).__name__})") from None
        return Stored(key=str(path), url=path.as_uri(), sha256=digest, bytes=len(data))


def make_storage(settings: Settings, s3_client=None) -> Storage:
    """S3 when ``settings.s3_bucket`` is set, else the local ``settings.output_dir``."""
    if settings.s3_bucket:
        return S3Storage(s3_client or make_s3_client(settings), settings.s3_bucket,
                         settings.s3_prefix)
    return LocalStorage(settings.output_dir)
