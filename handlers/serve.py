"""Serve the web API locally, with the mask editor's reference page: ``make serve``.

    MASKPAINT_WEIGHTS_DIR=.weights python -m handlers.serve [--host 127.0.0.1] [--port 8080]

The same app as on Modal (:func:`handlers.web.create_web_app`: ``POST /jobs``,
``GET`` / ``DELETE /jobs/{id}``, ``GET /health``) with a local dispatcher: one worker, built once
at start with the local weights (``Worker.cold_start``, Settings as usual: outputs go to
``MASKPAINT_OUTPUT_DIR`` or to S3 when ``MASKPAINT_S3_BUCKET`` is set), jobs run one at a time
in a thread (:class:`handlers.localjobs.ThreadDispatcher`) over a durable job table
(``<output dir>/.maskpaint/jobs.sqlite3``): after a restart, finished jobs still answer and
queued or running ones run again. Port 8080 by default: RunPod's local test server takes 8000.
Beside the API it serves:

- ``/mask-editor/page/`` (the reference page), ``/mask-editor/src/`` (the editor) and
  ``/ts/dist/`` (the built ``@maskpaint/client``, where the page's import map points);
- ``/outputs/`` (the local output directory; job records need the token). Local storage returns
  ``file://`` URLs, which a browser page cannot load; this server rewrites them into
  ``http://<host>:<port>/outputs/...`` and each ``key`` into the path below the output
  directory. S3 presigned URLs are passed through (and re-signed at each poll).

Connections must send their request headers within ``--header-timeout-s`` and bodies must keep
arriving (``--body-timeout-s``) (:mod:`handlers.serve_http`). The token is
``MASKPAINT_API_TOKEN``, or a fresh random one; the URL printed at start carries it
(``?token=...``: the page reads it). Binds to the loopback by default: a local tool, not a
production server.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from urllib.parse import unquote

from core.errors import StartupError
from core.settings import Settings
from core.storage import RECORD_NAME
from handlers.dispatch import map_artefacts
from handlers.jobtable import JobTable
from handlers.localjobs import ThreadDispatcher
from handlers.modal import run_job
from handlers.web import (bearer_ok, create_web_app, error_response, resign_with,
                          weights_readiness)
from handlers.webbody import BODY_IDLE_TIMEOUT_S
from handlers.webhook import LOOPBACK, WebhookPolicy
from handlers.webhook_sender import WebhookSender
from handlers.serve_http import HEADER_TIMEOUT_S, serve_http

if TYPE_CHECKING:
    from fastapi import FastAPI

    from core.pipeline import Worker

log = logging.getLogger("maskpaint.serve")

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / "clients"
#: URL path -> directory served as static files.
STATIC = {
    "/mask-editor/page": CLIENTS / "mask-editor" / "page",
    "/mask-editor/src": CLIENTS / "mask-editor" / "src",
    "/ts/dist": CLIENTS / "ts" / "dist",
}
PAGE_PATH = "/mask-editor/page/"
#: ``make serve``'s port: not 8000, which RunPod's local test server takes.
DEFAULT_PORT = 8080


def http_artefacts(reply: dict, output_dir: Path, public_url: str) -> dict:
    """``reply`` with each artefact (``image``, ``mask``, ``overlay``, ``images[]``) whose
    ``file://`` URL is under ``output_dir`` given ``<public_url>/outputs/<path below it>`` as URL
    and that relative path as ``key`` (no absolute server path leaves); anything else
    unchanged (S3 artefacts keep their presigned URLs and keys)."""
    prefix = Path(output_dir).resolve().as_uri().rstrip("/") + "/"
    base = f"{public_url.rstrip('/')}/outputs/"

    def change(_name: str, art: dict) -> dict:
        url = str(art.get("url", ""))
        if not url.startswith(prefix):
            return art
        rel = url[len(prefix):]
        return {**art, "url": base + rel, "key": unquote(rel)}

    return map_artefacts(reply, change)


def local_runner(worker: "Worker", public_url: str
                 ) -> Callable[[dict, str, Callable[[dict], None]], dict]:
    """The :class:`ThreadDispatcher` runner: :func:`handlers.modal.run_job` (progress to the
    dispatcher, which also delivers any webhook), artefact URLs made http."""
    output_dir = worker.settings.output_dir

    def run(job: dict, job_id: str, progress: Callable[[dict], None]) -> dict:
        reply = run_job(worker, {"input": job.get("input")}, job_id, on_refresh=lambda: None,
                        progress=progress)
        return reply if "error" in reply else http_artefacts(reply, output_dir, public_url)

    return run


def local_resign(worker: "Worker", public_url: str) -> Callable[[dict, int], dict]:
    """Fresh URLs for a finished job at each poll: from each artefact's ``key`` through the
    worker's storage (a new presigned URL on S3), then made http like :func:`local_runner`."""
    resign = resign_with(worker.storage)
    output_dir = worker.settings.output_dir
    return lambda output, expires_s: http_artefacts(resign(output, expires_s), output_dir,
                                                    public_url)


class OutputFiles:
    """``/outputs``: the local output directory, read-only (Starlette's ``StaticFiles``), except
    that a job record (``<job id>/job.json``) needs the bearer token and hidden files (the job
    table under ``.maskpaint/``) are never served. Artefacts stay open to a page's
    ``<img src>``: their names carry the job id and a content hash."""

    def __init__(self, directory: Path, token: str) -> None:
        from fastapi.staticfiles import StaticFiles

        self.files = StaticFiles(directory=directory)
        self.expected = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        from fastapi.responses import JSONResponse

        parts = [p for p in str(scope.get("path", "")).split("/") if p]
        if any(p.startswith(".") for p in parts):
            return await JSONResponse(error_response("not_found", "Not Found"),
                                      status_code=404)(scope, receive, send)
        if parts and parts[-1] == RECORD_NAME:
            headers = dict(scope.get("headers") or ())
            if not bearer_ok(headers.get(b"authorization", b"").decode("latin-1"),
                             self.expected):
                return await JSONResponse(
                    error_response("unauthorized", "missing or invalid bearer token"),
                    status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )(scope, receive, send)
        return await self.files(scope, receive, send)


def local_app(worker: "Worker", *, public_url: str, token: str,
              webhook_policy: WebhookPolicy = WebhookPolicy(),
              static: dict[str, Path] | None = None, jobs_db: Path | str | None = None,
              body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S) -> "FastAPI":
    """The web API over a :class:`ThreadDispatcher` plus the static files and ``/outputs``.

    Args:
        worker: a built worker (:meth:`core.pipeline.Worker.cold_start`).
        public_url: ``http://host:port`` as callers reach this server (artefact URLs use it).
        token: the bearer token (16+ characters).
        webhook_policy: where webhooks may go (tests allow a loopback receiver here).
        static: URL path -> directory (default :data:`STATIC`); missing directories are skipped.
        jobs_db: the durable job table (SQLite); default in memory (lost at exit).
        body_idle_timeout_s: see :func:`handlers.web.create_web_app`.
    """
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    table = JobTable(jobs_db) if jobs_db is not None else JobTable()
    dispatcher = ThreadDispatcher(local_runner(worker, public_url), table=table,
                                  webhooks=WebhookSender(webhook_policy))
    app = create_web_app(dispatcher, token=token, readiness=weights_readiness,
                         webhook_policy=webhook_policy,
                         resign=local_resign(worker, public_url),
                         body_idle_timeout_s=body_idle_timeout_s)
    app.state.dispatcher = dispatcher

    @app.get("/", include_in_schema=False)
    def root():  # noqa: ANN202 (FastAPI would read a return annotation as a response model)
        """The server's front door is the page (a JSON 404 here greeted people)."""
        return RedirectResponse(PAGE_PATH)

    for path, directory in (STATIC if static is None else static).items():
        if directory.is_dir():
            app.mount(path, StaticFiles(directory=directory, html=True), name=path)
        else:
            log.warning("%s not served: %s is missing", path, directory)
    output_dir = Path(worker.settings.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    app.mount("/outputs", OutputFiles(output_dir, token), name="outputs")
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m handlers.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--jobs-db", type=Path, default=None,
                    help="the durable job table (SQLite); default "
                    "<MASKPAINT_OUTPUT_DIR>/.maskpaint/jobs.sqlite3")
    ap.add_argument("--header-timeout-s", type=float, default=HEADER_TIMEOUT_S,
                    help="close a connection whose request headers take longer (s)")
    ap.add_argument("--body-timeout-s", type=float, default=BODY_IDLE_TIMEOUT_S,
                    help="408 for a body that stops arriving this long (s)")
    ap.add_argument("--webhook-loopback", action="store_true",
                    help="DEVELOPMENT: let webhooks go to http:// on any port of private and "
                    "loopback addresses (as MASKPAINT_ALLOW_PRIVATE_WEBHOOKS=1); off by default")
    ap.add_argument("--log-level", default="WARNING",
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    help="console log level (JSON lines on stderr); INFO logs each job's stages "
                    "(the load test counts model runs from them)")
    a = ap.parse_args(argv)

    from core.logs import setup_logging
    from core.pipeline import Worker

    setup_logging(a.log_level)
    settings = Settings()
    token = (settings.api_token.get_secret_value() if settings.api_token is not None
             else secrets.token_urlsafe(24))
    if not (STATIC["/ts/dist"] / "index.js").exists():
        print("clients/ts/dist is missing: build it (cd clients/ts && npm ci && npm run build); "
              "`make serve` does", file=sys.stderr)
    host = f"[{a.host}]" if ":" in a.host else a.host
    public_url = f"http://{host}:{a.port}"
    try:  # (the output directory is checked before the models load)
        worker = Worker.cold_start(settings)
    except StartupError as exc:
        print(f"maskpaint: cannot start: {exc}", file=sys.stderr)
        return 2
    setup_logging(a.log_level)  # again: the libraries loaded at cold start add their handlers
    policy = replace(LOOPBACK, backoff_s=0.2) if a.webhook_loopback else WebhookPolicy()
    jobs_db = a.jobs_db or Path(settings.output_dir) / ".maskpaint" / "jobs.sqlite3"
    app = local_app(worker, public_url=public_url, token=token, webhook_policy=policy,
                    jobs_db=jobs_db, body_idle_timeout_s=a.body_timeout_s)
    print(f"maskpaint web API on {public_url} (POST /jobs, GET|DELETE /jobs/{{id}}, "
          f"GET /health)\nopen the mask editor: {public_url}{PAGE_PATH}?token={token}",
          flush=True)
    serve_http(app, a.host, a.port, header_timeout_s=a.header_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
