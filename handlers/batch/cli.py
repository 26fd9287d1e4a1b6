"""``python -m handlers.cli batch`` / ``maskpaint-batch``: a catalogue of jobs through one target.

Examples::

    # RunPod (RUNPOD_API_KEY in the environment); photos uploaded to the input bucket
    maskpaint-batch --photos shop/ --template outfit.json --target runpod --endpoint-id abc123 \\
        --upload-to s3://my-inputs/batch/ --concurrency 16 --price-per-s 0.00044

    # the web API, on Modal or `make serve` (MASKPAINT_API_TOKEN in the environment)
    maskpaint-batch --jobs jobs.jsonl --target web --url http://127.0.0.1:8000

Writes ``--results`` (default ``<input>.results.jsonl``) and prints the summary as JSON on
stdout (a readable version and the progress bar go to stderr). Exit status: 0 every job done,
1 some failed or not finished, 2 the batch could not start (nothing submitted), 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from handlers.batch.jobs import (BatchError, ResultsFile, data_url, pending_jobs, read_folder,
                                 read_jsonl, read_template, template_fingerprint)
from handlers.batch.loop import Batch, Counts
from handlers.batch.net import RetryPolicy
from handlers.batch.summary import describe, summarize

log = logging.getLogger("maskpaint.batch")


def build_parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``batch`` options (added to ``ap`` when given: ``handlers.cli`` nests it)."""
    ap = ap or argparse.ArgumentParser(prog="maskpaint-batch", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--jobs", type=Path, help="JSONL: one job input (or {id, input}) per line")
    src.add_argument("--photos", type=Path, help="a folder of photos (with --template)")
    ap.add_argument("--template", type=Path, help='job template JSON with "{photo}" in a value')
    ap.add_argument("--target", choices=["runpod", "web"], required=True,
                    help="runpod: a RunPod endpoint; web: the maskpaint web API (Modal or local)")
    ap.add_argument("--endpoint-id", help="hosted RunPod endpoint id")
    ap.add_argument("--url", help="base URL: a local RunPod server or the web API")
    ap.add_argument("--results", type=Path, help="results JSONL (default: <input>.results.jsonl)")
    ap.add_argument("--concurrency", type=int, default=8, help="jobs in flight at once")
    ap.add_argument("--max-attempts", type=int, default=3,
                    help="submits per job when its failure is retryable")
    ap.add_argument("--http-attempts", type=int, default=6,
                    help="tries per request on 429 / 5xx / connection errors")
    ap.add_argument("--poll-s", type=float, default=2.0, help="longest wait between polls, s")
    ap.add_argument("--price-per-s", type=float, default=0.0, help="cost of one GPU second")
    ap.add_argument("--upload-to", help="s3://bucket/prefix/: upload local photos there and send "
                    "s3:// URLs (the bucket must be in the workers' MASKPAINT_INPUT_BUCKETS)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _uploader(dest: str):
    """``photo -> s3://bucket/<prefix><sha256 of bytes><suffix>`` putting each photo once
    (content-addressed, so a rerun reuses the upload and the job keeps its id). The S3 client is
    the worker's own (``core.storage.make_s3_client``: endpoint, region and checksum settings
    from ``MASKPAINT_S3_*``; credentials from the AWS environment).

    Raises:
        BatchError: ``dest`` is not ``s3://bucket[/prefix]``.
    """
    if not dest.startswith("s3://") or len(dest) <= 5:
        raise BatchError("--upload-to must be s3://bucket[/prefix/]")
    bucket, _, prefix = dest[5:].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    from core.settings import Settings
    from core.storage import make_s3_client

    client = make_s3_client(Settings(s3_bucket=bucket))
    lock = threading.Lock()

    def upload(path: Path) -> str:
        data = path.read_bytes()
        key = f"{prefix}{hashlib.sha256(data).hexdigest()[:32]}{path.suffix.lower()}"
        with lock:
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except client.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise BatchError(f"uploading {path.name} to {dest} failed: {code}") from None
        return f"s3://{bucket}/{key}"

    return upload


def _target(a: argparse.Namespace):
    policy = RetryPolicy(attempts=max(1, a.http_attempts))
    if a.target == "runpod":
        from handlers.batch.runpod_target import API_KEY_ENV, RunpodTarget, endpoint_url

        return RunpodTarget(endpoint_url(a.endpoint_id, a.url), os.environ.get(API_KEY_ENV),
                            policy=policy, poll_s=a.poll_s, concurrency=a.concurrency)
    from handlers.batch.web_target import TOKEN_ENV, WebTarget

    if not a.url:
        raise BatchError("--target web needs --url (the web API's base URL)")
    return WebTarget(a.url, os.environ.get(TOKEN_ENV), policy=policy, poll_s=a.poll_s,
                     concurrency=a.concurrency)


def _progress(total: int, disabled: bool):
    """A tqdm bar (done + failed of ``total``, with in flight and ETA) and its updater."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="job", disable=True if disabled else None, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    lock = threading.Lock()

    def update(c: Counts) -> None:
        with lock:
            bar.n = c.done + c.failed
            bar.set_postfix(done=c.done, failed=c.failed, in_flight=c.in_flight, refresh=False)
            bar.refresh()

    return bar, update


def run(a: argparse.Namespace) -> int:
    """The batch command; see the module docstring for the exit status."""
    target = _target(a)  # a missing key fails here, before any request
    if a.concurrency < 1 or a.max_attempts < 1:
        raise BatchError("--concurrency and --max-attempts must be at least 1")
    if a.jobs is not None:
        if a.template is not None:
            raise BatchError("--template goes with --photos, not --jobs")
        jobs, problems = read_jsonl(a.jobs)
        fingerprint = None
        default_results = a.jobs.with_suffix(".results.jsonl")
    else:
        if a.template is None:
            raise BatchError("--photos needs --template")
        template = read_template(a.template)
        fingerprint = template_fingerprint(template)
        ref = _uploader(a.upload_to) if a.upload_to else data_url
        problems = []
        results_path = a.results or a.photos.with_name(a.photos.name + ".results.jsonl")
        ResultsFile(results_path, fingerprint).load()  # refuse a mixed file before uploading
        jobs = read_folder(a.photos, template, ref)
        default_results = results_path
    for p in problems:
        print(f"skipped {p.where}: {p.message}", file=sys.stderr)
    results = ResultsFile(a.results or default_results, fingerprint)
    todo = pending_jobs(jobs, results.load())
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already in {results.path}, "
          f"{len(todo)} to run on {target.name}", file=sys.stderr)
    interrupted = False
    batch = None
    if todo:
        target.check()
        bar, update = _progress(len(todo), a.no_progress)
        batch = Batch(target, results, concurrency=a.concurrency, max_attempts=a.max_attempts,
                      on_change=update)
        try:
            batch.run(todo)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: in-flight jobs cancelled where the provider can; rerun the "
                  "same command to finish the rest", file=sys.stderr)
        finally:
            bar.close()
    c = batch.counts if batch else Counts()
    summary = summarize(jobs, results.load(), problems, price_per_s=a.price_per_s,
                        this_run={"to_run": len(todo), "done": c.done, "failed": c.failed,
                                  "retries": c.retries, "cancelled": c.cancelled,
                                  "interrupted": interrupted})
    print(describe(summary), file=sys.stderr)
    print(json.dumps(summary))
    if interrupted:
        return 130
    return 0 if summary["done"] == summary["jobs"] else 1


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Entry point of ``maskpaint-batch`` (and of ``python -m handlers.cli batch``)."""
    a = args if args is not None else build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (a container or CI stopping us) ends the run like Ctrl-C: cancel, write, exit
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(a)
    except BatchError as exc:
        print(f"maskpaint batch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
