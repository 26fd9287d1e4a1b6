"""The worker's allocator setting (core.memory): freed frame-sized buffers leave the RSS."""

from __future__ import annotations

import numpy as np
import pytest

from core.memory import return_big_blocks


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


def test_freed_mask_sized_arrays_go_back_to_the_os():
    """After ``return_big_blocks``, 2 MiB arrays (a 2 MP mask) are returned to the OS when
    freed: 96 MiB of them touched, then dropped while small buffers allocated between them
    live on, leave the RSS where it was. (Without it, once a freed 20 MiB block has raised
    glibc's dynamic threshold, they come from the heap and all stay resident.)"""
    try:
        _rss_mib()
    except OSError:
        pytest.skip("no /proc/self/status")
    if not return_big_blocks():
        pytest.skip("not glibc")
    big = np.ones(20 << 20, np.uint8)  # freed, it would raise glibc's dynamic threshold
    del big
    before = _rss_mib()
    arrays, small = [], []
    for _ in range(48):
        arrays.append(np.ones(2 << 20, np.uint8))
        small.append(np.ones(64 << 10, np.uint8))  # (from the heap: pins what lies below)
    assert _rss_mib() - before > 80
    del arrays
    assert _rss_mib() - before < 16
