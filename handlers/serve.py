"""Serve the web API locally, with the mask editor's reference page: ``make serve``.

    MASKPAINT_WEIGHTS_DIR=.weights python -m handlers.serve [--host 127.0.0.1] [--port 8000]

The same app as on Modal (:func:`handlers.web.create_web_app`: ``POST /jobs``,
``GET /jobs/{id}`` with progress, ``GET /health``) with a local dispatcher: one worker, built once
at start with the local weights (``Worker.cold_start``, Settings as usual: outputs go to
``MASKPAINT_OUTPUT_DIR`` or to S3 when ``MASKPAINT_S3_BUCKET`` is set), jobs run one at a time
in a thread (:class:`handlers.dispatch.ThreadDispatcher`). Beside the API it serves:

- ``/mask-editor/page/`` (the reference page), ``/mask-editor/src/`` (the editor) and
  ``/ts/dist/`` (the built ``@maskpaint/client``, where the page's import map points);
- ``/outputs/`` (the local output directory). Local storage returns ``file://`` URLs, which a
  browser page cannot load; this server rewrites them into ``http://<host>:<port>/outputs/...``
  so that the page's before/after slider (and any other caller) gets the result over HTTP.
  S3 presigned URLs are passed through unchanged.

The token is ``MASKPAINT_API_TOKEN``, or a fresh random one; the URL printed at start carries it
(``?token=...``: the page reads it). Binds to the loopback by default: a local tool, not a
production server.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import Settings
from handlers.dispatch import ThreadDispatcher
from handlers.modal import run_job
from handlers.web import create_web_app, weights_readiness
from handlers.webhook import WebhookPolicy, deliver

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


def http_artefacts(reply: dict, output_dir: Path, public_url: str) -> dict:
    """``reply`` with each artefact's ``file://`` URL under ``output_dir`` replaced by
    ``<public_url>/outputs/<path below output_dir>``; anything else unchanged."""
    prefix = Path(output_dir).resolve().as_uri().rstrip("/") + "/"
    out = dict(reply)
    for name, value in reply.items():
        if isinstance(value, dict) and str(value.get("url", "")).startswith(prefix):
            out[name] = {**value, "url": f"{public_url.rstrip('/')}/outputs/"
                                         f"{value['url'][len(prefix):]}"}
    return out


def local_runner(worker: "Worker", public_url: str,
                 webhook_policy: WebhookPolicy = WebhookPolicy()
                 ) -> Callable[[dict, str, Callable[[dict], None]], dict]:
    """The :class:`ThreadDispatcher` runner: :func:`handlers.modal.run_job` (progress to the
    dispatcher, webhook delivered under ``webhook_policy``), artefact URLs made http."""
    output_dir = worker.settings.output_dir

    def run(job: dict, job_id: str, progress: Callable[[dict], None]) -> dict:
        hook = job.get("webhook")
        reply = run_job(worker, {k: v for k, v in job.items() if k != "webhook"}, job_id,
                        on_refresh=lambda: None, progress=progress)
        if "error" not in reply:
            reply = http_artefacts(reply, output_dir, public_url)
        if isinstance(hook, str) and hook:  # after the rewrite: the body a poll would show
            deliver(hook, job_id, reply, policy=webhook_policy)
        return reply

    return run


def local_app(worker: "Worker", *, public_url: str, token: str,
              webhook_policy: WebhookPolicy = WebhookPolicy(),
              static: dict[str, Path] | None = None) -> "FastAPI":
    """The web API over a :class:`ThreadDispatcher` plus the static files and ``/outputs``.

    Args:
        worker: a built worker (:meth:`core.pipeline.Worker.cold_start`).
        public_url: ``http://host:port`` as callers reach this server (artefact URLs use it).
        token: the bearer token (16+ characters).
        webhook_policy: where webhooks may go (tests allow a loopback receiver here).
        static: URL path -> directory (default :data:`STATIC`); missing directories are skipped.
    """
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    dispatcher = ThreadDispatcher(local_runner(worker, public_url, webhook_policy))
    app = create_web_app(dispatcher, token=token, readiness=weights_readiness,
                         webhook_policy=webhook_policy)
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
    app.mount("/outputs", StaticFiles(directory=output_dir), name="outputs")
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m handlers.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--webhook-loopback", action="store_true",
                    help="TESTS ONLY: let webhooks go to http:// on any port of private and "
                    "loopback addresses (a receiver on this machine); off by default")
    ap.add_argument("--log-level", default="WARNING",
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                    help="console log level (JSON lines on stderr); INFO logs each job's stages "
                    "(the load test counts model runs from them)")
    a = ap.parse_args(argv)

    import uvicorn

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
    worker = Worker.cold_start(settings)
    policy = (WebhookPolicy(allow_private=True, allow_http=True, allow_any_port=True,
                            backoff_s=0.2) if a.webhook_loopback else WebhookPolicy())
    app = local_app(worker, public_url=public_url, token=token, webhook_policy=policy)
    print(f"maskpaint web API on {public_url} (POST /jobs, GET /jobs/{{id}}, GET /health)\n"
          f"open the mask editor: {public_url}{PAGE_PATH}?token={token}", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
