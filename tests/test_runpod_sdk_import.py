"""The worker imports the runpod SDK without py-cpuinfo's second interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, subprocess
started = []
real_popen = subprocess.Popen
class Recording(real_popen):
    def __init__(self, args, *a, **k):
        started.append([str(x) for x in args] if isinstance(args, (list, tuple)) else str(args))
        super().__init__(args, *a, **k)
subprocess.Popen = Recording
from handlers.runpod import import_sdk
runpod = import_sdk()
again = import_sdk()
import cpuinfo
from runpod.serverless.utils import rp_debugger
print(json.dumps({"processor": rp_debugger.PROCESSOR, "started": started,
                  "restored": cpuinfo.get_cpu_info is cpuinfo.cpuinfo.get_cpu_info,
                  "same_module": again is runpod, "has_serverless": hasattr(runpod, "serverless")}))
"""


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def test_import_sdk_starts_no_process_and_keeps_the_cpu_name():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # py-cpuinfo would run a second interpreter: `python .../cpuinfo.py --json` (~1.1 s here)
    assert not [a for a in out["started"] if "cpuinfo" in " ".join(a)], out["started"]
    assert out["restored"]  # py-cpuinfo answers in full again for anyone else
    assert out["same_module"] and out["has_serverless"]
    model = _cpu_model()
    if model is not None:  # the SDK's --rp_debugger output keeps the real processor name
        assert out["processor"] == model
