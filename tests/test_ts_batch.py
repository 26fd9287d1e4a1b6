"""``runMany`` of the TypeScript client against the local web API (``python -m handlers.serve``):
results in input order with typed errors, at most ``concurrency`` in flight, the same jobs again
answered from the worker's records (same keys, same stored artefacts), and an ``AbortSignal``
that stops the batch."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.live_server import local_web
from tests.test_ts_client import TS, _node, job_file, ts_pkg  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_run_many_against_the_local_web_api(ts_pkg, dev_weights, job_file, tmp_path):  # noqa: F811
    node = _node()
    with local_web(dev_weights, tmp_path / "out", tmp_path / "serve.log") as srv:
        env = {**os.environ, "MASKPAINT_WEB_URL": srv["url"], "MASKPAINT_API_TOKEN": srv["token"],
               "MASKPAINT_JOB_FILE": str(job_file), "NO_PROXY": "*", "no_proxy": "*"}
        proc = subprocess.run([node, "test/integration/local-batch.mjs"], cwd=TS, env=env,
                              capture_output=True, text=True, timeout=300)
        log = srv["log"].read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n--- server\n{log}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    first = out["first"]
    assert [r["index"] for r in first] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in first] == ["done", "done", "failed", "done", "done"]
    assert (first[2]["code"], first[2]["field"], first[2]["attempts"]) == \
        ("invalid_image", "image", 1)
    for r in first:
        if r["status"] == "done":
            assert r["jobId"] == f"key-{r['key']}"  # the worker keyed its record by our key
    assert out["maxInFlight"] == 2
    assert out["last"] == {"done": 4, "failed": 1, "inFlight": 0}

    # the same jobs again: the same keys, answered from the records (the same stored files)
    assert [(r["key"], r["status"], r["imageKey"]) for r in out["again"]] == \
        [(r["key"], r["status"], r["imageKey"]) for r in first]

    aborted = out["aborted"]
    statuses = [r["status"] for r in aborted]
    assert statuses.count("done") >= 1 and statuses.count("cancelled") >= 4, statuses
    assert "failed" not in statuses
    assert all(r["attempts"] == 0 for r in aborted[4:])  # never started
