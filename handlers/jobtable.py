"""The local dispatcher's durable job table: one SQLite file, so that a restart loses no job.

Why SQLite (stdlib ``sqlite3``) and not a hand-written file format or a server: the table needs
atomic transactions (a job moves queued -> running -> done exactly once, an idempotency key is
bound once), survives ``kill -9`` (every commit is in the write-ahead log before it returns;
``synchronous=NORMAL`` in WAL mode loses nothing on a process crash, only possibly the last
commits on a power cut), and must stay a single file beside the outputs with no service to run.

Each row is one job this server issued: its id, status (``queued`` / ``running`` / ``done`` /
``failed`` / ``cancelled``), submit order, the job body while it may still run (dropped once it
ends), the final poll body (the output without inline base64, or the error), the web API's
metadata, its webhook delivery state and its expiry (:data:`handlers.dispatch.ISSUED_TTL_S`).
It also serves as the web API's :class:`handlers.dispatch.IssuedIds` (ids and
``Idempotency-Key`` bindings). Thread-safe: one connection behind a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from handlers.dispatch import FINAL, ISSUED_TTL_S, failed

#: Attempts a job gets across restarts: a job cut twice (it may be what kills the server)
#: answers ``failed`` / ``interrupted`` instead of running a third time.
MAX_ATTEMPTS = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    job BLOB,
    final TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    hook_url TEXT,
    hook_state TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    expires REAL NOT NULL
);
"""


class JobTable:
    """The job table in ``path`` (created with its parent directory; ``":memory:"`` for a
    table that lives as long as the process).

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """

    def __init__(self, path: str | Path = ":memory:", ttl_s: float = ISSUED_TTL_S) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path, self.ttl_s = str(path), ttl_s
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self.sweep()

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -------------------------------------------------------------- jobs
    def insert(self, job_id: str, job: dict) -> None:
        """A new ``queued`` job with its body (``{"input", "webhook"?}``)."""
        now = time.time()
        hook = job.get("webhook") if isinstance(job.get("webhook"), str) else None
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (id, seq, status, created, expires, job, hook_url) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, seq, now, now + self.ttl_s, json.dumps(job).encode(), hook))

    def status(self, job_id: str) -> str | None:
        """The job's status, or None when this table has no such (unexpired) job."""
        rows = self._run("SELECT status FROM jobs WHERE id = ? AND expires > ?",
                         (job_id, time.time()))
        return rows[0][0] if rows else None

    def final(self, job_id: str) -> dict | None:
        """The poll body of an ended job (``done`` / ``failed`` / ``cancelled``), else None."""
        rows = self._run("SELECT status, final FROM jobs WHERE id = ?", (job_id,))
        if not rows or rows[0][0] not in FINAL:
            return None
        return json.loads(rows[0][1]) if rows[0][1] else {"status": rows[0][0]}

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job among the queued ones (1 = next to start)."""
        rows = self._run("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq <= "
                         "(SELECT seq FROM jobs WHERE id = ? AND status = 'queued')", (job_id,))
        return rows[0][0] or None if rows else None

    def start(self, job_id: str) -> dict | None:
        """Mark a queued job ``running`` (one more attempt); return its body, or None when it is
        no longer queued (cancelled meanwhile)."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1 "
                                   "WHERE id = ? AND status = 'queued'", (job_id,))
            if cur.rowcount != 1:
                return None
            row = self._db.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def finish(self, job_id: str, body: dict) -> bool:
        """Record a queued or running job's final poll body (its status is ``body["status"]``)
        and drop its input; False (nothing changed) when it had already ended (e.g. cancelled
        while it ran: the first final status stays)."""
        hook_state = "pending" if body["status"] in FINAL else None
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = ?, final = ?, job = NULL, "
                "hook_state = CASE WHEN hook_url IS NULL THEN NULL ELSE ? END "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (body["status"], json.dumps(body), hook_state, job_id))
        return cur.rowcount == 1

    def recover(self) -> tuple[list[str], list[str]]:
        """After a restart: every job left ``queued`` or ``running`` goes back to the queue
        (same id; a job that had recorded its result returns that record when it runs again),
        or, after :data:`MAX_ATTEMPTS` starts, ends ``failed`` with the retryable
        ``interrupted`` code. Returns ``(re-queued ids in submit order, interrupted ids)``."""
        rows = self._run("SELECT id, attempts FROM jobs WHERE status IN ('queued', 'running') "
                         "ORDER BY seq")
        again, cut = [], []
        for job_id, attempts in rows:
            if attempts >= MAX_ATTEMPTS:
                self.finish(job_id, failed("interrupted", "the server restarted while the job "
                                           "ran; submit it again", retryable=True))
                cut.append(job_id)
            else:
                self._run("UPDATE jobs SET status = 'queued' WHERE id = ?", (job_id,))
                again.append(job_id)
        return again, cut

    def hook_url(self, job_id: str) -> str | None:
        rows = self._run("SELECT hook_url FROM jobs WHERE id = ?", (job_id,))
        return rows[0][0] if rows else None

    def hooks_pending(self) -> list[tuple[str, str, dict]]:
        """``(job id, webhook URL, final body)`` of each ended job whose delivery had not
        finished (re-sent after a restart)."""
        rows = self._run("SELECT id, hook_url, final FROM jobs WHERE hook_state = 'pending' "
                         "AND final IS NOT NULL ORDER BY seq")
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def hook_done(self, job_id: str, delivered: bool) -> None:
        self._run("UPDATE jobs SET hook_state = ? WHERE id = ?",
                  ("sent" if delivered else "failed", job_id))

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._run("SELECT COUNT(*) FROM jobs")[0][0]
        return self._run("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))[0][0]

    def sweep(self) -> None:
        """Drop expired jobs and idempotency keys (never a job that may still run)."""
        now = time.time()
        self._run("DELETE FROM jobs WHERE expires <= ? AND status NOT IN ('queued', 'running')",
                  (now,))
        self._run("DELETE FROM idempotency WHERE expires <= ?", (now,))

    # -------------------------------------------------------------- IssuedIds
    def add(self, job_id: str, meta: dict | None = None) -> None:
        self.update(job_id, **(meta or {}))

    def meta(self, job_id: str) -> dict | None:
        rows = self._run("SELECT meta FROM jobs WHERE id = ? AND expires > ?",
                         (job_id, time.time()))
        return json.loads(rows[0][0]) if rows else None

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.meta(job_id) is not None

    def update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            row = self._db.execute("SELECT meta FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE jobs SET meta = ? WHERE id = ?",
                                 (json.dumps({**json.loads(row[0]), **changes}), job_id))

    def key_get(self, key: str) -> tuple[str, str] | None:
        rows = self._run("SELECT job_id, fingerprint FROM idempotency WHERE key = ? AND "
                         "expires > ?", (key, time.time()))
        return (rows[0][0], rows[0][1]) if rows else None

    def key_bind(self, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM idempotency WHERE key = ? AND expires <= ?", (key, now))
            self._db.execute("INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?)",
                             (key, job_id, fingerprint, now + self.ttl_s))
            row = self._db.execute("SELECT job_id, fingerprint FROM idempotency WHERE key = ?",
                                   (key,)).fetchone()
        return row[0], row[1]
