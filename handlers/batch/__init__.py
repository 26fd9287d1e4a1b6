"""Bulk jobs: a catalogue of inputs driven through a provider's queue, resumable, with progress.

``python -m handlers.cli batch`` (console script ``maskpaint-batch``) reads a JSONL file of job
inputs (or a folder of photos plus a job template), submits them to one target with bounded
concurrency, polls them to the end, retries what a retry can fix, and appends one line per
finished job to a results JSONL. Scale-out is the provider's job (RunPod's queue and worker
autoscaling, Modal's containers); this package only keeps the queue fed and the books.

- :mod:`handlers.batch.jobs`: inputs, stable job ids, the results file (resume, template check).
- :mod:`handlers.batch.loop`: the provider-neutral loop (threads, retries, Ctrl-C, progress).
- :mod:`handlers.batch.net`: HTTP on urllib3 with its jittered exponential backoff.
- :mod:`handlers.batch.runpod_target`, :mod:`handlers.batch.web_target`: one small adapter per
  target (RunPod ``/run`` + ``/status``; the web API, on Modal or ``make serve``).
- :mod:`handlers.batch.summary`: counts, latency percentiles, GPU seconds and cost.
- :mod:`handlers.batch.cli`: the command line.

Idempotency: each job carries its id as ``input.idempotency_key``; the worker keys its
write-once job record by it (``core.contract.JobRequest.idempotency_key``), so a job submitted
again after an interruption returns the stored result without running the models.

No image work happens here (the boundary test holds ``handlers/`` to that): photos are read as
bytes and sent as data URLs or uploaded to S3 as they are.
"""
