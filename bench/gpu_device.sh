#!/usr/bin/env bash
# The GPU bench on a lent machine without network (docs/gpu.md): install the wheels `make
# gpu-wheels` put in .whl/ (carried with the working tree), run `python -m bench.gpu --quick`,
# and leave the results in $OUT: gpu.json, gpu.md, RESULTS.md (its GPU section rewritten),
# bench.log, logs.tgz (each phase's log), nvidia-smi.txt. Extra arguments go to bench.gpu.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed" | tee "$OUT/bench.log"; exit 3; }
export PYTHONPATH=/tmp/site
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
SCRATCH=/tmp/gpu-bench-scratch
timeout "${BENCH_TIMEOUT_S:-420}" python3 -m bench.gpu --quick --out "$OUT" \
  --scratch "$SCRATCH" "$@" 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
cp bench/RESULTS.md "$OUT/RESULTS.md"
tar czf "$OUT/logs.tgz" -C "$SCRATCH" --exclude=out --exclude=views . 2>/dev/null
exit "$rc"
