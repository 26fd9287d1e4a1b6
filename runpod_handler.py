"""RunPod entry point: load every model once (cold start), then serve jobs.

Locally: ``python -m handlers.cli test-input --image photo.jpg > test_input.json`` then
``python runpod_handler.py`` (runpod reads ``test_input.json`` from the cwd), or
``--rp_serve_api``.
"""

import os
import sys

# runpod's logger defaults to DEBUG, which prints every handler output (presigned URLs included)
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
# OpenMP threads that wait for work sleep instead of spinning (read when torch loads libgomp, so
# before any torch import). On 2 cores shared with other processes (load ~4.5) a warm 0.5 MP
# job took ~10.5 s with torch's 2 spinning threads vs ~1.0 s with 1 thread or with PASSIVE
# (0.95 s, same process, alternating). On a GPU the few CPU-side ops hardly notice.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from handlers.runpod import import_sdk, make_handler, route_sdk_logs  # noqa: E402

runpod = import_sdk()  # the SDK without py-cpuinfo's subprocess (see import_sdk)

from core.errors import StartupError  # noqa: E402
from core.logs import setup_logging  # noqa: E402
from core.pipeline import Worker  # noqa: E402


def cold_start() -> Worker:
    """Logging, then every model loaded once (``bench.child`` times this same function)."""
    setup_logging()  # takes over from the basicConfig that `import runpod` ran
    route_sdk_logs()
    worker = Worker.cold_start()
    setup_logging()  # again: the cold start imported libraries that add their own handlers
    return worker


if __name__ == "__main__":
    try:  # (the output directory is checked before the models load)
        worker = cold_start()
    except StartupError as exc:
        print(f"maskpaint: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    runpod.serverless.start({"handler": make_handler(worker)})
