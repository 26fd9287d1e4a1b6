"""Modal entry point: one GPU class that runs jobs, one web app that queues and polls them.

    modal deploy modal_app.py     # deploy (secrets and knobs: docs/modal.md)
    modal run modal_app.py        # one job on bus.jpg, printed as JSON
    modal run modal_app.py::batch --jobs jobs.jsonl --max-containers 10   # many (docs/batch.md)

Only Modal declarations live here; the logic is tested without a Modal account: deploy
settings, cold start and job shaping in ``handlers/modal.py``, the provider-neutral web API in
``handlers/web.py``. Importing this module needs no
Modal credentials, no GPU and no torch.
"""

import modal

from handlers import modal as glue
from handlers import web as web_api
from handlers.dispatch import DictIssuedIds, DictProgress

cfg = glue.ModalConfig.from_env()  # MASKPAINT_MODAL_* knobs, read where `modal deploy` runs
app = modal.App(cfg.app_name)
if modal.is_local():  # deploy/run side: the recipe (pins + weights baked for the profile)
    from image_build.modal_image import build_image

    image = build_image(cfg.weights_profile, hf_secret=cfg.hf_secret)
else:  # in a container the image already exists; its recipe (image_build/) is not shipped
    image = None
# Storage settings and credentials (MASKPAINT_S3_*, AWS_*) and the web API token.
s3_secret = modal.Secret.from_name(cfg.s3_secret)
api_secret = modal.Secret.from_name(cfg.api_secret, required_keys=[web_api.TOKEN_ENV])
# MASKPAINT_WEBHOOK_SECRET (optional, in the secret named by MASKPAINT_MODAL_WEBHOOK_SECRET):
# the GPU class signs webhook deliveries; the web API refuses `webhook` submits without it.
webhook_secrets = ([modal.Secret.from_name(cfg.webhook_secret,
                                           required_keys=["MASKPAINT_WEBHOOK_SECRET"])]
                   if cfg.webhook_secret else [])
# Each call's latest progress, keyed by call id: the GPU class writes, the web API reads.
progress = DictProgress(modal.Dict.from_name(f"{cfg.app_name}-progress", create_if_missing=True))


@app.cls(
    image=image,
    gpu=cfg.gpu,
    secrets=[s3_secret, *webhook_secrets],
    env=cfg.container_env(),  # containers re-import this file: same knobs as at deploy
    # Jobs return their failures as values (handlers.common.execute), so these retries fire
    # only on crashes (OOM kill, segfault, lost host) or Modal's timeout; the caller's own
    # mistakes are never retried. Write-once artefacts + the job record make a retry safe.
    retries=cfg.retries(),
    timeout=cfg.timeout_s,  # above MASKPAINT_JOB_DEADLINE_S: slow jobs end as `timeout` values
    startup_timeout=cfg.startup_timeout_s,
    single_use_containers=cfg.single_use,  # one job per container when the deployer asks
    scaledown_window=cfg.scaledown_window_s,  # otherwise warm reuse
    min_containers=cfg.min_containers,
    max_containers=cfg.max_containers,
    enable_memory_snapshot=cfg.memory_snapshot,
    experimental_options=cfg.experimental_options,  # GPU memory snapshot, when asked for
)
class MaskPaint:
    @modal.enter(snap=cfg.memory_snapshot)
    def load(self) -> None:
        """Load every model (on CPU for a CPU memory snapshot, on the GPU for a GPU snapshot);
        with snapshots on, this state is what gets snapshotted."""
        glue.setup_container_logging()
        self.models = glue.load_models(on_cpu=cfg.load_on_cpu)

    @modal.enter(snap=False)
    def ready(self) -> None:
        """After restore: move models to the GPU, read settings/secrets, open storage."""
        self.worker = glue.make_worker(self.models, cfg.default_device)

    @modal.method()
    def run(self, job: dict, job_id: str | None = None) -> dict:
        """One job (``{"id", "input"}`` or a bare input) -> result dict or ``{"error": {...}}``.
        An accelerator failure makes this container stop taking inputs after replying."""
        call_id = modal.current_function_call_id()  # the id the web API polls; None in .local()
        report = (lambda update: progress.set(call_id, update)) if call_id else None
        # a webhook is delivered by its own small CPU function: retries never hold this GPU
        return glue.run_job(self.worker, job, job_id, progress=report,
                            send_webhook=lambda url, jid, status: deliver_webhook.spawn(
                                url, jid, status))


@app.function(image=image, secrets=webhook_secrets, env=cfg.container_env(), cpu=0.25,
              memory=256, timeout=300, scaledown_window=60)
def deliver_webhook(url: str, job_id: str, status: dict) -> bool:
    """Deliver one finished job's webhook (signed, SSRF-checked, retried with backoff)."""
    from handlers.webhook import deliver

    glue.setup_container_logging()
    return deliver(url, job_id, status)


@app.function(image=image, secrets=[api_secret, s3_secret, *webhook_secrets],
              env=cfg.container_env(), timeout=60, scaledown_window=300)
@modal.concurrent(max_inputs=64)  # submit/poll only: no request waits on the GPU
@modal.asgi_app(label=f"{cfg.app_name}-api")
def web():
    """``POST /jobs``, ``GET`` / ``DELETE /jobs/{id}``, ``GET /health`` (Bearer token)."""
    # the ids this API handed out, shared by every web container (entries live 7 days)
    issued = modal.Dict.from_name(f"{cfg.app_name}-job-ids", create_if_missing=True)
    from core.settings import Settings
    from core.storage import make_storage

    # the storage settings (s3_secret) let a poll of a finished job re-sign its URLs
    return web_api.create_web_app(glue.ModalDispatcher(lambda: MaskPaint().run, progress),
                                  readiness=web_api.weights_readiness,
                                  issued=DictIssuedIds(issued),
                                  resign=web_api.resign_with(make_storage(Settings())))


@app.local_entrypoint()
def main(photo: str = "", prompt: str = glue.DEMO_PROMPT, steps: int = 30, task: str = "inpaint"):
    """Submit one job (bus.jpg as a data URL unless --photo) and print the result."""
    import json

    job = glue.demo_job(photo or None, prompt=prompt, steps=steps, task=task)
    print(json.dumps(MaskPaint().run.remote(job), indent=2))


@app.local_entrypoint()
def batch(jobs: str, results: str = "", max_containers: int = 10, price_per_s: float = 0.0):
    """Map the GPU class over a JSONL file of jobs (``handlers/batch/modal_map.py``), at most
    ``max_containers`` at once; writes ``<jobs>.results.jsonl`` and prints the summary."""
    import json
    from pathlib import Path

    from handlers.batch.modal_map import run_mapped
    from handlers.batch.summary import describe

    run = MaskPaint.with_options(max_containers=max_containers)().run
    summary = run_mapped(run, Path(jobs), Path(results) if results else None,
                         price_per_s=price_per_s)
    print(describe(summary))
    print(json.dumps(summary))
