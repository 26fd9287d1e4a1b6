"""RunPod entry point: load every model once (cold start), then serve jobs.

Locally: ``python runpod_handler.py --test_input '{"input": {...}}'`` or ``--rp_serve_api``.
"""

import runpod

from core.logs import setup_logging
from core.pipeline import Worker
from handlers.runpod import make_handler

if __name__ == "__main__":
    setup_logging()
    runpod.serverless.start({"handler": make_handler(Worker.cold_start())})
