"""RunPod entry point: load every model once (cold start), then serve jobs.

Locally: ``python -m handlers.cli test-input --image photo.jpg > test_input.json`` then
``python runpod_handler.py`` (runpod reads ``test_input.json`` from the cwd), or
``--rp_serve_api``.
"""

import os

# runpod's logger defaults to DEBUG, which prints every handler output (presigned URLs included)
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

from handlers.runpod import import_sdk, make_handler, route_sdk_logs  # noqa: E402

runpod = import_sdk()  # the SDK without py-cpuinfo's subprocess (see import_sdk)

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
    runpod.serverless.start({"handler": make_handler(cold_start())})
