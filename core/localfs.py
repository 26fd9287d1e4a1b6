"""The local file system's failures in words: a full disk, a read-only or misconfigured output
directory, named by errno (ENOSPC, EROFS, ...) so an operator knows what to fix, with the
retry advice that fits each (:func:`local_error`), and the start-time check of the output
directory (:func:`check_output_dir`)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from core.errors import ErrorCode, JobError, StartupError
from core.settings import Settings

#: errno values of a full disk or quota: the same worker cannot write until someone frees space.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
#: errno values of a directory this process may never write (mount or permissions): a retry,
#: here or on a worker with the same settings, fails the same way.
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST})


def os_reason(exc: OSError) -> str:
    """``exc`` in words with its errno name, e.g. ``no space left on device (ENOSPC)``; the
    type name when it has no errno. Never the path (it may show the host's layout)."""
    if exc.errno is None:
        return type(exc).__name__
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{os.strerror(exc.errno).lower()} ({name})"


def local_error(what: str, exc: OSError) -> JobError:
    """A local file-system failure as ``storage_error``, told apart by errno.

    - full disk / quota (ENOSPC, EDQUOT): not retryable (a retry reaches the same disk; on a
      provider the worker also asks to be recycled, ``refresh_worker``, since its own disk is
      the full one);
    - read-only file system, no permission (EROFS, EACCES, EPERM, ...): not retryable;
    - anything else (EIO, ...): retryable, as before.
    """
    reason = os_reason(exc)
    if exc.errno in _NO_SPACE:
        return JobError(ErrorCode.storage_error, f"{what} failed: {reason}; free space in the "
                        "output directory", retryable=False, refresh_worker=True)
    if exc.errno in _NOT_WRITABLE:
        return JobError(ErrorCode.storage_error, f"{what} failed: {reason}; the output "
                        "directory must be writable", retryable=False)
    return JobError(ErrorCode.storage_error, f"{what} failed: {reason}")


def check_output_dir(settings: Settings) -> None:
    """At start, before models load: the local output directory (``MASKPAINT_OUTPUT_DIR``, used
    when no bucket is set) exists or can be made, is a directory, and takes a file. Nothing is
    checked when ``settings.s3_bucket`` is set.

    Raises:
        StartupError: one line naming the setting, the path and the reason (``is a file``,
            ``read-only file system (EROFS)``, ...).
    """
    if settings.s3_bucket:
        return
    path = Path(settings.output_dir)
    where = f"MASKPAINT_OUTPUT_DIR={path}"
    if path.exists() and not path.is_dir():
        raise StartupError(f"{where} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StartupError(f"{where} is not a writable directory: {os_reason(exc)}") from None


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to file descriptor ``fd`` with ``os.write`` (which may write less
    than asked), unbuffered: no copy of ``data`` in a file object's buffer, and a full disk
    surfaces here as the ``OSError`` (ENOSPC) of the write that hit it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
