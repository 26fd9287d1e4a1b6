"""The worker's allocator setting (core.memory): freed frame-sized buffers leave the RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


_CHECK = """
import numpy as np, sys
from core.memory import return_big_blocks
from tests.test_memory import _rss_mib
if not return_big_blocks():
    sys.exit(3)
big = np.ones(20 << 20, np.uint8)  # freed, it would raise glibc's dynamic threshold
del big
before = _rss_mib()
arrays, small = [], []
for _ in range(48):
    arrays.append(np.ones(2 << 20, np.uint8))
    small.append(np.ones(64 << 10, np.uint8))  # (from the heap: pins what lies below)
grown = _rss_mib() - before
del arrays
print(grown, _rss_mib() - before)
"""


def test_freed_mask_sized_arrays_go_back_to_the_os():
    """After ``return_big_blocks``, 2 MiB arrays (a 2 MP mask) are returned to the OS when
    freed: 96 MiB of them touched, then dropped while small buffers allocated between them
    live on, leave the RSS where it was. (Without it, once a freed 20 MiB block has raised
    glibc's dynamic threshold, they come from the heap and all stay resident.) Measured in a
    fresh interpreter: in a long test session, heap pages that earlier tests freed but that stay
    resident would serve these allocations without raising the RSS at all."""
    try:
        _rss_mib()
    except OSError:
        pytest.skip("no /proc/self/status")
    r = subprocess.run([sys.executable, "-c", _CHECK], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 3:
        pytest.skip("not glibc")
    assert r.returncode == 0, r.stderr[-2000:]
    grown, kept = map(float, r.stdout.split())
    assert grown > 80
    assert kept < 16
