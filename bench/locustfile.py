"""Locust load test of a burst of users on the web API (``WebUser``) or on the runpod SDK's local
server (``RunpodUser``). ``make load`` (``python -m bench.load``) starts the server, runs this file
headless and checks the books; to drive a server yourself::

    MASKPAINT_API_TOKEN=... locust -f bench/locustfile.py WebUser --headless -u 8 -r 8 -t 60s \\
        -H http://127.0.0.1:8000
    locust -f bench/locustfile.py RunpodUser --headless -u 4 -r 4 -t 60s -H http://127.0.0.1:8001

Each user submits a small job, polls it to its end and starts the next one (a closed loop, so
the number of users is the queue depth the server sees). What Locust reports:

- ``submit`` (``POST /jobs`` / ``POST /run``), ``poll`` (``GET /jobs/{id}``), ``health``;
- ``e2e``: one entry per job, submit to final status, ms (a custom request event, so the stats
  and percentiles are Locust's own); a job that ends ``failed`` counts as a failure there.

One submit in ``LOAD_RESUBMIT_EVERY`` (default 10) repeats an already finished job under the
same ``idempotency_key``, as a batch resuming after an interruption does; the worker must answer
it from its record without running the model again (``bench.load`` counts model runs per key).

Environment: ``MASKPAINT_API_TOKEN`` (web), ``LOAD_JOB`` (a JSON file with the job input; by
default a 96 px ``bus.jpg`` with a provided mask and one denoising step), ``LOAD_JOURNAL`` (a
file where each job's keys and final status are appended, one JSON line per event, for the
lost/duplicate check), ``LOAD_RUN`` (a prefix for this run's keys).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import HttpUser, between, task

RUN = os.environ.get("LOAD_RUN") or uuid.uuid4().hex[:8]
RESUBMIT_EVERY = int(os.environ.get("LOAD_RESUBMIT_EVERY", "10"))
_POLL_S = 0.2
_JOB_TIMEOUT_S = 600.0


def _load_job() -> dict:
    path = os.environ.get("LOAD_JOB")
    if path:
        return json.loads(open(path, encoding="utf-8").read())
    from bench.load_job import tiny_job

    return tiny_job()


JOB = _load_job()


def _journal(event: dict) -> None:
    path = os.environ.get("LOAD_JOURNAL")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


class _JobUser(HttpUser):
    """A closed loop of jobs: submit, wait for the end, journal it, next."""

    abstract = True
    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        self.serial = 0
        self.finished: list[tuple[str, int]] = []  # (key, seed) of this user's done jobs
        self.me = uuid.uuid4().hex[:6]

    def _next(self) -> tuple[str, int, bool]:
        self.serial += 1
        if self.finished and RESUBMIT_EVERY > 0 and self.serial % RESUBMIT_EVERY == 0:
            key, seed = random.choice(self.finished)
            return key, seed, True
        return f"{RUN}-{self.me}-{self.serial}", random.randrange(2**31), False

    def _e2e(self, t0: float, status: str, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="JOB", name="e2e", response_time=(time.monotonic() - t0) * 1000,
            response_length=0, exception=exc or (None if status == "done" else
                                                 RuntimeError(f"job {status}")),
            context={})

    def run_job(self) -> None:
        key, seed, repeat = self._next()
        t0 = time.monotonic()
        job_id = self.submit({**JOB, "seed": seed, "idempotency_key": key})
        if job_id is None:
            return
        _journal({"event": "accepted", "key": key, "id": job_id, "repeat": repeat})
        status = self.wait(job_id, t0)
        _journal({"event": "final", "key": key, "id": job_id, "status": status, "repeat": repeat})
        self._e2e(t0, status)
        if status == "done" and not repeat:
            self.finished.append((key, seed))


class WebUser(_JobUser):
    """The web API (``handlers/web.py``): ``POST /jobs``, ``GET /jobs/{id}``, ``GET /health``."""

    def on_start(self) -> None:
        super().on_start()
        self.client.headers["Authorization"] = f"Bearer {os.environ['MASKPAINT_API_TOKEN']}"

    def submit(self, inp: dict) -> str | None:
        with self.client.post("/jobs", json={"input": inp}, name="submit",
                              headers={"Idempotency-Key": inp["idempotency_key"]},
                              catch_response=True) as r:
            if r.status_code in (200, 202):
                return r.json()["id"]
            r.failure(f"HTTP {r.status_code}")
        return None

    def wait(self, job_id: str, t0: float) -> str:
        while time.monotonic() - t0 < _JOB_TIMEOUT_S:
            with self.client.get(f"/jobs/{job_id}", name="poll", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
                    return "lost"
                status = r.json().get("status")
            if status in ("done", "failed", "cancelled"):
                return status
            time.sleep(_POLL_S)
        return "timeout"

    @task(10)
    def job(self) -> None:
        self.run_job()

    @task(1)
    def health(self) -> None:
        self.client.get("/health", name="health")


class RunpodUser(_JobUser):
    """The runpod SDK's local server (``runpod_handler.py --rp_serve_api``): ``POST /run``, then
    ``POST /status/{id}``, which runs the job during the request (the SDK's simulation)."""

    def submit(self, inp: dict) -> str | None:
        with self.client.post("/run", json={"input": inp}, name="submit",
                              catch_response=True) as r:
            if r.status_code == 200:
                return r.json()["id"]
            r.failure(f"HTTP {r.status_code}")
        return None

    def wait(self, job_id: str, t0: float) -> str:
        with self.client.post(f"/status/{job_id}", name="poll", catch_response=True,
                              timeout=_JOB_TIMEOUT_S) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return "lost"
            status = r.json().get("status")
        return {"COMPLETED": "done", "FAILED": "failed", "CANCELLED": "cancelled"}.get(status,
                                                                                       "lost")

    @task
    def job(self) -> None:
        self.run_job()

