"""Benchmarks for the maskpaint worker: ``python -m bench [--quick] [--out DIR]``.

What it measures (see ``bench/RESULTS.md`` for the latest numbers and ``python -m bench -h``):

- cold start as fresh processes (interpreter -> imports -> model set loaded -> first job), against
  a floor measured in the same run (bare ``import torch, diffusers`` in a fresh process + reading
  every weight file's bytes);
- per-job stages over warm jobs at 0.5 / 2 / 12 MP (3:4 resizes of a real photo), outputs uploaded
  to a local moto S3 server over a real socket; median / p95 and the overhead
  (``timings_ms.total`` - the worker's own ``*.forward`` times) and its ratio to model forward;
- peak memory and memory flatness over N warm jobs; that no model is loaded twice;
- the per-job target rows (``bench/job_targets.py``): automatic vs provided-mask overhead in pairs on one
  worker, PNG output's encode + upload, each 12 MP job's peak RSS above the idle worker and
  growth over 50 12 MP jobs;
- a cProfile of the 2 MP and 12 MP jobs. (The optimisation proposals once measured here by
  patching core are in core now; git history keeps their experiments.)

Layout: ``__main__`` (orchestrator, runs in the parent, owns the moto server), ``child`` (the
measured processes), ``instrument`` (model-seam timers, load counters, memory), ``job_targets``
(the per-job targets' extra jobs and rows), ``summary`` (raw JSON -> numbers
and target verdicts), ``report`` (Markdown, RESULTS.md), ``plots``, ``common``.

Keep this package's import light: ``python -m bench.child`` measures interpreter start and imports.
"""
