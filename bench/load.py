"""``python -m bench.load`` (``make load``): a burst of users on the local web API, checked.

1. Starts the server with the dev weights on a free loopback port: ``python -m handlers.serve``
   (what ``make serve`` runs; ``--target runpod``: ``runpod_handler.py --rp_serve_api``), local
   outputs in a scratch folder, logging each job's stages.
2. One warm-up job, then the server's RSS (with its children; psutil) "before".
3. Locust headless (``bench/locustfile.py``) for ``--seconds`` with ``--users`` closed-loop users.
4. Drains: every accepted job whose end a user did not see (cut by the stop) is polled to its end.
5. Counts **jobs lost**: accepted (202/200 with an id) but never ``done``/``failed``, or done
   without a job record; and **jobs run twice**: record keys whose model ran more than once
   (the worker logs one ``inpaint`` stage line per model run, under the record key; a
   resubmission answered from the record logs none). Then RSS "after".
6. Writes ``bench/results/load-<target>.json`` and prints the Markdown table; with
   ``--results-md`` and a run of at least :data:`RECORD_MIN_S`, replaces the load section of
   ``bench/RESULTS.md``.

Exit status 1 when a job was lost or ran twice, or Locust saw a failed request.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import psutil

from bench.load_job import tiny_job

REPO = Path(__file__).resolve().parents[1]
TOKEN = "load-test-token-0123456789abcdef"
SECTION = "## Load test (`make load`)"
#: Shortest run whose table replaces the one in RESULTS.md, s (shorter runs are smoke tests).
RECORD_MIN_S = 60
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=None if body is None else
                                 json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    try:
        with _direct.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MB (1e6 bytes)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 1e6, 1)


def start_server(target: str, weights: Path, out: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """The server under test on a free port, ready (``/health`` or ``/openapi.json``)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASKPAINT_", "AWS_", "RUNPOD_"))}
    env.update(MASKPAINT_WEIGHTS_DIR=str(weights), MASKPAINT_OUTPUT_DIR=str(out),
               MASKPAINT_API_TOKEN=TOKEN, MASKPAINT_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO), NO_PROXY="*", no_proxy="*", UVICORN_LOG_LEVEL="warning")
    if target == "web":
        cmd = [sys.executable, "-m", "handlers.serve", "--port", str(port), "--log-level", "INFO"]
        ready = "/health"
    else:
        cmd = [sys.executable, "runpod_handler.py", "--rp_serve_api", "--rp_api_host",
               "127.0.0.1", "--rp_api_port", str(port)]
        ready = "/openapi.json"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with _direct.open(url + ready, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def model_runs(log: Path) -> Counter[str]:
    """Model runs per record key, from the worker's JSON log (``stage`` == ``inpaint``)."""
    runs: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line[line.index("{"):]) if "{" in line else None
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("stage") == "inpaint" and rec.get("job_id"):
            runs[rec["job_id"]] += 1
    return runs


def drain(target: str, url: str, journal: Path, timeout_s: float = 300) -> dict[str, str]:
    """Final status per accepted API job id: the users' own, else polled now (web) until the
    end. On the RunPod local server a job runs only inside its ``/status`` call, so a job whose
    call was cut is run now by that call."""
    accepted: dict[str, str] = {}
    final: dict[str, str] = {}
    for line in journal.read_text().splitlines() if journal.exists() else []:
        ev = json.loads(line)
        if ev["event"] == "accepted":
            accepted[ev["id"]] = ev["key"]
        elif ev["status"] in ("done", "failed"):
            final[ev["id"]] = ev["status"]
    deadline = time.monotonic() + timeout_s
    for job_id in accepted:
        while job_id not in final and time.monotonic() < deadline:
            if target == "web":
                code, body = _http("GET", f"{url}/jobs/{job_id}")
                status = body.get("status") if code == 200 else "lost"
            else:
                code, body = _http("POST", f"{url}/status/{job_id}")
                status = {"COMPLETED": "done", "FAILED": "failed"}.get(body.get("status"), "lost")
            if status in ("done", "failed", "lost"):
                final[job_id] = status
            else:
                time.sleep(0.3)
    return {job_id: final.get(job_id, "lost") for job_id in accepted}


def locust_stats(prefix: Path) -> dict[str, dict]:
    """Locust's ``<prefix>_stats.csv`` rows by name: requests, failures, p50/p95/p99 (ms)."""
    rows = {}
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["Name"]] = {"requests": int(row["Request Count"]),
                                 "failures": int(row["Failure Count"]),
                                 "p50": _num(row["50%"]), "p95": _num(row["95%"]),
                                 "p99": _num(row["99%"])}
    return rows


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def run(target: str, seconds: int, users: int, weights: Path, scratch: Path,
        resubmit_every: int = 5) -> dict:
    """One load run; returns the report dict (see the module docstring)."""
    load_before = [round(x, 2) for x in os.getloadavg()]  # the machine before we add ours
    out, log, journal = scratch / "outputs", scratch / "server.log", scratch / "journal.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    job_file = scratch / "job.json"
    job_file.write_text(json.dumps(tiny_job()))
    proc, url = start_server(target, weights, out, log)
    try:
        warm = json.loads(job_file.read_text()) | {"idempotency_key": "warm-up", "seed": 1}
        if target == "web":
            code, body = _http("POST", f"{url}/jobs", {"input": warm})
            warm_id = body.get("id")
            while code in (200, 202) and body.get("status") not in ("done", "failed"):
                time.sleep(0.3)
                code, body = _http("GET", f"{url}/jobs/{warm_id}")
        else:
            code, body = _http("POST", f"{url}/run", {"input": warm})
            _http("POST", f"{url}/status/{body['id']}")
        rss_before = _rss_mb(proc.pid)
        prefix = scratch / "locust"
        env = {**os.environ, "MASKPAINT_API_TOKEN": TOKEN, "LOAD_JOB": str(job_file),
               "LOAD_JOURNAL": str(journal), "PYTHONPATH": str(REPO), "NO_PROXY": "*",
               "LOAD_RESUBMIT_EVERY": str(resubmit_every)}
        user = "WebUser" if target == "web" else "RunpodUser"
        t0 = time.monotonic()
        lr = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "bench/locustfile.py"),
                             user, "--headless", "-u", str(users), "-r", str(users),
                             "-t", f"{seconds}s", "-H", url, "--csv", str(prefix),
                             "--only-summary", "--stop-timeout", "30", "--loglevel", "WARNING"],
                            cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=seconds + 300)
        wall = time.monotonic() - t0
        if not Path(f"{prefix}_stats.csv").exists():
            raise RuntimeError(f"locust wrote no stats (exit {lr.returncode}):\n{lr.stderr[-3000:]}")
        finals = drain(target, url, journal)
        rss_after = _rss_mb(proc.pid)
    finally:
        stop_server(proc)
    keys = {}
    repeats = 0
    # a repeat under a used key is a job of its own on RunPod (its worker returns the recorded
    # result, no model run), while the web API's Idempotency-Key hands back the first job's id
    repeat_jobs = 0
    for line in journal.read_text().splitlines():
        ev = json.loads(line)
        if ev["event"] == "accepted":
            repeats += bool(ev.get("repeat"))
            repeat_jobs += bool(ev.get("repeat")) and ev["id"] not in keys
            keys[ev["id"]] = ev["key"]
    runs = model_runs(log)
    runs.pop("key-warm-up", None)
    lost = [jid for jid, st in finals.items() if st not in ("done", "failed")]
    lost += [jid for jid, st in finals.items()
             if st == "done" and not (out / f"key-{keys[jid]}" / "job.json").exists()]
    twice = sorted(k for k, n in runs.items() if k.startswith("key-") and n > 1)
    stats = locust_stats(prefix)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "target": target, "seconds": seconds, "users": users, "wall_s": round(wall, 1),
        "load_average_before": load_before,
        "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        "jobs_accepted": len(finals), "jobs_done": sum(s == "done" for s in finals.values()),
        "jobs_failed": sum(s == "failed" for s in finals.values()), "resubmitted": repeats,
        "repeat_jobs": repeat_jobs,
        "jobs_lost": len(lost), "jobs_run_twice": len(twice), "twice_keys": twice[:10],
        "model_runs": sum(n for k, n in runs.items() if k.startswith("key-")),
        "requests": stats.get("Aggregated", {}).get("requests"),
        "failures": stats.get("Aggregated", {}).get("failures"),
        "stats": stats, "rss_mb_before": rss_before, "rss_mb_after": rss_after,
        "locust_exit": lr.returncode,
    }


def table(r: dict) -> str:
    """The report as Markdown (the section RESULTS.md and the README quote)."""
    s = r["stats"]

    def ms(name: str, p: str) -> str:
        v = s.get(name, {}).get(p)
        return "-" if v is None else f"{v:,.0f}"

    rows = [
        "| measure | value |", "|---|---|",
        f"| load | {r['users']} users, closed loop, {r['seconds']} s, target `{r['target']}`, "
        f"{r['cpus']} CPUs shared (1-min load average {r['load_average_before'][0]} before, "
        f"{r['load_average'][0]} at the end) |",
        f"| requests / failures | {r['requests']} / {r['failures']} |",
        f"| jobs accepted / done / failed | {r['jobs_accepted']} / {r['jobs_done']} / "
        f"{r['jobs_failed']} ({r['resubmitted']} resubmitted with a used key) |",
        f"| submit latency p50 / p95 / p99 (ms) | {ms('submit', 'p50')} / {ms('submit', 'p95')} / "
        f"{ms('submit', 'p99')} |",
        f"| end-to-end job latency p50 / p95 / p99 (ms) | {ms('e2e', 'p50')} / {ms('e2e', 'p95')} / "
        f"{ms('e2e', 'p99')} |",
        f"| jobs lost | **{r['jobs_lost']}** |",
        f"| jobs run twice (model runs per record key) | **{r['jobs_run_twice']}** "
        f"({r['model_runs']} model runs) |",
        f"| server RSS before / after (MB) | {r['rss_mb_before']:,.0f} / {r['rss_mb_after']:,.0f} |",
    ]
    return "\n".join(rows)


def write_section(path: Path, r: dict) -> None:
    """Replace (or append) the load section of ``bench/RESULTS.md``."""
    body = (f"{SECTION}\n\nMeasured {r['date']} on this machine with the dev weights (tiny random "
            "models: the server's own overhead under a burst, not GPU time). "
            "`make load` (`LOAD_S`, `LOAD_USERS`); `bench/locustfile.py`.\n\n" + table(r) + "\n\n"
            "Reading it: the local server runs one job at a time (as one GPU container would), so "
            "each user's job waits behind the others' and end-to-end latency is about the number "
            "of users times one job's time; submits never wait for the worker, so they stay fast. "
            "Repeats under a used key were answered from the job record (model runs = jobs done "
            "minus repeats).\n")
    text = path.read_text() if path.exists() else ""
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + body + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=["web", "runpod"], default="web")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("LOAD_S", "60")))
    ap.add_argument("--users", type=int, default=int(os.environ.get("LOAD_USERS", "8")))
    ap.add_argument("--weights", type=Path,
                    default=Path(os.environ.get("MASKPAINT_WEIGHTS_DIR", REPO / ".weights")))
    ap.add_argument("--resubmit-every", type=int, default=5,
                    help="one submit in N repeats a finished job's key (0: never)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--results-md", type=Path, help="also update this RESULTS.md's load section")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maskpaint-load-") as tmp:
        r = run(a.target, a.seconds, a.users, a.weights, Path(tmp), a.resubmit_every)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"load-{a.target}.json").write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))
    if a.results_md and a.seconds >= RECORD_MIN_S:
        write_section(a.results_md, r)
    elif a.results_md:
        print(f"(a {a.seconds} s run does not replace the recorded table: {RECORD_MIN_S} s or more "
              "does)", file=sys.stderr)
    bad = r["jobs_lost"] or r["jobs_run_twice"] or r["failures"] or not r["jobs_done"]
    if bad:
        print(f"FAILED: {r['jobs_lost']} lost, {r['jobs_run_twice']} run twice "
              f"{r['twice_keys']}, {r['failures']} failed requests", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
